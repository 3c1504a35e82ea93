"""The minimal recipe's second ablation: one change at a time to the recipe's own network, at
the recipe's budget, each row scored on the first ablation's episodes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..common import check_positive_int, default_device, progress_bar
from ..data.catalog import load_dataset
from ..methods.transductive import with_transductive_prototypes
from ..methods.views import with_test_views
from ..sampling.strokes import StrokeWidth
from ..training.metric_recipes import train_protonet
from ..training.presets import MINIMAL, MINIMAL_TEST_VIEWS
from .minimal import BASELINE_SETTINGS, KEPT, row_summary, scaled_budget, scored_row
from .timing import sync

#: The settings that change how a network is tested, not how it is trained.
TEST_TIME = ("test_views", "test_strength", "transductive_steps")
#: The first row: the network ``--recipe minimal`` trained when this ablation began, scored
#: on its own, without test-time views.
RECIPE_NETWORK = "the recipe's network"
#: Its settings: the first ablation's baseline with every training choice of its kept rows,
#: the network it ends with, kept apart from :data:`MINIMAL` so that a change of the recipe
#: leaves the rows measured as they were.
NETWORK_SETTINGS = {
    **BASELINE_SETTINGS,
    **{
        key: value
        for change in KEPT.values()
        for key, value in change.items()
        if key not in TEST_TIME
    },
}
#: The recipe as ``fslearn eval --test-views 8`` scores it: its network on averaged views.
RECIPE_ROW = "8 test-time views"
#: The rows: name → (the row it changes, the change). A change of ``steps``, ``augment`` or
#: the episodes trains a network of its own; ``test_views`` tests the network of the row it
#: changes on averaged views.
FOLLOW_UP = {
    RECIPE_NETWORK: (None, {}),
    "without distortions": (RECIPE_NETWORK, dict(augment=0.0)),
    "episodes within one alphabet": (RECIPE_NETWORK, dict(within_groups=True)),
    "stroke widths": (RECIPE_NETWORK, dict(stroke_width=0.5)),
    RECIPE_ROW: (RECIPE_NETWORK, dict(test_views=MINIMAL_TEST_VIEWS)),
    "8 views, trained without distortions": (RECIPE_ROW, dict(augment=0.0)),
    "16 test-time views": (RECIPE_ROW, dict(test_views=16)),
    "views at half the strength": (RECIPE_ROW, dict(test_strength=0.5)),
    "transductive prototypes": (RECIPE_ROW, dict(transductive_steps=1)),
    "transductive, 5 refinements": ("transductive prototypes", dict(transductive_steps=5)),
}
#: The strength of the distortions of test-time views: ``with_test_views``' default, as
#: ``fslearn eval --test-views`` uses it.
VIEW_STRENGTH = 1.0
#: What the recipe does about each change a row can make, where :data:`MINIMAL` does not say:
#: how ``fslearn eval --test-views 8`` tests it, and what it leaves out.
RECIPE_DEFAULTS = dict(
    test_views=MINIMAL_TEST_VIEWS,
    test_strength=VIEW_STRENGTH,
    transductive_steps=0,
    within_groups=False,
    stroke_width=0.0,
)


def row_settings(name: str, scale: float = 1.0) -> dict:
    """The settings of the row ``name``: :data:`NETWORK_SETTINGS` (its steps times ``scale``)
    with the change of every row on its way from the first, in order."""
    base, change = FOLLOW_UP[name]
    above = scaled_budget(NETWORK_SETTINGS, scale) if base is None else row_settings(base, scale)
    return {**above, **change}


def in_recipe(name: str) -> bool:
    """Whether the row ``name`` is ``--recipe minimal`` as it is now: its network, trained
    as the recipe trains it, tested as the recipe tests it where the row says how."""
    recipe = {**RECIPE_DEFAULTS, **MINIMAL}
    return all(recipe.get(key) == value for key, value in row_settings(name).items())


def _tests_only(name: str) -> bool:
    return all(key in TEST_TIME for key in FOLLOW_UP[name][1]) and FOLLOW_UP[name][0] is not None


def _needed(rows: list[str]) -> list[str]:
    """``rows`` and the rows whose networks they test, in ``FOLLOW_UP``'s order."""
    wanted = set(rows)
    for name in rows:
        while _tests_only(name):
            name = FOLLOW_UP[name][0]
            wanted.add(name)
    return [name for name in FOLLOW_UP if name in wanted]


def _tested(network, settings: dict):
    """``network`` as a row with ``settings`` tests it."""
    if settings.get("test_views"):
        strength = settings.get("test_strength", VIEW_STRENGTH)
        network = with_test_views(network, settings["test_views"], strength)
    if settings.get("transductive_steps"):
        network = with_transductive_prototypes(network, settings["transductive_steps"])
    return network


def followup_ablation(
    root,
    *,
    rows: list[str] | None = None,
    device=None,
    scale: float = 1.0,
    n_episodes: int = 200,
    progress: bool = False,
) -> list[dict]:
    """Train and score the rows of :data:`~fslearn.bench.FOLLOW_UP` (all, or those named in
    ``rows`` and the rows whose networks they test) as
    :func:`~fslearn.bench.minimal_ablation` scores its rows: trained on
    ``images_background_small1`` with ``seed=0``, scored on ``n_episodes`` 20-way 1-shot
    episodes with one query per class within each alphabet of small2 that small1 lacks.

    Returns:
        One dict per row, in :data:`~fslearn.bench.FOLLOW_UP`'s order, with the keys of
        :func:`~fslearn.bench.minimal_ablation`'s rows (``kept``: whether the recipe makes
        the row's change, ``in_recipe``).

    Args:
        root: the folder whose ``omniglot/`` holds both small zips.
        rows: the names of the rows to measure (default: every row).
        scale: multiplies every row's steps (``0 < scale ≤ 1``), for a quick run.
        n_episodes: test episodes per alphabet.
    """
    unknown = sorted(set(rows or ()) - set(FOLLOW_UP))
    if unknown:
        raise ValueError(f"unknown rows {unknown}; the rows are {list(FOLLOW_UP)}")
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1]; got {scale}")
    n_episodes = check_positive_int("n_episodes", n_episodes)
    device = default_device() if device is None else torch.device(device)
    names = list(FOLLOW_UP) if rows is None else _needed(rows)
    where = dict(root=root, device=device, progress=False)
    train = load_dataset("omniglot-small", "train", **where)
    test = load_dataset("omniglot-small", "test", **where)
    bar = progress_bar(len(names), "minimal recipe, second ablation", progress)
    settings = {name: row_settings(name, scale) for name in names}
    results, networks = [], {}
    for name in names:
        base = FOLLOW_UP[name][0]
        if _tests_only(name):
            networks[name], seconds = networks[base], 0.0
        else:
            training = {k: v for k, v in settings[name].items() if k not in TEST_TIME}
            if "stroke_width" in training:
                training["transform"] = StrokeWidth(training.pop("stroke_width"))
            sync(device)
            start = time.perf_counter()
            networks[name] = train_protonet(train, **training, seed=0, progress=False)[0]
            sync(device)
            seconds = time.perf_counter() - start
        row = dict(
            row=name, compared_with=base, kept=in_recipe(name), method="protonet", **settings[name]
        )
        results.append(
            scored_row(
                row, _tested(networks[name], settings[name]), test, n_episodes, seconds, device
            )
        )
        bar.update()
        if progress:
            bar.write(f"{name}: {row_summary(results[-1])}")
    bar.close()
    return results


def merged_rows(path, rows: list[dict], command: str) -> list[dict]:
    """The rows of the results file at ``path`` (none if it does not exist) with ``rows``
    in place of those of the same names, each new row recording the ``command`` that
    measured it, in :data:`~fslearn.bench.FOLLOW_UP`'s order."""
    path = Path(path)
    old = json.loads(path.read_text(encoding="utf-8"))["rows"] if path.exists() else []
    by_name = {row["row"]: row for row in old}
    by_name.update({row["row"]: {**row, "measured_by": command} for row in rows})
    order = [*FOLLOW_UP, *(name for name in by_name if name not in FOLLOW_UP)]
    return [by_name[name] for name in order if name in by_name]
