"""Transductive prototypes: class means refined with the task's own queries (soft k-means, as
Ren et al. 2018 refine prototypes with unlabelled images)."""

from __future__ import annotations

import torch
from torch import nn

from ..common import check_positive_int
from ..sampling.tasks import check_task
from .metric import class_prototypes, cosine_similarity, squared_euclidean
from .prototypes import ProtoNet


class TransductivePrototypes(ProtoNet):
    """A prototypical network whose prototypes also take in the task's queries.

    Transductive: each query's prediction depends on the other queries of its task, not on
    the support set alone. After the support means, each of ``steps`` refinements computes
    every query's class probabilities (the softmax of the logits) and makes each prototype
    the weighted mean of its support embeddings (weight 1) and of every query (weight: its
    probability of that class), the soft k-means step of Ren et al. (2018) with the queries
    as the unlabelled images.

    Args:
        backbone, distance, scale: as :class:`~fslearn.ProtoNet`'s.
        steps: refinements (1 or more).
    """

    def __init__(
        self, backbone: nn.Module, distance: str = "euclidean", scale=None, steps: int = 1
    ):
        super().__init__(backbone, distance, scale)
        self.steps = check_positive_int("steps", steps)

    def _logits(self, queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        if self.distance == "euclidean":
            return -self.scale * squared_euclidean(queries, prototypes)
        return self.scale * cosine_similarity(queries, prototypes)

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """``(N·K, C, H, W)``, ``(N·K,)``, ``(Q', C, H, W)`` → logits ``(Q', N)`` against the
        refined prototypes."""
        n_way = check_task(support_x, support_y, query_x)
        support, queries = self.backbone(support_x), self.backbone(query_x)
        prototypes = class_prototypes(support, support_y, n_way)
        sums = prototypes * torch.bincount(support_y, minlength=n_way)[:, None]
        counts = torch.bincount(support_y, minlength=n_way).to(support.dtype)
        for _ in range(self.steps):
            weights = self._logits(queries, prototypes).softmax(dim=1)  # (Q', N)
            prototypes = (sums + weights.T @ queries) / (counts + weights.sum(0))[:, None]
        return self._logits(queries, prototypes)


def with_transductive_prototypes(learner: ProtoNet, steps: int = 1) -> TransductivePrototypes:
    """``learner`` (a :class:`~fslearn.ProtoNet`, with test-time views or not) with its
    prototypes refined by the task's queries (:class:`TransductivePrototypes`), sharing its
    backbone."""
    if not isinstance(learner, ProtoNet):
        raise TypeError(
            "transductive prototypes refine the class means of a prototypical network "
            f"(fsl.ProtoNet, fslearn train protonet); got {type(learner).__name__}"
        )
    return TransductivePrototypes(learner.backbone, learner.distance, learner.scale.item(), steps)
