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

import hashlib
import json
import warnings
from pathlib import Path

import torch

from ..common import cache_dir, cached, check_positive_int
from .dataset import FewShotDataset
from .miniimagenet_files import csv_path, decode_csv, gather_pickle, pickle_path, read_csv
from .miniimagenet_pickle import read_pickle

MINIIMAGENET_SPLIT_SIZES = {"train": 64, "val": 16, "test": 20}
"""Classes per split in Ravi & Larochelle's standard split (600 images each)."""

FORMATS = ("auto", "csv", "pickle")
# Bump when decoding changes (resampling, layout), so old caches are not reused.
LOADER_VERSION = 2
_LAYOUTS = (
    "miniImageNet is read from one of two layouts:\n"
    "  1. split CSVs + image folder: root/train.csv, root/val.csv, root/test.csv "
    "(header 'filename,label') with the images in root/images/<filename>;\n"
    "  2. pickles: root/mini-imagenet-cache-train.pkl, -val.pkl, -test.pkl "
    "(a dict with 'image_data' and 'class_dict')."
)


def _list_counts(counts: dict[str, int]) -> str:
    """``"n01 has 599, n02 has 598 (and 3 more)"``: the first five classes, for an error message."""
    listed = ", ".join(f"{wnid} has {n}" for wnid, n in sorted(counts.items())[:5])
    return listed + (f" (and {len(counts) - 5} more)" if len(counts) > 5 else "")


def _kept(counts: dict[str, int], n_per_class: int | None, source: Path) -> int | None:
    """The images per class to keep: all of them (None), or ``n_per_class``, if every class has
    them."""
    if n_per_class is not None:
        short = {wnid: n for wnid, n in counts.items() if n < n_per_class}
        if short:
            raise ValueError(
                f"n_per_class={n_per_class}, but in {source} {_list_counts(short)}; "
                f"pass at most n_per_class={min(counts.values())}"
            )
    return n_per_class


def _cache_problem(saved: dict, image_size: int) -> str | None:
    images, counts, names = saved["images"], saved["counts"], saved["class_names"]
    if not isinstance(images, torch.Tensor) or not isinstance(counts, torch.Tensor):
        return "images or counts is not a tensor"
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (3, image_size, image_size):
        return (
            f"images are {images.dtype} of shape {tuple(images.shape)}; expected torch.uint8 of "
            f"shape (n_images, 3, {image_size}, {image_size})"
        )
    if counts.dim() != 1 or len(counts) != len(names) or int(counts.sum()) != len(images):
        return f"{len(images)} images, counts of shape {tuple(counts.shape)}, {len(names)} classes"
    if not all(isinstance(name, str) for name in names):
        return "class_names are not strings"
    return None


def _fingerprint(paths) -> tuple[list, list[Path]]:
    """Size and modification time of each file (a cheap test that the copy has not changed),
    and the missing files."""
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


def _detect_format(root: Path, split: str, requested: str) -> str:
    """The format to read: ``requested``, or for ``"auto"`` the one whose files are present."""
    csv_file, pickle_file, folder = csv_path(root, split), pickle_path(root, split), root / "images"
    has_pickle = pickle_file.is_file()
    has_csv = csv_file.is_file() and folder.is_dir()
    fmt = requested
    if fmt == "auto":
        # The pickle wins when both are there: one file, nothing to decode.
        fmt = "pickle" if has_pickle else "csv" if has_csv else None
    if fmt == "pickle" and has_pickle or fmt == "csv" and has_csv:
        return fmt
    looked_for = {
        "csv": [
            f"{csv_file} ({'found' if csv_file.is_file() else 'missing'})",
            f"the folder {folder} ({'found' if folder.is_dir() else 'missing'})",
        ],
        "pickle": [f"{pickle_file} (missing)"],
    }
    wanted = ["csv", "pickle"] if fmt is None else [fmt]
    if root.is_dir():
        # Often the copy is there under another name, or one folder further down.
        present = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        listed = ", ".join(present[:8]) + (", …" if len(present) > 8 else "")
        where = f"{root} (which holds {listed or 'nothing'})"
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
        cache: read and write the decoded split in ``fslearn.cache_dir()``
            (about 0.8 GB for the train split at 84 px), keyed by the folder's
            resolved path, the split, ``image_size``, format, ``n_per_class``
            and the size and modification time of every source file, written
            atomically. ``False`` decodes every time and writes nothing.
        n_per_class: keep only the first ``n_per_class`` images of each class
            (file order), for classes of equal size; by default every image is kept, and
            classes of different sizes make a ragged dataset (the samplers draw from each
            class's own count).
        device: where to put the images (``None``: CPU).

    Returns:
        A :class:`~fslearn.FewShotDataset` with uint8 RGB images of shape
        ``(n_images, 3, image_size, image_size)`` as ``flat_images`` (38 400 images of 64
        classes × 600 for the standard train split), classes sorted by ImageNet wnid
        (the class names, e.g. ``"n01532829"``), images in file order, and every
        class's group set to ``split``.

    Raises:
        FileNotFoundError: the split's files are not in ``root``.
        ValueError: a file is an HTML page saved in place of the data, a
            truncated or corrupt pickle or image, has the wrong image shape, or a class
            has fewer than ``n_per_class`` images; or the pickle refers to anything but
            numpy arrays (refused without running it; the error is also a
            :class:`pickle.UnpicklingError`).
    """
    if split not in MINIIMAGENET_SPLIT_SIZES:
        raise ValueError(f"split must be one of {list(MINIIMAGENET_SPLIT_SIZES)}; got {split!r}")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    image_size = check_positive_int("image_size", image_size, why="e.g. 84")
    if n_per_class is not None:
        n_per_class = check_positive_int("n_per_class", n_per_class, why="or None to keep all")
    root = Path(root).expanduser().resolve()
    fmt = _detect_format(root, split, format)

    if fmt == "csv":
        files = read_csv(root, split)
        files = {wnid: files[wnid] for wnid in sorted(files)}
        source = csv_path(root, split)
        paths = [root / "images" / name for names in files.values() for name in names]
        fingerprint, missing = _fingerprint([source, *paths])
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of the {len(paths)} images listed in {source} are not in "
                f"{root / 'images'}, "
                f"e.g. {', '.join(p.name for p in missing[:3])}. Unpack the whole image archive "
                "there."
            )
    else:
        source = pickle_path(root, split)
        fingerprint, _ = _fingerprint([source])
    path = _cache_file(root, split, image_size, fmt, n_per_class, fingerprint)

    def build() -> dict:
        if fmt == "csv":
            keep = _kept({wnid: len(names) for wnid, names in files.items()}, n_per_class, source)
            kept = {w: names[:keep] for w, names in files.items()}
            images = decode_csv(kept, root / "images", image_size, progress)
        else:
            data, indices = read_pickle(source, split, progress)
            indices = {wnid: indices[wnid] for wnid in sorted(indices)}
            keep = _kept({wnid: len(index) for wnid, index in indices.items()}, n_per_class, source)
            kept = {w: index[:keep] for w, index in indices.items()}
            images = gather_pickle(data, kept, image_size, progress)
            del data  # the raw array is as large as the result: free it before writing the cache
        counts = torch.tensor([len(v) for v in kept.values()], dtype=torch.long)
        return {"images": images, "class_names": list(kept), "counts": counts}

    saved = cached(
        path,
        build,
        keys=("images", "class_names", "counts"),
        check=lambda saved: _cache_problem(saved, image_size),
        enabled=cache,
    )
    images, class_names = saved["images"], saved["class_names"]

    expected = MINIIMAGENET_SPLIT_SIZES[split]
    if len(class_names) != expected:
        warnings.warn(
            f"miniImageNet {split} in {root} has {len(class_names)} classes; the standard split "
            "has "
            f"{expected}. Loading it anyway (fine for a subset; otherwise check the copy is "
            "complete).",
            stacklevel=2,
        )
    dataset = FewShotDataset(
        images,
        class_names,
        [split] * len(class_names),
        name=f"miniImageNet {split}",
        counts=saved["counts"],
    )
    return dataset if device is None else dataset.to(device)
