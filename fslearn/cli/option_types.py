"""The types of the command line's options: each parses an option's text, or says what it must
be (argparse prints ``argument --flag: must be …; got …``)."""

from __future__ import annotations

import argparse
import json
import math

from ..distributed import TIMEOUT_RANGE, check_timeout
from ..models.registry import backbone_names
from ..sampling.augment import STRENGTH_RANGE, check_strength


def integer(minimum: int, kind: str, maximum: int | None = None):
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


positive = integer(1, "a positive integer")
natural = integer(0, "an integer ≥ 0")
# A task of one class has one answer: its accuracy is 100% whatever the learner does.
ways = integer(2, "an integer ≥ 2 (a 1-way task has only one answer)")
# The 95% confidence interval is 1.96 × the sample standard deviation, of two episodes or more.
episodes = integer(2, "an integer ≥ 2 (a confidence interval needs two episodes)")
# torch's generators take 64-bit seeds, and MAML's head is seeded with seed + 1.
seed = integer(-(2**63), "an integer between -2**63 and 2**63 - 2", maximum=2**63 - 2)


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number; got {text!r}")
    return value


def augment(text: str) -> float:
    try:
        return check_strength(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {STRENGTH_RANGE}; got {text!r}") from None


def backbone(text: str) -> str:
    if text not in backbone_names():
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(backbone_names())} (others: fsl.register_backbone in "
            f"the process that runs the command); got {text!r}"
        )
    return text


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object, e.g. '{{\"channels\": [16, 32, 64, 128]}}'; got {text!r}"
        )
    return value


def timeout(text: str) -> float:
    try:
        return check_timeout(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {TIMEOUT_RANGE}; got {text!r}") from None


def image_options(p, default: str) -> None:
    p.add_argument(
        "--image-size",
        type=positive,
        help=f"--dataset folder: the side every image is resized to ({default})",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help=f"--dataset folder: 3 converts every image to colour, 1 to grey ({default}); "
        "a colour set trains without rotations",
    )
