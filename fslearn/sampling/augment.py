"""Small random distortions of character images, each image warped by an affine map of its
own: new drawings of the same characters for a training set with few of them."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from .transfer import uniform_numbers

#: At ``strength=1``: the largest rotation (degrees), shear, change of scale and shift (a
#: fraction of the image's half-width) of :func:`random_affine`.
AFFINE_RANGES = {"rotation": 15.0, "shear": 0.3, "scale": 0.15, "shift": 0.1}

#: The largest strength :func:`random_affine` takes, the range in which characters stay
#: characters. Measured on 4 000 images of the embedded background set (28 px): at 2.5,
#: 99.6% of the warped images keep at least half of their ink inside the frame and none is
#: blank; at 3, 1.8% lose more than half; at 4, 9% (and some are blank); from 1 / 0.15 ≈ 6.7
#: a scale can reach 0 and the character vanish. Up to 2.5, rotations stay within ±37.5°,
#: short of the 45° halfway to the next quarter turn, on which recipes that make each
#: rotation a class of its own rely.
MAX_STRENGTH = 2.5
#: What a strength must be, as the refusals of every place that takes one say it.
STRENGTH_RANGE = (
    f"a number from 0 to {MAX_STRENGTH} (0: no distortion; stronger distortions push the ink "
    "of many characters out of the image)"
)


def check_strength(value, name: str = "strength") -> float:
    """``value`` as a float if it is a strength :func:`random_affine` takes (0 to
    ``MAX_STRENGTH``), else a ValueError naming ``name`` and the value.

    Every place the knob enters calls it (``random_affine``, ``EpisodeSampler(augment=)``,
    :class:`~fslearn.AveragedViews`, ``fslearn train --augment``), so that NaN, infinity and
    strengths that turn most images blank are refused before any work, with one message.

    >>> check_strength(1)
    1.0
    >>> check_strength(100, "augment")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: augment must be a number from 0 to 2.5 (0: no distortion; ...); got 100
    """
    number = math.nan
    if not isinstance(value, (bool, str)):  # float() would read True as 1 and "1" as 1.0
        # a tensor of several numbers says so with a RuntimeError
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            number = float(value)
    if not 0 <= number <= MAX_STRENGTH:
        raise ValueError(f"{name} must be {STRENGTH_RANGE}; got {value!r}")
    return number


def random_affine(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Every image of ``x`` rotated, sheared, scaled and shifted by its own random amounts.

    Args:
        x: float images of shape ``(..., C, H, W)``, background 0 (ink is positive), on the
            generator's device.
        strength: scales the ranges: at 1, rotations up to ±15°, shears up to ±0.3, scales
            1 ± 0.15 and shifts up to ±10% of the half-width (``AFFINE_RANGES``), each
            amount uniform in its range × ``strength``. 0 returns ``x`` itself; at most
            ``MAX_STRENGTH`` (2.5).
        generator: the source of the amounts (a sampler's, so that a resumed run draws the
            same distortions).

    Returns:
        The warped images, shape of ``x``; what comes from outside the image is background.

    Raises:
        ValueError: ``strength`` is not a number from 0 to ``MAX_STRENGTH`` (NaN and
            infinity included).
    """
    strength = check_strength(strength)
    if strength == 0:
        return x
    shape = x.shape
    flat = x.reshape(-1, *shape[-3:])

    def uniform(limit: float) -> torch.Tensor:
        u = uniform_numbers((flat.shape[0],), generator, x.device)
        return (2 * u - 1) * limit * strength

    angle = uniform(AFFINE_RANGES["rotation"]) * math.pi / 180
    shear = uniform(AFFINE_RANGES["shear"])
    scale = 1 + uniform(AFFINE_RANGES["scale"])
    shift = torch.stack([uniform(AFFINE_RANGES["shift"]), uniform(AFFINE_RANGES["shift"])], 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # The map from output to input coordinates (affine_grid's convention): (x, y) ↦ A (x, y) + t
    linear = torch.stack([cos, -sin + shear, sin, cos], 1).view(-1, 2, 2) / scale[:, None, None]
    theta = torch.cat([linear, shift[:, :, None]], 2)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    warped = F.grid_sample(flat, grid, align_corners=False, padding_mode="zeros")
    return warped.reshape(shape)
