"""Random crops, flips and colour jitter for natural images, each image with parameters of its
own, drawn on the device from a ``torch.Generator``.

An episode batch is sampled on the device as one tensor, so its augmentations run there too.
torchvision's transforms, applied to a batched tensor ``(B, C, H, W)``, draw one set of random
parameters for the whole batch: every image of an episode would get the same crop, flip and
colours. The functions here draw one set per image, from the sampler's generator, without a
host synchronisation, so a resumed run draws the same augmentations. A torchvision transform
(or any callable that takes a float ``(B, C, H, W)`` batch) can still be passed to the
samplers; it then draws from torch's global generator, and a resumed run is no longer exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment import check_strength, random_affine
from .transfer import uniform_numbers

#: The weights of red, green and blue in an image's grey level (ITU-R 601, as torchvision).
GREY_WEIGHTS = (0.2989, 0.587, 0.114)
#: Crop boxes drawn per image before falling back to a central one (torchvision's number).
CROP_TRIES = 10
#: What a crop's range of areas and range of aspects must be, as the refusals say it.
SCALE = "a range of area fractions (low, high) with 0 < low ≤ high ≤ 1 (1: the whole image)"
RATIO = "a range of aspects, width / height, (low, high) with 0 < low ≤ high"


def _check_images(x, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{name} must be a float tensor of images (B, C, H, W) (convert uint8 images with "
            f"fsl.to_float); got {shape}{f' {x.dtype}' if isinstance(x, torch.Tensor) else ''}"
        )


def _check_range(name: str, value, low: float, high: float, what: str) -> tuple[float, float]:
    """``value`` as a pair of floats ``low ≤ a ≤ b ≤ high`` (``low`` excluded), else an error."""
    try:
        pair = tuple(_number(v) for v in value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not (low < pair[0] <= pair[1] <= high):
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return pair


def _number(value) -> float:
    """``value`` as a float, NaN where it is not a number (bools and strings are not)."""
    if not isinstance(value, (bool, str)):
        try:
            return float(value)
        except (TypeError, ValueError, RuntimeError):
            pass
    return math.nan


def _check_amount(name: str, value) -> float:
    number = _number(value)
    if not 0 <= number < math.inf:
        raise ValueError(
            f"{name} must be a number ≥ 0 (0: leave it unchanged; 0.4 draws factors from "
            f"0.6 to 1.4); got {value!r}"
        )
    return number


def _uniform(n: int, low, high, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * uniform_numbers((n,), generator, device)


def crop_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale=(0.35, 1.0),
    ratio=(3 / 4, 4 / 3),
    device=None,
) -> torch.Tensor:
    """``n`` random crop boxes, as torchvision's ``RandomResizedCrop`` draws one.

    Each box's area is a fraction of the image's drawn uniformly from ``scale``, its aspect
    (width / height) log-uniformly from ``ratio``, its position uniformly among those inside
    the image. Of ``CROP_TRIES`` boxes drawn, the first that fits is kept; where none fits,
    the largest central box with an aspect in ``ratio``. Boxes are not rounded to pixels.

    Returns:
        A float tensor ``(n, 4)`` on ``device``: left, top, width, height, in pixels.
    """
    shape = (n, CROP_TRIES)
    area = _uniform(n * CROP_TRIES, *scale, generator, device).view(shape) * (height * width)
    aspect = _uniform(n * CROP_TRIES, *map(math.log, ratio), generator, device).view(shape).exp()
    w, h = (area * aspect).sqrt(), (area / aspect).sqrt()
    fits = (w <= width) & (h <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first that fits, or 0
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    position = uniform_numbers((n, 2), generator, device)
    left, top = position[:, 0] * (width - w), position[:, 1] * (height - h)
    # torchvision's fallback: the whole image, trimmed to the nearest aspect in ratio
    fit_w, fit_h = float(width), float(height)
    if width / height < ratio[0]:
        fit_h = width / ratio[0]
    elif width / height > ratio[1]:
        fit_w = height * ratio[1]
    central = [(width - fit_w) / 2, (height - fit_h) / 2, fit_w, fit_h]
    central = torch.stack([torch.full((n,), v, device=device) for v in central], 1)
    return torch.where(fits.any(1, keepdim=True), torch.stack([left, top, w, h], 1), central)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box, cut out and resized to the image's size by bilinear interpolation.

    For a box of whole pixels this equals ``F.interpolate(box, (H, W), mode="bilinear")`` of
    the cut-out box: the samples are clamped to the box's first and last pixel centres, so no
    pixel outside the box leaks in at its edges. One ``grid_sample`` call for the batch, on a
    grid built row and column apart (``affine_grid`` took as long as the sampling itself).

    Args:
        x: float images ``(B, C, H, W)``.
        boxes: ``(B, 4)``: left, top, width, height in pixels (as ``crop_boxes`` draws them).

    Returns:
        ``(B, C, H, W)``.
    """
    b, _, height, width = x.shape
    left, top, w, h = boxes.to(x.dtype).unbind(1)

    def coordinates(start, length, size):
        # Output pixel k samples the box at the same fraction of its length, in a frame where
        # the image spans 0 … size (pixel i covers i … i + 1), clamped to the centres of the
        # box's first and last pixels; grid_sample's coordinates run from -1 to 1 across it.
        centres = (torch.arange(size, dtype=x.dtype, device=x.device) + 0.5) / size
        at = start[:, None] + length[:, None] * centres
        at = at.clamp(start[:, None] + 0.5, (start + length)[:, None] - 0.5)
        return 2 * at / size - 1

    # A crop is axis-aligned: each row of the grid is the same, and each column.
    across, down = coordinates(left, w, width), coordinates(top, h, height)
    grid = torch.stack(
        [across[:, None, :].expand(b, height, width), down[:, :, None].expand(b, height, width)], -1
    )
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    x: torch.Tensor, generator: torch.Generator, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)
) -> torch.Tensor:
    """Each image cropped to a random box of its own and resized back to its size.

    Args:
        x: float images ``(B, C, H, W)`` on the generator's device.
        generator: the source of the boxes.
        scale: the range of the box's area, as a fraction of the image's, within (0, 1].
        ratio: the range of the box's aspect (width / height), positive.

    Returns:
        ``(B, C, H, W)``: ``resized_crops`` of ``crop_boxes``
        (``fslearn.sampling.transforms``).
    """
    _check_images(x)
    scale = _check_range("scale", scale, 0, 1, SCALE)
    ratio = _check_range("ratio", ratio, 0, math.inf, RATIO)
    b, _, height, width = x.shape
    return resized_crops(x, crop_boxes(b, height, width, generator, scale, ratio, x.device))


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Each image flipped left to right with probability ``p``, independently.

    Args:
        x: float images ``(B, C, H, W)`` on the generator's device.
        p: the probability of a flip, from 0 to 1.

    Returns:
        ``(B, C, H, W)``.
    """
    _check_images(x)
    if not 0 <= _number(p) <= 1:
        raise ValueError(f"p must be a probability from 0 to 1; got {p!r}")
    flip = uniform_numbers((x.shape[0],), generator, x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """The grey level of RGB images ``(B, 3, H, W)``: ``(B, 1, H, W)``."""
    (r, g, b), (wr, wg, wb) = x[:, :, None].unbind(1), GREY_WEIGHTS
    return wr * r + wg * g + wb * b  # 10× faster than conv2d's 1×1 kernel on a CPU


def color_jitter(
    x: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
) -> torch.Tensor:
    """Each image's brightness, contrast and saturation changed by factors of its own.

    Each factor is drawn uniformly from ``[max(0, 1 - a), 1 + a]`` for an amount ``a``, and
    applied in this order, as torchvision's functions define them, each result clamped to
    [0, 1]: brightness multiplies the image; contrast blends it with its mean grey level;
    saturation blends it with its grey image (``GREY_WEIGHTS``), and leaves one-channel
    images alone. An amount of 0 draws nothing and changes nothing.

    Args:
        x: float images ``(B, C, H, W)`` in [0, 1], C = 1 or 3, on the generator's device.

    Returns:
        ``(B, C, H, W)``.
    """
    _check_images(x)
    amounts = [
        _check_amount("brightness", brightness),
        _check_amount("contrast", contrast),
        _check_amount("saturation", saturation),
    ]
    if x.shape[1] not in (1, 3) and any(amounts[1:]):
        raise ValueError(
            f"contrast and saturation take grey (C=1) or RGB (C=3) images; got C={x.shape[1]} "
            "(set both to 0 to change the brightness alone)"
        )

    def factor(amount: float) -> torch.Tensor:
        drawn = _uniform(x.shape[0], max(0.0, 1 - amount), 1 + amount, generator, x.device)
        return drawn.to(x.dtype)[:, None, None, None]

    # blend(x, other, f) = f * x + (1 - f) * other, clamped: one lerp and one in-place clamp
    if amounts[0]:
        x = (x * factor(amounts[0])).clamp_(0, 1)
    if amounts[1]:
        means = x.mean((2, 3))  # the mean grey level is the grey level of the means
        grey = means if x.shape[1] == 1 else _grey(means[:, :, None, None])
        x = torch.lerp(grey.view(-1, 1, 1, 1), x, factor(amounts[1])).clamp_(0, 1)
    if amounts[2] and x.shape[1] == 3:
        x = torch.lerp(_grey(x), x, factor(amounts[2])).clamp_(0, 1)
    return x


class Augment:
    """Random crops, flips, colour jitter and character distortions, each image its own.

    >>> augment = Augment(crop=(0.35, 1.0), flip=True, jitter=0.4)
    >>> augment(torch.rand(8, 3, 84, 84), torch.Generator().manual_seed(0)).shape
    torch.Size([8, 3, 84, 84])

    Args:
        crop: the range of a crop's area (a fraction of the image's, within (0, 1]) for
            :func:`~fslearn.random_resized_crop`, or ``None`` for no crops.
        flip: flip half the images left to right (:func:`~fslearn.random_flip`).
        jitter: the amount of brightness, contrast and saturation change
            (:func:`~fslearn.color_jitter`); 0 for none.
        character: the strength of :func:`~fslearn.random_affine`, for characters (ink on a
            0 background); 0 for none.
        ratio: the range of a crop's aspect (width / height).

    Called as ``augment(x, generator)`` on float images ``(B, C, H, W)`` on the generator's
    device, it applies them in this order and returns ``(B, C, H, W)``.
    """

    def __init__(
        self,
        crop=(0.35, 1.0),
        flip: bool = True,
        jitter: float = 0.4,
        character: float = 0.0,
        ratio=(3 / 4, 4 / 3),
    ):
        self.crop = None if crop is None else _check_range("crop", crop, 0, 1, SCALE + ", or None")
        self.ratio = _check_range("ratio", ratio, 0, math.inf, RATIO)
        if not isinstance(flip, bool):
            raise ValueError(f"flip must be True or False; got {flip!r}")
        self.flip, self.jitter = flip, _check_amount("jitter", jitter)
        self.character = check_strength(character, "character")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_images(x)
        if self.crop is not None:
            x = random_resized_crop(x, generator, self.crop, self.ratio)
        if self.flip:
            x = random_flip(x, generator)
        if self.jitter:
            x = color_jitter(x, generator, self.jitter, self.jitter, self.jitter)
        if self.character:
            x = random_affine(x, self.character, generator)
        return x

    def __repr__(self) -> str:
        return (
            f"Augment(crop={self.crop}, flip={self.flip}, jitter={self.jitter}, "
            f"character={self.character}, ratio={self.ratio})"
        )
