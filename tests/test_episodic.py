import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fslearn as fsl

from synthetic import separable_characters


def test_protonet_learns_episodes_on_every_device(device):
    dataset = separable_characters(device=device)
    model = fsl.ProtoNet(fsl.Conv4(1, 8, seed=0)).to(device)
    sampler = fsl.EpisodeSampler(dataset, 3, 2, 3, seed=0)
    val = fsl.EpisodeSet(dataset, 3, 1, 3, n_episodes=20, seed=1)

    def step(_):
        episode = sampler.sample()
        logits = model(episode.support_x, episode.support_y, episode.query_x)
        accuracy = (logits.argmax(-1) == episode.query_y).float().mean()
        return F.cross_entropy(logits, episode.query_y), {"accuracy": accuracy}

    before = fsl.evaluate(model, val).mean
    history = fsl.train_steps(
        model,
        step,
        steps=40,
        steps_per_epoch=10,
        validate=lambda: fsl.evaluate(model, val),
        eval_every=20,
        sync_every=7,
        progress=False,
        optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
    )
    assert history.steps == 40 and history.episodes == 40 and history.epoch == 4.0
    assert len(history.loss) == len(history.time) == len(history.metrics["accuracy"]) == 40
    assert [v["step"] for v in history.validation] == [20, 40]
    assert history.validation[-1]["accuracy"] > max(before, 0.8)
    assert sum(history.loss[-10:]) < sum(history.loss[:10])


def test_counters_axes_and_schedule():
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    history = fsl.train_steps(
        model,
        lambda step: model(torch.ones(1, 2)).square().sum(),
        steps=12,
        optimizer=optimizer,
        scheduler=scheduler,
        episodes_per_step=32,
        progress=False,
    )
    assert history.episodes == 12 * 32
    assert history.axis("episode")[:2] == [32, 64] and history.axis("step")[-1] == 12
    assert optimizer.param_groups[0]["lr"] == 0.25  # halved after steps 5 and 10
    with pytest.raises(ValueError, match="no epoch length"):
        history.axis("epoch")


def test_nan_loss_names_the_step():
    model = nn.Linear(2, 1)

    def step(i):
        x = torch.full((1, 2), float("nan")) if i == 6 else torch.ones(1, 2)
        return model(x).sum()

    with pytest.raises(FloatingPointError, match=r"loss became nan at step 7 \(lr=0.001\)"):
        fsl.train_steps(model, step, steps=10, sync_every=4, progress=False)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(steps=0), "steps must be a positive integer; got 0"),
        (dict(steps=3, eval_every=2), "give validate and eval_every together"),
        (dict(steps=3, episodes_per_step=0), "episodes_per_step must be a positive integer; got 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match=message):
        fsl.train_steps(model, lambda step: model(torch.ones(1, 2)).sum(), progress=False, **kwargs)


def test_protonet_oracle_and_scale():
    g = torch.Generator().manual_seed(0)
    support_x, query_x = torch.rand(6, 3, generator=g), torch.rand(4, 3, generator=g)
    support_y = torch.tensor([1, 0, 2, 1, 0, 2])
    net = fsl.ProtoNet(nn.Identity())
    prototypes = torch.stack([support_x[support_y == c].mean(0) for c in range(3)])
    expected = -((query_x[:, None] - prototypes[None]) ** 2).sum(-1)
    torch.testing.assert_close(net(support_x, support_y, query_x), expected)
    query_y = torch.tensor([0, 1, 2, 0])
    # The prototypical loss is cross-entropy over negative squared distances.
    torch.testing.assert_close(
        F.cross_entropy(net(support_x, support_y, query_x), query_y),
        -torch.log_softmax(expected, -1)[torch.arange(4), query_y].mean(),
    )
    cosine = fsl.ProtoNet(nn.Identity(), "cosine")
    torch.testing.assert_close(
        cosine(support_x, support_y, query_x),
        10 * F.cosine_similarity(query_x[:, None], prototypes[None], dim=-1),
    )
    learned = fsl.ProtoNet(nn.Identity(), "cosine", scale=5.0, learn_scale=True)
    assert [n for n, _ in learned.named_parameters()] == ["log_scale"]
    logits = learned(support_x, support_y, query_x)
    cosines = F.cosine_similarity(query_x[:, None], prototypes[None], dim=-1)
    torch.testing.assert_close(logits, 5 * cosines)
    # Logits are exp(log_scale)·cos, so their derivative in log_scale is the logits themselves.
    logits.sum().backward()
    torch.testing.assert_close(learned.log_scale.grad, logits.detach().sum())
    with pytest.raises(ValueError, match="scale must be positive; got -1"):
        fsl.ProtoNet(nn.Identity(), scale=-1)


def test_unnamed_metrics_are_explained():
    model = nn.Linear(2, 1)
    with pytest.raises(TypeError, match=r"got \(loss, Tensor\). Name the extra value"):
        fsl.train_steps(
            model,
            lambda step: (model(torch.ones(1, 2)).sum(), torch.tensor(1.0)),
            steps=2,
            progress=False,
        )
