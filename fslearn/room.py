"""How much memory a device has left: asked before work whose size the user chooses, so that
a request too large is refused with the numbers rather than ending in an out-of-memory error.
"""

from __future__ import annotations

from pathlib import Path

import torch


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
