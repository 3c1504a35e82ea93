"""SimpleShot (Wang et al. 2019, "SimpleShot: Revisiting Nearest-Neighbor Classification for
Few-Shot Learning"): nearest centroid on the features of a pre-trained classifier, after
centring them on the base classes' mean feature and L2-normalising them.

What this follows, checked against the authors' code (github mileyan/simple_shot,
``src/train.py``: ``extract_feature``, ``metric_class_type``):

- the features are the backbone's output (before the classifier's linear layer), extracted
  in eval mode, so batch norm uses its running statistics (``test_bn="running"``);
- the base mean is the mean feature of every training (base-class) image, extracted the same
  way (:func:`~fslearn.mean_embedding`);
- ``"CL2N"``: subtract the base mean, then divide by the L2 norm; ``"L2N"``: divide by the L2
  norm; ``"UN"``: the features as they are. The three rows of their tables;
- each class's centroid is the mean of its transformed support features (not normalised
  again), and a query goes to the class of the nearest centroid in Euclidean distance. The
  logits here are minus the squared distances, whose largest is that nearest class.

Their backbones are trained as plain softmax classifiers over the base classes, the
pre-training of :func:`~fslearn.train_pretrained` (their recipe differs: SGD from 0.1, 90
epochs, batches of 256, on miniImageNet).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common import check_positive_int, model_device
from ..data.dataset import FewShotDataset, to_float
from ..sampling.tasks import check_task
from .batch_norm_modes import batch_norm_layers, check_test_bn_for, embed_task
from .metric import nearest_prototype_logits

#: SimpleShot's feature transforms: centred and L2-normalised, L2-normalised, unnormalised.
NORMS = ("CL2N", "L2N", "UN")


@torch.no_grad()
def mean_embedding(backbone: nn.Module, images, *, batch_size: int = 256) -> torch.Tensor:
    """The mean embedding of ``images`` under ``backbone`` in eval mode: SimpleShot's base mean.

    Args:
        backbone: ``(B, C, H, W) → (B, D)``, with running batch-norm statistics.
        images: a :class:`~fslearn.FewShotDataset` (every image of every class, each counted
            once) or a tensor ``(N, C, H, W)`` (uint8 images are scaled to ``[0, 1]``).
        batch_size: images embedded at once (256: faster on a CPU thread than larger batches,
            whose activations outgrow its caches).

    Returns:
        Shape ``(D,)``, on the backbone's device.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    without = [name for name, m in batch_norm_layers(backbone) if not m.track_running_stats]
    if without:
        raise ValueError(
            f"mean_embedding embeds with running batch-norm statistics, but the layers {without} "
            "keep none (a MAML network's), so the mean would depend on batch_size; use a "
            "backbone pre-trained with running statistics, e.g. fsl.train_pretrained's"
        )
    if isinstance(images, FewShotDataset):
        images = images.flat(float_images=False)[0]
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(
            f"images must have shape (N, C, H, W) with N ≥ 1; got {tuple(images.shape)}"
        )
    device = model_device(backbone)
    was_training = backbone.training
    backbone.eval()
    try:
        total = sum(
            backbone(to_float(images[start : start + batch_size].to(device))).double().sum(0)
            for start in range(0, len(images), batch_size)
        )
    finally:
        backbone.train(was_training)
    return (total / len(images)).to(next(backbone.parameters()).dtype)


class SimpleShot(nn.Module):
    """Nearest centroid on transformed pre-trained features (Wang et al. 2019).

    Args:
        backbone: a pre-trained embedding network, ``(B, C, H, W) → (B, D)``, e.g. the
            ``backbone`` of :func:`~fslearn.train_pretrained`'s classifier.
        base_mean: ``(D,)``, the mean feature of the training classes' images,
            ``fsl.mean_embedding(backbone, train_set)``; needed by ``"CL2N"``.
        norm: ``"CL2N"`` (default: centred on ``base_mean``, then L2-normalised), ``"L2N"``
            (L2-normalised) or ``"UN"`` (unnormalised).
        test_bn: batch norm at test time (:mod:`fslearn.methods.batch_norm_modes`):
            ``"running"`` (default, as the authors' code), ``"transductive"`` (support set
            and queries each normalised with their own statistics) or ``"support"``.

    Call shape: ``simpleshot(support_x, support_y, query_x) -> logits``, one task
    (``(n_way * n_query, n_way)``) or ``T`` stacked tasks (``(T, n_way * n_query, n_way)``);
    the logits are minus the squared Euclidean distances to the class centroids.
    """

    def __init__(
        self,
        backbone: nn.Module,
        base_mean: torch.Tensor | None = None,
        *,
        norm: str = "CL2N",
        test_bn: str = "running",
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(
                f"norm must be one of {NORMS} (centred and L2-normalised, L2-normalised, "
                f"unnormalised); got {norm!r}"
            )
        if norm == "CL2N" and base_mean is None:
            raise ValueError(
                "norm='CL2N' centres the features on the training classes' mean feature: pass "
                "base_mean=fsl.mean_embedding(backbone, train_set), or use norm='L2N'"
            )
        if base_mean is not None and (base_mean.dim() != 1 or not base_mean.isfinite().all()):
            raise ValueError(
                f"base_mean must be a finite mean feature of shape (D,); got shape "
                f"{tuple(base_mean.shape)}"
            )
        self.backbone = backbone
        self.norm = norm
        self.register_buffer("base_mean", None if base_mean is None else base_mean.detach())
        self.test_bn = test_bn

    @property
    def test_bn(self) -> str:
        """``"running"``, ``"transductive"`` or ``"support"``: batch norm at test time."""
        return self._test_bn

    @test_bn.setter
    def test_bn(self, value: str) -> None:
        self._test_bn = check_test_bn_for(self.backbone, value)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, test_bn={self.test_bn!r}"

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` features → the same, centred and normalised as ``norm`` says."""
        if self.norm == "CL2N":
            if self.base_mean.shape != features.shape[-1:]:
                raise ValueError(
                    f"base_mean has {self.base_mean.numel()} entries but the backbone's features "
                    f"{features.shape[-1]}: compute it with fsl.mean_embedding(backbone, "
                    "train_set) for this backbone"
                )
            features = features - self.base_mean
        if self.norm == "UN":
            return features
        # F.normalize's floor on the norm keeps an all-zero feature at zero, not NaN.
        return F.normalize(features, dim=-1)

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """``(…, n_way * n_shot, C, H, W)``, ``(…, n_way * n_shot)``,
        ``(…, n_way * n_query, C, H, W)`` → logits ``(…, n_way * n_query, n_way)``."""
        batched = support_x.dim() == 5
        n_way = check_task(support_x, support_y, query_x, batched=batched)
        if not batched:
            return self._task(support_x, support_y, query_x, n_way)
        return torch.stack(
            [self._task(*task, n_way) for task in zip(support_x, support_y, query_x, strict=True)]
        )

    def _task(self, support_x, support_y, query_x, n_way: int) -> torch.Tensor:
        support, queries = embed_task(self.backbone, support_x, query_x, self.test_bn)
        support, queries = self.transform(support), self.transform(queries)
        return nearest_prototype_logits(support, support_y, queries, n_way)
