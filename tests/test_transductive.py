"""Transductive prototypes against soft k-means written out class by class and query by query."""

import pytest
import torch

import fslearn as fsl


def refined_by_hand(support, support_y, queries, n_way, scale, steps):
    """Soft k-means over the queries, one class and one query at a time."""
    prototypes = torch.stack([support[support_y == c].mean(0) for c in range(n_way)])
    for _ in range(steps):
        logits = torch.stack(
            [
                torch.stack([-scale * ((q - prototypes[c]) ** 2).sum() for c in range(n_way)])
                for q in queries
            ]
        )
        weights = logits.softmax(dim=1)
        new = []
        for c in range(n_way):
            total = support[support_y == c].sum(0)
            mass = float((support_y == c).sum())
            for j, q in enumerate(queries):
                total = total + weights[j, c] * q
                mass = mass + weights[j, c]
            new.append(total / mass)
        prototypes = torch.stack(new)
    return -scale * torch.cdist(queries, prototypes) ** 2


@pytest.mark.parametrize("steps", [1, 3])
def test_refined_prototypes_are_soft_k_means_over_the_queries(steps):
    torch.manual_seed(0)
    backbone = torch.nn.Flatten()
    support_x = torch.rand(6, 1, 2, 2)
    support_y = torch.tensor([0, 0, 1, 1, 2, 2])
    query_x = torch.rand(5, 1, 2, 2)
    learner = fsl.TransductivePrototypes(backbone, scale=2.0, steps=steps)
    by_hand = refined_by_hand(support_x.flatten(1), support_y, query_x.flatten(1), 3, 2.0, steps)
    logits = learner(support_x, support_y, query_x)
    assert torch.allclose(logits, by_hand, atol=1e-5)
    # The queries moved the prototypes: not the inductive network's logits.
    inductive = fsl.ProtoNet(backbone, scale=2.0)(support_x, support_y, query_x)
    assert not torch.allclose(logits, inductive, atol=1e-3)


def test_queries_decide_together():
    """Two queries near the boundary pull a prototype, and with it each other's prediction."""
    backbone = torch.nn.Flatten()
    support_x = torch.tensor([[0.0], [1.0]]).view(2, 1, 1, 1)
    support_y = torch.tensor([0, 1])
    alone = torch.tensor([[0.52]]).view(1, 1, 1, 1)
    crowd = torch.tensor([[0.52], [0.3], [0.25]]).view(3, 1, 1, 1)
    learner = fsl.TransductivePrototypes(backbone, scale=20.0, steps=3)
    # Alone, 0.52 is nearer class 1; with two queries pulling class 0's mean up, class 0.
    assert learner(support_x, support_y, alone).argmax(1).item() == 1
    assert learner(support_x, support_y, crowd).argmax(1)[0].item() == 0


def test_with_transductive_prototypes_keeps_views_and_scale():
    torch.manual_seed(0)
    backbone = fsl.Conv4(hidden_channels=8).eval()
    tested = fsl.with_test_views(fsl.ProtoNet(backbone, scale=3.0), views=2)
    refined = fsl.with_transductive_prototypes(tested, steps=2)
    assert type(refined) is fsl.TransductivePrototypes and refined.steps == 2
    assert refined.backbone is tested.backbone and refined.scale.item() == pytest.approx(3.0)
    with pytest.raises(TypeError, match="got FineTune"):
        fsl.with_transductive_prototypes(fsl.FineTune(backbone, (1, 28, 28), 5))
    with pytest.raises(ValueError, match="steps"):
        fsl.TransductivePrototypes(backbone, steps=0)
