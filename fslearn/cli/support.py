"""What the commands share: their error, the device asked for, datasets by name for a method,
JSON files written whole."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..common import atomic_path, default_device
from ..data.catalog import load_dataset
from ..training.presets import omniglot_protocol


class UsageError(Exception):
    """A request the command line cannot carry out; the message says why and what to do."""


def devices_here() -> list[str]:
    """The devices this machine can run on, as ``--device`` takes them: ``cpu``, ``cuda:0
    (its name)``, …, ``mps``."""
    found = ["cpu"]
    found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(_cuda_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_device(text: str | None) -> torch.device:
    """The device ``--device text`` names, checked to exist here (``None``: a GPU if there is one).

    Every command that takes ``--device`` calls it before it does anything else, so that
    a typo or a missing GPU is one line naming what was asked and what there is, rather
    than torch's error in the middle of a run.

    Raises:
        UsageError: ``text`` is not a device name, or this machine has no such device.
    """
    if text is None:
        return default_device()
    here = f"this machine has {', '.join(devices_here())}"
    try:
        device = torch.device(text)
    except RuntimeError:  # torch's message lists every device type it knows, not what is here
        raise UsageError(f"--device {text!r} is not a device name; {here}") from None
    index = device.index or 0
    if device.type == "cuda":
        count = _cuda_count()
        if count == 0:
            reason = (
                "this torch is built without CUDA"
                if torch.version.cuda is None and getattr(torch.version, "hip", None) is None
                else "no GPU is visible"
            )
            raise UsageError(f"--device {text!r}: CUDA is not available ({reason}); {here}")
        if index >= count:
            raise UsageError(f"--device {text!r}: there is no GPU {index}; {here}")
        return device
    usable = {"cpu": True, "mps": torch.backends.mps.is_available()}
    if not usable.get(device.type) or index != 0:
        raise UsageError(f"--device {text!r}: no such device here; {here}")
    return device


def image_options(args, dataset: str | None = None, image_shape=None) -> dict:
    """``--image-size`` and ``--channels`` as :func:`dataset_for` takes them (``--dataset folder``
    only), by default ``image_shape``'s ``(C, H, W)`` (a checkpoint's) where one is given.

    Raises:
        UsageError: either option with another dataset.
    """
    given = {"image_size": args.image_size, "channels": args.channels}
    dataset = dataset or args.dataset
    if dataset != "folder":
        flags = [f"--{key.replace('_', '-')}" for key, value in given.items() if value is not None]
        if flags and dataset is not None:
            raise UsageError(
                f"{' and '.join(flags)} appl{'y' if len(flags) > 1 else 'ies'} to --dataset "
                f"folder, not {dataset} (whose images "
                "have their fixed size): leave them out"
            )
        return {}
    if image_shape is not None:
        given["channels"] = given["channels"] or image_shape[0]
        given["image_size"] = given["image_size"] or image_shape[-1]
    return given


def dataset_for(
    name: str,
    split: str,
    *,
    method: str | None,
    root,
    device,
    progress: bool,
    image_size: int | None = None,
    channels: int | None = None,
):
    """The ``split`` of dataset ``name`` on ``device``, on the Omniglot protocol of ``method``
    (for ``"folder"``, of ``image_size`` and ``channels``)."""
    options = {}
    if name == "folder":
        options.update(image_size=image_size, channels=channels)
    if name == "omniglot":
        options["protocol"] = omniglot_protocol(method) if method else "lake"
    if name.startswith("omniglot"):
        options["download"] = True
    try:
        return load_dataset(name, split, root=root, progress=progress, device=device, **options)
    except KeyError as error:
        message = error.args[0] if error.args else ""
        if not (isinstance(message, str) and " " in message):
            raise  # a bare key is a bug, and keeps its traceback
        # FewShotDataset.select_groups says which alphabets an archive lacks as a KeyError
        raise ValueError(message) from None


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` as JSON, atomically; an OSError names the file."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as error:
        raise OSError(
            f"could not write {path} ({error.strerror or error}); free disk space or choose "
            "another --out"
        ) from error
