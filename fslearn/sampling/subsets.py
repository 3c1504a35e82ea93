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
