"""``fslearn train``: check every argument and the run folder, train a recipe with checkpoints,
then test it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from pathlib import Path

import torch

from ..data.dataset import FewShotDataset
from ..data.symmetries import training_classes
from ..distributed import world_from_env
from ..methods.strategies import resolve_strategy
from ..sampling.normalize import channel_stats
from ..sampling.shapes import check_episode_shape
from ..training.presets import METHODS
from .eval_commands import describe, test_checkpoint
from .run_folder import RunCheckpoint, RunLock, check_folder, snapshot
from .support import UsageError, dataset_for, image_options, parse_device, write_json
from .train_settings import recipe_arguments, recipe_settings_for, test_setting_for

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


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 4) for v in values]


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
    settings = recipe_settings_for(args)
    test_setting = test_setting_for(args, settings)
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
    statistics = None
    if settings.get("normalize"):
        mean, std = channel_stats(train_set)
        statistics = {"mean": mean.tolist(), "std": std.tolist()}
        checkpoint.record["channel_stats"] = statistics  # config.json, with the first save
    if world.size > 1:
        summaries = {
            "training data": _data_summary(train_set),
            "test data": _data_summary(test_set),
        }
        if statistics is not None:  # every rank's learner normalises by the same numbers
            summaries["channel statistics"] = statistics
        world.check_same(
            summaries,
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
        if statistics is not None:
            say(
                "normalising every image by the training split's channel statistics: mean "
                f"{_rounded(statistics['mean'])}, std {_rounded(statistics['std'])}"
            )
        if resume:
            say(f"resuming the run in {out} from its last checkpoint")
        start = time.perf_counter()
        function(
            train_set,
            **recipe_arguments(settings, statistics),
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
        if statistics is not None:
            result["channel_stats"] = statistics
        if settings.get("photo_augment"):
            result["photo_augment"] = True
        if method == "maml":  # how its tasks ran: the same numbers either way, not the same time
            result["maml_strategy"] = resolve_strategy("auto", device)
        if world.size > 1:
            result["processes"] = world.size
        if world.is_main:
            write_json(out / "results.json", result)
    say(describe(result))
    return 0
