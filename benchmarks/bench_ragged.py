"""Episodes per second from classes of different sizes against the same classes cut to one size.

    python benchmarks/bench_ragged.py [--device cuda] [--tasks 32] [--repeats 20]

The ragged set is the embedded background set (964 classes) with each class cut to a random
10 to 20 images; the equal set is the same classes cut to 10. Both are sampled by
``fsl.EpisodeSampler`` on the device, in alternating rounds; the ratio is ragged over equal
(the bar is 0.9×).
"""

from __future__ import annotations

import argparse

import torch

import fslearn as fsl
from fslearn import bench
from fslearn.bench.ragged import RAGGED_COLUMNS, ragged_sampler_speed


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=str(fsl.default_device()))
    parser.add_argument("--tasks", type=int, default=32, help="episodes per batch")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__} on {bench.device_name(device)}; batches of {args.tasks}")
    rows = ragged_sampler_speed(device, n_tasks=args.tasks, repeats=args.repeats)
    print(bench.format_table(rows, RAGGED_COLUMNS))


if __name__ == "__main__":
    main()
