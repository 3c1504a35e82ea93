"""Model-Agnostic Meta-Learning (Finn et al. 2017), functional and batched over tasks.

One meta-iteration, as in the paper's Algorithm 2:

1. sample a batch of ``T`` tasks (an :class:`~fslearn.EpisodeSampler` with ``n_tasks=T``);
2. for every task, adapt a copy θ′ of the parameters θ with a few gradient steps
   on its support set: ``θ′ ← θ′ − α ∇ L_support(θ′)``;
3. evaluate each θ′ on its task's query set;
4. update θ with the gradient of the mean query loss (through the inner steps,
   hence second order) using any torch optimizer.

Here θ is a dict and step 4 is an ordinary ``loss.backward()``. On a GPU all ``T`` tasks run
at once under :func:`torch.func.vmap`, step 2 a :func:`torch.func.grad`, and the whole
meta-iteration runs on the device without a host synchronisation; on a CPU the tasks run one
after another with plain autograd and torch's batch-norm kernel, which is faster there
(``strategy``, in :class:`~fslearn.GradientLearner`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common import check_positive_int
from ..models.classifier import Classifier
from ..models.registry import build_backbone, resolve_backbone_options
from ..models.task_batch_norm import TaskBatchNorm2d
from ..sampling.tasks import check_task_batch
from .adaptation import GradientLearner
from .task_inputs import check_head_and_body


def check_batch_norm(model: nn.Module, second_order: bool) -> None:
    """Raise if a batch-norm layer of ``model`` cannot serve MAML under ``vmap``.

    Running statistics cannot be updated per task under ``vmap``; and torch's fused
    batch norm has wrong second derivatives there, so second-order MAML needs
    :class:`~fslearn.TaskBatchNorm2d`.
    """
    tracking = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    ]
    if tracking:
        raise ValueError(
            "MAML normalises with per-task batch statistics, but batch-norm layers "
            f"{tracking} track running statistics, which cannot be updated per task under vmap; "
            "build the backbone with track_running_stats=False, "
            "e.g. fsl.Conv4(track_running_stats=False)"
        )
    fused = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and not isinstance(module, TaskBatchNorm2d)
    ]
    if second_order and fused:
        raise ValueError(
            "second-order MAML differentiates batch norm twice under vmap, where torch's fused "
            f"kernel {fused} gives wrong second derivatives; use fsl.TaskBatchNorm2d "
            "(fsl.Conv4(track_running_stats=False) does), or first_order=True"
        )


def maml_classifier(
    n_way: int,
    image_shape,
    hidden_channels: int | None = None,
    *,
    seed: int | None = None,
    backbone: str = "conv4",
    backbone_options: dict | None = None,
) -> Classifier:
    """A backbone with per-task batch statistics and an ``n_way`` linear head: MAML's network.

    Conv4 by default, whose blocks end in 2×2 max-pooling, as Finn et al.'s miniImageNet
    network does; for Omniglot the paper (section 5.2) and its code use stride-2 convolutions
    instead.

    Args:
        n_way: classes per task (the head's outputs).
        image_shape: ``(C, H, W)`` of the images, e.g. ``(1, 28, 28)``.
        hidden_channels: Conv4's width: 64 (the default) for Omniglot, 32 for miniImageNet
            (the paper's choices).
        backbone, backbone_options: another backbone (:func:`~fslearn.build_backbone`),
            e.g. ``backbone="resnet12"``, built with ``track_running_stats=False``.
    """
    options = resolve_backbone_options(backbone, hidden_channels, backbone_options)
    body = build_backbone(backbone, image_shape[0], seed=seed, track_running_stats=False, **options)
    return Classifier(body, image_shape, n_way, seed=None if seed is None else seed + 1)


class MAML(GradientLearner):
    """MAML, first-order MAML and ANIL around a classifier.

    Args:
        model: ``(B, C, H, W) → (B, n_way)``, e.g. :func:`maml_classifier`; its
            batch-norm layers must not track running statistics.
        inner_lr: the inner step size α (paper: 0.4 for Omniglot 5-way, 0.1 for
            20-way, 0.01 for miniImageNet).
        inner_steps: inner steps during meta-training (paper: 1 for Omniglot 5-way, else 5).
        test_steps: inner steps at test time, when the learner is called. The default, 10,
            is what the authors' code takes for every dataset; the paper's appendix A.1
            gives 3 for Omniglot 5-way, 5 for 20-way and 10 for miniImageNet, which
            ``--recipe paper`` follows.
        first_order: drop the second-order terms (FOMAML).
        anil: adapt only the head in the inner loop of meta-training (Raghu et al. 2020);
            the outer loop still trains every parameter.
        test_adapt: what adapts at test time: ``"whole"`` (every parameter, as in Finn et
            al.) or ``"head"`` (the head alone, on the meta-learned backbone's features, as
            ANIL tests); default: what the inner loop of meta-training adapts (``"head"``
            with ``anil``). A network meta-trained whole can be tested head-only, and an ANIL
            network whole.
        test_bn: batch norm at test time (:mod:`fslearn.methods.batch_norm_modes`):
            ``"transductive"`` (default, as in Finn et al.'s code: the support set's
            statistics while adapting, the queries' own when they are classified) or
            ``"support"`` (the support set's statistics for the queries too: inductive).
            ``"running"`` is refused: MAML's network keeps no running statistics.
        strategy: ``"auto"`` (``"loop"`` on a CPU, ``"vmap"`` elsewhere), ``"loop"`` or
            ``"vmap"``: how a batch of tasks runs; the same numbers either way.

    The learner has the shared call shape: ``maml(support_x, support_y, query_x)``
    adapts and returns query logits. :meth:`meta_loss` is one meta-training step.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        test_steps: int = 10,
        first_order: bool = False,
        anil: bool = False,
        test_adapt: str | None = None,
        test_bn: str = "transductive",
        strategy: str = "auto",
    ):
        check_batch_norm(model, second_order=not first_order)
        if anil:
            check_head_and_body(model)
        super().__init__(
            model,
            inner_lr=inner_lr,
            test_steps=test_steps,
            test_adapt=("head" if anil else "whole") if test_adapt is None else test_adapt,
            test_bn=test_bn,
            strategy=strategy,
        )
        self.anil = bool(anil)
        if inner_steps != 0:
            inner_steps = check_positive_int("inner_steps", inner_steps)
        self.inner_steps = inner_steps
        self.first_order = first_order

    def extra_repr(self) -> str:
        kind = "ANIL" if self.anil else "first-order" if self.first_order else "second-order"
        return (
            f"{kind}, inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, "
            f"test_steps={self.test_steps}, test_adapt={self.test_adapt!r}, "
            f"test_bn={self.test_bn!r}, strategy={self.strategy!r}"
        )

    def meta_loss(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        *,
        steps: int | None = None,
        step_weights: torch.Tensor | None = None,
        record_steps: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The meta-objective of a batch of ``T`` tasks, differentiable with respect to θ.

        Args:
            support_x: ``(T, n_way * n_shot, C, H, W)``; support_y ``(T, n_way * n_shot)``.
            query_x: ``(T, n_way * n_query, C, H, W)``; query_y ``(T, n_way * n_query)``.
            steps: inner steps (default ``inner_steps``).
            step_weights: ``(steps,)`` weights of the query losses after inner steps
                1 … ``steps`` (MAML++'s multi-step loss); ``None`` uses the last step only.
            record_steps: also return the query loss after 0 … ``steps`` steps
                (detached; costs one extra query forward pass per step).

        Returns:
            ``(loss, metrics)``: the mean query loss over tasks, and on-device
            scalars ``accuracy`` (query accuracy after adaptation) and, with
            ``record_steps``, ``query_loss_0`` … ``query_loss_<steps>``.
        """
        steps = self.inner_steps if steps is None else steps
        if support_x.dim() != 5:
            raise ValueError(
                "meta_loss takes a batch of tasks: support_x of shape "
                f"(T, n_way * n_shot, C, H, W); got {tuple(support_x.shape)}. "
                "Sample with sampler.sample_tasks(T)"
            )
        check_task_batch(support_x, support_y, query_x, query_y)  # shapes only: no host sync
        if step_weights is not None and tuple(step_weights.shape) != (steps,):
            raise ValueError(
                f"step_weights must have shape (steps,) = ({steps},); "
                f"got {tuple(step_weights.shape)}"
            )
        params = self.params()

        def task(sx, sy, qx, qy, *, autograd):
            weighted, recorded = [], []

            def on_step(i, apply, fast, query_in):
                if step_weights is not None and i > 0:
                    weighted.append(F.cross_entropy(apply(fast, query_in), qy))
                    if record_steps:
                        recorded.append(weighted[-1].detach())
                elif record_steps:
                    with torch.no_grad():
                        recorded.append(F.cross_entropy(apply(fast, query_in), qy))

            track = step_weights is not None or record_steps
            apply, fast, query_in = self._inner_loop(
                params,
                sx,
                sy,
                qx,
                steps,
                head_only=self.anil,
                first_order=self.first_order,
                on_step=on_step if track else None,
                autograd=autograd,
            )
            logits = apply(fast, query_in)
            loss = F.cross_entropy(logits, qy)
            if step_weights is not None:
                loss = (torch.stack(weighted) * step_weights).sum()
            accuracy = (logits.argmax(-1) == qy).float().mean()
            return (loss, accuracy, torch.stack(recorded)) if record_steps else (loss, accuracy)

        out = self._run_tasks(task, support_x, support_y, query_x, query_y, batched=True)
        metrics = {"accuracy": out[1].mean()}
        if record_steps:
            for i, value in enumerate(out[2].mean(0).unbind()):
                metrics[f"query_loss_{i}"] = value
        return out[0].mean(), metrics
