"""What a task handed to a learner must look like, checked where it enters.

Every learner's ``forward`` and :func:`~fslearn.evaluate` take tasks that anyone can
build by hand, so a wrong shape or label would otherwise surface as an ``IndexError``
or a matrix-size error from deep inside torch, or, worse, as a plausible accuracy. The
check costs one host synchronisation, which the learners need anyway to learn ``n_way``.
"""

from __future__ import annotations

import torch


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def check_task(
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    query_x: torch.Tensor,
    *,
    batched: bool = False,
) -> int:
    """The number of classes of a task, after checking that it is one.

    Args:
        support_x: the support items, ``(n_support, *item)``: images ``(C, H, W)`` or
            embeddings ``(D,)``; with ``batched``, ``(T, n_support, *item)`` for ``T`` tasks.
        support_y: integer labels ``(n_support,)`` (or ``(T, n_support)``) in which every
            class ``0 … n_way − 1`` occurs.
        query_x: the query items, ``(n_query, *item)`` (or ``(T, n_query, *item)``).

    Returns:
        ``n_way``, the same for every task of a batch.

    Raises:
        ValueError: naming the shapes or labels that make it no task, and the fix.
    """
    lead = 2 if batched else 1
    expected = "(T, n_support, …)" if batched else "(n_support, …)"
    if support_x.dim() <= lead:
        raise ValueError(f"support_x must have shape {expected}; got {_shape(support_x)}")
    if _shape(support_y) != _shape(support_x)[:lead]:
        raise ValueError(
            f"support_y must hold one label per support item, shape {_shape(support_x)[:lead]}; "
            f"got {_shape(support_y)} for support_x of shape {_shape(support_x)}"
        )
    _check_integer("support_y", support_y, "class labels 0 … n_way − 1")
    if support_y.shape[-1] == 0:
        raise ValueError(f"the support set is empty: support_x has shape {_shape(support_x)}")
    item = _shape(support_x)[lead:]
    if query_x.dim() != support_x.dim() or _shape(query_x)[lead:] != item:
        raise ValueError(
            f"query_x must hold items like the support items, shape "
            f"({'T, ' if batched else ''}n_query, {', '.join(map(str, item))}); "
            f"got {_shape(query_x)} for support_x of shape {_shape(support_x)}"
        )
    if batched and query_x.shape[0] != support_x.shape[0]:
        raise ValueError(
            f"support_x holds {support_x.shape[0]} tasks but query_x {query_x.shape[0]}: "
            f"{_shape(support_x)} and {_shape(query_x)}"
        )
    ordered = support_y.sort(-1).values
    distinct = (ordered[..., 1:] != ordered[..., :-1]).sum(-1) + 1
    low, high, fewest = torch.stack([support_y.min(), support_y.max(), distinct.min()]).tolist()
    if low < 0 or fewest != high + 1:
        raise ValueError(
            f"support labels must be 0 … n_way − 1 with every class present; got labels from {low} "
            f"to {high} with {fewest} distinct (in the task that has fewest). Relabel the "
            "classes 0, 1, … in order, as fsl.EpisodeSampler does"
        )
    return high + 1


def _check_integer(name: str, labels: torch.Tensor, what: str = "class labels") -> None:
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"{name} must hold integer {what}; got dtype {labels.dtype} (convert with "
            f"{name}.long())"
        )


def check_task_batch(
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    query_x: torch.Tensor,
    query_y: torch.Tensor,
) -> None:
    """Check that four tensors are a batch of ``T`` tasks with query labels, from their shapes
    and dtypes alone: no host synchronisation, so a meta-training step can afford it.

    Args:
        support_x: ``(T, n_support, *item)``; support_y: ``(T, n_support)``.
        query_x: ``(T, n_query, *item)``; query_y: ``(T, n_query)``.

    Raises:
        ValueError: naming the shapes that disagree (task counts, label counts, items) or
            labels that are not integers.
    """
    shapes = (
        f"support_x {_shape(support_x)}, support_y {_shape(support_y)}, query_x "
        f"{_shape(query_x)}, query_y {_shape(query_y)}"
    )
    tasks = {t.shape[0] if t.dim() else None for t in (support_x, support_y, query_x, query_y)}
    if len(tasks) != 1:
        raise ValueError(
            f"support and query must hold the same number of tasks T in their first dimension; "
            f"got {shapes}"
        )
    for name, x, y in (("support", support_x, support_y), ("query", query_x, query_y)):
        if y.dim() != 2 or x.dim() < 3 or _shape(y) != _shape(x)[:2]:
            raise ValueError(
                f"{name}_y must hold one label per {name} item, shape (T, n_{name}) = "
                f"{_shape(x)[:2]}; got {shapes}"
            )
        _check_integer(f"{name}_y", y)
    if _shape(query_x)[2:] != _shape(support_x)[2:]:
        raise ValueError(f"query items must have the shape of the support items; got {shapes}")
