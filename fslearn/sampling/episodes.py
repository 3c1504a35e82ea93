"""Episodes: N-way K-shot tasks with a support set and a query set.

An episode draws ``n_way`` classes and, from each, ``n_shot`` support and
``n_query`` query images, disjoint; its labels are 0..n_way-1 in a random order
of the classes. :class:`EpisodeSampler` draws them with index arithmetic on the
device where the images live, from a seeded generator, without a DataLoader
and without host↔device copies; :class:`EpisodeSet` is a fixed, seeded list of
episodes on which different methods can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..common import check_positive_int
from ..data.dataset import FewShotDataset, to_float
from .augment import check_strength, random_affine
from .subsets import random_subsets


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


def check_episode_shape(
    dataset: FewShotDataset, n_way: int, n_shot: int, n_query: int
) -> tuple[int, int, int]:
    """``(n_way, n_shot, n_query)`` as ints, or a ValueError naming the numbers when ``dataset``
    cannot give such episodes."""
    n_way = check_positive_int("n_way", n_way)
    n_shot = check_positive_int("n_shot", n_shot)
    n_query = check_positive_int("n_query", n_query)
    if n_way > dataset.n_classes:
        raise ValueError(
            f"n_way={n_way} but {dataset.name} has only {dataset.n_classes} classes; "
            f"use n_way ≤ {dataset.n_classes}"
        )
    if n_shot + n_query > dataset.n_per_class:
        raise ValueError(
            f"n_shot + n_query = {n_shot} + {n_query} = {n_shot + n_query} images per class, but "
            f"{dataset.name} has only {dataset.n_per_class} per class; "
            f"use n_shot + n_query ≤ {dataset.n_per_class}"
        )
    return n_way, n_shot, n_query


def _rotate_per_class(x: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape ``(T, n_way, P, C, H, W)`` by ``quarter_turns[t, w]`` × 90°, without
    a host sync."""
    k = quarter_turns[:, :, None, None, None, None]
    out = x
    for turns in (1, 2, 3):
        out = torch.where(k == turns, torch.rot90(x, turns, dims=(-2, -1)), out)
    return out


def _assemble(images, classes, instances, n_shot, quarter_turns=None) -> Episode:
    """Gather an episode batch from class indices ``(T, n_way)`` and instance indices
    ``(T, n_way, K+Q)``."""
    n_tasks, n_way = classes.shape
    x = images[classes[..., None], instances]  # (T, n_way, K+Q, C, H, W)
    if quarter_turns is not None:
        x = _rotate_per_class(x, quarter_turns)
    x = to_float(x)
    n_query = instances.shape[-1] - n_shot
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


def _squeeze_task(episode: Episode) -> Episode:
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


class EpisodeSampler:
    """Draws N-way K-shot Q-query episodes from a dataset, on the dataset's device.

    Args:
        dataset: images grouped by class; move it to the GPU first
            (``dataset.to("cuda")``) to sample on the GPU.
        n_way: classes per episode.
        n_shot: support images per class.
        n_query: query images per class.
        seed: seeds the sampler's own generator (on the dataset's device), so
            the sequence of episodes is reproducible on that device.
        rotate: rotate each class of each task by a random multiple of 90°
            (the MAML protocol's augmentation); needs square images.
        augment: warp every image by its own small random affine map
            (:func:`~fslearn.random_affine` at this strength, 0 to 2.5; 0: none), new
            drawings of the same characters for a training set with few of them.

    Example:
        >>> sampler = EpisodeSampler(fsl.load_embedded("background"), n_way=5, n_shot=1, n_query=15)
        >>> episode = sampler.sample()            # support_x: (5, 1, 28, 28)
        >>> batch = sampler.sample(n_tasks=32)    # support_x: (32, 5, 1, 28, 28)
    """

    def __init__(
        self,
        dataset: FewShotDataset,
        n_way: int,
        n_shot: int,
        n_query: int,
        *,
        seed: int = 0,
        rotate: bool = False,
        augment: float = 0.0,
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
        self.generator = torch.Generator(device=dataset.device).manual_seed(seed)

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler({self.n_way}-way {self.n_shot}-shot {self.n_query}-query from "
            f"{self.dataset.n_classes} classes on {self.dataset.device}"
            f"{', rotated' if self.rotate else ''}"
            f"{f', augmented ({self.augment:g})' if self.augment else ''})"
        )

    def sample(self, n_tasks: int | None = None) -> Episode:
        """One episode, or ``n_tasks`` of them stacked on a leading dimension."""
        if n_tasks is not None:
            n_tasks = check_positive_int("n_tasks", n_tasks, why="or None for one episode")
        tasks = 1 if n_tasks is None else n_tasks
        device = self.dataset.device
        classes = random_subsets(
            (tasks,), self.dataset.n_classes, self.n_way, self.generator, device
        )
        instances = random_subsets(
            (tasks, self.n_way),
            self.dataset.n_per_class,
            self.n_shot + self.n_query,
            self.generator,
            device,
        )
        turns = (
            torch.randint(4, (tasks, self.n_way), generator=self.generator, device=device)
            if self.rotate
            else None
        )
        episode = _assemble(self.dataset.images, classes, instances, self.n_shot, turns)
        if self.augment:
            episode = replace(
                episode,
                support_x=random_affine(episode.support_x, self.augment, self.generator),
                query_x=random_affine(episode.query_x, self.augment, self.generator),
            )
        return episode if n_tasks is not None else _squeeze_task(episode)

    def __iter__(self):
        """Endless single episodes."""
        while True:
            yield self.sample()

    def state_dict(self) -> dict:
        """The generator state, so a resumed run draws the same episodes."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class EpisodeSet:
    """A fixed, seeded list of episodes: the same tasks for every method and every device.

    Only indices are stored (``classes`` of shape ``(n_episodes, n_way)`` and
    ``instances`` of shape ``(n_episodes, n_way, n_shot + n_query)``); images are
    gathered when an episode is asked for. Indices come from a CPU generator,
    so the episodes do not depend on where the dataset lives.

    Args:
        dataset: the classes to test on (e.g. the evaluation split).
        n_way, n_shot, n_query: the episode shape (15 queries is the standard).
        n_episodes: how many (600 for miniImageNet, 1 000 for Omniglot by convention).
        seed: which episodes.
    """

    def __init__(
        self,
        dataset: FewShotDataset,
        n_way: int,
        n_shot: int,
        n_query: int = 15,
        n_episodes: int = 1000,
        *,
        seed: int = 0,
    ):
        n_way, n_shot, n_query = check_episode_shape(dataset, n_way, n_shot, n_query)
        n_episodes = check_positive_int("n_episodes", n_episodes)
        generator = torch.Generator().manual_seed(seed)
        self.dataset = dataset
        self.n_way, self.n_shot, self.n_query = n_way, n_shot, n_query
        self.seed = seed
        self.classes = random_subsets((n_episodes,), dataset.n_classes, n_way, generator, "cpu")
        self.instances = random_subsets(
            (n_episodes, n_way), dataset.n_per_class, n_shot + n_query, generator, "cpu"
        )

    def __len__(self) -> int:
        return self.classes.shape[0]

    def __repr__(self) -> str:
        return (
            f"EpisodeSet({len(self)} × {self.n_way}-way {self.n_shot}-shot {self.n_query}-query, "
            f"seed {self.seed}, from {self.dataset.name})"
        )

    def batch(self, start: int, stop: int) -> Episode:
        """Episodes ``start..stop-1`` stacked on a leading dimension, on the dataset's device."""
        device = self.dataset.device
        return _assemble(
            self.dataset.images,
            self.classes[start:stop].to(device),
            self.instances[start:stop].to(device),
            self.n_shot,
        )

    def __getitem__(self, index: int) -> Episode:
        if not -len(self) <= index < len(self):
            raise IndexError(f"episode {index} of an EpisodeSet of {len(self)}")
        index %= len(self)
        return _squeeze_task(self.batch(index, index + 1))

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]
