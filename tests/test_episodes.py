import math
import statistics

import pytest
import torch

import fslearn as fsl
from fslearn import EpisodeSampler, EpisodeSet

from synthetic import decode, labelled_dataset


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("n_way,n_shot,n_query", [(5, 1, 5), (3, 4, 6), (12, 1, 9), (1, 5, 5)])
def test_sampler_invariants(seed, n_way, n_shot, n_query, device):
    dataset = labelled_dataset(device=device)
    episode = EpisodeSampler(dataset, n_way, n_shot, n_query, seed=seed).sample()
    assert episode.support_x.shape == (n_way * n_shot, 1, 6, 6)
    assert episode.query_x.shape == (n_way * n_query, 1, 6, 6)
    assert episode.support_x.device.type == device.type and episode.support_x.dtype == torch.float32
    assert (episode.n_way, episode.n_shot, episode.n_query) == (n_way, n_shot, n_query)
    assert episode.support_y.tolist() == [c for c in range(n_way) for _ in range(n_shot)]
    assert episode.query_y.tolist() == [c for c in range(n_way) for _ in range(n_query)]
    assert len(set(episode.classes.tolist())) == n_way
    s_cls, s_inst = decode(episode.support_x)
    q_cls, q_inst = decode(episode.query_x)
    # Labels are remapped consistently: label i is dataset class classes[i].
    assert torch.equal(s_cls, episode.classes[episode.support_y])
    assert torch.equal(q_cls, episode.classes[episode.query_y])
    for label in range(n_way):
        support = set(s_inst[episode.support_y == label].tolist())
        query = set(q_inst[episode.query_y == label].tolist())
        assert len(support) == n_shot and len(query) == n_query
        assert not support & query, "support and query images are disjoint"


def test_sampler_batches_tasks_and_covers_classes_and_orders(device):
    dataset = labelled_dataset(device=device)
    sampler = EpisodeSampler(dataset, 5, 1, 3, seed=0)
    batch = sampler.sample_tasks(200)
    assert batch.support_x.shape == (200, 5, 1, 6, 6) and batch.query_y.shape == (200, 15)
    assert batch.classes.shape == (200, 5)
    counts = torch.bincount(batch.classes.flatten().cpu(), minlength=12)
    assert counts.min() > 40, "every class is drawn"
    first_label_class = torch.bincount(batch.classes[:, 0].cpu(), minlength=12)
    assert (first_label_class > 0).sum() >= 10, (
        "class order is shuffled: label 0 is not always the same class"
    )
    s_cls, _ = decode(batch.support_x)
    assert torch.equal(s_cls, batch.classes.gather(1, batch.support_y))


def test_sampler_is_deterministic_by_seed(device):
    dataset = labelled_dataset(device=device)
    a = EpisodeSampler(dataset, 5, 2, 3, seed=7)
    b = EpisodeSampler(dataset, 5, 2, 3, seed=7)
    c = EpisodeSampler(dataset, 5, 2, 3, seed=8)
    ea, eb, ec = a.sample_tasks(4), b.sample_tasks(4), c.sample_tasks(4)
    assert torch.equal(ea.support_x, eb.support_x) and torch.equal(ea.classes, eb.classes)
    assert not torch.equal(ea.classes, ec.classes)
    state = a.state_dict()
    next_a = a.sample_tasks(3)
    a.load_state_dict(state)
    assert torch.equal(a.sample_tasks(3).query_x, next_a.query_x)


def test_rotation_is_per_class_per_task(device):
    images = torch.zeros(6, 4, 1, 5, 5, dtype=torch.uint8)
    images[..., 0, 0] = 255  # a mark in the top-left corner shows the rotation
    dataset = fsl.FewShotDataset(images, [f"c{i}" for i in range(6)], ["a"] * 6).to(device)
    batch = EpisodeSampler(dataset, 3, 1, 3, seed=0, rotate=True).sample_tasks(100)
    x = torch.cat(
        [batch.support_x.view(100, 3, 1, 1, 5, 5), batch.query_x.view(100, 3, 3, 1, 5, 5)], dim=2
    )
    corners = torch.stack(
        [x[..., 0, 0], x[..., 4, 0], x[..., 4, 4], x[..., 0, 4]], -1
    )  # (100, 3, 4, 1, 4)
    turn = corners.argmax(-1)  # which corner holds the mark
    assert (turn == turn[:, :, :1]).all(), "all images of a class in a task share one rotation"
    assert set(turn.flatten().tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="square images; got 5×6"):
        EpisodeSampler(
            fsl.FewShotDataset(
                torch.zeros(4, 3, 1, 5, 6, dtype=torch.uint8), list("abcd"), list("aaaa")
            ),
            2,
            1,
            1,
            rotate=True,
        )


@pytest.mark.parametrize(
    "args,message",
    [
        ((13, 1, 1), r"n_way=13 but labelled has only 12 classes; use n_way ≤ 12"),
        (
            (5, 4, 7),
            r"n_shot \+ n_query = 4 \+ 7 = 11 images per class, but labelled has only 10 per class",
        ),
        ((0, 1, 1), r"n_way must be a positive integer; got 0"),
        ((5, -1, 1), r"n_shot must be a positive integer; got -1"),
        ((5, 1, 0), r"n_query must be a positive integer; got 0"),
        ((5, 1.0, 1), r"n_shot must be a positive integer; got 1.0"),
    ],
)
def test_bad_episode_shapes_name_the_numbers(args, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(labelled_dataset(), *args)
    with pytest.raises(ValueError, match=message):
        EpisodeSet(labelled_dataset(), *args, n_episodes=3)


def test_bad_task_count():
    with pytest.raises(ValueError, match=r"n_tasks must be a positive integer; got 0"):
        EpisodeSampler(labelled_dataset(), 2, 1, 1).sample_tasks(0)


def test_episode_set_is_fixed_and_device_independent(device):
    cpu_set = EpisodeSet(labelled_dataset(), 4, 2, 3, n_episodes=25, seed=3)
    dev_set = EpisodeSet(labelled_dataset(device=device), 4, 2, 3, n_episodes=25, seed=3)
    assert len(cpu_set) == 25
    for a, b in zip(cpu_set, dev_set):
        assert torch.equal(a.support_x, b.support_x.cpu()) and torch.equal(
            a.query_y, b.query_y.cpu()
        )
    assert torch.equal(cpu_set[-1].query_x, cpu_set[24].query_x)
    other = EpisodeSet(labelled_dataset(), 4, 2, 3, n_episodes=25, seed=4)
    assert not torch.equal(cpu_set.classes, other.classes)
    batch = cpu_set.batch(5, 9)
    assert batch.support_x.shape == (4, 8, 1, 6, 6)
    assert torch.equal(batch.query_x[1], cpu_set[6].query_x)
    with pytest.raises(IndexError, match="episode 25 of an EpisodeSet of 25"):
        cpu_set[25]


def test_confidence_interval_arithmetic():
    values = [0.2, 0.4, 0.6, 0.8, 1.0]
    result = fsl.confidence_interval(torch.tensor(values))
    # By hand: squared deviations 0.16 + 0.04 + 0 + 0.04 + 0.16 = 0.4, over n - 1 = 4: variance 0.1,
    # so 1.96·√(0.1 / 5) = 1.96·√0.02.
    assert result.mean == pytest.approx(0.6) and result.n == 5
    assert result.ci95 == pytest.approx(1.96 * math.sqrt(0.02))
    assert result.ci95 == pytest.approx(1.96 * statistics.stdev(values) / math.sqrt(5))
    assert str(result) == "60.00 ± 27.72%"
    assert str(fsl.confidence_interval([0.5, 0.7, 0.6, 0.6])) == "60.00 ± 8.00%"
    assert fsl.confidence_interval([0.5] * 10).ci95 == 0.0
    with pytest.raises(ValueError, match="at least 2 episodes; got 1"):
        fsl.confidence_interval([0.5])


def test_evaluate_oracle_learners(device):
    dataset = labelled_dataset(device=device)
    episodes = EpisodeSet(dataset, 5, 1, 4, n_episodes=30, seed=0)

    def perfect(support_x, support_y, query_x):
        s_cls, _ = decode(support_x)
        q_cls, _ = decode(query_x)
        return (q_cls[:, None] == s_cls[None, :]).float()  # 1 shot: support order is label order

    def constant(support_x, support_y, query_x):
        return torch.zeros(query_x.shape[0], 5, device=query_x.device).index_fill_(
            1, torch.tensor([0], device=query_x.device), 1.0
        )

    def right_on_even_images(support_x, support_y, query_x):
        label = perfect(support_x, support_y, query_x).argmax(1)
        _, instance = decode(query_x)
        wrong = (label + 1) % 5
        return torch.nn.functional.one_hot(torch.where(instance % 2 == 0, label, wrong), 5).float()

    assert fsl.evaluate(perfect, episodes).mean == 1.0
    result = fsl.evaluate(constant, episodes)
    assert result.mean == pytest.approx(0.2) and result.ci95 == 0.0
    # Episodes differ in how many of their queries show an even-numbered image: so do the scores.
    expected = [(decode(e.query_x)[1] % 2 == 0).double().mean().item() for e in episodes]
    assert len(set(expected)) > 1
    result = fsl.evaluate(right_on_even_images, episodes)
    assert result.per_episode.tolist() == pytest.approx(expected)
    assert result.mean == pytest.approx(statistics.fmean(expected))
    assert result.ci95 == pytest.approx(1.96 * statistics.stdev(expected) / math.sqrt(30))

    with pytest.raises(
        ValueError,
        match=r"logits of shape \(20, 3\); expected \(n_way \* n_query, n_way\) = \(20, 5\)",
    ):
        fsl.evaluate(lambda s, y, q: torch.zeros(q.shape[0], 3), episodes)


def test_evaluate_runs_without_gradients_and_restores_mode():
    dataset = labelled_dataset()
    learner = fsl.NearestPrototype()
    learner.train()
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, s, y, q):
            seen.append((torch.is_grad_enabled(), self.training))
            return learner(s, y, q)

    spy = Spy().train()
    fsl.evaluate(spy, EpisodeSet(dataset, 3, 1, 2, n_episodes=3))
    assert seen == [(False, False)] * 3 and spy.training


def test_nearest_prototype_oracle_and_support_order():
    g = torch.Generator().manual_seed(0)
    support_x, query_x = torch.rand(6, 1, 4, 4, generator=g), torch.rand(5, 1, 4, 4, generator=g)
    support_y = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = fsl.NearestPrototype()(support_x, support_y, query_x)
    means = support_x.flatten(1).view(3, 2, 16).mean(1)
    torch.testing.assert_close(
        logits, -(torch.cdist(query_x.flatten(1), means) ** 2), atol=1e-5, rtol=1e-4
    )
    perm = torch.randperm(6, generator=g)
    torch.testing.assert_close(
        fsl.NearestPrototype()(support_x[perm], support_y[perm], query_x), logits
    )
    cos = fsl.NearestPrototype(distance="cosine")(support_x, support_y, query_x)
    torch.testing.assert_close(
        cos, torch.nn.functional.cosine_similarity(query_x.flatten(1)[:, None], means[None], dim=-1)
    )
    with pytest.raises(ValueError, match="got 'manhattan'"):
        fsl.NearestPrototype(distance="manhattan")


def test_squared_euclidean_oracle_in_float64():
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(7, 33, generator=g, dtype=torch.float64),
        torch.randn(4, 33, generator=g, dtype=torch.float64),
    )
    expected = torch.stack([torch.stack([(x - y).square().sum() for y in b]) for x in a])
    torch.testing.assert_close(fsl.squared_euclidean(a, b), expected)
    assert (fsl.squared_euclidean(a, a).diagonal() >= 0).all()
