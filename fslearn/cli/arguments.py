"""The command line's parser: every command, its options and their help."""

from __future__ import annotations

import argparse
import json
import math

from .. import cli
from ..data.catalog import DATASETS
from ..distributed import TIMEOUT_RANGE, check_timeout
from ..methods.batch_norm_modes import TEST_BN_MODES
from ..models.registry import backbone_names
from ..sampling.augment import STRENGTH_RANGE, check_strength
from ..training.presets import METHODS, RECIPES
from .eval_commands import eval_runs, evaluate_command
from .tool_commands import bench, info
from .train_command import train


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line that names the fix, not the whole usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _integer(minimum: int, kind: str, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {kind}; got {text!r}")
        return value

    parse.__name__ = kind  # argparse names the type in some of its messages
    return parse


_positive = _integer(1, "a positive integer")
_natural = _integer(0, "an integer ≥ 0")
# A task of one class has one answer: its accuracy is 100% whatever the learner does.
_ways = _integer(2, "an integer ≥ 2 (a 1-way task has only one answer)")
# The 95% confidence interval is 1.96 × the sample standard deviation, of two episodes or more.
_episodes = _integer(2, "an integer ≥ 2 (a confidence interval needs two episodes)")
# torch's generators take 64-bit seeds, and MAML's head is seeded with seed + 1.
_seed = _integer(-(2**63), "an integer between -2**63 and 2**63 - 2", maximum=2**63 - 2)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number; got {text!r}")
    return value


def _augment(text: str) -> float:
    try:
        return check_strength(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {STRENGTH_RANGE}; got {text!r}") from None


def _backbone(text: str) -> str:
    if text not in backbone_names():
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(backbone_names())} (others: fsl.register_backbone in "
            f"the process that runs the command); got {text!r}"
        )
    return text


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object, e.g. '{{\"channels\": [16, 32, 64, 128]}}'; got {text!r}"
        )
    return value


def _timeout(text: str) -> float:
    try:
        return check_timeout(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {TIMEOUT_RANGE}; got {text!r}") from None


def _test_options(parser) -> None:
    parser.add_argument(
        "--dataset", choices=DATASETS, help="default: the dataset the checkpoint was trained on"
    )
    parser.add_argument(
        "--data-root",
        help="where Omniglot archives are (or go), your miniImageNet copy, or your own images "
        "(--dataset folder)",
    )
    _image_options(parser, "default: the checkpoint's")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, … (default: a GPU if there is one)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def parser() -> argparse.ArgumentParser:
    main = _Parser(
        prog="fslearn",
        description=cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "train",
        help="train a learner, checkpoint it, test it",
        description="Train METHOD, save config.json, metrics.jsonl, checkpoint.pt and "
        "results.json in --out, then test on fixed, seeded episodes of the test split. Every "
        "option, the run folder and the test episodes are checked before anything is written. "
        "A new run needs an --out without any of those four files; --resume needs an fslearn "
        "run there (a checkpoint.pt that fslearn train wrote, and a config.json, if any, of "
        "the same method and dataset). While it runs, --out holds fslearn.lock, and a second "
        "fslearn train into it is refused.",
    )
    p.add_argument("method", choices=list(METHODS), metavar="METHOD", help=", ".join(METHODS))
    p.add_argument(
        "--dataset", choices=DATASETS, default="embedded", help="default: embedded (offline)"
    )
    p.add_argument(
        "--data-root",
        help="where Omniglot archives are (or go), your miniImageNet copy, or your own images: "
        "train/, test/ (and val/) folders of class folders, or train.csv, test.csv split files "
        "(--dataset folder)",
    )
    _image_options(p, "default: 84 px, colour")
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default="paper",
        help="paper: the published hyperparameters and budgets; "
        "quick: Conv4-32, a few hundred steps; minimal: protonet on omniglot-small (rotations "
        "and reflections as classes, affine distortions; about 13 minutes on a 2-core CPU)",
    )
    for name, kind, text in [
        ("n-way", _ways, "classes per training task"),
        ("n-shot", _positive, "support images per class"),
        ("n-query", _positive, "query images per class"),
        ("steps", _positive, "training steps (episodic methods)"),
        ("epochs", _positive, "epochs (pretrain)"),
        ("lr", _rate, "the optimizer's learning rate"),
        ("hidden-channels", _positive, "Conv4 width"),
        ("meta-batch", _positive, "tasks per meta-iteration (MAML)"),
        ("inner-lr", _rate, "inner step size α (MAML)"),
        ("inner-steps", _natural, "inner steps in training (MAML)"),
        ("test-steps", _positive, "inner steps at test time (MAML)"),
        ("episodes-per-step", _positive, "episodes per optimizer step (protonet)"),
        ("batch-size", _positive, "images per batch (pretrain)"),
        ("n-pairs", _positive, "pairs per step (siamese)"),
        ("augment", _augment, "strength of the random affine distortions, 0 to 2.5 (protonet)"),
    ]:
        p.add_argument(f"--{name}", type=kind, help=f"{text} (default: the recipe's)")
    p.add_argument(
        "--backbone", type=_backbone, help="conv4 (default), resnet12 or a registered name"
    )
    p.add_argument(
        "--backbone-options",
        type=_json_object,
        help="its options, a JSON object: '{\"channels\": [16, 32, 64, 128]}' (small resnet12)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the meta-objective (MAML)",
    )
    p.add_argument(
        "--test-n-way", type=_ways, help="test tasks' classes (default: 5; MAML: its --n-way)"
    )
    p.add_argument("--test-n-shot", type=_positive, help="test tasks' shots (default: --n-shot)")
    p.add_argument(
        "--test-n-query", type=_positive, default=15, help="test queries per class (default 15)"
    )
    p.add_argument(
        "--test-episodes", type=_episodes, help="test episodes (default 1000; quick: 200)"
    )
    p.add_argument(
        "--test-seed",
        type=_seed,
        default=0,
        help="seed of the test episodes (as fslearn eval's --seed)",
    )
    p.add_argument(
        "--seed", type=_seed, default=0, help="seed of the weights and of the training episodes"
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1, … (default: a GPU if there is one)")
    p.add_argument("--out", help="run folder (default runs/METHOD-DATASET)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="yes",
        choices=["yes", "auto"],
        help="continue the run saved in --out exactly where it stopped; --resume auto "
        "continues it if there is one and starts it if not (for torchrun --max-restarts)",
    )
    p.add_argument(
        "--dist-timeout",
        type=_timeout,
        default=300.0,
        help="under torchrun: seconds a process waits for the others before every process "
        "stops with an error (default 300)",
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
    p.add_argument("--n-way", type=_ways, default=5)
    p.add_argument("--n-shot", type=_positive, default=1)
    p.add_argument("--n-query", type=_positive, default=15)
    p.add_argument("--episodes", type=_episodes, default=1000)
    p.add_argument("--seed", type=_seed, default=0, help="seed of the test episodes")
    p.add_argument(
        "--within-alphabet",
        action="store_true",
        help="draw each episode's classes from one alphabet, every alphabet with --n-way "
        "characters in turn (Lake's harder one-shot test; e.g. --n-way 20 --n-query 1 "
        "--episodes 200)",
    )
    _test_views_option(p)
    p.add_argument(
        "--test-bn",
        choices=TEST_BN_MODES,
        help="batch norm at test time: transductive (each batch's own statistics), running "
        "(training's running statistics) or support (the support set's); default: the "
        "learner's own (maml: transductive, pretrain: running), recorded as test_bn",
    )
    _test_options(p)
    p.set_defaults(run=evaluate_command)

    p = commands.add_parser(
        "eval-runs", help="error on Lake et al.'s 20 one-shot runs (20-way 1-shot)"
    )
    p.add_argument("checkpoint")
    p.add_argument("--runs", required=True, help="all_runs.zip or its extracted folder")
    _test_views_option(p)
    p.add_argument("--device", help="cpu, cuda, … (default: a GPU if there is one)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=eval_runs)

    p = commands.add_parser("bench", help="speed of the episode sampler and of MAML, as tables")
    p.add_argument("--device", help="cpu, cuda, … (default: a GPU if there is one)")
    p.add_argument(
        "--what",
        choices=("all", "sampler", "maml", "strategies"),
        default="all",
        help="strategies: fsl.MAML's loop and vmap against higher's per-task loop, interleaved",
    )
    p.add_argument(
        "--iterations", type=_positive, help="timed meta-iterations per row (strategies: rounds)"
    )
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


def _image_options(p, default: str) -> None:
    p.add_argument(
        "--image-size",
        type=_positive,
        help=f"--dataset folder: the side every image is resized to ({default})",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help=f"--dataset folder: 3 converts every image to colour, 1 to grey ({default}); "
        "a colour set trains without rotations",
    )


def _test_views_option(p) -> None:
    p.add_argument(
        "--test-views",
        type=_positive,
        default=1,
        help="test-time augmentation: embed every image as the mean over itself and N - 1 "
        "small affine distortions of it (protonet and triplet learners; the minimal recipe: 8); "
        "refused before any episode when its memory does not fit",
    )
