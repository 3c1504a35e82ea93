"""Per-channel normalisation of natural images: the statistics measured on a training set
(:func:`~fslearn.channel_stats`) and a module that applies them to every image
(:class:`~fslearn.Normalize`)."""

from __future__ import annotations

import torch
from torch import nn

from ..common import check_positive_int


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: a module to put in front of a backbone, so that the
    statistics are saved in its state dict and every image, training or test, goes through
    them.

    >>> normalize = Normalize([0.5, 0.4, 0.3], [0.25, 0.25, 0.25])
    >>> normalize(torch.full((2, 3, 4, 4), 0.5))[0, :, 0, 0]
    tensor([0.0000, 0.4000, 0.8000])

    Args:
        mean, std: one number per channel each (:func:`~fslearn.channel_stats` measures
            them); every std > 0.

    Forward takes float images ``(..., C, H, W)`` and returns the same shape.
    """

    def __init__(self, mean, std):
        super().__init__()
        given = mean, std
        try:
            mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
            std = torch.as_tensor(std, dtype=torch.float32).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"mean and std must be sequences of numbers, one per channel; got {given!r}"
            ) from None
        if len(mean) != len(std) or not len(mean):
            raise ValueError(
                f"mean and std must give one number per channel each, as many of both; got "
                f"{len(mean)} means and {len(std)} stds"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError(
                f"every mean must be finite and every std a finite number > 0 (a channel with "
                f"std 0 is constant: leave it out or use std 1); got mean={mean.tolist()}, "
                f"std={std.tolist()}"
            )
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 3 or x.shape[-3] != len(self.mean):
            raise ValueError(
                f"Normalize holds statistics for {len(self.mean)} channel(s); got images of "
                f"shape {tuple(x.shape)} (expected (..., {len(self.mean)}, H, W))"
            )
        return (x - self.mean[:, None, None]) / self.std[:, None, None]

    def extra_repr(self) -> str:
        return f"mean={[round(v, 6) for v in self.mean.tolist()]}, " + (
            f"std={[round(v, 6) for v in self.std.tolist()]}"
        )


def channel_stats(dataset, max_images: int = 10_000, seed: int = 0, chunk: int = 512):
    """The mean and standard deviation of each channel, over up to ``max_images`` images.

    Images are read ``chunk`` at a time (a memory-mapped set is never loaded whole), in [0, 1]
    as :func:`~fslearn.to_float` makes them, and summed in float64.

    Args:
        dataset: a :class:`~fslearn.FewShotDataset` (its ``flat_images``) or an image tensor
            ``(n_images, C, H, W)``, uint8 or float.
        max_images: where the set has more, a sample of this many, drawn with ``seed``.

    Returns:
        ``(mean, std)``, two float32 tensors ``(C,)``: the std of all sampled pixel values
        (``torch.std``'s, with Bessel's correction), ready for :class:`~fslearn.Normalize`.
    """
    images = dataset if isinstance(dataset, torch.Tensor) else getattr(dataset, "flat_images", None)
    if images is None or images.ndim != 4 or len(images) * images.shape[-2:].numel() < 2:
        raise ValueError(
            "channel_stats takes a FewShotDataset or an image tensor (n_images, C, H, W) of 2 "
            f"pixels or more; got {type(dataset).__name__}"
            f"{f' of shape {tuple(images.shape)}' if images is not None else ''}"
        )
    max_images = check_positive_int("max_images", max_images)
    chunk = check_positive_int("chunk", chunk)
    n = len(images)
    picked = torch.arange(n)
    if n > max_images:
        generator = torch.Generator().manual_seed(check_positive_int("seed", seed, minimum=0))
        picked = torch.randperm(n, generator=generator)[:max_images].sort().values
    # Chan et al.'s pairwise update of the mean and the summed squared deviations: no
    # cancellation, however many pixels.
    count, mean, deviations = 0, 0.0, 0.0
    for start in range(0, len(picked), chunk):
        part = images[picked[start : start + chunk].to(images.device)].to(torch.float64)
        if images.dtype == torch.uint8:
            part /= 255.0
        part = part.transpose(0, 1).flatten(1)
        n_part, part_mean = part.shape[1], part.mean(1)
        part_deviations = (part - part_mean[:, None]).square().sum(1)
        delta, total = part_mean - mean, count + n_part
        mean = mean + delta * n_part / total
        deviations = deviations + part_deviations + delta.square() * count * n_part / total
        count = total
    return mean.float(), (deviations / (count - 1)).sqrt().float()
