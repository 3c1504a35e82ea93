"""MAML's strategies on one device, against a per-task loop written with ``higher``.

Every implementation does the same work per meta-iteration: sample a meta-batch of Omniglot
5-way 1-shot 15-query tasks on the device (synthetic images of Omniglot's shape, the same
tasks for every implementation), meta-loss, backward, Adam step, on Conv4-64 with per-task
batch statistics. The implementations:

* ``fsl.MAML`` with ``strategy="loop"`` (a per-task loop with plain autograd and torch's
  batch-norm kernel, what ``"auto"`` picks on a CPU) and with ``strategy="vmap"`` (every task
  at once under ``torch.func.vmap``, what ``"auto"`` picks on a GPU);
* the per-task loop most MAML code runs, written with the ``higher`` package and torch's
  ``nn.BatchNorm2d``, when ``higher`` is installed (``pip install "fslearn[bench]"``).

The timings are interleaved: round after round, one meta-iteration of each implementation,
so that a machine that slows down or speeds up during the run affects every implementation
alike; each row reports the median over the rounds.
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from torch import nn

from ..common import check_positive_int, progress_bar
from ..methods.maml import MAML, maml_classifier
from ..models.task_batch_norm import TaskBatchNorm2d
from ..sampling.episodes import EpisodeSampler
from .maml import MAML_SETTINGS, N_QUERY, N_SHOT, N_WAY, _synthetic
from .timing import seconds_per_call

LOOP, VMAP, HIGHER = "fsl.MAML loop", "fsl.MAML vmap", "higher + nn.BatchNorm2d"
#: The columns of :func:`maml_strategy_speed`'s table: ``(key, header, format)``.
STRATEGY_COLUMNS = [
    ("meta_batch", "meta-batch", "{}"),
    ("inner_steps", "steps", "{}"),
    ("order", "order", "{}"),
    ("implementation", "implementation", "{}"),
    ("ms_per_iteration", "ms/it (median)", "{:.0f}"),
    ("vs_higher", "× higher", "{:.2f}"),
]


def higher_available() -> bool:
    """Whether the optional ``higher`` package imports."""
    try:
        import higher  # noqa: F401
    except ImportError:
        return False
    return True


def _with_torch_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` with every :class:`~fslearn.TaskBatchNorm2d` replaced by torch's own
    ``nn.BatchNorm2d(track_running_stats=False)``, weights kept."""
    for name, child in model.named_children():
        if isinstance(child, TaskBatchNorm2d):
            native = nn.BatchNorm2d(child.num_features, eps=child.eps, track_running_stats=False)
            native.load_state_dict(child.state_dict())
            setattr(model, name, native.to(child.weight.device, child.weight.dtype))
        else:
            _with_torch_batch_norm(child)
    return model


def _loss_backward(implementation: str, model: nn.Module, steps: int, first_order: bool):
    """``tasks → None``: the meta-loss of a batch of tasks, back-propagated into ``model``."""
    inner_lr = MAML_SETTINGS["omniglot-1"]["inner_lr"]
    if implementation != HIGHER:
        strategy = "loop" if implementation == LOOP else "vmap"
        learner = MAML(
            model, inner_lr=inner_lr, inner_steps=steps, first_order=first_order, strategy=strategy
        )

        def run(tasks):
            learner.meta_loss(tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y)[
                0
            ].backward()

        return run
    import higher

    inner_optimizer = torch.optim.SGD(model.parameters(), lr=inner_lr)
    # First order: the inner gradients are constants, as FOMAML has them.
    callback = (lambda grads: [g.detach() for g in grads]) if first_order else None

    def run(tasks):
        n_tasks = tasks.support_x.shape[0]
        for t in range(n_tasks):
            with higher.innerloop_ctx(model, inner_optimizer, copy_initial_weights=False) as (
                fast,
                optimizer,
            ):
                for _ in range(steps):
                    loss = F.cross_entropy(fast(tasks.support_x[t]), tasks.support_y[t])
                    optimizer.step(loss, grad_callback=callback)
                query_loss = F.cross_entropy(fast(tasks.query_x[t]), tasks.query_y[t])
                (query_loss / n_tasks).backward()

    return run


def _meta_iteration(implementation: str, dataset, meta_batch: int, steps: int, first_order: bool):
    spec = MAML_SETTINGS["omniglot-1"]
    model = maml_classifier(N_WAY, spec["image_shape"], spec["hidden_channels"], seed=0)
    model = model.to(dataset.device)
    if implementation == HIGHER:
        model = _with_torch_batch_norm(model)
    sampler = EpisodeSampler(dataset, N_WAY, N_SHOT, N_QUERY, seed=0, rotate=spec["rotate"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_backward = _loss_backward(implementation, model, steps, first_order)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_backward(sampler.sample_tasks(meta_batch))
        optimizer.step()

    return step


def maml_strategy_speed(
    device="cpu",
    *,
    meta_batches=(4, 16),
    inner_steps=(1, 5),
    orders=("second", "first"),
    rounds: int = 5,
    progress: bool = False,
) -> list[dict]:
    """Milliseconds per MAML meta-iteration for each strategy (and ``higher``), interleaved.

    Args:
        device: where the tasks, the model and the computation live.
        meta_batches: tasks per meta-iteration.
        inner_steps: inner steps per task.
        orders: ``"second"`` (MAML) and/or ``"first"`` (FOMAML).
        rounds: timed rounds, each one meta-iteration of every implementation, after one
            untimed warm-up round.

    Returns:
        A list with a row per setting and implementation, each a dict with ``meta_batch``,
        ``inner_steps``, ``order``, ``implementation``, ``ms_per_iteration`` (the median over
        the rounds) and ``vs_higher``, the row's time over ``higher``'s in the same setting
        (``None`` without ``higher``).
    """
    device = torch.device(device)
    rounds = check_positive_int("rounds", rounds)
    unknown = [order for order in orders if order not in ("second", "first")]
    if unknown or not orders:
        raise ValueError(f"orders must be 'second' and/or 'first'; got {list(orders)}")
    implementations = [LOOP, VMAP] + [HIGHER] * higher_available()
    dataset = _synthetic(MAML_SETTINGS["omniglot-1"], device)
    settings = [(b, s, o) for b in meta_batches for s in inner_steps for o in orders]
    rows, bar = [], progress_bar(len(settings), "MAML strategies", progress)
    for meta_batch, steps, order in settings:
        meta_batch, steps = check_positive_int("meta_batch", meta_batch), int(steps)
        run = {
            name: _meta_iteration(name, dataset, meta_batch, steps, order == "first")
            for name in implementations
        }
        seconds = {name: [] for name in implementations}
        for timed in [False] + [True] * rounds:
            for name, step in run.items():
                elapsed = seconds_per_call(step, device, 1)
                if timed:
                    seconds[name].append(elapsed)
        median = {name: statistics.median(times) for name, times in seconds.items()}
        for name in implementations:
            rows.append(
                dict(
                    meta_batch=meta_batch,
                    inner_steps=steps,
                    order=order,
                    implementation=name,
                    ms_per_iteration=round(1e3 * median[name], 2),
                    vs_higher=round(median[name] / median[HIGHER], 3) if HIGHER in median else None,
                )
            )
        bar.update()
    bar.close()
    return rows
