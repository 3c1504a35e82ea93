"""What the book's chapters share: one set-up line, and the numbers their prose quotes."""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import torch

from .common import default_device

_started: float | None = None


class ChapterSetup(NamedTuple):
    """Where a chapter runs, and how much of it.

    Attributes:
        device: ``cuda`` when a GPU is visible, else ``cpu``.
        full: the full configuration (on a GPU: real data, full-width networks, long
            schedules); ``False`` is the reduced CPU configuration.
        short: the full configuration's code paths with short training
            (``FSLEARN_GPU_CHECK=short``, as ``make gpu-check`` runs it).
    """

    device: torch.device
    full: bool
    short: bool


def setup_chapter(*, cpu_threads: int | None = 1, verbose: bool = True) -> ChapterSetup:
    """Pick the device and the configuration a chapter runs in, and say which.

    On a CPU the chapters use one thread by default: their models are so small that
    splitting each operation over threads costs more than it saves. In a notebook, figures
    are drawn as SVG, sharp at any zoom.

    Args:
        cpu_threads: the threads torch uses on a CPU (``None`` leaves torch's default).
        verbose: print one line that names the device and the configuration.

    Returns:
        ``(device, full, short)``, a :class:`ChapterSetup`.
    """
    global _started
    _started = time.perf_counter()
    device = default_device()
    full = device.type == "cuda"
    short = full and os.environ.get("FSLEARN_GPU_CHECK") == "short"
    if not full and cpu_threads is not None:
        torch.set_num_threads(cpu_threads)
    _svg_figures()
    if verbose:
        config = "full" if full else "reduced"
        print(f"running on {device}: the {config} configuration")
    return ChapterSetup(device, full, short)


def seconds_since_setup() -> float:
    """Seconds since :func:`setup_chapter` ran: the time a chapter took, read in its last cell."""
    if _started is None:
        raise RuntimeError("seconds_since_setup() needs setup_chapter() to have run first")
    return time.perf_counter() - _started


def _svg_figures() -> None:
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "run_line_magic"):
        shell.run_line_magic("config", "InlineBackend.figure_formats = ['svg']")


def glue(name: str, value) -> None:
    """Record ``value`` under ``name`` for the book's prose.

    In a notebook that Jupyter Book executes, the prose names it in myst-nb's ``glue:text``
    role, with a format spec such as ``.1f``, and the build inserts the number this cell
    computed, so prose cannot drift from its output. A
    one-element tensor or a numpy scalar is stored as a Python number, so format specs apply.
    Elsewhere (a script, or a notebook without myst-nb, such as Colab) nothing is recorded.
    It returns nothing, so a cell that ends with it shows no stray number.
    """
    stored = value.item() if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 else value
    try:
        from IPython import get_ipython
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    if get_ipython() is not None:
        myst_glue(name, stored, display=False)
