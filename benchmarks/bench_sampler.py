"""Episode sampling speed: fslearn's EpisodeSampler vs a DataLoader + batch-sampler pipeline.

    python benchmarks/bench_sampler.py [--device cuda] [--tasks 32] [--repeats 20]

The baseline builds episodes the way easyfsl's TaskSampler and torchmeta do: a
``Dataset`` of single (image, label) pairs, a batch sampler that yields the
indices of one episode, a ``DataLoader`` whose collate function stacks the
images, splits support from query and remaps labels, then a copy to the device.
fslearn draws the same shape of episode batch with index arithmetic on the
device where the whole dataset already lives. Both live in ``fslearn.bench``
(``fslearn bench`` runs them too); this script prints the table.
"""

from __future__ import annotations

import argparse

import torch

import fslearn as fsl
from fslearn import bench


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=str(fsl.default_device()))
    parser.add_argument(
        "--tasks", type=int, default=32, help="episodes per batch (MAML's meta-batch)"
    )
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__} on {bench.device_name(device)}; "
        f"batches of {args.tasks} episodes from 964 classes"
    )
    print(
        bench.format_table(
            bench.sampler_speed(device, n_tasks=args.tasks, repeats=args.repeats),
            bench.SAMPLER_COLUMNS,
        )
    )


if __name__ == "__main__":
    main()
