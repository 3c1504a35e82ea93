"""Small random distortions of character images, each image warped by an affine map of its
own: new drawings of the same characters for a training set with few of them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: At ``strength=1``: the largest rotation (degrees), shear, change of scale and shift (a
#: fraction of the image's half-width) of :func:`random_affine`.
AFFINE_RANGES = {"rotation": 15.0, "shear": 0.3, "scale": 0.15, "shift": 0.1}


def random_affine(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Every image of ``x`` rotated, sheared, scaled and shifted by its own random amounts.

    Args:
        x: float images of shape ``(..., C, H, W)``, background 0 (ink is positive), on the
            generator's device.
        strength: scales the ranges: at 1, rotations up to ±15°, shears up to ±0.3, scales
            1 ± 0.15 and shifts up to ±10% of the half-width (``AFFINE_RANGES``), each
            amount uniform in its range × ``strength``. 0 returns ``x`` itself.
        generator: the source of the amounts (a sampler's, so that a resumed run draws the
            same distortions).

    Returns:
        The warped images, shape of ``x``; what comes from outside the image is background.
    """
    if not strength >= 0:
        raise ValueError(f"strength must be ≥ 0; got {strength}")
    if strength == 0:
        return x
    shape = x.shape
    flat = x.reshape(-1, *shape[-3:])

    def uniform(limit: float) -> torch.Tensor:
        u = torch.rand(flat.shape[0], generator=generator, device=x.device)
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
