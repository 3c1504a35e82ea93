"""Procedurally generated handwritten-like characters.

The drawing engine behind the embedded dataset, after the generative model of
characters of Lake et al. (2015): every alphabet owns a small library of stroke
primitives (cubic Bézier curves) and a style (stroke width, slant, preferred
directions, roundness); a character is 1-4 strokes built from its alphabet's
primitives, each starting free, at the end of, or somewhere along an earlier
stroke; a *drawer* perturbs the control points, the stroke width and applies a
small global affine map. Rendering is anti-aliased distance-to-polyline ink,
vectorised over many images at once.

Coordinates are canvas units: ``(x, y)`` in ``[0, 1]²``, ``x`` to the right and
``y`` downwards, like image columns and rows. Everything random is drawn from
an explicit :class:`torch.Generator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# 5 segments per primitive is smooth at 28 px and keeps rendering cheap.
POINTS_PER_PRIMITIVE = 6
_BERNSTEIN = torch.stack(
    [
        torch.tensor(
            [(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], dtype=torch.float64
        )
        for t in torch.linspace(0, 1, POINTS_PER_PRIMITIVE, dtype=torch.float64).tolist()
    ]
)  # (P, 4)


@dataclass(frozen=True)
class AlphabetStyle:
    """What makes an alphabet recognisable: shared primitives and a drawing style.

    Attributes:
        primitives: control points of the stroke primitives in a local frame,
            shape ``(n_primitives, 4, 2)``; each runs from ``(0, 0)`` to ``(1, 0)``.
        width: mean stroke width, as a fraction of the canvas.
        slant: horizontal shear applied to every character of the alphabet.
        direction_step: stroke directions snap to multiples of this angle
            (radians); 0 means free directions.
        stroke_probs: probabilities of 1, 2, 3 and 4 strokes, shape ``(4,)``.
    """

    primitives: torch.Tensor
    width: float
    slant: float
    direction_step: float
    stroke_probs: torch.Tensor


@dataclass(frozen=True)
class Glyph:
    """One character as Bézier control points, before any drawer touches it.

    Attributes:
        control: control points in canvas units, shape ``(n_ctrl, 2)``.
        primitive_index: indices into ``control`` of each primitive's 4 control
            points, shape ``(n_primitives, 4)``; consecutive primitives of a
            stroke share their end points.
        stroke_of_control: stroke id of every control point, shape ``(n_ctrl,)``.
        stroke_width: width of every stroke, shape ``(n_strokes,)``.
    """

    control: torch.Tensor
    primitive_index: torch.Tensor
    stroke_of_control: torch.Tensor
    stroke_width: torch.Tensor

    @property
    def n_segments(self) -> int:
        return self.primitive_index.shape[0] * (POINTS_PER_PRIMITIVE - 1)


@dataclass(frozen=True)
class DrawerJitter:
    """How much one drawer's copy of a character differs from the glyph.

    Lengths are canvas units, angles radians, scales log-factors; each is the
    standard deviation of a normal perturbation.
    """

    point: float = 0.03
    stroke_shift: float = 0.04
    rotation: float = 0.17
    scale: float = 0.12
    shear: float = 0.12
    shift: float = 0.07
    width: float = 0.18


def _uniform(gen: torch.Generator, low: float, high: float, size=()) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=gen, dtype=torch.float64)


def _rand(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen, dtype=torch.float64))


def _randint(gen: torch.Generator, high: int) -> int:
    return int(torch.randint(high, (), generator=gen))


def make_alphabet_style(gen: torch.Generator, n_primitives: int = 8) -> AlphabetStyle:
    """Draw an alphabet's primitives and drawing style from ``gen``."""
    roundness = float(_uniform(gen, 0.05, 0.9))
    reach = _uniform(gen, -0.25, 0.45, (n_primitives, 2))
    bend = roundness * _uniform(gen, -1.0, 1.0, (n_primitives, 2))
    primitives = torch.zeros(n_primitives, 4, 2, dtype=torch.float64)
    primitives[:, 1, 0] = reach[:, 0]
    primitives[:, 1, 1] = bend[:, 0]
    primitives[:, 2, 0] = 1.0 - reach[:, 1]
    primitives[:, 2, 1] = bend[:, 1]
    primitives[:, 3, 0] = 1.0
    logits = torch.tensor([-0.6, 0.5, 0.6, 0.2], dtype=torch.float64)
    stroke_probs = torch.softmax(logits + _uniform(gen, -0.8, 0.8, (4,)), dim=0)
    return AlphabetStyle(
        primitives=primitives,
        width=float(_uniform(gen, 0.06, 0.095)),
        slant=float(_uniform(gen, -0.25, 0.25)),
        direction_step=(0.0, math.pi / 4, math.pi / 2, math.pi / 3)[_randint(gen, 4)],
        stroke_probs=stroke_probs,
    )


def _bezier(control: torch.Tensor, t: float) -> torch.Tensor:
    """Point at ``t`` of the cubic Bézier with control points ``(4, 2)``."""
    weights = torch.tensor(
        [(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], dtype=control.dtype
    )
    return weights @ control


def _snap(angle: float, step: float, gen: torch.Generator) -> float:
    if step == 0.0:
        return angle
    return round(angle / step) * step + 0.06 * float(
        torch.randn((), generator=gen, dtype=torch.float64)
    )


def make_glyph(style: AlphabetStyle, gen: torch.Generator) -> Glyph:
    """Draw one character of an alphabet: 1-4 strokes of the alphabet's primitives."""
    n_strokes = 1 + int(torch.multinomial(style.stroke_probs, 1, generator=gen))
    points: list[torch.Tensor] = []
    primitive_index: list[list[int]] = []
    stroke_of_control: list[int] = []
    for stroke in range(n_strokes):
        where = _rand(gen)
        if stroke == 0 or where < 0.3:
            start = _uniform(gen, 0.2, 0.8, (2,))
        elif where < 0.65:
            start = points[primitive_index[_randint(gen, len(primitive_index))][3]].clone()
        else:
            prim = primitive_index[_randint(gen, len(primitive_index))]
            start = _bezier(torch.stack([points[i] for i in prim]), _rand(gen))
        direction = _snap(_rand(gen) * 2 * math.pi, style.direction_step, gen)
        points.append(start)
        stroke_of_control.append(stroke)
        n_primitives = 2 if _rand(gen) < 0.5 else 1
        for _ in range(n_primitives):
            local = style.primitives[_randint(gen, style.primitives.shape[0])].clone()
            if _rand(gen) < 0.5:
                local[:, 1] = -local[:, 1]
            length = float(_uniform(gen, 0.3, 0.6))
            c, s = math.cos(direction), math.sin(direction)
            rotation = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
            world = points[-1] + length * local[1:] @ rotation.T  # (3, 2)
            first = len(points) - 1
            points.extend(world.unbind(0))
            stroke_of_control.extend([stroke] * 3)
            primitive_index.append([first, first + 1, first + 2, first + 3])
            direction = _snap(
                direction + float(_uniform(gen, -2.3, 2.3)), style.direction_step, gen
            )
    control = torch.stack(points)
    control[:, 0] += style.slant * (control[:, 1] - 0.5)
    # Fit the control polygon (which bounds the curve) into the centre of the canvas.
    low, high = control.min(0).values, control.max(0).values
    scale = 0.68 / max(float((high - low).max()), 0.3)
    control = (control - (low + high) / 2) * scale + 0.5
    stroke_width = style.width * _uniform(gen, 0.85, 1.15, (n_strokes,))
    return Glyph(
        control=control,
        primitive_index=torch.tensor(primitive_index),
        stroke_of_control=torch.tensor(stroke_of_control),
        stroke_width=stroke_width,
    )


def draw(glyph: Glyph, n_drawers: int, gen: torch.Generator, jitter: DrawerJitter = DrawerJitter()):
    """Let ``n_drawers`` people draw ``glyph``; returns their pen strokes as line segments.

    Returns:
        ``(segments, widths)`` of shapes ``(n_drawers, n_segments, 2, 2)`` (segment
        start and end points, canvas units) and ``(n_drawers, n_segments)``.
    """
    d = n_drawers
    control = glyph.control.expand(d, -1, -1)
    control = control + jitter.point * torch.randn(
        control.shape, generator=gen, dtype=torch.float64
    )
    n_strokes = glyph.stroke_width.numel()
    shift = jitter.stroke_shift * torch.randn((d, n_strokes, 2), generator=gen, dtype=torch.float64)
    control = control + shift[:, glyph.stroke_of_control]

    def normal(*size):
        return torch.randn(size, generator=gen, dtype=torch.float64)

    angle = jitter.rotation * normal(d)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    scale = torch.exp(jitter.scale * (normal(d, 1) + 0.5 * normal(d, 2)))  # shared + per axis
    shear = jitter.shear * normal(d)
    linear = torch.zeros(d, 2, 2, dtype=torch.float64)
    linear[:, 0, 0], linear[:, 0, 1], linear[:, 1, 1] = (
        scale[:, 0],
        shear * scale[:, 1],
        scale[:, 1],
    )
    affine = rotation @ linear  # (D, 2, 2)
    offset = 0.5 + jitter.shift * normal(d, 1, 2)
    control = (control - 0.5) @ affine.transpose(1, 2) + offset

    curve = torch.einsum("pk,dnkc->dnpc", _BERNSTEIN, control[:, glyph.primitive_index])
    segments = torch.stack([curve[:, :, :-1], curve[:, :, 1:]], dim=-2)  # (D, n_prim, P-1, 2, 2)
    segments = segments.reshape(d, -1, 2, 2)
    stroke_of_primitive = glyph.stroke_of_control[glyph.primitive_index[:, 0]]
    width = glyph.stroke_width[stroke_of_primitive].repeat_interleave(POINTS_PER_PRIMITIVE - 1)
    width = width * torch.exp(jitter.width * normal(d, 1))
    return segments, width


def render(segments: torch.Tensor, widths: torch.Tensor, image_size: int) -> torch.Tensor:
    """Anti-aliased ink of polylines, as images.

    Args:
        segments: line segments in canvas units, shape ``(n_images, n_segments, 2, 2)``.
            Padding segments far outside the canvas draw nothing.
        widths: pen width of each segment, shape ``(n_images, n_segments)``.
        image_size: side ``R`` of the square images, in pixels.

    Returns:
        Ink coverage in ``[0, 1]``, float32 of shape ``(n_images, R, R)``.
    """
    segments = segments.float()
    centres = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    start = segments[..., 0, :]
    vector = segments[..., 1, :] - start
    inv_len2 = 1.0 / vector.square().sum(-1).clamp_min(1e-12)
    off_x = centres - start[..., 0:1]  # (N, S, R): pixel column minus segment start
    off_y = centres - start[..., 1:2]  # (N, S, R): pixel row minus segment start
    vx, vy = vector[..., 0, None], vector[..., 1, None]
    # Projection of every pixel onto every segment, clamped to the segment.
    t = (off_y * vy * inv_len2[..., None])[..., :, None] + (off_x * vx * inv_len2[..., None])[
        ..., None, :
    ]
    t.clamp_(0.0, 1.0)  # (N, S, R_rows, R_cols)
    dx = off_x[..., None, :] - t * vx[..., None]
    dy = off_y[..., :, None] - t.mul_(vy[..., None])
    dist = dx.square_().add_(dy.square_()).sqrt_()
    edge = dist.sub_(widths.float()[..., None, None] / 2).amin(1)  # (N, R, R)
    return (0.5 - edge * image_size).clamp_(0.0, 1.0)
