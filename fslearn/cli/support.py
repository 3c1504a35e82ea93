"""What the commands share: their error, datasets by name for a method, JSON files written whole."""

from __future__ import annotations

import json
from pathlib import Path

from ..common import atomic_path
from ..data.catalog import load_dataset
from ..training.presets import omniglot_protocol


class UsageError(Exception):
    """A request the command line cannot carry out; the message says why and what to do."""


def dataset_for(name: str, split: str, *, method: str | None, root, device, progress: bool):
    options = {}
    if name == "omniglot":
        options["protocol"] = omniglot_protocol(method) if method else "lake"
    if name.startswith("omniglot"):
        options["download"] = True
    return load_dataset(name, split, root=root, progress=progress, device=device, **options)


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
