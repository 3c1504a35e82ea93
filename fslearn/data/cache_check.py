"""What a loader's cache must hold to be the dataset it needs."""

from __future__ import annotations

import torch


def dataset_problem(saved: dict, *, channels: int, image_size: int) -> str | None:
    """What stops ``saved`` (a loader's cached dict) from being the dataset it needs, or None.

    The loader needs uint8 ``images`` of shape ``(n_classes, n_per_class, channels,
    image_size, image_size)``, one string in ``class_names`` (and in ``groups``, if saved)
    per class and a string ``name`` if saved: a cache written by other code or damaged in
    place fails here and is built again instead of being returned.
    """
    images = saved["images"]
    if not isinstance(images, torch.Tensor):
        return f"images is a {type(images).__name__}, not a tensor"
    if (
        images.dtype != torch.uint8
        or images.dim() != 5
        or min(images.shape, default=0) == 0
        or tuple(images.shape[2:]) != (channels, image_size, image_size)
    ):
        return (
            f"images are {images.dtype} of shape {tuple(images.shape)}; expected torch.uint8 "
            f"of shape (n_classes, n_per_class, {channels}, {image_size}, {image_size})"
        )
    for key in ("class_names", "groups"):
        if key not in saved:
            continue
        values = saved[key]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return f"{key} is not a list of strings"
        if len(values) != len(images):
            return f"{len(images)} classes of images but {len(values)} {key}"
    if not isinstance(saved.get("name", ""), str):
        return "name is not a string"
    return None
