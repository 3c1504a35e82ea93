"""Peak memory of ``fsl.evaluate(..., batch_size=...)`` as the number of episodes grows.

    python benchmarks/bench_evaluate_memory.py [--episodes 100 300 600] [--batch-size 50]

miniImageNet-shaped episodes (5-way 1-shot, 15 queries, 3×84×84 float images: 6.8 MB
each) are scored by a learner that does no work, so what is measured is the episodes
themselves. ``fsl.evaluate`` builds each task batch when its turn comes; the baseline
builds every batch first and then scores them, as a list comprehension would. Each
measurement runs in a fresh process and reports the growth of its peak resident memory,
so the rows do not inherit each other's peaks.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource

import torch

import fslearn as fsl
from fslearn import bench


def _dataset() -> fsl.FewShotDataset:
    # 20 classes × 20 images of miniImageNet's shape: episodes cost what real ones cost.
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 20, 3, 84, 84), dtype=torch.uint8, generator=generator)
    names = [f"class{i:02d}" for i in range(20)]
    return fsl.FewShotDataset(images, names, ["synthetic"] * 20, "miniImageNet-shaped")


def _learner(support_x, support_y, query_x):
    return torch.zeros(*query_x.shape[:-3], 5)


def _peak_growth_mb(how: str, n_episodes: int, batch_size: int, queue) -> None:
    episodes = fsl.EpisodeSet(_dataset(), 5, 1, 15, n_episodes, seed=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if how == "fslearn":
        fsl.evaluate(_learner, episodes, batch_size=batch_size)
    else:
        batches = [
            episodes.batch(start, min(start + batch_size, n_episodes))
            for start in range(0, n_episodes, batch_size)
        ]
        fsl.evaluate(_learner, batches)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((after - before) / 1024)  # ru_maxrss is in KiB on Linux


def measure(how: str, n_episodes: int, batch_size: int) -> float:
    """Growth of the peak resident memory, in MB, of one evaluation in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_growth_mb, args=(how, n_episodes, batch_size, queue))
    child.start()
    value = queue.get()
    child.join()
    return value


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, nargs="+", default=[100, 300, 600])
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    rows = []
    for n in args.episodes:
        lazy = measure("fslearn", n, args.batch_size)
        eager = measure("baseline", n, args.batch_size)
        rows.append(dict(episodes=n, fslearn_mb=lazy, baseline_mb=eager, ratio=eager / lazy))
    columns = [
        ("episodes", "episodes", "{}"),
        ("fslearn_mb", "fsl.evaluate peak MB", "{:,.0f}"),
        ("baseline_mb", "all batches first, peak MB", "{:,.0f}"),
        ("ratio", "baseline / fslearn", "{:.1f}×"),
    ]
    print(f"batch_size={args.batch_size}, 5-way 1-shot 15-query, 3×84×84")
    print(bench.format_table(rows, columns))


if __name__ == "__main__":
    main()
