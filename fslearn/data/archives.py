"""Archives: download with a progress bar, check, open and extract zips safely."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

CHUNK = 1 << 20


def md5(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, dest: Path, progress: bool = True) -> None:
    """Copy ``url`` into the file ``dest``, chunk by chunk, with a progress bar."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as file:
            total = int(response.headers.get("Content-Length") or 0) or None
            name = url.rsplit("/", 1)[-1]
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=name, disable=not progress, leave=False
            ) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    file.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError) as error:
        raise ConnectionError(
            f"could not download {url} ({error}); without internet, download it on another "
            f"machine and copy it into {dest.parent} (the data folder: root=... in Python, "
            f"--data-root on the command line)"
        ) from error


def open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(
            f"{path} (md5 {md5(path)}) is not a valid zip file: it is probably truncated or an "
            f"HTML error page saved under a .zip name. Delete it and download it again."
        ) from error


@contextlib.contextmanager
def open_source(path: Path):
    """Yield ``(names, read)`` for a zip or a folder: file paths (POSIX, relative) and a reader."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; pass the path of a zip or of an extracted folder"
        )
    if path.is_dir():
        names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        yield names, lambda name: (path / name).read_bytes()
        return
    with open_zip(path) as archive:
        yield [m.filename for m in archive.infolist() if not m.is_dir()], archive.read


def unsafe_reason(member: zipfile.ZipInfo) -> str | None:
    name = member.filename
    if stat.S_ISLNK(member.external_attr >> 16):
        return "is a symbolic link"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "climbs out of the folder with '..'"
    return None


def extract_zip(archive, target, progress: bool = True) -> Path:
    """Extract a zip into the folder ``target``, atomically and safely.

    Members go to a temporary folder beside ``target``, which is renamed to ``target`` only
    once all are written: an interruption leaves no half-written folder. If every member
    lies under one top-level folder (as in Omniglot's zips), that folder's contents become
    ``target``'s. An existing ``target`` is taken as already extracted and left alone.

    Args:
        archive: the zip file.
        target: the folder to create.
        progress: show a progress bar.

    Returns:
        ``target`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: the file is not a zip, or a member would land outside ``target``
            (absolute path, ``..``, symbolic link); nothing is extracted then.
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        return target
    with open_zip(archive) as zf:
        members = zf.infolist()
        for member in members:
            reason = unsafe_reason(member)
            if reason:
                raise ValueError(
                    f"refusing to extract {archive}: member {member.filename!r} {reason}, so it "
                    f"would land outside {target}. Nothing was extracted; do not trust this file."
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
        try:
            for member in tqdm(
                members, desc=f"extracting {archive.name}", disable=not progress, leave=False
            ):
                zf.extract(member, tmp)
            tops = {PurePosixPath(m.filename).parts[0] for m in members}
            single = tmp / next(iter(tops)) if len(tops) == 1 else None
            os.replace(single if single is not None and single.is_dir() else tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
