"""Test-time augmentation: a metric learner that embeds every image as the mean over distorted
views of it."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..common import check_positive_int, model_device
from ..room import available_bytes
from ..sampling.augment import check_strength, random_affine
from .nearest_neighbour import NearestNeighbourLearner
from .prototypes import NearestPrototype, ProtoNet

#: The learners whose embeddings test-time views can average: those that classify a query by
#: its distances to embedded support images or to their means.
AVERAGEABLE = (NearestPrototype, NearestNeighbourLearner)
#: The same learners, as the methods of ``fslearn train`` that make them.
AVERAGEABLE_METHODS = "protonet, and triplet with either rule"


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _costs(backbone: nn.Module, image_shape) -> tuple[int, int]:
    """Bytes per image of :class:`AveragedViews`: ``(whatever the number of views, per view)``."""
    x = torch.zeros(1, *image_shape, device=model_device(backbone))
    outputs = []
    hooks = [
        layer.register_forward_hook(lambda _, __, output: outputs.append(_bytes([output])))
        for layer in backbone.modules()
        if next(layer.children(), None) is None
    ]
    was_training = backbone.training
    backbone.eval()  # a pass in training mode would move batch norm's running statistics
    try:
        with torch.no_grad():
            embedding = _bytes([backbone(x)])
    finally:
        backbone.train(was_training)
        for hook in hooks:
            hook.remove()
    image = _bytes([x])
    # The image and every layer's output, as if all were kept: more than a pass without
    # gradients holds at once.
    one_pass = image + sum(outputs)
    # Per view: its embedding. Besides: one pass of the backbone, one warped copy with
    # random_affine's grid (about three images), and the embedding the pass returns.
    return one_pass + 3 * image + embedding, embedding


def views_bytes(backbone: nn.Module, image_shape, n_images: int, views: int) -> int:
    """About how many bytes :class:`AveragedViews` needs at once to embed ``n_images`` images
    of shape ``image_shape`` ``(C, H, W)`` with ``views`` views of each.

    The ``views`` embeddings, one warped copy of the batch and one pass of ``backbone``, whose
    share per image is measured on one image: the outputs of all its layers together, more
    than a pass without gradients holds at once.
    """
    fixed, per_view = _costs(backbone, image_shape)
    return n_images * (fixed + views * per_view)


def check_views_memory(
    backbone: nn.Module, image_shape, n_images: int, views: int, device, name: str = "views"
) -> None:
    """A ValueError unless ``device`` has room for :func:`views_bytes`.

    The message names ``name`` (a keyword, or a command-line flag such as ``--test-views``)
    with ``views``, the estimate, the memory available and the largest number of views that
    fits. Nothing is checked where the available memory is unknown.
    """
    room = available_bytes(device)
    if room is None:
        return
    fixed, per_view = _costs(backbone, image_shape)
    needed = n_images * (fixed + views * per_view)
    if needed <= room:
        return
    largest = (room // n_images - fixed) // per_view
    shown = f"{name} {views}" if name.startswith("-") else f"{name}={views}"
    fix = (
        f"the largest {name} that fits is {largest}"
        if largest >= 2
        else "not even 2 views fit: test without views, or with fewer images per episode"
    )
    raise ValueError(
        f"{shown} needs about {_gib(needed)} to embed {n_images} images of shape "
        f"{tuple(image_shape)} at once, {views} views of each, but {device} has "
        f"{_gib(room)} available; {fix}"
    )


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**27 else f"{n_bytes / 2**20:.0f} MiB"


class AveragedViews(nn.Module):
    """A backbone's embedding averaged over the image and distorted views of it.

    ``(B, C, H, W)`` → ``(B, D)``: the mean of ``backbone`` over the image and ``views - 1``
    copies warped by :func:`~fslearn.random_affine` at ``strength`` (0 to 2.5), drawn from a
    generator seeded with ``seed`` when the module is made (so that a learner built the same
    way scores the same episodes the same).

    Before it embeds a batch of a shape it has not seen, it checks that the device has the
    memory all the views of that batch take at once (``check_views_memory``), so that a
    number of views too large is a ValueError naming the largest that fits, not an
    out-of-memory error in the middle of an evaluation.
    """

    def __init__(self, backbone: nn.Module, views: int, strength: float = 1.0, seed: int = 0):
        super().__init__()
        self.views = check_positive_int("views", views)
        self.backbone, self.strength = backbone, check_strength(strength)
        self.generator = torch.Generator(device=model_device(backbone)).manual_seed(seed)
        self._fits: set[tuple[int, ...]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.views > 1 and tuple(x.shape) not in self._fits:
            n_images = math.prod(x.shape[:-3])
            check_views_memory(self.backbone, x.shape[-3:], n_images, self.views, x.device)
            self._fits.add(tuple(x.shape))
        # One view at a time into one buffer: the memory of the views is their embeddings
        # alone, and the mean is the very one of stacking them (the same draws, in order).
        embeddings = None
        for i in range(self.views):
            view = x if i == 0 else random_affine(x, self.strength, self.generator)
            embedding = self.backbone(view)
            if embeddings is None:
                embeddings = embedding.new_empty((self.views, *embedding.shape))
            embeddings[i] = embedding
        return embeddings.mean(0)


def with_test_views(
    learner: NearestPrototype | NearestNeighbourLearner,
    views: int = 8,
    strength: float = 1.0,
    seed: int = 0,
) -> NearestPrototype | NearestNeighbourLearner:
    """``learner`` with test-time augmentation: the same rule (nearest prototype, or nearest
    support image) on embeddings averaged over ``views`` views of every image
    (:class:`AveragedViews`; the image and ``views - 1`` affine distortions at ``strength``).

    It shares ``learner``'s backbone (its weights are not copied) and costs ``views`` times
    the embedding work, and ``views`` times its memory. The minimal recipe scores its network
    with 8 views at strength 1, the distortions it trains with.

    Raises:
        TypeError: ``learner`` is not one of ``AVERAGEABLE`` (a prototypical network, a
            nearest-prototype learner, or a triplet embedding's nearest-neighbour learner).
        ValueError: ``views`` is not a positive integer, or ``strength`` not from 0 to 2.5.
    """
    if not isinstance(learner, AVERAGEABLE):
        raise TypeError(
            "test-time views average the embeddings of a learner that classifies by distances "
            "between them (fsl.ProtoNet, fsl.NearestPrototype, fsl.NearestNeighbourLearner; "
            f"fslearn train's {AVERAGEABLE_METHODS}); got {type(learner).__name__}"
        )
    backbone = AveragedViews(learner.backbone, views, strength, seed)
    if isinstance(learner, ProtoNet):
        return ProtoNet(backbone, learner.distance, scale=learner.scale.item())
    if isinstance(learner, NearestNeighbourLearner):
        return NearestNeighbourLearner(backbone, learner.rule)
    return NearestPrototype(backbone, learner.distance)
