"""Recipes of the learners that adapt by gradient steps: MAML, first-order MAML, ANIL, and the
pre-training baseline whose backbone :class:`~fslearn.FineTune` adapts per task.

Most defaults are the published Omniglot settings (:func:`train_maml` names those that are
not; :mod:`fslearn.training.presets` lists the papers and their numbers); both follow
:mod:`fslearn.training.skeleton`.
"""

from __future__ import annotations

import math

import torch

from ..common import model_device
from ..data.dataset import FewShotDataset
from ..distributed import SINGLE, World
from ..methods.baseline_pp import default_scale
from ..methods.maml import MAML
from ..models.classifier import Classifier
from ..sampling.episodes import EpisodeSampler
from .batches import History, fit
from .checkpoint import Checkpoint
from .skeleton import run_recipe, setup_recipe, track_recipe
from .steps import StepHistory


def rotates_by_default(dataset: FewShotDataset) -> bool:
    """Whether the recipes rotate ``dataset``'s classes by multiples of 90° unless told: a
    character set (one channel) does, as Omniglot's protocols do, a rotated character counting
    as a new one; photos (three channels) do not: a photo on its side shows the same object
    in an unnatural view, and miniImageNet's protocols never rotate."""
    return dataset.image_shape[0] == 1


def train_maml(
    train: FewShotDataset,
    *,
    n_way: int = 5,
    n_shot: int = 1,
    n_query: int = 15,
    meta_batch: int = 32,
    steps: int = 60_000,
    inner_lr: float = 0.4,
    inner_steps: int = 1,
    test_steps: int = 10,
    first_order: bool = False,
    anil: bool = False,
    lr: float = 1e-3,
    hidden_channels: int | None = None,
    backbone: str = "conv4",
    backbone_options: dict | None = None,
    rotate: bool | None = None,
    transform=None,
    normalize=None,
    step_weights=None,
    record_steps: bool = False,
    compile: bool = False,
    strategy: str = "auto",
    val_episodes=None,
    eval_every: int = 500,
    seed: int = 0,
    device=None,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
    world: World = SINGLE,
) -> tuple[MAML, StepHistory]:
    """MAML meta-trained on ``n_way``-way ``n_shot``-shot tasks of ``train``.

    Most defaults are Finn et al.'s (2017) for Omniglot 5-way 1-shot (appendix A.1 and the
    authors' code, github.com/cbfinn/maml): Conv4-64 with per-task batch statistics,
    meta-batch 32, 1 inner step with α = 0.4 (20-way: 5 steps, α = 0.1, meta-batch 16;
    miniImageNet: Conv4-32, 5 steps, α = 0.01, meta-batch 4), Adam 1e-3 on the
    meta-objective, 60 000 meta-iterations, each class of each task rotated by a random
    multiple of 90° (``rotate``; by default for characters only). Three defaults are not the
    Omniglot recipe's: 15 queries per class (the appendix's miniImageNet setting, and
    fslearn's default everywhere; on Omniglot the authors' code draws as many queries as
    shots per class), 10 inner steps at test time (the authors' code, for
    every dataset; the appendix gives 3 for Omniglot 5-way, 5 for 20-way and 10 for
    miniImageNet), and :func:`~fslearn.maml_classifier`'s max-pooling (the Omniglot network
    of the paper and its code has stride-2 convolutions instead).
    ``recipe_settings("maml", "omniglot")`` from :mod:`fslearn.training.presets` gives the
    paper's queries and test steps. Every meta-iteration samples its tasks on ``train``'s
    device and runs without a host synchronisation.

    Args:
        train: the training classes (move them to the GPU first to train there).
        rotate: rotate each class of each task by a random multiple of 90°; ``None`` (the
            default) follows the dataset's convention (``rotates_by_default``): characters
            (one channel, e.g. Omniglot) rotate, as in Finn et al.'s Omniglot protocol, photos
            (three channels, e.g. miniImageNet) do not, as in their miniImageNet protocol.
        transform: a batched transform of every training task's images, e.g.
            :class:`~fslearn.Augment` for photos (``EpisodeSampler(transform=)``); never
            applied to ``val_episodes``. A checkpoint records its ``repr``.
        normalize: the images' per-channel ``(mean, std)`` (e.g. ``fsl.channel_stats(train)``):
            :class:`~fslearn.Normalize` in front of the backbone, recorded in the spec, for
            training and test images alike.
        first_order, anil: FOMAML or ANIL instead of second-order MAML.
        hidden_channels, backbone, backbone_options: the network: Conv4 of width
            ``hidden_channels`` (default 64) unless ``backbone`` names another
            (``"resnet12"`` or one given to :func:`~fslearn.register_backbone`), built with
            per-task batch statistics and ``backbone_options``
            (:func:`~fslearn.build_backbone`); the checkpoint's spec records them.
        step_weights: MAML++'s multi-step loss weights, shape ``(inner_steps,)``.
        record_steps: record the query loss after every inner step in
            ``history.metrics["query_loss_<i>"]`` (one extra forward pass per step).
        compile: run the meta-objective under ``torch.compile`` (with CUDA
            graphs on a GPU): the first iteration compiles for a minute or more,
            the following ones are several times faster.
        strategy: how the meta-batch's tasks run: ``"auto"`` (``"loop"`` on a CPU, ``"vmap"``
            elsewhere), ``"loop"`` or ``"vmap"`` (:class:`~fslearn.GradientLearner`); the
            checkpoint's config records the one that ran as ``maml_strategy``.
        val_episodes: an :class:`~fslearn.EpisodeSet` scored every ``eval_every`` steps.
        world: the processes training together (:mod:`fslearn.distributed`): every rank
            draws the whole meta-batch and adapts its ``meta_batch / W`` tasks; with per-task
            batch statistics the weights equal one process's.

    Returns:
        ``(maml, history)``; ``history.metrics["accuracy"]`` is the query accuracy
        after adaptation of every meta-batch.
    """
    spec, learner, train = setup_recipe(
        "maml",
        train,
        hidden_channels,
        device,
        seed,
        backbone=backbone,
        backbone_options=backbone_options,
        normalize=normalize,
        n_way=n_way,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        test_steps=test_steps,
        first_order=first_order,
        anil=anil,
        **({} if strategy == "auto" else {"strategy": strategy}),
    )
    device = model_device(learner)
    rotate = rotates_by_default(train) if rotate is None else rotate
    sampler = EpisodeSampler(
        train, n_way, n_shot, n_query, seed=seed, rotate=rotate, transform=transform, device=device
    )
    weights_list = None if step_weights is None else list(step_weights)
    config = dict(n_shot=n_shot, n_query=n_query, meta_batch=meta_batch, steps=steps, lr=lr)
    track_recipe(
        checkpoint,
        spec,
        train,
        {
            **config,
            "rotate": rotate,
            **({"transform": repr(transform)} if transform is not None else {}),
            "step_weights": weights_list,
            "seed": seed,
            "maml_strategy": learner.strategy_for(device),
        },
        sampler=sampler.generator,
    )
    weights = (
        None
        if step_weights is None
        else torch.as_tensor(step_weights, dtype=torch.float32, device=device)
    )
    meta_loss = learner.meta_loss
    if compile:
        meta_loss = torch.compile(
            meta_loss, mode="reduce-overhead" if device.type == "cuda" else "default"
        )
    optimizer = torch.optim.Adam(learner.parameters(), lr=lr, fused=device.type == "cuda")

    mine = world.share(meta_batch, "meta_batch")

    def step_loss(_):
        tasks = sampler.sample_tasks(meta_batch)
        return meta_loss(
            tasks.support_x[mine],
            tasks.support_y[mine],
            tasks.query_x[mine],
            tasks.query_y[mine],
            step_weights=weights,
            record_steps=record_steps,
        )

    kind = "ANIL" if anil else "first-order MAML" if first_order else "MAML"
    history = run_recipe(
        learner,
        step_loss,
        optimizer,
        val_episodes=val_episodes,
        eval_every=eval_every,
        val_batch_size=meta_batch,
        steps=steps,
        episodes_per_step=meta_batch,
        seed=seed,
        progress=progress,
        desc=f"{kind} {n_way}-way {n_shot}-shot",
        checkpoint=checkpoint,
        loss_limit=_diverged(n_way, step_weights),
        world=world,
        advice=f"the inner steps diverge: lower inner_lr (now {inner_lr}), or the outer lr={lr}",
    )
    return learner, history


def _diverged(n_way: int, step_weights) -> tuple[float, str]:
    """The query loss no sane MAML run reaches: 100 × a uniform guess's, ``ln(n_way)``.

    Adaptation starts near ``ln(n_way)`` and lowers it; a loss a hundred times higher
    means the inner steps threw the parameters far away (an inner step size far too
    large), although it may stay finite for thousands of steps.
    """
    weight = 1.0 if step_weights is None else max(1.0, float(sum(step_weights)))
    limit = 100 * math.log(max(n_way, 2)) * weight
    return limit, f"100 × ln({n_way}), the loss of a uniform guess"


def train_pretrained(
    train: FewShotDataset,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    hidden_channels: int | None = None,
    backbone: str = "conv4",
    backbone_options: dict | None = None,
    head: str = "linear",
    scale: float | None = None,
    normalize=None,
    seed: int = 0,
    device=None,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
    world: World = SINGLE,
) -> tuple[Classifier, History]:
    """The pre-training baselines' first half: one classifier over all of ``train``'s classes.

    A backbone (Conv4 unless ``backbone`` names another; with running batch-norm statistics)
    and a head over ``train.n_classes``
    classes, trained with Adam and cross-entropy on every image of ``train`` by
    :func:`~fslearn.fit`. Put its ``backbone`` in a :class:`~fslearn.FineTune` (Chen et al.'s
    Baseline), a :class:`~fslearn.BaselinePP` (their Baseline++) or a
    :class:`~fslearn.SimpleShot` for the test tasks. Across the processes of ``world`` each
    rank takes its share of every batch (see :func:`~fslearn.fit`).

    Args:
        head: ``"linear"`` (Baseline, SimpleShot) or ``"cosine"`` (Baseline++: a
            :class:`~fslearn.CosineHead`).
        scale: the cosine head's scale (default: Chen et al.'s, 10 above 200 classes, else 2).
        hidden_channels, backbone, backbone_options: the network: Conv4 of width
            ``hidden_channels`` (default 64) unless ``backbone`` names another
            (``"resnet12"`` or one given to :func:`~fslearn.register_backbone`), built with
            ``backbone_options`` (:func:`~fslearn.build_backbone`); the checkpoint's spec
            records them.
        normalize: the images' per-channel ``(mean, std)``, as in :func:`train_maml`; the
            classifier's ``backbone`` starts with it, so a learner built on that backbone
            normalises its tasks' images too.

    Returns:
        ``(classifier, history)``.
    """
    if head not in ("linear", "cosine"):
        raise ValueError(f"head must be 'linear' or 'cosine' (Baseline++); got {head!r}")
    if head == "linear" and scale is not None:
        raise ValueError(f"scale={scale} does not apply to head='linear': use head='cosine'")
    scale = default_scale(train.n_classes) if scale is None else scale
    cosine = dict(head="cosine", scale=scale)
    options = dict(n_classes=train.n_classes, **(cosine if head == "cosine" else {}))
    spec, model, train = setup_recipe(
        "pretrain",
        train,
        hidden_channels,
        device,
        seed,
        backbone=backbone,
        backbone_options=backbone_options,
        normalize=normalize,
        **options,
    )
    x, y = train.flat()
    track_recipe(
        checkpoint, spec, train, dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    )
    history = fit(
        model,
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        seed=seed,
        progress=progress,
        optimizer=torch.optim.Adam(model.parameters(), lr=lr),
        desc="pre-training",
        checkpoint=checkpoint,
        world=world,
    )
    return model, history
