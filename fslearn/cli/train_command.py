"""``fslearn train``: check every argument, train a recipe with checkpoints, then test it."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import torch

from ..common import default_device
from ..training.checkpoint import Checkpoint
from ..training.presets import MAML_FAMILY, METHODS, recipe_settings
from .eval_commands import describe, test_checkpoint
from .support import UsageError, dataset_for, write_json

# Command-line options that override a recipe, by the training functions' argument names.
OVERRIDES = (
    "n_way",
    "n_shot",
    "n_query",
    "steps",
    "epochs",
    "lr",
    "hidden_channels",
    "meta_batch",
    "inner_lr",
    "inner_steps",
    "test_steps",
    "compile",
)


def train(args) -> int:
    function, _ = METHODS[args.method]
    settings = recipe_settings(
        args.method, args.dataset, recipe=args.recipe, n_way=args.n_way, n_shot=args.n_shot or 1
    )
    accepted = inspect.signature(function).parameters
    for name in OVERRIDES:
        value = getattr(args, name)
        if value is None:
            continue
        if name not in accepted:
            flag = "--" + name.replace("_", "-")
            unit = (
                " (it trains in --epochs)"
                if name == "steps"
                else " (it trains in --steps)"
                if name == "epochs"
                else ""
            )
            raise UsageError(
                f"{flag} does not apply to {args.method}{unit}; see `fslearn train --help`"
            )
        settings[name] = value
    out = Path(args.out or f"runs/{args.method}-{args.dataset}")
    path = out / "checkpoint.pt"
    if path.exists() and not args.resume:
        raise UsageError(
            f"{out} already holds a run: pass --resume to continue it, or choose another --out"
        )
    device = torch.device(args.device) if args.device else default_device()
    method = args.method
    test_n_way = args.test_n_way or (settings.get("n_way", 5) if method in MAML_FAMILY else 5)
    if method in MAML_FAMILY and test_n_way != settings["n_way"]:
        raise UsageError(
            f"a {settings['n_way']}-way {method} model cannot be tested on {test_n_way}-way tasks: "
            f"use --test-n-way {settings['n_way']} or train with --n-way {test_n_way}"
        )
    test_setting = dict(
        n_way=test_n_way,
        n_shot=args.test_n_shot or settings.get("n_shot", 1),
        n_query=args.test_n_query,
        episodes=args.test_episodes or (200 if args.recipe == "quick" else 1000),
    )
    config = {
        "method": method,
        "dataset": args.dataset,
        "recipe": args.recipe,
        "seed": args.seed,
        "device": str(device),
        "out": str(out),
    }
    run_config = {**config, **settings}
    checkpoint = Checkpoint(
        path,
        every=args.checkpoint_every,
        resume=args.resume,
        log=out / "metrics.jsonl",
        config=run_config,
    )
    if args.resume:  # before anything in --out changes
        checkpoint.check_resumable()
    progress = not args.no_progress
    train_set = dataset_for(
        args.dataset, "train", method=method, root=args.data_root, device=device, progress=progress
    )
    print(
        f"{method} on {train_set.name} ({train_set.n_classes} classes) on {device}: "
        + ", ".join(f"{k}={v}" for k, v in settings.items())
    )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**config, "settings": settings, "test": test_setting})
    start = time.perf_counter()
    function(
        train_set,
        **settings,
        seed=args.seed,
        device=device,
        progress=progress,
        checkpoint=checkpoint,
    )
    seconds = time.perf_counter() - start
    print(f"trained in {seconds:.0f} s; checkpoint {path}")
    result = test_checkpoint(
        path,
        dataset=args.dataset,
        root=args.data_root,
        method=method,
        seed=args.test_seed,
        device=device,
        progress=progress,
        **test_setting,
    )
    result["train_seconds"] = seconds
    write_json(out / "results.json", result)
    print(describe(result))
    return 0
