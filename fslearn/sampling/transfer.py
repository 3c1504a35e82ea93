"""Where a sampler's images go when the dataset stays elsewhere: a set too large for the GPU
is kept on the host (or in a memory-mapped file) and only each draw's images cross."""

from __future__ import annotations

import torch

from ..room import available_bytes


def deliver(x: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    """``x`` on ``device`` (``None``: where it is). From the host to a GPU it goes through
    pinned memory without blocking the host: the copy overlaps the host's next work, and
    kernels queued after it on the GPU wait for it."""
    if device is None or x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        x = x.pin_memory()
    return x.to(device, non_blocking=True)


def fits_on(dataset, device: torch.device, share: float = 0.5) -> bool:
    """Whether ``dataset``'s images take at most ``share`` of the memory ``device`` has left
    (True where that is unknown, or where the images are there already)."""
    if dataset.device == device:
        return True
    room = available_bytes(device)
    images = dataset.flat_images
    return room is None or images.numel() * images.element_size() <= share * room


def uniform_numbers(shape: tuple, generator: torch.Generator, device=None) -> torch.Tensor:
    """``torch.rand(shape)`` drawn where ``generator`` lives and sent to ``device`` (``None``:
    left there): one
    generator serves a sampler whose images live elsewhere, so its state is all a checkpoint
    saves to resume the same draws."""
    drawn = torch.rand(shape, generator=generator, device=generator.device)
    return drawn if device is None else deliver(drawn, torch.device(device))
