"""Helpers every stage of the pipeline shares: argument checks, seeding, devices, progress
bars, and files written so that a crash never leaves half of one.

Nothing here knows about datasets, learners or training; every other module may import it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

import torch


def check_positive_int(name: str, value, *, minimum: int = 1, why: str = "") -> int:
    """``value`` if it is an integer ≥ ``minimum`` (not a bool), else a ValueError naming ``name``.

    >>> check_positive_int("n_way", 5)
    5
    >>> check_positive_int("n_classes", 1, minimum=2, why="a triplet needs a negative")
    Traceback (most recent call last):
    ValueError: n_classes must be an integer ≥ 2 (a triplet needs a negative); got 1
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        raise ValueError(f"{name} must be {kind}{f' ({why})' if why else ''}; got {value!r}")
    return value


@contextlib.contextmanager
def seeded(seed: int | None):
    """Run the body with torch's global generator seeded (``None``: leave it alone).

    The global generator is restored afterwards, so seeding one model does not
    change what happens next in the caller's program.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def progress_bar(
    total: int | None, desc: str, enabled: bool, *, unit: str = "it", leave: bool = True
):
    """A tqdm bar: a notebook widget in Jupyter, text in a terminal; ``enabled=False`` hides it."""
    from tqdm.auto import tqdm  # imported on first use: tqdm.auto probes for Jupyter

    return tqdm(total=total, desc=desc, disable=not enabled, unit=unit, leave=leave)


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``.

    Chapters use it to choose between their full (GPU) and reduced (CPU) settings.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def cache_dir() -> Path:
    """The folder fslearn caches generated and downloaded data in.

    ``$FSLEARN_CACHE`` if set, else ``$XDG_CACHE_HOME/fslearn``, else
    ``~/.cache/fslearn``. Created on first use.
    """
    root = os.environ.get("FSLEARN_CACHE")
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fslearn"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    The temporary file lives in the same folder so the final :func:`os.replace`
    is atomic: readers see the old file or the new one, never a partial one.
    If the body raises, the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def cached(path: Path, build, *, enabled: bool = True) -> dict:
    """``build()``'s dict of tensors and strings, read from ``path`` when a valid copy is there.

    A missing or unreadable file (a damaged cache is ours to rebuild, not the
    user's problem: a warning says so) is built again and written atomically.
    The file is read with ``weights_only=True``, so a cache never runs code.

    Args:
        path: the cache file; its name should hold every parameter of ``build``.
        build: ``build() -> dict`` of what to cache.
        enabled: ``False`` neither reads nor writes the file.
    """
    if enabled and path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception as error:  # torch raises many types for a bad file
            warnings.warn(
                f"ignoring unreadable cache {path} ({error}); building it again", stacklevel=3
            )
    saved = build()
    if enabled:
        with atomic_path(path) as tmp:
            torch.save(saved, tmp)
    return saved
