"""Datasets by name, so chapters, tests and the command line say ``"omniglot"`` and nothing more."""

from __future__ import annotations

from .dataset import FewShotDataset
from .embedded import load_embedded
from .miniimagenet import load_miniimagenet
from .omniglot import load_omniglot
from .omniglot_splits import omniglot_split

#: Names :func:`load_dataset` accepts.
DATASETS = ("embedded", "omniglot", "omniglot-small", "miniimagenet")
#: The options of :func:`load_dataset` each dataset takes, besides split, image size, progress,
#: device.
OPTIONS = {
    "embedded": ("seed",),
    "omniglot": ("protocol", "root", "download", "seed"),
    "omniglot-small": ("root", "download"),
    "miniimagenet": ("root",),
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
    ========================  =====================================================================

    An option a dataset does not take (``fslearn.data.catalog.OPTIONS``) is an error rather than
    silently ignored, e.g. ``seed`` with ``"miniimagenet"``.

    Args:
        name: one of :data:`DATASETS`.
        split: see the table.
        protocol: for ``"omniglot"``: ``"lake"`` (default), ``"vinyals"`` or ``"maml"``
            (see :func:`~fslearn.omniglot_split`).
        root: where downloaded archives live (Omniglot), or the folder of a
            user-supplied copy (miniImageNet; required).
        image_size: 28 for characters and 84 for miniImageNet by default.
        download: fetch missing Omniglot archives (default: no).
        seed: the generation seed (embedded, default 0) or the split seed of the
            ``"vinyals"`` and ``"maml"`` Omniglot protocols (default 0).
        progress: show a text progress bar while decoding or generating images.
        device: where to put the images.

    Returns:
        A :class:`~fslearn.FewShotDataset`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    given = {"protocol": protocol, "root": root, "download": download, "seed": seed}
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
