"""Lake et al.'s (2015) twenty one-shot classification runs on Omniglot.

Each run is a 20-way, 1-shot task within one alphabet: one training image of each of
20 characters, and 20 test images (one per character, by other drawers) to classify.
The score is the error rate averaged over the 20 runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ..common import atomic_path, check_cache_writable, check_positive_int
from .archives import damaged, fetch, open_source
from .omniglot import archive_path, read_ink_file

RUNS_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/one-shot-classification/all_runs.zip"
N_RUNS = 20
N_WAY = 20
_LABEL_LINE = re.compile(r"^(run\d+)/test/item(\d+)\.png\s+(run\d+)/training/class(\d+)\.png$")


@dataclass
class OneShotRun:
    """One run: 20 training images (one per class) and 20 test images to classify.

    Attributes:
        name: ``"run01"`` to ``"run20"``.
        support_x: uint8 training images of shape ``(20, 1, s, s)``, ink 255 on 0;
            image ``k`` is class ``k``.
        query_x: uint8 test images of shape ``(20, 1, s, s)``.
        query_y: long tensor of shape ``(20,)``: the class of each test image.
    """

    name: str
    support_x: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    @property
    def support_y(self) -> torch.Tensor:
        """``arange(20)``: the training images are one per class, in class order."""
        return torch.arange(len(self.support_x), device=self.support_x.device)


def _run_files(names) -> dict[str, str]:
    """Map ``"runNN/..."`` to each file's full name, whatever folder holds the runs."""
    files = {}
    for name in names:
        parts = PurePosixPath(name).parts
        start = next((i for i, part in enumerate(parts) if re.fullmatch(r"run\d\d", part)), None)
        if start is not None:
            files["/".join(parts[start:])] = name
    return files


def _check_layout(names, source: Path) -> dict[str, str]:
    files = _run_files(names)
    expected = [
        f"run{r:02d}/{file}"
        for r in range(1, N_RUNS + 1)
        for file in (
            "class_labels.txt",
            *(f"training/class{k:02d}.png" for k in range(1, N_WAY + 1)),
            *(f"test/item{k:02d}.png" for k in range(1, N_WAY + 1)),
        )
    ]
    missing = [f for f in expected if f not in files]
    if missing:
        raise ValueError(
            f"{source} is not Lake et al.'s all_runs layout: {len(missing)} of its "
            f"{len(expected)} files are missing, e.g. {missing[:3]} "
            f"(expected run01..run{N_RUNS:02d}, each with "
            f"class_labels.txt, training/class01..{N_WAY:02d}.png and test/item01..{N_WAY:02d}.png)"
        )
    return files


def _labels(text: str, run: str, source: Path) -> torch.Tensor:
    classes = [-1] * N_WAY
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LABEL_LINE.match(line.strip())
        if not match or match[1] != run or match[3] != run:
            raise ValueError(
                f"{source}: {run}/class_labels.txt line {number} reads {line!r}; expected "
                f"'{run}/test/itemMM.png {run}/training/classKK.png'"
            )
        item, label = int(match[2]), int(match[4])
        if not (1 <= item <= N_WAY and 1 <= label <= N_WAY) or classes[item - 1] != -1:
            raise ValueError(
                f"{source}: {run}/class_labels.txt line {number} ({line!r}) "
                "is out of range or repeated"
            )
        classes[item - 1] = label - 1
    if -1 in classes:
        raise ValueError(
            f"{source}: {run}/class_labels.txt labels no test item {classes.index(-1) + 1:02d}"
        )
    return torch.tensor(classes)


def download_runs(root=None, progress: bool = True) -> Path:
    """Download ``all_runs.zip`` (if it is not there yet) into ``<root>/omniglot/``.

    No md5 is published for it, so the file is checked to be a zip with the runs'
    layout instead; a failed check or an interrupted download leaves no file.

    Args:
        root: data folder; default ``fslearn.cache_dir() / "data"``.
        progress: show a progress bar.

    Returns:
        The path of the zip.
    """
    path = archive_path("all_runs", root)
    if path.exists():
        with open_source(path) as (names, _):
            _check_layout(names, path)
        return path
    check_cache_writable(path)
    with atomic_path(path) as tmp:
        fetch(RUNS_URL, tmp, progress)
        try:
            with open_source(tmp) as (names, _):
                _check_layout(names, tmp)
        except ValueError as error:  # raising here makes atomic_path delete the download
            raise ValueError(f"the download of {RUNS_URL} was discarded: {error}") from error
    return path


def load_runs(
    path=None, image_size: int = 28, download: bool = False, root=None, progress: bool = True
) -> list[OneShotRun]:
    """Lake et al.'s 20 one-shot classification runs.

    Args:
        path: ``all_runs.zip`` or its extracted folder; default ``<root>/omniglot/all_runs.zip``.
        image_size: side of the square images after resizing (the originals are 105).
        download: download the zip if ``path`` is not given and the zip is missing.
        root: data folder; default ``fslearn.cache_dir() / "data"``.
        progress: show a progress bar while downloading.

    Returns:
        20 :class:`OneShotRun`, ``run01`` first.

    Raises:
        FileNotFoundError: the runs are missing.
        ValueError: not a zip, not the runs' layout, or a damaged image, label file or zip
            member (named, with the archive).
    """
    image_size = check_positive_int("image_size", image_size, why="e.g. 28 or 105")
    if path is None:
        path = archive_path("all_runs", root)
        if download and not path.exists():
            download_runs(root, progress)
        elif not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist. Call load_runs(download=True) to download it from "
                f"{RUNS_URL}, or put the zip there, or pass path= to a copy "
                "(zip or extracted folder)"
            )
    source = Path(path).expanduser()
    runs = []
    with open_source(source) as (names, read):
        files = _check_layout(names, source)

        def images(kind: str, run: str) -> torch.Tensor:
            pictures = [
                read_ink_file(read, source, files[f"{run}/{kind}{k:02d}.png"], image_size)
                for k in range(1, N_WAY + 1)
            ]
            return torch.from_numpy(np.stack(pictures)).unsqueeze(1)

        for r in range(1, N_RUNS + 1):
            run = f"run{r:02d}"
            name = files[f"{run}/class_labels.txt"]
            try:
                text = read(name).decode("utf-8-sig")  # a BOM, if an editor added one
            except UnicodeDecodeError as error:
                byte = error.object[error.start]
                raise damaged(source, name, f"is not UTF-8 text (it holds {byte:#04x})") from error
            labels = _labels(text, run, source)
            runs.append(
                OneShotRun(run, images("training/class", run), images("test/item", run), labels)
            )
    return runs
