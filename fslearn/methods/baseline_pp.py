"""Baseline++ (Chen et al. 2019, "A Closer Look at Few-shot Classification", ICLR): pre-training
with a cosine-similarity classifier, and a new cosine classifier fitted to each test task.

A cosine classifier scores a feature ``x`` against a weight vector ``w_c`` per class by
``scale · cos(x, w_c)``: features and weights are L2-normalised, so only directions count, and
the fixed ``scale`` (the inverse of a softmax temperature) keeps the softmax over scores in
``[-scale, scale]`` from being nearly uniform. Chen et al. argue that it reduces the
intra-class variation of the features, against the linear head of the plain Baseline
(:class:`~fslearn.FineTune`).

What this follows, checked against the authors' code (github wyharveychen/CloserLookFewShot:
``backbone.py``'s ``distLinear``, ``methods/baselinetrain.py``, ``methods/baselinefinetune.py``,
``train.py``, ``save_features.py``):

- the scale: 2 for a head of at most 200 classes, else 10 (``distLinear``; their comment: a
  larger factor for Omniglot's thousands of classes), so 10 for pre-training on Omniglot's
  background characters and 2 for a 5-way test head;
- their ``distLinear`` also reparametrises the weights with weight normalisation, whose norm
  per class is learned, so its scores are ``scale · g_c · cos(x, w_c)``; the paper describes
  plain cosine similarities, and the authors call the learned norms an unintended difference
  (issue #4 of their repository). ``learn_norms=False`` (the default) follows the paper,
  ``learn_norms=True`` the code (``g_c`` starts at the norm of ``w_c``, as weight
  normalisation starts);
- pre-training: cross-entropy over all base classes, Adam (:func:`~fslearn.train_pretrained`
  with ``head="cosine"``; their recipe: Adam 1e-3, batches of 16, 5 epochs on Omniglot, 400 on
  miniImageNet);
- at test time the backbone is frozen with its running batch-norm statistics (they extract
  features after ``model.eval()``) and a new cosine head starts at random; they train it by SGD
  (learning rate 0.01, momentum 0.9, dampening 0.9, weight decay 0.001) on mini-batches of 4
  support features for 100 epochs. Here it takes the full-batch gradient steps of
  :class:`~fslearn.FineTune` (``inner_lr``, ``test_steps``), so that Baseline and Baseline++
  differ in their head alone; its random start is drawn once, from ``seed``, and shared by
  every task.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..common import check_positive_int, seeded
from ..deprecation import renamed_keywords
from ..models.classifier import Classifier
from ..models.registry import embedding_dim
from .finetune import FineTune
from .metric import cosine_similarity


def default_scale(n_classes: int) -> float:
    """Chen et al.'s scale for a cosine head of ``n_classes`` outputs: 2 up to 200, else 10."""
    return 2.0 if n_classes <= 200 else 10.0


class CosineHead(nn.Module):
    """A cosine-similarity classifier: ``(B, D)`` features → ``(B, out_features)`` logits
    ``scale · cos(feature, w_c)`` (times a learned norm ``g_c`` per class with
    ``learn_norms``).

    Args:
        in_features: ``D``.
        out_features: classes.
        scale: multiplies the cosines (default: 2 up to 200 classes, else 10, as Chen et
            al.'s code).
        learn_norms: learn a norm per class, as the weight normalisation of Chen et al.'s code.
        seed: seeds the weights' initialisation (that of ``nn.Linear``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        scale: float | None = None,
        learn_norms: bool = False,
        seed: int | None = None,
    ):
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        scale = default_scale(self.out_features) if scale is None else scale
        if isinstance(scale, bool) or not (
            isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0
        ):
            raise ValueError(f"scale must be a finite number > 0; got {scale!r}")
        self.scale = float(scale)
        with seeded(seed):
            weight = nn.Linear(self.in_features, self.out_features, bias=False).weight.detach()
        self.weight = nn.Parameter(weight)
        norms = nn.Parameter(weight.norm(dim=1)) if learn_norms else None
        self.register_parameter("norms", norms)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"scale={self.scale}, learn_norms={self.norms is not None}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cosines = cosine_similarity(x, self.weight)
        if self.norms is not None:
            cosines = cosines * self.norms
        return self.scale * cosines


def cosine_classifier(
    backbone: nn.Module,
    image_shape,
    n_classes: int,
    *,
    scale: float | None = None,
    seed: int | None = None,
) -> Classifier:
    """A :class:`~fslearn.Classifier` whose head is a :class:`CosineHead`: Baseline++'s network
    for pre-training, ``(B, C, H, W) → (B, n_classes)``."""
    model = Classifier(backbone, image_shape, n_classes, seed=seed)
    model.head = CosineHead(embedding_dim(backbone, image_shape), n_classes, scale=scale, seed=seed)
    return model


class BaselinePP(FineTune):
    """Baseline++: a pre-trained backbone with a new cosine head fitted to each task.

    Everything as in :class:`~fslearn.FineTune` (``inner_lr``, ``test_steps``, ``test_adapt``,
    ``test_bn``, ``strategy``, the call shape), except the head: a :class:`CosineHead` of
    ``n_way`` classes, drawn at random from ``seed`` once and the start of every task.

    Args:
        backbone: pre-trained with a cosine head, the ``backbone`` of
            ``fsl.train_pretrained(train, head="cosine")`` (a linear head's works too).
        image_shape: ``(C, H, W)`` of the images.
        n_way: classes per task.
        inner_lr, test_steps: the gradient steps on the support loss (defaults as FineTune's;
            ``lr`` and ``steps`` before fslearn 0.2, still taken with a warning).
        scale: the head's scale (default 2, Chen et al.'s for up to 200 classes).
        learn_norms: learn a norm per class, as Chen et al.'s code does (see
            :mod:`fslearn.methods.baseline_pp`).
        seed: seeds the head's random start.
        test_adapt: ``"head"`` (default, as Chen et al.) or ``"whole"``.
        test_bn: ``"running"`` (default, as Chen et al.), ``"transductive"`` or ``"support"``.
        strategy: how a batch of tasks runs, as in :class:`~fslearn.GradientLearner`.

    Settings and papers: the defaults are Chen et al.'s Baseline++ at test time but for the
    optimiser of the new head (:mod:`fslearn.methods.baseline_pp` says what differs).
    """

    @renamed_keywords("BaselinePP", lr="inner_lr", steps="test_steps")
    def __init__(
        self,
        backbone: nn.Module,
        image_shape,
        n_way: int,
        *,
        inner_lr: float = 0.5,
        test_steps: int = 50,
        scale: float | None = None,
        learn_norms: bool = False,
        seed: int = 0,
        test_adapt: str = "head",
        test_bn: str = "running",
        strategy: str = "auto",
    ):
        head = CosineHead(
            embedding_dim(backbone, image_shape),
            n_way,
            scale=scale,
            learn_norms=learn_norms,
            seed=seed,
        )
        super().__init__(
            backbone,
            image_shape,
            n_way,
            inner_lr=inner_lr,
            test_steps=test_steps,
            test_adapt=test_adapt,
            test_bn=test_bn,
            head=head,
            strategy=strategy,
        )
