"""Helpers every stage of the pipeline shares: argument checks, seeding, devices, progress
bars, and files written so that a crash never leaves half of one.

Nothing here knows about datasets, learners or training; every other module may import it.
"""

from __future__ import annotations

import contextlib
import operator
import os
import stat
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .writable import not_a_folder, write_problem


def _is_bool(value) -> bool:
    # Booleans are integers to Python, numpy and torch alike; as a count they are a mistake.
    return isinstance(value, (bool, np.bool_)) or (
        isinstance(value, torch.Tensor) and value.dtype == torch.bool
    )


def check_positive_int(name: str, value, *, minimum: int = 1, why: str = "") -> int:
    """``value`` as a plain int if it is an integer ≥ ``minimum``, else a ValueError naming it.

    Any integral number counts: ``np.int64(5)``, a one-element integer tensor, whatever
    :func:`operator.index` accepts. Bools and floats do not, not even ``2.0``. Store the
    returned value, so that the rest of the code (and what it saves) sees a Python int.

    >>> check_positive_int("n_way", np.int64(5))
    5
    >>> check_positive_int("n_classes", 1, minimum=2, why="a triplet needs a negative")
    Traceback (most recent call last):
    ValueError: n_classes must be an integer ≥ 2 (a triplet needs a negative); got 1
    """
    if not _is_bool(value):
        with contextlib.suppress(TypeError):
            number = int(operator.index(value))
            if number >= minimum:
                return number
    kind = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
    raise ValueError(f"{name} must be {kind}{f' ({why})' if why else ''}; got {value!r}")


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
    """A text tqdm bar; ``enabled=False`` hides it.

    Text, never tqdm's notebook widget: a widget in a chapter's output makes the built book
    fetch Jupyter's widget scripts from the web, and the book reads offline.
    """
    from tqdm.std import tqdm

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


def _set(variable: str) -> str | None:
    # The XDG spec treats an empty variable as unset; an empty path would mean the
    # working directory, which is never what was meant.
    value = os.environ.get(variable, "")
    return value if value.strip() else None


def _cache_location() -> tuple[Path, str, str]:
    """fslearn's cache folder, unchecked; what chose it, in words; and how to choose another.

    Raises:
        OSError: the variables are unset and the home folder is unknown.
    """
    fix = "set FSLEARN_CACHE to a writable folder"
    root, xdg = _set("FSLEARN_CACHE"), _set("XDG_CACHE_HOME")
    if xdg is not None and not Path(xdg).expanduser().is_absolute():
        xdg = None
    if root is not None:
        return (
            Path(root).expanduser(),
            f"FSLEARN_CACHE={root!r}",
            "unset FSLEARN_CACHE or point it at a writable folder",
        )
    if xdg is not None:
        return (
            Path(xdg).expanduser() / "fslearn",
            f"XDG_CACHE_HOME={xdg!r}",
            f"{fix} (or point XDG_CACHE_HOME at one)",
        )
    try:
        path = Path.home() / ".cache" / "fslearn"
    except RuntimeError as error:  # no $HOME and no password-file entry
        raise OSError(
            f"fslearn has no cache folder: FSLEARN_CACHE and XDG_CACHE_HOME are unset and "
            f"the home folder is unknown ({error}); {fix}"
        ) from None
    return path, "the default, as FSLEARN_CACHE and XDG_CACHE_HOME are unset", fix


def cache_dir() -> Path:
    """The folder fslearn caches generated and downloaded data in.

    ``$FSLEARN_CACHE`` if set, else ``$XDG_CACHE_HOME/fslearn``, else
    ``~/.cache/fslearn``; an empty variable counts as unset, and a relative
    ``XDG_CACHE_HOME`` is ignored (as the XDG spec says). Created on first use.

    It need not be writable: a folder that already holds every cache a run needs (a
    shared cache on a cluster, mounted read-only) is only read. Writing a cache that is
    not there yet checks first (``check_cache_writable``).

    Raises:
        OSError: the folder does not exist and cannot be created; the message names it,
            the variable that chose it and the fix.
    """
    path, chosen, fix = _cache_location()
    if not path.is_dir():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = not_a_folder(path) or f"cannot create it: {error}"
            raise OSError(
                f"cannot use {path} as fslearn's cache folder ({reason}); it comes from "
                f"{chosen}: {fix}"
            ) from error
    return path


def check_cache_writable(path) -> None:
    """Raise unless the cache file (or downloaded archive) ``path`` that is missing can be
    written; call it before building or downloading what it will hold.

    Raises:
        OSError: naming the folder that refuses it and, when it lies in fslearn's cache
            folder, the variable that chose that folder and the fix.
    """
    path = Path(path)
    problem = write_problem(path.parent)
    if problem is None:
        return
    try:
        folder, chosen, fix = _cache_location()
    except OSError:
        folder = None
    if folder is None or not path.is_relative_to(folder):
        raise OSError(f"cannot write {path} ({problem}): choose a folder you can write in")
    raise OSError(
        f"cannot write the cache {path} ({problem}): fslearn only reads its cache folder "
        f"{folder} where it cannot write, and that folder does not hold this cache yet. It "
        f"comes from {chosen}: {fix} (copying the caches {folder} holds there keeps them)"
    )


def _umask() -> int:
    """The process's umask, read without setting it where /proc tells it (Linux).

    Setting it, the only other way, changes it for every thread for that instant.
    """
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    # Elsewhere the only way is to set it and put it back; 0o077 keeps what other threads
    # create in that instant private rather than world-writable.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    The temporary file lives in the same folder so the final :func:`os.replace`
    is atomic: readers see the old file or the new one, never a partial one.
    If the body raises, the temporary file is removed and ``path`` is untouched.
    The finished file gets the permissions of the file it replaces, or those of any
    new file (``0o666`` less the umask), not the private ``0o600`` of a temporary one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        try:
            # Permission bits only: a set-user-ID bit is nothing a data file should inherit.
            mode = stat.S_IMODE(os.stat(path).st_mode) & 0o777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _cache_problem(saved, keys, check) -> str | None:
    if not isinstance(saved, dict):
        return f"it holds a {type(saved).__name__}, not a dict"
    missing = [key for key in keys if key not in saved]
    if missing:
        return f"it has no {', '.join(map(repr, missing))}"
    return check(saved) if check is not None else None


def cached(path: Path, build, *, keys, check=None, enabled: bool = True) -> dict:
    """``build()``'s dict of tensors and strings, read from ``path`` when a valid copy is there.

    A missing file, or one that is unreadable or not what ``build`` makes (a damaged
    cache is ours to rebuild, not the user's problem: a warning says so), is built again
    and written atomically; a folder that refuses the new file is an OSError before the
    build (``check_cache_writable``), so a read-only cache folder serves what it holds.
    The file is read with ``weights_only=True``, so a cache never runs code. A cache that
    cannot be written after all (a full disk) is skipped with a warning: the data was built,
    and is returned.

    Args:
        path: the cache file; its name should hold every parameter of ``build``.
        build: ``build() -> dict`` of what to cache.
        keys: the keys of ``build()``'s dict; a file whose dict lacks one is built again.
        check: ``check(saved) -> str | None``: what is wrong with a dict that has the keys
            (a tensor of the wrong dtype or shape, say), or None if it is fine.
        enabled: ``False`` neither reads nor writes the file.
    """
    if enabled and path.exists():
        try:
            saved = torch.load(path, weights_only=True)
        except Exception as error:  # torch raises many types for a bad file
            problem = str(error)
        else:
            problem = _cache_problem(saved, keys, check)
            if problem is None:
                return saved
        warnings.warn(
            f"ignoring unreadable cache {path} ({problem}); building it again", stacklevel=3
        )
    if enabled:
        check_cache_writable(path)  # before the build, which may take minutes
    saved = build()
    if enabled:
        try:
            with atomic_path(path) as tmp:
                torch.save(saved, tmp)
        except (OSError, RuntimeError) as error:  # torch reports a failed write as RuntimeError
            warnings.warn(
                f"could not write the cache {path} ({error}); continuing without it. Free some "
                f"space there, or point FSLEARN_CACHE at a writable folder with room",
                stacklevel=3,
            )
    return saved
