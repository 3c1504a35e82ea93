"""Classify queries by the nearest embedded support image or class prototype, with any backbone."""

from __future__ import annotations

import torch
from torch import nn

from ..sampling.tasks import check_task
from .metric import max_per_class, nearest_prototype_logits, squared_euclidean


class NearestNeighbourLearner(nn.Module):
    """Classify each query by squared Euclidean distance to embedded support images.

    The shared call shape: ``logits = learner(support_x, support_y, query_x)``.

    Args:
        backbone: maps images ``(B, C, H, W)`` to embeddings ``(B, D)``
            (e.g. one trained with the triplet loss).
        rule: ``"nearest-support"``: a class's logit is minus the squared
            distance to its nearest support image; ``"nearest-prototype"``:
            minus the squared distance to the mean of its support embeddings, as
            :class:`~fslearn.NearestPrototype` computes it.
    """

    def __init__(self, backbone: nn.Module, rule: str = "nearest-support"):
        super().__init__()
        if rule not in ("nearest-support", "nearest-prototype"):
            raise ValueError(f"rule must be 'nearest-support' or 'nearest-prototype'; got {rule!r}")
        self.backbone = backbone
        self.rule = rule

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """``(n_way * n_shot, C, H, W)``, ``(n_way * n_shot,)``, ``(n_query, C, H, W)`` → logits
        ``(n_query, n_way)``."""
        n_way = check_task(support_x, support_y, query_x)
        support, queries = self.backbone(support_x), self.backbone(query_x)
        if self.rule == "nearest-prototype":
            return nearest_prototype_logits(support, support_y, queries, n_way)
        return max_per_class(-squared_euclidean(queries, support), support_y, n_way)
