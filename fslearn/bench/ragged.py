"""Sampling from classes of different sizes: a ragged set against the same set cut to equal
sizes, timed in the same run."""

from __future__ import annotations

import statistics

import torch

from ..common import check_positive_int, default_device, progress_bar
from ..data.dataset import FewShotDataset
from ..data.embedded import load_embedded
from ..sampling.episodes import EpisodeSampler
from .timing import seconds_per_call

#: The columns of :func:`ragged_sampler_speed`'s table: ``(key, header, format)``.
RAGGED_COLUMNS = [
    ("setting", "episode shape", "{}"),
    ("equal_per_s", "equal sizes: episodes/s", "{:,.0f}"),
    ("ragged_per_s", "ragged: episodes/s", "{:,.0f}"),
    ("ratio", "ragged / equal", "{:.2f}×"),
]
RAGGED_SHAPES = [(5, 1, 9), (5, 5, 5), (20, 1, 9)]


def ragged_and_equal(dataset: FewShotDataset, smallest: int, seed: int = 0):
    """``dataset`` with each class cut to a random size from ``smallest`` to all its images,
    and the same classes all cut to ``smallest``: ``(ragged, equal)``."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(
        smallest, dataset.min_per_class + 1, (dataset.n_classes,), generator=generator
    )
    kept = [dataset.class_images(c)[:n] for c, n in enumerate(counts.tolist())]
    args = (dataset.class_names, dataset.groups)
    ragged = FewShotDataset.from_classes(kept, *args, f"{dataset.name}, ragged")
    equal = FewShotDataset.from_classes([x[:smallest] for x in kept], *args, f"{dataset.name}, cut")
    return ragged, equal


def ragged_sampler_speed(
    device=None, *, n_tasks: int = 32, repeats: int = 20, rounds: int = 5, progress: bool = False
) -> list[dict]:
    """Episodes per second from the embedded background set with classes cut to 10–20 images
    (ragged) and to 10 (equal), in alternating rounds; each figure is the median round.

    Returns:
        One row per episode shape: ``setting``, ``equal_per_s``, ``ragged_per_s``, ``ratio``.
    """
    device = default_device() if device is None else torch.device(device)
    n_tasks = check_positive_int("n_tasks", n_tasks)
    repeats = check_positive_int("repeats", repeats)
    rounds = check_positive_int("rounds", rounds)
    ragged, equal = (d.to(device) for d in ragged_and_equal(load_embedded("background"), 10))
    rows, bar = [], progress_bar(len(RAGGED_SHAPES), "ragged sampler speed", progress)
    for n_way, n_shot, n_query in RAGGED_SHAPES:
        samplers = [EpisodeSampler(d, n_way, n_shot, n_query, seed=0) for d in (equal, ragged)]
        times = [[], []]
        for _ in range(rounds):
            for sampler, spent in zip(samplers, times, strict=True):
                sampler.sample_tasks(n_tasks)  # warm-up
                call = lambda sampler=sampler: sampler.sample_tasks(n_tasks)  # noqa: E731
                spent.append(seconds_per_call(call, device, repeats))
        equal_s, ragged_s = (statistics.median(spent) for spent in times)
        rows.append(
            dict(
                setting=f"{n_way}-way {n_shot}-shot {n_query}-query",
                equal_per_s=n_tasks / equal_s,
                ragged_per_s=n_tasks / ragged_s,
                ratio=equal_s / ragged_s,
            )
        )
        bar.update()
    bar.close()
    return rows
