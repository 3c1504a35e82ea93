"""Strokes made thicker or thinner: each character image as if drawn with a pen of its own
width."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .transfer import uniform_numbers


def check_stroke_strength(value) -> float:
    """``value`` as a float from 0 to 1, else a ValueError naming it."""
    number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -1
    if not 0 <= number <= 1:
        raise ValueError(
            f"stroke width strength must be a number from 0 to 1 (0: strokes as drawn; 1: "
            f"from the image's strokes grown by a 3×3 neighbourhood to their cores alone); "
            f"got {value!r}"
        )
    return number


def random_stroke_width(x: torch.Tensor, strength: float, generator: torch.Generator):
    """Every image's strokes made thicker or thinner by its own random amount ``t``, uniform in
    ``[-strength, strength]``.

    Thicker (``t > 0``): the image blended, by ``t``, with its 3×3 dilation (each pixel the
    brightest of its neighbourhood), which widens a stroke by up to a pixel on each side.
    Thinner (``t < 0``): every pixel raised to the power ``1 + 2|t|``, which dims the
    anti-aliased edge of a stroke and leaves its core (1) as it is. A 3×3 erosion would erase
    the strokes of 28-pixel characters, which are about two pixels wide.

    Args:
        x: float images in ``[0, 1]``, shape ``(..., C, H, W)``, background 0 (ink is
            positive), on the generator's device.
        strength: from 0 (``x`` itself) to 1.
        generator: the source of the amounts (a sampler's, so a resumed run draws the same).

    Returns:
        Images of ``x``'s shape, in ``[0, 1]``.
    """
    strength = check_stroke_strength(strength)
    if strength == 0:
        return x
    flat = x.reshape(-1, *x.shape[-3:])
    t = (2 * uniform_numbers((flat.shape[0],), generator, x.device) - 1) * strength
    t = t[:, None, None, None]
    dilated = F.max_pool2d(flat, 3, stride=1, padding=1)
    thicker = torch.lerp(flat, dilated, t.clamp_min(0))
    out = thicker.clamp(0, 1).pow(1 + 2 * (-t).clamp_min(0))
    return out.reshape(x.shape)


class StrokeWidth:
    """A transform for :class:`~fslearn.EpisodeSampler` (``transform=``) and the recipes:
    :func:`random_stroke_width` at ``strength``, drawn from the sampler's generator."""

    def __init__(self, strength: float = 0.5):
        self.strength = check_stroke_strength(strength)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_stroke_width(x, self.strength, generator)

    def __repr__(self) -> str:
        return f"StrokeWidth({self.strength:g})"
