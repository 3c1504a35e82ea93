"""Recipes of the metric learners: prototypical networks and Siamese networks (the triplet
loss's is in ``triplet_recipe.py``).

Each ``train_*`` function takes the training classes (and optionally validation
episodes), builds the learner, trains it with :func:`~fslearn.train_steps`, and
returns ``(learner, history)``. Defaults are the published Omniglot settings, but for
:func:`train_protonet`'s queries per class (the papers and their numbers are listed in
:mod:`fslearn.training.presets`); pass smaller budgets for a CPU. All of them follow
:mod:`fslearn.training.skeleton`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import model_device
from ..data.dataset import FewShotDataset
from ..data.symmetries import training_classes
from ..distributed import SINGLE, World
from ..methods.prototypes import ProtoNet
from ..methods.siamese import SiameseNet, contrastive_loss
from ..sampling.episodes import EpisodeSampler
from ..sampling.pairs import PairSampler
from .checkpoint import Checkpoint
from .skeleton import run_recipe, setup_recipe, track_recipe
from .steps import StepHistory


def train_protonet(
    train: FewShotDataset,
    *,
    n_way: int = 60,
    n_shot: int = 5,
    n_query: int = 15,
    episodes_per_step: int = 1,
    steps: int = 20_000,
    lr: float = 1e-3,
    halve_every: int = 2_000,
    distance: str = "euclidean",
    hidden_channels: int | None = None,
    backbone: str = "conv4",
    backbone_options: dict | None = None,
    rotate_classes: bool = False,
    reflect_classes: bool = False,
    augment: float = 0.0,
    within_groups: bool = False,
    transform=None,
    normalize=None,
    val_episodes=None,
    eval_every: int = 500,
    seed: int = 0,
    device=None,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
    world: World = SINGLE,
) -> tuple[ProtoNet, StepHistory]:
    """Prototypical networks as Snell et al. (2017) trained them on Omniglot.

    The paper: Conv4-64, 60-way episodes with 5 queries per class (the shots of the
    test setting: 1 or 5), Adam with learning rate 1e-3 halved every 2 000 episodes,
    squared Euclidean distance; all of them are the defaults but the queries, which default to
    15 as everywhere in fslearn (pass ``n_query=5``, or take
    ``recipe_settings("protonet", "omniglot")`` of :mod:`fslearn.training.presets`); the
    training classes are the 1 200 Vinyals characters × 4 rotations
    (``fsl.omniglot_split(..., "vinyals", "train")``). The paper stops on validation accuracy;
    ``steps`` fixes the budget instead.

    Args:
        train: the training classes (on the device to train on).
        n_way, n_shot, n_query: the training episodes.
        episodes_per_step: episodes whose mean loss one optimizer step minimises (the paper:
            1); the processes of ``world`` share them.
        steps: optimizer steps to take.
        lr, halve_every: Adam's learning rate and its halving period, in steps.
        distance: ``"euclidean"`` or ``"cosine"`` (see :class:`~fslearn.ProtoNet`).
        hidden_channels, backbone, backbone_options: Conv4's width (default 64), or another
            backbone (:func:`~fslearn.build_backbone`) and its options; the spec records them.
        rotate_classes: train on ``fsl.with_rotations(train)``, each class at 0°, 90°,
            180° and 270° a class of its own (four times the classes, as in the paper's
            Omniglot protocol; for a dataset not rotated already).
        reflect_classes: train on ``fsl.with_reflections(train)`` as well, each class's
            mirror image a class of its own (with ``rotate_classes``: 8 classes per class).
        augment: warp every training image by its own small random affine map, at this
            strength (``EpisodeSampler(augment=)``; 0: none).
        within_groups: draw every training episode's classes from one group (one alphabet,
            with its rotations and mirror images as the options above make them), as Lake et
            al.'s test draws its episodes (``EpisodeSampler(within_groups=)``).
        transform: a batched transform of every training episode's images, e.g.
            :class:`~fslearn.Augment` for photos (``EpisodeSampler(transform=)``); never
            applied to ``val_episodes``. A checkpoint records its ``repr``: resume with
            the same one.
        normalize: ``(mean, std)``, one number per channel each (e.g.
            ``fsl.channel_stats(train)``): :class:`~fslearn.Normalize` in front of the backbone,
            recorded in the spec, so that every image the learner sees, in training and at
            test time, and the checkpoint's learner too, is normalised the same way.
        val_episodes: an :class:`~fslearn.EpisodeSet` scored every ``eval_every`` steps.
        device: defaults to the device of ``train``.
        checkpoint: save (and with ``resume``, continue) the run there; see
            :class:`~fslearn.Checkpoint`. The same argument in every recipe.
        world: the processes training together (:mod:`fslearn.distributed`); every recipe
            takes it. Here each rank trains on its share of the step's episodes, so the
            weights equal one process's (each episode is normalised on its own).

    Returns:
        ``(protonet, history)``.
    """
    options = dict(distance=distance)
    spec, learner, train = setup_recipe(
        "protonet",
        train,
        hidden_channels,
        device,
        seed,
        backbone,
        backbone_options,
        normalize=normalize,
        **options,
    )
    train = training_classes(train, rotate_classes=rotate_classes, reflect_classes=reflect_classes)
    optimizer = torch.optim.Adam(learner.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=halve_every, gamma=0.5)
    sampler = EpisodeSampler(
        train,
        n_way,
        n_shot,
        n_query,
        seed=seed,
        augment=augment,
        transform=transform,
        device=model_device(learner),
        within_groups=within_groups,
    )
    mine = world.share(episodes_per_step, "episodes_per_step")
    config = dict(
        n_way=n_way, n_shot=n_shot, n_query=n_query, steps=steps, lr=lr, halve_every=halve_every
    )
    # Only when set, so that the records of earlier runs read the same.
    if episodes_per_step != 1:
        config["episodes_per_step"] = episodes_per_step
    if rotate_classes:
        config["rotate_classes"] = True
    if reflect_classes:
        config["reflect_classes"] = True
    if augment:
        config["augment"] = augment
    if within_groups:
        config["within_groups"] = True
    if transform is not None:
        config["transform"] = repr(transform)
    track_recipe(checkpoint, spec, train, {**config, "seed": seed}, sampler=sampler.generator)

    def step_loss(_):
        # Every rank draws the step's every episode (cheap), so the sampler's state never
        # depends on the number of processes.
        episodes = [sampler.sample() for _ in range(episodes_per_step)][mine]
        losses, accuracies = [], []
        for episode in episodes:
            logits = learner(episode.support_x, episode.support_y, episode.query_x)
            accuracies.append((logits.argmax(-1) == episode.query_y).float().mean())
            losses.append(F.cross_entropy(logits, episode.query_y))
        return torch.stack(losses).mean(), {"accuracy": torch.stack(accuracies).mean()}

    history = run_recipe(
        learner,
        step_loss,
        optimizer,
        scheduler=scheduler,
        val_episodes=val_episodes,
        eval_every=eval_every,
        steps=steps,
        seed=seed,
        progress=progress,
        episodes_per_step=episodes_per_step,
        desc=f"ProtoNet {n_way}-way {n_shot}-shot",
        checkpoint=checkpoint,
        world=world,
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
    hidden_channels: int | None = None,
    backbone: str = "conv4",
    backbone_options: dict | None = None,
    normalize=None,
    val_episodes=None,
    eval_every: int = 500,
    seed: int = 0,
    device=None,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
    world: World = SINGLE,
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
        n_pairs: pairs per step, half of them positive; the processes of ``world`` share
            them (batch normalization then sees each rank's pairs only: close to one
            process's result, not equal).
        steps, lr: the budget and Adam's learning rate.
        hidden_channels, backbone, backbone_options: the network, as in :func:`train_protonet`.
        normalize: the images' per-channel ``(mean, std)``, as in :func:`train_protonet`.
        val_episodes: an :class:`~fslearn.EpisodeSet` scored every ``eval_every`` steps.

    Returns:
        ``(siamese, history)``; ``history.metrics["pair_accuracy"]`` is the per-step
        accuracy of "same or different".
    """
    if head == "koch" and margin is not None:
        raise ValueError(
            f"margin={margin} does not apply to head='koch', which trains with binary "
            "cross-entropy; "
            "leave margin out, or use head='contrastive'"
        )
    margin = 1.0 if margin is None else margin
    spec, learner, train = setup_recipe(
        "siamese",
        train,
        hidden_channels,
        device,
        seed,
        backbone,
        backbone_options,
        normalize=normalize,
        head=head,
    )
    pairs = PairSampler(train, seed=seed, device=model_device(learner))
    config = dict(n_pairs=n_pairs, steps=steps, lr=lr, seed=seed)
    if head == "contrastive":
        config["margin"] = margin
    track_recipe(checkpoint, spec, train, config, pairs=pairs.generator)
    mine = world.share(n_pairs, "n_pairs")

    def step_loss(_):
        x1, x2, same = (t[mine] for t in pairs.sample(n_pairs))
        if head == "koch":
            logits = learner.pair_logits(x1, x2)
            loss = F.binary_cross_entropy_with_logits(logits, same)
            predicted_same = logits > 0
        else:
            distance = learner.pair_distance(x1, x2)
            loss = contrastive_loss(distance, same, margin)
            predicted_same = distance < margin / 2
        return loss, {"pair_accuracy": (predicted_same == same.bool()).float().mean()}

    history = run_recipe(
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
        world=world,
        split="batch",
    )
    return learner, history
