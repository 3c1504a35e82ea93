"""Images grouped by class: the one in-memory form every dataset takes."""

from __future__ import annotations

import torch


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (ink 255) to float32 in ``[0, 1]``; float input passes through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def _integral(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex)


class _ClassIndexError(ValueError, IndexError):
    """A class index outside the dataset: a bad argument, and an index out of range."""


def _counts_tensor(counts, n_images: int) -> torch.Tensor:
    """``counts`` as a 1-D int64 CPU tensor of positive counts that add up to ``n_images``."""
    as_tensor = torch.as_tensor(counts)
    if as_tensor.dim() != 1 or (len(as_tensor) and not _integral(as_tensor.dtype)):
        raise ValueError(
            f"counts must be a 1-D list of integers, one per class; got shape "
            f"{tuple(as_tensor.shape)} of {as_tensor.dtype}"
        )
    as_tensor = as_tensor.long().cpu()
    empty = torch.nonzero(as_tensor <= 0).flatten()
    if len(empty):
        raise ValueError(
            f"every class needs at least one image; classes {empty[:5].tolist()} have counts "
            f"{as_tensor[empty[:5]].tolist()}"
        )
    if int(as_tensor.sum()) != n_images:
        raise ValueError(
            f"counts add up to {int(as_tensor.sum())} images but images holds {n_images}; "
            "give one count per class, in the order of the classes in images"
        )
    return as_tensor


class FewShotDataset:
    """A set of classes of images, the same number in each or not.

    Two forms, one class:

    - equal sizes: ``images`` of shape ``(n_classes, n_per_class, C, H, W)``;
    - any sizes: ``images`` of shape ``(n_images, C, H, W)``, class-major (class 0's
      images first), with ``counts`` giving each class's number of images.

    Either way the images are held as one flat uint8 tensor, ``flat_images``, with
    each class's ``offsets`` and ``counts``; the samplers draw from each class's
    own count on the dataset's device. The flat tensor may be a memory-mapped file
    (:func:`~fslearn.load_folder` maps a cache larger than memory allows): samplers then
    read only the images each episode needs.

    Args:
        images: uint8 images; for character sets the ink is the foreground (255) on a
            0 background.
        class_names: one name per class, e.g. ``"Vorani/character07"``.
        groups: the group each class belongs to (the alphabet, for characters); the
            within-group test draws its tasks inside one group.
        name: a short label for printing.
        counts: the images of each class, for the flat form (``None``: equal sizes).

    Attributes:
        flat_images: every image, ``(n_images, C, H, W)`` uint8, class by class.
        counts: each class's number of images, ``(n_classes,)`` int64 on the device.
        offsets: the row of ``flat_images`` where each class starts, ``(n_classes,)``.
        count_list: ``counts`` as a list of ints (on the host, for checks and messages).

    Raises:
        ValueError: a shape, count or name list that does not match (the numbers named).
    """

    def __init__(
        self,
        images: torch.Tensor,
        class_names: list[str],
        groups: list[str],
        name: str = "dataset",
        *,
        counts=None,
    ):
        self.name = name
        if not isinstance(images, torch.Tensor):
            raise TypeError(
                f"images must be a torch.Tensor of shape (n_classes, n_per_class, C, H, W) or, "
                f"with counts=, (n_images, C, H, W); got a {type(images).__name__} "
                "(torch.from_numpy converts a numpy array)"
            )
        if counts is None:
            if images.dim() != 5:
                raise ValueError(
                    "images must have shape (n_classes, n_per_class, C, H, W), or "
                    f"(n_images, C, H, W) with counts= per class; got {tuple(images.shape)}"
                )
            n_classes, n_per_class = images.shape[:2]
            if n_classes == 0 or n_per_class == 0:
                raise ValueError(
                    f"{name} is empty: {n_classes} classes × {n_per_class} images per class"
                )
            flat = images.flatten(0, 1)
            counts = torch.full((n_classes,), n_per_class, dtype=torch.long)
        else:
            if images.dim() != 4:
                raise ValueError(
                    "with counts=, images must have shape (n_images, C, H, W), class-major; "
                    f"got {tuple(images.shape)}"
                )
            flat = images
            counts = _counts_tensor(counts, len(images))
            if len(counts) == 0:
                raise ValueError(f"{name} is empty: no classes")
        n_classes = len(counts)
        if len(class_names) != n_classes or len(groups) != n_classes:
            raise ValueError(
                f"{n_classes} classes but {len(class_names)} class names and {len(groups)} groups"
            )
        self.flat_images = flat
        self.class_names = list(class_names)
        self.groups = list(groups)
        self.count_list = counts.tolist()
        self.min_per_class, self.max_per_class = min(self.count_list), max(self.count_list)
        self.counts = counts.to(flat.device)
        self.offsets = (torch.cumsum(counts, 0) - counts).to(flat.device)

    @classmethod
    def from_classes(
        cls, class_images, class_names: list[str], groups: list[str], name: str = "dataset"
    ) -> FewShotDataset:
        """A dataset from one uint8 tensor per class, each ``(n_i, C, H, W)`` (sizes may
        differ; ``C, H, W`` may not)."""
        class_images = list(class_images)
        shapes = {tuple(x.shape[1:]) for x in class_images if x.dim() == 4}
        bad = [i for i, x in enumerate(class_images) if x.dim() != 4 or len(x) == 0]
        if bad or len(shapes) > 1:
            where = (
                bad[0]
                if bad
                else next(
                    i
                    for i, x in enumerate(class_images)
                    if tuple(x.shape[1:]) != tuple(class_images[0].shape[1:])
                )
            )
            shown = class_names[where] if where < len(class_names) else where
            raise ValueError(
                f"class {shown!r} has images of shape {tuple(class_images[where].shape)}; every "
                f"class needs a tensor (n_i ≥ 1, C, H, W) with the C, H, W of the others"
            )
        if not class_images:
            raise ValueError(f"{name} is empty: no classes")
        return cls(
            torch.cat(class_images),
            class_names,
            groups,
            name,
            counts=[len(x) for x in class_images],
        )

    @property
    def n_classes(self) -> int:
        return len(self.count_list)

    @property
    def is_ragged(self) -> bool:
        """True where the classes have different numbers of images."""
        return self.min_per_class != self.max_per_class

    def _smallest(self) -> str:
        smallest = self.count_list.index(self.min_per_class)
        return f"{self.class_names[smallest]!r} has {self.min_per_class}"

    @property
    def n_per_class(self) -> int:
        """The images of every class, for a set of equal classes.

        Raises:
            ValueError: the classes have different sizes (then use ``counts``).
        """
        if self.is_ragged:
            raise ValueError(
                f"{self.name}'s classes have {self.min_per_class} to {self.max_per_class} images "
                f"(class {self._smallest()}): there is no one n_per_class; use .counts, "
                ".min_per_class or .class_images(i)"
            )
        return self.min_per_class

    @property
    def images(self) -> torch.Tensor:
        """The images as ``(n_classes, n_per_class, C, H, W)``, for a set of equal classes.

        Raises:
            ValueError: the classes have different sizes (then use ``flat_images``,
                :meth:`class_images`).
        """
        if self.is_ragged:
            raise ValueError(
                f"{self.name}'s classes have {self.min_per_class} to {self.max_per_class} "
                "images, which no (n_classes, n_per_class, C, H, W) tensor holds; use "
                ".flat_images with .offsets and .counts, or .class_images(i)"
            )
        return self.flat_images.view(self.n_classes, self.min_per_class, *self.image_shape)

    def class_images(self, index: int) -> torch.Tensor:
        """The images of class ``index``: shape ``(counts[index], C, H, W)``."""
        self._check_indices(torch.as_tensor([index]))
        index = int(index) % self.n_classes
        start = sum(self.count_list[:index])
        return self.flat_images[start : start + self.count_list[index]]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.flat_images.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.flat_images.device

    def __len__(self) -> int:
        return len(self.flat_images)

    def __repr__(self) -> str:
        n_groups = len(dict.fromkeys(self.groups))
        groups = f"{n_groups} group" + ("s" if n_groups != 1 else "")
        low, high = self.min_per_class, self.max_per_class
        sizes = f"{low} to {high} images each" if self.is_ragged else f"{low} images each"
        return (
            f"FewShotDataset({self.name!r}: {self.n_classes} classes in {groups}, "
            f"{sizes}, image shape {self.image_shape}, on {self.device})"
        )

    def to(self, device) -> FewShotDataset:
        """The same dataset with its images on ``device`` (the whole set moves once).

        Raises:
            ValueError: ``device`` is no device name, or not one this machine has.
        """
        try:
            flat = self.flat_images.to(device)
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
        return FewShotDataset(
            flat, self.class_names, self.groups, self.name, counts=self.count_list
        )

    def _check_indices(self, index: torch.Tensor) -> torch.Tensor:
        if index.dim() > 1:
            raise ValueError(f"class indices must be a list or 1-D; got shape {tuple(index.shape)}")
        index = index.reshape(-1)
        if len(index) and (index.dtype == torch.bool or not _integral(index.dtype)):
            shown = f"{index[:5].tolist()}{'…' if len(index) > 5 else ''}"
            raise ValueError(f"class indices must be integers; got {shown} ({index.dtype})")
        index = index.long().cpu()
        outside = index[(index < -self.n_classes) | (index >= self.n_classes)]
        if len(outside):
            raise _ClassIndexError(
                f"class indices {outside[:5].tolist()} are outside {self.name}'s "
                f"{self.n_classes} classes (0 to {self.n_classes - 1})"
            )
        return index % self.n_classes

    def select(self, classes, name: str | None = None) -> FewShotDataset:
        """The classes at indices ``classes`` (a list or 1-D tensor), in that order.

        Raises:
            ValueError: an index is not an integer (``1.5`` is not rounded) or is out of
                range; the error is also an IndexError.
        """
        kept = self._check_indices(torch.as_tensor(classes)).tolist()
        if not kept:
            raise ValueError(f"no classes selected from {self.name}: give at least one index")
        counts = [self.count_list[i] for i in kept]
        starts = self.offsets.cpu().tolist()
        rows = torch.cat([torch.arange(starts[i], starts[i] + self.count_list[i]) for i in kept])
        return FewShotDataset(
            self.flat_images[rows.to(self.device)],
            [self.class_names[i] for i in kept],
            [self.groups[i] for i in kept],
            name or self.name,
            counts=counts,
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
            ``(x, y)``: images of shape ``(n_images, C, H, W)`` (float in ``[0, 1]``
            unless ``float_images=False``) and class labels of shape ``(n_images,)``.
        """
        x = self.flat_images
        y = torch.arange(self.n_classes, device=self.device).repeat_interleave(self.counts)
        return (to_float(x) if float_images else x), y
