"""Rotations and reflections of every class as classes of their own: more classes from the
same drawings (Vinyals et al.'s protocol, and the minimal recipe's reflections)."""

from __future__ import annotations

import numbers

import torch

from .dataset import FewShotDataset


def _made_already(dataset: FewShotDataset, suffix: str, function: str) -> None:
    """A ValueError if ``function`` made ``dataset``'s classes already (its names carry
    ``suffix``): a second time would make classes that hold the same images."""
    done = [name for name in dataset.class_names if suffix in name]
    if done:
        raise ValueError(
            f"{dataset.name} went through fsl.{function} already (its class {done[0]!r}, "
            f"among {len(done)}): a second time would make classes that hold the same images "
            f"under repeated names; use it as it is, or apply fsl.{function} once to the "
            "dataset it was made from"
        )


def with_rotations(dataset: FewShotDataset, angles=(0, 90, 180, 270)) -> FewShotDataset:
    """Each class rotated by each angle becomes a class of its own (Vinyals et al.'s protocol).

    Returns a dataset of ``len(angles) * n_classes`` classes, angle-major: the first
    ``n_classes`` are rotated by ``angles[0]``, and so on. Names get a ``@rot<angle>`` suffix.

    Raises:
        ValueError: an angle is not a multiple of 90 degrees, or repeats a rotation; an angle
            of 90 or 270 (modulo 360) on images that are not square; or ``dataset`` is rotated
            already (a name has the suffix ``@rot``, as Vinyals' Omniglot split has): rotated
            again, its classes would repeat (rotating ``@rot90`` by 90 gives ``@rot180``).
    """
    _made_already(dataset, "@rot", "with_rotations")
    angles = tuple(angles)
    if not angles:
        raise ValueError("angles must name at least one rotation, e.g. (0, 90, 180, 270)")
    # 90.0 passes ``% 90`` but not torch.rot90: an angle is an integer number of degrees.
    bad = [
        a for a in angles if isinstance(a, bool) or not isinstance(a, numbers.Integral) or a % 90
    ]
    if bad:
        raise ValueError(f"angles must be multiples of 90 degrees; got {bad}")
    turns = [a // 90 % 4 for a in angles]
    if len(set(turns)) < len(turns):
        raise ValueError(
            f"angles {list(angles)} repeat a rotation (modulo 360), which would make each class "
            f"two classes with the same images; give each rotation once"
        )
    height, width = dataset.image_shape[1:]
    quarter = [a for a, turn in zip(angles, turns, strict=True) if turn % 2]
    if quarter and height != width:
        raise ValueError(
            f"rotating by {quarter[0]} degrees turns {dataset.name}'s {height}×{width} images "
            f"into {width}×{height} ones, and the classes of one dataset share one image shape: "
            "quarter turns need square images; crop or resize them to a square first, or "
            "rotate by angles=(0, 180) alone"
        )
    flat = dataset.flat_images
    images = torch.cat([torch.rot90(flat, int(a) // 90, dims=(-2, -1)) for a in angles])
    names = [f"{name}@rot{a}" for a in angles for name in dataset.class_names]
    return FewShotDataset(
        images,
        names,
        list(dataset.groups) * len(angles),
        f"{dataset.name} ×{len(angles)} rotations",
        counts=dataset.count_list * len(angles),
    )


def with_reflections(dataset: FewShotDataset) -> FewShotDataset:
    """Each class and its left-right mirror image, each a class of its own.

    Returns a dataset of ``2 * n_classes`` classes: the classes as they are, then each one
    mirrored (names with a ``@mirror`` suffix). With :func:`with_rotations` after it, every
    character gives 8 classes, all its rotations and reflections.

    Raises:
        ValueError: ``dataset`` is mirrored already (a name has the suffix ``@mirror``):
            mirrored again, each class would have a copy of the same images.
    """
    _made_already(dataset, "@mirror", "with_reflections")
    return FewShotDataset(
        torch.cat([dataset.flat_images, dataset.flat_images.flip(-1)]),
        list(dataset.class_names) + [f"{name}@mirror" for name in dataset.class_names],
        list(dataset.groups) * 2,
        f"{dataset.name} and its mirror image",
        counts=dataset.count_list * 2,
    )


def training_classes(
    train: FewShotDataset, *, rotate_classes: bool = False, reflect_classes: bool = False
) -> FewShotDataset:
    """The classes :func:`train_protonet` trains on: ``train``, with each class's mirror image
    (``reflect_classes``), then each class's rotations (``rotate_classes``), as classes of
    their own (8 per class with both)."""
    if reflect_classes:
        train = with_reflections(train)
    if rotate_classes:
        train = with_rotations(train)
    return train
