"""Small made-up datasets whose right answers the tests know."""

import torch

import fslearn as fsl


def labelled_dataset(n_classes=12, n_per_class=10, size=6, device="cpu") -> fsl.FewShotDataset:
    """Every image's pixels encode (class, instance), so sampled batches can be decoded exactly."""
    images = torch.zeros(n_classes, n_per_class, 1, size, size, dtype=torch.uint8)
    images[:, :, 0, 0, 0] = torch.arange(n_classes, dtype=torch.uint8)[:, None]
    images[:, :, 0, 0, 1] = torch.arange(n_per_class, dtype=torch.uint8)[None, :]
    names = [f"a{i % 3}/c{i}" for i in range(n_classes)]
    return fsl.FewShotDataset(images, names, [n.split("/")[0] for n in names], "labelled").to(device)


def decode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, 1, H, W) float images of :func:`labelled_dataset` → class and instance ids."""
    raw = (x * 255).round().long()
    return raw[..., 0, 0, 0], raw[..., 0, 0, 1]


def separable_characters(n_classes=10, device="cpu") -> fsl.FewShotDataset:
    """Tiny 'characters' a small network learns in a few steps: a bright square per class, plus noise."""
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n_classes, 8, 1, 16, 16, generator=g) * 60).to(torch.uint8)
    for c in range(n_classes):
        row, col = divmod(c, 4)
        images[c, :, 0, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = 255
    return fsl.FewShotDataset(images, [f"a/c{c}" for c in range(n_classes)], ["a"] * n_classes).to(device)


def pattern_dataset(n_classes=8, n_per_class=10, size=16, device="cpu") -> fsl.FewShotDataset:
    """Each class is a random binary pattern; its images flip 10% of the pixels."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.rand(n_classes, 1, 1, size, size, generator=g) > 0.5
    flips = torch.rand(n_classes, n_per_class, 1, size, size, generator=g) < 0.1
    images = (patterns ^ flips).to(torch.uint8) * 255
    return fsl.FewShotDataset(images, [f"c{i}" for i in range(n_classes)], ["a"] * n_classes, "patterns").to(device)
