"""A decoded dataset on disk as one memory-mappable array, for sets larger than memory.

A cache is a folder holding two files:

* ``images.npy``: every image as one uint8 array of shape ``(n_images, C, H, W)``, class-major
  (class 0's images first), in numpy's ``.npy`` format, so that it can be memory-mapped;
* ``index.json``: the format version, the dataset's name, ``class_names``, ``groups``,
  ``counts`` (images per class) and ``source`` (a fingerprint of what it was decoded from).

:func:`create` writes one atomically: the images are decoded straight into a memory-mapped
file in a temporary folder beside the cache, which is renamed into place only once complete, so
an error or Ctrl-C leaves no partial cache. :func:`open_cached` reads one back, mapped or in
memory, and refuses (as :class:`CacheProblem`) a cache that is damaged, written by other code or
decoded from another source, which the loaders then build again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..common import _umask, check_cache_writable
from ..room import available_bytes

#: Bump when the layout of a cache changes, so that caches written by older code are rebuilt.
FORMAT_VERSION = 1
IMAGES, INDEX = "images.npy", "index.json"


class CacheProblem(ValueError):
    """A cache folder that is missing, damaged, or not the one asked for; the loaders rebuild it."""


class StaleCache(CacheProblem):
    """A sound cache of files that have changed since: rebuilt without a warning."""


def _check_index(index) -> str | None:
    if not isinstance(index, dict):
        return f"{INDEX} holds a {type(index).__name__}, not an object"
    if index.get("version") != FORMAT_VERSION:
        return f"it is format version {index.get('version')!r}, not {FORMAT_VERSION}"
    for key in ("class_names", "groups"):
        values = index.get(key)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return f"{key} is not a list of strings"
    counts = index.get("counts")
    if not isinstance(counts, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts
    ):
        return "counts is not a list of positive integers"
    if not counts or not len(counts) == len(index["class_names"]) == len(index["groups"]):
        return (
            f"{len(counts)} counts, {len(index['class_names'])} class names and "
            f"{len(index['groups'])} groups"
        )
    if not isinstance(index.get("name"), str):
        return "name is not a string"
    return None


def open_cached(
    path, mmap: bool | None = None, *, image_shape=None, source=None
) -> tuple[torch.Tensor, dict]:
    """The images and index of the cache folder ``path``.

    Args:
        path: a folder :func:`create` wrote.
        mmap: ``True`` maps ``images.npy`` copy-on-write (``numpy.load(mmap_mode="c")``): pages
            are read from disk as they are used, the tensor is writable, and writing to it
            changes the process's copy only, never the file. ``False`` reads it into memory.
            ``None`` maps it when it is larger than half the memory available now.
        image_shape: the ``(C, H, W)`` the caller needs, or None to take any.
        source: the fingerprint the cache must have been decoded from, or None to take any.

    Returns:
        ``(images, index)``: uint8 tensor ``(n_images, C, H, W)`` on the CPU, and the index
        (``name``, ``class_names``, ``groups``, ``counts``, ``source``).

    Raises:
        CacheProblem: the cache is missing, unreadable, inconsistent (the array's dtype or shape
            against the index's counts), or of another ``image_shape``; :class:`StaleCache`
            when it was decoded from another ``source``.
    """
    path = Path(path)
    try:
        index = json.loads((path / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CacheProblem(f"{path / INDEX} cannot be read ({error})") from None
    problem = _check_index(index)
    if problem is not None:
        raise CacheProblem(f"{path}: {problem}")
    if source is not None and index.get("source") != source:
        raise StaleCache(f"{path} was decoded from other files (they changed since)")
    if mmap is None:
        size = (path / IMAGES).stat().st_size if (path / IMAGES).exists() else 0
        room = available_bytes("cpu")
        mmap = room is None or size > room // 2
    try:
        # allow_pickle=False: a cache never runs code.
        array = np.load(path / IMAGES, mmap_mode="c" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:  # missing, truncated, not an .npy file
        raise CacheProblem(f"{path / IMAGES} cannot be read ({error})") from None
    expected = "(sum(counts), C, H, W)" if image_shape is None else f"({{}}, {image_shape})"
    if (
        array.dtype != np.uint8
        or array.ndim != 4
        or array.shape[0] != sum(index["counts"])
        or (image_shape is not None and tuple(array.shape[1:]) != tuple(image_shape))
    ):
        raise CacheProblem(
            f"{path / IMAGES} holds {array.dtype} of shape {array.shape}; its index needs uint8 "
            f"of shape " + expected.format(sum(index["counts"]))
        )
    return torch.from_numpy(array), index


def _allocate(file: Path) -> None:
    """Reserve the disk space of the sparse file ``file`` now: a full disk is then an OSError
    here, not a SIGBUS that kills the process when a mapped page is first written."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(file, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


@contextlib.contextmanager
def create(path, image_shape, counts, *, name: str, class_names, groups, source):
    """Write the cache folder ``path`` atomically; the body fills the images.

    Yields a writable, memory-mapped uint8 numpy array of shape ``(sum(counts), *image_shape)``
    in a temporary folder beside ``path``; when the body returns, the array is flushed, the
    index written and the folder renamed onto ``path`` (replacing an old cache there). If the
    body raises (Ctrl-C included), the temporary folder is removed and ``path`` is untouched.

    Raises:
        OSError: the folder cannot be written (``check_cache_writable``), before anything is.
    """
    path = Path(path)
    check_cache_writable(path / INDEX)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    index = {
        "version": FORMAT_VERSION,
        "name": name,
        "class_names": list(class_names),
        "groups": list(groups),
        "counts": [int(n) for n in counts],
        "source": source,
    }
    try:
        shape = (sum(index["counts"]), *map(int, image_shape))
        array = np.lib.format.open_memmap(tmp / IMAGES, mode="w+", dtype=np.uint8, shape=shape)
        _allocate(tmp / IMAGES)
        yield array
        array.flush()
        del array
        (tmp / INDEX).write_text(json.dumps(index), encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if path.exists():
            # A rename cannot replace a folder that is not empty: move the old one aside first.
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "cache")
        try:
            os.replace(tmp, path)
        except OSError as error:
            # Another process (a rank of the same run) renamed its copy in first: keep it.
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (path / INDEX).exists():
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_or_build(path, build, *, image_shape, source, mmap, enabled: bool = True):
    """The cache at ``path`` if it is valid for ``image_shape`` and ``source``, else built.

    ``build(create)`` decodes the dataset by calling ``create(counts, name=, class_names=,
    groups=)`` to get the array to fill (a context manager, as :func:`create`), filling it,
    and returning nothing; it must raise no OSError of its own (an unreadable source file is
    the caller's ValueError). A damaged or foreign cache is built again with a warning; a
    cache folder that refuses new files is an OSError before the build, as for the other
    loaders' caches; a write that fails during the build (a full disk) is retried in memory
    with a warning. ``enabled=False`` neither reads nor writes a cache.

    Returns:
        ``(images, index)`` as :func:`open_cached`.
    """
    path = Path(path)
    if enabled and path.exists():
        try:
            return open_cached(path, mmap, image_shape=image_shape, source=source)
        except StaleCache:
            pass  # the files changed: building again is what a cache is for
        except CacheProblem as problem:
            # The caller's caller is the public loader: the warning points at the user's line.
            warnings.warn(f"ignoring the cache {problem}; building it again", stacklevel=4)
    if enabled:
        check_cache_writable(path / INDEX)  # before the decoding, which may take minutes
        try:
            build(lambda counts, **index: create(path, image_shape, counts, source=source, **index))
        except OSError as error:
            warnings.warn(
                f"could not write the cache {path} ({error}); continuing without it. Free some "
                "space there, or point FSLEARN_CACHE at a writable folder with room",
                stacklevel=4,
            )
        else:
            return open_cached(path, mmap, image_shape=image_shape, source=source)
    return _in_memory(build, image_shape, source)


def _in_memory(build, image_shape, source) -> tuple[torch.Tensor, dict]:
    made = {}

    @contextlib.contextmanager
    def fill(counts, **index):
        array = np.empty((sum(counts), *image_shape), dtype=np.uint8)
        yield array
        made.update(index, counts=[int(n) for n in counts], source=source, images=array)

    build(fill)
    return torch.from_numpy(made.pop("images")), made
