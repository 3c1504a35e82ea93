"""A fixed, seeded list of episodes: what methods are compared on."""

from __future__ import annotations

import torch

from ..common import check_positive_int
from ..data.dataset import FewShotDataset
from .episodes import Episode, assemble_episodes, single_task
from .shapes import check_episode_shape
from .subsets import random_rows, random_subsets


class EpisodeSet:
    """A fixed, seeded list of episodes: the same tasks for every method and every device.

    Only indices are stored (``classes`` of shape ``(n_episodes, n_way)`` and
    ``rows``, the rows of ``dataset.flat_images``, of shape
    ``(n_episodes, n_way, n_shot + n_query)``); images are gathered when an episode is
    asked for, never augmented. Indices come from a CPU generator, so the episodes do not
    depend on where the dataset lives.

    Args:
        dataset: the classes to test on (e.g. the evaluation split).
        n_way, n_shot, n_query: the episode shape (15 queries is the standard).
        n_episodes: how many (600 for miniImageNet, 1 000 for Omniglot by convention).
        seed: which episodes.
        device: where the episodes go, when not where the dataset is (a set kept on the
            host for a GPU run; see :class:`~fslearn.EpisodeSampler`).
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
        device=None,
    ):
        n_way, n_shot, n_query = check_episode_shape(dataset, n_way, n_shot, n_query)
        n_episodes = check_positive_int("n_episodes", n_episodes)
        generator = torch.Generator().manual_seed(seed)
        self.dataset = dataset
        self.n_way, self.n_shot, self.n_query = n_way, n_shot, n_query
        self.seed = seed
        self.device = dataset.device if device is None else torch.device(device)
        self.classes = random_subsets((n_episodes,), dataset.n_classes, n_way, generator, "cpu")
        self.rows = random_rows(dataset, self.classes, n_shot + n_query, generator)

    @property
    def instances(self) -> torch.Tensor:
        """Which image of its class each row is: shape ``(n_episodes, n_way, n_shot + n_query)``."""
        return self.rows - self.dataset.offsets.cpu()[self.classes][..., None]

    def __len__(self) -> int:
        return self.classes.shape[0]

    def __repr__(self) -> str:
        return (
            f"EpisodeSet({len(self)} × {self.n_way}-way {self.n_shot}-shot {self.n_query}-query, "
            f"seed {self.seed}, from {self.dataset.name})"
        )

    def batch(self, start: int, stop: int) -> Episode:
        """Episodes ``start..stop-1`` stacked on a leading dimension, on ``device``."""
        where = self.dataset.device
        return assemble_episodes(
            self.dataset,
            self.classes[start:stop].to(where),
            self.rows[start:stop].to(where),
            self.n_shot,
            device=self.device,
        )

    def __getitem__(self, index: int) -> Episode:
        if not -len(self) <= index < len(self):
            raise IndexError(f"episode {index} of an EpisodeSet of {len(self)}")
        index %= len(self)
        return single_task(self.batch(index, index + 1))

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]
