"""Test-time augmentation: a metric learner that embeds every image as the mean over distorted
views of it."""

from __future__ import annotations

import torch
from torch import nn

from ..common import check_positive_int
from ..sampling.augment import random_affine
from .prototypes import NearestPrototype, ProtoNet


class AveragedViews(nn.Module):
    """A backbone's embedding averaged over the image and distorted views of it.

    ``(B, C, H, W)`` → ``(B, D)``: the mean of ``backbone`` over the image and ``views - 1``
    copies warped by :func:`~fslearn.random_affine` at ``strength``, drawn from a generator
    seeded with ``seed`` when the module is made (so that a learner built the same way scores
    the same episodes the same).
    """

    def __init__(self, backbone: nn.Module, views: int, strength: float = 1.0, seed: int = 0):
        super().__init__()
        self.views = check_positive_int("views", views)
        if not strength >= 0:
            raise ValueError(f"strength must be ≥ 0; got {strength}")
        self.backbone, self.strength = backbone, strength
        device = next(backbone.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warped = [random_affine(x, self.strength, self.generator) for _ in range(self.views - 1)]
        return torch.stack([self.backbone(view) for view in [x, *warped]]).mean(0)


def with_test_views(
    learner: NearestPrototype, views: int = 8, strength: float = 1.0, seed: int = 0
) -> NearestPrototype:
    """``learner`` with test-time augmentation: the same nearest-prototype rule on embeddings
    averaged over ``views`` views of every image (:class:`AveragedViews`; the image and
    ``views - 1`` affine distortions at ``strength``).

    It shares ``learner``'s backbone (its weights are not copied) and costs ``views`` times
    the embedding work. The minimal recipe scores its network with 8 views at strength 1, the
    distortions it trains with.

    Raises:
        TypeError: ``learner`` is not a nearest-prototype learner (a prototypical network, or a
            triplet or pre-trained embedding classified by prototype).
    """
    if not isinstance(learner, NearestPrototype):
        raise TypeError(
            f"test-time views average the embeddings of a nearest-prototype learner "
            f"(fsl.ProtoNet, fsl.NearestPrototype); got {type(learner).__name__}"
        )
    backbone = AveragedViews(learner.backbone, views, strength, seed)
    if isinstance(learner, ProtoNet):
        return ProtoNet(backbone, learner.distance, scale=learner.scale.item())
    return NearestPrototype(backbone, learner.distance)
