"""Images grouped by class: the one in-memory form every dataset takes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (ink 255) to float32 in ``[0, 1]``; float input passes through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


@dataclass
class FewShotDataset:
    """A set of classes with the same number of images each.

    Attributes:
        images: uint8 tensor of shape ``(n_classes, n_per_class, C, H, W)``; for
            character sets the ink is the foreground (255) on a 0 background.
        class_names: one name per class, e.g. ``"Vorani/character07"``.
        groups: the group each class belongs to (the alphabet, for characters).
        name: a short label for printing.
    """

    images: torch.Tensor
    class_names: list[str]
    groups: list[str]
    name: str = "dataset"

    def __post_init__(self):
        if self.images.dim() != 5:
            raise ValueError(
                "images must have shape (n_classes, n_per_class, C, H, W); "
                f"got {tuple(self.images.shape)}"
            )
        n_classes, n_per_class = self.images.shape[:2]
        if n_classes == 0 or n_per_class == 0:
            raise ValueError(
                f"{self.name} is empty: {n_classes} classes × {n_per_class} images per class"
            )
        if len(self.class_names) != n_classes or len(self.groups) != n_classes:
            raise ValueError(
                f"{n_classes} classes but {len(self.class_names)} class names and "
                f"{len(self.groups)} groups"
            )

    @property
    def n_classes(self) -> int:
        return self.images.shape[0]

    @property
    def n_per_class(self) -> int:
        return self.images.shape[1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[2:])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return self.n_classes * self.n_per_class

    def __repr__(self) -> str:
        alphabets = len(dict.fromkeys(self.groups))
        return (
            f"FewShotDataset({self.name!r}: {self.n_classes} classes in {alphabets} groups, "
            f"{self.n_per_class} images each, image shape {self.image_shape}, on {self.device})"
        )

    def to(self, device) -> FewShotDataset:
        """The same dataset with its images on ``device`` (the whole set moves once)."""
        return FewShotDataset(self.images.to(device), self.class_names, self.groups, self.name)

    def select(self, classes, name: str | None = None) -> FewShotDataset:
        """The classes at indices ``classes`` (a list or 1-D tensor), in that order."""
        index = torch.as_tensor(classes, dtype=torch.long)
        kept = index.tolist()
        return FewShotDataset(
            self.images[index.to(self.device)],
            [self.class_names[i] for i in kept],
            [self.groups[i] for i in kept],
            name or self.name,
        )

    def select_groups(self, groups, name: str | None = None) -> FewShotDataset:
        """The classes whose group (alphabet) is in ``groups``."""
        wanted = set(groups)
        unknown = wanted - set(self.groups)
        if unknown:
            raise KeyError(
                f"{self.name} has no group(s) {sorted(unknown)}; it has {sorted(set(self.groups))}"
            )
        return self.select([i for i, g in enumerate(self.groups) if g in wanted], name)

    def flat(self, float_images: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as one classification dataset.

        Returns:
            ``(x, y)``: images of shape ``(n_classes * n_per_class, C, H, W)``
            (float in ``[0, 1]`` unless ``float_images=False``) and class labels
            of shape ``(n_classes * n_per_class,)``.
        """
        x = self.images.flatten(0, 1)
        y = torch.arange(self.n_classes, device=self.device).repeat_interleave(self.n_per_class)
        return (to_float(x) if float_images else x), y


def with_rotations(dataset: FewShotDataset, angles=(0, 90, 180, 270)) -> FewShotDataset:
    """Each class rotated by each angle becomes a class of its own (Vinyals et al.'s protocol).

    Returns a dataset of ``len(angles) * n_classes`` classes, angle-major: the first
    ``n_classes`` are rotated by ``angles[0]``, and so on. Names get a ``@rot<angle>`` suffix.
    """
    bad = [a for a in angles if a % 90]
    if bad:
        raise ValueError(f"angles must be multiples of 90 degrees; got {bad}")
    images = torch.cat([torch.rot90(dataset.images, a // 90, dims=(-2, -1)) for a in angles])
    names = [f"{name}@rot{a}" for a in angles for name in dataset.class_names]
    return FewShotDataset(
        images,
        names,
        list(dataset.groups) * len(angles),
        f"{dataset.name} ×{len(angles)} rotations",
    )
