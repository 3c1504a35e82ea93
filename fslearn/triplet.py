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
from torch import nn

from .data import FewShotDataset, to_float
from .episodes import random_subsets
from .prototypes import class_prototypes, squared_euclidean
from .siamese import max_per_class

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
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 1.0, squared: bool = False
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


class PKSampler:
    """Draws batches of P classes × K images: the batches triplet mining works on.

    Args:
        dataset: the classes to draw from (the background split); move it to
            the GPU first to sample on the GPU.
        n_classes: P, classes per batch (at least 2: a triplet needs a negative).
        n_per_class: K, images per class (at least 2: a triplet needs a positive).
        seed: seeds the sampler's own generator (on the dataset's device).

    Example:
        >>> x, y = PKSampler(background, n_classes=16, n_per_class=4).sample()   # x: (64, 1, 28, 28)
    """

    def __init__(self, dataset: FewShotDataset, n_classes: int, n_per_class: int, *, seed: int = 0):
        for name, value in (("n_classes", n_classes), ("n_per_class", n_per_class)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(
                    f"{name} must be an integer ≥ 2 (a triplet needs a positive and a negative); got {value!r}"
                )
        if n_classes > dataset.n_classes:
            raise ValueError(
                f"n_classes={n_classes} but {dataset.name} has only {dataset.n_classes} classes; "
                f"use n_classes ≤ {dataset.n_classes}"
            )
        if n_per_class > dataset.n_per_class:
            raise ValueError(
                f"n_per_class={n_per_class} but {dataset.name} has only {dataset.n_per_class} images per class; "
                f"use n_per_class ≤ {dataset.n_per_class}"
            )
        self.dataset = dataset
        self.n_classes, self.n_per_class = n_classes, n_per_class
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
        classes = random_subsets((), self.dataset.n_classes, self.n_classes, self.generator, device)  # (P,)
        instances = random_subsets((self.n_classes,), self.dataset.n_per_class, self.n_per_class, self.generator, device)
        x = self.dataset.images[classes[:, None], instances].flatten(0, 1)  # (P, K, C, H, W) → (P*K, C, H, W)
        y = torch.arange(self.n_classes, device=device).repeat_interleave(self.n_per_class)
        return to_float(x), y


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
            f"embeddings must have shape (B, D) and labels (B,); got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
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
            f"{sorted(set(labels.tolist()))}: every label needs at least two images and there must be "
            f"at least two labels; draw batches with PKSampler(n_classes ≥ 2, n_per_class ≥ 2)"
        )
    anchors = torch.arange(batch, device=labels.device)

    if strategy == "random":
        # Argmax of random keys over the allowed entries is a uniform draw among them.
        keys = torch.rand(batch, batch, generator=generator, device=embeddings.device)
        positives = keys.masked_fill(~positive_mask, -1).argmax(1)
        negatives = keys.masked_fill(~negative_mask, -1).argmax(1)
        return anchors, positives, negatives

    detached = embeddings.detach()  # mining chooses; only the loss on the chosen triplets is differentiated
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


class NearestNeighbourLearner(nn.Module):
    """Classify each query by squared Euclidean distance to embedded support images.

    The shared call shape: ``logits = learner(support_x, support_y, query_x)``.

    Args:
        backbone: maps images ``(B, C, H, W)`` to embeddings ``(B, D)``
            (e.g. one trained with the triplet loss).
        rule: ``"nearest-support"``: a class's logit is minus the squared
            distance to its nearest support image; ``"nearest-prototype"``:
            minus the squared distance to the mean of its support embeddings.
    """

    def __init__(self, backbone: nn.Module, rule: str = "nearest-support"):
        super().__init__()
        if rule not in ("nearest-support", "nearest-prototype"):
            raise ValueError(f"rule must be 'nearest-support' or 'nearest-prototype'; got {rule!r}")
        self.backbone = backbone
        self.rule = rule

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """``(n_way * n_shot, C, H, W)``, ``(n_way * n_shot,)``, ``(n_query, C, H, W)`` → logits ``(n_query, n_way)``."""
        n_way = int(support_y.max()) + 1 if support_y.numel() else 0
        support, queries = self.backbone(support_x), self.backbone(query_x)
        if self.rule == "nearest-prototype":
            return -squared_euclidean(queries, class_prototypes(support, support_y, n_way))
        return max_per_class(-squared_euclidean(queries, support), support_y, n_way)
