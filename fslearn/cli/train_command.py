"""``fslearn train``: check every argument and the run folder, train a recipe with checkpoints,
then test it."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import time
from pathlib import Path

import torch

from ..data.dataset import FewShotDataset
from ..data.symmetries import training_classes
from ..distributed import world_from_env
from ..methods.strategies import resolve_strategy
from ..models.registry import check_backbone_options
from ..sampling.shapes import check_episode_shape
from ..training.presets import MAML_FAMILY, METHODS, recipe_settings
from .eval_commands import describe, test_checkpoint
from .run_folder import RunCheckpoint, RunLock, check_folder, snapshot
from .support import UsageError, dataset_for, image_options, parse_device, write_json

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
    "episodes_per_step",
    "batch_size",
    "n_pairs",
    "augment",
    "compile",
)


#: Options that may differ between the ranks of one run: they change how a rank runs or reports,
#: not what the run computes. --data-root may name each machine's own copy of a dataset: the data
#: itself is compared once loaded. --device is compared by its type (each rank takes its own GPU).
PER_RANK = ("no_progress", "dist_timeout", "data_root", "device", "argv", "command")


def _options(args, device: torch.device) -> dict:
    """Every option of ``args`` that all ranks must share, by its flag (``METHOD``, ``--seed``,
    …): an option added to the parser is compared unless it is listed in ``PER_RANK``."""
    options = {
        ("METHOD" if name == "method" else "--" + name.replace("_", "-")): value
        for name, value in vars(args).items()
        if name not in PER_RANK and not callable(value)  # args.run: the command's function
    }
    options["--device"] = device.type
    return options


def _data_summary(dataset: FewShotDataset) -> str:
    """``dataset``'s name and shape, and a hash of its class names, groups and every image's sum
    of pixel values: two copies that differ in any class or image differ here."""
    sums = dataset.flat_images.reshape(len(dataset), -1).sum(-1, dtype=torch.int64)
    described = json.dumps([dataset.class_names, dataset.groups, dataset.count_list, sums.tolist()])
    digest = hashlib.sha1(described.encode()).hexdigest()[:12]
    return f"{dataset.name}, {dataset.n_classes} classes, {len(dataset)} images, hash {digest}"


def _settings(args) -> dict:
    """The recipe's settings for ``args.method`` with the options given, each one checked to
    apply."""
    function, _ = METHODS[args.method]
    colour_folder = args.dataset == "folder" and args.channels != 1
    settings = recipe_settings(
        args.method,
        # A folder of photos takes miniImageNet's settings, of characters Omniglot's.
        ("miniimagenet" if colour_folder else "omniglot")
        if args.dataset == "folder" and args.recipe == "paper"
        else args.dataset,
        recipe=args.recipe,
        n_way=args.n_way,
        n_shot=args.n_shot or 1,
    )
    accepted = inspect.signature(function).parameters
    if colour_folder and "rotate" in accepted:
        # Quarter turns make new classes of characters, not of photos.
        settings.setdefault("rotate", False)
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
    return _backbone_settings(args, settings)


def _backbone_settings(args, settings: dict) -> dict:
    """``settings`` with ``--backbone`` and ``--backbone-options``, recorded only when given
    (runs of the default Conv4 resume as before); another backbone than Conv4 drops the
    recipe's Conv4 width and refuses ``--hidden-channels``."""
    backbone = args.backbone or "conv4"
    if backbone != "conv4":
        if args.hidden_channels is not None:
            raise UsageError(
                f"--hidden-channels is Conv4's width and does not apply to --backbone {backbone}: "
                "give its widths with --backbone-options, e.g. "
                "'{\"channels\": [16, 32, 64, 128]}' for resnet12"
            )
        settings.pop("hidden_channels", None)
        settings["backbone"] = backbone
    if args.backbone_options is not None:
        try:
            check_backbone_options(backbone, args.backbone_options)
        except ValueError as error:
            raise UsageError(f"--backbone-options: {error}") from None
        settings["backbone_options"] = args.backbone_options
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


def _world(args):
    """``(world, device)``: the processes torchrun started (one without torchrun) and this
    process's device, ``cuda:LOCAL_RANK`` on GPUs."""
    device = parse_device(args.device)
    try:
        world = world_from_env(device.type, timeout=args.dist_timeout)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if world.size > 1 and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    return world, device


def _resume(args, out: Path) -> bool:
    """``--resume`` (yes), ``--resume auto`` (yes when ``out`` holds a checkpoint) or a new run."""
    if args.resume == "auto":
        return (out / "checkpoint.pt").exists()
    return args.resume == "yes"


def train(args) -> int:
    """Check every argument and the run folder, then train, checkpoint and test, under the
    folder's lock; nothing is written before every check has passed.

    Under torchrun every process trains its share of each step; rank 0 alone checks and
    locks the folder, writes the checkpoints, metrics and results, and prints.
    """
    function, _ = METHODS[args.method]
    method = args.method
    image_settings = image_options(args)
    settings = _settings(args)
    test_setting = _test_setting(args, settings)
    world, device = _world(args)
    out = Path(args.out or f"runs/{method}-{args.dataset}")
    resume = _resume(args, out)
    config = {
        "method": method,
        "dataset": args.dataset,
        "recipe": args.recipe,
        "seed": args.seed,
        "device": str(device) if world.size == 1 else f"{device.type} × {world.size}",
        "out": str(out),
    }
    if world.size > 1:
        world.check_same(_options(args, device))
        # The same options give the same settings, unless a rank runs other code or
        # --resume auto finds a checkpoint on some machines only.
        world.check_same(
            {**settings, "test": test_setting, "resume": resume},
            what="settings from the same options",
            fix="run the same fslearn on every machine, with --out on storage they share",
        )
    lock = RunLock(out)
    error = None
    if world.is_main:
        try:
            lock.check()
            seen = snapshot(out)
            check_folder(out, resume=resume)
        except UsageError as problem:
            error = str(problem)
    error = world.first_error(error)
    if error is not None:
        raise UsageError(error)
    path = out / "checkpoint.pt"
    checkpoint = RunCheckpoint(
        path,
        record={**config, "settings": settings, "test": test_setting},
        every=args.checkpoint_every,
        resume=resume,
        log=out / "metrics.jsonl" if world.is_main else None,
        config={**config, **settings},
        writer=world.is_main,
    )
    if resume:
        checkpoint.check_resumable()
    progress = not args.no_progress and world.is_main
    data = dict(
        method=method, root=args.data_root, device=device, progress=progress, **image_settings
    )
    train_set = dataset_for(args.dataset, "train", **data)
    test_set = dataset_for(args.dataset, "test", **data)
    if world.size > 1:
        world.check_same(
            {"training data": _data_summary(train_set), "test data": _data_summary(test_set)},
            what="data",
            fix="give every machine the same copy of the dataset (--data-root)",
        )
    variants = {"4 rotations": 4} if settings.get("rotate_classes") else {}
    if settings.get("reflect_classes"):
        variants["2 reflections"] = 2
    if {"n_way", "n_shot", "n_query"} <= set(settings):  # the episodic recipes' training tasks
        # the classes the recipe trains on, each rotation and reflection a class of its own
        trained = training_classes(
            train_set,
            rotate_classes=bool(settings.get("rotate_classes")),
            reflect_classes=bool(settings.get("reflect_classes")),
        )
        _check_episodes(trained, "training", settings, "")
        del trained  # the recipe makes its own
    _check_episodes(test_set, "test", test_setting, "test-")
    with lock if world.is_main else contextlib.nullcontext():
        if world.is_main and snapshot(out) != seen:
            raise UsageError(
                f"--out {out} changed while this run checked it (another process writes there?): "
                "run the command again"
            )
        say = print if world.is_main else lambda *_: None
        processes = f" in {world.size} processes" if world.size > 1 else ""
        classes = train_set.n_classes * math.prod(variants.values())
        made = f" at {' × '.join(variants)}" if variants else ""
        say(
            f"{method} on {train_set.name} ({classes} classes{made}) on {device}"
            f"{processes}: " + ", ".join(f"{k}={v}" for k, v in settings.items())
        )
        if resume:
            say(f"resuming the run in {out} from its last checkpoint")
        start = time.perf_counter()
        function(
            train_set,
            **settings,
            seed=args.seed,
            device=device,
            progress=progress,
            checkpoint=checkpoint,
            **({"world": world} if world.size > 1 else {}),
        )
        seconds = time.perf_counter() - start
        world.barrier()  # rank 0's last checkpoint is on disk before anyone tests it
        say(f"trained in {seconds:.0f} s; checkpoint {path}")
        result = test_checkpoint(
            path,
            test=test_set,
            dataset=args.dataset,
            seed=args.test_seed,
            device=device,
            progress=progress,
            world=world,
            **test_setting,
        )
        result["train_seconds"] = seconds
        if method == "maml":  # how its tasks ran: the same numbers either way, not the same time
            result["maml_strategy"] = resolve_strategy("auto", device)
        if world.size > 1:
            result["processes"] = world.size
        if world.is_main:
            write_json(out / "results.json", result)
    say(describe(result))
    return 0
