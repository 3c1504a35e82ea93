"""Whether files can be written where a command will write them, asked before the work.

A result that takes minutes or hours to compute must not be lost at the end because its
path lies under a file or in a folder that refuses new files: every command checks its
output paths with :func:`check_writable` first. Nothing here creates a visible file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def not_a_folder(path: Path) -> str | None:
    """Which of ``path`` and the folders above it is a file, said as a reason, or None."""
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            return f"{part} is a file, not a folder" if part == path else f"{part} is a file"
    return None


def write_problem(folder: Path) -> str | None:
    """Why no file can be made in ``folder`` or the folders to be made under it, or None."""
    reason = not_a_folder(folder)
    if reason is not None:
        return reason
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        # Only creating a file proves a folder writable: permissions, ACLs and read-only
        # mounts all answer here (the file is anonymous where the system allows it).
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"cannot write in {existing}: {error.strerror or error}"
    return None


def check_writable(path, *, flag: str, folder: bool = False) -> Path:
    """``path`` as a Path, once it is clear that a file (``folder``: files in a folder) can
    be written there; it creates nothing.

    Commands call it for each output path before their long work, so that a result is not
    computed only to be lost when it cannot be written.

    Args:
        path: the file to write, or with ``folder`` the folder to write files into (made if
            missing).
        flag: how the user named it, e.g. ``"--out"``, for the message.

    Raises:
        OSError: naming ``flag``, the path and why (a file where a folder must be, or a
            folder that refuses a new file).
    """
    path = Path(path).expanduser()
    if folder:
        reason = write_problem(path)
    elif path.is_dir():
        reason = f"{path} is a folder, not a file"
    else:
        reason = write_problem(path.parent)
    if reason is not None:
        raise OSError(f"{flag} {path} cannot be written ({reason}): choose another {flag}")
    return path
