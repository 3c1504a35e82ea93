"""Real Omniglot (Lake et al. 2015): download, verify, extract, decode and cache.

The four published zips hold ``<name>/<Alphabet>/characterNN/<id>_<drawer>.png``:
105×105 one-bit images, black ink on white, 20 drawers per character. Loading
inverts them (ink 255 on 0, like every fslearn dataset), resizes them, and caches
the decoded tensors, so only the first load pays for decoding the PNGs. The
protocols that split the characters into training and test classes are in
:mod:`fslearn.data.omniglot_splits`.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from ..common import atomic_path, cache_dir, cached, check_cache_writable, check_positive_int
from .archives import IMAGE_ERRORS, damaged, fetch, md5, open_source
from .cache_check import dataset_problem
from .dataset import FewShotDataset

_BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
OMNIGLOT_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
    "images_background_small1": "e704a628b5459e08445c13499850abc4",
    "images_background_small2": "b75a71a51d3b13f821f212756fe481fd",
}
OMNIGLOT_URLS = {name: f"{_BASE_URL}/{name}.zip" for name in OMNIGLOT_MD5}
# Bump when decoding changes, so caches written by older code are not reused.
_CACHE_VERSION = 1


def _check_name(name: str) -> str:
    if name not in OMNIGLOT_MD5:
        raise ValueError(f"unknown Omniglot archive {name!r}; valid names: {sorted(OMNIGLOT_MD5)}")
    return OMNIGLOT_MD5[name]


def archive_path(name: str, root) -> Path:
    return Path(root if root is not None else cache_dir() / "data") / "omniglot" / f"{name}.zip"


def download_omniglot(name: str = "images_background", root=None, progress: bool = True) -> Path:
    """Download one Omniglot zip (if it is not there yet) and verify its md5.

    The download goes to a temporary file beside the target and is moved into place only
    once complete and verified, so an interrupted or wrong download leaves no file.

    Args:
        name: ``"images_background"`` (30 alphabets, 964 characters),
            ``"images_evaluation"`` (20 alphabets, 659 characters),
            ``"images_background_small1"`` or ``"images_background_small2"``.
        root: data folder; default ``fslearn.cache_dir() / "data"``. The zip is
            stored as ``<root>/omniglot/<name>.zip``.
        progress: show a progress bar.

    Returns:
        The path of the verified zip.

    Raises:
        ValueError: unknown ``name``, or a zip (already there or just downloaded) whose md5
            is not the published one.
        ConnectionError: the download failed.
    """
    expected = _check_name(name)
    path = archive_path(name, root)
    if path.exists():
        _verifymd5(path, name)
        return path
    url = OMNIGLOT_URLS[name]
    check_cache_writable(path)
    with atomic_path(path) as tmp:
        fetch(url, tmp, progress)
        actual = md5(tmp)
        if actual != expected:  # raising here makes atomic_path delete the download
            raise ValueError(
                f"the download of {url} has md5 {actual} but {name}.zip has md5 {expected}; it was "
                f"discarded. Try again; if it keeps happening a proxy or portal is answering in "
                f"GitHub's place: download the file by hand and pass it as path=..."
            )
    return path


def _verifymd5(path: Path, name: str) -> str:
    actual, expected = md5(path), OMNIGLOT_MD5[name]
    if actual != expected:
        raise ValueError(
            f"{path} has md5 {actual} but {name}.zip has md5 {expected}: the file is truncated, "
            f"damaged or another file. Delete it and download it again "
            f"(download_omniglot({name!r}) or load_omniglot({name!r}, download=True))."
        )
    return actual


def read_ink(data: bytes, image_size: int) -> np.ndarray:
    """One black-on-white PNG as uint8 ink (255) on 0, resized to ``(image_size, image_size)``."""
    image = ImageOps.invert(Image.open(io.BytesIO(data)).convert("L"))
    if image.size != (image_size, image_size):
        # Lanczos reproduces the book's reference pixel-space accuracies; bilinear scores
        # about 1 point higher.
        image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def read_ink_file(read, source: Path, name: str, image_size: int) -> np.ndarray:
    """:func:`read_ink` of the file ``name`` of the zip or folder ``source`` (read by ``read``).

    Raises:
        ValueError: the file is damaged or not an image; the message names ``source`` and
            ``name`` and says how to replace them.
    """
    data = read(name)
    try:
        return read_ink(data, image_size)
    except IMAGE_ERRORS as error:
        # Pillow's own message names an anonymous in-memory buffer, not the file.
        reason = "unknown image format" if isinstance(error, UnidentifiedImageError) else error
        raise damaged(source, name, f"is not a readable image ({reason})") from error


def _index(names, source: Path) -> list[tuple[str, str, list[str]]]:
    """Group PNG paths into ``(alphabet, character, paths sorted by drawer)``, sorted."""
    characters: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for name in names:
        parts = PurePosixPath(name).parts
        # macOS zips carry '__MACOSX/._x.png' resource forks that are not images.
        if not name.endswith(".png") or any(p.startswith((".", "__MACOSX")) for p in parts):
            continue
        if len(parts) < 3:
            raise ValueError(f"{source}: {name} is not in an <Alphabet>/<characterNN>/ folder")
        alphabet, character, file = parts[-3:]
        drawer = PurePosixPath(file).stem.rsplit("_", 1)[-1]
        if not drawer.isdigit():
            raise ValueError(f"{source}: {name} is not named <id>_<drawer>.png")
        characters.setdefault((alphabet, character), []).append((int(drawer), name))
    if not characters:
        raise ValueError(f"{source} holds no <Alphabet>/<characterNN>/<id>_<drawer>.png images")
    index = []
    for (alphabet, character), drawn in sorted(characters.items()):
        drawers = [d for d, _ in drawn]
        if len(set(drawers)) != len(drawers):
            raise ValueError(
                f"{source}: {alphabet}/{character} has a drawer twice ({sorted(drawers)}); "
                f"does the folder hold more than one dataset? Point path at one of them"
            )
        index.append((alphabet, character, [n for _, n in sorted(drawn)]))
    counts = {len(paths) for _, _, paths in index}
    if len(counts) > 1:
        uneven = [f"{a}/{c}: {len(p)}" for a, c, p in index if len(p) != len(index[0][2])]
        raise ValueError(
            f"{source}: characters have different numbers of drawers ({sorted(counts)}); "
            f"{len(index[0][2])} for {index[0][0]}/{index[0][1]} but {uneven[:5]}"
        )
    return index


def _decode(
    source: Path, image_size: int, progress: bool
) -> tuple[torch.Tensor, list[str], list[str]]:
    """Decode every character of a zip or folder.

    Returns:
        Images ``(n, drawers, 1, s, s)``, class names and alphabets.
    """
    with open_source(source) as (names, read):
        index = _index(names, source)
        images = np.empty((len(index), len(index[0][2]), 1, image_size, image_size), dtype=np.uint8)
        for i, (_, _, paths) in enumerate(
            tqdm(index, desc="decoding", disable=not progress, leave=False)
        ):
            for j, name in enumerate(paths):
                images[i, j, 0] = read_ink_file(read, source, name, image_size)
    return torch.from_numpy(images), [f"{a}/{c}" for a, c, _ in index], [a for a, _, _ in index]


def _fingerprint(folder: Path) -> str:
    # A folder has no md5: its file list, sizes and times stand in for its contents.
    listing = []
    for png in sorted(folder.rglob("*.png")):
        if not png.is_file():  # a broken link or a folder: skipped, as the index skips it
            continue
        info = png.stat()
        listing.append(f"{png.relative_to(folder).as_posix()} {info.st_size} {info.st_mtime_ns}")
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()[:32]


def load_omniglot(
    name: str | None = None,
    root=None,
    image_size: int = 28,
    download: bool = False,
    progress: bool = True,
    md5_check: bool = True,
    *,
    path=None,
    device=None,
) -> FewShotDataset:
    """Real Omniglot as a :class:`~fslearn.FewShotDataset`, decoded once and cached.

    Args:
        name: the archive (see :func:`download_omniglot`); default ``"images_background"``,
            or with ``path`` the file or folder name (``.../images_evaluation.zip`` →
            ``"images_evaluation"``).
        root: data folder holding ``omniglot/<name>.zip``; default
            ``fslearn.cache_dir() / "data"``.
        image_size: side of the square images after resizing (Lanczos, anti-aliased);
            105 keeps the originals.
        download: download the zip if it is missing.
        progress: show progress bars.
        md5_check: require a zip of one of the four published archives to have the published
            md5. Turn it off for a modified copy.
        path: a zip or an extracted folder of your own to read instead of ``root``'s; it may
            hold ``<Alphabet>/`` folders directly or under one top folder.
        device: where to put the images (``None``: CPU).

    Returns:
        A dataset with images of shape ``(n_characters, 20, 1, image_size, image_size)``,
        uint8, ink 255 on 0; characters sorted by alphabet then character folder, drawers by
        drawer number; class names ``"Alphabet/characterNN"``, groups the alphabets.

    Raises:
        FileNotFoundError: the zip is missing and ``download`` is False.
        ValueError: wrong md5, not a zip, not Omniglot's layout, or a damaged image or zip
            member (named, with the archive).
    """
    image_size = check_positive_int("image_size", image_size, why="e.g. 28 or 105")
    if path is None:
        name = name or "images_background"
        _check_name(name)
        source = archive_path(name, root)
        if not source.exists():
            if not download:
                raise FileNotFoundError(
                    f"{source} does not exist. Call load_omniglot({name!r}, download=True) to "
                    "download "
                    f"it from {OMNIGLOT_URLS[name]}, or put the zip at {source}, or pass path= to "
                    "a copy"
                )
            download_omniglot(name, root, progress)
    else:
        source = Path(path).expanduser()
        name = name or source.name.removesuffix(".zip")
        if not source.exists():
            raise FileNotFoundError(
                f"{source} does not exist; pass the path of an Omniglot zip or extracted folder"
            )
    if source.is_dir():
        key = _fingerprint(source)
    elif md5_check and name in OMNIGLOT_MD5:
        key = _verifymd5(source, name)
    else:
        key = md5(source)

    def build() -> dict:
        images, class_names, groups = _decode(source, image_size, progress)
        return {"images": images, "class_names": class_names, "groups": groups}

    # A name of the user's choosing must not steer the cache file out of its folder.
    slug = re.sub(r"[^\w.-]", "_", name)
    saved = cached(
        cache_dir() / "omniglot" / f"{slug}-{key}-{image_size}px-v{_CACHE_VERSION}.pt",
        build,
        keys=("images", "class_names", "groups"),
        check=lambda saved: dataset_problem(saved, channels=1, image_size=image_size),
    )
    dataset = FewShotDataset(
        saved["images"], saved["class_names"], saved["groups"], f"omniglot {name} {image_size}px"
    )
    return dataset if device is None else dataset.to(device)
