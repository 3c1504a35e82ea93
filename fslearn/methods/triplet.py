"""Triplet loss (Schroff et al. 2015, FaceNet) with triplet mining, and nearest-neighbour learners.

A triplet is an anchor, a positive (another image of the anchor's class) and a
negative (an image of another class); the loss asks the anchor to be closer to
the positive than to the negative by a margin. A :class:`PKSampler` draws
batches of P classes × K images; :func:`mine_triplets` picks triplets inside
such a batch (random, semi-hard or batch-hard); :func:`triplet_batch_loss`
does both and reports the fraction of triplets that still cost something.
"""

from __future__ import annotations

import torch

from .metric import squared_euclidean

STRATEGIES = ("random", "semi-hard", "batch-hard")


def _distance(a: torch.Tensor, b: torch.Tensor, squared: bool) -> torch.Tensor:
    """Row-wise (squared) Euclidean distance: ``(n, D)`` × ``(n, D)`` → ``(n,)``."""
    # vector_norm has a zero gradient at 0 (not NaN), which matters when two embeddings coincide.
    norm = torch.linalg.vector_norm(a - b, dim=-1)
    return norm.square() if squared else norm


def _triplet_losses(anchor, positive, negative, margin: float, squared: bool) -> torch.Tensor:
    """``max(d+ − d− + margin, 0)`` of every triplet, shape ``(n,)``."""
    d_pos = _distance(anchor, positive, squared)
    d_neg = _distance(anchor, negative, squared)
    return (d_pos - d_neg + margin).clamp_min(0)


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = 1.0,
    squared: bool = False,
) -> torch.Tensor:
    """Mean of ``max(d+ − d− + margin, 0)`` over triplets (FaceNet's loss).

    ``d+`` is the distance from the anchor to the positive, ``d−`` to the
    negative. Without the margin, mapping everything to one point (``d+ = d−``)
    would already cost nothing.

    Args:
        anchor, positive, negative: embeddings of shape ``(n, D)`` each.
        margin: how much closer the positive must be than the negative.
        squared: use squared Euclidean distances (FaceNet's choice) instead of
            Euclidean ones (``torch.nn.TripletMarginLoss``'s).

    Returns:
        The mean loss, a 0-dim tensor.
    """
    return _triplet_losses(anchor, positive, negative, margin, squared).mean()


def mine_triplets(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    strategy: str,
    margin: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    squared: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick triplets inside a batch, on distances computed without gradient.

    Strategies:

    * ``"random"``: for every anchor, a random positive (not the anchor itself)
      and a random negative, drawn from ``generator``.
    * ``"semi-hard"`` (FaceNet): for every (anchor, positive) pair, the closest
      negative with ``d(a,p) < d(a,n) < d(a,p) + margin``: farther than the
      positive, yet inside the margin, so the loss is positive but not
      dominated by outliers. Where no negative lies in that band, the
      hardest (closest) negative of the anchor is taken instead.
    * ``"batch-hard"`` (Hermans et al. 2017): for every anchor, the farthest
      positive and the closest negative.

    Args:
        embeddings: shape ``(B, D)``; mining only reads them (detached).
        labels: shape ``(B,)``; every label must occur at least twice and
            there must be at least two labels (a P×K batch with P, K ≥ 2).
        strategy: one of ``"random"``, ``"semi-hard"``, ``"batch-hard"``.
        margin: the loss's margin (it bounds the semi-hard band).
        generator: for ``"random"``, on the embeddings' device (``None``: torch's global generator).
        squared: measure with squared Euclidean distances, as the loss will.

    Returns:
        ``(anchor_idx, positive_idx, negative_idx)``, each of shape ``(n_triplets,)``
        with ``n_triplets = B`` for ``"random"`` and ``"batch-hard"`` and the
        number of (anchor, positive) pairs for ``"semi-hard"``.

    Raises:
        ValueError: when some anchor has no positive or no negative in the
            batch. Checking it costs one host sync per call (``"semi-hard"``
            needs a second one to count its pairs).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}")
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            "embeddings must have shape (B, D) and labels (B,); "
            f"got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    batch = labels.shape[0]
    same = labels[:, None] == labels[None, :]  # (B, B)
    eye = torch.eye(batch, dtype=torch.bool, device=labels.device)
    positive_mask, negative_mask = same & ~eye, ~same
    usable = positive_mask.any(1) & negative_mask.any(1)
    # One host sync: a wrong batch would otherwise yield triplets that are not triplets, silently.
    if not bool(usable.all()):
        lonely = labels[~usable].unique().tolist()
        raise ValueError(
            f"labels {lonely} have no positive or no negative in this batch of labels "
            f"{sorted(set(labels.tolist()))}: every label needs at least two images "
            "and there must be at least two labels; "
            "draw batches with PKSampler(n_classes ≥ 2, n_per_class ≥ 2)"
        )
    anchors = torch.arange(batch, device=labels.device)

    if strategy == "random":
        # Argmax of random keys over the allowed entries is a uniform draw among them.
        keys = torch.rand(batch, batch, generator=generator, device=embeddings.device)
        positives = keys.masked_fill(~positive_mask, -1).argmax(1)
        negatives = keys.masked_fill(~negative_mask, -1).argmax(1)
        return anchors, positives, negatives

    detached = (
        embeddings.detach()
    )  # mining chooses; only the loss on the chosen triplets is differentiated
    distances = squared_euclidean(detached, detached)  # (B, B)
    if not squared:
        distances = distances.sqrt()

    if strategy == "batch-hard":
        positives = distances.masked_fill(~positive_mask, float("-inf")).argmax(1)
        negatives = distances.masked_fill(~negative_mask, float("inf")).argmin(1)
        return anchors, positives, negatives

    anchors, positives = positive_mask.nonzero(as_tuple=True)  # every (anchor, positive) pair
    d_ap = distances[anchors, positives][:, None]  # (n_pairs, 1)
    d_an = distances[anchors].masked_fill(~negative_mask[anchors], float("inf"))  # (n_pairs, B)
    in_band = (d_an > d_ap) & (d_an < d_ap + margin)
    semi_hard = d_an.masked_fill(~in_band, float("inf")).argmin(1)
    hardest = d_an.argmin(1)
    return anchors, positives, torch.where(in_band.any(1), semi_hard, hardest)


def triplet_batch_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    strategy: str,
    margin: float = 1.0,
    squared: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mine triplets in a batch and average their triplet loss.

    Args:
        embeddings: shape ``(B, D)``, with gradient.
        labels: shape ``(B,)``; see :func:`mine_triplets`.
        strategy, margin, squared, generator: as in :func:`mine_triplets` and :func:`triplet_loss`.

    Returns:
        ``(loss, active_fraction)``: the mean loss over the mined triplets (0-dim,
        with gradient) and the fraction of them whose loss is positive (0-dim,
        no gradient, left on the device): as training goes on fewer triplets
        violate the margin, and with them the gradient signal fades.
    """
    a, p, n = mine_triplets(embeddings, labels, strategy, margin, generator, squared=squared)
    losses = _triplet_losses(embeddings[a], embeddings[p], embeddings[n], margin, squared)
    return losses.mean(), (losses.detach() > 0).float().mean()
