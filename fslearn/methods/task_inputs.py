"""One task's adaptation, set up: which parameters adapt (every one, or the head alone) and
what the network sees (the support images, then the queries, apart or in one batch)."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..sampling.tasks import check_task

#: What adapts to a task at test time: every parameter, or the head alone.
TEST_ADAPT = ("whole", "head")


def check_test_adapt(test_adapt) -> str:
    """``test_adapt``, or a ``ValueError`` naming it and the accepted values."""
    if not isinstance(test_adapt, str) or test_adapt not in TEST_ADAPT:
        raise ValueError(
            f"test_adapt must be 'whole' (every parameter adapts) or 'head' (the head alone, on "
            f"the fixed backbone's features); got {test_adapt!r}"
        )
    return test_adapt


def check_head_and_body(model: nn.Module) -> None:
    """Raise unless ``model`` has a ``backbone`` and a ``head`` (as :class:`~fslearn.Classifier`
    does)."""
    if not (
        isinstance(getattr(model, "backbone", None), nn.Module)
        and isinstance(getattr(model, "head", None), nn.Module)
    ):
        raise ValueError(
            "adapting only the head needs a model with .backbone and .head modules; "
            f"got {type(model).__name__}. "
            "Wrap the network as fsl.Classifier(backbone, image_shape, n_way)"
        )


def _subdict(params: dict, prefix: str) -> dict:
    return {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}


def check_gradient_task(
    model: nn.Module,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    query_x: torch.Tensor | None = None,
) -> bool:
    """Check one task (``support_x`` of shape ``(n_support, C, H, W)``) or a batch of them
    (``(T, n_support, C, H, W)``) for ``model``'s head; returns whether it is a batch."""
    if support_x.dim() not in (4, 5):
        raise ValueError(
            "support_x must have shape (n_way * n_shot, C, H, W), or (T, n_way * n_shot, C, H, "
            f"W) for T tasks; got {tuple(support_x.shape)}"
        )
    query = support_x if query_x is None else query_x
    task_n_way = check_task(support_x, support_y, query, batched=support_x.dim() == 5)
    n_way = getattr(getattr(model, "head", None), "out_features", None)
    if n_way is not None and task_n_way > n_way:
        raise ValueError(
            f"the support labels go up to {task_n_way - 1} "
            f"but the model's head has {n_way} outputs; "
            f"build the model with n_way = {task_n_way} outputs "
            f"or sample {n_way}-way episodes"
        )
    return support_x.dim() == 5


def task_inputs(
    model: nn.Module, params: dict, support_x, query_x, *, head_only: bool, joint: bool
):
    """What the inner loop differentiates: ``(fast params, apply, apply to the queries,
    support input, query input)``, for one task.

    ``head_only``: the fast params are the head's, the inputs the backbone's features under
    ``params`` (computed once). ``joint``: the queries go through the network in one batch
    after the support images (``test_bn="support"``, whose batch-norm layers take the support
    rows' statistics).
    """
    joint = joint and query_x is not None
    n_support = support_x.shape[0]
    if not head_only:

        def apply(p, x):
            return functional_call(model, p, (x,))

        def apply_query(p, x):
            return apply(p, torch.cat([support_x, x]))[n_support:] if joint else apply(p, x)

        return params, apply, apply_query, support_x, query_x
    body = _subdict(params, "backbone.")

    def features(x):
        return None if x is None else functional_call(model.backbone, body, (x,))

    def head(p, x):
        return functional_call(model.head, p, (x,))

    if joint:
        both = features(torch.cat([support_x, query_x]))
        support_in, query_in = both[:n_support], both[n_support:]
    else:
        support_in, query_in = features(support_x), features(query_x)
    return _subdict(params, "head."), head, head, support_in, query_in
