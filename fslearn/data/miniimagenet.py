"""miniImageNet from a copy the user supplies, in either of its two common formats.

miniImageNet (Vinyals et al., 2016) is 100 ImageNet classes × 600 colour images,
84×84; the split everyone uses (Ravi & Larochelle, 2017) has 64 training, 16
validation and 20 test classes. ImageNet's licence keeps it from being
downloaded freely, so :func:`load_miniimagenet` reads a copy from a folder
``root`` laid out in one of two ways:

1. **Split CSVs and an image folder** (Ravi & Larochelle's layout)::

       root/train.csv  root/val.csv  root/test.csv   # header "filename,label"
       root/images/n0153282900000005.jpg ...          # any size; resized

   Each CSV row names an image in ``root/images`` and its class, e.g.
   ``n0153282900000005.jpg,n01532829``.

2. **Pickles** (the widely shared cache files)::

       root/mini-imagenet-cache-train.pkl  (…-val.pkl, …-test.pkl)

   Each holds a dict with ``image_data`` (uint8 array ``N×84×84×3``) and
   ``class_dict`` (``{wnid: [indices into image_data]}``).

The decoded split is cached under :func:`fslearn.cache_dir`, so only the
first load pays for decoding.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
import pickle
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..common import cache_dir, cached
from .dataset import FewShotDataset

try:
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

MINIIMAGENET_SPLIT_SIZES = {"train": 64, "val": 16, "test": 20}
"""Classes per split in Ravi & Larochelle's standard split (600 images each)."""

FORMATS = ("auto", "csv", "pickle")
# Bump when decoding changes (resampling, layout), so old caches are not reused.
LOADER_VERSION = 1
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
_LAYOUTS = (
    "miniImageNet is read from one of two layouts:\n"
    "  1. split CSVs + image folder: root/train.csv, root/val.csv, root/test.csv "
    "(header 'filename,label') with the images in root/images/<filename>;\n"
    "  2. pickles: root/mini-imagenet-cache-train.pkl, -val.pkl, -test.pkl "
    "(a dict with 'image_data' and 'class_dict')."
)


def _pickle_path(root: Path, split: str) -> Path:
    return root / f"mini-imagenet-cache-{split}.pkl"


def _csv_path(root: Path, split: str) -> Path:
    return root / f"{split}.csv"


def _human_size(n_bytes: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes} bytes" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000


def _check_not_html(path: Path, split: str, kind: str) -> None:
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


def _read_pickle(path: Path, split: str, progress: bool) -> tuple[np.ndarray, dict]:
    """``image_data`` and ``class_dict`` from a miniImageNet pickle, safely."""
    _check_not_html(path, split, "pickle")
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
            f"{path} ({_human_size(size)}) is not a readable pickle ({type(error).__name__}: {error}). "
            f"It is probably truncated or corrupt, e.g. by an interrupted download: download it again "
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
            f"{path}: class_dict must be a dict {{wnid: [image indices]}}; got {type(class_dict).__name__}"
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


def _read_csv(root: Path, split: str) -> dict[str, list[str]]:
    """``{wnid: [file names]}`` from ``root/<split>.csv``, in the file's order."""
    path = _csv_path(root, split)
    _check_not_html(path, split, "CSV")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [cell.strip() for cell in rows[0]] if rows else []
    if header != ["filename", "label"]:
        raise ValueError(
            f"{path} must start with the header 'filename,label' (Ravi & Larochelle's split files); "
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


def _list_counts(counts: dict[str, int]) -> str:
    """``"n01 has 599, n02 has 598 (and 3 more)"``: the first five classes, for an error message."""
    listed = ", ".join(f"{wnid} has {n}" for wnid, n in sorted(counts.items())[:5])
    return listed + (f" (and {len(counts) - 5} more)" if len(counts) > 5 else "")


def _equal_counts(counts: dict[str, int], n_per_class: int | None, source: Path) -> int:
    """The images per class to keep: all of them, or ``n_per_class``, if every class has them."""
    if n_per_class is not None:
        short = {wnid: n for wnid, n in counts.items() if n < n_per_class}
        if short:
            raise ValueError(
                f"n_per_class={n_per_class}, but in {source} {_list_counts(short)}; "
                f"pass at most n_per_class={min(counts.values())}"
            )
        return n_per_class
    usual = Counter(counts.values()).most_common(1)[0][0]
    odd = {wnid: n for wnid, n in counts.items() if n != usual}
    if odd:
        raise ValueError(
            f"classes in {source} have different numbers of images: most have {usual}, but "
            f"{_list_counts(odd)}. A FewShotDataset needs the same "
            f"number per class: pass n_per_class={min(counts.values())} to keep the first that many of "
            "each class, or repair the copy (the standard one has 600 per class)."
        )
    return usual


def _fingerprint(paths) -> tuple[list, list[Path]]:
    """Size and modification time of each file (a cheap test that the copy has not changed), and the missing files."""
    stats, missing = [], []
    for p in paths:
        try:
            s = p.stat()
        except FileNotFoundError:
            missing.append(p)
        else:
            stats.append([s.st_size, s.st_mtime_ns])
    return stats, missing


def _cache_file(
    root: Path, split: str, image_size: int, fmt: str, n_per_class, fingerprint
) -> Path:
    key = json.dumps(
        {
            "version": LOADER_VERSION,
            "root": str(root),
            "split": split,
            "image_size": image_size,
            "format": fmt,
            "n_per_class": n_per_class,
            "files": fingerprint,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / f"miniimagenet-v{LOADER_VERSION}-{split}-{image_size}px-{fmt}-{digest}.pt"


def _to_chw(image: Image.Image, image_size: int) -> np.ndarray:
    """One PIL image as a uint8 ``(3, image_size, image_size)`` array."""
    image = image.convert("RGB")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), _RESAMPLE)
    return np.asarray(image).transpose(2, 0, 1)


def _decode_csv(
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


def _gather_pickle(
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


def _detect_format(root: Path, split: str, requested: str) -> str:
    """The format to read: ``requested``, or for ``"auto"`` the one whose files are present."""
    csv_path, pickle_path, folder = (
        _csv_path(root, split),
        _pickle_path(root, split),
        root / "images",
    )
    has_pickle = pickle_path.is_file()
    has_csv = csv_path.is_file() and folder.is_dir()
    fmt = requested
    if fmt == "auto":
        # The pickle wins when both are there: one file, nothing to decode.
        fmt = "pickle" if has_pickle else "csv" if has_csv else None
    if fmt == "pickle" and has_pickle or fmt == "csv" and has_csv:
        return fmt
    looked_for = {
        "csv": [
            f"{csv_path} ({'found' if csv_path.is_file() else 'missing'})",
            f"the folder {folder} ({'found' if folder.is_dir() else 'missing'})",
        ],
        "pickle": [f"{pickle_path} (missing)"],
    }
    wanted = ["csv", "pickle"] if fmt is None else [fmt]
    if root.is_dir():
        # Often the copy is there under another name, or one folder further down.
        present = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        where = f"{root} (which holds {', '.join(present[:8]) + (', …' if len(present) > 8 else '') or 'nothing'})"
    else:
        where = f"{root}, which is not a folder"
    raise FileNotFoundError(
        f"no miniImageNet {split} split (format={requested!r}) in {where}. Looked for "
        + "; ".join(item for w in wanted for item in looked_for[w])
        + ".\n"
        + _LAYOUTS
        + "\nminiImageNet cannot be downloaded by fslearn (ImageNet's licence): "
        "point root at your own copy."
    )


def load_miniimagenet(
    root,
    split: str = "train",
    image_size: int = 84,
    format: str = "auto",
    *,
    progress: bool = True,
    cache: bool = True,
    n_per_class: int | None = None,
    device=None,
) -> FewShotDataset:
    """One split of miniImageNet, read from a copy you supply (see the module docs for layouts).

    Args:
        root: the folder holding either ``train.csv``/``val.csv``/``test.csv`` and
            ``images/``, or ``mini-imagenet-cache-{train,val,test}.pkl``.
        split: ``"train"`` (64 classes), ``"val"`` (16) or ``"test"`` (20), after
            Ravi & Larochelle. A copy with other class counts loads with a warning.
        image_size: side of the square images; anything other than the file's
            size is resampled with Lanczos (84 is the standard and needs none
            for the canonical copies).
        format: ``"csv"``, ``"pickle"`` or ``"auto"``, which picks the pickle if
            it is present, else the CSV and image folder.
        progress: show progress bars while reading and decoding.
        cache: read and write the decoded split in ``fslearn.io.cache_dir()``
            (about 0.8 GB for the train split at 84 px), keyed by the folder's
            resolved path, the split, ``image_size``, format, ``n_per_class``
            and the size and modification time of every source file, written
            atomically. ``False`` decodes every time and writes nothing.
        n_per_class: keep only the first ``n_per_class`` images of each class
            (file order). Needed for copies whose classes have different
            numbers of images, since a dataset holds the same number per class;
            by default all are kept and unequal counts are an error.
        device: where to put the images (``None``: CPU).

    Returns:
        A :class:`~fslearn.data.FewShotDataset` with uint8 RGB images of shape
        ``(n_classes, n_per_class, 3, image_size, image_size)`` (``(64, 600, 3,
        84, 84)`` for the standard train split), classes sorted by ImageNet wnid
        (the class names, e.g. ``"n01532829"``), images in file order, and every
        class's group set to ``split``.

    Raises:
        FileNotFoundError: the split's files are not in ``root``.
        ValueError: a file is an HTML page saved in place of the data, a
            truncated or corrupt pickle or image, has the wrong image shape, or
            classes have unequal image counts.
        pickle.UnpicklingError: the pickle refers to anything but numpy arrays
            (refused without running it).
    """
    if split not in MINIIMAGENET_SPLIT_SIZES:
        raise ValueError(f"split must be one of {list(MINIIMAGENET_SPLIT_SIZES)}; got {split!r}")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, e.g. 84; got {image_size!r}")
    if n_per_class is not None and (not isinstance(n_per_class, int) or n_per_class < 1):
        raise ValueError(
            f"n_per_class must be None (keep all) or a positive int; got {n_per_class!r}"
        )
    root = Path(root).expanduser().resolve()
    fmt = _detect_format(root, split, format)

    if fmt == "csv":
        files = _read_csv(root, split)
        files = {wnid: files[wnid] for wnid in sorted(files)}
        source = _csv_path(root, split)
        paths = [root / "images" / name for names in files.values() for name in names]
        fingerprint, missing = _fingerprint([source, *paths])
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of the {len(paths)} images listed in {source} are not in {root / 'images'}, "
                f"e.g. {', '.join(p.name for p in missing[:3])}. Unpack the whole image archive there."
            )
    else:
        source = _pickle_path(root, split)
        fingerprint, _ = _fingerprint([source])
    path = _cache_file(root, split, image_size, fmt, n_per_class, fingerprint)

    def build() -> dict:
        if fmt == "csv":
            keep = _equal_counts(
                {wnid: len(names) for wnid, names in files.items()}, n_per_class, source
            )
            images = _decode_csv(
                {w: names[:keep] for w, names in files.items()},
                root / "images",
                image_size,
                progress,
            )
            return {"images": images, "class_names": list(files)}
        data, indices = _read_pickle(source, split, progress)
        indices = {wnid: indices[wnid] for wnid in sorted(indices)}
        keep = _equal_counts(
            {wnid: len(index) for wnid, index in indices.items()}, n_per_class, source
        )
        images = _gather_pickle(
            data, {w: index[:keep] for w, index in indices.items()}, image_size, progress
        )
        del data  # the raw array is as large as the result: free it before writing the cache
        return {"images": images, "class_names": list(indices)}

    saved = cached(path, build, enabled=cache)
    images, class_names = saved["images"], saved["class_names"]

    expected = MINIIMAGENET_SPLIT_SIZES[split]
    if len(class_names) != expected:
        warnings.warn(
            f"miniImageNet {split} in {root} has {len(class_names)} classes; the standard split has "
            f"{expected}. Loading it anyway (fine for a subset; otherwise check the copy is complete).",
            stacklevel=2,
        )
    dataset = FewShotDataset(
        images, class_names, [split] * len(class_names), name=f"miniImageNet {split}"
    )
    return dataset if device is None else dataset.to(device)
