"""Ordinary (non-episodic) training, with exact epoch / iteration / update counters.

Vocabulary, as chapter 1 defines it: an *iteration* processes one batch; an
*epoch* is one pass over all ``n_samples``; a *weight update* is one
``optimizer.step()``. With ``accumulate=k`` gradients of ``k`` batches are summed
before each update, so updates and iterations differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..common import check_positive_int, model_device
from ..data.dataset import to_float
from ..distributed import SINGLE, World
from ..evaluation import evaluate_classifier
from .loop import run_loop


def iterations_per_epoch(n_samples: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches in one pass over ``n_samples``: ``ceil(N / B)``, or ``floor(N / B)`` with
    ``drop_last``.

    >>> iterations_per_epoch(60_000, 100)
    600
    >>> iterations_per_epoch(1_000, 300), iterations_per_epoch(1_000, 300, drop_last=True)
    (4, 3)
    """
    n_samples = check_positive_int("n_samples", n_samples)
    batch_size = check_positive_int("batch_size", batch_size)
    if drop_last and batch_size > n_samples:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {n_samples} samples, so drop_last=True "
            f"would drop every batch; use a batch size ≤ {n_samples} or drop_last=False"
        )
    return n_samples // batch_size if drop_last else math.ceil(n_samples / batch_size)


def _label_range(y: torch.Tensor, loss_fn) -> tuple[int, int] | None:
    """The smallest and largest class label in ``y`` when ``loss_fn`` takes class indices
    (cross-entropy or NLL on integer labels ``(N,)``), else None; one host sync."""
    if loss_fn not in (F.cross_entropy, F.nll_loss) or y.dim() != 1:
        return None
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        return None
    labels = y[y != -100]  # both losses' default ignore_index: not a class
    if len(labels) == 0:
        return None
    low, high = torch.stack([labels.min(), labels.max()]).tolist()
    return low, high


def _check_classes(labels: dict, outputs: torch.Tensor) -> None:
    """Raise unless every label range of ``labels`` (by name) is a class of ``outputs``
    ``(B, n_classes)``, which would otherwise be an index error inside the loss."""
    if outputs.dim() != 2:
        return
    n_classes = outputs.shape[1]
    for name, (low, high) in labels.items():
        if low < 0 or high >= n_classes:
            raise ValueError(
                f"{name} holds class labels from {low} to {high}, but the model scores "
                f"{n_classes} classes (outputs of shape {tuple(outputs.shape)}): labels must be "
                f"0 … {n_classes - 1}. Relabel them, or give the model {high + 1} outputs"
            )


@dataclass
class History:
    """What :func:`fit` did, counted exactly, with per-iteration and per-epoch records.

    Per-iteration lists (index ``i`` is iteration ``i + 1``): ``loss`` (the batch's
    mean loss), ``time`` (seconds since the start, host clock), ``samples`` (samples
    seen so far). ``epochs`` holds one dict per completed epoch with keys
    ``epoch``, ``iterations``, ``updates``, ``train_loss``, ``time`` and, with validation data,
    ``val_loss`` and ``val_accuracy``.
    """

    n_samples: int
    batch_size: int
    drop_last: bool
    accumulate: int
    iterations_per_epoch: int
    samples_seen: int = 0
    iterations: int = 0
    updates: int = 0
    epochs_completed: int = 0
    loss: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)

    @property
    def epoch(self) -> float:
        """Passes over the data so far, fractional mid-epoch (iterations / iterations per epoch)."""
        return self.iterations / self.iterations_per_epoch

    def axis(self, x: str) -> list[float]:
        """Per-iteration x values: ``"iteration"``, ``"epoch"``, ``"time"`` or ``"samples"``."""
        if x == "iteration":
            return list(range(1, self.iterations + 1))
        if x == "epoch":
            return [(i + 1) / self.iterations_per_epoch for i in range(self.iterations)]
        if x == "time":
            return self.time
        if x == "samples":
            return self.samples
        raise ValueError(f"x must be 'iteration', 'epoch', 'time' or 'samples'; got {x!r}")

    def epoch_values(self, key: str) -> list:
        """One value per completed epoch, e.g. ``epoch_values("val_accuracy")``."""
        if self.epochs and key not in self.epochs[0]:
            raise KeyError(f"no per-epoch {key!r}; have {sorted(self.epochs[0])}")
        return [record[key] for record in self.epochs]


def fit(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    epochs: int | None = None,
    iterations: int | None = None,
    drop_last: bool = False,
    shuffle: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn=F.cross_entropy,
    accumulate: int = 1,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    device=None,
    progress: bool = True,
    desc: str = "training",
    checkpoint=None,
    world: World = SINGLE,
) -> History:
    """Train ``model`` on ``(x, y)`` with mini-batches and count what happened.

    Batch gradient descent is ``batch_size=len(x)``, stochastic gradient descent
    ``batch_size=1``, mini-batch gradient descent anything in between.

    Args:
        model: maps a batch ``(B, ...)`` to outputs that ``loss_fn`` compares with labels.
        x: inputs of shape ``(N, ...)``; uint8 images are scaled to ``[0, 1]`` per batch.
        y: targets of shape ``(N, ...)``.
        batch_size: samples per iteration ``B``.
        epochs: passes over the data; give this or ``iterations``.
        iterations: batches to process in all (may stop mid-epoch).
        drop_last: skip the last, smaller batch of each epoch.
        shuffle: a new order every epoch (from ``seed``), else the given order.
        optimizer: defaults to Adam with learning rate 1e-3.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        accumulate: batches per weight update; each batch's loss is divided by
            ``accumulate``, so an update averages their gradients.
        validation: ``(x_val, y_val)`` scored after every epoch.
        seed: seeds the shuffling and every random op in the model (dropout),
            without touching torch's global generator.
        device: where to train; ``None`` means where the model is.
        progress: show a progress bar (notebook or terminal).
        checkpoint: a :class:`~fslearn.Checkpoint` saved every ``checkpoint.every``
            epochs and at the end (the budget must be whole epochs); with
            ``resume``, training continues from the saved epoch and ends with the
            same weights as an uninterrupted run.
        world: the processes training together (:mod:`fslearn.distributed`): each
            takes its contiguous share of every batch, and the gradients are averaged before
            each update. With batch normalization in training mode each rank normalises over
            its share only, so the result is close to, not equal to, one process's.

    Returns:
        A :class:`History`.

    Raises:
        ValueError: with the default loss, labels ``y`` (or validation labels) outside the
            classes the model scores, at the first step.
        FloatingPointError: when the loss becomes NaN or infinite.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    accumulate = check_positive_int("accumulate", accumulate)
    if (epochs is None) == (iterations is None):
        raise ValueError(
            "give exactly one of epochs and iterations; "
            f"got epochs={epochs}, iterations={iterations}"
        )
    if len(x) == 0:
        raise ValueError("x is empty: there is nothing to train on")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length; got {len(x)} and {len(y)}")
    device = model_device(model) if device is None else torch.device(device)
    model.to(device)
    n_samples = len(x)
    per_epoch = iterations_per_epoch(n_samples, batch_size, drop_last)
    if iterations is None:
        total = check_positive_int("epochs", epochs) * per_epoch
    else:
        total = check_positive_int("iterations", iterations)
    if checkpoint is not None and total % per_epoch:
        raise ValueError(
            f"a checkpointed fit trains whole epochs; iterations={total} is not a multiple of the "
            f"{per_epoch} iterations per epoch: pass epochs= instead"
        )
    if world.size > 1:
        last = n_samples % batch_size
        world.share(batch_size, "batch_size")
        if last and not drop_last:
            world.share(last, f"the last batch of each epoch ({n_samples} % {batch_size})")
    x, y = x.to(device), y.to(device)
    # Checked against the model's class count at the first step, which reveals it.
    labels = {"y": _label_range(y, loss_fn)}
    if validation is not None:
        labels["y_val"] = _label_range(validation[1], loss_fn)
    labels = {name: span for name, span in labels.items() if span is not None}
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator(device=device).manual_seed(seed)
    history = History(n_samples, batch_size, drop_last, accumulate, per_epoch)
    if checkpoint is not None:
        checkpoint.track(model=model, optimizer=optimizer, shuffle=generator)
    batches: list[torch.Tensor] = []

    def step(i: int):
        position = i % per_epoch
        if position == 0:  # a new epoch, a new order (a resumed fit starts at an epoch's start)
            order = (
                torch.randperm(n_samples, generator=generator, device=device)
                if shuffle
                else torch.arange(n_samples, device=device)
            )
            batches[:] = order.split(batch_size)
        index = batches[position]
        stats = world.running_stats(model)
        mine = index[world.share(index.shape[0], "batch_size")]
        outputs = model(to_float(x[mine]))
        if labels:
            _check_classes(labels, outputs)
            labels.clear()  # once: the class count does not change
        loss = loss_fn(outputs, y[mine])
        (loss / accumulate).backward()
        world.sync_running_stats(stats, "batch")
        history.samples_seen += index.shape[0]
        history.samples.append(history.samples_seen)
        if (position + 1) % accumulate == 0 or position == per_epoch - 1 or i + 1 == total:
            world.average_gradients(model.parameters())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            history.updates += 1
        return loss, {}

    def after_flush(done: int, values: list[float], clock, bar) -> None:
        if done % per_epoch:
            return  # a budget in iterations may end mid-epoch
        history.epochs_completed += 1
        record = {
            "epoch": history.epochs_completed,
            "iterations": done,
            "updates": history.updates,
            "train_loss": sum(history.loss[-per_epoch:]) / per_epoch,
        }
        if validation is not None:
            metrics = evaluate_classifier(model, *validation, loss_fn=loss_fn)
            record.update(val_loss=metrics["loss"], val_accuracy=metrics["accuracy"])
        record["time"] = clock()
        history.epochs.append(record)
        bar.set_postfix(
            {k: round(v, 4) for k, v in record.items() if k.endswith(("loss", "accuracy"))}
        )

    def describe(at: int) -> str:
        lr = optimizer.param_groups[0].get("lr")
        return f"iteration {at} (epoch {at / per_epoch:.2f}, batch_size={batch_size}, lr={lr})"

    optimizer.zero_grad(set_to_none=True)
    run_loop(
        model,
        history,
        step,
        total=total,
        count="iterations",
        seed=seed,
        progress=progress,
        desc=desc,
        checkpoint=checkpoint,
        # Losses stay on the device until the epoch ends: one host sync per epoch.
        sync_every=per_epoch,
        flush_due=lambda done: done % per_epoch == 0,
        save_due=lambda done: done % per_epoch == 0 and (done // per_epoch) % checkpoint.every == 0,
        after_flush=after_flush,
        describe=describe,
        world=world,
    )
    return history
