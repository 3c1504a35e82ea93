"""Archives: download with a progress bar, check, open and extract zips safely.

A damaged file inside a dataset (a zip member that fails its CRC, an image that is not
one) is reported as a :class:`DamagedFileError` naming the archive, the member and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import stat
import struct
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from PIL import Image
from tqdm.auto import tqdm

CHUNK = 1 << 20
# What zipfile raises for a member whose bytes are damaged: a failed CRC or header check
# (BadZipFile), a corrupt deflate stream (zlib.error), compressed data that ends early.
_DAMAGED_MEMBER = (zipfile.BadZipFile, zlib.error, EOFError)
# What it raises for a member it cannot decode although the bytes may be intact: an
# encrypted member (RuntimeError), an unsupported compression or a garbled version field.
_UNREADABLE_MEMBER = (NotImplementedError, RuntimeError)
#: What Pillow raises for bytes that are not a whole image: "cannot identify image file" and
#: "image file is truncated" (OSError), "broken PNG file" (SyntaxError), a truncated header
#: (ValueError), a corrupt compressed stream, or an image too large to be a real one.
IMAGE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


class DamagedFileError(ValueError):
    """A file of a dataset (a zip member, or a file in a folder) is damaged or unreadable."""


def damaged(source: Path, name: str, problem: str) -> DamagedFileError:
    """The error for the file ``name`` of the zip or folder ``source``, with the fix.

    ``problem`` says what is wrong, e.g. ``"is not a readable image (…)"``.
    """
    if Path(source).is_dir():
        return DamagedFileError(
            f"{Path(source) / name} {problem}: the file is damaged. Replace it (extract or "
            f"download the dataset again) and load {source} again."
        )
    return DamagedFileError(
        f"{name} in {source} {problem}: the archive is damaged. Delete {source} and download "
        f"it again."
    )


def _member_error(archive: Path, name: str, error: Exception) -> ValueError:
    if isinstance(error, _UNREADABLE_MEMBER):
        return DamagedFileError(
            f"cannot read {name} in {archive} ({error}): the member is encrypted, uses a "
            f"compression Python's zipfile does not support, or its header is damaged. Delete "
            f"{archive} and download it again, or extract it with another tool (unzip, 7-Zip) "
            f"and pass the extracted folder instead."
        )
    return damaged(archive, name, f"fails the zip's integrity check ({error})")


def md5(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _downloading(url: str, dest: Path):
    """Turn a failed network call into a ConnectionError naming ``url`` and the way round it."""
    try:
        yield
    # OSError: refused, reset or timed-out connections (URLError is one);
    # HTTPException: a connection that closes before the end of the file (IncompleteRead).
    except (OSError, http.client.HTTPException) as error:
        raise ConnectionError(
            f"could not download {url} ({type(error).__name__}: {error}); without internet, "
            f"download it on another machine and copy it into {dest.parent} (the data folder: "
            f"root=... in Python, --data-root on the command line)"
        ) from error


@contextlib.contextmanager
def _writing(url: str, dest: Path):
    """Turn a failed write of the download into an OSError naming ``dest`` and the fix."""
    try:
        yield
    except ConnectionError:  # the network's failure, already explained
        raise
    except OSError as error:
        raise OSError(
            f"cannot write the download of {url} to {dest} ({error}); check that the disk has "
            f"room and the folder is writable, or choose another data folder (root=... in "
            f"Python, --data-root on the command line)"
        ) from error


def fetch(url: str, dest: Path, progress: bool = True) -> None:
    """Copy ``url`` into the file ``dest``, chunk by chunk, with a progress bar.

    Raises:
        ConnectionError: the download failed or broke off; the message names the URL and
            where to copy the file by hand.
        OSError: ``dest`` cannot be written (a full disk, say); the message names it.
    """
    # A full disk may show only when the file is flushed or closed: the whole block is watched.
    with _writing(url, dest), open(dest, "wb") as file:
        with _downloading(url, dest):
            response = urllib.request.urlopen(url, timeout=60)
        length = response.headers.get("Content-Length") or ""
        total = (int(length) or None) if length.isdigit() else None
        with (
            response,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=url.rsplit("/", 1)[-1],
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while True:
                with _downloading(url, dest):
                    chunk = response.read(CHUNK)
                if not chunk:
                    break
                file.write(chunk)
                bar.update(len(chunk))


def open_zip(path: Path) -> zipfile.ZipFile:
    """``path`` as an open zip, or a ValueError naming it, its md5 and the fix."""
    try:
        return zipfile.ZipFile(path)
    # A damaged table of contents can also hold member names that are not UTF-8.
    except (zipfile.BadZipFile, UnicodeDecodeError, EOFError) as error:
        raise ValueError(
            f"{path} (md5 {md5(path)}) is not a valid zip file ({error}): it is probably "
            f"truncated, damaged or an HTML error page saved under a .zip name. Delete it and "
            f"download it again."
        ) from error


def read_member(archive: zipfile.ZipFile, path: Path, name: str) -> bytes:
    """The bytes of the member ``name`` of the zip ``archive`` opened from ``path``.

    Raises:
        DamagedFileError: the member fails its CRC or cannot be decompressed; the message
            names the archive and the member and says to download the archive again.
    """
    try:
        return archive.read(name)
    except _DAMAGED_MEMBER + _UNREADABLE_MEMBER as error:
        raise _member_error(path, name, error) from error


@contextlib.contextmanager
def open_source(path: Path):
    """Yield ``(names, read)`` for a zip or a folder: file paths (POSIX, relative) and a reader.

    ``read(name)`` returns a file's bytes; a damaged zip member raises a
    :class:`DamagedFileError` naming the archive and the member.
    """
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; pass the path of a zip or of an extracted folder"
        )
    if path.is_dir():
        names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        yield names, lambda name: (path / name).read_bytes()
        return
    with open_zip(path) as archive:
        names = [m.filename for m in archive.infolist() if not m.is_dir()]
        yield names, lambda name: read_member(archive, path, name)


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
        ValueError: the file is not a zip, a member would land outside ``target``
            (absolute path, ``..``, symbolic link), or a member is damaged; nothing is
            extracted then.
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
                try:
                    zf.extract(member, tmp)
                except _DAMAGED_MEMBER + _UNREADABLE_MEMBER as error:
                    raise _member_error(archive, member.filename, error) from error
            tops = {PurePosixPath(m.filename).parts[0] for m in members}
            single = tmp / next(iter(tops)) if len(tops) == 1 else None
            os.replace(single if single is not None and single.is_dir() else tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
