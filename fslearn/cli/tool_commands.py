"""``fslearn bench`` and ``fslearn info``: speed tables, and what is installed where."""

from __future__ import annotations

import platform

import torch

from ..common import cache_dir, default_device


def bench(args) -> int:
    from .. import bench

    device = torch.device(args.device) if args.device else default_device()
    if args.what in ("all", "sampler"):
        rows = bench.sampler_speed(device, n_tasks=args.meta_batch or 32)
        print(bench.format_table(rows, bench.SAMPLER_COLUMNS))
    if args.what in ("all", "maml"):
        rows = bench.maml_speed(
            device,
            settings=args.settings or tuple(bench.MAML_SETTINGS),
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
