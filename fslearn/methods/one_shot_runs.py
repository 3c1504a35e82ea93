"""Scoring a learner, or an embedding, on Lake et al.'s 20 one-shot runs (:func:`evaluate_runs`;
the runs themselves come from :func:`fslearn.load_runs`)."""

from __future__ import annotations

import torch

from ..common import check_positive_int, model_device
from ..data.dataset import to_float
from .transductive import with_transductive_prototypes
from .views import AveragedViews, with_test_views


def _check_finite(values: torch.Tensor, who: str) -> None:
    # NaN compares as nearest (argmin) or largest (argmax): a score from it would be noise.
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise ValueError(
            f"{who} returned {bad} NaN or infinite values of {values.numel()}; check the model "
            f"(a diverged training run, or a division by zero in it)"
        )


def evaluate_runs(
    runs,
    *,
    embed=None,
    learner=None,
    device=None,
    test_views: int = 1,
    seed: int = 0,
    transductive_steps: int = 0,
) -> dict:
    """Error rates on the one-shot runs, by nearest neighbour in an embedding or by a learner.

    The classic score is the error averaged over the 20 runs (20-way, 1-shot, within one
    alphabet). Published errors (Lake et al. 2015): people 4.5%, Bayesian program
    learning 3.3%. Put models in eval mode first.

    Args:
        runs: the runs, from :func:`load_runs`.
        embed: maps float images ``(n, 1, s, s)`` in ``[0, 1]`` to embeddings ``(n, D)``;
            each test image gets the class of the nearest training image (Euclidean; ties
            go to the lowest class).
        learner: ``learner(support_x, support_y, query_x) -> logits (n_query, n_way)`` with
            float images and ``support_y = arange(20)``; each test image gets the argmax.
        device: where to compute; default the device of ``embed`` / ``learner`` if it is a
            :class:`torch.nn.Module`, else CPU.
        test_views: embed every image as the mean over itself and ``test_views - 1`` affine
            distortions of it (:func:`~fslearn.with_test_views` for a ``learner``,
            :class:`~fslearn.AveragedViews` for an ``embed`` module); 1: the image alone.
        seed: the seed of those distortions.
        transductive_steps: refine a prototypical ``learner``'s prototypes with each run's 20
            test images, this many soft k-means steps
            (:func:`~fslearn.with_transductive_prototypes`; 0: none). A transductive test:
            every answer then depends on the run's other test images.

    Returns:
        ``{"errors": [error % of each run], "mean_error": their mean, "test_views": N}``,
        and ``"transductive_steps"`` when it is not 0.

    Raises:
        TypeError: not exactly one of ``embed`` and ``learner``; ``test_views > 1`` with a
            learner whose embeddings views cannot average, or an ``embed`` that is no module;
            ``transductive_steps`` with anything but a prototypical ``learner``.
        ValueError: no runs, embeddings or logits of the wrong shape, or NaN in them; the
            views do not fit the device's memory.
    """
    if (embed is None) == (learner is None):
        raise TypeError(
            "pass exactly one of embed= (an embedding function) or learner= (a few-shot learner)"
        )
    runs = list(runs)
    if not runs:
        raise ValueError("no runs to evaluate; load them with load_runs()")
    check_positive_int("test_views", test_views)
    transductive_steps = check_positive_int("transductive_steps", transductive_steps, minimum=0)
    if transductive_steps and learner is None:
        raise TypeError(
            f"transductive_steps={transductive_steps} refines the prototypes of a prototypical "
            "learner; pass learner= (an fsl.ProtoNet), not embed=, or leave it out"
        )
    if test_views > 1 and learner is not None:
        learner = with_test_views(learner, test_views, seed=seed)
    elif test_views > 1:
        if not isinstance(embed, torch.nn.Module):
            raise TypeError(
                f"test_views={test_views} averages the embeddings of a module; embed is a "
                f"{type(embed).__name__}: wrap the network itself, or leave test_views out"
            )
        embed = AveragedViews(embed, test_views, seed=seed)
    if transductive_steps:
        learner = with_transductive_prototypes(learner, transductive_steps)
    model = embed if learner is None else learner
    if device is None:
        device = model_device(model) if isinstance(model, torch.nn.Module) else torch.device("cpu")
    errors = []
    with torch.no_grad():
        for run in runs:
            support_x, query_x = (
                to_float(run.support_x.to(device)),
                to_float(run.query_x.to(device)),
            )
            if embed is not None:
                features = embed(torch.cat([support_x, query_x]))
                n_images = len(support_x) + len(query_x)
                if features.dim() != 2 or len(features) != n_images:
                    raise ValueError(
                        f"{run.name}: embed returned shape {tuple(features.shape)} for "
                        f"{n_images} images; expected ({n_images}, D): one flat embedding per "
                        f"image (add a Flatten if it returns feature maps)"
                    )
                _check_finite(features, f"{run.name}: embed")
                support, query = features[: len(support_x)], features[len(support_x) :]
                predicted = torch.cdist(query.float(), support.float()).argmin(1)
            else:
                logits = learner(support_x, run.support_y.to(device), query_x)
                if logits.shape != (len(query_x), len(support_x)):
                    raise ValueError(
                        f"{run.name}: the learner returned logits of shape {tuple(logits.shape)}; "
                        f"expected (n_query, n_way) = {(len(query_x), len(support_x))}"
                    )
                _check_finite(logits, f"{run.name}: the learner")
                predicted = logits.argmax(1)
            errors.append(100.0 * (predicted.cpu() != run.query_y).sum().item() / len(run.query_y))
    scores = {"errors": errors, "mean_error": sum(errors) / len(errors), "test_views": test_views}
    return scores | ({"transductive_steps": transductive_steps} if transductive_steps else {})
