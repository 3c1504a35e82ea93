"""Balanced pairs of images, half from one class and half from two: what a Siamese network trains
on."""

from __future__ import annotations

import torch

from ..common import check_positive_int
from ..data.dataset import FewShotDataset, to_float
from .shapes import check_class_sizes
from .subsets import random_rows, random_subsets
from .transfer import deliver


def _sizes(dataset: FewShotDataset) -> str:
    low, high = dataset.min_per_class, dataset.max_per_class
    return f"{low}" if low == high else f"{low} to {high}"


class PairSampler:
    """Draws pairs of images, exactly half from the same class and half from two classes.

    Args:
        dataset: the classes to draw from (the background split: pairs must
            never show the evaluation classes); move it to the GPU first to
            sample on the GPU.
        seed: seeds the sampler's own generator (on the dataset's device).
        device: where the pairs go, when not where the dataset is (a set kept on the host
            for a GPU run; see :class:`~fslearn.EpisodeSampler`).

    Example:
        >>> x1, x2, same = PairSampler(background, seed=0).sample(128)   # x1: (128, 1, 28, 28)
    """

    def __init__(self, dataset: FewShotDataset, *, seed: int = 0, device=None):
        if dataset.n_classes < 2:
            raise ValueError(
                f"{dataset.name} has {dataset.n_classes} class; "
                "negative pairs need at least 2 classes"
            )
        check_class_sizes(
            dataset,
            2,
            "positive pairs need two different images of a class, so at least 2 images per class",
            "add a second image to each class",
        )
        self.dataset = dataset
        self.device = dataset.device if device is None else torch.device(device)
        self.generator = torch.Generator(device=dataset.device).manual_seed(seed)

    def __repr__(self) -> str:
        return (
            f"PairSampler({self.dataset.n_classes} classes of {_sizes(self.dataset)} images "
            f"on {self.dataset.device})"
        )

    def sample(self, n_pairs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n_pairs`` pairs in random order, half positive and half negative.

        Returns:
            ``(x1, x2, same)``: float images in ``[0, 1]`` of shape
            ``(n_pairs, C, H, W)`` each, and ``same`` of shape ``(n_pairs,)``,
            1.0 where the two images show the same class (two different
            images of it) and 0.0 where they show two different classes.
        """
        n_pairs = check_positive_int(
            "n_pairs", n_pairs, minimum=2, why="half positive, half negative pairs"
        )
        if n_pairs % 2:
            raise ValueError(
                f"n_pairs must be even (half positive, half negative pairs); got {n_pairs}"
            )
        half = n_pairs // 2
        data, g = self.dataset, self.generator
        device = data.device
        # Positives: one class, two distinct images of it.
        pos_class = torch.randint(data.n_classes, (half,), generator=g, device=device)
        pos_rows = random_rows(data, pos_class, 2, g)  # (half, 2)
        # Negatives: two distinct classes, any image of each.
        neg_class = random_subsets((half,), data.n_classes, 2, g, device)  # (half, 2)
        neg_rows = random_rows(data, neg_class, 1, g)[..., 0]
        rows = torch.cat([pos_rows, neg_rows])  # (n_pairs, 2)
        same = torch.cat([torch.ones(half, device=device), torch.zeros(half, device=device)])
        # Interleave positives and negatives so no batch slice is all of one kind.
        order = torch.randperm(n_pairs, generator=g, device=device)
        x = to_float(deliver(data.flat_images[rows[order]], self.device))  # (n_pairs, 2, C, H, W)
        return x[:, 0], x[:, 1], deliver(same[order], self.device)
