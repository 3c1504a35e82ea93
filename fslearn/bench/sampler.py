"""Episode sampling speed: :class:`~fslearn.EpisodeSampler` against a DataLoader pipeline."""

from __future__ import annotations

import torch

from ..common import check_positive_int, default_device, progress_bar
from ..data.embedded import load_embedded
from ..sampling.episodes import EpisodeSampler
from .baselines import dataloader_episodes
from .timing import seconds_per_call

#: The columns of :func:`sampler_speed`'s table: ``(key, header, format)``.
SAMPLER_COLUMNS = [
    ("setting", "episode shape", "{}"),
    ("fslearn_ms", "fslearn ms/batch", "{:.3f}"),
    ("dataloader_ms", "DataLoader ms/batch", "{:.2f}"),
    ("episodes_per_s", "episodes/s (fslearn)", "{:,.0f}"),
    ("speedup", "speed-up", "{:.1f}×"),
]
SHAPES = [(5, 1, 15), (5, 5, 15), (20, 1, 15), (20, 5, 5)]


def sampler_speed(
    device=None, *, n_tasks: int = 32, repeats: int = 20, progress: bool = False
) -> list[dict]:
    """Milliseconds per batch of ``n_tasks`` episodes: EpisodeSampler vs DataLoader + TaskSampler.

    Both draw from the embedded background set (964 classes). fslearn samples with
    index arithmetic on ``device``, where the whole set lives; the baseline
    (:func:`~fslearn.bench.dataloader_episodes`), like easyfsl and torchmeta, indexes
    single images, collates each episode on the host and copies the stacked batch to
    ``device``.

    Returns:
        One row per episode shape, a dict with ``setting``, ``fslearn_ms``, ``dataloader_ms``,
        ``episodes_per_s`` (fslearn) and ``speedup``.
    """
    device = default_device() if device is None else torch.device(device)
    n_tasks = check_positive_int("n_tasks", n_tasks)
    repeats = check_positive_int("repeats", repeats)
    dataset = load_embedded("background", progress=False)
    on_device = dataset.to(device)
    rows, bar = [], progress_bar(len(SHAPES), "sampler speed", progress)
    for n_way, n_shot, n_query in SHAPES:
        sampler = EpisodeSampler(on_device, n_way, n_shot, n_query, seed=0)
        sampler.sample_tasks(n_tasks)  # warm-up: allocations, kernel launches
        ours = seconds_per_call(
            lambda sampler=sampler: sampler.sample_tasks(n_tasks), device, repeats
        )
        batches = dataloader_episodes(dataset, n_way, n_shot, n_query, seed=0)
        next(batches)

        def baseline_batch(batches=batches):
            tasks = [next(batches) for _ in range(n_tasks)]
            return [
                torch.stack(part).to(device, non_blocking=True) for part in zip(*tasks, strict=True)
            ]

        base = seconds_per_call(baseline_batch, device, repeats)
        rows.append(
            dict(
                setting=f"{n_way}-way {n_shot}-shot {n_query}-query",
                fslearn_ms=ours * 1e3,
                dataloader_ms=base * 1e3,
                episodes_per_s=n_tasks / ours,
                speedup=base / ours,
            )
        )
        bar.update()
    bar.close()
    return rows
