"""Siamese networks: one shared backbone compares two images (Koch et al. 2015).

A :class:`PairSampler` draws balanced same/different pairs from the background
classes; a :class:`SiameseNet` scores a pair either with Koch's head
(``|f(x1) − f(x2)|`` → linear → sigmoid, trained with binary cross-entropy) or
by the Euclidean distance between embeddings, trained with the
:func:`contrastive_loss` of Hadsell et al. (2006). At test time it classifies a
query by its most similar support image: one-shot classification without any
training on the new classes.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbones import seeded
from .data import FewShotDataset, to_float
from .episodes import random_subsets


class PairSampler:
    """Draws pairs of images, exactly half from the same class and half from two classes.

    Args:
        dataset: the classes to draw from (the background split: pairs must
            never show the evaluation classes); move it to the GPU first to
            sample on the GPU.
        seed: seeds the sampler's own generator (on the dataset's device).

    Example:
        >>> x1, x2, same = PairSampler(background, seed=0).sample(128)   # x1: (128, 1, 28, 28)
    """

    def __init__(self, dataset: FewShotDataset, *, seed: int = 0):
        if dataset.n_classes < 2:
            raise ValueError(
                f"{dataset.name} has {dataset.n_classes} class; negative pairs need at least 2 classes"
            )
        if dataset.n_per_class < 2:
            raise ValueError(
                f"{dataset.name} has {dataset.n_per_class} image per class; positive pairs need two "
                f"different images of a class, so at least 2 per class"
            )
        self.dataset = dataset
        self.generator = torch.Generator(device=dataset.device).manual_seed(seed)

    def __repr__(self) -> str:
        return f"PairSampler({self.dataset.n_classes} classes × {self.dataset.n_per_class} images on {self.dataset.device})"

    def sample(self, n_pairs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n_pairs`` pairs in random order, half positive and half negative.

        Returns:
            ``(x1, x2, same)``: float images in ``[0, 1]`` of shape
            ``(n_pairs, C, H, W)`` each, and ``same`` of shape ``(n_pairs,)``,
            1.0 where the two images show the same class (two different
            images of it) and 0.0 where they show two different classes.
        """
        if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 2 or n_pairs % 2:
            raise ValueError(
                f"n_pairs must be a positive even integer (half positive, half negative pairs); got {n_pairs!r}"
            )
        half = n_pairs // 2
        data, g = self.dataset, self.generator
        device = data.device
        # Positives: one class, two distinct images of it.
        pos_class = torch.randint(data.n_classes, (half,), generator=g, device=device)
        pos_inst = random_subsets((half,), data.n_per_class, 2, g, device)  # (half, 2)
        # Negatives: two distinct classes, any image of each.
        neg_class = random_subsets((half,), data.n_classes, 2, g, device)  # (half, 2)
        neg_inst = torch.randint(data.n_per_class, (half, 2), generator=g, device=device)
        classes = torch.cat([pos_class[:, None].expand(half, 2), neg_class])  # (n_pairs, 2)
        instances = torch.cat([pos_inst, neg_inst])
        same = torch.cat([torch.ones(half, device=device), torch.zeros(half, device=device)])
        # Interleave positives and negatives so no batch slice is all of one kind.
        order = torch.randperm(n_pairs, generator=g, device=device)
        x = to_float(data.images[classes[order], instances[order]])  # (n_pairs, 2, C, H, W)
        return x[:, 0], x[:, 1], same[order]


def contrastive_loss(distance: torch.Tensor, same: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
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
    member = support_y[None, :] == torch.arange(n_way, device=support_y.device)[:, None]  # (n_way, n_support)
    return scores[:, None, :].masked_fill(~member, float("-inf")).amax(-1)


class SiameseNet(nn.Module):
    """Two copies of one backbone, compared; one-shot classification by the most similar support image.

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

    def __init__(self, backbone: nn.Module, embedding_dim: int, head: str = "koch", *, seed: int | None = None):
        super().__init__()
        if head not in ("koch", "contrastive"):
            raise ValueError(f"head must be 'koch' or 'contrastive'; got {head!r}")
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive integer; got {embedding_dim!r}")
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
                f"(B, {self.embedding_dim}). Pass embedding_dim={embeddings[0].numel()} or flatten the backbone's output"
            )
        return embeddings

    def _score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scores of embeddings broadcast against each other: ``(..., D)`` × ``(..., D)`` → ``(...)``."""
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

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
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
        n_way = int(support_y.max()) + 1 if support_y.numel() else 0
        support, queries = self.embed(support_x), self.embed(query_x)  # each image once, not once per pair
        scores = self._score(queries[:, None, :], support[None, :, :])  # (n_query, n_support)
        return max_per_class(scores, support_y, n_way)
