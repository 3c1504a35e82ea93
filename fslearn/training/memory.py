"""How much memory training a batch takes, and how much a device has left."""

from __future__ import annotations

from pathlib import Path

import torch


def activation_bytes(model: torch.nn.Module, x: torch.Tensor, y=None, loss_fn=None) -> int:
    """Bytes of the tensors autograd keeps from one forward pass for the backward pass.

    This is the part of training memory that grows with the batch size; the
    parameters (and their gradients and optimizer state) do not, and are not
    counted. Measured, not estimated: every tensor saved for backward is
    caught with :func:`torch.autograd.graph.saved_tensors_hooks` and its storage
    counted once.

    Args:
        x: a batch of inputs of shape ``(B, ...)``.
        y, loss_fn: when given, the loss's saved tensors count too.
    """
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x)
        if loss_fn is not None:
            loss_fn(out, y)
    return sum(storages.values())


def _cgroup_room() -> int | None:
    """Bytes this process's cgroup (a container's limit) still allows, or None without one."""
    for limit, usage in [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ]:
        try:
            cap, used = Path(limit).read_text().strip(), Path(usage).read_text().strip()
        except OSError:
            continue
        # No limit reads "max" (cgroup v2) or a number near 2**63 (v1).
        if cap.isdigit() and used.isdigit() and int(cap) < 2**60:
            return max(int(cap) - int(used), 0)
    return None


def available_bytes(device) -> int | None:
    """Bytes that new tensors on ``device`` can still take, or None where that is unknown.

    A GPU: its free memory plus what torch's caching allocator holds and does not use. The
    CPU (and Apple's MPS, which shares it): the memory the system says is available
    (``MemAvailable``), within the cgroup's limit when there is one.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type not in ("cpu", "mps"):
        return None
    room = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    cgroup = _cgroup_room()
    if room is None or cgroup is None:
        return room if cgroup is None else cgroup
    return min(room, cgroup)
