"""How far apart the classes of an embedding lie, relative to their spread."""

from __future__ import annotations

import torch


def separation(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """How far apart classes lie in an embedding, relative to how spread each one is.

    The mean Euclidean distance between the class means (over all pairs of classes) divided by
    the mean Euclidean distance of an embedding to its own class mean. Distances are not
    squared, and scaling the embedding does not change the ratio; larger is better.

    Args:
        embeddings: shape ``(n, D)``.
        labels: shape ``(n,)``, integers ``0 … C-1`` with every class present, ``C ≥ 2``.
    """
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"separation needs embeddings of shape (n, D) and labels of shape (n,); got "
            f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    n_classes = int(labels.max()) + 1 if labels.numel() else 0
    counts = torch.bincount(labels, minlength=n_classes)
    if n_classes < 2 or bool((counts == 0).any()):
        raise ValueError(
            f"separation needs labels 0 … C-1 with C ≥ 2 and every class present; got counts "
            f"{counts.tolist()}"
        )
    embeddings = embeddings.float()
    means = torch.zeros(n_classes, embeddings.shape[1], device=embeddings.device)
    means = means.index_add(0, labels, embeddings) / counts.unsqueeze(1)  # (C, D)
    within = (embeddings - means[labels]).norm(dim=1).mean()
    return (torch.pdist(means).mean() / within).item()
