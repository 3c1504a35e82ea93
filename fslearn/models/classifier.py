"""A backbone with a linear head: the classifier that pre-training, MAML and fine-tuning use."""

from __future__ import annotations

import torch
from torch import nn

from ..common import check_positive_int, seeded
from .registry import embedding_dim


class Classifier(nn.Module):
    """A backbone followed by a linear layer: ``(B, C, H, W) → (B, n_classes)`` logits.

    Args:
        backbone: maps images to ``(B, D)`` embeddings; its ``embedding_dim(image_shape)``
            gives ``D``, or without one a forward pass measures it.
        image_shape: ``(C, H, W)`` of the inputs, to size the linear layer.
        n_classes: number of output classes.
        seed: seed for the linear layer's initialisation.
    """

    def __init__(
        self, backbone: nn.Module, image_shape, n_classes: int, *, seed: int | None = None
    ):
        super().__init__()
        n_classes = check_positive_int("n_classes", n_classes)
        self.backbone = backbone
        with seeded(seed):
            self.head = nn.Linear(embedding_dim(backbone, image_shape), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
