"""Accuracy over test episodes, with a 95% confidence interval."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ..common import check_positive_int, progress_bar
from ..distributed import SINGLE, World

#: The normal quantile behind a two-sided 95% confidence interval.
Z_95 = 1.96


@dataclass
class Accuracy:
    """Mean accuracy over ``n`` episodes and the half-width of its 95% confidence interval.

    Attributes:
        mean: mean of the per-episode accuracies, in ``[0, 1]``.
        ci95: ``1.96 · std / √n`` (sample standard deviation), in the same units.
        per_episode: the accuracy of every episode, shape ``(n,)``.
        test_bn: how the learner's batch-norm layers normalised the test images
            (:func:`~fslearn.evaluation.batch_norm_mode`): ``"transductive"``, ``"running"``
            or ``"support"``;
            ``None`` for a learner without batch norm, or where no learner was scored
            (a difference of two accuracies).
    """

    mean: float
    ci95: float
    per_episode: torch.Tensor
    test_bn: str | None = None

    @property
    def n(self) -> int:
        return self.per_episode.numel()

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.ci95:.2f}%"


def confidence_interval(accuracies) -> Accuracy:
    """Mean and 95% confidence half-width of per-episode accuracies (design: 1.96·σ/√n).

    >>> str(confidence_interval([0.5, 0.7, 0.6, 0.6]))
    '60.00 ± 8.00%'
    """
    values = torch.as_tensor(accuracies, dtype=torch.float64).flatten().cpu()
    if values.numel() < 2:
        raise ValueError(f"a confidence interval needs at least 2 episodes; got {values.numel()}")
    return Accuracy(
        values.mean().item(), Z_95 * values.std().item() / math.sqrt(values.numel()), values
    )


def paired_difference(first: Accuracy, second: Accuracy) -> Accuracy:
    """``first`` minus ``second``, episode by episode, ± 95% CI, in ``[-1, 1]``.

    For two learners scored on the same episodes: what the episodes share (an easy episode is
    easy for both) cancels, so the interval of the difference is the one to judge the
    comparison by, not the overlap of the two intervals.

    >>> a, b = confidence_interval([0.6, 0.8, 0.7]), confidence_interval([0.5, 0.7, 0.7])
    >>> str(paired_difference(a, b))
    '6.67 ± 6.53%'

    Raises:
        ValueError: the two were scored on different numbers of episodes.
    """
    if first.n != second.n:
        raise ValueError(
            f"a paired difference needs the accuracies of the same episodes; got {first.n} and "
            f"{second.n} episodes: score both learners on one fsl.EpisodeSet"
        )
    return confidence_interval(first.per_episode - second.per_episode)


def batch_norm_mode(learner) -> str | None:
    """How ``learner``'s batch-norm layers normalise test images, for the record.

    Its ``test_bn`` where it has that switch (:class:`~fslearn.MAML`,
    :class:`~fslearn.FineTune`, :class:`~fslearn.BaselinePP`, :class:`~fslearn.SimpleShot`);
    otherwise, as :func:`~fslearn.evaluate` runs it in eval mode, ``"running"`` when every
    layer keeps running statistics and ``"transductive"`` when one normalises each batch with
    its own (the support set and the queries are embedded as separate batches); ``None`` without
    batch norm (or for a plain function, whose layers cannot be seen).
    """
    mode = getattr(learner, "test_bn", None)
    if mode is not None:
        return mode
    modules = learner.modules() if isinstance(learner, torch.nn.Module) else ()
    layers = [m for m in modules if isinstance(m, _BatchNorm)]
    if not layers:
        return None
    return "running" if all(m.track_running_stats for m in layers) else "transductive"


def _batches(episodes, batch_size: int, first: int, stop: int):
    """Task batches of episodes ``first … stop-1`` of an EpisodeSet, built one at a time (never
    all of them at once)."""
    for start in range(first, stop, batch_size):
        yield episodes.batch(start, min(start + batch_size, stop))


def _share(episodes, world: World) -> tuple[int, int]:
    """The contiguous episodes ``(first, stop)`` this rank evaluates: shares differ by at most
    one episode, and in rank order they are the episodes in their order."""
    n = len(episodes)
    if world.size > 1:
        if not hasattr(episodes, "batch"):
            raise TypeError(
                f"evaluating across {world.size} processes splits a fixed fsl.EpisodeSet; got "
                f"{type(episodes).__name__}"
            )
        if n < world.size:
            raise ValueError(
                f"{n} episodes cannot be shared by {world.size} processes: evaluate on at "
                f"least {world.size}"
            )
    return world.rank * n // world.size, (world.rank + 1) * n // world.size


def evaluate(
    learner,
    episodes,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    desc: str = "evaluating",
    world: World = SINGLE,
) -> Accuracy:
    """Accuracy of ``learner`` on every episode of ``episodes``, ± 95% CI.

    Args:
        learner: any callable with the shared call shape
            ``learner(support_x, support_y, query_x) -> logits`` of shape
            ``(n_way * n_query, n_way)``; a module is put in eval mode and back.
            It runs under ``torch.no_grad()``; a learner that adapts by gradient
            (MAML) turns gradients back on inside itself.
        episodes: an :class:`~fslearn.EpisodeSet` or any finite iterable of
            single :class:`~fslearn.Episode` objects (not an endless
            :class:`~fslearn.EpisodeSampler`).
        batch_size: give the learner this many episodes at once, stacked on a
            leading task dimension (needs an :class:`~fslearn.EpisodeSet` and a
            learner that takes task batches, as MAML and FineTune do; logits
            ``(T, n_way * n_query, n_way)``). Each batch is built when its turn
            comes, so memory does not grow with the number of episodes.
        progress: show a progress bar.
        world: the processes evaluating together (:mod:`fslearn.distributed`): each scores
            its contiguous share of an :class:`~fslearn.EpisodeSet`, and the per-episode
            accuracies are gathered in order, so every rank returns the very
            :class:`Accuracy` one process computes.

    Returns:
        An :class:`Accuracy`, with the learner's batch-norm mode in ``test_bn``.

    Raises:
        TypeError: ``episodes`` is endless, or ``batch_size`` without an EpisodeSet.
        ValueError: no episodes, or logits of the wrong shape.
    """
    if hasattr(episodes, "sample") and not hasattr(episodes, "__len__"):
        raise TypeError(
            f"{type(episodes).__name__} draws episodes without end, "
            "so evaluate would never return; "
            "evaluate on a fixed fsl.EpisodeSet(dataset, n_way, n_shot, n_query, n_episodes)"
        )
    total = len(episodes) if hasattr(episodes, "__len__") else None
    if total == 0:
        raise ValueError(
            "there are no episodes to evaluate on: pass an EpisodeSet with n_episodes ≥ 2"
        )
    if world.size > 1:
        first, stop = _share(episodes, world)
        if batch_size is None:
            fixed = episodes
            episodes, total = (fixed[i] for i in range(first, stop)), stop - first
    else:
        first, stop = 0, total
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
        if not hasattr(episodes, "batch"):
            raise TypeError(
                f"batch_size needs an EpisodeSet (with .batch); got {type(episodes).__name__}"
            )
        episodes = _batches(episodes, batch_size, first, stop)
        total = math.ceil((stop - first) / batch_size)

    was_training = getattr(learner, "training", None)
    if was_training is not None:
        learner.eval()
    accuracies, sound = [], []
    try:
        unit = "batch" if batch_size else "episode"
        bar = progress_bar(total, desc, progress and world.is_main, unit=unit, leave=False)
        with torch.no_grad(), bar:
            for episode in episodes:
                logits = learner(episode.support_x, episode.support_y, episode.query_x)
                expected = (*episode.query_y.shape, episode.n_way)
                if tuple(logits.shape) != expected:
                    raise ValueError(
                        f"the learner returned logits of shape {tuple(logits.shape)}; expected "
                        f"({'T, ' if batch_size else ''}n_way * n_query, n_way) = {expected}"
                    )
                # Stays on the device: one host sync at the end, not one per episode.
                accuracies.append(
                    (logits.argmax(-1) == episode.query_y).float().mean(-1).reshape(-1)
                )
                labels_ok = (episode.query_y >= 0) & (episode.query_y < episode.n_way)
                finite = torch.isfinite(logits).flatten(-2).all(-1)
                sound.append(torch.stack([finite.reshape(-1), labels_ok.all(-1).reshape(-1)]))
                bar.update(1)
    finally:
        if was_training is not None:
            learner.train(was_training)
    if world.size > 1:  # one gather of (accuracy, finite, labels ok) per episode
        rows = torch.cat([torch.cat(accuracies)[None], torch.cat(sound, dim=1).float()])
        rows = world.gather(rows.T.reshape(-1)).reshape(-1, 3).T
        accuracies, sound = [rows[0]], [rows[1:].bool()]
    if not accuracies:
        raise ValueError("there are no episodes to evaluate on: the iterable was empty")
    _check_sound(torch.cat(sound, dim=1))
    return replace(confidence_interval(torch.cat(accuracies)), test_bn=batch_norm_mode(learner))


def _check_sound(sound: torch.Tensor) -> None:
    """Raise unless every episode had finite logits and query labels in ``0 … n_way − 1``.

    ``sound`` is ``(2, n_episodes)``: finite logits, valid labels. Without this an
    accuracy over NaN logits (argmax of NaN is 0) would read like a real one.
    """
    finite, labels_ok = sound.cpu()
    if not finite.all():
        bad = (~finite).nonzero().flatten().tolist()
        raise FloatingPointError(
            f"the learner returned NaN or infinite logits in {len(bad)} of {finite.numel()} "
            f"episodes (the first: episode {bad[0]}), so their accuracy would mean nothing; "
            "check the images for NaN (torch.isnan(dataset.images).any()) and the learner's "
            "weights (a training run that diverged)"
        )
    if not labels_ok.all():
        bad = (~labels_ok).nonzero().flatten().tolist()
        raise ValueError(
            f"{len(bad)} of {labels_ok.numel()} episodes (the first: episode {bad[0]}) have query "
            "labels outside 0 … n_way − 1; label the queries as their support classes"
        )
