"""A process's place among the others (:class:`World`) and the collectives they run together."""

from __future__ import annotations

import json
import numbers
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

#: Seconds a rank waits in a collective for the others before it stops with an error.
DEFAULT_TIMEOUT = 300.0
#: The longest wait accepted. torch counts a wait in nanoseconds in 64 bits, which end after
#: 292 years: past about 9e9 s its deadlines wrap around and a wait fails at once.
MAX_TIMEOUT = 1e9
#: What a timeout must be, for the messages that refuse one.
TIMEOUT_RANGE = "a number of seconds > 0 and at most 1e9 (31 years)"


class ProcessGroupError(RuntimeError):
    """A collective failed on this rank: another process died, hangs past the timeout, or the
    network between them broke. The message says which rank saw it and how to continue."""


def check_timeout(timeout) -> float:
    """``timeout`` as float seconds, checked to be a wait torch can keep.

    Raises:
        ValueError: ``timeout`` is not a number in ``(0, MAX_TIMEOUT]`` (NaN and infinity
            included).
    """
    number = isinstance(timeout, numbers.Real) and not isinstance(timeout, bool)
    if not (number and 0 < float(timeout) <= MAX_TIMEOUT):
        raise ValueError(f"timeout must be {TIMEOUT_RANGE}; got {timeout!r}")
    return float(timeout)


def _lost(world: World, where: str, error: BaseException) -> ProcessGroupError:
    """The :class:`ProcessGroupError` of ``world``'s rank, which lost the others ``where``."""
    # gloo opens with the C++ source location, then says what happened.
    said = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip()).split(". ")[0]
    return ProcessGroupError(
        f"process {world.rank} of {world.size} lost the others in {where} ({said}): "
        "another process died (its own output says why) or did not answer within the "
        "process group's timeout (`--dist-timeout`). A run with a checkpoint continues "
        "where it stopped with `fslearn train … --resume` (under `torchrun "
        "--max-restarts`, `--resume auto` does it by itself)"
    )


def _together(world: World, op, *args) -> None:
    """Run the collective ``op(*args)``, turning the backend's failure into a
    :class:`ProcessGroupError` that says what happened and what to do."""
    try:
        op(*args)
    except RuntimeError as error:  # gloo's and NCCL's failures, torch.distributed.DistError too
        raise _lost(world, op.__name__, error) from error


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` processes: ``rank`` (0 … size-1) and the device index
    ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one process that writes files and prints."""
        return self.rank == 0

    def share(self, n: int, what: str) -> slice:
        """This rank's contiguous share of ``n`` items; ``n`` must be divisible by the size.

        Raises:
            ValueError: naming ``what``, ``n``, the number of processes and the fix.
        """
        if n % self.size:
            lower = n - n % self.size
            near = f"{lower} or {lower + self.size}" if lower else f"{self.size}"
            raise ValueError(
                f"{what}={n} cannot be split evenly over {self.size} processes: use a multiple "
                f"of {self.size} (e.g. {near}), or a number of processes that divides {n}"
            )
        per = n // self.size
        return slice(self.rank * per, (self.rank + 1) * per)

    def average_gradients(self, parameters) -> int:
        """Replace every parameter's ``.grad`` by its mean over the ranks: one all-reduce of one
        flat buffer. A parameter without a gradient counts as zeros. Returns the bytes reduced."""
        params = [p for p in parameters if p.requires_grad]
        if self.size == 1 or not params:
            return 0
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        _together(self, dist.all_reduce, flat)
        flat /= self.size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n
        return flat.numel() * flat.element_size()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over the ranks of a tensor of the same shape on every rank."""
        if self.size == 1:
            return values
        values = values.detach().clone()
        _together(self, dist.all_reduce, values)
        return values / self.size

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Every rank's 1-d ``values`` (of any length), concatenated in rank order, on every
        rank."""
        if self.size == 1:
            return values
        parts = [None] * self.size
        _together(self, dist.all_gather_object, parts, values.detach().cpu())
        return torch.cat(parts).to(values.device)

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's ``(n, ...)`` rows, concatenated in rank order, for a loss over the whole
        batch (as triplet mining's); gradient flows into this rank's rows only, multiplied by
        the number of ranks, so that :meth:`average_gradients` then gives the gradient of the
        whole batch's loss. Every rank must pass the same number of rows."""
        if self.size == 1:
            return local
        parts = [torch.empty_like(local) for _ in range(self.size)]
        _together(self, dist.all_gather, parts, local.detach().contiguous())
        # (W - 1) · (x - x.detach()) is exactly zero in value and (W - 1) in gradient.
        parts[self.rank] = local + (self.size - 1) * (local - local.detach())
        return torch.cat(parts)

    def check_same(
        self,
        settings: dict,
        what: str = "settings",
        fix: str = "start every rank with the same command",
    ) -> None:
        """Stop every rank, at the start, when the ranks were not given the same ``settings``
        (a dict of JSON-able values, nested dicts compared key by key).

        Raises:
            ValueError: on every rank, naming each key that differs and each rank's value of
                it, then ``fix``.
        """
        if self.size == 1:
            return
        mine = json.dumps(_flat(settings), sort_keys=True, default=str)
        everyone = [None] * self.size
        _together(self, dist.all_gather_object, everyone, mine)
        if len(set(everyone)) == 1:
            return
        ranks = [json.loads(s) for s in everyone]
        missing = "(not set)"
        differ = []
        for key in sorted({k for r in ranks for k in r}):
            values = [json.dumps(r[key]) if key in r else missing for r in ranks]
            if len(set(values)) > 1:
                groups = {v: [rank for rank, w in enumerate(values) if w == v] for v in values}
                differ.append(
                    f"{key} ({'; '.join(f'{_ranks(g)}: {v}' for v, g in groups.items())})"
                )
        raise ValueError(
            f"the {self.size} processes were started with different {what}: "
            f"{', '.join(differ)}; {fix}"
        )

    def running_stats(self, model: torch.nn.Module) -> dict | None:
        """A copy of ``model``'s batch-norm running statistics, taken before a step, for
        :meth:`sync_running_stats` after it (``None`` in one process)."""
        if self.size == 1:
            return None
        return {
            m: (m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
            for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        }

    def sync_running_stats(self, before: dict | None, split: str) -> None:
        """Make every rank's batch-norm running statistics what one process would hold.

        Args:
            before: :meth:`running_stats` of the step's start.
            split: ``"episodes"`` when each rank ran whole forward passes of its share (one
                process would have run the ranks' updates one after another: the momentum
                recursion is rebuilt from each rank's net change, equal to one process's up
                to rounding); ``"batch"`` when each rank normalised its share of one batch
                (the ranks' statistics are averaged: close to the whole batch's, not equal).
        """
        if not before:
            return
        modules = list(before)
        flat = torch.cat([t.reshape(-1) for m in modules for t in (m.running_mean, m.running_var)])
        parts = [torch.empty_like(flat) for _ in range(self.size)]
        _together(self, dist.all_gather, parts, flat)
        offset = 0
        for m in modules:
            mean0, var0, count0 = before[m]
            n = mean0.numel()
            steps = int(m.num_batches_tracked) - count0  # this rank's updates in the step
            merged = []
            for k, start in enumerate((mean0, var0)):
                ranks = [p[offset + k * n : offset + (k + 1) * n] for p in parts]
                if split == "batch" or steps == 0:
                    merged.append(torch.stack(ranks).mean(0))
                    continue
                keep = 1.0 - m.momentum  # per update; every rank made `steps` of them
                value = start * keep ** (steps * self.size)
                for r, local in enumerate(ranks):
                    later = steps * (self.size - 1 - r)
                    value = value + keep**later * (local - start * keep**steps)
                merged.append(value)
            m.running_mean.copy_(merged[0])
            m.running_var.copy_(merged[1])
            if split == "episodes":
                m.num_batches_tracked.fill_(count0 + steps * self.size)
            offset += 2 * n

    def first_error(self, message: str | None) -> str | None:
        """Every rank learns the first rank's error message (``None`` when no rank had one), so
        that a check only rank 0 makes stops all of them with the same message."""
        if self.size == 1:
            return message
        everyone = [None] * self.size
        _together(self, dist.all_gather_object, everyone, message)
        return next((m for m in everyone if m is not None), None)

    def barrier(self) -> None:
        if self.size > 1:
            _together(self, dist.barrier)


def _flat(settings: dict, prefix: str = "") -> dict:
    """``settings`` with nested dicts spread into ``"outer.inner"`` keys."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _ranks(ranks: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"ranks 0-2, 5"``."""
    runs = []
    for rank in ranks:
        if runs and rank == runs[-1][1] + 1:
            runs[-1][1] = rank
        else:
            runs.append([rank, rank])
    spans = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return f"rank {spans}" if len(ranks) == 1 else f"ranks {spans}"


#: A single process, in which a share is everything and an average the value itself.
SINGLE = World()
