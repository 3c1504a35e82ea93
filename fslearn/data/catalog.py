"""Datasets by name, so chapters, tests and the command line say ``"omniglot"`` and nothing more."""

from __future__ import annotations

from pathlib import Path

from .dataset import FewShotDataset
from .embedded import load_embedded
from .folder import load_folder
from .image_files import ImageFolderError
from .miniimagenet import load_miniimagenet
from .omniglot import load_omniglot
from .omniglot_splits import omniglot_split
from .split_files import load_split_file

#: Names :func:`load_dataset` accepts.
DATASETS = ("embedded", "omniglot", "omniglot-small", "miniimagenet", "folder")
#: The options of :func:`load_dataset` each dataset takes, besides split, image size, progress,
#: device.
OPTIONS = {
    "embedded": ("seed",),
    "omniglot": ("protocol", "root", "download", "seed"),
    "omniglot-small": ("root", "download"),
    "miniimagenet": ("root",),
    "folder": ("root", "channels"),
}
#: The alphabets of ``images_background_small2`` that ``images_background_small1`` lacks.
SMALL2_ONLY_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")


def _or(value, default):
    # Not ``value or default``: image_size=0 is an error to report, not a request for 28.
    return default if value is None else value


def _check_split(name: str, split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"{name} has splits {allowed}; got {split!r}")


def load_dataset(
    name: str,
    split: str = "train",
    *,
    protocol: str | None = None,
    root=None,
    image_size: int | None = None,
    download: bool | None = None,
    seed: int | None = None,
    channels: int | None = None,
    progress: bool = True,
    device=None,
) -> FewShotDataset:
    """Load a few-shot dataset by name.

    ========================  =====================================================================
    name                      splits
    ========================  =====================================================================
    ``"embedded"``            ``train`` (30 background alphabets), ``test`` (20 evaluation
                              alphabets)
    ``"omniglot"``            ``train`` / ``test`` (``protocol="lake"``: background / evaluation),
                              ``vinyals``: ``train`` / ``test``; ``maml``: ``train`` / ``val`` /
                              ``test``
    ``"omniglot-small"``      ``train`` = ``images_background_small1``; ``test`` = the alphabets of
                              ``images_background_small2`` that small1 lacks
    ``"miniimagenet"``        ``train`` / ``val`` / ``test`` from a copy in ``root``
    ``"folder"``              ``train`` / ``val`` / ``test`` of your own images in ``root``: the
                              folders ``root/train/`` … (:func:`~fslearn.load_folder`), or the
                              split files ``root/train.csv`` or ``.json`` …
                              (:func:`~fslearn.load_split_file`)
    ========================  =====================================================================

    An option a dataset does not take (``fslearn.data.catalog.OPTIONS``) is an error rather than
    silently ignored, e.g. ``seed`` with ``"miniimagenet"``.

    Args:
        name: one of :data:`DATASETS`.
        split: see the table.
        protocol: for ``"omniglot"``: ``"lake"`` (default), ``"vinyals"`` or ``"maml"``
            (see :func:`~fslearn.omniglot_split`).
        root: where downloaded archives live (Omniglot), or the folder of a
            user-supplied copy (miniImageNet, folder; required).
        image_size: 28 for characters and 84 for miniImageNet and folders by default.
        download: fetch missing Omniglot archives (default: no).
        seed: the generation seed (embedded, default 0) or the split seed of the
            ``"vinyals"`` and ``"maml"`` Omniglot protocols (default 0).
        channels: for ``"folder"``: 3 (colour, the default) or 1 (grey).
        progress: show a text progress bar while decoding or generating images.
        device: where to put the images.

    Returns:
        A :class:`~fslearn.FewShotDataset`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    given = {
        "protocol": protocol,
        "root": root,
        "download": download,
        "seed": seed,
        "channels": channels,
    }
    given = {key: value for key, value in given.items() if value is not None}
    unused = [key for key in given if key not in OPTIONS[name]]
    if name == "omniglot" and protocol in (None, "lake") and seed is not None:
        unused.append("seed")  # Lake's split is fixed: background vs evaluation alphabets
    if unused:
        listed = ", ".join(f"{key}={given[key]!r}" for key in unused)
        raise ValueError(
            f"{listed} does not apply to {name!r}, which takes {', '.join(OPTIONS[name])}"
            f"{' (seed only with protocol vinyals or maml)' if name == 'omniglot' else ''}"
            "; leave it out"
        )
    protocol = protocol or "lake"
    download = bool(download)
    seed = 0 if seed is None else seed
    if name == "embedded":
        _check_split(name, split, ("train", "test"))
        return load_embedded(
            {"train": "background", "test": "evaluation"}[split],
            image_size=_or(image_size, 28),
            seed=seed,
            progress=progress,
            device=device,
        )
    if name == "miniimagenet":
        _check_split(name, split, ("train", "val", "test"))
        if root is None:
            raise ValueError(
                "miniImageNet cannot be downloaded freely: pass the folder of your copy "
                "(split CSVs + images/, or mini-imagenet-cache-*.pkl) as root= "
                "(on the command line: --data-root)"
            )
        return load_miniimagenet(
            root, split, image_size=_or(image_size, 84), progress=progress, device=device
        )

    if name == "folder":
        _check_split(name, split, ("train", "val", "test"))
        if root is None:
            raise ValueError(
                "the folder dataset reads your own images: pass the folder holding train/, val/ "
                "and test/ (or train.csv, …) as root= (on the command line: --data-root)"
            )
        return _load_folder_split(
            Path(root).expanduser(), split, _or(image_size, 84), _or(channels, 3), progress, device
        )

    def omniglot(archive: str) -> FewShotDataset:
        return load_omniglot(
            archive, root=root, image_size=_or(image_size, 28), download=download, progress=progress
        )

    if name == "omniglot-small":
        _check_split(name, split, ("train", "test"))
        if split == "train":
            dataset = omniglot("images_background_small1")
        else:
            dataset = omniglot("images_background_small2").select_groups(
                SMALL2_ONLY_ALPHABETS, name="omniglot small2 minus small1"
            )
        return dataset if device is None else dataset.to(device)
    if protocol == "lake":
        _check_split(name, split, ("train", "test"))
        dataset = omniglot({"train": "images_background", "test": "images_evaluation"}[split])
    else:
        dataset = omniglot_split(
            omniglot("images_background"), omniglot("images_evaluation"), protocol, split, seed=seed
        )
    return dataset if device is None else dataset.to(device)


def _load_folder_split(root: Path, split: str, image_size, channels, progress, device):
    """``root/split/`` as a folder of classes, or the split file ``root/split.csv`` / ``.json``."""
    options = dict(image_size=image_size, channels=channels, progress=progress, device=device)
    found = [p for p in (root / split, root / f"{split}.csv", root / f"{split}.json") if p.exists()]
    if len(found) > 1:
        raise ImageFolderError(
            f"{root} holds both {found[0].name} and {found[1].name} for the {split} split: keep "
            "one (a folder of class folders, or a split file)"
        )
    if found and found[0].is_dir():
        return load_folder(found[0], **options)
    if found:
        return load_split_file(found[0], **options)
    if root.is_dir():
        present = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        holds = ", ".join(present[:8]) + (", …" if len(present) > 8 else "") or "nothing"
        where = f"{root} (which holds {holds})"
    else:
        where = f"{root}, which " + ("is a file" if root.exists() else "does not exist")
    raise ImageFolderError(
        f"no {split} split in {where}: the folder dataset needs {root / split}/ (a folder of "
        f"class folders of images) or the split file {root / split}.csv ('filename,label' "
        "lines) or .json"
    )
