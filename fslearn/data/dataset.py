"""Images grouped by class: the one in-memory form every dataset takes."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch


def dataset_problem(saved: dict, *, channels: int, image_size: int) -> str | None:
    """What stops ``saved`` (a loader's cached dict) from being the dataset it needs, or None.

    The loader needs uint8 ``images`` of shape ``(n_classes, n_per_class, channels,
    image_size, image_size)``, one string in ``class_names`` (and in ``groups``, if saved)
    per class and a string ``name`` if saved: a cache written by other code or damaged in
    place fails here and is built again instead of being returned.
    """
    images = saved["images"]
    if not isinstance(images, torch.Tensor):
        return f"images is a {type(images).__name__}, not a tensor"
    if (
        images.dtype != torch.uint8
        or images.dim() != 5
        or min(images.shape, default=0) == 0
        or tuple(images.shape[2:]) != (channels, image_size, image_size)
    ):
        return (
            f"images are {images.dtype} of shape {tuple(images.shape)}; expected torch.uint8 "
            f"of shape (n_classes, n_per_class, {channels}, {image_size}, {image_size})"
        )
    for key in ("class_names", "groups"):
        if key not in saved:
            continue
        values = saved[key]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return f"{key} is not a list of strings"
        if len(values) != len(images):
            return f"{len(images)} classes of images but {len(values)} {key}"
    if not isinstance(saved.get("name", ""), str):
        return "name is not a string"
    return None


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (ink 255) to float32 in ``[0, 1]``; float input passes through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def _integral(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex)


class _ClassIndexError(ValueError, IndexError):
    """A class index outside the dataset: a bad argument, and an index out of range."""


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
        if not isinstance(self.images, torch.Tensor):
            raise TypeError(
                f"images must be a torch.Tensor of shape (n_classes, n_per_class, C, H, W); got "
                f"a {type(self.images).__name__} (torch.from_numpy converts a numpy array)"
            )
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
        """The same dataset with its images on ``device`` (the whole set moves once).

        Raises:
            ValueError: ``device`` is no device name, or not one this machine has.
        """
        try:
            images = self.images.to(device)
        except torch.cuda.OutOfMemoryError:  # a real device, too small: not a bad name
            raise
        # torch says "Expected one of cpu, cuda, …" (RuntimeError) for a misspelt name and
        # "Torch not compiled with CUDA enabled" (AssertionError) on a machine without CUDA.
        except (RuntimeError, AssertionError) as error:
            n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
            here = "'cpu'" + (f" or 'cuda:0' to 'cuda:{n_gpus - 1}'" if n_gpus else "")
            # torch's first line says it; the rest can be a page of dispatcher tables.
            reason = (str(error).splitlines() or [""])[0]
            reason = reason if len(reason) <= 200 else reason[:200] + "…"
            raise ValueError(
                f"cannot put {self.name} on device {device!r} ({reason}); this machine has {here}"
            ) from error
        return FewShotDataset(images, self.class_names, self.groups, self.name)

    def select(self, classes, name: str | None = None) -> FewShotDataset:
        """The classes at indices ``classes`` (a list or 1-D tensor), in that order.

        Raises:
            ValueError: an index is not an integer (``1.5`` is not rounded) or is out of
                range; the error is also an IndexError.
        """
        index = torch.as_tensor(classes)
        if index.dim() > 1:
            raise ValueError(f"class indices must be a list or 1-D; got shape {tuple(index.shape)}")
        index = index.reshape(-1)
        if len(index) and (index.dtype == torch.bool or not _integral(index.dtype)):
            shown = f"{index[:5].tolist()}{'…' if len(index) > 5 else ''}"
            raise ValueError(f"class indices must be integers; got {shown} ({index.dtype})")
        index = index.long()
        outside = index[(index < -self.n_classes) | (index >= self.n_classes)]
        if len(outside):
            raise _ClassIndexError(
                f"class indices {outside[:5].tolist()} are outside {self.name}'s "
                f"{self.n_classes} classes (0 to {self.n_classes - 1})"
            )
        kept = index.tolist()
        return FewShotDataset(
            self.images[index.to(self.device)],
            [self.class_names[i] for i in kept],
            [self.groups[i] for i in kept],
            name or self.name,
        )

    def select_groups(self, groups, name: str | None = None) -> FewShotDataset:
        """The classes whose group (alphabet) is in ``groups`` (a list, or one name)."""
        wanted = {groups} if isinstance(groups, str) else set(groups)
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


def _made_already(dataset: FewShotDataset, suffix: str, function: str) -> None:
    """A ValueError if ``function`` made ``dataset``'s classes already (its names carry
    ``suffix``): a second time would make classes that hold the same images."""
    done = [name for name in dataset.class_names if suffix in name]
    if done:
        raise ValueError(
            f"{dataset.name} went through fsl.{function} already (its class {done[0]!r}, "
            f"among {len(done)}): a second time would make classes that hold the same images "
            f"under repeated names; use it as it is, or apply fsl.{function} once to the "
            "dataset it was made from"
        )


def with_rotations(dataset: FewShotDataset, angles=(0, 90, 180, 270)) -> FewShotDataset:
    """Each class rotated by each angle becomes a class of its own (Vinyals et al.'s protocol).

    Returns a dataset of ``len(angles) * n_classes`` classes, angle-major: the first
    ``n_classes`` are rotated by ``angles[0]``, and so on. Names get a ``@rot<angle>`` suffix.

    Raises:
        ValueError: an angle is not a multiple of 90 degrees, or repeats a rotation; an angle
            of 90 or 270 (modulo 360) on images that are not square; or ``dataset`` is rotated
            already (a name has the suffix ``@rot``, as Vinyals' Omniglot split has): rotated
            again, its classes would repeat (rotating ``@rot90`` by 90 gives ``@rot180``).
    """
    _made_already(dataset, "@rot", "with_rotations")
    angles = tuple(angles)
    if not angles:
        raise ValueError("angles must name at least one rotation, e.g. (0, 90, 180, 270)")
    # 90.0 passes ``% 90`` but not torch.rot90: an angle is an integer number of degrees.
    bad = [
        a for a in angles if isinstance(a, bool) or not isinstance(a, numbers.Integral) or a % 90
    ]
    if bad:
        raise ValueError(f"angles must be multiples of 90 degrees; got {bad}")
    turns = [a // 90 % 4 for a in angles]
    if len(set(turns)) < len(turns):
        raise ValueError(
            f"angles {list(angles)} repeat a rotation (modulo 360), which would make each class "
            f"two classes with the same images; give each rotation once"
        )
    height, width = dataset.image_shape[1:]
    quarter = [a for a, turn in zip(angles, turns, strict=True) if turn % 2]
    if quarter and height != width:
        raise ValueError(
            f"rotating by {quarter[0]} degrees turns {dataset.name}'s {height}×{width} images "
            f"into {width}×{height} ones, and the classes of one dataset share one image shape: "
            "quarter turns need square images; crop or resize them to a square first, or "
            "rotate by angles=(0, 180) alone"
        )
    images = torch.cat([torch.rot90(dataset.images, int(a) // 90, dims=(-2, -1)) for a in angles])
    names = [f"{name}@rot{a}" for a in angles for name in dataset.class_names]
    return FewShotDataset(
        images,
        names,
        list(dataset.groups) * len(angles),
        f"{dataset.name} ×{len(angles)} rotations",
    )


def with_reflections(dataset: FewShotDataset) -> FewShotDataset:
    """Each class and its left-right mirror image, each a class of its own.

    Returns a dataset of ``2 * n_classes`` classes: the classes as they are, then each one
    mirrored (names with a ``@mirror`` suffix). With :func:`with_rotations` after it, every
    character gives 8 classes, all its rotations and reflections.

    Raises:
        ValueError: ``dataset`` is mirrored already (a name has the suffix ``@mirror``):
            mirrored again, each class would have a copy of the same images.
    """
    _made_already(dataset, "@mirror", "with_reflections")
    return FewShotDataset(
        torch.cat([dataset.images, dataset.images.flip(-1)]),
        list(dataset.class_names) + [f"{name}@mirror" for name in dataset.class_names],
        list(dataset.groups) * 2,
        f"{dataset.name} and its mirror image",
    )
