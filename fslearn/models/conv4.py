"""The Conv4 backbone of the few-shot literature: four conv blocks and a flatten."""

from __future__ import annotations

import torch
from torch import nn

from ..common import check_positive_int, seeded
from .task_batch_norm import TaskBatchNorm2d

#: Each block halves height and width with a 2×2 max-pool; below this many
#: pixels the fourth block would have nothing left to pool.
MIN_IMAGE_SIZE = 16


def conv_block(
    in_channels: int, out_channels: int, *, track_running_stats: bool = True
) -> nn.Sequential:
    """3×3 convolution → batch norm → ReLU → 2×2 max-pool:
    ``(B, C_in, H, W) → (B, C_out, H//2, W//2)``.

    With ``track_running_stats=False`` the batch norm is a :class:`TaskBatchNorm2d`.
    """
    norm = nn.BatchNorm2d(out_channels) if track_running_stats else TaskBatchNorm2d(out_channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        norm,
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Sequential):
    """Four conv blocks and a flatten: the backbone of Vinyals et al., Snell et al., Finn et al.

    Maps images of shape ``(B, in_channels, H, W)`` to embeddings of shape
    ``(B, embedding_dim)`` with ``embedding_dim = hidden_channels * (H // 16) * (W // 16)``
    (64 for 1×28×28 input and 64 channels, 1600 for 3×84×84).

    Args:
        in_channels: image channels (1 for characters, 3 for colour images).
        hidden_channels: filters in every block (64 for Omniglot, 32 or 64 for miniImageNet).
        track_running_stats: keep batch-norm running statistics; MAML under
            ``vmap`` needs ``False`` (per-task batch statistics, with
            :class:`TaskBatchNorm2d`).
        seed: seed for the weight initialisation (``None``: torch's global generator).
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden_channels: int = 64,
        *,
        track_running_stats: bool = True,
        seed: int | None = None,
    ):
        in_channels = check_positive_int("in_channels", in_channels)
        hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        with seeded(seed):
            blocks = [
                conv_block(c_in, hidden_channels, track_running_stats=track_running_stats)
                for c_in in (in_channels, hidden_channels, hidden_channels, hidden_channels)
            ]
        super().__init__(*blocks, nn.Flatten())
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels

    def __getitem__(self, index):
        # nn.Sequential rebuilds a slice through self.__class__, whose __init__ takes widths,
        # not modules.
        if isinstance(index, slice):
            return nn.Sequential(*list(self)[index])
        return super().__getitem__(index)

    def feature_shape(self, image_shape) -> tuple[int, int, int]:
        """Shape ``(C, H', W')`` of the last block's output for one image of ``(C, H, W)``."""
        channels, height, width = image_shape
        if channels != self.in_channels:
            raise ValueError(
                f"Conv4 was built for {self.in_channels}-channel images but got {channels} "
                f"channels (image shape {tuple(image_shape)}); build it with in_channels={channels}"
            )
        if min(height, width) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"Conv4 needs images of at least {MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE} (four 2×2 "
                f"poolings); got {height}×{width}. Resize the images, e.g. to 28×28"
            )
        return self.hidden_channels, height // 16, width // 16

    def embedding_dim(self, image_shape) -> int:
        """Length of the embedding of one image of shape ``(C, H, W)``."""
        c, h, w = self.feature_shape(image_shape)
        return c * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images → ``(B, embedding_dim)`` embeddings."""
        if x.dim() != 4:
            raise ValueError(
                f"Conv4 takes a batch of images (B, C, H, W); got shape {tuple(x.shape)}"
            )
        self.feature_shape(x.shape[1:])
        return super().forward(x)
