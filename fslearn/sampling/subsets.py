"""Sampling without replacement for many rows at once, on the device: what every sampler draws
with."""

from __future__ import annotations

import torch


def random_subsets(
    n_rows: tuple, n_items: int, k: int, generator: torch.Generator, device
) -> torch.Tensor:
    """``k`` distinct indices out of ``n_items`` for every row, in random order: shape
    ``(*n_rows, k)``.

    Random keys and ``topk`` on ``device``: sampling without replacement for many rows
    at once, with no host synchronisation. Every sampler in fslearn draws through this.
    """
    keys = torch.rand(*n_rows, n_items, generator=generator, device=device)
    return keys.topk(k, dim=-1).indices


def random_rows(dataset, classes: torch.Tensor, k: int, generator: torch.Generator):
    """``k`` distinct images of each class in ``classes``, as rows of ``dataset.flat_images``:
    shape ``(*classes.shape, k)``, on ``classes``' device.

    Each class draws from its own count. Keys past a class's count are masked below every
    real key, so ``topk`` never picks them; the mask costs the gap between the largest class
    and the others, and nothing for a set of equal classes, whose draws are those of
    :func:`random_subsets` over ``n_per_class``. Every class must hold ``k`` images (the
    samplers check that when they are built).
    """
    device = classes.device
    if not dataset.is_ragged:
        within = random_subsets(tuple(classes.shape), dataset.min_per_class, k, generator, device)
        return classes[..., None] * dataset.min_per_class + within
    counts = dataset.counts.to(device)[classes]
    keys = torch.rand(*classes.shape, dataset.max_per_class, generator=generator, device=device)
    past = torch.arange(dataset.max_per_class, device=device) >= counts[..., None]
    within = keys.masked_fill_(past, -1.0).topk(k, dim=-1).indices
    return dataset.offsets.to(device)[classes][..., None] + within
