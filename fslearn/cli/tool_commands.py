"""``fslearn bench`` and ``fslearn info``: speed tables, and what is installed where."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from ..common import cache_dir, default_device
from ..writable import check_writable
from .support import UsageError, parse_device


def _check_bench(args, settings) -> None:
    """Refuse, before any timing, options that would be ignored and a results file that is not
    one."""
    from ..bench import MAML_SETTINGS

    unknown = [s for s in settings if s not in MAML_SETTINGS]
    if unknown:
        raise UsageError(f"unknown --settings {unknown}; choose from {list(MAML_SETTINGS)}")
    if args.what == "sampler":
        given = [f"--{name}" for name in ("settings", "iterations", "out") if getattr(args, name)]
        if given:
            raise UsageError(
                f"{', '.join(given)} apply to the MAML rows, which --what sampler does not time: "
                "leave them out, or use --what maml"
            )
    if args.what == "strategies":
        given = [f"--{name}" for name in ("settings", "out") if getattr(args, name)]
        given += ["--no-compile"] * bool(args.no_compile)
        if given:
            raise UsageError(
                f"{', '.join(given)} apply to --what maml, not to the strategies' table: "
                "leave them out"
            )
    if args.out is None:
        return
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(
            f"--out {out} is a folder: pass the results file to write, e.g. {out}/maml.json"
        )
    check_writable(out, flag="--out")
    if os.path.lexists(out):
        try:
            record = json.loads(out.read_text())
        except (OSError, ValueError):
            record = None
        if not (isinstance(record, dict) and {"command", "rows"} <= set(record)):
            raise UsageError(
                f"--out {out} exists and is not a results file of fslearn bench, which it would "
                "replace: choose another --out"
            )


def bench(args) -> int:
    from .. import bench

    device = parse_device(args.device)
    settings = args.settings or tuple(bench.MAML_SETTINGS)
    _check_bench(args, settings)
    if args.what in ("all", "sampler"):
        rows = bench.sampler_speed(device, n_tasks=args.meta_batch or 32)
        print(bench.format_table(rows, bench.SAMPLER_COLUMNS))
    if args.what == "strategies":
        rows = bench.maml_strategy_speed(
            device,
            meta_batches=(args.meta_batch,) if args.meta_batch else (4, 16),
            rounds=args.iterations or 5,
            progress=True,
        )
        print(bench.format_table(rows, bench.STRATEGY_COLUMNS))
        if not bench.higher_available():
            print('no "higher" row: pip install "fslearn[bench]" adds it')
    if args.what in ("all", "maml"):
        rows = bench.maml_speed(
            device,
            settings=settings,
            iterations=args.iterations,
            meta_batch=args.meta_batch,
            compile=not args.no_compile,
            progress=True,
        )
        print(bench.format_table(rows, bench.MAML_COLUMNS))
        if args.out:
            bench.write_results(
                args.out, rows, argv=["fslearn", *args.argv], device=device, notes=args.notes
            )
    return 0


def info(args) -> int:
    from .. import __version__

    lines = {
        "fslearn": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "default device": str(default_device()),
        "CPU threads": str(torch.get_num_threads()),
        "CUDA": ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        or "not available",
        "cache": str(cache_dir()),
        "data": str(cache_dir() / "data"),
    }
    archives = sorted(p.name for p in (cache_dir() / "data" / "omniglot").glob("*.zip"))
    lines["downloaded"] = (
        ", ".join(archives) or "nothing yet (fslearn train … --dataset omniglot downloads)"
    )
    width = max(map(len, lines))
    print("\n".join(f"{key:<{width}}  {value}" for key, value in lines.items()))
    return 0
