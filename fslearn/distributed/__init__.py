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

from . import world as _world
from .join import world_from_env
from .world import (
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    TIMEOUT_RANGE,
    ProcessGroupError,
    World,
    check_timeout,
)

#: A single process, in which a share is everything and an average the value itself.
SINGLE = _world.SINGLE

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "SINGLE",
    "TIMEOUT_RANGE",
    "ProcessGroupError",
    "World",
    "check_timeout",
    "world_from_env",
]
