"""Siamese networks: one shared backbone compares two images (Koch et al. 2015).

A :class:`~fslearn.PairSampler` draws balanced same/different pairs from the
background classes; a :class:`SiameseNet` scores a pair either with Koch's head
(``|f(x1) − f(x2)|`` → linear → sigmoid, trained with binary cross-entropy) or
by the Euclidean distance between embeddings, trained with the
:func:`contrastive_loss` of Hadsell et al. (2006). At test time it classifies a
query by its most similar support image: one-shot classification without any
training on the new classes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..common import check_positive_int, seeded
from ..sampling.tasks import check_task
from .metric import max_per_class


def contrastive_loss(
    distance: torch.Tensor, same: torch.Tensor, margin: float = 1.0
) -> torch.Tensor:
    """The contrastive loss of Hadsell, Chopra and LeCun (2006), averaged over pairs.

    ``same · d² + (1 − same) · max(margin − d, 0)²``: same-class pairs are pulled
    together; different-class pairs are pushed apart until they are ``margin``
    away, and no further (without the margin the easy way out is to spread
    every embedding to infinity). The paper's factor ½ is left out.

    Args:
        distance: Euclidean distances between the two embeddings of each pair,
            shape ``(n_pairs,)``.
        same: 1.0 for same-class pairs, 0.0 otherwise, shape ``(n_pairs,)``.
        margin: how far apart different-class pairs must be to cost nothing.

    Returns:
        The mean loss, a 0-dim tensor.
    """
    pull = same * distance.square()
    push = (1 - same) * (margin - distance).clamp_min(0).square()
    return (pull + push).mean()


class SiameseNet(nn.Module):
    """Two copies of one backbone, compared; one-shot classification by the most similar support
    image.

    Args:
        backbone: maps images ``(B, C, H, W)`` to embeddings ``(B, embedding_dim)``.
        embedding_dim: length ``D`` of the backbone's embeddings (for Conv4,
            ``backbone.embedding_dim(image_shape)``); checked on every call.
        head: ``"koch"``: a pair's logit is ``Linear(D, 1)`` of
            ``|f(x1) − f(x2)|`` (sigmoid → probability of "same"; train with
            ``F.binary_cross_entropy_with_logits``). ``"contrastive"``: a
            pair's score is minus the Euclidean distance between embeddings
            (train :meth:`pair_distance` with :func:`contrastive_loss`).
        seed: seed for the Koch head's initialisation (``None``: torch's global generator).
    """

    def __init__(
        self,
        backbone: nn.Module,
        embedding_dim: int,
        head: str = "koch",
        *,
        seed: int | None = None,
    ):
        super().__init__()
        if head not in ("koch", "contrastive"):
            raise ValueError(f"head must be 'koch' or 'contrastive'; got {head!r}")
        embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.backbone = backbone
        self.embedding_dim = embedding_dim
        self.head_type = head
        if head == "koch":
            with seeded(seed):
                self.head = nn.Linear(embedding_dim, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images → ``(B, D)`` embeddings."""
        embeddings = self.backbone(x)
        if embeddings.shape[1:] != (self.embedding_dim,):
            raise ValueError(
                f"the backbone returned embeddings of shape {tuple(embeddings.shape)}; expected "
                f"(B, {self.embedding_dim}). Pass embedding_dim={embeddings[0].numel()} "
                "or flatten the backbone's output"
            )
        return embeddings

    def _score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scores of embeddings broadcast against each other: ``(..., D)`` × ``(..., D)`` →
        ``(...)``."""
        if self.head_type == "koch":
            return self.head((a - b).abs()).squeeze(-1)
        return -torch.linalg.vector_norm(a - b, dim=-1)

    def pair_distance(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Euclidean distances between the embeddings of ``(n, C, H, W)`` pairs: shape ``(n,)``."""
        return torch.linalg.vector_norm(self.embed(x1) - self.embed(x2), dim=-1)

    def pair_logits(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Similarity of each pair of ``(n, C, H, W)`` images, shape ``(n,)``; higher means "same".

        For the Koch head a logit (sigmoid → probability of "same"); for the
        contrastive head minus the Euclidean distance.
        """
        return self._score(self.embed(x1), self.embed(x2))

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """Score every query against every support image and keep each class's best.

        Args:
            support_x: shape ``(n_way * n_shot, C, H, W)``.
            support_y: labels in ``0..n_way-1``, shape ``(n_way * n_shot,)``.
            query_x: shape ``(n_query, C, H, W)``.

        Returns:
            Logits of shape ``(n_query, n_way)``: the highest pair score between
            the query and the class's support images, so with K > 1 the
            nearest support image decides, whatever the order of the support set.
        """
        n_way = check_task(support_x, support_y, query_x)
        support, queries = (
            self.embed(support_x),
            self.embed(query_x),
        )  # each image once, not once per pair
        scores = self._score(queries[:, None, :], support[None, :, :])  # (n_query, n_support)
        return max_per_class(scores, support_y, n_way)
