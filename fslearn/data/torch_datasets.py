"""Any indexable dataset of ``(image, label)`` pairs (a torch ``Dataset``, a list) as a few-shot
dataset, held in memory."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..common import check_positive_int, progress_bar
from .dataset import FewShotDataset
from .image_files import GREY_MODES, MODES, ImageFolderError, check_channels, to_chw


def _label(value, i: int):
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if (value.size if isinstance(value, np.ndarray) else value.numel()) != 1:
            raise ImageFolderError(
                f"item {i}'s label is an array of shape {tuple(value.shape)}; a label is one "
                "value (a class index or name)"
            )
        value = value.item()
    try:
        hash(value)
    except TypeError:
        raise ImageFolderError(
            f"item {i}'s label {value!r} is a {type(value).__name__}, which cannot name a class; "
            "use a number or a string"
        ) from None
    return value


def _as_array(image, i: int) -> np.ndarray:
    """``image`` as uint8 ``(H, W, C)``, C = 1 or 3 (a grey image gets C = 1)."""
    if isinstance(image, Image.Image):
        # Grey stays grey (channels=None keeps it); every other mode becomes RGB, alpha dropped.
        return _as_array(np.asarray(image.convert("L" if image.mode in GREY_MODES else "RGB")), i)
    if isinstance(image, torch.Tensor):
        if image.dim() == 3:
            image = image.permute(1, 2, 0)  # (C, H, W), torch's layout, to (H, W, C)
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ImageFolderError(
            f"item {i}'s image is a {type(image).__name__}; give a PIL image, a (C, H, W) tensor "
            "or an (H, W, C) numpy array"
        )
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3) or 0 in image.shape:
        raise ImageFolderError(
            f"item {i}'s image has shape {image.shape}; expected a tensor (C, H, W) or a numpy "
            "array (H, W, C) or (H, W), with C = 1 or 3"
        )
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind != "f":
        raise ImageFolderError(
            f"item {i}'s image is {image.dtype}; give uint8 (0 to 255) or float (0 to 1)"
        )
    low, high = float(image.min()), float(image.max())
    if not (low >= 0.0 and high <= 1.0):  # also refuses NaN
        raise ImageFolderError(
            f"item {i}'s float image has values from {low} to {high}; float images must lie in "
            "[0, 1] (undo any normalisation first, or give uint8)"
        )
    return np.rint(image * 255.0).astype(np.uint8)


def _convert(array: np.ndarray, channels: int, image_size: int | None) -> np.ndarray:
    """uint8 ``(H, W, C)`` to ``(channels, image_size, image_size)`` via Pillow when needed."""
    size = array.shape[:2] if image_size is None else (image_size, image_size)
    if array.shape[-1] != channels or array.shape[:2] != size:
        image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        return to_chw(image, MODES[channels], size)
    return array.transpose(2, 0, 1)


def from_dataset(
    dataset,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    name: str = "dataset",
    progress: bool = True,
) -> FewShotDataset:
    """The ``(image, label)`` items of ``dataset`` as a :class:`~fslearn.FewShotDataset`.

    Args:
        dataset: anything with ``len()`` and ``dataset[i]``, e.g. a torch ``Dataset`` or a list,
            whose items are ``(image, label)``. An image is a PIL image, a uint8 (0 to 255) or
            float (0 to 1) tensor ``(C, H, W)`` or ``(H, W)``, or a numpy array ``(H, W, C)``
            or ``(H, W)`` (Pillow's layout), with C = 1 or 3. A label is any hashable value
            (a tensor or numpy scalar counts by its value).
        image_size: resize every image to this square (Lanczos, no cropping); None keeps their
            size, which must then be the same for all.
        channels: 1 or 3 converts every image to grey or colour (Pillow's ``"L"`` and
            ``"RGB"``); None keeps the first image's, which every image must then share.
        name: the dataset's name.
        progress: show a progress bar while reading the items.

    Returns:
        Every item, classes in the order of their label's first appearance, each class's
        images in item order; class names ``str(label)``, every group ``name``; images uint8
        in memory.

    Raises:
        ImageFolderError: an item is not an ``(image, label)`` pair, or an image or label is of
            a kind above it is not (the message names the item), or sizes or channels differ
            where None asks to keep them.
    """
    if image_size is not None:
        image_size = check_positive_int("image_size", image_size, why="or None to keep it")
    channels = check_channels(channels)
    try:
        n_items = len(dataset)
    except TypeError:
        raise ImageFolderError(
            f"dataset is a {type(dataset).__name__}, which has no len(): give a list or a map-"
            "style torch Dataset (list(...) an iterable one)"
        ) from None
    if n_items == 0:
        raise ImageFolderError(f"dataset {name!r} has no items")
    classes: dict = {}
    first = None
    with progress_bar(n_items, f"reading {name}", progress, unit="img", leave=False) as bar:
        for i in range(n_items):
            item = dataset[i]
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ImageFolderError(
                    f"item {i} of dataset is a {type(item).__name__}, not an (image, label) pair"
                )
            array = _as_array(item[0], i)
            if first is None:
                first = (array.shape[-1], array.shape[:2])
            if channels is None and array.shape[-1] != first[0]:
                raise ImageFolderError(
                    f"item {i}'s image has {array.shape[-1]} channel(s) but item 0's has "
                    f"{first[0]}, and channels=None keeps each image's own: pass channels=3 (or "
                    "1) to convert every image"
                )
            if image_size is None and array.shape[:2] != first[1]:
                raise ImageFolderError(
                    f"item {i}'s image is {array.shape[0]}×{array.shape[1]} but item 0's is "
                    f"{first[1][0]}×{first[1][1]}, and image_size=None keeps their size: pass "
                    "image_size= to resize every image to one square"
                )
            converted = _convert(array, channels or first[0], image_size)
            classes.setdefault(_label(item[1], i), []).append(torch.tensor(converted))
            bar.update(1)
    return FewShotDataset.from_classes(
        [torch.stack(images) for images in classes.values()],
        [str(label) for label in classes],
        [name] * len(classes),
        name=name,
    )
