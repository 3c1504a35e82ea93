"""Reading a checkpoint file: its format, its fields, and the error of one that cannot be
read. Loading never runs pickled code (``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path

import torch

#: The ``format`` field of every checkpoint this version writes.
FORMAT = "fslearn-checkpoint/1"

#: The fields of every checkpoint, each a dict but ``format``.
FIELDS = ("format", "spec", "config", "state", "history", "rng", "versions")


class DamagedCheckpointError(ValueError):
    """A checkpoint file that cannot be read at all (truncated or corrupt); ``reason``: why."""

    def __init__(self, path, reason: str):
        super().__init__(
            f"{path} is not a readable checkpoint ({reason}). It may be truncated or corrupt; "
            "fslearn replaces checkpoints atomically, so a file it wrote is whole — check that "
            "this is the file you meant"
        )
        self.reason = reason


def read_checkpoint(path) -> dict:
    """Read a checkpoint written by fslearn, safely (``weights_only=True``) onto the CPU.

    Returns:
        A dict with ``format``, ``spec``, ``config``, ``state``, ``history``,
        ``rng`` and ``versions``.

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedCheckpointError: the file cannot be read: truncated or corrupt.
        ValueError: the file is not an fslearn checkpoint (not a dict, another format, or
            without some of ``FIELDS``: the message names them).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as error:  # torch raises RuntimeError, UnpicklingError, EOFError, … for a bad file
        reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
        raise DamagedCheckpointError(path, reason) from None
    if isinstance(payload, dict) and payload.get("format", FORMAT) != FORMAT:
        problem = f"its format is {payload['format']!r}, not {FORMAT!r}"
    elif isinstance(payload, dict):
        missing = [f for f in FIELDS if f not in payload]
        wrong = [f for f in FIELDS[1:] if f in payload and not isinstance(payload[f], dict)]
        if not missing and not wrong:
            return payload
        problem = f"it lacks the fields {missing}" if missing else f"its {wrong} are not dicts"
    else:
        problem = f"it holds a {type(payload).__name__}, not a dict"
    raise ValueError(
        f"{path} is not an fslearn checkpoint: {problem} (an fslearn checkpoint is a dict of "
        f"{', '.join(FIELDS)}); use a checkpoint that fslearn wrote"
    )
