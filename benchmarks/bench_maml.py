"""MAML meta-iterations per second: the per-task loop most libraries run vs fslearn's batched MAML.

    python benchmarks/bench_maml.py [--device cuda] [--iterations N] [--meta-batch M]
                                    [--no-compile] [--settings omniglot-1 ...] [--out FILE]

Second-order MAML, 5-way 1-shot with 15 queries, on the paper's settings: Omniglot
(Conv4-64, 28×28, meta-batch 32, 1 and 5 inner steps) and miniImageNet (Conv4-32,
84×84 RGB, meta-batch 4, 5 inner steps), on synthetic images of those shapes. Three
implementations do the same work per meta-iteration (sample the tasks on the
device, meta-loss, backward, Adam step):

* the per-task loop of learn2learn and most MAML code (``fslearn.bench.per_task_meta_loss``):
  adapt a copy of the parameters with ``autograd.grad(create_graph=True)`` and call
  backward task by task, a Python loop of small kernels;
* ``fsl.MAML.meta_loss`` in eager mode: every task at once under ``torch.func.vmap``;
* the same under ``torch.compile`` (CUDA graphs on a GPU), as ``fsl.train_maml(compile=True)``.

The baseline runs in the same process, so the speed-ups hold on a busy machine. The
table also shows time to the first meta-iteration, which for the compiled version
includes compilation: the wait a reader pays before training starts. With ``--out``
the rows are written as JSON; ``--out fslearn/results/maml_speed.json`` replaces the
measurement that ships with fslearn and that chapter 10 prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import fslearn as fsl
from fslearn import bench
from fslearn.writable import check_writable


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=str(fsl.default_device()))
    parser.add_argument(
        "--iterations", type=int, help="timed meta-iterations (default 50 on cuda, 5 on cpu)"
    )
    parser.add_argument(
        "--meta-batch", type=int, help="override every setting's meta-batch (quick CPU runs)"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(bench.MAML_SETTINGS),
        choices=list(bench.MAML_SETTINGS),
    )
    parser.add_argument(
        "--out", type=Path, help="write the rows and how they were made to this JSON file"
    )
    parser.add_argument("--notes", default="", help="free text stored with --out")
    args = parser.parse_args()
    if args.out is not None:
        try:  # now, not after minutes of timing
            check_writable(args.out, flag="--out")
        except OSError as error:
            parser.error(str(error))
    device = torch.device(args.device)
    print(f"torch {torch.__version__} on {bench.device_name(device)}")
    rows = bench.maml_speed(
        device,
        settings=args.settings,
        iterations=args.iterations,
        meta_batch=args.meta_batch,
        compile=not args.no_compile,
        progress=True,
    )
    print(bench.format_table(rows, bench.MAML_COLUMNS))
    if args.out:
        bench.write_results(
            args.out,
            rows,
            argv=["python", "benchmarks/bench_maml.py", *sys.argv[1:]],
            device=device,
            notes=args.notes,
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
