"""The command line's parser: every command, its options and their help."""

from __future__ import annotations

import argparse

from .. import cli
from ..data.catalog import DATASETS
from ..training.presets import METHODS, RECIPES
from .eval_commands import eval_runs, evaluate_command
from .tool_commands import bench, info
from .train_command import train


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
        prog="fslearn",
        description=cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        help="paper: the published hyperparameters and budgets; "
        "quick: Conv4-32, a few hundred steps",
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
