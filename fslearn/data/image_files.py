"""Image files of the user's own, decoded in parallel into a cached, memory-mappable dataset.

What :func:`~fslearn.load_folder` and :func:`~fslearn.load_split_file` share: once either has
listed its classes and their files, :func:`load_classes` decodes them (Pillow, in a thread
pool: Pillow releases the GIL while it decodes and resamples) straight into a cache of
:mod:`fslearn.data.storage`, keyed by what was asked and checked against a fingerprint of the
files (names, sizes, modification times). Nothing is ever written next to the user's files.

Every image is converted with Pillow to ``"L"`` (one channel) or ``"RGB"`` (three), as
torchvision's ``ImageFolder`` loads them (an alpha channel is dropped, a palette expanded, the
first frame of an animated GIF taken, EXIF orientation not applied), then resized to a square
with Lanczos resampling, without cropping, as the miniImageNet loader does (the usual
few-shot practice: miniImageNet's 84×84 images are plain resizes of ImageNet photos).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..common import cache_dir, check_positive_int, progress_bar
from .archives import IMAGE_ERRORS
from .dataset import FewShotDataset
from .storage import load_or_build

#: The file endings read as images (any case); other files in a class folder are ignored.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Pillow's mode for each number of channels.
MODES = {1: "L", 3: "RGB"}
# Pillow modes of one channel (with or without alpha); every other mode counts as colour.
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Bump when decoding changes (conversion, resampling), so that old caches are rebuilt.
_DECODER_VERSION = 2  # 2: EXIF orientation applied
# Files decoded per job: large enough that the pool's overhead is small, small enough that the
# progress bar moves and an error stops the work soon.
_CHUNK = 32


class ImageFolderError(ValueError):
    """Images of the user's (a folder, a split file, a dataset) that cannot become a few-shot
    dataset: the message names the file, line or value, and the fix."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def check_channels(channels) -> int | None:
    if channels is None:
        return None
    if channels not in MODES or isinstance(channels, bool):
        raise ValueError(
            f"channels must be 1 (grey), 3 (colour) or None (the images' own); got {channels!r}"
        )
    return int(channels)


def decode_image(path: Path, image_size: int, mode: str) -> np.ndarray:
    """The image file ``path`` as uint8 ``(C, image_size, image_size)``, C = 1 for ``"L"``,
    upright: a camera's EXIF orientation tag is applied first, as image viewers do, so a
    photo taken with the phone turned is not learned lying on its side.

    Raises:
        ImageFolderError: the file cannot be read as an image (named, with Pillow's reason).
    """
    try:
        with Image.open(path) as image:
            return to_chw(ImageOps.exif_transpose(image), mode, (image_size, image_size))
    except IMAGE_ERRORS as error:
        raise _unreadable(path, error) from error


def to_chw(image: Image.Image, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """A Pillow image converted to ``mode`` (``"L"`` or ``"RGB"``) and resized (Lanczos, no
    crop) to ``size`` = ``(H, W)`` unless it has it (or ``size`` is None): uint8 ``(C, H, W)``.
    Every loader of image files decodes through it, so all resize alike: Lanczos keeps
    detail without aliasing (miniImageNet's canonical 84×84 copies are such resizes)."""
    image = image.convert(mode)
    if size is not None and image.size != size[::-1]:
        image = image.resize(size[::-1], Image.Resampling.LANCZOS)
    array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _unreadable(path: Path, error: Exception) -> ImageFolderError:
    return ImageFolderError(
        f"{path} is not a readable image ({error}): replace the file with a good copy, or remove it"
    )


def _image_channels(path: Path) -> int:
    try:
        with Image.open(path) as image:  # reads the header only
            return 1 if image.mode in GREY_MODES else 3
    except IMAGE_ERRORS as error:
        raise _unreadable(path, error) from error


def _run(jobs, work, workers: int, progress: bool, desc: str) -> list:
    """``[work(job) for job in jobs]`` in ``workers`` threads, chunk by chunk, with a bar.

    The first error stops the rest: jobs not started are cancelled.
    """
    chunks = [jobs[i : i + _CHUNK] for i in range(0, len(jobs), _CHUNK)]
    results = []
    with progress_bar(len(jobs), desc, progress, unit="img", leave=False) as bar:
        if workers <= 1:
            for chunk in chunks:
                results += [work(job) for job in chunk]
                bar.update(len(chunk))
            return results
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [pool.submit(lambda c: [work(job) for job in c], c) for c in chunks]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when="FIRST_COMPLETED")
                for future in done:
                    future.result()  # raises the chunk's error
                    bar.update(len(future.result()))
            for future in futures:
                results += future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def default_workers(workers) -> int:
    if workers is None:
        return min(8, os.cpu_count() or 1)
    return check_positive_int("workers", workers, why="threads decoding images; 1: no pool")


def fingerprint(paths) -> str:
    """A digest of each file's path, size and modification time: it changes when a file is
    added, removed, renamed or rewritten."""
    listing = hashlib.sha256()
    for path in paths:
        info = path.stat()
        listing.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return listing.hexdigest()


def cache_path(kind: str, source: Path, **settings) -> Path:
    """The cache folder of ``source`` read with ``settings``: one per request, rebuilt in place
    when the files change."""
    key = json.dumps(
        {"kind": kind, "source": str(source), "version": _DECODER_VERSION, **settings},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    slug = re.sub(r"[^\w.-]", "_", source.stem)[:40]
    return cache_dir() / "folders" / f"{kind}-{slug}-{digest}"


def load_classes(
    classes: list[tuple[str, str, list[Path]]],
    *,
    kind: str,
    source: Path,
    name: str,
    image_size: int,
    channels: int | None,
    mmap: bool | None,
    progress: bool,
    workers,
    cache: bool,
    settings: dict,
    watched: list[Path] = (),
) -> FewShotDataset:
    """Decode ``classes``, ``[(class name, group, [image paths])]``, through the cache (its
    folder named by ``kind``, ``source`` and ``settings``; rebuilt when an image or a file of
    ``watched`` changes).

    Returns:
        A dataset with ``sum(len(paths))`` uint8 images ``(C, image_size, image_size)``,
        class-major, each class's images in the order given; memory-mapped per ``mmap``.
    """
    image_size = check_positive_int("image_size", image_size, why="e.g. 84")
    channels = check_channels(channels)
    workers = default_workers(workers)
    paths = [path for _, _, files in classes for path in files]
    files_digest = fingerprint([*watched, *paths])
    if channels is None:
        channels = _common_channels(paths, workers, progress)
    image_shape = (channels, image_size, image_size)
    mode = MODES[channels]

    def build(create) -> None:
        index = dict(
            name=name, class_names=[c for c, _, _ in classes], groups=[g for _, g, _ in classes]
        )
        with create([len(files) for _, _, files in classes], **index) as out:

            def work(job):
                i, path = job
                out[i] = decode_image(path, image_size, mode)

            _run(list(enumerate(paths)), work, workers, progress, f"decoding {name}")

    path = cache_path(kind, source, image_size=image_size, channels=channels, **settings)
    images, index = load_or_build(
        path, build, image_shape=image_shape, source=files_digest, mmap=mmap, enabled=cache
    )
    return FewShotDataset(
        images, index["class_names"], index["groups"], index["name"], counts=index["counts"]
    )


def _common_channels(paths: list[Path], workers: int, progress: bool) -> int:
    """The channels every image has; an error naming one of each kind when they differ."""
    found = _run(paths, _image_channels, workers, progress, "reading image headers")
    if len(set(found)) > 1:
        grey = next(p for p, c in zip(paths, found, strict=True) if c == 1)
        colour = next(p for p, c in zip(paths, found, strict=True) if c == 3)
        raise ImageFolderError(
            f"the images are grey and colour mixed ({found.count(1)} grey, e.g. {grey}; "
            f"{found.count(3)} colour, e.g. {colour}), and channels=None keeps each image's "
            "own: pass channels=3 (or 1) to convert every image to colour (or grey)"
        )
    return found[0]
