"""MAML on one device: fsl.MAML's strategies against a per-task loop written with higher.

    python benchmarks/bench_maml_strategies.py [--device cpu] [--rounds N]
                                               [--meta-batches 4 16] [--inner-steps 1 5]

Omniglot 5-way 1-shot 15-query, Conv4-64 with per-task batch statistics, second and first
order; every implementation samples the same tasks and takes the same Adam step. Rounds are
interleaved (one meta-iteration of each implementation per round), medians reported, with
each row's time over higher's in the same setting. ``higher`` is an optional extra:
``pip install "fslearn[bench]"``; without it the table has no higher column. Set the threads
with ``--threads`` (torch's default otherwise) and say which in any record of the numbers.
"""

from __future__ import annotations

import argparse

import torch

from fslearn import bench


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--meta-batches", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--orders", nargs="+", default=["second", "first"])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__} on {bench.device_name(device)}")
    if not bench.higher_available():
        print('higher is not installed (pip install "fslearn[bench]"): no higher rows')
    rows = bench.maml_strategy_speed(
        device,
        meta_batches=args.meta_batches,
        inner_steps=args.inner_steps,
        orders=args.orders,
        rounds=args.rounds,
        progress=True,
    )
    print(bench.format_table(rows, bench.STRATEGY_COLUMNS))


if __name__ == "__main__":
    main()
