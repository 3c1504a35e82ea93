"""``fslearn train``: check every argument and the run folder, train a recipe with checkpoints,
then test it."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

from ..data.dataset import FewShotDataset
from ..sampling.episodes import check_episode_shape
from ..training.presets import MAML_FAMILY, METHODS, recipe_settings
from .eval_commands import describe, test_checkpoint
from .run_folder import RunCheckpoint, RunLock, check_folder, snapshot
from .support import UsageError, dataset_for, parse_device, write_json

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


def _settings(args) -> dict:
    """The recipe's settings for ``args.method`` with the options given, each one checked to
    apply."""
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
    return settings


def _test_setting(args, settings: dict) -> dict:
    """The test episodes' shape and count, checked against the learner ``settings`` trains."""
    method = args.method
    n_way = args.test_n_way or (settings.get("n_way", 5) if method in MAML_FAMILY else 5)
    if method in MAML_FAMILY and n_way != settings["n_way"]:
        raise UsageError(
            f"a {settings['n_way']}-way {method} model cannot be tested on {n_way}-way tasks: "
            f"use --test-n-way {settings['n_way']} or train with --n-way {n_way}"
        )
    return dict(
        n_way=n_way,
        n_shot=args.test_n_shot or settings.get("n_shot", 1),
        n_query=args.test_n_query,
        episodes=args.test_episodes or (200 if args.recipe == "quick" else 1000),
    )


def _check_episodes(dataset: FewShotDataset, kind: str, setting: dict, prefix: str) -> None:
    """A UsageError naming the options ``--{prefix}n-way`` … unless ``dataset`` has episodes of
    ``setting``'s shape."""
    try:
        check_episode_shape(dataset, setting["n_way"], setting["n_shot"], setting["n_query"])
    except ValueError as error:
        flags = ", ".join(f"--{prefix}{name}" for name in ("n-way", "n-shot", "n-query"))
        raise UsageError(
            f"the {kind} episodes ({setting['n_way']}-way {setting['n_shot']}-shot, "
            f"{setting['n_query']} queries per class) cannot be drawn: {error} ({flags})"
        ) from None


def train(args) -> int:
    """Check every argument and the run folder, then train, checkpoint and test, under the
    folder's lock; nothing is written before every check has passed."""
    function, _ = METHODS[args.method]
    method = args.method
    settings = _settings(args)
    test_setting = _test_setting(args, settings)
    device = parse_device(args.device)
    out = Path(args.out or f"runs/{method}-{args.dataset}")
    lock = RunLock(out)
    lock.check()
    seen = snapshot(out)
    check_folder(out, resume=args.resume)
    config = {
        "method": method,
        "dataset": args.dataset,
        "recipe": args.recipe,
        "seed": args.seed,
        "device": str(device),
        "out": str(out),
    }
    path = out / "checkpoint.pt"
    checkpoint = RunCheckpoint(
        path,
        record={**config, "settings": settings, "test": test_setting},
        every=args.checkpoint_every,
        resume=args.resume,
        log=out / "metrics.jsonl",
        config={**config, **settings},
    )
    if args.resume:
        checkpoint.check_resumable()
    progress = not args.no_progress
    data = dict(method=method, root=args.data_root, device=device, progress=progress)
    train_set = dataset_for(args.dataset, "train", **data)
    test_set = dataset_for(args.dataset, "test", **data)
    if {"n_way", "n_shot", "n_query"} <= set(settings):  # the episodic recipes' training tasks
        _check_episodes(train_set, "training", settings, "")
    _check_episodes(test_set, "test", test_setting, "test-")
    with lock:
        if snapshot(out) != seen:
            raise UsageError(
                f"--out {out} changed while this run checked it (another process writes there?): "
                "run the command again"
            )
        print(
            f"{method} on {train_set.name} ({train_set.n_classes} classes) on {device}: "
            + ", ".join(f"{k}={v}" for k, v in settings.items())
        )
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
            test=test_set,
            dataset=args.dataset,
            seed=args.test_seed,
            device=device,
            progress=progress,
            **test_setting,
        )
        result["train_seconds"] = seconds
        write_json(out / "results.json", result)
    print(describe(result))
    return 0
