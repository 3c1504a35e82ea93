"""The loop core that :func:`~fslearn.fit` and :func:`~fslearn.train_steps` share.

Both loops call one function, :func:`run_loop`, with a ``step(i)`` that does the
method's work for step (iteration) ``i``. The core does the rest, identically for
both: seeding torch's generator for the random ops inside the model without
touching the caller's, restoring a checkpoint and saving one, host clocks,
progress bar, and collecting losses on the device and checking them for NaN once
per ``sync_every`` steps. It holds no global state: everything it touches comes
in as an argument, so that the same loop runs in several processes: given a
:class:`~fslearn.distributed.World`, the recorded losses are the means over the
ranks, only rank 0 shows progress and saves checkpoints, and every rank restores them.
"""

from __future__ import annotations

import math
import time

import torch

from ..common import progress_bar
from ..distributed import SINGLE, World


def _cuda_devices(model: torch.nn.Module) -> list[torch.device]:
    """The model's CUDA device, whose generator :func:`torch.random.fork_rng` must also fork."""
    return [p.device for p in model.parameters() if p.device.type == "cuda"][:1]


def run_loop(
    model: torch.nn.Module,
    history,
    step,
    *,
    total: int,
    count: str,
    seed: int,
    progress: bool,
    desc: str,
    checkpoint=None,
    sync_every: int,
    flush_due=lambda done: False,
    save_due=lambda done: False,
    after_flush=None,
    describe=lambda at: f"step {at}",
    loss_limit: tuple[float, str] | None = None,
    advice: str = "lower the learning rate, check the inputs for NaN, or normalise them",
    world: World = SINGLE,
) -> None:
    """Run ``step(i)`` for ``i`` from the history's count to ``total - 1``, updating ``history``.

    Args:
        model: put in train mode before every step; its device decides which
            generators are forked.
        history: has ``loss`` and ``time`` lists, the counter ``count`` and
            optionally a ``metrics`` dict of lists; updated in place.
        step: ``step(i) -> (loss, {name: tensor})`` for step index ``i`` (from 0):
            forward, backward and optimizer step; the loss is detached here.
        total: steps in all; ``count``: the history's counter, ``"steps"`` or
            ``"iterations"``, set to ``i + 1`` after step ``i``.
        seed: seeds torch's generator (forked: the caller's is left as it was).
        checkpoint: a :class:`~fslearn.Checkpoint` restored before the first step
            and saved after every step for which ``save_due(done)`` holds, and after
            the last; its tracked objects were given by the caller.
        sync_every: copy losses to the host (and check them) at least this often.
        flush_due: ``flush_due(done)`` — also copy after this step (e.g. an epoch's end).
        after_flush: ``after_flush(done, values, clock, bar)`` after each copy, with the
            copied losses, ``clock()`` (seconds since the start) and the progress bar:
            epoch records, validation, postfixes.
        describe: ``describe(at)`` names step ``at`` in the NaN error message.
        loss_limit: ``(limit, why)``: a finite loss above ``limit`` also stops the run,
            for losses whose size says the training diverged (``why`` says so).
        advice: what the error message tells the user to do.
        world: the processes that run this loop together; ``step`` averages their gradients,
            the loop their losses and metrics (so every rank stops at the same NaN).

    Raises:
        FloatingPointError: a loss was NaN or infinite, or above ``loss_limit``; the
            message names the step. Losses are also copied after the first step, so a run
            that diverges at once stops at once rather than after ``sync_every`` steps.
    """
    pending_loss: list[torch.Tensor] = []
    pending_metrics: dict[str, list[torch.Tensor]] = {}

    def flush(done: int) -> list[float]:
        values = torch.stack(pending_loss).tolist()
        limit, why = loss_limit or (math.inf, "")
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v) or v > limit), None)
        if bad is not None:
            value = values[bad]
            above = f", above {limit:.4g} ({why})" if math.isfinite(value) else ""
            raise FloatingPointError(
                f"the loss became {value:.4g} at {describe(done - len(values) + bad + 1)}"
                f"{above}; {advice}"
            )
        history.loss.extend(values)
        for name, tensors in pending_metrics.items():  # history.metrics: restore replaces it
            history.metrics.setdefault(name, []).extend(torch.stack(tensors).tolist())
        pending_loss.clear()
        pending_metrics.clear()
        return values

    with (
        torch.random.fork_rng(devices=_cuda_devices(model)),
        progress_bar(total, desc, progress and world.is_main) as bar,
    ):
        torch.manual_seed(seed)
        if checkpoint is not None:
            checkpoint.restore(history, count=count, budget=total)
        first = getattr(history, count)
        bar.update(first)
        start = time.perf_counter() - (history.time[-1] if history.time else 0.0)
        for i in range(first, total):
            model.train()
            loss, step_metrics = step(i)
            if world.size > 1:  # one small all-reduce for the loss and every metric
                names = list(step_metrics)
                packed = torch.stack(
                    [loss.detach().float(), *(step_metrics[n].detach().float() for n in names)]
                )
                loss, *values = world.mean(packed)
                step_metrics = dict(zip(names, values, strict=True))
            done = i + 1
            setattr(history, count, done)
            history.time.append(time.perf_counter() - start)
            pending_loss.append(loss.detach())
            for name, value in step_metrics.items():
                pending_metrics.setdefault(name, []).append(value.detach().float())
            bar.update(1)
            last = done == total
            save = checkpoint is not None and (last or save_due(done))
            early = done == first + 1
            if early or last or save or len(pending_loss) >= sync_every or flush_due(done):
                values = flush(done)
                bar.set_postfix(loss=round(values[-1], 4))
                if after_flush is not None:
                    after_flush(done, values, lambda: time.perf_counter() - start, bar)
            if save and world.is_main:
                checkpoint.save(history)
