import pytest
import torch
from torch import nn

import fslearn as fsl
from fslearn import (
    NearestNeighbourLearner,
    PKSampler,
    mine_triplets,
    triplet_batch_loss,
    triplet_loss,
)

from synthetic import decode, labelled_dataset, pattern_dataset

# A hand-made batch of 1-D embeddings with integer distances (exact in float32).
POSITIONS = [0.0, 2.0, 7.0, 4.0, 12.0, -1.0, 20.0]
LABELS = [0, 0, 0, 1, 1, 2, 2]


def _hand_batch(device="cpu"):
    return torch.tensor(POSITIONS, device=device)[:, None], torch.tensor(LABELS, device=device)


def _slow_mining(embeddings, labels, strategy, margin):
    """The strategies written out anchor by anchor, on exact pairwise distances."""
    d = torch.cdist(embeddings.double(), embeddings.double())
    n, triplets = len(labels), []
    for a in range(n):
        positives = [p for p in range(n) if labels[p] == labels[a] and p != a]
        negatives = [m for m in range(n) if labels[m] != labels[a]]
        hardest_negative = min(negatives, key=lambda m: d[a, m])
        if strategy == "batch-hard":
            triplets.append((a, max(positives, key=lambda p: d[a, p]), hardest_negative))
            continue
        for p in positives:
            band = [m for m in negatives if d[a, p] < d[a, m] < d[a, p] + margin]
            triplets.append((a, p, min(band, key=lambda m: d[a, m]) if band else hardest_negative))
    return [list(t) for t in zip(*triplets)]


@pytest.mark.parametrize("margin", [0.2, 1.0, 5.0])
def test_triplet_loss_matches_torch(margin):
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(50, 8, generator=g) for _ in range(3))
    expected = nn.TripletMarginLoss(margin=margin)(a, p, n)
    torch.testing.assert_close(triplet_loss(a, p, n, margin), expected, atol=1e-4, rtol=1e-4)


def test_squared_triplet_loss_matches_the_formula():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    n = torch.tensor([[0.0, 2.0], [1.0, 2.0]])
    # d+² = 1, 4; d−² = 4, 1 → max(1 − 4 + 1, 0) = 0 and max(4 − 1 + 1, 0) = 4.
    torch.testing.assert_close(triplet_loss(a, p, n, margin=1.0, squared=True), torch.tensor(2.0))
    # Euclidean: d+ = 1, 2; d− = 2, 1 → 0 and 2.
    torch.testing.assert_close(triplet_loss(a, p, n, margin=1.0), torch.tensor(1.0))


def test_batch_hard_picks_the_hardest_pairs_of_a_hand_made_batch(device):
    embeddings, labels = _hand_batch(device)
    a, p, n = mine_triplets(embeddings, labels, "batch-hard")
    assert a.tolist() == list(range(7))
    assert p.tolist() == [2, 2, 0, 4, 3, 6, 5]  # the farthest same-class point
    assert n.tolist() == [5, 3, 3, 1, 2, 0, 4]  # the closest other-class point


def test_semi_hard_picks_inside_the_band_or_falls_back_to_the_hardest(device):
    embeddings, labels = _hand_batch(device)
    a, p, n = mine_triplets(embeddings, labels, "semi-hard", margin=3.0)
    assert a.tolist() == [0, 0, 1, 1, 2, 2, 3, 4, 5, 6]
    assert p.tolist() == [1, 2, 0, 2, 0, 1, 4, 3, 6, 5]
    # (0,1): d+ = 2, band (2, 5) holds 3 (d = 4). (1,0): band (2, 5) holds 5 (d = 3) but
    # not 3 (d = 2, on the edge). (2,1): d+ = 5, band (5, 8) is empty (3 at 5 and 5 at 8 are
    # on its edges) → the hardest, 3 (d = 3).
    assert n.tolist() == [3, 5, 5, 3, 5, 3, 1, 1, 0, 4]
    # Squared distances: the band is (d+², d+² + margin); for (0,1) it is (4, 7), which
    # nothing falls in.
    _, _, n_squared = mine_triplets(embeddings, labels, "semi-hard", margin=3.0, squared=True)
    assert n_squared[0] == 5


@pytest.mark.parametrize("strategy", ["batch-hard", "semi-hard"])
@pytest.mark.parametrize("seed", range(10))
def test_mining_equals_a_loop_over_anchors(strategy, seed):
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(24, 3, generator=g, dtype=torch.float64)
    labels = torch.arange(6).repeat_interleave(4)[torch.randperm(24, generator=g)]
    expected = _slow_mining(embeddings, labels, strategy, margin=0.5)
    assert [t.tolist() for t in mine_triplets(embeddings, labels, strategy, margin=0.5)] == expected


@pytest.mark.parametrize("seed", range(30))
def test_random_mining_returns_valid_triplets(seed, device):
    g = torch.Generator(device=device).manual_seed(seed)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2], device=device)
    a, p, n = mine_triplets(
        torch.randn(10, 4, device=device, generator=g), labels, "random", generator=g
    )
    assert a.tolist() == list(range(10))
    assert (labels[a] == labels[p]).all() and (a != p).all()
    assert (labels[a] != labels[n]).all()


def test_random_mining_is_seeded_and_covers_every_choice(device):
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2], device=device)
    embeddings = torch.zeros(7, 2, device=device)

    def draw(seed):
        g = torch.Generator(device=device).manual_seed(seed)
        return torch.stack(mine_triplets(embeddings, labels, "random", generator=g))

    assert torch.equal(draw(5), draw(5))
    draws = torch.stack([draw(seed) for seed in range(200)])  # (200, 3, 7)
    assert set(draws[:, 1, 0].tolist()) == {1, 2}, "both positives of anchor 0"
    assert set(draws[:, 2, 0].tolist()) == {3, 4, 5, 6}, "all negatives of anchor 0"


def test_active_fraction_of_a_hand_made_batch():
    embeddings = torch.tensor([[0.0], [5.0], [10.0], [11.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # Batch-hard, margin 1: d+ − d− + 1 = 5 − 10 + 1, 5 − 5 + 1, 1 − 5 + 1, 1 − 6 + 1 → only
    # anchor 1 is active.
    loss, active = triplet_batch_loss(embeddings, labels, "batch-hard", margin=1.0)
    torch.testing.assert_close(loss, torch.tensor(0.25))
    assert active.dim() == 0 and active.item() == 0.25 and not active.requires_grad
    loss, active = triplet_batch_loss(embeddings, labels, "batch-hard", margin=10.0)
    assert active.item() == 1.0
    a, p, n = mine_triplets(embeddings, labels, "semi-hard", margin=2.0, squared=True)
    loss, _ = triplet_batch_loss(embeddings, labels, "semi-hard", margin=2.0, squared=True)
    torch.testing.assert_close(
        loss, triplet_loss(embeddings[a], embeddings[p], embeddings[n], 2.0, squared=True)
    )


def test_mining_argument_errors():
    embeddings, labels = _hand_batch()
    with pytest.raises(ValueError, match=r"strategy must be one of .*; got 'hardest'"):
        mine_triplets(embeddings, labels, "hardest")
    with pytest.raises(ValueError, match=r"labels \[2\] have no positive or no negative"):
        mine_triplets(embeddings[:6], labels[:6], "batch-hard")
    with pytest.raises(ValueError, match=r"labels \[0\] have no positive or no negative"):
        mine_triplets(embeddings[:3], labels[:3], "random")
    with pytest.raises(
        ValueError, match=r"shape \(B, D\) and labels \(B,\); got \(7, 1\) and \(6,\)"
    ):
        mine_triplets(embeddings, labels[:6], "random")


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("n_classes,n_per_class", [(4, 2), (12, 10), (2, 5)])
def test_pk_sampler_invariants(seed, n_classes, n_per_class, device):
    x, y = PKSampler(labelled_dataset(device=device), n_classes, n_per_class, seed=seed).sample()
    assert x.shape == (n_classes * n_per_class, 1, 6, 6) and x.dtype == torch.float32
    assert x.device.type == y.device.type == device.type
    assert y.tolist() == [c for c in range(n_classes) for _ in range(n_per_class)]
    cls, inst = decode(x)
    per_label = cls.view(n_classes, n_per_class)
    assert (per_label == per_label[:, :1]).all(), "one dataset class per label"
    assert len(set(per_label[:, 0].tolist())) == n_classes, "distinct classes"
    for row in inst.view(n_classes, n_per_class).tolist():
        assert len(set(row)) == n_per_class, "distinct images of a class"


def test_pk_sampler_is_seeded_and_varies(device):
    dataset = labelled_dataset(device=device)
    a, b, c = (
        PKSampler(dataset, 4, 3, seed=1),
        PKSampler(dataset, 4, 3, seed=1),
        PKSampler(dataset, 4, 3, seed=2),
    )
    first = a.sample()[0]
    assert torch.equal(first, b.sample()[0]) and not torch.equal(first, c.sample()[0])
    assert not torch.equal(first, a.sample()[0])


@pytest.mark.parametrize(
    "args,message",
    [
        ((13, 2), r"n_classes=13 but labelled has only 12 classes; use n_classes ≤ 12"),
        (
            (4, 11),
            r"n_per_class=11 images per class, but labelled has only 10 per class; "
            r"use n_per_class ≤ 10",
        ),
        ((1, 4), r"n_classes must be an integer ≥ 2 .*; got 1"),
        ((4, 1), r"n_per_class must be an integer ≥ 2 .*; got 1"),
        ((4, 2.0), r"n_per_class must be an integer ≥ 2 .*; got 2.0"),
    ],
)
def test_pk_sampler_argument_errors(args, message):
    with pytest.raises(ValueError, match=message):
        PKSampler(labelled_dataset(), *args)


@pytest.mark.parametrize("rule", ["nearest-support", "nearest-prototype"])
@pytest.mark.parametrize("n_shot", [1, 3])
def test_nearest_neighbour_learner_equals_a_loop(rule, n_shot):
    g = torch.Generator().manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).double()
    learner = NearestNeighbourLearner(backbone, rule)
    support_x = torch.rand(4 * n_shot, 1, 4, 4, generator=g, dtype=torch.float64)
    support_y = torch.arange(4).repeat_interleave(n_shot)
    query_x = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        logits = learner(support_x, support_y, query_x)
        s, q = backbone(support_x), backbone(query_x)
        slow = torch.zeros(6, 4, dtype=torch.float64)
        for i in range(6):
            for c in range(4):
                members = s[support_y == c]
                if rule == "nearest-support":
                    slow[i, c] = -min((q[i] - m).square().sum() for m in members)
                else:
                    slow[i, c] = -(q[i] - members.mean(0)).square().sum()
        perm = torch.randperm(4 * n_shot, generator=g)
        permuted = learner(support_x[perm], support_y[perm], query_x)
    torch.testing.assert_close(logits, slow)
    torch.testing.assert_close(permuted, logits)


def test_identity_nearest_prototype_is_the_library_baseline():
    g = torch.Generator().manual_seed(0)
    support_x, query_x = torch.rand(10, 1, 5, 5, generator=g), torch.rand(8, 1, 5, 5, generator=g)
    support_y = torch.tensor([0, 1, 2, 3, 4] * 2)
    torch.testing.assert_close(
        NearestNeighbourLearner(nn.Flatten(), "nearest-prototype")(support_x, support_y, query_x),
        fsl.NearestPrototype()(support_x, support_y, query_x),
    )
    with pytest.raises(
        ValueError, match="rule must be 'nearest-support' or 'nearest-prototype'; got 'knn'"
    ):
        NearestNeighbourLearner(nn.Flatten(), "knn")


@pytest.mark.parametrize("strategy", ["random", "semi-hard", "batch-hard"])
def test_gradients_flow_to_the_backbone_through_the_mined_loss(strategy):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(36, 8))
    x, y = PKSampler(labelled_dataset(), 4, 3, seed=0).sample()
    loss, _ = triplet_batch_loss(
        backbone(x), y, strategy, margin=10.0, generator=torch.Generator().manual_seed(0)
    )
    loss.backward()
    grads = [weight.grad.clone() for weight in backbone.parameters()]
    # Oracle: torch's triplet loss on the same triplets, differentiated through all three members.
    backbone.zero_grad()
    embeddings = backbone(x)
    a, p, n = mine_triplets(
        embeddings.detach(), y, strategy, margin=10.0, generator=torch.Generator().manual_seed(0)
    )
    oracle_loss = nn.TripletMarginLoss(margin=10.0, eps=0.0)
    expected = oracle_loss(embeddings[a], embeddings[p], embeddings[n])
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for got, oracle in zip(grads, backbone.parameters()):
        torch.testing.assert_close(got, oracle.grad)


@pytest.mark.parametrize("strategy", ["random", "semi-hard", "batch-hard"])
def test_triplet_training_reduces_the_active_fraction(strategy, device):
    backbone = fsl.Conv4(1, 8, seed=0).to(device)
    sampler = PKSampler(pattern_dataset(device=device), 4, 4, seed=0)
    generator = torch.Generator(device=device).manual_seed(0)
    optimizer = torch.optim.Adam(backbone.parameters(), lr=3e-3)
    fractions = []
    for _ in range(50):
        x, y = sampler.sample()
        loss, active = triplet_batch_loss(backbone(x), y, strategy, margin=1.0, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        fractions.append(active)
    fractions = torch.stack(fractions).cpu()  # one host sync, after training
    assert fractions[-10:].mean() < fractions[:10].mean() - 0.2, fractions
