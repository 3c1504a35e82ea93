"""Training recipes: one call trains a method with the hyperparameters of its paper.

Each ``train_*`` function takes the training classes (and optionally validation
episodes), builds the learner, trains it with :func:`~fslearn.train_steps`, and
returns ``(learner, history)``. Defaults are the published Omniglot settings (the
papers and their numbers are listed in :mod:`fslearn.training.presets`); pass smaller
budgets for a CPU. Every recipe is the same skeleton — :func:`_setup` builds the
learner from its spec on the data's device, the method draws its own batches in a
``step_loss``, and :func:`_run` trains it with :func:`~fslearn.train_steps` — so
they differ only in what one step draws and what it minimises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.dataset import FewShotDataset
from ..evaluation import evaluate
from ..methods.maml import MAML
from ..methods.nearest_neighbour import NearestNeighbourLearner
from ..methods.prototypes import ProtoNet
from ..methods.siamese import SiameseNet, contrastive_loss
from ..methods.triplet import triplet_batch_loss
from ..models.classifier import Classifier
from ..sampling.episodes import EpisodeSampler
from ..sampling.pairs import PairSampler
from ..sampling.pk_batches import PKSampler
from .batches import History, fit
from .checkpoint import Checkpoint
from .specs import build_learner
from .steps import StepHistory, train_steps


def _setup(method: str, train: FewShotDataset, hidden_channels: int, device, seed: int, **options):
    """``(spec, learner, train)``: the learner built from its spec, and the data, on ``device``."""
    device = train.device if device is None else torch.device(device)
    train = train.to(device)
    spec = {
        "method": method,
        "image_shape": list(train.image_shape),
        "hidden_channels": hidden_channels,
        **options,
    }
    return spec, build_learner(spec, seed=seed).to(device), train


def _track(
    checkpoint: Checkpoint | None, spec: dict, train: FewShotDataset, config: dict, **generators
):
    """Tell ``checkpoint`` the learner's spec, the recipe's settings and its samplers' generators."""
    if checkpoint is not None:
        checkpoint.config.update(
            {"train_dataset": train.name, "train_classes": train.n_classes, **config}
        )
        checkpoint.track(spec, **generators)


def _run(
    learner, step_loss, optimizer, *, val_episodes, eval_every, val_batch_size=None, **kwargs
) -> StepHistory:
    """:func:`train_steps`, validating on ``val_episodes`` when given."""
    if val_episodes is not None:
        kwargs.update(
            validate=lambda: evaluate(learner, val_episodes, batch_size=val_batch_size),
            eval_every=eval_every,
        )
    return train_steps(learner, step_loss, optimizer=optimizer, **kwargs)


def train_protonet(
    train: FewShotDataset,
    *,
    n_way: int = 60,
    n_shot: int = 5,
    n_query: int = 5,
    steps: int = 20_000,
    lr: float = 1e-3,
    halve_every: int = 2_000,
    distance: str = "euclidean",
    hidden_channels: int = 64,
    val_episodes=None,
    eval_every: int = 500,
    seed: int = 0,
    device=None,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
) -> tuple[ProtoNet, StepHistory]:
    """Prototypical networks as Snell et al. (2017) trained them on Omniglot.

    The paper: Conv4-64, 60-way episodes with 5 queries per class (the shots of the
    test setting: 1 or 5), Adam with learning rate 1e-3 halved every 2 000 episodes,
    squared Euclidean distance; the training classes are the 1 200 Vinyals
    characters × 4 rotations (``fsl.omniglot_split(..., "vinyals", "train")``). The
    paper stops on validation accuracy; ``steps`` fixes the budget instead.

    Args:
        train: the training classes (on the device to train on).
        n_way, n_shot, n_query: the training episodes.
        steps: episodes to train on (one per step).
        lr, halve_every: Adam's learning rate and its halving period, in steps.
        distance: ``"euclidean"`` or ``"cosine"`` (see :class:`~fslearn.ProtoNet`).
        val_episodes: an :class:`~fslearn.EpisodeSet` scored every ``eval_every`` steps.
        device: defaults to the device of ``train``.
        checkpoint: save (and with ``resume``, continue) the run there; see
            :class:`~fslearn.Checkpoint`. The same argument in every recipe.

    Returns:
        ``(protonet, history)``.
    """
    spec, learner, train = _setup(
        "protonet", train, hidden_channels, device, seed, distance=distance
    )
    optimizer = torch.optim.Adam(learner.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=halve_every, gamma=0.5)
    sampler = EpisodeSampler(train, n_way, n_shot, n_query, seed=seed)
    config = dict(
        n_way=n_way, n_shot=n_shot, n_query=n_query, steps=steps, lr=lr, halve_every=halve_every
    )
    _track(checkpoint, spec, train, {**config, "seed": seed}, sampler=sampler.generator)

    def step_loss(_):
        episode = sampler.sample()
        logits = learner(episode.support_x, episode.support_y, episode.query_x)
        accuracy = (logits.argmax(-1) == episode.query_y).float().mean()
        return F.cross_entropy(logits, episode.query_y), {"accuracy": accuracy}

    history = _run(
        learner,
        step_loss,
        optimizer,
        scheduler=scheduler,
        val_episodes=val_episodes,
        eval_every=eval_every,
        steps=steps,
        seed=seed,
        progress=progress,
        desc=f"ProtoNet {n_way}-way {n_shot}-shot",
        checkpoint=checkpoint,
    )
    return learner, history


def train_siamese(
    train: FewShotDataset,
    *,
    head: str = "koch",
    n_pairs: int = 128,
    steps: int = 20_000,
    lr: float = 1e-3,
    margin: float | None = None,
    hidden_channels: int = 64,
    val_episodes=None,
    eval_every: int = 500,
    seed: int = 0,
    device=None,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
) -> tuple[SiameseNet, StepHistory]:
    """A Siamese network (Koch et al. 2015) trained on balanced pairs of ``train``'s classes.

    Koch et al. used a larger convolutional network and SGD with per-layer
    learning rates; here the backbone is Conv4, as for every method in the book,
    so that methods differ only in what they learn from, and the optimizer is
    Adam. ``head="koch"`` trains ``|f(x1) − f(x2)|`` → linear → sigmoid with binary
    cross-entropy; ``head="contrastive"`` trains the embedding distance with
    :func:`~fslearn.contrastive_loss` (margin ``margin``, default 1; the Koch head has
    no margin, and refuses one).

    Args:
        train: the training classes (on the device to train on).
        n_pairs: pairs per step, half of them positive.
        steps, lr: the budget and Adam's learning rate.
        val_episodes: an :class:`~fslearn.EpisodeSet` scored every ``eval_every`` steps.

    Returns:
        ``(siamese, history)``; ``history.metrics["pair_accuracy"]`` is the per-step
        accuracy of "same or different".
    """
    if head == "koch" and margin is not None:
        raise ValueError(
            f"margin={margin} does not apply to head='koch', which trains with binary cross-entropy; "
            "leave margin out, or use head='contrastive'"
        )
    margin = 1.0 if margin is None else margin
    spec, learner, train = _setup("siamese", train, hidden_channels, device, seed, head=head)
    pairs = PairSampler(train, seed=seed)
    config = dict(n_pairs=n_pairs, steps=steps, lr=lr, seed=seed)
    if head == "contrastive":
        config["margin"] = margin
    _track(checkpoint, spec, train, config, pairs=pairs.generator)

    def step_loss(_):
        x1, x2, same = pairs.sample(n_pairs)
        if head == "koch":
            logits = learner.pair_logits(x1, x2)
            loss = F.binary_cross_entropy_with_logits(logits, same)
            predicted_same = logits > 0
        else:
            distance = learner.pair_distance(x1, x2)
            loss = contrastive_loss(distance, same, margin)
            predicted_same = distance < margin / 2
        return loss, {"pair_accuracy": (predicted_same == same.bool()).float().mean()}

    history = _run(
        learner,
        step_loss,
        torch.optim.Adam(learner.parameters(), lr=lr),
        val_episodes=val_episodes,
        eval_every=eval_every,
        steps=steps,
        seed=seed,
        progress=progress,
        desc=f"Siamese ({head})",
        checkpoint=checkpoint,
    )
    return learner, history


def train_triplet(
    train: FewShotDataset,
    *,
    strategy: str = "batch-hard",
    n_classes: int = 32,
    n_per_class: int = 4,
    margin: float = 1.0,
    steps: int = 20_000,
    lr: float = 1e-3,
    rule: str = "nearest-support",
    hidden_channels: int = 64,
    val_episodes=None,
    eval_every: int = 500,
    seed: int = 0,
    device=None,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
) -> tuple[NearestNeighbourLearner, StepHistory]:
    """An embedding trained with the triplet loss (Schroff et al. 2015) on P×K batches.

    Every step draws ``n_classes`` (P) classes × ``n_per_class`` (K) images, mines
    triplets with ``strategy`` (``"random"``, ``"semi-hard"`` or ``"batch-hard"``)
    and minimises ``max(d+ − d− + margin, 0)``; Adam with learning rate ``lr``.
    Test-time classification uses ``rule`` (nearest support image or nearest prototype).

    Returns:
        ``(learner, history)``; ``history.metrics["active_fraction"]`` is the per-step
        fraction of mined triplets that still violate the margin.
    """
    spec, learner, train = _setup("triplet", train, hidden_channels, device, seed, rule=rule)
    batches = PKSampler(train, n_classes, n_per_class, seed=seed)
    generator = torch.Generator(device=train.device).manual_seed(seed)
    config = dict(strategy=strategy, n_classes=n_classes, n_per_class=n_per_class, margin=margin)
    _track(
        checkpoint,
        spec,
        train,
        {**config, "steps": steps, "lr": lr, "seed": seed},
        batches=batches.generator,
        mining=generator,
    )

    def step_loss(_):
        x, y = batches.sample()
        loss, active = triplet_batch_loss(
            learner.backbone(x), y, strategy, margin, generator=generator
        )
        return loss, {"active_fraction": active}

    history = _run(
        learner,
        step_loss,
        torch.optim.Adam(learner.parameters(), lr=lr),
        val_episodes=val_episodes,
        eval_every=eval_every,
        steps=steps,
        seed=seed,
        progress=progress,
        desc=f"triplet ({strategy})",
        checkpoint=checkpoint,
    )
    return learner, history


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
    hidden_channels: int = 64,
    rotate: bool = True,
    step_weights=None,
    record_steps: bool = False,
    compile: bool = False,
    val_episodes=None,
    eval_every: int = 500,
    seed: int = 0,
    device=None,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
) -> tuple[MAML, StepHistory]:
    """MAML as Finn et al. (2017) trained it on Omniglot 5-way 1-shot.

    The paper: Conv4-64 with per-task batch statistics, meta-batch 32, 1 inner
    step with α = 0.4 (20-way: 5 steps, α = 0.1, meta-batch 16; miniImageNet:
    Conv4-32, 5 steps, α = 0.01, meta-batch 4), Adam 1e-3 on the meta-objective,
    60 000 meta-iterations, 10 inner steps at test time, each class of each task
    rotated by a random multiple of 90° (``rotate``). Every meta-iteration samples
    its tasks on ``train``'s device and runs without a host synchronisation.

    Args:
        train: the training classes (move them to the GPU first to train there).
        first_order, anil: FOMAML or ANIL instead of second-order MAML.
        step_weights: MAML++'s multi-step loss weights, shape ``(inner_steps,)``.
        record_steps: record the query loss after every inner step in
            ``history.metrics["query_loss_<i>"]`` (one extra forward pass per step).
        compile: run the meta-objective under ``torch.compile`` (with CUDA
            graphs on a GPU): the first iteration compiles for a minute or more,
            the following ones are several times faster.
        val_episodes: an :class:`~fslearn.EpisodeSet` scored every ``eval_every`` steps.

    Returns:
        ``(maml, history)``; ``history.metrics["accuracy"]`` is the query accuracy
        after adaptation of every meta-batch.
    """
    spec, learner, train = _setup(
        "maml",
        train,
        hidden_channels,
        device,
        seed,
        n_way=n_way,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        test_steps=test_steps,
        first_order=first_order,
        anil=anil,
    )
    device = train.device
    sampler = EpisodeSampler(train, n_way, n_shot, n_query, seed=seed, rotate=rotate)
    weights_list = None if step_weights is None else list(step_weights)
    config = dict(n_shot=n_shot, n_query=n_query, meta_batch=meta_batch, steps=steps, lr=lr)
    _track(
        checkpoint,
        spec,
        train,
        {**config, "rotate": rotate, "step_weights": weights_list, "seed": seed},
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

    def step_loss(_):
        tasks = sampler.sample(meta_batch)
        return meta_loss(
            tasks.support_x,
            tasks.support_y,
            tasks.query_x,
            tasks.query_y,
            step_weights=weights,
            record_steps=record_steps,
        )

    kind = "ANIL" if anil else "first-order MAML" if first_order else "MAML"
    history = _run(
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
    )
    return learner, history


def train_pretrained(
    train: FewShotDataset,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    hidden_channels: int = 64,
    seed: int = 0,
    device=None,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
) -> tuple[Classifier, History]:
    """The pre-training baseline's first half: one classifier over all of ``train``'s classes.

    A Conv4 (with running batch-norm statistics) and a linear head over
    ``train.n_classes`` classes, trained with Adam and cross-entropy on every
    image of ``train`` by :func:`~fslearn.fit`. Put its ``backbone`` in a
    :class:`~fslearn.FineTune` to fit a new head to each test task.

    Returns:
        ``(classifier, history)``.
    """
    spec, model, train = _setup(
        "pretrain", train, hidden_channels, device, seed, n_classes=train.n_classes
    )
    x, y = train.flat()
    _track(checkpoint, spec, train, dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed))
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
    )
    return model, history
