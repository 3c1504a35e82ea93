"""ResNet-12, the deeper backbone of the few-shot literature (TADAM, MetaOptNet and after).

Four residual blocks of widths 64, 160, 320 and 640, as Lee et al. (2019, MetaOptNet; their
``models/ResNet12_embedding.py``) published it, on the block of Oreshkin et al. (2018,
TADAM, whose widths are 64, 128, 256 and 512, with swish activations). Each block
(``ResidualBlock``) is three 3×3 convolutions without bias, each followed by batch norm,
the first two by a leaky ReLU of slope 0.1; a 1×1 convolution and batch norm carry the
block's input to its end, where the two are added, passed through the leaky ReLU and
max-pooled 2×2.
"""

from __future__ import annotations

import torch
from torch import nn

from ..common import check_positive_int, seeded
from .task_batch_norm import TaskBatchNorm2d

#: Each block halves height and width with a 2×2 max-pool; below this many pixels the
#: fourth block would have nothing left to pool.
MIN_IMAGE_SIZE = 16

#: The widths of Lee et al.'s ResNet-12.
STANDARD_CHANNELS = (64, 160, 320, 640)


def _norm(channels: int, track_running_stats: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels) if track_running_stats else TaskBatchNorm2d(channels)


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)


class ResidualBlock(nn.Module):
    """One block of ResNet-12: ``(B, C_in, H, W) → (B, C_out, H//2, W//2)``.

    ``conv-BN-LeakyReLU, conv-BN-LeakyReLU, conv-BN``, plus the shortcut ``1×1 conv-BN`` of
    the input, then LeakyReLU(0.1) and a 2×2 max-pool. With ``track_running_stats=False``
    every batch norm is a :class:`~fslearn.TaskBatchNorm2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, *, track_running_stats: bool = True):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels)
        self.bn1 = _norm(out_channels, track_running_stats)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = _norm(out_channels, track_running_stats)
        self.conv3 = _conv3x3(out_channels, out_channels)
        self.bn3 = _norm(out_channels, track_running_stats)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            _norm(out_channels, track_running_stats),
        )
        self.activation = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.bn1(self.conv1(x)))
        out = self.activation(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.activation(out + self.shortcut(x)))


class ResNet12(nn.Module):
    """ResNet-12: four residual blocks (``ResidualBlock``) and a global average pool.

    Maps images ``(B, in_channels, H, W)`` to embeddings ``(B, channels[-1])`` (640 with the
    standard widths, whatever the image size from 16×16 up): the last block's output,
    ``(B, channels[-1], H // 16, W // 16)``, averaged over its positions. With the standard
    widths it has 12 424 320 parameters.

    What differs from Lee et al.'s code (MetaOptNet, ``models/ResNet12_embedding.py``): no
    dropout or DropBlock (theirs, in training only: dropout after the first two blocks,
    DropBlock after the last two; it changes no shape and no parameter), and the average
    pool is always on (theirs is an option, off by default, which flattens the 640×5×5 maps
    of 84×84 images into 16 000 numbers; ``avg_pool=True`` there pools the same 5×5 maps
    into these 640). The weights start as theirs: convolutions He-normal (``fan_out``),
    batch norm at scale 1 and shift 0.

    Args:
        in_channels: image channels (3 for colour images, 1 for characters).
        channels: the four blocks' widths; small ones such as ``(16, 32, 64, 128)`` give a
            network that trains on a CPU.
        track_running_stats: keep batch-norm running statistics; MAML needs ``False``
            (per-task batch statistics, with :class:`~fslearn.TaskBatchNorm2d`).
        seed: seed for the weight initialisation (``None``: torch's global generator).
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels=STANDARD_CHANNELS,
        *,
        track_running_stats: bool = True,
        seed: int | None = None,
    ):
        super().__init__()
        in_channels = check_positive_int("in_channels", in_channels)
        if isinstance(channels, (str, bytes)) or not hasattr(channels, "__len__"):
            raise ValueError(
                f"channels must be four block widths, e.g. (64, 160, 320, 640); got {channels!r}"
            )
        if len(channels) != 4:
            raise ValueError(
                f"ResNet-12 has four blocks: channels must be four widths, e.g. "
                f"(64, 160, 320, 640); got {len(channels)}: {tuple(channels)!r}"
            )
        channels = tuple(check_positive_int(f"channels[{i}]", c) for i, c in enumerate(channels))
        with seeded(seed):
            self.blocks = nn.Sequential(
                *[
                    ResidualBlock(c_in, c_out, track_running_stats=track_running_stats)
                    for c_in, c_out in zip((in_channels, *channels[:-1]), channels, strict=True)
                ]
            )
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(
                        module.weight, mode="fan_out", nonlinearity="leaky_relu"
                    )
        self.in_channels = in_channels
        self.channels = channels

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, channels={self.channels}"

    def feature_shape(self, image_shape) -> tuple[int, int, int]:
        """Shape ``(C, H', W')`` of the last block's output for one image of ``(C, H, W)``,
        before the average pool."""
        channels, height, width = image_shape
        if channels != self.in_channels:
            raise ValueError(
                f"ResNet12 was built for {self.in_channels}-channel images but got {channels} "
                f"channels (image shape {tuple(image_shape)}); build it with in_channels={channels}"
            )
        if min(height, width) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"ResNet12 needs images of at least {MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE} (four 2×2 "
                f"poolings); got {height}×{width}. Resize the images, e.g. to 84×84"
            )
        return self.channels[-1], height // 16, width // 16

    def embedding_dim(self, image_shape) -> int:
        """Length of the embedding of one image of shape ``(C, H, W)``: ``channels[-1]``."""
        return self.feature_shape(image_shape)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images → ``(B, channels[-1])`` embeddings."""
        if x.dim() != 4:
            raise ValueError(
                f"ResNet12 takes a batch of images (B, C, H, W); got shape {tuple(x.shape)}"
            )
        self.feature_shape(x.shape[1:])
        return self.blocks(x).mean(dim=(2, 3))
