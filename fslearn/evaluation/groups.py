"""Accuracy on episodes drawn within one group (alphabet) at a time."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..distributed import SINGLE, World
from ..sampling.episode_set import EpisodeSet
from .episodes import Accuracy, batch_norm_mode, confidence_interval, evaluate


@dataclass
class GroupAccuracy:
    """Accuracies on episodes drawn within one group (alphabet) at a time.

    Attributes:
        groups: the :class:`Accuracy` of each group scored, by name, in the dataset's order.
        overall: over every scored group's episodes together (the mean of the groups' means,
            each group having as many episodes), with the learner's batch-norm mode in
            ``test_bn``.
        left_out: the groups with too few classes for an episode, with their class counts.
    """

    groups: dict[str, Accuracy]
    overall: Accuracy
    left_out: dict[str, int]


def check_groups(dataset) -> None:
    """A ValueError unless ``dataset``'s classes come in two groups (alphabets) or more.

    With one group, episodes "within a group" are the dataset's ordinary episodes, and
    their accuracy says nothing of how a learner tells apart the characters of one alphabet.
    """
    groups = set(dataset.groups)
    if len(groups) < 2:
        raise ValueError(
            f"all {dataset.n_classes} classes of {dataset.name} are in one group "
            f"({next(iter(groups))!r}): it has no alphabets, and its episodes within a group "
            "would be its ordinary episodes; score those with fsl.evaluate, or evaluate within "
            "groups on a dataset of several (Omniglot's alphabets)"
        )


def evaluate_within_groups(
    learner,
    dataset,
    n_way: int,
    n_shot: int,
    n_query: int = 15,
    n_episodes: int = 200,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
    world: World = SINGLE,
) -> GroupAccuracy:
    """Accuracy of ``learner`` on episodes whose classes all come from one group: for
    characters, one alphabet, as in Lake et al.'s one-shot runs. Harder than episodes drawn
    across alphabets, whose characters differ more.

    Every group of ``dataset.groups`` with at least ``n_way`` classes gets its own fixed
    ``EpisodeSet(that group, n_way, n_shot, n_query, n_episodes, seed=seed)``, scored by
    :func:`evaluate` (``batch_size``, ``progress`` and ``world`` as there). ``n_query``
    defaults to 15, as everywhere in fslearn (before fslearn 0.2: 1); Lake et al.'s runs
    classify one query per class, ``n_query=1``.

    Raises:
        ValueError: every class is in one group (miniImageNet, whose groups are its split: it
            has no alphabets), or no group has ``n_way`` classes (naming the largest).
    """
    check_groups(dataset)
    sizes = {group: dataset.groups.count(group) for group in dict.fromkeys(dataset.groups)}
    scored = [group for group, size in sizes.items() if size >= n_way]
    if not scored:
        largest = max(sizes, key=sizes.get)
        raise ValueError(
            f"no group of {dataset.name} has {n_way} classes for {n_way}-way episodes within a "
            f"group (the largest, {largest}, has {sizes[largest]}): lower n_way"
        )
    groups = {}
    for group in scored:
        episodes = EpisodeSet(
            dataset.select_groups(group), n_way, n_shot, n_query, n_episodes, seed=seed
        )
        groups[group] = evaluate(
            learner, episodes, batch_size=batch_size, progress=progress, desc=group, world=world
        )
    overall = confidence_interval(torch.cat([a.per_episode for a in groups.values()]))
    overall.test_bn = batch_norm_mode(learner)
    left_out = {group: size for group, size in sizes.items() if size < n_way}
    return GroupAccuracy(groups, overall, left_out)
