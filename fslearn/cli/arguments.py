"""The command line's parser: every command, its options and their help."""

from __future__ import annotations

import argparse

from .. import cli
from ..data.catalog import DATASETS
from ..methods.batch_norm_modes import TEST_BN_MODES
from .eval_commands import eval_runs, evaluate_command
from .option_types import episodes, image_options, natural, positive, seed, ways
from .tool_commands import bench, info
from .train_options import add_train_parser


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line that names the fix, not the whole usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _test_options(parser) -> None:
    parser.add_argument(
        "--dataset", choices=DATASETS, help="default: the dataset the checkpoint was trained on"
    )
    parser.add_argument(
        "--data-root",
        help="where Omniglot archives are (or go), your miniImageNet copy, or your own images "
        "(--dataset folder)",
    )
    image_options(parser, "default: the checkpoint's")
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
    add_train_parser(commands)

    p = commands.add_parser(
        "eval", help="accuracy ± 95%% CI of a checkpoint on fixed test episodes"
    )
    p.add_argument("checkpoint", help="a checkpoint.pt written by fslearn train")
    p.add_argument("--n-way", type=ways, default=5)
    p.add_argument("--n-shot", type=positive, default=1)
    p.add_argument("--n-query", type=positive, default=15)
    p.add_argument("--episodes", type=episodes, default=1000)
    p.add_argument("--seed", type=seed, default=0, help="seed of the test episodes")
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
        "--iterations", type=positive, help="timed meta-iterations per row (strategies: rounds)"
    )
    p.add_argument(
        "--meta-batch", type=positive, help="override every setting's meta-batch (quick CPU runs)"
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


def _test_views_option(p) -> None:
    p.add_argument(
        "--test-views",
        type=positive,
        default=1,
        help="test-time augmentation: embed every image as the mean over itself and N - 1 "
        "small affine distortions of it (protonet and triplet learners; the minimal recipe: 8); "
        "refused before any episode when its memory does not fit",
    )
    p.add_argument(
        "--transductive-steps",
        type=natural,
        default=0,
        metavar="N",
        help="a transductive test, recorded as such: refine a protonet's prototypes with the "
        "episode's own queries, N soft k-means steps (fsl.TransductivePrototypes; default 0, "
        "none); every answer then depends on the other queries",
    )
