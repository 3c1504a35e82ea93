"""Training recipes: one call trains a method with the hyperparameters of its paper.

Each ``train_*`` function takes the training classes (and optionally validation
episodes), builds the learner, trains it with :func:`~fslearn.train_steps`, and
returns ``(learner, history)``. Defaults are the published Omniglot settings
(design notes §5); pass smaller budgets for a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backbones import Conv4
from .data import FewShotDataset
from .episodes import EpisodeSampler
from .episodic import StepHistory, train_steps
from .evaluate import evaluate
from .prototypes import ProtoNet


def _validation(learner, val_episodes, eval_every):
    if val_episodes is None:
        return {}
    return {"validate": lambda: evaluate(learner, val_episodes), "eval_every": eval_every}


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

    Returns:
        ``(protonet, history)``.
    """
    device = train.device if device is None else torch.device(device)
    train = train.to(device)
    learner = ProtoNet(Conv4(train.image_shape[0], hidden_channels, seed=seed), distance).to(device)
    optimizer = torch.optim.Adam(learner.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=halve_every, gamma=0.5)
    sampler = EpisodeSampler(train, n_way, n_shot, n_query, seed=seed)

    def step_loss(_):
        episode = sampler.sample()
        logits = learner(episode.support_x, episode.support_y, episode.query_x)
        accuracy = (logits.argmax(-1) == episode.query_y).float().mean()
        return F.cross_entropy(logits, episode.query_y), {"accuracy": accuracy}

    history = train_steps(
        learner,
        step_loss,
        steps=steps,
        optimizer=optimizer,
        scheduler=scheduler,
        seed=seed,
        progress=progress,
        desc=f"ProtoNet {n_way}-way {n_shot}-shot",
        **_validation(learner, val_episodes, eval_every),
    )
    return learner, history
