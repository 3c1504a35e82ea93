"""The options of ``fslearn train``: the method, the data, the recipe and what overrides it, the
test episodes, the run folder."""

from __future__ import annotations

from ..data.catalog import DATASETS
from ..training.presets import METHODS, RECIPES
from .option_types import (
    augment,
    backbone,
    episodes,
    image_options,
    json_object,
    natural,
    positive,
    rate,
    seed,
    timeout,
    ways,
)
from .train_command import train


def add_train_parser(commands) -> None:
    """Add ``fslearn train`` to ``commands`` (the main parser's subparsers)."""
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
    image_options(p, "default: 84 px, colour")
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default="paper",
        help="paper: the published hyperparameters and budgets; "
        "quick: Conv4-32, a few hundred steps; minimal: protonet on omniglot-small (rotations "
        "and reflections as classes, affine distortions; about 13 minutes on a 2-core CPU)",
    )
    for name, kind, text in [
        ("n-way", ways, "classes per training task"),
        ("n-shot", positive, "support images per class"),
        ("n-query", positive, "query images per class"),
        ("steps", positive, "training steps (episodic methods)"),
        ("epochs", positive, "epochs (pretrain)"),
        ("lr", rate, "the optimizer's learning rate"),
        ("hidden-channels", positive, "Conv4 width"),
        ("meta-batch", positive, "tasks per meta-iteration (MAML)"),
        ("inner-lr", rate, "inner step size α (MAML)"),
        ("inner-steps", natural, "inner steps in training (MAML)"),
        ("test-steps", positive, "inner steps at test time (MAML)"),
        ("episodes-per-step", positive, "episodes per optimizer step (protonet)"),
        ("batch-size", positive, "images per batch (pretrain)"),
        ("n-pairs", positive, "pairs per step (siamese)"),
        ("augment", augment, "strength of the random affine distortions, 0 to 2.5 (protonet)"),
    ]:
        p.add_argument(f"--{name}", type=kind, help=f"{text} (default: the recipe's)")
    p.add_argument(
        "--backbone", type=backbone, help="conv4 (default), resnet12 or a registered name"
    )
    p.add_argument(
        "--backbone-options",
        type=json_object,
        help="its options, a JSON object: '{\"channels\": [16, 32, 64, 128]}' (small resnet12)",
    )
    p.add_argument(
        "--normalize",
        action="store_true",
        help="normalise every image, in training and at test time, by the training split's "
        "mean and standard deviation per channel (fsl.channel_stats), saved with the learner",
    )
    p.add_argument(
        "--photo-augment",
        action="store_true",
        help="train on random crops, flips and colour jitter of every image (fsl.Augment()): "
        "protonet, maml, fomaml and anil on colour photos (characters: --augment)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the meta-objective (MAML)",
    )
    p.add_argument(
        "--test-n-way", type=ways, help="test tasks' classes (default: 5; MAML: its --n-way)"
    )
    p.add_argument("--test-n-shot", type=positive, help="test tasks' shots (default: --n-shot)")
    p.add_argument(
        "--test-n-query", type=positive, default=15, help="test queries per class (default 15)"
    )
    p.add_argument(
        "--test-episodes", type=episodes, help="test episodes (default 1000; quick: 200)"
    )
    p.add_argument(
        "--test-seed",
        type=seed,
        default=0,
        help="seed of the test episodes (as fslearn eval's --seed)",
    )
    p.add_argument(
        "--seed", type=seed, default=0, help="seed of the weights and of the training episodes"
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
        type=timeout,
        default=300.0,
        help="under torchrun: seconds a process waits for the others before every process "
        "stops with an error (default 300)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=positive,
        default=500,
        help="steps (pretrain: epochs) between saves",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=train)
