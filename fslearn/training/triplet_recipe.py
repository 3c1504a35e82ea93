"""The triplet loss's recipe: P×K batches, triplets mined in each, a margin between them."""

from __future__ import annotations

import torch

from ..common import model_device
from ..data.dataset import FewShotDataset
from ..distributed import SINGLE, World
from ..methods.nearest_neighbour import NearestNeighbourLearner
from ..methods.triplet import triplet_batch_loss
from ..sampling.pk_batches import PKSampler
from .checkpoint import Checkpoint
from .skeleton import run_recipe, setup_recipe, track_recipe
from .steps import StepHistory


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
) -> tuple[NearestNeighbourLearner, StepHistory]:
    """An embedding trained with the triplet loss (Schroff et al. 2015) on P×K batches.

    Every step draws ``n_classes`` (P) classes × ``n_per_class`` (K) images, mines
    triplets with ``strategy`` (``"random"``, ``"semi-hard"`` or ``"batch-hard"``)
    and minimises ``max(d+ − d− + margin, 0)``; Adam with learning rate ``lr``.
    Test-time classification uses ``rule`` (nearest support image or nearest prototype).

    Across the processes of ``world`` each rank embeds its share of the P×K batch and
    mining runs over the whole batch's embeddings (gathered), as in one process; batch
    normalization sees each rank's share only (close to one process's result, not equal).
    ``normalize``, the images' per-channel ``(mean, std)``, is :func:`~fslearn.train_protonet`'s.

    Returns:
        ``(learner, history)``; ``history.metrics["active_fraction"]`` is the per-step
        fraction of mined triplets that still violate the margin.
    """
    spec, learner, train = setup_recipe(
        "triplet",
        train,
        hidden_channels,
        device,
        seed,
        backbone,
        backbone_options,
        normalize=normalize,
        rule=rule,
    )
    batches = PKSampler(train, n_classes, n_per_class, seed=seed, device=model_device(learner))
    generator = torch.Generator(device=batches.device).manual_seed(seed)
    config = dict(strategy=strategy, n_classes=n_classes, n_per_class=n_per_class, margin=margin)
    track_recipe(
        checkpoint,
        spec,
        train,
        {**config, "steps": steps, "lr": lr, "seed": seed},
        batches=batches.generator,
        mining=generator,
    )

    mine = world.share(n_classes * n_per_class, "n_classes × n_per_class")

    def step_loss(_):
        x, y = batches.sample()
        embeddings = world.gather_rows(learner.backbone(x[mine]))
        loss, active = triplet_batch_loss(embeddings, y, strategy, margin, generator=generator)
        return loss, {"active_fraction": active}

    history = run_recipe(
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
        world=world,
        split="batch",
    )
    return learner, history
