"""Timing on a device: wall-clock seconds that include the device's queued work."""

from __future__ import annotations

import contextlib
import time

import torch


def sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without this the clock stops before the work does.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device) -> str:
    """The GPU's name, or ``"CPU, N threads"``."""
    device = torch.device(device)
    return (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )


def seconds_per_call(fn, device: torch.device, repeats: int) -> float:
    """Mean wall-clock seconds of ``repeats`` calls of ``fn``, including the device's queued
    work."""
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


@contextlib.contextmanager
def tf32(device: torch.device):
    """TF32 matmuls on a GPU (cuDNN convolutions use TF32 by default), as the figures of the
    design notes."""
    saved = torch.get_float32_matmul_precision()
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)
