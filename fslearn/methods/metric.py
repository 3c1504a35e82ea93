"""The arithmetic of metric-based few-shot learning: distances, class prototypes, the best
score per class. Prototypical networks, Siamese networks and nearest-neighbour learners share it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import check_positive_int


def class_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean embedding of each class.

    Args:
        embeddings: shape ``(n_support, D)``.
        labels: integer labels in ``0..n_way-1``, shape ``(n_support,)``.
        n_way: number of classes.

    Returns:
        Prototypes of shape ``(n_way, D)``; a class without embeddings gets zeros.

    Raises:
        ValueError: the shapes disagree, or a label is not a class ``0 … n_way − 1`` (the
            message names the labels' range).
    """
    n_way = check_positive_int("n_way", n_way)
    if embeddings.dim() != 2 or labels.dim() != 1 or len(labels) != len(embeddings):
        raise ValueError(
            "class_prototypes takes embeddings (n_support, D) and one label per embedding, "
            f"(n_support,); got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integer classes 0 … n_way − 1; got dtype {labels.dtype}")
    try:
        # bincount learns the largest label anyway (its host sync): a count past n_way is a
        # label past the classes, and a negative label is its error, at no extra cost.
        counts = torch.bincount(labels, minlength=n_way)
    except RuntimeError:
        counts = None
    if counts is None or len(counts) > n_way:
        low, high = torch.stack([labels.min(), labels.max()]).tolist()
        raise ValueError(
            f"labels must be classes 0 … n_way − 1 = {n_way - 1}; got labels from {low} to "
            f"{high}. Relabel the classes 0, 1, … (as fsl.EpisodeSampler does), or pass the "
            "right n_way"
        )
    sums = torch.zeros(
        n_way, embeddings.shape[-1], dtype=embeddings.dtype, device=embeddings.device
    )
    sums.index_add_(0, labels, embeddings)
    return sums / counts.clamp_min(1).to(embeddings.dtype)[:, None]


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


def max_per_class(scores: torch.Tensor, support_y: torch.Tensor, n_way: int) -> torch.Tensor:
    """For every query and class, the best score over that class's support images.

    Args:
        scores: shape ``(n_query, n_support)``.
        support_y: labels in ``0..n_way-1``, shape ``(n_support,)``; a class
            without support images gets ``-inf``.
        n_way: number of classes.

    Returns:
        Shape ``(n_query, n_way)``; independent of the order of the support set.
    """
    member = (
        support_y[None, :] == torch.arange(n_way, device=support_y.device)[:, None]
    )  # (n_way, n_support)
    return scores[:, None, :].masked_fill(~member, float("-inf")).amax(-1)


def nearest_prototype_logits(
    support: torch.Tensor,
    support_y: torch.Tensor,
    queries: torch.Tensor,
    n_way: int,
    distance: str = "euclidean",
) -> torch.Tensor:
    """Logits of embedded queries against the prototypes of embedded support images.

    Args:
        support: support embeddings, shape ``(n_way * n_shot, D)``.
        support_y: their labels in ``0..n_way-1``, shape ``(n_way * n_shot,)``.
        queries: query embeddings, shape ``(n_query, D)``.
        distance: ``"euclidean"`` (minus squared distances) or ``"cosine"`` (similarities).

    Returns:
        Shape ``(n_query, n_way)``.
    """
    prototypes = class_prototypes(support, support_y, n_way)
    if distance == "cosine":
        return cosine_similarity(queries, prototypes)
    return -squared_euclidean(queries, prototypes)
