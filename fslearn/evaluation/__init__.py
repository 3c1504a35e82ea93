"""Evaluation: accuracy over test episodes with a 95% confidence interval (across alphabets or
within one), a classifier's loss and accuracy on a labelled set, and the separation of an
embedding's classes."""

from .classifier import evaluate_classifier
from .episodes import Accuracy, batch_norm_mode, confidence_interval, evaluate, paired_difference
from .groups import GroupAccuracy, evaluate_within_groups
from .separation import separation

__all__ = [
    "Accuracy",
    "GroupAccuracy",
    "batch_norm_mode",
    "confidence_interval",
    "evaluate",
    "evaluate_classifier",
    "evaluate_within_groups",
    "paired_difference",
    "separation",
]
