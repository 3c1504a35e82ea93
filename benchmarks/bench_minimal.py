"""The minimal recipe, one choice at a time, on Omniglot's minimal setting.

    python benchmarks/bench_minimal.py --data-root DIR [--threads 2] [--out FILE]

Every row trains on ``images_background_small1`` alone, the five alphabets of the Omniglot
challenge's minimal setting (``fslearn.bench.minimal_ablation``). The kept rows build
``--recipe minimal`` one choice at a time, each adding to the row above it: a prototypical
network (Conv4-64, 20-way 1-shot episodes with 5 queries, 1 500 steps, Adam 1e-3 halved every
500); the rotations of every character as classes of their own; its reflections too; small
random affine distortions of every training image; the recipe's budget
(``fsl.training.presets.MINIMAL``); test-time augmentation (8 views of every test image). The
dropped rows change one kept row each: the triplet loss with semi-hard mining, or
pre-training + nearest centroid, for the prototypical loss; no learning-rate decay; 56 px
inputs; 60-way episodes; the 1 623 embedded characters as more classes.

Every row is scored on the same fixed episodes, 200 20-way 1-shot episodes with one query
per class drawn within each alphabet of ``images_background_small2`` that small1 lacks
(``fsl.evaluate_within_groups(..., seed=0)``), and timed on this machine with ``--threads``
threads. ``DIR/omniglot/`` must hold both small zips (``fslearn train --dataset
omniglot-small --data-root DIR`` downloads them). ``--scale`` shrinks every row's steps for
a quick check of the script; with ``--out`` the rows and how they were made are written as
JSON (``fslearn/results/minimal_ablation.json`` is the one chapter 8 shows).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fslearn import bench  # noqa: E402
from fslearn.writable import check_writable  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="the folder with omniglot/*.zip")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row's steps")
    parser.add_argument("--episodes", type=int, default=200, help="test episodes per alphabet")
    parser.add_argument("--out", type=Path, help="write the rows to this JSON results file")
    parser.add_argument("--notes", default="", help="free text stored with --out")
    parser.add_argument(
        "--follow-up",
        action="store_true",
        help="the second ablation: changes to the recipe's own network (bench.FOLLOW_UP)",
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        metavar="ROW",
        help="with --follow-up: measure only these rows (and the networks they test); with "
        "--out, the file's other rows are kept and these replaced",
    )
    args = parser.parse_args(argv)
    if args.rows and not args.follow_up:
        parser.error("--rows needs --follow-up")
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must be in (0, 1]; got {args.scale}")
    if args.out is not None:
        try:  # now, not after an hour of training
            check_writable(args.out, flag="--out")
        except OSError as error:
            parser.error(str(error))
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.follow_up:
        try:
            rows = bench.followup_ablation(
                args.data_root,
                rows=args.rows,
                device=device,
                scale=args.scale,
                n_episodes=args.episodes,
                progress=True,
            )
        except ValueError as error:
            parser.error(str(error))
        setting = bench.SETTING + "; each row changes the network --recipe minimal trains"
    else:
        rows = bench.minimal_ablation(
            args.data_root, device=device, scale=args.scale, n_episodes=args.episodes, progress=True
        )
        setting = bench.SETTING
    print(bench.format_table(rows, bench.ABLATION_COLUMNS))
    if args.out:
        argv = ["python", "benchmarks/bench_minimal.py", *sys.argv[1:]]
        if args.rows:
            rows = bench.merged_rows(args.out, rows, bench.command_line(argv))
            argv = [arg for arg in argv if arg not in ("--rows", *args.rows)]
        bench.write_results(
            args.out, rows, argv=argv, device=device, notes=args.notes, setting=setting
        )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
