"""Class prototypes and distances: the arithmetic behind nearest-prototype classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def class_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean embedding of each class.

    Args:
        embeddings: shape ``(n_support, D)``.
        labels: integer labels in ``0..n_way-1``, shape ``(n_support,)``.
        n_way: number of classes.

    Returns:
        Prototypes of shape ``(n_way, D)``.
    """
    sums = torch.zeros(n_way, embeddings.shape[-1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=n_way).clamp_min(1).to(embeddings.dtype)
    return sums / counts[:, None]


def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All squared Euclidean distances: ``(n, D)`` × ``(m, D)`` → ``(n, m)``.

    Computed as ``|a|² + |b|² − 2 a·b`` (one matrix product) rather than by
    broadcasting an ``(n, m, D)`` difference, which is an order of magnitude
    slower for pixel-sized ``D``; rounding can make tiny distances slightly
    negative, so they are clamped at 0.
    """
    return (a.square().sum(-1)[:, None] + b.square().sum(-1)[None, :] - 2 * a @ b.T).clamp_min(0)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All cosine similarities: ``(n, D)`` × ``(m, D)`` → ``(n, m)``."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


class NearestPrototype(nn.Module):
    """Classify each query by its nearest class prototype (mean support embedding).

    The shared call shape of every learner in fslearn:
    ``logits = learner(support_x, support_y, query_x)``. With the default
    identity backbone it is the pixel-space nearest-class-mean baseline.

    Args:
        backbone: maps images ``(B, C, H, W)`` to embeddings ``(B, D)``;
            ``None`` flattens the pixels.
        distance: ``"euclidean"`` (logits are negative squared distances) or
            ``"cosine"`` (logits are cosine similarities).
    """

    def __init__(self, backbone: nn.Module | None = None, distance: str = "euclidean"):
        super().__init__()
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine'; got {distance!r}")
        self.backbone = backbone if backbone is not None else nn.Flatten()
        self.distance = distance

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """``(N·K, C, H, W)``, ``(N·K,)``, ``(Q', C, H, W)`` → logits ``(Q', N)``."""
        # One host sync to learn N; labels are 0..N-1 by the episode convention.
        n_way = int(support_y.max()) + 1
        prototypes = class_prototypes(self.backbone(support_x), support_y, n_way)
        queries = self.backbone(query_x)
        if self.distance == "cosine":
            return cosine_similarity(queries, prototypes)
        return -squared_euclidean(queries, prototypes)


class ProtoNet(NearestPrototype):
    """A prototypical network (Snell et al. 2017): a trainable backbone + nearest prototype.

    Logits are ``scale × (−squared distance)`` or ``scale × cosine similarity``;
    softmax over them gives the class probabilities, and cross-entropy against
    ``query_y`` is the training loss.

    Args:
        backbone: maps images ``(B, C, H, W)`` to embeddings ``(B, D)``, e.g. :class:`~fslearn.Conv4`.
        distance: ``"euclidean"`` (squared, the paper's choice) or ``"cosine"``.
        scale: multiplies the logits (the inverse of a softmax temperature); default
            1 for Euclidean and 10 for cosine, whose similarities lie in [−1, 1] and
            would otherwise give a nearly uniform softmax.
        learn_scale: make ``scale`` a trained parameter (stored as its logarithm, so it stays positive).
    """

    def __init__(self, backbone: nn.Module, distance: str = "euclidean", scale: float | None = None, learn_scale: bool = False):
        super().__init__(backbone, distance)
        scale = (10.0 if distance == "cosine" else 1.0) if scale is None else scale
        if scale <= 0:
            raise ValueError(f"scale must be positive; got {scale}")
        log_scale = torch.tensor(float(scale)).log()
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """``(N·K, C, H, W)``, ``(N·K,)``, ``(Q', C, H, W)`` → logits ``(Q', N)``."""
        return self.scale * super().forward(support_x, support_y, query_x)
