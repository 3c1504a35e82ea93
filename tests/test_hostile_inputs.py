"""Tasks and training runs a careless or hostile user might hand the library: every one gets an
error that names the values, never an error from deep inside torch or a plausible number."""

import pytest
import torch
from torch import nn

import fslearn as fsl

from synthetic import labelled_dataset, pattern_dataset


def _episode(n_way=3, n_shot=2, n_query=2):
    return fsl.EpisodeSet(labelled_dataset(), n_way, n_shot, n_query, n_episodes=2, seed=0)[0]


def _learners():
    backbone = nn.Flatten()
    siamese = fsl.SiameseNet(fsl.Conv4(1, 4, seed=0), 4, "contrastive")
    maml = fsl.MAML(fsl.maml_classifier(3, (1, 16, 16), 4, seed=0), test_steps=1)
    return {
        "NearestPrototype": fsl.NearestPrototype(),
        "ProtoNet": fsl.ProtoNet(backbone),
        "NearestNeighbourLearner": fsl.NearestNeighbourLearner(backbone),
        "SiameseNet": siamese,
        "MAML": maml,
    }


def _bad_tasks():
    e = _episode()
    big = nn.functional.interpolate(e.support_x, size=16), nn.functional.interpolate(e.query_x, 16)
    sx, qx = big
    return [
        ((sx, e.support_y + 1, qx), r"labels must be 0 … n_way − 1 .* from 1 to 3"),
        ((sx, e.support_y - 1, qx), r"labels must be 0 … n_way − 1 .* from -1 to 1"),
        ((sx, torch.tensor([0, 0, 2, 2, 3, 3]), qx), r"from 0 to 3 with 3 distinct"),
        ((sx, e.support_y[:-1], qx), r"one label per support item, shape \(6,\); got \(5,\)"),
        ((sx, e.support_y.float(), qx), r"integer class labels .* got dtype torch.float32"),
        ((sx, e.support_y, qx[:, :, :8]), r"query_x must hold items like the support items"),
        ((sx[0, 0, 0], e.support_y[:1], qx), r"support_x must .*shape .*got \(16,\)"),
        ((sx[:0], e.support_y[:0], qx), r"the support set is empty"),
    ]


@pytest.mark.parametrize("name", list(_learners()))
@pytest.mark.parametrize("case", range(len(_bad_tasks())))
def test_every_learner_names_what_is_wrong_with_a_task(name, case):
    learner = _learners()[name]
    args, message = _bad_tasks()[case]
    with pytest.raises(ValueError, match=message):
        learner(*args)


def test_a_batch_of_tasks_must_agree_on_its_task_count():
    maml = _learners()["MAML"]
    tasks = fsl.EpisodeSampler(pattern_dataset(), 3, 1, 2, seed=0).sample_tasks(4)
    with pytest.raises(ValueError, match="support_x holds 4 tasks but query_x 3"):
        maml(tasks.support_x, tasks.support_y, tasks.query_x[:3])


def _nan_dataset():
    data = labelled_dataset()
    images = data.images.float() / 255
    images[2, 1, 0, 3, 3] = float("nan")
    return fsl.FewShotDataset(images, data.class_names, data.groups, "with a NaN")


@pytest.mark.parametrize("learner", [fsl.NearestPrototype(), fsl.ProtoNet(nn.Flatten())])
def test_evaluate_refuses_to_average_nan_logits(learner):
    episodes = fsl.EpisodeSet(_nan_dataset(), 5, 1, 2, n_episodes=30, seed=0)
    with pytest.raises(FloatingPointError, match=r"NaN or infinite logits in \d+ of 30 episodes"):
        fsl.evaluate(learner, episodes)


def test_evaluate_refuses_query_labels_outside_the_classes():
    good = _episode()
    bad = fsl.Episode(good.support_x, good.support_y, good.query_x, good.query_y + 5, good.classes)
    with pytest.raises(ValueError, match=r"1 of 2 episodes \(the first: episode 1\) have query"):
        fsl.evaluate(fsl.NearestPrototype(), [good, bad])


@pytest.mark.parametrize("inner_lr", [1e6, 1e12])
def test_maml_with_a_diverging_inner_step_stops_and_names_it(inner_lr):
    with pytest.raises(
        FloatingPointError, match=rf"inner steps diverge: lower inner_lr \(now {inner_lr}\)"
    ):
        fsl.train_maml(
            pattern_dataset(), n_way=3, n_shot=1, n_query=2, meta_batch=2, steps=200,
            hidden_channels=4, inner_lr=inner_lr, progress=False,
        )  # fmt: skip


def test_a_diverging_run_stops_at_its_first_step_not_after_sync_every():
    model = nn.Linear(4, 2)
    calls = []

    def step_loss(step):
        calls.append(step)
        return model(torch.full((1, 4), float("nan"))).sum()

    with pytest.raises(FloatingPointError, match="loss became nan at step 1"):
        fsl.train_steps(model, step_loss, steps=500, sync_every=100, progress=False)
    assert calls == [0]


def test_a_sane_maml_run_stays_under_the_divergence_limit():
    _, history = fsl.train_maml(
        pattern_dataset(), n_way=3, n_shot=1, n_query=2, meta_batch=2, steps=5,
        hidden_channels=4, inner_lr=0.4, progress=False,
    )  # fmt: skip
    assert len(history.loss) == 5 and max(history.loss) < 10


def test_numpy_integers_count_as_integers_and_are_stored_as_ints():
    import numpy as np

    sampler = fsl.EpisodeSampler(labelled_dataset(), np.int64(3), np.int32(1), np.int64(2))
    assert (sampler.n_way, sampler.n_shot, sampler.n_query) == (3, 1, 2)
    assert all(type(v) is int for v in (sampler.n_way, sampler.n_shot, sampler.n_query))
    assert sampler.sample_tasks(np.int64(4)).support_x.shape == (4, 3, 1, 6, 6)
    episodes = fsl.EpisodeSet(labelled_dataset(), np.int64(3), 1, 2, n_episodes=np.int64(5))
    assert len(episodes) == 5
    model = nn.Linear(2, 1)
    history = fsl.train_steps(
        model, lambda step: model(torch.ones(1, 2)).square().sum(), steps=np.int64(3),
        episodes_per_step=np.int64(2), progress=False,
    )  # fmt: skip
    assert type(history.episodes_per_step) is int and history.episodes == 6
    with pytest.raises(ValueError, match="n_way must be a positive integer; got 3.0"):
        fsl.EpisodeSampler(labelled_dataset(), 3.0, 1, 2)
