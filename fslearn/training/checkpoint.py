"""Checkpoints: a training run's whole state in one file, written atomically, loaded without code.

A checkpoint holds what is needed to continue a run exactly where it stopped —
the weights, the optimizer's and the scheduler's state, every sampler's
generator state, torch's generator state, the counters and the history — plus
the *spec* that rebuilds the learner (method, backbone, way count, …) and the
run's config. Everything in it is a tensor, a number, a string or a container
of those, so ``torch.load(path, weights_only=True)`` reads it: loading a
checkpoint never runs pickled code.

A file is replaced only once its successor is complete on disk
(:func:`~fslearn.atomic_path`), so a crash while saving leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..common import atomic_path, check_positive_int
from .checkpoint_file import FORMAT, read_checkpoint
from .weights import load_state

#: Config fields that may change between a run and its resumption.
RESUMABLE_CHANGES = frozenset(
    {"steps", "epochs", "device", "progress", "resume", "out", "checkpoint_every", "maml_strategy"}
)

#: The budgets a config may hold, by the saved history's counter of the work each one bounds.
BUDGETS = {"steps": "steps", "epochs": "epochs_completed"}
#: What torch.save's RuntimeError says when the file could not be written.
WRITER = ("PytorchStreamWriter", "inline_container")


def _state_of(obj):
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def first_difference(
    saved: dict, current: dict, ignore=frozenset()
) -> tuple[str, object, object] | None:
    """The first field where two flat dicts differ, ``method`` before the rest (sorted):
    ``(field, saved, current)``."""
    for key in sorted((set(saved) | set(current)) - set(ignore), key=lambda k: (k != "method", k)):
        if saved.get(key) != current.get(key):
            return key, saved.get(key), current.get(key)
    return None


class Checkpoint:
    """Where a training run saves itself, how often, and whether it continues an earlier one.

    Pass one to a recipe (``fsl.train_protonet(..., checkpoint=fsl.Checkpoint(path))``),
    to :func:`~fslearn.train_steps` or to :func:`~fslearn.fit`. The recipe tells it
    what to save with :meth:`track`; the loop calls :meth:`restore` before its
    first step and :meth:`save` every ``every`` steps (epochs, for ``fit``) and at
    the end.

    Args:
        path: the checkpoint file, e.g. ``runs/protonet/checkpoint.pt``.
        every: save every this many steps (epochs for :func:`~fslearn.fit`).
        resume: continue the run saved at ``path``. Without it an existing file is
            an error rather than silently overwritten.
        config: the run's settings (JSON-serialisable); a resumed run must have the
            same, apart from those a resume may change (``RESUMABLE_CHANGES``:
            ``steps``, ``epochs``, ``device``, ``progress``, ``checkpoint_every``,
            ``out``), e.g. a longer ``steps``.
        log: a JSON-lines file rewritten at every save and on restore with one record
            per step (``step``, ``loss``, ``time`` and the step's metrics) and one per
            validation (``"validation": true``).
    """

    def __init__(
        self, path, *, every: int = 500, resume: bool = False, config: dict | None = None, log=None
    ):
        check_positive_int("every", every)
        self.path = Path(path).expanduser()
        self.every = every
        self.resume = resume
        self.config = dict(config or {})
        self.log = None if log is None else Path(log).expanduser()
        self.spec: dict = {}
        self.objects: dict = {}
        if self.path.exists() and not resume:
            raise FileExistsError(
                f"{self.path} already exists: pass resume=True (--resume) to continue that run, "
                "or choose another path (--out) for a new one"
            )
        if resume and not self.path.exists():
            raise FileNotFoundError(f"cannot resume: there is no checkpoint at {self.path}")

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, every={self.every}, resume={self.resume})"

    def track(self, spec: dict | None = None, **objects) -> None:
        """Say what the run is and what to save; later calls add to earlier ones.

        The training loops track the model, the optimizer and the scheduler (and
        :func:`~fslearn.fit` its shuffling generator); a recipe adds the spec and
        its samplers' generators.

        Args:
            spec: how to rebuild the learner (see :func:`~fslearn.build_learner`).
            objects: modules, optimizers, schedulers (anything with
                ``state_dict`` / ``load_state_dict``) and ``torch.Generator``s, by
                name; ``model`` is the learner.
        """
        if spec is not None:
            self.spec = dict(spec)
        self.objects.update({name: obj for name, obj in objects.items() if obj is not None})

    def check_resumable(
        self, *, count: str | None = None, budget: int | None = None, complete: bool = False
    ) -> dict:
        """Read the saved run and raise unless this run may continue it; return what was read.

        Compares the saved spec with this run's (once tracked) and the saved config with
        every field this run's config has (``complete``: every field of either, once the
        recipe has said all of its own, so that an option saved only when given cannot be
        dropped at a resume), except those a resume may change
        (``RESUMABLE_CHANGES``); no budget may be behind the work saved: the config's
        (``BUDGETS``), nor ``budget`` of the history's counter ``count``. The command line
        calls it before it writes anything; :meth:`restore` again once all is tracked.

        Raises:
            ValueError: naming the first field that differs (both values), or the budget.
        """
        payload = read_checkpoint(self.path)
        saved_config = (
            payload["config"]
            if complete
            else {key: payload["config"].get(key) for key in self.config}
        )
        difference = first_difference(payload["spec"], self.spec) if self.spec else None
        if difference is None:
            difference = first_difference(saved_config, self.config, RESUMABLE_CHANGES)
        if difference is not None:
            field, saved, current = difference
            raise ValueError(
                f"cannot resume from {self.path}: it was saved with {field}={saved!r} but this run "
                f"has {field}={current!r}. Resume with the same settings (config.json beside a run "
                "of the command line lists them), or start a new run elsewhere"
            )
        budgets = [(name, counter, self.config.get(name)) for name, counter in BUDGETS.items()]
        for name, counter, total in [*budgets, (count, count, budget)]:
            done = payload["history"].get(counter)
            if isinstance(total, int) and isinstance(done, int) and done > total:
                flag = f" (--{name} {done} or more)" if name in BUDGETS else ""
                raise ValueError(
                    f"cannot resume from {self.path}: it is at {name}={done}, past this run's "
                    f"{name}={total}; ask for {name} ≥ {done}{flag} to continue it"
                )
        return payload

    def restore(self, history, *, count: str = "steps", budget: int | None = None) -> None:
        """With ``resume``, load the saved state into the tracked objects and
        ``history`` (in place).

        Also restores torch's generator state, so random ops inside the model continue the
        same stream, and writes the log again from the saved history: it agrees with the
        checkpoint even after a kill between writing the two. Call inside ``fork_rng``.

        Args:
            history: the loop's fresh history, overwritten with the saved one.
            count, budget: the history's counter of work done (``"steps"``,
                ``"iterations"``) and the loop's total, which must not be behind it.

        Raises:
            ValueError: the checkpoint was saved by a different learner or run (the
                message names the first field that differs), or it is past ``budget``.
        """
        if not self.resume:
            return
        payload = self.check_resumable(count=count, budget=budget, complete=True)
        if type(history).__name__ != payload["history"]["type"]:
            raise ValueError(
                f"{self.path} holds a {payload['history']['type']}, not a {type(history).__name__}"
            )
        missing = sorted(set(self.objects) - set(payload["state"]))
        if missing:
            raise ValueError(
                f"{self.path} has no saved state for {missing}; it was not written by this recipe"
            )
        for name, obj in self.objects.items():
            load_state(obj, payload["state"][name], name, self.path)
        for field in dataclasses.fields(history):
            setattr(history, field.name, payload["history"][field.name])
        torch.set_rng_state(payload["rng"]["cpu"])
        if payload["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(payload["rng"]["cuda"])
        if self.log is not None:  # a run killed after a save but before its log agrees again
            self._write_log(history)

    def save(self, history) -> None:
        """Write the tracked state, ``history`` and the generators' state, atomically, then
        the log; an OSError (a full disk, …) names the file and says what survived."""
        from .. import __version__

        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stale.unlink()  # left by a save that was killed; never a complete checkpoint
        payload = {
            "format": FORMAT,
            "spec": self.spec,
            "config": self.config,
            "state": {name: _state_of(obj) for name, obj in self.objects.items()},
            "history": {"type": type(history).__name__, **dataclasses.asdict(history)},
            "rng": {
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
            },
            "versions": {"fslearn": __version__, "torch": str(torch.__version__)},
        }
        try:
            with atomic_path(self.path) as tmp:
                torch.save(payload, tmp)
        except (OSError, RuntimeError) as error:
            # torch's C++ writer reports a failed write (a full disk, …) as a RuntimeError
            if isinstance(error, RuntimeError) and not any(m in str(error) for m in WRITER):
                raise
            kept = (
                "the previous checkpoint there is intact"
                if self.path.exists()
                else "no checkpoint was saved yet"
            )
            raise OSError(
                f"could not save the checkpoint {self.path} ({_reason(error)}); {kept}. Free disk "
                "space and run again (--resume continues from a checkpoint), or use another --out"
            ) from error
        if self.log is not None:
            self._write_log(history)

    def _write_log(self, history) -> None:
        try:
            write_log(self.log, history)
        except OSError as error:
            raise OSError(
                f"could not write the log {self.log} ({_reason(error)}); the checkpoint is saved, "
                "and resuming it (--resume) writes the log again once there is disk space"
            ) from error


def _reason(error: Exception) -> str:
    """An error's first line, without the C++ source location torch puts before it."""
    line = getattr(error, "strerror", None) or (str(error).splitlines() or [repr(error)])[0]
    return line.split("] . ", 1)[-1] if line.startswith("[enforce fail") else line


def history_records(history) -> list[dict]:
    """One JSON-able dict per step of a :class:`~fslearn.StepHistory` (per iteration of a
    :class:`~fslearn.History`), then one per validation or completed epoch."""
    if hasattr(history, "steps"):
        metrics = history.metrics.items()
        rows = [
            {"step": i + 1, "loss": loss, "time": t, **{k: v[i] for k, v in metrics}}
            for i, (loss, t) in enumerate(zip(history.loss, history.time, strict=True))
        ]
        return rows + [{"validation": True, **record} for record in history.validation]
    rows = [
        {"iteration": i + 1, "loss": loss, "time": t}
        for i, (loss, t) in enumerate(zip(history.loss, history.time, strict=True))
    ]
    return rows + [{"epoch_end": True, **record} for record in history.epochs]


def write_log(path, history) -> None:
    """Write :func:`history_records` to ``path`` as JSON lines, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(record) + "\n" for record in history_records(history)))
