import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fslearn as fsl
from fslearn import PairSampler, SiameseNet, contrastive_loss, max_per_class

from synthetic import decode, labelled_dataset, pattern_dataset


def _model(head, seed=0):
    backbone = fsl.Conv4(1, 8, seed=seed)
    return SiameseNet(backbone, backbone.embedding_dim((1, 16, 16)), head, seed=seed)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("n_pairs", [2, 10, 64])
def test_pair_sampler_is_balanced_and_valid(seed, n_pairs, device):
    x1, x2, same = PairSampler(labelled_dataset(device=device), seed=seed).sample(n_pairs)
    assert x1.shape == x2.shape == (n_pairs, 1, 6, 6) and same.shape == (n_pairs,)
    assert x1.dtype == same.dtype == torch.float32 and x1.device.type == device.type
    assert x1.min() >= 0 and x2.max() <= 1
    assert same.sum() == n_pairs // 2 and set(same.tolist()) <= {0.0, 1.0}
    c1, i1 = decode(x1)
    c2, i2 = decode(x2)
    positive = same.bool()
    assert (c1[positive] == c2[positive]).all(), "positives share a class"
    assert (i1[positive] != i2[positive]).all(), "positives are two different images"
    assert (c1[~positive] != c2[~positive]).all(), "negatives show two classes"


def test_pair_sampler_shuffles_and_covers_the_dataset(device):
    dataset = labelled_dataset(device=device)
    x1, x2, same = PairSampler(dataset, seed=0).sample(2000)
    assert 0.4 < same[:1000].mean() < 0.6, (
        "positives and negatives are interleaved, not in two blocks"
    )
    c1, i1 = decode(x1)
    c2, i2 = decode(x2)
    assert set(torch.cat([c1, c2]).tolist()) == set(range(12))
    assert set(torch.cat([i1, i2]).tolist()) == set(range(10))
    negative = ~same.bool()
    assert len(set(zip(c1[negative].tolist(), c2[negative].tolist()))) > 100, (
        "many class pairs, both orders"
    )


def test_pair_sampler_is_deterministic_by_seed(device):
    dataset = labelled_dataset(device=device)
    a, b, c = (PairSampler(dataset, seed=s).sample(32) for s in (3, 3, 4))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("n_pairs", [3, 0, -2, 4.0, True])
def test_pair_sampler_needs_a_positive_even_count(n_pairs):
    with pytest.raises(ValueError, match=rf"n_pairs must be .*half positive.*; got {n_pairs!r}"):
        PairSampler(labelled_dataset()).sample(n_pairs)


def test_pair_sampler_rejects_datasets_without_pairs():
    with pytest.raises(ValueError, match="has 1 class; negative pairs need at least 2 classes"):
        PairSampler(labelled_dataset(n_classes=1))
    with pytest.raises(ValueError, match="positive pairs need .* has only 1 per class"):
        PairSampler(labelled_dataset(n_per_class=1))


def test_contrastive_loss_matches_the_formula():
    distance = torch.tensor([0.0, 0.5, 2.0, 0.25, 1.0, 3.0])
    same = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    by_hand = [0.0, 0.25, 4.0, (1.5 - 0.25) ** 2, 0.5**2, 0.0]
    torch.testing.assert_close(
        contrastive_loss(distance, same, margin=1.5), torch.tensor(by_hand).mean()
    )
    # Identical positives cost nothing; negatives beyond the margin cost nothing; inside it,
    # (m − d)².
    assert contrastive_loss(torch.zeros(4), torch.ones(4)) == 0
    assert contrastive_loss(torch.tensor([1.0, 7.0]), torch.zeros(2), margin=1.0) == 0
    torch.testing.assert_close(
        contrastive_loss(torch.tensor([0.0]), torch.zeros(1), margin=2.0), torch.tensor(4.0)
    )


def test_contrastive_distance_is_zero_with_a_finite_gradient_for_identical_images():
    model = _model("contrastive").eval()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    distance = model.pair_distance(x, x)
    assert (distance == 0).all()
    contrastive_loss(distance, torch.ones(3)).backward()
    # Every weight gets a gradient, and at the loss's minimum (distance 0) it is zero.
    assert all(p.grad is not None and (p.grad == 0).all() for p in model.parameters())


@pytest.mark.parametrize("head", ["koch", "contrastive"])
@pytest.mark.parametrize("n_way,n_shot", [(5, 1), (3, 4)])
def test_forward_equals_a_loop_over_pairs_and_ignores_support_order(head, n_way, n_shot):
    g = torch.Generator().manual_seed(1)
    model = _model(
        head
    ).eval()  # eval: batch norm uses running stats, so per-pair and batched embeddings agree
    support_x = torch.rand(n_way * n_shot, 1, 16, 16, generator=g)
    support_y = torch.arange(n_way).repeat_interleave(n_shot)
    query_x = torch.rand(7, 1, 16, 16, generator=g)
    with torch.no_grad():
        logits = model(support_x, support_y, query_x)
        slow = torch.full((7, n_way), float("-inf"))
        for q in range(7):
            for s in range(n_way * n_shot):
                score = model.pair_logits(query_x[q : q + 1], support_x[s : s + 1])[0]
                c = support_y[s]
                slow[q, c] = torch.maximum(slow[q, c], score)
        perm = torch.randperm(n_way * n_shot, generator=g)
        permuted = model(support_x[perm], support_y[perm], query_x)
    assert logits.shape == (7, n_way)
    torch.testing.assert_close(logits, slow, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted, logits)


def test_forward_embeds_support_and_query_once():
    calls = []
    backbone = nn.Flatten()
    backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    model = SiameseNet(backbone, 36)
    model(torch.rand(6, 1, 6, 6), torch.tensor([0, 0, 1, 1, 2, 2]), torch.rand(4, 1, 6, 6))
    assert calls == [6, 4]


def test_max_per_class():
    scores = torch.tensor([[1.0, 5.0, 2.0, -1.0], [0.0, -3.0, 4.0, 7.0]])
    out = max_per_class(scores, torch.tensor([1, 0, 1, 2]), 4)
    assert out.tolist() == [[5.0, 2.0, -1.0, float("-inf")], [-3.0, 4.0, 7.0, float("-inf")]]


def test_koch_loss_reaches_backbone_and_head():
    model = _model("koch")
    x1, x2, same = PairSampler(pattern_dataset(), seed=0).sample(16)
    F.binary_cross_entropy_with_logits(model.pair_logits(x1, x2), same).backward()
    assert model.head.weight.grad.abs().sum() > 0 and model.head.bias.grad.abs() > 0
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(conv.weight.grad.abs().sum() > 0 for conv in convs)


def test_bad_arguments_name_the_values():
    with pytest.raises(ValueError, match="head must be 'koch' or 'contrastive'; got 'cosine'"):
        SiameseNet(nn.Flatten(), 36, "cosine")
    with pytest.raises(ValueError, match="embedding_dim must be a positive integer; got 0"):
        SiameseNet(nn.Flatten(), 0)
    with pytest.raises(
        ValueError, match=r"shape \(2, 36\); expected \(B, 64\). Pass embedding_dim=36"
    ):
        SiameseNet(nn.Flatten(), 64).pair_logits(torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6))


def _pair_accuracy(model, x1, x2, same):
    model.eval()
    with torch.no_grad():
        scores = model.pair_logits(x1, x2)
    model.train()
    # Koch: logit > 0 means "same"; contrastive: closer than half the margin means "same".
    threshold = 0.0 if model.head_type == "koch" else -0.5
    return ((scores > threshold).float() == same).float().mean().item()


@pytest.mark.parametrize("head", ["koch", "contrastive"])
def test_siamese_net_trains(head, device):
    torch.manual_seed(0)
    dataset = pattern_dataset(device=device)
    model = _model(head).to(device)
    sampler = PairSampler(dataset, seed=0)
    test_pairs = PairSampler(dataset, seed=123).sample(400)
    before = _pair_accuracy(model, *test_pairs)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(50):
        x1, x2, same = sampler.sample(32)
        if head == "koch":
            loss = F.binary_cross_entropy_with_logits(model.pair_logits(x1, x2), same)
        else:
            loss = contrastive_loss(model.pair_distance(x1, x2), same)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _pair_accuracy(model, *test_pairs)
    assert after > 0.75 and after > before + 0.2, (before, after)
