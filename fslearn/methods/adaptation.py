"""Learners that adapt to each task by gradient steps on its support set.

MAML and the fine-tuning baselines share the machinery of adaptation: a classifier
``model`` whose parameters are held as a dict, applied with
:func:`torch.func.functional_call`, and adapted to a task by a few steps of plain gradient
descent on the support loss, each step one :func:`torch.func.grad`. What adapts at test time
(``test_adapt``: every parameter, or the head alone) and how batch norm normalises the test
images (``test_bn``, :mod:`fslearn.methods.batch_norm_modes`) are choices of every one of them.
Batches of tasks (a leading ``T`` dimension) run all at once under :func:`torch.func.vmap`
(``"vmap"``: a few large kernels, what a GPU wants) or one after another with plain
autograd and torch's own batch-norm kernel (``"loop"``: faster on a CPU); ``"auto"`` picks
by device (no running statistics are updated either way: ``vmap`` cannot update them).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..common import check_positive_int
from ..deprecation import warn_renamed
from ..evaluation import confidence_interval
from ..models.task_batch_norm import native_batch_norm
from .batch_norm_modes import check_test_bn_for, normalising
from .strategies import autograd_gradient, check_strategy, resolve_strategy, stack_tasks
from .task_inputs import check_gradient_task, check_head_and_body, check_test_adapt, task_inputs


class GradientLearner(nn.Module):
    """A classifier adapted to each task by ``steps`` gradient steps on its support set.

    The shared call shape ``learner(support_x, support_y, query_x) -> logits``
    takes one task (``support_x`` of shape ``(n_way * n_shot, C, H, W)``, logits
    ``(n_way * n_query, n_way)``) or ``T`` tasks stacked on a leading dimension
    (logits ``(T, n_way * n_query, n_way)``). Adaptation at test time needs no
    second-order graph and runs even under ``torch.no_grad()``.

    Args:
        model: maps ``(B, C, H, W)`` images to ``(B, n_way)`` logits.
        inner_lr: the step size α of the inner gradient descent.
        test_steps: inner steps when the learner is called.
        test_adapt: what adapts when the learner is called: ``"whole"`` (every parameter) or
            ``"head"`` (``model.head`` alone, on the features of the fixed ``model.backbone``,
            computed once per task).
        test_bn: how batch norm normalises the test images
            (:mod:`fslearn.methods.batch_norm_modes`): ``"transductive"`` (the batch in hand:
            the support set, then the queries together), ``"running"`` (running statistics)
            or ``"support"`` (the support set's statistics, for the queries too).
        strategy: how a batch of tasks runs: ``"loop"``, ``"vmap"`` or ``"auto"``
            (``"loop"`` on a CPU, ``"vmap"`` elsewhere); the same numbers either way.

    ``test_adapt`` and ``test_bn`` can be changed on a trained learner (``learner.test_bn =
    "support"``); they are checked either way.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        inner_lr: float,
        test_steps: int,
        test_adapt: str = "whole",
        test_bn: str = "transductive",
        strategy: str = "auto",
    ):
        super().__init__()
        if not inner_lr > 0:
            raise ValueError(f"inner_lr must be > 0; got {inner_lr}")
        if test_steps != 0:
            test_steps = check_positive_int("test_steps", test_steps)
        self.model = model
        self.test_adapt = test_adapt
        self.test_bn = test_bn
        self.inner_lr = float(inner_lr)
        self.test_steps = test_steps
        self.strategy = check_strategy(strategy)

    @property
    def test_adapt(self) -> str:
        """``"whole"`` or ``"head"``: what adapts to a task when the learner is called."""
        return self._test_adapt

    @test_adapt.setter
    def test_adapt(self, value: str) -> None:
        if check_test_adapt(value) == "head":
            check_head_and_body(self.model)
        self._test_adapt = value

    @property
    def test_bn(self) -> str:
        """``"transductive"``, ``"running"`` or ``"support"``: the batch-norm statistics of
        test time (:mod:`fslearn.methods.batch_norm_modes`)."""
        return self._test_bn

    @test_bn.setter
    def test_bn(self, value: str) -> None:
        self._test_bn = check_test_bn_for(self.model, value)

    def strategy_for(self, device: torch.device | str) -> str:
        """``"loop"`` or ``"vmap"``: how this learner runs tasks whose tensors are on
        ``device``."""
        return resolve_strategy(self.strategy, device)

    def _run_tasks(self, task, *tensors: torch.Tensor, batched: bool):
        """``task(*one_task, autograd=…)`` over the leading task dimension of ``tensors`` when
        ``batched`` (else on them as one task), by this learner's strategy."""
        if self.strategy_for(tensors[0].device) == "vmap":
            run = vmap(lambda *one: task(*one, autograd=False))
            return run(*tensors) if batched else task(*tensors, autograd=False)
        with native_batch_norm():
            if not batched:
                return task(*tensors, autograd=True)
            return stack_tasks([task(*one, autograd=True) for one in zip(*tensors, strict=True)])

    def _run_test_tasks(self, task, support_x: torch.Tensor, *tensors, batched: bool):
        """:meth:`_run_tasks` with batch norm normalising as ``test_bn`` says."""
        with normalising(self.model, self.test_bn, support_x.shape[1 if batched else 0]):
            return self._run_tasks(task, support_x, *tensors, batched=batched)

    def params(self) -> dict[str, torch.Tensor]:
        """The model's parameters by name: the starting point θ of every adaptation."""
        return dict(self.model.named_parameters())

    def _inner_loop(
        self,
        params,
        support_x,
        support_y,
        query_x,
        steps: int,
        *,
        head_only: bool,
        first_order: bool,
        on_step=None,
        autograd: bool = False,
        joint: bool = False,
    ):
        """Adapt ``params`` to one task; returns ``(apply to the queries, fast params, query
        input)``.

        ``head_only`` and ``joint`` as in :func:`~fslearn.methods.task_inputs.task_inputs`.
        ``on_step(i, apply, fast, query_input)`` is called before the first step and after
        every step (``i = 0 … steps``), for per-step query losses. Each step's gradient is a
        :func:`torch.func.grad` (which ``vmap`` needs), or with ``autograd`` a plain
        ``torch.autograd.grad`` (cheaper, one task at a time).
        """
        fast, apply, apply_query, support_in, query_in = task_inputs(
            self.model, params, support_x, query_x, head_only=head_only, joint=joint
        )

        def support_loss(p):
            return F.cross_entropy(apply(p, support_in), support_y)

        gradient = (
            autograd_gradient(support_loss, not first_order) if autograd else grad(support_loss)
        )
        for step in range(steps):
            if on_step is not None:
                on_step(step, apply_query, fast, query_in)
            grads = gradient(fast)
            # First-order MAML: the update's own dependence on θ is dropped, so
            # the meta-gradient flows only through the final query loss.
            fast = {
                name: value - self.inner_lr * (grads[name].detach() if first_order else grads[name])
                for name, value in fast.items()
            }
        if on_step is not None:
            on_step(steps, apply_query, fast, query_in)
        return apply_query, fast, query_in

    def adapt(
        self, support_x: torch.Tensor, support_y: torch.Tensor, steps: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Parameters adapted to one task by ``steps`` (default ``test_steps``) gradient steps,
        as ``test_adapt`` and ``test_bn`` say.

        Args:
            support_x: ``(n_way * n_shot, C, H, W)``.
            support_y: ``(n_way * n_shot,)`` labels in ``0 … n_way − 1``.

        Returns:
            A dict with every parameter of the model (detached), for
            :meth:`predict` ``(params, query_x)``.
        """
        steps = self.test_steps if steps is None else steps
        if check_gradient_task(self.model, support_x, support_y):
            raise ValueError(
                f"adapt takes one task; got support_x of shape {tuple(support_x.shape)}"
            )
        params = {name: value.detach() for name, value in self.params().items()}
        head_only = self.test_adapt == "head"
        options = dict(head_only=head_only, first_order=True)

        def task(sx, sy, *, autograd):
            return self._inner_loop(params, sx, sy, None, steps, **options, autograd=autograd)[1]

        fast = self._run_test_tasks(task, support_x, support_y, batched=False)
        if head_only:
            fast = {**params, **{f"head.{name}": value for name, value in fast.items()}}
        return {name: value.detach() for name, value in fast.items()}

    def predict(
        self,
        params: dict[str, torch.Tensor],
        query_x: torch.Tensor,
        support_x: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(n_query, n_way)`` of ``query_x`` ``(n_query, C, H, W)`` under ``params``
        from :meth:`adapt`, with batch norm as ``test_bn`` says: ``"support"`` needs the support
        images ``support_x`` ``(n_support, C, H, W)`` for its statistics.

        The arguments come in :func:`torch.func.functional_call`'s order, parameters first.
        The order before fslearn 0.2, ``predict(query_x, params)``, still works, with a warning.
        """
        if isinstance(params, torch.Tensor) and isinstance(query_x, dict):
            warn_renamed("predict(query_x, params)", "predict(params, query_x)")
            params, query_x = query_x, params
        if not isinstance(params, dict):
            raise TypeError(
                f"predict takes the parameters from adapt() first, a dict; got a "
                f"{type(params).__name__}: call predict(params, query_x)"
            )
        if self.test_bn == "support" and support_x is None:
            raise ValueError(
                "test_bn='support' normalises the queries with the support set's statistics: "
                "pass the support images, predict(params, query_x, support_x=support_x)"
            )
        joint = self.test_bn == "support"
        n_support = len(support_x) if joint else 0
        inputs = torch.cat([support_x, query_x]) if joint else query_x
        with normalising(self.model, self.test_bn, n_support):
            return functional_call(self.model, params, (inputs,))[n_support:]

    def forward(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Adapt on the support set, then classify the queries: ``(…, n_way * n_query, n_way)``
        logits."""
        return self._query_logits(support_x, support_y, query_x, steps, every_step=False)[-1]

    def step_logits(
        self, support_x, support_y, query_x, steps: int | None = None
    ) -> list[torch.Tensor]:
        """Query logits after 0, 1, …, ``steps`` adaptation steps (``steps + 1`` tensors)."""
        return self._query_logits(support_x, support_y, query_x, steps, every_step=True)

    def _query_logits(
        self, support_x, support_y, query_x, steps, *, every_step: bool
    ) -> list[torch.Tensor]:
        steps = self.test_steps if steps is None else steps
        batched = check_gradient_task(self.model, support_x, support_y, query_x)
        params = {name: value.detach() for name, value in self.params().items()}

        def task(sx, sy, qx, *, autograd):
            logits = []

            def record(_, apply, fast, query_in):
                logits.append(apply(fast, query_in).detach())

            apply, fast, query_in = self._inner_loop(
                params,
                sx,
                sy,
                qx,
                steps,
                head_only=self.test_adapt == "head",
                first_order=True,
                on_step=record if every_step else None,
                autograd=autograd,
                joint=self.test_bn == "support",
            )
            if not every_step:
                logits.append(apply(fast, query_in).detach())
            return torch.stack(logits)

        out = self._run_test_tasks(task, support_x, support_y, query_x, batched=batched)
        if not torch.isfinite(out).all():
            raise FloatingPointError(
                f"adaptation diverged: query logits are not finite after {steps} steps "
                f"with inner_lr={self.inner_lr}; "
                "lower the learning rate, or check the images for NaN"
            )
        return list(out.unbind(1 if batched else 0))

    @torch.no_grad()
    def adaptation_curve(self, episodes, steps: int | None = None, *, batch_size: int = 50):
        """Query accuracy ± 95% CI after 0, 1, …, ``steps`` adaptation steps.

        Args:
            episodes: an :class:`~fslearn.EpisodeSet` (tasks are adapted ``batch_size`` at a time).

        Returns:
            A list of ``steps + 1`` :class:`~fslearn.Accuracy`.
        """
        steps = self.test_steps if steps is None else steps
        batch_size = check_positive_int("batch_size", batch_size)
        was_training = self.training
        self.eval()
        per_step = []
        try:
            for start in range(0, len(episodes), batch_size):
                batch = episodes.batch(start, min(start + batch_size, len(episodes)))
                logits = self.step_logits(batch.support_x, batch.support_y, batch.query_x, steps)
                per_step.append(
                    torch.stack(
                        [(lg.argmax(-1) == batch.query_y).float().mean(-1) for lg in logits]
                    )
                )
        finally:
            self.train(was_training)
        accuracies = torch.cat(per_step, dim=1)  # (steps + 1, n_episodes)
        return [replace(confidence_interval(row), test_bn=self.test_bn) for row in accuracies]
