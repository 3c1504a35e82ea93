"""Baseline++ and SimpleShot: their heads and transforms by hand, toy problems whose answers
are known, their recipe and checkpoints, and the settings they refuse."""

import math

import pytest
import torch
from torch import nn

import fslearn as fsl
from fslearn.methods.baseline_pp import default_scale

from synthetic import pattern_dataset, separable_characters


class Pixels(nn.Module):
    """The identity backbone: an image's pixels are its features."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the learners a device and dtype

    def embedding_dim(self, image_shape) -> int:
        return math.prod(image_shape)

    def forward(self, x):
        return x.flatten(1)


def test_cosine_head_is_scaled_cosine_similarity_by_hand():
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    head = fsl.CosineHead(8, 3, scale=4.0, seed=0).double()
    w = head.weight.detach()
    by_hand = 4.0 * (x / x.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(head(x), by_hand)
    # With learned norms, each class's norm starts at |w_c|: its cosine times |w_c|.
    normed = fsl.CosineHead(8, 3, scale=4.0, learn_norms=True, seed=0).double()
    torch.testing.assert_close(normed(x), 4.0 * (x / x.norm(dim=1, keepdim=True)) @ w.T)
    assert {name for name, _ in normed.named_parameters()} == {"weight", "norms"}
    # The same seed, the same head; torch's global generator left where it was.
    state = torch.random.get_rng_state()
    assert torch.equal(fsl.CosineHead(8, 3, seed=0).weight, head.weight.float())
    assert torch.equal(torch.random.get_rng_state(), state)


def test_the_scale_follows_chen_et_al_and_bad_ones_are_refused():
    assert default_scale(5) == default_scale(200) == 2.0 and default_scale(201) == 10.0
    assert fsl.CosineHead(4, 964).scale == 10.0 and fsl.CosineHead(4, 5).scale == 2.0
    for bad in (0, -1.0, math.nan, math.inf, True, "2"):
        with pytest.raises(ValueError, match=r"scale must be a finite number > 0; got"):
            fsl.CosineHead(4, 5, scale=bad)


def test_baseline_pp_and_simpleshot_solve_a_separable_toy_problem():
    characters = separable_characters(n_classes=10)
    episodes = fsl.EpisodeSet(characters, 5, 1, 3, n_episodes=6, seed=0)
    pixels = Pixels()
    mean = fsl.mean_embedding(pixels, characters)
    torch.testing.assert_close(mean, characters.flat()[0].flatten(1).mean(0))
    learners = {
        "Baseline++": fsl.BaselinePP(pixels, characters.image_shape, 5, test_steps=20),
        "SimpleShot": fsl.SimpleShot(pixels, mean),
        "SimpleShot L2N": fsl.SimpleShot(pixels, norm="L2N"),
    }
    for name, learner in learners.items():
        accuracy = fsl.evaluate(learner, episodes, batch_size=3)
        assert accuracy.mean == 1.0, name
        assert accuracy.test_bn == "running"  # the switch's value, though pixels have no layers


def test_baseline_pp_pretrains_with_a_cosine_head_and_loads_back(tmp_path):
    data = pattern_dataset(n_classes=8)
    path = tmp_path / "baseline_pp.pt"
    classifier, _ = fsl.train_pretrained(
        data.select(range(6)), epochs=1, batch_size=20, hidden_channels=4, head="cosine",
        progress=False, checkpoint=fsl.Checkpoint(path),
    )  # fmt: skip
    assert isinstance(classifier.head, fsl.CosineHead) and classifier.head.scale == 2.0
    assert fsl.read_checkpoint(path)["spec"]["head"] == "cosine"
    learner = fsl.load_learner(path, n_way=2, test_steps=5)
    assert isinstance(learner, fsl.BaselinePP) and learner.test_steps == 5
    weights = learner.model.backbone.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in classifier.backbone.state_dict().items())
    episode = fsl.EpisodeSet(data.select([6, 7]), 2, 1, 2, n_episodes=1, seed=0)[0]
    assert learner(episode.support_x, episode.support_y, episode.query_x).shape == (4, 2)
    linear, _ = fsl.train_pretrained(data, epochs=1, batch_size=40, hidden_channels=4)
    assert isinstance(linear.head, nn.Linear)


def test_pretraining_refuses_heads_and_scales_that_do_not_apply():
    data = pattern_dataset(n_classes=4)
    with pytest.raises(ValueError, match=r"head must be 'linear' or 'cosine' .*; got 'dist'"):
        fsl.train_pretrained(data, head="dist", progress=False)
    with pytest.raises(ValueError, match=r"scale=10 does not apply to head='linear'"):
        fsl.train_pretrained(data, scale=10, progress=False)


def test_simpleshot_refuses_settings_that_cannot_work():
    backbone = fsl.Conv4(1, 4, seed=0)
    with pytest.raises(ValueError, match=r"norm='CL2N' centres .* pass base_mean=fsl.mean_"):
        fsl.SimpleShot(backbone)
    with pytest.raises(ValueError, match=r"norm must be one of \('CL2N', 'L2N', 'UN'\)"):
        fsl.SimpleShot(backbone, norm="l2")
    with pytest.raises(ValueError, match=r"test_bn must be one of"):
        fsl.SimpleShot(backbone, norm="L2N", test_bn="eval")
    learner = fsl.SimpleShot(backbone, torch.zeros(5))
    episode = fsl.EpisodeSet(pattern_dataset(n_classes=3), 3, 1, 1, n_episodes=1, seed=0)[0]
    with pytest.raises(ValueError, match=r"base_mean has 5 entries but the backbone's features 4"):
        learner(episode.support_x, episode.support_y, episode.query_x)
    maml_backbone = fsl.Conv4(1, 4, track_running_stats=False)
    with pytest.raises(ValueError, match=r"running batch-norm statistics, but the layers \['0.1'"):
        fsl.mean_embedding(maml_backbone, torch.rand(4, 1, 16, 16))
    with pytest.raises(ValueError, match=r"test_bn='running' .* keep none"):
        fsl.SimpleShot(maml_backbone, norm="L2N")


def test_simpleshot_in_training_mode_still_uses_running_statistics_and_updates_none():
    backbone = fsl.Conv4(1, 4, seed=0)
    data = pattern_dataset(n_classes=3)
    learner = fsl.SimpleShot(backbone, fsl.mean_embedding(backbone, data))
    episode = fsl.EpisodeSet(data, 3, 1, 2, n_episodes=1, seed=0)[0]
    args = (episode.support_x, episode.support_y, episode.query_x)
    evaluated = learner.eval()(*args)
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    torch.testing.assert_close(learner.train()(*args), evaluated)
    assert all(torch.equal(v, state[k]) for k, v in backbone.state_dict().items())
