"""Batch norm at test time: which statistics normalise a test task's images.

A network with batch norm can classify a test task's queries three ways, chosen by the
``test_bn`` argument that every learner with a backbone takes
(:class:`~fslearn.MAML`, :class:`~fslearn.FineTune`, :class:`~fslearn.BaselinePP`,
:class:`~fslearn.SimpleShot`):

- ``"transductive"``: every forward pass normalises with the statistics of the batch in
  hand: the support set while adapting to it, the task's queries, all together, when they
  are classified. A query's logits then depend on the other queries of its task. MAML's
  official code does this (TensorFlow's ``batch_norm`` in training mode at test time, the
  query batch forwarded on its own), and so does :class:`~fslearn.MAML` by default.
- ``"running"``: the running statistics gathered in training (eval mode): inductive, every
  query classified on its own. The default of the learners built on a pre-trained
  backbone, as in Chen et al.'s and Wang et al.'s code (``model.eval()`` before features
  are extracted), and what :func:`~fslearn.evaluate` gives the metric learners.
- ``"support"``: the statistics of the task's support set, applied to the support images
  and to the queries alike: inductive (a query's logits do not depend on the other
  queries), and it needs no running statistics. Support and queries go through the network
  as one batch whose batch-norm layers take their statistics from the support rows only.

The switch changes test time only: :meth:`~fslearn.MAML.meta_loss` always normalises as the
network's layers do.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..models.task_batch_norm import TaskBatchNorm2d

#: The values of ``test_bn``.
TEST_BN_MODES = ("transductive", "running", "support")


def check_test_bn(test_bn) -> str:
    """``test_bn``, or a ``ValueError`` naming it and the accepted values."""
    if not isinstance(test_bn, str) or test_bn not in TEST_BN_MODES:
        raise ValueError(
            f"test_bn must be one of {TEST_BN_MODES} (the task's own batches, the running "
            f"statistics of training, or the support set's statistics); got {test_bn!r}"
        )
    return test_bn


def batch_norm_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """``(name, layer)`` of every batch-norm layer of ``model``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)]


def check_test_bn_for(model: nn.Module, test_bn) -> str:
    """``test_bn`` if ``model`` can normalise that way, else a ``ValueError`` naming the layers.

    ``"running"`` needs running statistics in every batch-norm layer; MAML's network keeps
    none.
    """
    test_bn = check_test_bn(test_bn)
    if test_bn == "running":
        without = [name for name, m in batch_norm_layers(model) if not _has_running_stats(m)]
        if without:
            raise ValueError(
                f"test_bn='running' normalises with the running statistics of training, but the "
                f"batch-norm layers {without} keep none (they normalise every batch with its own "
                "statistics, as MAML's network does); use test_bn='transductive' (the task's own "
                "batches) or test_bn='support' (the support set's statistics)"
            )
    return test_bn


def _has_running_stats(layer: _BatchNorm) -> bool:
    return layer.track_running_stats and layer.running_mean is not None


def _natively(layer: _BatchNorm) -> str | None:
    """The mode ``layer`` computes on its own: batch statistics, running ones, or ``None`` when
    it would also update its running statistics (a tracking layer in training mode)."""
    if isinstance(layer, TaskBatchNorm2d) or not _has_running_stats(layer):
        return "transductive"
    return None if layer.training else "running"


def _normalise(layer: _BatchNorm, x: torch.Tensor, mean, var) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = torch.rsqrt(var + layer.eps)
    if layer.weight is not None:
        scale = scale * layer.weight
    shift = -mean * scale
    if layer.bias is not None:
        shift = shift + layer.bias
    return x * scale.reshape(shape) + shift.reshape(shape)


def _batch_statistics(layer: _BatchNorm, rows: int | None, x: torch.Tensor) -> torch.Tensor:
    # Composite operations: exact under vmap, where torch's fused kernel is not (see
    # TaskBatchNorm2d). Statistics of the first ``rows`` items, or of the whole batch.
    sample = x if rows is None else x[:rows]
    var, mean = torch.var_mean(sample, dim=[0, *range(2, x.dim())], unbiased=False)
    return _normalise(layer, x, mean, var)


def _running_statistics(layer: _BatchNorm, rows: int | None, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(
        x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.0, layer.eps
    )


@contextlib.contextmanager
def normalising(model: nn.Module, test_bn: str, n_support: int | None = None):
    """Inside this context the batch-norm layers of ``model`` normalise as ``test_bn`` says.

    ``"support"`` takes every layer's statistics from the first ``n_support`` items of the
    batch, which must then be the support images (followed by the queries, if any). Layers that
    already normalise that way are left alone, so a learner's default mode runs the very code
    it ran before there was a choice; the others have their ``forward`` replaced until the
    context ends. Running statistics are never updated.
    """
    forwards = {"transductive": _batch_statistics, "running": _running_statistics}
    forward = forwards.get(test_bn, _batch_statistics)
    rows = n_support if test_bn == "support" else None
    replaced = []
    try:
        for _, layer in batch_norm_layers(model):
            if test_bn == "support" or _natively(layer) != test_bn:
                replaced.append((layer, vars(layer).get("forward")))
                layer.forward = functools.partial(forward, layer, rows)
        yield
    finally:
        for layer, previous in reversed(replaced):
            del layer.forward
            if previous is not None:
                layer.forward = previous


def embed_task(
    backbone: nn.Module, support_x: torch.Tensor, query_x: torch.Tensor, test_bn: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Support and query embeddings of one task, normalised as ``test_bn`` says.

    Args:
        backbone: ``(B, C, H, W) → (B, D)``.
        support_x: ``(n_way * n_shot, C, H, W)``; query_x: ``(n_way * n_query, C, H, W)``.

    Returns:
        ``(support, queries)`` of shapes ``(n_way * n_shot, D)`` and ``(n_way * n_query, D)``.
    """
    n_support = len(support_x)
    with normalising(backbone, test_bn, n_support):
        if test_bn == "support":
            both = backbone(torch.cat([support_x, query_x]))
            return both[:n_support], both[n_support:]
        return backbone(support_x), backbone(query_x)
