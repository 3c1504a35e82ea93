"""Episodes: N-way K-shot tasks with a support set and a query set.

An episode draws ``n_way`` classes and, from each, ``n_shot`` support and
``n_query`` query images, disjoint; its labels are 0..n_way-1 in a random order
of the classes. :class:`EpisodeSampler` draws them with index arithmetic on the
device where the images live, from a seeded generator, without a DataLoader
and without host↔device copies; :class:`EpisodeSet` is a fixed, seeded list of
episodes on which different methods can be compared.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, replace

import torch

from ..common import check_positive_int
from ..data.dataset import FewShotDataset, to_float
from .augment import check_strength, random_affine
from .shapes import check_episode_shape
from .subsets import group_table, random_rows, random_subsets, subsets_within_groups
from .transfer import deliver


@dataclass
class Episode:
    """One task, or ``T`` tasks stacked on a leading dimension.

    Attributes:
        support_x: float images in ``[0, 1]``, shape ``(n_way * n_shot, C, H, W)``
            (or ``(T, n_way * n_shot, C, H, W)``), grouped by label: the first
            ``n_shot`` have label 0, and so on.
        support_y: labels in ``0..n_way-1``, shape ``(n_way * n_shot,)`` (or ``(T, ...)``).
        query_x: shape ``(n_way * n_query, C, H, W)`` (or ``(T, ...)``), grouped the same way.
        query_y: shape ``(n_way * n_query,)`` (or ``(T, ...)``).
        classes: the dataset class behind each label, shape ``(n_way,)`` (or ``(T, n_way)``).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor

    @property
    def n_way(self) -> int:
        return self.classes.shape[-1]

    @property
    def n_shot(self) -> int:
        return self.support_y.shape[-1] // self.n_way

    @property
    def n_query(self) -> int:
        return self.query_y.shape[-1] // self.n_way

    def to(self, device) -> Episode:
        return Episode(
            *(
                t.to(device)
                for t in (self.support_x, self.support_y, self.query_x, self.query_y, self.classes)
            )
        )


def _rotate_per_class(x: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape ``(T, n_way, P, C, H, W)`` by ``quarter_turns[t, w]`` × 90°, without
    a host sync."""
    k = quarter_turns[:, :, None, None, None, None]
    out = x
    for turns in (1, 2, 3):
        out = torch.where(k == turns, torch.rot90(x, turns, dims=(-2, -1)), out)
    return out


def assemble_episodes(dataset, classes, rows, n_shot, quarter_turns=None, device=None) -> Episode:
    """Gather an episode batch from class indices ``(T, n_way)`` and rows of
    ``dataset.flat_images`` ``(T, n_way, K+Q)``, both on the dataset's device.

    With ``device`` elsewhere (a set kept on the host, e.g. memory-mapped, for a GPU run)
    only the episode's uint8 images cross: gathered on the host into pinned memory, then
    copied without blocking the host.
    """
    n_tasks, n_way = classes.shape
    x = deliver(dataset.flat_images[rows], device)  # (T, n_way, K+Q, C, H, W)
    classes = deliver(classes, device)
    if quarter_turns is not None:
        x = _rotate_per_class(x, deliver(quarter_turns, x.device))
    x = to_float(x)
    n_query = rows.shape[-1] - n_shot
    labels = torch.arange(n_way, device=x.device)[None, :, None]
    support_y = labels.expand(n_tasks, n_way, n_shot).reshape(n_tasks, -1)
    query_y = labels.expand(n_tasks, n_way, n_query).reshape(n_tasks, -1)
    image_shape = x.shape[3:]
    return Episode(
        support_x=x[:, :, :n_shot].reshape(n_tasks, n_way * n_shot, *image_shape),
        support_y=support_y,
        query_x=x[:, :, n_shot:].reshape(n_tasks, n_way * n_query, *image_shape),
        query_y=query_y,
        classes=classes,
    )


def single_task(episode: Episode) -> Episode:
    return Episode(
        *(
            t[0]
            for t in (
                episode.support_x,
                episode.support_y,
                episode.query_x,
                episode.query_y,
                episode.classes,
            )
        )
    )


def takes_generator(transform) -> bool:
    try:
        return "generator" in inspect.signature(transform).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False


def check_transform(transform):
    """``transform`` if it is None or callable, else a TypeError naming it."""
    if transform is not None and not callable(transform):
        raise TypeError(
            f"transform must be a callable taking a float batch (B, C, H, W), e.g. "
            f"fsl.Augment(); got a {type(transform).__name__}"
        )
    return transform


def apply_transform(transform, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``transform`` applied to images ``x`` of shape ``(..., C, H, W)`` as one batch.

    ``generator`` is the sampler's generator for a transform with a ``generator`` parameter
    (fslearn's own: a resumed run draws the same), None for any other callable (a
    torchvision transform, say), called as ``transform(x)``: it draws from torch's global
    generator. The sampler asks which once (``takes_generator``), not at every draw.
    """
    batch = x.reshape(-1, *x.shape[-3:])
    out = transform(batch) if generator is None else transform(batch, generator=generator)
    if not isinstance(out, torch.Tensor) or out.shape != batch.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"transform {transform!r} turned a batch of shape {tuple(batch.shape)} into {got}; "
            "a transform must keep the batch's shape (crop and resize back to H×W)"
        )
    return out.reshape(x.shape)


class EpisodeSampler:
    """Draws N-way K-shot Q-query episodes from a dataset, on the dataset's device.

    Classes may hold different numbers of images: each class's images are drawn from its
    own count.

    Args:
        dataset: images grouped by class; move it to the GPU first
            (``dataset.to("cuda")``) to sample on the GPU.
        n_way: classes per episode.
        n_shot: support images per class.
        n_query: query images per class (15, the usual number).
        seed: seeds the sampler's own generator (on the dataset's device), so
            the sequence of episodes is reproducible on that device.
        rotate: rotate each class of each task by a random multiple of 90°
            (the MAML protocol's augmentation); needs square images.
        augment: warp every image by its own small random affine map
            (:func:`~fslearn.random_affine` at this strength, 0 to 2.5; 0: none), new
            drawings of the same characters for a training set with few of them.
        transform: a callable applied to every image of each episode on the device, as
            one float batch ``(B, C, H, W)`` in ``[0, 1]`` (e.g. :class:`~fslearn.Augment`
            for photos: crops, flips, colour jitter); it must keep the shape. A
            ``generator`` parameter, if it has one, gets the sampler's generator.
        device: where the episodes go, when not where the dataset is: a set too large for
            the GPU stays on the host (or in a mapped file) and each episode's images are
            gathered there and copied over through pinned memory.
        within_groups: draw each episode's classes from one group (for characters, one
            alphabet: the episodes of Lake et al.'s test), the group chosen in proportion to
            its classes; groups of fewer than ``n_way`` classes are never drawn.

    Example:
        >>> sampler = EpisodeSampler(fsl.load_embedded("background"), n_way=5, n_shot=1)
        >>> episode = sampler.sample()               # support_x: (5, 1, 28, 28)
        >>> batch = sampler.sample_tasks(32)         # support_x: (32, 5, 1, 28, 28)
    """

    def __init__(
        self,
        dataset: FewShotDataset,
        n_way: int,
        n_shot: int,
        n_query: int = 15,
        *,
        seed: int = 0,
        rotate: bool = False,
        augment: float = 0.0,
        transform=None,
        device=None,
        within_groups: bool = False,
    ):
        n_way, n_shot, n_query = check_episode_shape(dataset, n_way, n_shot, n_query)
        augment = check_strength(augment, "augment")
        height, width = dataset.image_shape[1:]
        if rotate and height != width:
            raise ValueError(f"rotate=True needs square images; got {height}×{width}")
        self.dataset = dataset
        self.n_way, self.n_shot, self.n_query = n_way, n_shot, n_query
        self.rotate = rotate
        self.augment = augment
        self.transform = check_transform(transform)
        self._transform_generator = takes_generator(transform)
        self.device = dataset.device if device is None else torch.device(device)
        self.generator = torch.Generator(device=dataset.device).manual_seed(seed)
        self.within_groups = bool(within_groups)
        if self.within_groups:
            self._groups = group_table(dataset.groups, n_way, dataset.device)

    def __repr__(self) -> str:
        where = f" → {self.device}" if self.device != self.dataset.device else ""
        return (
            f"EpisodeSampler({self.n_way}-way {self.n_shot}-shot {self.n_query}-query from "
            f"{self.dataset.n_classes} classes on {self.dataset.device}{where}"
            f"{', rotated' if self.rotate else ''}"
            f"{f', augmented ({self.augment:g})' if self.augment else ''}"
            f"{', transformed' if self.transform is not None else ''}"
            f"{', within groups' if self.within_groups else ''})"
        )

    def sample_tasks(self, n_tasks: int) -> Episode:
        """``n_tasks`` episodes stacked on a leading dimension (also for ``n_tasks=1``):
        ``support_x`` of shape ``(n_tasks, n_way * n_shot, C, H, W)``, and so on."""
        n_tasks = check_positive_int("n_tasks", n_tasks)
        where = self.dataset.device
        if self.within_groups:
            classes = subsets_within_groups(*self._groups, n_tasks, self.n_way, self.generator)
        else:
            classes = random_subsets(
                (n_tasks,), self.dataset.n_classes, self.n_way, self.generator, where
            )
        rows = random_rows(self.dataset, classes, self.n_shot + self.n_query, self.generator)
        turns = (
            torch.randint(4, (n_tasks, self.n_way), generator=self.generator, device=where)
            if self.rotate
            else None
        )
        episode = assemble_episodes(self.dataset, classes, rows, self.n_shot, turns, self.device)
        if self.augment:
            episode = replace(
                episode,
                support_x=random_affine(episode.support_x, self.augment, self.generator),
                query_x=random_affine(episode.query_x, self.augment, self.generator),
            )
        if self.transform is not None:
            drawn_by = self.generator if self._transform_generator else None
            episode = replace(
                episode,
                support_x=apply_transform(self.transform, episode.support_x, drawn_by),
                query_x=apply_transform(self.transform, episode.query_x, drawn_by),
            )
        return episode

    def sample(self, n_tasks: int | None = None) -> Episode:
        """One episode: ``support_x`` of shape ``(n_way * n_shot, C, H, W)``, and so on.

        ``sample(n_tasks)`` is the old spelling of
        :meth:`~fslearn.EpisodeSampler.sample_tasks` (deprecated: its shape depended on
        whether ``n_tasks`` was given).
        """
        if n_tasks is not None:
            warnings.warn(
                "EpisodeSampler.sample(n_tasks) is deprecated and will be removed in fslearn "
                "0.3; use sample_tasks(n_tasks), which stacks tasks for every n_tasks",
                FutureWarning,
                stacklevel=2,
            )
            return self.sample_tasks(n_tasks)
        return single_task(self.sample_tasks(1))

    def __iter__(self):
        """Endless single episodes."""
        while True:
            yield self.sample()

    def state_dict(self) -> dict:
        """The generator state, so a resumed run draws the same episodes."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
