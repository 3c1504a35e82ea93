"""Reading miniImageNet's two file formats: split CSVs with an image folder, and pickles.

Pickles run code while loading, so :func:`read_pickle` rebuilds only numpy arrays and
refuses every other global; both readers recognise a saved HTML page (a failed Google
Drive download) and say how to fetch the file properly.
"""

from __future__ import annotations

import codecs
import csv
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

try:
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

# The canonical copies are 84×84; other sizes (full-size ImageNet photos, or
# another image_size) are resampled with Lanczos, which keeps detail without aliasing.
_RESAMPLE = Image.Resampling.LANCZOS
# Rough sizes of the real files, quoted when a download turns out to be broken
# (pickles written with protocol 2 store the pixels as text, about 1.5× larger).
_EXPECTED_SIZES = {
    ("train", "pickle"): "roughly 0.8–1.3 GB",
    ("val", "pickle"): "roughly 0.2–0.35 GB",
    ("test", "pickle"): "roughly 0.25–0.4 GB",
    ("train", "CSV"): "about 1.2 MB",
    ("val", "CSV"): "about 0.3 MB",
    ("test", "CSV"): "about 0.4 MB",
}


def pickle_path(root: Path, split: str) -> Path:
    return root / f"mini-imagenet-cache-{split}.pkl"


def csv_path(root: Path, split: str) -> Path:
    return root / f"{split}.csv"


def _human_size(n_bytes: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes} bytes" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000


def check_not_html(path: Path, split: str, kind: str) -> None:
    """Raise if ``path`` is a saved web page, the usual result of a failed Google Drive download.

    Google Drive answers a request for a large file with a "can't scan this file
    for viruses" page; downloading tools that do not confirm it save that page
    under the data's file name, and the loaders then fail with baffling errors.
    """
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n\f\v")[:64].lower()
    if not (start.startswith(b"<!doctype html") or start.startswith(b"<html")):
        return
    text = head.decode("utf-8", errors="replace").lower()
    from_drive = "google drive" in text or "virus scan" in text or "drive.google" in text
    size = path.stat().st_size
    raise ValueError(
        f"{path} is an HTML page ({_human_size(size)}), not the miniImageNet {split} {kind}"
        + (": it is Google Drive's large-file / virus-scan warning page" if from_drive else "")
        + ". The download saved the web page instead of the file. Download it again and "
        "confirm the warning: `gdown --fuzzy <share link>` handles it, or open the link in a "
        f"browser and click 'Download anyway'. Then check the size: the {split} {kind} is "
        f"{_EXPECTED_SIZES[split, kind]}, not a few KB."
    )


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


class _UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside :data:`_PICKLE_ALLOWED`."""


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays, dicts, lists and numbers, and nothing else."""

    def find_class(self, module, name):
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise _UnsafePickleError(
                f"refusing to load {module}.{name}: a miniImageNet pickle holds only numpy arrays, "
                "dicts and lists, and loading anything else could run arbitrary code. "
                "Use a copy from a source you trust, or the CSV + images layout."
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
            f"{path} ({_human_size(size)}) is not a readable pickle ({type(error).__name__}: "
            f"{error}). "
            "It is probably truncated or corrupt, e.g. by an interrupted download: download it "
            "again "
            f"and check its size (the {split} pickle is {_EXPECTED_SIZES[split, 'pickle']})."
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
    if not isinstance(class_dict, dict):
        raise ValueError(
            f"{path}: class_dict must be a dict {{wnid: [image indices]}}; got "
            f"{type(class_dict).__name__}"
        )
    indices = {}
    for wnid, index in class_dict.items():
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        bad = index[(index < 0) | (index >= len(images))]
        if len(bad):
            raise ValueError(
                f"{path}: class {wnid} lists image indices {bad[:5].tolist()} outside image_data's "
                f"{len(images)} images; the file is inconsistent, download it again"
            )
        indices[str(wnid)] = index
    return images, indices


def read_csv(root: Path, split: str) -> dict[str, list[str]]:
    """``{wnid: [file names]}`` from ``root/<split>.csv``, in the file's order."""
    path = csv_path(root, split)
    check_not_html(path, split, "CSV")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [cell.strip() for cell in rows[0]] if rows else []
    if header != ["filename", "label"]:
        raise ValueError(
            f"{path} must start with the header 'filename,label' (Ravi & Larochelle's split "
            "files); "
            f"its first line is {','.join(header)!r}"
        )
    files: dict[str, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise ValueError(
                f"{path}, line {line}: expected 'filename,label', got {','.join(row)!r}"
            )
        filename, wnid = (cell.strip() for cell in row)
        files.setdefault(wnid, []).append(filename)
    if not files:
        raise ValueError(f"{path} has a header but no images")
    return files


def _to_chw(image: Image.Image, image_size: int) -> np.ndarray:
    """One PIL image as a uint8 ``(3, image_size, image_size)`` array."""
    image = image.convert("RGB")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), _RESAMPLE)
    return np.asarray(image).transpose(2, 0, 1)


def decode_csv(
    files: dict[str, list[str]], folder: Path, image_size: int, progress: bool
) -> torch.Tensor:
    """Decode and resize the images named in ``files`` (wnid order, then list order).

    Returns:
        uint8 tensor of shape ``(n_classes, n_per_class, 3, image_size, image_size)``.
    """
    wnids = list(files)
    n_per_class = len(files[wnids[0]])
    out = torch.empty(len(wnids), n_per_class, 3, image_size, image_size, dtype=torch.uint8)
    jobs = [
        (c, i, folder / name) for c, wnid in enumerate(wnids) for i, name in enumerate(files[wnid])
    ]

    def decode(job):
        c, i, path = job
        try:
            with Image.open(path) as image:
                out[c, i].numpy()[...] = _to_chw(image, image_size)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"cannot read image {path} ({error}); replace the file or remove its CSV row"
            ) from error

    # Pillow releases the GIL while decoding and resampling, so threads decode in parallel.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for _ in tqdm(
            pool.map(decode, jobs),
            total=len(jobs),
            desc="decoding miniImageNet",
            unit="img",
            disable=not progress,
            leave=False,
        ):
            pass
    return out


def gather_pickle(
    images: np.ndarray, indices: dict[str, np.ndarray], image_size: int, progress: bool
) -> torch.Tensor:
    """Group the pickle's images by class (``indices`` in wnid order), resized if needed.

    Returns:
        uint8 tensor of shape ``(n_classes, n_per_class, 3, image_size, image_size)``.
    """
    n_per_class = len(next(iter(indices.values())))
    out = torch.empty(len(indices), n_per_class, 3, image_size, image_size, dtype=torch.uint8)
    same_size = images.shape[1:3] == (image_size, image_size)
    for c, index in enumerate(
        tqdm(
            indices.values(),
            desc="grouping miniImageNet",
            unit="class",
            disable=not progress,
            leave=False,
        )
    ):
        if same_size:
            out[c] = torch.from_numpy(images[index]).permute(0, 3, 1, 2)
        else:
            out[c] = torch.from_numpy(
                np.stack([_to_chw(Image.fromarray(images[i]), image_size) for i in index])
            )
    return out
