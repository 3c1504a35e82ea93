"""Whether a dataset can give the episodes or batches asked of it, checked once, when a
sampler is built: every class needs the images a draw takes from it."""

from __future__ import annotations

from ..common import check_positive_int
from ..data.dataset import FewShotDataset


def check_episode_shape(
    dataset: FewShotDataset, n_way: int, n_shot: int, n_query: int
) -> tuple[int, int, int]:
    """``(n_way, n_shot, n_query)`` as ints, or a ValueError naming the numbers when ``dataset``
    cannot give such episodes: every class needs ``n_shot + n_query`` images."""
    n_way = check_positive_int("n_way", n_way)
    n_shot = check_positive_int("n_shot", n_shot)
    n_query = check_positive_int("n_query", n_query)
    if n_way > dataset.n_classes:
        raise ValueError(
            f"n_way={n_way} but {dataset.name} has only {dataset.n_classes} classes; "
            f"use n_way ≤ {dataset.n_classes}"
        )
    needed = n_shot + n_query
    check_class_sizes(
        dataset,
        needed,
        f"n_shot + n_query = {n_shot} + {n_query} = {needed} images per class",
        f"use n_shot + n_query ≤ {dataset.min_per_class}",
    )
    return n_way, n_shot, n_query


def check_class_sizes(dataset: FewShotDataset, needed: int, need: str, fix: str) -> None:
    """A ValueError naming the classes of ``dataset`` with fewer than ``needed`` images.

    ``need`` says what asks for them (``"n_shot + n_query = 1 + 15 = 16 images per
    class"``), ``fix`` what to do (``"use n_shot + n_query ≤ 10"``).
    """
    if dataset.min_per_class >= needed:
        return
    if not dataset.is_ragged:
        raise ValueError(
            f"{need}, but {dataset.name} has only {dataset.min_per_class} per class; {fix}"
        )
    sizes = zip(dataset.class_names, dataset.count_list, strict=True)
    short = [(name, count) for name, count in sizes if count < needed]
    shown = ", ".join(f"{name!r} ({count})" for name, count in short[:3])
    more = f" and {len(short) - 3} more" if len(short) > 3 else ""
    raise ValueError(
        f"{need}, but {len(short)} of {dataset.name}'s classes have fewer: {shown}{more}; "
        f"{fix}, or leave those classes out (dataset.select)"
    )
