"""Reading miniImageNet's pickles safely: numpy arrays and nothing else.

Pickles run code while loading, so :func:`read_pickle` rebuilds only numpy arrays and
refuses every other global, with a ValueError naming the file and the global.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .miniimagenet_files import EXPECTED_SIZES, check_not_html, human_size

try:
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric


# Pickles run code while loading: any callable reachable by import can be called
# with attacker-chosen arguments (``os.system("…")``), and these files are passed
# around from unofficial mirrors. So only the globals numpy needs to rebuild
# arrays are allowed; everything else is refused before it is called.
_PICKLE_ALLOWED = {
    **{
        (module, name): getattr(_np_multiarray, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    },
    **{
        (module, "_frombuffer"): _np_numeric._frombuffer
        for module in ("numpy.core.numeric", "numpy._core.numeric")
    },
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Protocol-2 pickles written by Python 3 store the array bytes as latin-1 text.
    ("_codecs", "encode"): codecs.encode,
}


class _UnsafePickleError(ValueError, pickle.UnpicklingError):
    """A pickle asked for a global outside :data:`_PICKLE_ALLOWED`.

    A ValueError like every other bad file (the command line prints it as one line), and
    an UnpicklingError for code that catches what :mod:`pickle` raises.
    """


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays, dicts, lists and numbers, and nothing else."""

    def find_class(self, module, name):
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise _UnsafePickleError(
                f"refusing to load {module}.{name}: a miniImageNet pickle holds only numpy arrays, "
                "dicts and lists, and loading anything else could run arbitrary code. Nothing "
                "was run. Delete the file and use a copy from a source you trust, or the CSV + "
                "images layout."
            ) from None


class _ProgressReader:
    """A binary file whose reads advance a progress bar (all the unpickler calls)."""

    def __init__(self, f, bar):
        self._f, self._bar = f, bar

    def read(self, n=-1):
        data = self._f.read(n)
        self._bar.update(len(data))
        return data

    def readinto(self, buffer):
        n = self._f.readinto(buffer)
        self._bar.update(n)
        return n

    def readline(self):
        line = self._f.readline()
        self._bar.update(len(line))
        return line


def read_pickle(path: Path, split: str, progress: bool) -> tuple[np.ndarray, dict]:
    """``image_data`` and ``class_dict`` from a miniImageNet pickle, safely."""
    check_not_html(path, split, "pickle")
    size = path.stat().st_size
    try:
        with (
            open(path, "rb") as f,
            tqdm(
                total=size,
                desc=f"reading {path.name}",
                unit="B",
                unit_scale=True,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            # latin-1 decodes the byte strings of pickles written by Python 2.
            data = _ArrayUnpickler(_ProgressReader(f, bar), encoding="latin1").load()
    except _UnsafePickleError as error:
        raise _UnsafePickleError(f"{path}: {error}") from None
    except Exception as error:  # EOFError, UnpicklingError, ValueError…: all mean a damaged file
        raise ValueError(
            f"{path} ({human_size(size)}) is not a readable pickle ({type(error).__name__}: "
            f"{error}). "
            "It is probably truncated or corrupt, e.g. by an interrupted download: download it "
            "again "
            f"and check its size (the {split} pickle is {EXPECTED_SIZES[split, 'pickle']})."
        ) from error
    if not isinstance(data, dict) or not {"image_data", "class_dict"} <= data.keys():
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path} should hold a dict with keys 'image_data' and 'class_dict'; found {found}"
        )
    images, class_dict = data["image_data"], data["class_dict"]
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[-1] != 3
    ):
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise ValueError(
            f"{path}: image_data must be a uint8 array of shape (N, H, W, 3) (RGB, channels last; "
            f"N×84×84×3 in the standard copies); got shape {shape} and dtype {dtype}"
        )
    if not isinstance(class_dict, dict) or not class_dict:
        found = "an empty dict" if isinstance(class_dict, dict) else type(class_dict).__name__
        raise ValueError(
            f"{path}: class_dict must be a dict {{wnid: [image indices]}} of at least one "
            f"class; got {found}. The file is not a miniImageNet pickle: download it again"
        )
    indices = {}
    for key, listed in class_dict.items():
        # Pickles written by Python 2 may hold the wnids as bytes.
        wnid = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        try:
            index = np.asarray(listed).reshape(-1)
        except (TypeError, ValueError):  # a ragged list, or something that is not a list
            index = np.array([listed], dtype=object)
        if not len(index) or not np.issubdtype(index.dtype, np.integer):
            what = "no images" if not len(index) else f"indices of dtype {index.dtype}"
            raise ValueError(
                f"{path}: class {wnid} lists {what}; class_dict must map each wnid to the "
                f"integer indices of its images in image_data. The file is inconsistent: "
                f"download it again"
            )
        bad = index[(index < 0) | (index >= len(images))]
        if len(bad):
            raise ValueError(
                f"{path}: class {wnid} lists image indices {bad[:5].tolist()} outside image_data's "
                f"{len(images)} images; the file is inconsistent, download it again"
            )
        if wnid in indices:
            raise ValueError(f"{path}: class_dict names the class {wnid} twice; download it again")
        indices[wnid] = index.astype(np.int64)
    return images, indices
