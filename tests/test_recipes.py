import pytest

import fslearn as fsl

from synthetic import separable_characters


def test_protonet_recipe_trains_on_every_device(device):
    data = separable_characters(device=device)
    val = fsl.EpisodeSet(data, 3, 1, 3, n_episodes=20, seed=1)
    learner, history = fsl.train_protonet(
        data,
        n_way=4,
        n_shot=2,
        n_query=3,
        steps=40,
        halve_every=20,
        hidden_channels=8,
        val_episodes=val,
        eval_every=20,
        progress=False,
    )
    assert history.steps == 40 and [v["step"] for v in history.validation] == [20, 40]
    assert next(learner.parameters()).device.type == device.type
    assert fsl.evaluate(learner, val).mean > 0.8


@pytest.mark.parametrize("head", ["koch", "contrastive"])
def test_siamese_recipe_trains(head, device):
    data = separable_characters(device=device)
    val = fsl.EpisodeSet(data, 3, 1, 3, n_episodes=20, seed=1)
    learner, history = fsl.train_siamese(
        data,
        head=head,
        n_pairs=32,
        steps=60,
        lr=3e-3,
        hidden_channels=8,
        val_episodes=val,
        eval_every=30,
        progress=False,
    )
    assert history.steps == 60 and len(history.metrics["pair_accuracy"]) == 60
    assert sum(history.metrics["pair_accuracy"][-10:]) / 10 > 0.7
    assert history.validation[-1]["accuracy"] > 0.6


@pytest.mark.parametrize("strategy", ["random", "semi-hard", "batch-hard"])
def test_triplet_recipe_trains(strategy, device):
    data = separable_characters(device=device)
    val = fsl.EpisodeSet(data, 3, 1, 3, n_episodes=20, seed=1)
    learner, history = fsl.train_triplet(
        data,
        strategy=strategy,
        n_classes=5,
        n_per_class=4,
        steps=60,
        lr=3e-3,
        hidden_channels=8,
        val_episodes=val,
        eval_every=30,
        progress=False,
    )
    active = history.metrics["active_fraction"]
    assert len(active) == 60 and sum(active[-10:]) < sum(active[:10])
    assert history.validation[-1]["accuracy"] > 0.6
