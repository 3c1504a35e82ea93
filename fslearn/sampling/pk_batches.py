"""Batches of P classes × K images: what triplet mining works on."""

from __future__ import annotations

import torch

from ..common import check_positive_int
from ..data.dataset import FewShotDataset, to_float
from .shapes import check_class_sizes
from .subsets import random_rows, random_subsets
from .transfer import deliver


class PKSampler:
    """Draws batches of P classes × K images: the batches triplet mining works on.

    Args:
        dataset: the classes to draw from (the background split); move it to
            the GPU first to sample on the GPU.
        n_classes: P, classes per batch (at least 2: a triplet needs a negative).
        n_per_class: K, images per class (at least 2: a triplet needs a positive).
        seed: seeds the sampler's own generator (on the dataset's device).
        device: where the batches go, when not where the dataset is (a set kept on the host
            for a GPU run; see :class:`~fslearn.EpisodeSampler`).

    Example:
        >>> x, y = PKSampler(background, n_classes=16, n_per_class=4).sample()  # x: (64, 1, 28, 28)
    """

    def __init__(
        self,
        dataset: FewShotDataset,
        n_classes: int,
        n_per_class: int,
        *,
        seed: int = 0,
        device=None,
    ):
        why = "a triplet needs a positive and a negative"
        n_classes = check_positive_int("n_classes", n_classes, minimum=2, why=why)
        n_per_class = check_positive_int("n_per_class", n_per_class, minimum=2, why=why)
        if n_classes > dataset.n_classes:
            raise ValueError(
                f"n_classes={n_classes} but {dataset.name} has only {dataset.n_classes} classes; "
                f"use n_classes ≤ {dataset.n_classes}"
            )
        check_class_sizes(
            dataset,
            n_per_class,
            f"n_per_class={n_per_class} images per class",
            f"use n_per_class ≤ {dataset.min_per_class}",
        )
        self.dataset = dataset
        self.n_classes, self.n_per_class = n_classes, n_per_class
        self.device = dataset.device if device is None else torch.device(device)
        self.generator = torch.Generator(device=dataset.device).manual_seed(seed)

    def __repr__(self) -> str:
        return (
            f"PKSampler({self.n_classes} classes × {self.n_per_class} images from "
            f"{self.dataset.n_classes} classes on {self.dataset.device})"
        )

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch.

        Returns:
            ``(x, y)``: float images in ``[0, 1]`` of shape
            ``(n_classes * n_per_class, C, H, W)``, grouped by label, and labels
            in ``0..n_classes-1`` (a random order of the drawn classes) of shape
            ``(n_classes * n_per_class,)``.
        """
        device = self.dataset.device
        classes = random_subsets(
            (), self.dataset.n_classes, self.n_classes, self.generator, device
        )  # (P,)
        rows = random_rows(self.dataset, classes, self.n_per_class, self.generator)  # (P, K)
        x = deliver(self.dataset.flat_images[rows.flatten()], self.device)  # (P*K, C, H, W)
        y = torch.arange(self.n_classes, device=device).repeat_interleave(self.n_per_class)
        return to_float(x), deliver(y, self.device)
