"""Episodic training: a loop over steps, each drawing its own episode (or pairs, or triplets).

Few-shot methods differ in what one training step draws (an episode, a batch of
pairs, a P×K batch for triplets, a meta-batch of tasks) and agree on the rest: a
loss, an optimizer step, a learning-rate schedule, periodic validation on fixed
episodes, counters and a progress bar. :func:`train_steps` is that rest; the
method supplies ``step_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..common import check_positive_int
from ..distributed import SINGLE, World
from .loop import run_loop


@dataclass
class StepHistory:
    """What :func:`train_steps` did.

    Per-step lists (index ``i`` is step ``i + 1``): ``loss``, ``time`` (seconds since
    the start, host clock) and, in ``metrics``, whatever else ``step_loss`` returned.
    ``validation`` holds one dict per validation: ``step``, ``episodes``, ``accuracy``,
    ``ci95``, ``time``.
    """

    episodes_per_step: int
    steps_per_epoch: int | None
    steps: int = 0
    loss: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    validation: list[dict] = field(default_factory=list)

    @property
    def episodes(self) -> int:
        """The number of episodes (tasks) trained on so far, steps × episodes per step."""
        return self.steps * self.episodes_per_step

    def _epoch_length(self) -> int:
        if self.steps_per_epoch is None:
            raise ValueError("no epoch length: pass steps_per_epoch= to train_steps")
        return self.steps_per_epoch

    @property
    def epoch(self) -> float:
        """Steps as epochs, when an epoch was defined as ``steps_per_epoch`` steps."""
        return self.steps / self._epoch_length()

    def axis(self, x: str) -> list[float]:
        """Per-step x values: ``"step"`` (or ``"iteration"``), ``"episode"``, ``"epoch"`` or
        ``"time"``."""
        if x in ("step", "iteration"):
            return list(range(1, self.steps + 1))
        if x == "episode":
            return [self.episodes_per_step * (i + 1) for i in range(self.steps)]
        if x == "epoch":
            return [(i + 1) / self._epoch_length() for i in range(self.steps)]
        if x == "time":
            return self.time
        raise ValueError(f"x must be 'step', 'episode', 'epoch' or 'time'; got {x!r}")


def train_steps(
    model: torch.nn.Module,
    step_loss,
    *,
    steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    episodes_per_step: int = 1,
    steps_per_epoch: int | None = None,
    validate=None,
    eval_every: int | None = None,
    sync_every: int = 100,
    seed: int = 0,
    progress: bool = True,
    desc: str = "training",
    checkpoint=None,
    loss_limit: tuple[float, str] | None = None,
    advice: str | None = None,
    world: World = SINGLE,
    split: str = "episodes",
) -> StepHistory:
    """Train ``model`` for ``steps`` steps of ``step_loss``.

    Args:
        model: the learner; put in train mode for every step.
        step_loss: ``step_loss(step) -> loss`` or ``-> (loss, {name: scalar tensor})``;
            ``step`` counts from 0. It draws its own data (an episode sampler,
            a pair sampler, …), so the loop knows nothing of the method.
        steps: optimizer steps to take.
        optimizer: defaults to Adam with learning rate 1e-3 on ``model.parameters()``.
        scheduler: a ``torch.optim.lr_scheduler`` stepped after every step
            (e.g. ``StepLR(optimizer, 2000, 0.5)``: Snell et al.'s halving).
        episodes_per_step: tasks in one step (the meta-batch size), for the counters.
        steps_per_epoch: how many steps make an "epoch" in this method's
            convention (episodic training has no natural epoch).
        validate: ``validate() -> fslearn.Accuracy``, e.g. ``lambda:
            fsl.evaluate(model, val_episodes)``; called every ``eval_every`` steps
            and after the last one.
        sync_every: losses stay on the device and are copied to the host (and
            checked for NaN) every this many steps.
        seed: seeds torch's generator for the random ops inside the model
            (dropout) without touching the caller's global generator.
        progress: show a progress bar.
        checkpoint: a :class:`~fslearn.Checkpoint` whose tracked objects are
            saved every ``checkpoint.every`` steps and after the last; with
            ``resume`` the loop first restores them and continues from the saved
            step, ending with the same weights as an uninterrupted run.
        loss_limit: ``(limit, why)``: stop, as for a NaN, at a finite loss above
            ``limit`` (a method whose losses have a natural scale, as MAML's query
            cross-entropy, says by its size that the training diverged).
        advice: what the error of a diverged run tells the user to do (default:
            lower the learning rate, check the inputs).
        world: the processes training together (:mod:`fslearn.distributed`):
            ``step_loss`` computes this rank's share of the step, the gradients are
            averaged across the ranks before every optimizer step.
        split: how the ranks share a step, for their batch-norm running statistics:
            ``"episodes"`` (each rank runs whole episodes or tasks) or ``"batch"`` (each
            normalises its share of one batch); see
            :meth:`~fslearn.distributed.World.sync_running_stats`.

    Returns:
        A :class:`StepHistory`.

    Raises:
        FloatingPointError: the loss became NaN or infinite (or passed ``loss_limit``).
    """
    steps = check_positive_int("steps", steps)
    episodes_per_step = check_positive_int("episodes_per_step", episodes_per_step)
    sync_every = check_positive_int("sync_every", sync_every)
    if (validate is None) != (eval_every is None):
        raise ValueError(
            "give validate and eval_every together; "
            f"got validate={validate!r}, eval_every={eval_every!r}"
        )
    if eval_every is not None:
        eval_every = check_positive_int("eval_every", eval_every)
    if steps_per_epoch is not None:
        steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-3)
    history = StepHistory(episodes_per_step, steps_per_epoch)
    if checkpoint is not None:
        checkpoint.track(model=model, optimizer=optimizer, scheduler=scheduler)

    def validation_due(done: int) -> bool:
        return eval_every is not None and (done % eval_every == 0 or done == steps)

    def step(i: int):
        stats = world.running_stats(model)
        out = step_loss(i)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        if not isinstance(metrics, dict):
            raise TypeError(
                f"step_loss must return a loss or (loss, {{name: tensor}}); got (loss, "
                f"{type(metrics).__name__}). Name the extra value, "
                f"e.g. return loss, {{'accuracy': accuracy}}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        world.average_gradients(model.parameters())
        world.sync_running_stats(stats, split)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return loss, metrics

    def after_flush(done: int, values: list[float], clock, bar) -> None:
        if not validation_due(done):
            return
        accuracy = validate()
        history.validation.append(
            {
                "step": done,
                "episodes": history.episodes,
                "accuracy": accuracy.mean,
                "ci95": accuracy.ci95,
                "time": clock(),
            }
        )
        bar.set_postfix(loss=round(values[-1], 4), val=f"{100 * accuracy.mean:.1f}%")

    run_loop(
        model,
        history,
        step,
        total=steps,
        count="steps",
        seed=seed,
        progress=progress,
        desc=desc,
        checkpoint=checkpoint,
        sync_every=sync_every,
        flush_due=validation_due,
        save_due=lambda done: done % checkpoint.every == 0,
        after_flush=after_flush,
        describe=lambda at: f"step {at} (lr={optimizer.param_groups[0].get('lr')})",
        loss_limit=loss_limit,
        world=world,
        **({} if advice is None else {"advice": advice}),
    )
    return history
