"""Reading miniImageNet's two file formats: split CSVs with an image folder, and pickles.

The pickles' safe reader is in :mod:`fslearn.data.miniimagenet_pickle`; both readers
recognise a saved HTML page (a failed Google Drive download) and say how to fetch the
file properly.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .archives import IMAGE_ERRORS
from .image_files import to_chw

# Rough sizes of the real files, quoted when a download turns out to be broken
# (pickles written with protocol 2 store the pixels as text, about 1.5× larger).
EXPECTED_SIZES = {
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


def human_size(n_bytes: int) -> str:
    """``n_bytes`` as people say it: ``"812 bytes"``, ``"1.2 MB"``."""
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
        f"{path} is an HTML page ({human_size(size)}), not the miniImageNet {split} {kind}"
        + (": it is Google Drive's large-file / virus-scan warning page" if from_drive else "")
        + ". The download saved the web page instead of the file. Download it again and "
        "confirm the warning: `gdown --fuzzy <share link>` handles it, or open the link in a "
        f"browser and click 'Download anyway'. Then check the size: the {split} {kind} is "
        f"{EXPECTED_SIZES[split, kind]}, not a few KB."
    )


def read_csv(root: Path, split: str) -> dict[str, list[str]]:
    """``{wnid: [file names]}`` from ``root/<split>.csv``, in the file's order."""
    path = csv_path(root, split)
    check_not_html(path, split, "CSV")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text (it holds the byte {error.object[error.start]:#04x}): "
            f"it is damaged or another file. Download Ravi & Larochelle's {split}.csv again."
        ) from error
    except csv.Error as error:  # e.g. an unclosed quote that swallows the rest of the file
        raise ValueError(
            f"{path} is not a readable CSV file ({error}): it is damaged or another file. "
            f"Download Ravi & Larochelle's {split}.csv again."
        ) from error
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
        if any("\x00" in cell for cell in row):  # a file padded with zeros by a crash
            raise ValueError(
                f"{path}, line {line} holds NUL bytes: the file is damaged. Download Ravi & "
                f"Larochelle's {split}.csv again."
            )
        if len(row) != 2:
            raise ValueError(
                f"{path}, line {line}: expected 'filename,label', got {','.join(row)!r}"
            )
        filename, wnid = (cell.strip() for cell in row)
        if not filename or not wnid:
            raise ValueError(
                f"{path}, line {line}: expected 'filename,label', got {','.join(row)!r} "
                "(an empty filename or label)"
            )
        files.setdefault(wnid, []).append(filename)
    if not files:
        raise ValueError(f"{path} has a header but no images")
    return files


def decode_csv(
    files: dict[str, list[str]], folder: Path, image_size: int, progress: bool
) -> torch.Tensor:
    """Decode and resize the images named in ``files`` (wnid order, then list order).

    Returns:
        uint8 tensor of shape ``(n_images, 3, image_size, image_size)``, class-major.
    """
    paths = [folder / name for names in files.values() for name in names]
    out = torch.empty(len(paths), 3, image_size, image_size, dtype=torch.uint8)
    jobs = list(enumerate(paths))

    def decode(job):
        i, path = job
        try:
            with Image.open(path) as image:
                out[i].numpy()[...] = to_chw(image, "RGB", (image_size, image_size))
        except IMAGE_ERRORS as error:
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
        uint8 tensor of shape ``(n_images, 3, image_size, image_size)``, class-major.
    """
    n_images = sum(len(index) for index in indices.values())
    out = torch.empty(n_images, 3, image_size, image_size, dtype=torch.uint8)
    same_size = images.shape[1:3] == (image_size, image_size)
    start = 0
    for index in tqdm(
        indices.values(),
        desc="grouping miniImageNet",
        unit="class",
        disable=not progress,
        leave=False,
    ):
        stop = start + len(index)
        if same_size:
            out[start:stop] = torch.from_numpy(images[index]).permute(0, 3, 1, 2)
        else:
            size = (image_size, image_size)
            out[start:stop] = torch.from_numpy(
                np.stack([to_chw(Image.fromarray(images[i]), "RGB", size) for i in index])
            )
        start = stop
    return out
