"""Nearest-prototype classification: the pixel baseline and prototypical networks
(Snell et al. 2017)."""

from __future__ import annotations

import torch
from torch import nn

from ..sampling.tasks import check_task
from .metric import nearest_prototype_logits


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

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """``(N·K, C, H, W)``, ``(N·K,)``, ``(Q', C, H, W)`` → logits ``(Q', N)``."""
        n_way = check_task(support_x, support_y, query_x)  # one host sync, to learn N
        support, queries = self.backbone(support_x), self.backbone(query_x)
        return nearest_prototype_logits(support, support_y, queries, n_way, self.distance)


class ProtoNet(NearestPrototype):
    """A prototypical network (Snell et al. 2017): a trainable backbone + nearest prototype.

    Logits are ``scale × (−squared distance)`` or ``scale × cosine similarity``;
    softmax over them gives the class probabilities, and cross-entropy against
    ``query_y`` is the training loss.

    Args:
        backbone: maps images ``(B, C, H, W)`` to embeddings ``(B, D)``, e.g.
            :class:`~fslearn.Conv4`.
        distance: ``"euclidean"`` (squared, the paper's choice) or ``"cosine"``.
        scale: multiplies the logits (the inverse of a softmax temperature); default
            1 for Euclidean and 10 for cosine, whose similarities lie in [−1, 1] and
            would otherwise give a nearly uniform softmax.
        learn_scale: make ``scale`` a trained parameter (stored as its logarithm, so it stays
            positive).
    """

    def __init__(
        self,
        backbone: nn.Module,
        distance: str = "euclidean",
        scale: float | None = None,
        learn_scale: bool = False,
    ):
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

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """``(N·K, C, H, W)``, ``(N·K,)``, ``(Q', C, H, W)`` → logits ``(Q', N)``."""
        return self.scale * super().forward(support_x, support_y, query_x)
