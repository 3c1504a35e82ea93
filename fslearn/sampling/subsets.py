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


def group_table(groups: list[str], n_way: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The classes of every group with ``n_way`` classes or more, for drawing episodes within
    one group: ``(table, sizes)``, ``table`` of shape ``(n_groups, largest)`` holding each
    group's class indices (padded with 0 past its size) and ``sizes`` of shape
    ``(n_groups,)``, on ``device``.

    Raises:
        ValueError: no group has ``n_way`` classes (naming the largest).
    """
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    eligible = [classes for classes in members.values() if len(classes) >= n_way]
    if not eligible:
        largest = max(members, key=lambda group: len(members[group]))
        raise ValueError(
            f"episodes within one group need a group of {n_way} classes; the largest, "
            f"{largest!r}, has {len(members[largest])}: lower n_way"
        )
    width = max(map(len, eligible))
    table = torch.tensor([classes + [0] * (width - len(classes)) for classes in eligible])
    sizes = torch.tensor([len(classes) for classes in eligible])
    return table.to(device), sizes.to(device)


def subsets_within_groups(
    table: torch.Tensor, sizes: torch.Tensor, n_tasks: int, k: int, generator: torch.Generator
) -> torch.Tensor:
    """``k`` distinct classes of one group for each of ``n_tasks`` episodes, shape
    ``(n_tasks, k)``: the group drawn in proportion to its classes (every class as likely to
    be drawn as in episodes across groups), then ``k`` of its classes without replacement,
    on the device of ``table`` with no host synchronisation."""
    device = table.device
    group = torch.multinomial(sizes.float(), n_tasks, replacement=True, generator=generator)
    keys = torch.rand(n_tasks, table.shape[1], generator=generator, device=device)
    past = torch.arange(table.shape[1], device=device) >= sizes[group][:, None]
    within = keys.masked_fill_(past, -1.0).topk(k, dim=-1).indices
    return table[group[:, None], within]
