"""The fslearn command line: train, evaluate, benchmark, and say what is installed.

    fslearn train protonet --dataset embedded --recipe quick --out runs/protonet
    fslearn eval runs/protonet/checkpoint.pt --n-way 5 --n-shot 1
    fslearn eval-runs runs/protonet/checkpoint.pt --runs all_runs.zip
    fslearn bench --device cuda
    fslearn info

Every command has --help. Errors print one line saying what is wrong and
how to fix it, and exit with status 1 (2 for malformed arguments).
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import time
from pathlib import Path

import torch

from .common import atomic_path, cache_dir, default_device
from .data.catalog import DATASETS, load_dataset
from .data.lake_runs import evaluate_runs, load_runs
from .evaluation import evaluate
from .methods.adaptation import GradientLearner
from .sampling.episodes import EpisodeSet
from .training.checkpoint import Checkpoint, read_checkpoint
from .training.presets import MAML_FAMILY, METHODS, RECIPES, omniglot_protocol, recipe_settings
from .training.specs import load_learner

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


class UsageError(Exception):
    """A request the command line cannot carry out; the message says why and what to do."""


def _dataset(name: str, split: str, *, method: str | None, root, device, progress: bool):
    options = {}
    if name == "omniglot":
        options["protocol"] = omniglot_protocol(method) if method else "lake"
    if name.startswith("omniglot"):
        options["download"] = True
    return load_dataset(name, split, root=root, progress=progress, device=device, **options)


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def _test(
    checkpoint: Path,
    *,
    dataset: str,
    root,
    method: str | None,
    n_way: int,
    n_shot: int,
    n_query: int,
    episodes: int,
    seed: int,
    device,
    progress: bool,
) -> dict:
    """Accuracy ± 95% CI of a checkpoint's learner on fixed, seeded test episodes of ``dataset``."""
    test = _dataset(dataset, "test", method=method, root=root, device=device, progress=progress)
    learner = load_learner(checkpoint, n_way=n_way, image_shape=test.image_shape, device=device)
    episode_set = EpisodeSet(test, n_way, n_shot, n_query, episodes, seed=seed)
    start = time.perf_counter()
    batch = 50 if isinstance(learner, GradientLearner) else None  # learners that take task batches
    accuracy = evaluate(learner, episode_set, batch_size=batch, progress=progress, desc="testing")
    return {
        "checkpoint": str(checkpoint),
        "method": read_checkpoint(checkpoint)["spec"]["method"],
        "dataset": dataset,
        "split": "test",
        "n_way": n_way,
        "n_shot": n_shot,
        "n_query": n_query,
        "episodes": episodes,
        "seed": seed,
        "accuracy": accuracy.mean,
        "ci95": accuracy.ci95,
        "seconds": time.perf_counter() - start,
    }


def _describe(result: dict) -> str:
    return (
        f"{result['dataset']} test, {result['n_way']}-way {result['n_shot']}-shot, {result['episodes']} episodes "
        f"of {result['n_query']} queries per class: {100 * result['accuracy']:.2f} ± {100 * result['ci95']:.2f}%"
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
    train_set = _dataset(
        args.dataset, "train", method=method, root=args.data_root, device=device, progress=progress
    )
    print(
        f"{method} on {train_set.name} ({train_set.n_classes} classes) on {device}: "
        + ", ".join(f"{k}={v}" for k, v in settings.items())
    )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", {**config, "settings": settings, "test": test_setting})
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
    result = _test(
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
    _write_json(out / "results.json", result)
    print(_describe(result))
    return 0


def evaluate_command(args) -> int:
    config = read_checkpoint(args.checkpoint)["config"]
    dataset = args.dataset or config.get("dataset")
    if dataset is None:
        raise UsageError(f"{args.checkpoint} does not record its dataset: pass --dataset")
    device = torch.device(args.device) if args.device else default_device()
    result = _test(
        Path(args.checkpoint),
        dataset=dataset,
        root=args.data_root,
        method=config.get("method"),
        n_way=args.n_way,
        n_shot=args.n_shot,
        n_query=args.n_query,
        episodes=args.episodes,
        seed=args.seed,
        device=device,
        progress=not args.json and not args.no_progress,
    )
    print(json.dumps(result, indent=2) if args.json else _describe(result))
    return 0


def eval_runs(args) -> int:
    spec = read_checkpoint(args.checkpoint)["spec"]
    device = torch.device(args.device) if args.device else default_device()
    runs = load_runs(args.runs, image_size=spec["image_shape"][-1], progress=False)
    learner = load_learner(
        args.checkpoint, n_way=20, image_shape=(1, *runs[0].support_x.shape[-2:]), device=device
    )
    scores = evaluate_runs(runs, learner=learner)
    if args.json:
        print(
            json.dumps(
                {"checkpoint": str(args.checkpoint), "runs": [r.name for r in runs], **scores},
                indent=2,
            )
        )
        return 0
    for run, error in zip(runs, scores["errors"]):
        print(f"{run.name}: {error:5.1f}% error")
    print(
        f"mean error over {len(runs)} runs: {scores['mean_error']:.2f}% (Lake et al. 2015: people 4.5%, BPL 3.3%)"
    )
    return 0


def bench(args) -> int:
    from . import bench

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
    from . import __version__

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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def _test_options(parser) -> None:
    parser.add_argument(
        "--dataset", choices=DATASETS, help="default: the dataset the checkpoint was trained on"
    )
    parser.add_argument(
        "--data-root", help="where Omniglot archives are (or go), or your miniImageNet copy"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, … (default: a GPU if there is one)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="fslearn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "train",
        help="train a learner, checkpoint it, test it",
        description="Train METHOD, save config.json, metrics.jsonl, checkpoint.pt and "
        "results.json in --out, then test on fixed, seeded episodes of the test split.",
    )
    p.add_argument("method", choices=list(METHODS), metavar="METHOD", help=", ".join(METHODS))
    p.add_argument(
        "--dataset", choices=DATASETS, default="embedded", help="default: embedded (offline)"
    )
    p.add_argument(
        "--data-root", help="where Omniglot archives are (or go), or your miniImageNet copy"
    )
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default="paper",
        help="paper: the published hyperparameters and budgets; quick: Conv4-32, a few hundred steps",
    )
    for name, kind, text in [
        ("n-way", _positive, "classes per training task"),
        ("n-shot", _positive, "support images per class"),
        ("n-query", _positive, "query images per class"),
        ("steps", _positive, "training steps (episodic methods)"),
        ("epochs", _positive, "epochs (pretrain)"),
        ("lr", float, "the optimizer's learning rate"),
        ("hidden-channels", _positive, "Conv4 width"),
        ("meta-batch", _positive, "tasks per meta-iteration (MAML)"),
        ("inner-lr", float, "inner step size α (MAML)"),
        ("inner-steps", int, "inner steps in training (MAML)"),
        ("test-steps", _positive, "inner steps at test time (MAML)"),
    ]:
        p.add_argument(f"--{name}", type=kind, help=f"{text} (default: the recipe's)")
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the meta-objective (MAML)",
    )
    p.add_argument(
        "--test-n-way", type=_positive, help="test tasks' classes (default: 5; MAML: its --n-way)"
    )
    p.add_argument("--test-n-shot", type=_positive, help="test tasks' shots (default: --n-shot)")
    p.add_argument(
        "--test-n-query", type=_positive, default=15, help="test queries per class (default 15)"
    )
    p.add_argument(
        "--test-episodes", type=_positive, help="test episodes (default 1000; quick: 200)"
    )
    p.add_argument(
        "--test-seed",
        type=int,
        default=0,
        help="seed of the test episodes (as fslearn eval's --seed)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the weights and of the training episodes"
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1, … (default: a GPU if there is one)")
    p.add_argument("--out", help="run folder (default runs/METHOD-DATASET)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out exactly where it stopped",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_positive,
        default=500,
        help="steps (pretrain: epochs) between saves",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=train)

    p = commands.add_parser(
        "eval", help="accuracy ± 95%% CI of a checkpoint on fixed test episodes"
    )
    p.add_argument("checkpoint", help="a checkpoint.pt written by fslearn train")
    p.add_argument("--n-way", type=_positive, default=5)
    p.add_argument("--n-shot", type=_positive, default=1)
    p.add_argument("--n-query", type=_positive, default=15)
    p.add_argument("--episodes", type=_positive, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seed of the test episodes")
    _test_options(p)
    p.set_defaults(run=evaluate_command)

    p = commands.add_parser(
        "eval-runs", help="error on Lake et al.'s 20 one-shot runs (20-way 1-shot)"
    )
    p.add_argument("checkpoint")
    p.add_argument("--runs", required=True, help="all_runs.zip or its extracted folder")
    p.add_argument("--device", help="cpu, cuda, … (default: a GPU if there is one)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=eval_runs)

    p = commands.add_parser("bench", help="speed of the episode sampler and of MAML, as tables")
    p.add_argument("--device", help="cpu, cuda, … (default: a GPU if there is one)")
    p.add_argument("--what", choices=("all", "sampler", "maml"), default="all")
    p.add_argument("--iterations", type=_positive, help="timed meta-iterations per row")
    p.add_argument(
        "--meta-batch", type=_positive, help="override every setting's meta-batch (quick CPU runs)"
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument(
        "--settings",
        nargs="+",
        default=None,
        metavar="SETTING",
        help="MAML settings to time: omniglot-1, omniglot-5, miniimagenet-5 (default: all)",
    )
    p.add_argument("--out", help="also write the MAML rows to this JSON results file")
    p.add_argument("--notes", default="", help="notes for the results file")
    p.set_defaults(run=bench)

    p = commands.add_parser("info", help="versions, devices, and where data and caches live")
    p.set_defaults(run=info)
    return main


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(map(str, argv))
    args = parser().parse_args(argv)
    args.argv = argv  # the command as typed, for the records that say how they were made
    try:
        return args.run(args)
    except (
        UsageError,
        ValueError,
        OSError,
        FloatingPointError,
    ) as error:  # OSError: files, downloads
        print(f"fslearn {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"fslearn {args.command}: interrupted; `fslearn train … --resume` continues from the last checkpoint",
            file=sys.stderr,
        )
        return 130
