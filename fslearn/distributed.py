"""Training across processes with ``torch.distributed``, so that W processes compute what one does.

Every process (rank) draws the same global batch from the same seeded sampler (index
arithmetic, cheap) and works on its own contiguous share of it: ``T / W`` tasks of a
MAML meta-batch, ``E / W`` episodes of a prototypical step, ``B / W`` images of a
pre-training batch. After ``backward`` the gradients are averaged across ranks with one
all-reduce of one flat buffer, so every rank takes the same optimizer step and the
weights stay identical without ever being sent. Nothing depends on W but the split:
a run resumes on another number of processes to the same weights.

Why an all-reduce of ``.grad`` and not ``DistributedDataParallel``: MAML's meta-objective
runs the network through ``torch.func.functional_call`` under ``vmap``, outside the
module's ``forward``, where DDP's hooks neither see the forward nor fire in order; the
explicit all-reduce after ``backward`` composes with any loss, costs the same one
collective of the parameters' size per step, and is the same code for every method.

Processes are started by ``torchrun``, which sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`world_from_env` reads them and joins the process group (NCCL on
GPUs, gloo on the CPU). A single process needs none of this: :data:`SINGLE`.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

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


def world_from_env(device_type: str = "cpu", timeout: float = DEFAULT_TIMEOUT) -> World:
    """The :class:`World` that ``torchrun`` describes in ``RANK``, ``WORLD_SIZE`` and
    ``LOCAL_RANK``, joining its process group on first call; :data:`SINGLE` without them.

    Args:
        device_type: ``"cuda"`` joins with NCCL (one GPU per process, ``cuda:LOCAL_RANK``),
            anything else with gloo.
        timeout: seconds, in ``(0, MAX_TIMEOUT]``, that joining and every collective wait for
            a missing rank before every rank stops with an error, so that a rank that died,
            hangs or never came never hangs the others for good.

    Raises:
        ValueError: ``timeout`` is out of range, or the variables are malformed (naming them).
        ProcessGroupError: the others did not join within ``timeout``: a rank never started
            or died, or nobody serves ``MASTER_ADDR:MASTER_PORT``.
    """
    timeout = check_timeout(timeout)
    size = os.environ.get("WORLD_SIZE")
    if size is None:
        return SINGLE
    try:
        world = World(
            rank=int(os.environ["RANK"]),
            size=int(size),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    except (KeyError, ValueError):
        _malformed("RANK", "WORLD_SIZE", "LOCAL_RANK")
    if not 0 <= world.rank < world.size:
        raise ValueError(f"RANK={world.rank} is outside 0 … WORLD_SIZE-1 = {world.size - 1}")
    if world.size > 1 and not dist.is_initialized():
        try:
            master = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
        except (KeyError, ValueError):
            _malformed("MASTER_ADDR", "MASTER_PORT")
        wait = timedelta(seconds=timeout)
        where = "joining them at MASTER_ADDR:MASTER_PORT = {}:{}".format(*master)
        try:
            # Rank 0 serves the store unless torchrun's agent does; the others connect to it.
            if world.rank > 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
                _wait_for(master, timeout)
            else:
                socket.getaddrinfo(*master)  # a name that does not resolve: no use waiting
            store, _, _ = next(dist.rendezvous("env://", timeout=wait))
            # torchrun keeps one store across restarts: keys of each attempt apart, so that a
            # restarted rank never reads the address of a rank that died.
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            dist.init_process_group(
                backend="nccl" if device_type == "cuda" else "gloo",
                store=dist.PrefixStore(f"fslearn/attempt-{attempt}/", store),
                rank=world.rank,
                world_size=world.size,
                timeout=wait,
            )
        except (RuntimeError, OSError) as error:  # torch's DistError is a RuntimeError
            raise _lost(world, where, error) from error
    return world


def _malformed(*names: str) -> NoReturn:
    found = {k: os.environ.get(k) for k in names}
    raise ValueError(
        f"torchrun's variables are malformed: {found}; start the processes with torchrun"
    )


def _wait_for(address: tuple[str, int], timeout: float) -> None:
    """Return once something accepts connections at ``address``; TimeoutError after
    ``timeout`` seconds. torch's own store client would log every failed try with a C++
    stack trace, the picture of a crash where there is only a rank still to come."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection(address, timeout=max(min(left, 5.0), 0.1)):
                return
        except OSError as error:
            if left <= 0:
                raise TimeoutError(
                    f"nobody answered there within {timeout:g} s: {error.strerror or error}"
                ) from None
            time.sleep(min(0.2, max(left, 0)))
