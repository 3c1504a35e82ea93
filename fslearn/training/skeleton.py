"""The skeleton every training recipe is built from.

A recipe (:func:`~fslearn.train_protonet`, :func:`~fslearn.train_maml`, …) is
:func:`setup_recipe` (the learner built from its spec, and the data, on one device),
a sampler and a ``step_loss`` of its own (what one step draws and what it minimises),
:func:`track_recipe` (what a checkpoint must save to resume the run exactly) and
:func:`run_recipe` (:func:`~fslearn.train_steps`, validating on fixed episodes).
"""

from __future__ import annotations

import torch

from ..data.dataset import FewShotDataset
from ..distributed import SINGLE, World
from ..evaluation import evaluate
from ..models.registry import resolve_backbone_options
from ..sampling.normalize import Normalize
from ..sampling.transfer import fits_on
from .checkpoint import Checkpoint
from .specs import build_learner
from .steps import StepHistory, train_steps


def setup_recipe(
    method: str,
    train: FewShotDataset,
    hidden_channels: int | None,
    device,
    seed: int,
    backbone: str = "conv4",
    backbone_options: dict | None = None,
    normalize=None,
    **options,
):
    """``(spec, learner, train)``: the learner built from its spec, and the data, on ``device``.

    A set that would take more than half of what a GPU has left stays where it is (the host,
    or a memory-mapped file): the recipe's sampler then sends each draw's images over
    (``EpisodeSampler(device=)``), and the learner alone lives on the GPU.

    The spec of a Conv4 records its width alone, ``hidden_channels``, as every spec did before
    there were other backbones, so that those runs resume; another backbone's records its name
    and options.

    ``normalize``, ``(mean, std)`` with one number per channel each (e.g.
    :func:`~fslearn.channel_stats` of ``train``), is recorded in the spec as ``"normalize":
    {"mean": [...], "std": [...]}`` and puts :class:`~fslearn.Normalize` in front of the
    backbone; without it the spec has no such field, as before there was one.
    """
    statistics = None if normalize is None else _statistics(normalize, train.image_shape[0])
    body = resolve_backbone_options(backbone, hidden_channels, backbone_options)
    if backbone == "conv4" and set(body) <= {"hidden_channels"}:
        network = {"hidden_channels": body.get("hidden_channels", 64)}
    else:
        network = {"backbone": backbone, "backbone_options": body}
    device = train.device if device is None else torch.device(device)
    if fits_on(train, device):
        train = train.to(device)
    spec = {"method": method, "image_shape": list(train.image_shape), **network, **options}
    if statistics is not None:
        spec["normalize"] = statistics
    return spec, build_learner(spec, seed=seed).to(device), train


def _statistics(normalize, channels: int) -> dict:
    """``normalize``, ``(mean, std)``, as a spec records it, checked against the images'
    ``channels``."""
    try:
        mean, std = normalize
    except (TypeError, ValueError):
        raise ValueError(
            f"normalize must be None or (mean, std), e.g. normalize=fsl.channel_stats(train); "
            f"got {normalize!r}"
        ) from None
    checked = Normalize(mean, std)
    if len(checked.mean) != channels:
        raise ValueError(
            f"normalize gives statistics for {len(checked.mean)} channel(s), but the training "
            f"images have {channels}: measure them on these images, "
            "normalize=fsl.channel_stats(train)"
        )
    return {"mean": checked.mean.tolist(), "std": checked.std.tolist()}


def track_recipe(
    checkpoint: Checkpoint | None, spec: dict, train: FewShotDataset, config: dict, **generators
):
    """Tell ``checkpoint`` the learner's spec, the recipe's settings and its samplers'
    generators."""
    if checkpoint is not None:
        checkpoint.config.update(
            {"train_dataset": train.name, "train_classes": train.n_classes, **config}
        )
        checkpoint.track(spec, **generators)


def run_recipe(
    learner,
    step_loss,
    optimizer,
    *,
    val_episodes,
    eval_every,
    val_batch_size=None,
    world: World = SINGLE,
    **kwargs,
) -> StepHistory:
    """:func:`train_steps`, validating on ``val_episodes`` when given; ``world``'s processes
    share every step and every validation."""
    if val_episodes is not None:
        kwargs.update(
            validate=lambda: evaluate(
                learner, val_episodes, batch_size=val_batch_size, world=world
            ),
            eval_every=eval_every,
        )
    return train_steps(learner, step_loss, optimizer=optimizer, world=world, **kwargs)
