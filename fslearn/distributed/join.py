"""Joining the process group that ``torchrun`` describes in its environment variables."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from typing import NoReturn

import torch.distributed as dist

from .world import DEFAULT_TIMEOUT, SINGLE, World, _lost, check_timeout


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
