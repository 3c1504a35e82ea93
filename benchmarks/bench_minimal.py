"""The minimal recipe, one choice at a time, on Omniglot's minimal setting.

    python benchmarks/bench_minimal.py --data-root DIR [--threads 2] [--out FILE]

Each row trains a prototypical network (Conv4-64, 20-way 1-shot episodes with 5 queries)
on ``images_background_small1`` alone, the five alphabets of the Omniglot challenge's
minimal setting, adding one choice of ``--recipe minimal`` to the row above it:

* the baseline: 1 500 steps, Adam 1e-3 halved every 500;
* the rotations of every character as classes of their own (``rotate_classes``);
* small random affine distortions of every training image (``augment=1``);
* the recipe's budget (``fsl.training.presets.MINIMAL``): the recipe itself.

Every row is scored on the same fixed episodes, 200 20-way 1-shot episodes with one query
per class drawn within each alphabet of ``images_background_small2`` that small1 lacks
(``fsl.evaluate_within_groups(..., seed=0)``), and timed on this machine with ``--threads``
threads. ``DIR/omniglot/`` must hold both small zips (``fslearn train --dataset
omniglot-small --data-root DIR`` downloads them). ``--scale`` shrinks every row's steps for
a quick check of the script; with ``--out`` the rows and how they were made are written as
JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fslearn as fsl  # noqa: E402
from fslearn import bench  # noqa: E402
from fslearn.training.presets import MINIMAL  # noqa: E402

BASELINE = dict(n_way=20, n_shot=1, n_query=5, steps=1500, halve_every=500, hidden_channels=64)
#: Row name → the settings it adds to the rows above it.
ROWS = {
    "baseline": {},
    "+ rotations as classes": dict(rotate_classes=True),
    "+ affine distortions": dict(augment=MINIMAL["augment"]),
    "+ the recipe's budget": dict(steps=MINIMAL["steps"], halve_every=MINIMAL["halve_every"]),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="the folder with omniglot/*.zip")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row's steps")
    parser.add_argument("--episodes", type=int, default=200, help="test episodes per alphabet")
    parser.add_argument("--out", type=Path, help="write the rows to this JSON results file")
    parser.add_argument("--notes", default="", help="free text stored with --out")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must be in (0, 1]; got {args.scale}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = dict(root=args.data_root, device=device, progress=False)
    train = fsl.load_dataset("omniglot-small", "train", **data)
    test = fsl.load_dataset("omniglot-small", "test", **data)
    settings, rows = dict(BASELINE), []
    for name, change in ROWS.items():
        settings.update(change)
        steps = max(1, round(settings["steps"] * args.scale))
        halve = max(1, round(settings["halve_every"] * args.scale))
        start = time.perf_counter()
        learner, _ = fsl.train_protonet(
            train, **{**settings, "steps": steps, "halve_every": halve}, seed=0, progress=False
        )
        seconds = time.perf_counter() - start
        scores = fsl.evaluate_within_groups(learner, test, 20, 1, 1, args.episodes, seed=0)
        row = {
            "row": name,
            **{**settings, "steps": steps, "halve_every": halve},
            "accuracy": 100 * scores.overall.mean,
            "ci95": 100 * scores.overall.ci95,
            **{f"{g} (%)": 100 * a.mean for g, a in scores.groups.items()},
            "train_s": seconds,
        }
        rows.append(row)
        print(
            f"{name:24s} {scores.overall}  "
            + "  ".join(f"{g} {100 * a.mean:.1f}%" for g, a in scores.groups.items())
            + f"  trained in {seconds:.0f} s",
            flush=True,
        )
    if args.out:
        bench.write_results(args.out, rows, argv=sys.argv, device=device, notes=args.notes)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
