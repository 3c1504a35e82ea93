"""What ``fslearn train``'s options ask of the recipe: its settings, each option checked to apply
to the method, and the test episodes'."""

from __future__ import annotations

import inspect

from ..models.registry import check_backbone_options
from ..sampling.transforms import Augment
from ..training.presets import MAML_FAMILY, METHODS, recipe_settings
from .support import UsageError

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


def recipe_settings_for(args) -> dict:
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
    return _input_settings(args, _backbone_settings(args, settings), accepted)


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


def test_setting_for(args, settings: dict) -> dict:
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


def _input_settings(args, settings: dict, accepted) -> dict:
    """``settings`` with ``--normalize`` and ``--photo-augment``, recorded only when given (runs
    without them keep the records they always had); ``--photo-augment`` is checked to apply."""
    if args.normalize:
        settings["normalize"] = True
    if not args.photo_augment:
        return settings
    if "transform" not in accepted:
        raise UsageError(
            f"--photo-augment does not apply to {args.method}: it augments the training "
            "episodes of protonet, maml, fomaml and anil; see `fslearn train --help`"
        )
    if not (args.dataset == "miniimagenet" or (args.dataset == "folder" and args.channels != 1)):
        images = "--dataset folder --channels 1" if args.dataset == "folder" else args.dataset
        raise UsageError(
            f"--photo-augment (random crops, flips and colour jitter) is for colour photos, not "
            f"the one-channel characters of {images}: characters have their own distortions, "
            "--augment STRENGTH (protonet)"
        )
    settings["photo_augment"] = True
    return settings


def recipe_arguments(settings: dict, statistics: dict | None) -> dict:
    """The keyword arguments of the recipe for ``settings``: ``--normalize`` as the training
    split's ``statistics`` (``{"mean": [...], "std": [...]}``, :func:`~fslearn.channel_stats`),
    and ``--photo-augment`` as ``fsl.Augment()``, its default crops, flips and jitter."""
    arguments = {k: v for k, v in settings.items() if k not in ("normalize", "photo_augment")}
    if settings.get("normalize"):
        arguments["normalize"] = (statistics["mean"], statistics["std"])
    if settings.get("photo_augment"):
        arguments["transform"] = Augment()
    return arguments
