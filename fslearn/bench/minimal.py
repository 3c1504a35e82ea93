"""The minimal recipe's ablation: what each choice of ``--recipe minimal`` buys, and what the
choices tried and dropped would have given, on Omniglot's minimal setting."""

from __future__ import annotations

import time

import torch
from torch import nn

from ..common import check_positive_int, default_device, progress_bar
from ..data.catalog import load_dataset
from ..data.dataset import FewShotDataset
from ..evaluation.groups import evaluate_within_groups
from ..methods.prototypes import NearestPrototype
from ..methods.views import with_test_views
from ..training.gradient_recipes import train_pretrained
from ..training.metric_recipes import train_protonet
from ..training.presets import MINIMAL_TEST_VIEWS
from ..training.triplet_recipe import train_triplet
from .timing import sync

#: The first row: a prototypical network as ``fslearn train protonet`` trains it, on 20-way
#: 1-shot episodes with 5 queries, for 1 500 steps.
BASELINE_SETTINGS = dict(
    n_way=20, n_shot=1, n_query=5, steps=1500, halve_every=500, hidden_channels=64
)
#: The recipe as it was built, one choice at a time: row name → the settings it adds to the
#: row above it (the settings measured, whatever ``--recipe minimal`` has become since).
KEPT = {
    "baseline": {},
    "+ rotations as classes": dict(rotate_classes=True),
    "+ reflections as classes": dict(reflect_classes=True),
    "+ affine distortions": dict(augment=1.0),
    "+ the recipe's budget": dict(steps=9000, halve_every=3000),
    # A way of testing, not of training: the row above's network, scored on averaged views.
    "+ test-time augmentation": dict(test_views=MINIMAL_TEST_VIEWS),
}
#: The columns of :func:`minimal_ablation`'s table: ``(key, header, format)``.
ABLATION_COLUMNS = [
    ("row", "row", "{}"),
    ("compared_with", "changes", "{}"),
    ("accuracy", "accuracy (%)", "{:.2f}"),
    ("ci95", "± 95% CI", "{:.2f}"),
    ("Japanese_(katakana) (%)", "Japanese (%)", "{:.1f}"),
    ("Sanskrit (%)", "Sanskrit (%)", "{:.1f}"),
    ("train_s", "train (s)", "{:.0f}"),
    ("test_s", "test (s)", "{:.1f}"),
]
#: What :func:`minimal_ablation` measures, in words, for its results file.
SETTING = (
    "trained on images_background_small1 alone; scored on 20-way 1-shot episodes with one "
    "query per class within each alphabet of images_background_small2 that small1 lacks"
)


def _union(first: FewShotDataset, second: FewShotDataset) -> FewShotDataset:
    """The classes of both, ``first``'s first (images per class: the fewer of the two)."""
    n = min(first.n_per_class, second.n_per_class)
    return FewShotDataset(
        torch.cat([first.images[:, :n], second.images[:, :n].to(first.device)]),
        first.class_names + second.class_names,
        first.groups + second.groups,
        f"{first.name} + {second.name}",
    )


def scored_row(row: dict, learner, test: FewShotDataset, n_episodes: int, train_s, device) -> dict:
    """``row`` with the scores of ``learner`` on ``n_episodes`` fixed 20-way 1-shot episodes
    with one query per class within each alphabet of ``test`` (``seed=0``: the same episodes
    for every row), and the seconds it trained (``train_s``) and tested."""
    sync(device)
    start = time.perf_counter()
    scores = evaluate_within_groups(learner, test, 20, 1, 1, n_episodes, seed=0)
    sync(device)
    return {
        **row,
        "accuracy": 100 * scores.overall.mean,
        "ci95": 100 * scores.overall.ci95,
        **{f"{group} (%)": 100 * a.mean for group, a in scores.groups.items()},
        "train_s": train_s,
        "test_s": time.perf_counter() - start,
        "test_episodes": n_episodes,
        # For paired differences between rows: every row scores the same episodes.
        "per_episode": [round(a, 4) for a in scores.overall.per_episode.tolist()],
    }


def row_summary(row: dict) -> str:
    return f"{row['accuracy']:.2f} ± {row['ci95']:.2f}% in {row['train_s']:.0f} s"


# Each trainer takes the training set and a row's settings, and returns the learner with
# what it trained differently from them.


def _protonet(train: FewShotDataset, settings: dict) -> tuple[nn.Module, dict]:
    return train_protonet(train, **settings, seed=0, progress=False)[0], {}


def _triplet(train: FewShotDataset, settings: dict) -> tuple[nn.Module, dict]:
    # As many images per step as the episodes of the row it changes, and Adam's constant rate.
    batch = dict(n_classes=settings["n_way"], n_per_class=settings["n_shot"] + settings["n_query"])
    learner, _ = train_triplet(
        train,
        strategy="semi-hard",
        **batch,
        steps=settings["steps"],
        hidden_channels=settings["hidden_channels"],
        seed=0,
        progress=False,
    )
    return learner, {**batch, "halve_every": None}


def _pretrained(train: FewShotDataset, settings: dict) -> tuple[nn.Module, dict]:
    # About as many optimizer steps, on batches as large as the episodes of the row it changes.
    batch_size = settings["n_way"] * (settings["n_shot"] + settings["n_query"])
    per_epoch = -(-len(train) // batch_size)
    epochs = max(1, round(settings["steps"] / per_epoch))
    classifier, _ = train_pretrained(
        train,
        epochs=epochs,
        batch_size=batch_size,
        hidden_channels=settings["hidden_channels"],
        seed=0,
        progress=False,
    )
    used = dict(epochs=epochs, batch_size=batch_size, steps=epochs * per_epoch, halve_every=None)
    return NearestPrototype(classifier.backbone), used


#: Choices measured and dropped: row name → (the row of ``KEPT`` it changes, the settings
#: it changes there, how it trains a learner from the data and those settings).
DROPPED = {
    "triplet loss, semi-hard": ("baseline", dict(method="triplet (semi-hard)"), _triplet),
    "pre-training + nearest centroid": (
        "baseline",
        dict(method="pre-training + nearest centroid"),
        _pretrained,
    ),
    "no learning-rate decay": ("baseline", dict(halve_every=None), _protonet),
    "56 px inputs": ("baseline", dict(image_size=56), _protonet),
    "60-way episodes, a third of the steps": ("+ rotations as classes", dict(n_way=60), _protonet),
    "+ the embedded characters as classes": (
        "+ affine distortions",
        dict(embedded_classes=True),
        _protonet,
    ),
}


def scaled_budget(settings: dict, scale: float) -> dict:
    return {
        **settings,
        **{k: max(1, round(settings[k] * scale)) for k in ("steps", "halve_every")},
    }


def _what_to_train(data: dict, settings: dict, change: dict) -> tuple[FewShotDataset, dict]:
    """The training set and the settings of a dropped row: ``settings`` (its kept row's) with
    ``change`` made."""
    settings, train = dict(settings), data["train"]
    if "halve_every" in change:
        settings["halve_every"] = settings["steps"]  # halved once, at the very end: no decay
    if "image_size" in change:
        train = data["train 56"]
    if change.get("embedded_classes"):
        train = _union(train, data["embedded"])
    if "n_way" in change:
        # Steps of n_way-way episodes cost n_way / 20 times as much: as many images in all.
        fewer = settings["n_way"] / change["n_way"]
        settings = {**scaled_budget(settings, fewer), "n_way": change["n_way"]}
    return train, settings


def minimal_ablation(
    root,
    *,
    device=None,
    scale: float = 1.0,
    n_episodes: int = 200,
    progress: bool = False,
) -> list[dict]:
    """Train and score every row of :data:`~fslearn.bench.KEPT` and
    :data:`~fslearn.bench.DROPPED` on Omniglot's minimal setting: trained on
    ``images_background_small1`` alone, scored on ``n_episodes`` 20-way 1-shot episodes with
    one query per class within each alphabet of small2 that small1 lacks
    (:func:`~fslearn.evaluate_within_groups`, ``seed=0``: the same episodes for every row).

    Args:
        root: the folder whose ``omniglot/`` holds both small zips.
        scale: multiplies every row's steps (``0 < scale ≤ 1``), for a quick run.
        n_episodes: test episodes per alphabet.

    Returns:
        A list with one dict per row, the kept rows first, with ``row``, ``compared_with``
        (the row it changes; ``None`` for the baseline), ``kept``, the settings, ``accuracy``
        and ``ci95`` (%), each alphabet's accuracy as ``"<alphabet> (%)"``, ``train_s`` and
        ``test_s`` (seconds), ``test_episodes`` (per alphabet) and ``per_episode`` (the
        accuracy of every episode, the alphabets' episodes in turn, from which two rows'
        paired difference follows).
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1]; got {scale}")
    n_episodes = check_positive_int("n_episodes", n_episodes)
    device = default_device() if device is None else torch.device(device)
    where = dict(root=root, device=device, progress=False)
    data = {
        "train": load_dataset("omniglot-small", "train", **where),
        "test": load_dataset("omniglot-small", "test", **where),
        "train 56": load_dataset("omniglot-small", "train", image_size=56, **where),
        "test 56": load_dataset("omniglot-small", "test", image_size=56, **where),
        "embedded": _union(
            load_dataset("embedded", "train", progress=False, device=device),
            load_dataset("embedded", "test", progress=False, device=device),
        ),
    }
    bar = progress_bar(len(KEPT) + len(DROPPED), "minimal recipe ablation", progress)
    rows, kept_settings, learners = [], {}, {}

    def score(name, settings, learner, train_s, compared_with, kept, test=data["test"]):
        row = dict(row=name, compared_with=compared_with, kept=kept, **settings)
        rows.append(scored_row(row, learner, test, n_episodes, train_s, device))
        bar.update()
        if progress:
            bar.write(f"{name}: {row_summary(rows[-1])}")

    def trained(train_with, train, settings):
        sync(device)
        start = time.perf_counter()
        learner, used = train_with(train, settings)
        sync(device)
        return learner, {**settings, **used}, time.perf_counter() - start

    settings, above = dict(BASELINE_SETTINGS), None
    for name, change in KEPT.items():
        settings.update(change)
        kept_settings[name] = scaled_budget(settings, scale)
        if "test_views" in change:
            views = with_test_views(learners[above], change["test_views"])
            learners[name], used, seconds = views, kept_settings[name], 0.0
        else:
            learners[name], used, seconds = trained(_protonet, data["train"], kept_settings[name])
        score(name, {"method": "protonet", **used}, learners[name], seconds, above, True)
        above = name
    for name, (base, change, train_with) in DROPPED.items():
        train, settings = _what_to_train(data, kept_settings[base], change)
        learner, used, seconds = trained(train_with, train, settings)
        record = {"method": "protonet", **change, **used}
        test = data["test 56"] if "image_size" in change else data["test"]
        score(name, record, learner, seconds, base, False, test=test)
    bar.close()
    return rows
