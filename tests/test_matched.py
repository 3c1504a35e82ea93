"""Matched comparisons: batch norm at test time, whole or head-only adaptation, Baseline++ and
SimpleShot, each held to a computation written out here in plain torch, in float64."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fslearn as fsl

from synthetic import TINY, fslearn, labelled_dataset

N_WAY, N_SHOT, N_QUERY = 3, 2, 3
IMAGE = (1, 16, 16)
STEPS, LR = 3, 0.3


@pytest.fixture(params=["loop", "vmap"])
def strategy(request) -> str:
    return request.param


def tasks(n_tasks=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    support_x = torch.rand(n_tasks, N_WAY * N_SHOT, *IMAGE, generator=g, dtype=torch.float64)
    query_x = torch.rand(n_tasks, N_WAY * N_QUERY, *IMAGE, generator=g, dtype=torch.float64)
    support_y = torch.arange(N_WAY).repeat_interleave(N_SHOT).expand(n_tasks, -1)
    return support_x, support_y, query_x


def pretrained_backbone(seed=0) -> fsl.Conv4:
    """A Conv4 in eval mode whose running statistics differ from any batch's."""
    backbone = fsl.Conv4(1, 4, seed=seed).double().eval()
    g = torch.Generator().manual_seed(seed)
    for layer in backbone.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.copy_(torch.rand(4, generator=g, dtype=torch.float64) - 0.5)
            layer.running_var.copy_(torch.rand(4, generator=g, dtype=torch.float64) + 0.5)
            nn.init.normal_(layer.weight, 1.0, 0.2, generator=g)
            nn.init.normal_(layer.bias, 0.0, 0.2, generator=g)
    return backbone


# ---- plain torch: Conv4 by hand, with the batch-norm statistics given explicitly ----


def statistics(x):
    return x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)


def hand_features(params, buffers, x, mode, support_stats=None, record=None):
    """Conv4 written out: conv → F.batch_norm with the intended statistics → ReLU → pool.

    ``mode``: "batch" (x's own), "running" (``buffers``), "given" (``support_stats[i]``).
    ``record`` collects each layer's batch statistics (for a support pass).
    """
    for i in range(4):
        x = F.conv2d(x, params[f"backbone.{i}.0.weight"], params[f"backbone.{i}.0.bias"], padding=1)
        if record is not None:
            record.append(tuple(s.detach() for s in statistics(x)))
        weight, bias = params[f"backbone.{i}.1.weight"], params[f"backbone.{i}.1.bias"]
        if mode == "batch":
            x = F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5)
        else:
            mean, var = (
                support_stats[i]
                if mode == "given"
                else (
                    buffers[f"backbone.{i}.1.running_mean"],
                    buffers[f"backbone.{i}.1.running_var"],
                )
            )
            x = F.batch_norm(x, mean, var, weight, bias, training=False, eps=1e-5)
        x = F.max_pool2d(F.relu(x), 2)
    return x.flatten(1)


def linear(params, features):
    return features @ params["head.weight"].T + params["head.bias"]


def cosine(scale):
    def head(params, features):
        return scale * F.normalize(features, dim=-1) @ F.normalize(params["head.weight"], dim=-1).T

    return head


def hand_adapted_logits(model, sx, sy, qx, test_bn, test_adapt, head=linear):
    """STEPS plain gradient steps of size LR on the support loss, then the query logits."""
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    support_mode = "running" if test_bn == "running" else "batch"
    adapted = [k for k in params if test_adapt == "whole" or k.startswith("head.")]
    frozen = hand_features(params, buffers, sx, support_mode).detach()
    for _ in range(STEPS):
        fast = {k: v.requires_grad_(k in adapted) for k, v in params.items()}
        features = (
            hand_features(fast, buffers, sx, support_mode) if test_adapt == "whole" else frozen
        )
        loss = F.cross_entropy(head(fast, features), sy)
        grads = torch.autograd.grad(loss, [fast[k] for k in adapted])
        params = {k: v.detach() for k, v in fast.items()}
        params.update({k: params[k] - LR * g for k, g in zip(adapted, grads)})
    if test_bn == "running":
        features = hand_features(params, buffers, qx, "running")
    elif test_bn == "transductive":
        features = hand_features(params, buffers, qx, "batch")
    else:
        support_stats = []
        hand_features(params, buffers, sx, "batch", record=support_stats)
        features = hand_features(params, buffers, qx, "given", support_stats)
    return head(params, features)


@pytest.mark.parametrize("test_adapt", ["whole", "head"])
@pytest.mark.parametrize("test_bn", ["transductive", "support"])
def test_maml_modes_equal_a_hand_written_adaptation(test_bn, test_adapt, strategy):
    model = fsl.maml_classifier(N_WAY, IMAGE, hidden_channels=4, seed=0).double()
    maml = fsl.MAML(
        model, inner_lr=LR, test_steps=STEPS, test_bn=test_bn, test_adapt=test_adapt,
        strategy=strategy,
    )  # fmt: skip
    support_x, support_y, query_x = tasks()
    logits = maml(support_x, support_y, query_x)
    for t in range(len(support_x)):
        expected = hand_adapted_logits(
            model, support_x[t], support_y[t], query_x[t], test_bn, test_adapt
        )
        torch.testing.assert_close(logits[t], expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("test_adapt", ["whole", "head"])
@pytest.mark.parametrize("test_bn", ["running", "transductive", "support"])
def test_finetune_modes_equal_a_hand_written_adaptation(test_bn, test_adapt, strategy):
    backbone = pretrained_backbone()
    finetune = fsl.FineTune(
        backbone, IMAGE, N_WAY, inner_lr=LR, test_steps=STEPS, test_bn=test_bn,
        test_adapt=test_adapt, strategy=strategy,
    )  # fmt: skip
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    support_x, support_y, query_x = tasks()
    logits = finetune(support_x, support_y, query_x)
    for t in range(len(support_x)):
        expected = hand_adapted_logits(
            finetune.model, support_x[t], support_y[t], query_x[t], test_bn, test_adapt
        )
        torch.testing.assert_close(logits[t], expected, rtol=1e-9, atol=1e-11)
    # Nothing the caller had changes: weights, running statistics, the layers' own code.
    assert all(torch.equal(state[k], v) for k, v in backbone.state_dict().items())
    assert not any("forward" in vars(m) for m in backbone.modules())


@pytest.mark.parametrize("test_adapt", ["whole", "head"])
@pytest.mark.parametrize("test_bn", ["running", "support"])
def test_baseline_pp_modes_equal_a_hand_written_cosine_head(test_bn, test_adapt, strategy):
    backbone = pretrained_backbone()
    learner = fsl.BaselinePP(
        backbone, IMAGE, N_WAY, inner_lr=LR, test_steps=STEPS, seed=3, test_bn=test_bn,
        test_adapt=test_adapt, strategy=strategy,
    )  # fmt: skip
    assert learner.model.head.scale == 2.0  # Chen et al.'s for a head of ≤ 200 classes
    support_x, support_y, query_x = tasks()
    logits = learner(support_x, support_y, query_x)
    for t in range(len(support_x)):
        expected = hand_adapted_logits(
            learner.model, support_x[t], support_y[t], query_x[t], test_bn, test_adapt, cosine(2.0)
        )
        torch.testing.assert_close(logits[t], expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("test_bn", ["running", "transductive", "support"])
@pytest.mark.parametrize("norm", ["CL2N", "L2N", "UN"])
def test_simpleshot_equals_centred_normalised_distances_by_hand(norm, test_bn):
    backbone = pretrained_backbone()
    params, buffers = dict(backbone.named_parameters()), dict(backbone.named_buffers())
    params = {f"backbone.{k}": v.detach() for k, v in params.items()}
    buffers = {f"backbone.{k}": v for k, v in buffers.items()}
    base = torch.rand(10, *IMAGE, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    base_mean = hand_features(params, buffers, base, "running").mean(0)
    torch.testing.assert_close(fsl.mean_embedding(backbone, base, batch_size=3), base_mean)
    learner = fsl.SimpleShot(backbone, base_mean, norm=norm, test_bn=test_bn)
    support_x, support_y, query_x = tasks()
    logits = learner(support_x, support_y, query_x)
    for t in range(len(support_x)):
        if test_bn == "support":
            stats = []
            support = hand_features(params, buffers, support_x[t], "batch", record=stats)
            queries = hand_features(params, buffers, query_x[t], "given", stats)
        else:
            mode = "running" if test_bn == "running" else "batch"
            support = hand_features(params, buffers, support_x[t], mode)
            queries = hand_features(params, buffers, query_x[t], mode)
        if norm == "CL2N":
            support, queries = support - base_mean, queries - base_mean
        if norm != "UN":
            support = support / support.norm(dim=1, keepdim=True)
            queries = queries / queries.norm(dim=1, keepdim=True)
        centroids = torch.stack([support[support_y[t] == c].mean(0) for c in range(N_WAY)])
        distances = ((queries[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
        torch.testing.assert_close(logits[t], -distances, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(learner(support_x[t], support_y[t], query_x[t]), logits[t])


def test_the_modes_differ_and_only_transductive_depends_on_the_other_queries():
    backbone = pretrained_backbone()
    support_x, support_y, query_x = (t[0] for t in tasks())
    logits = {}
    for test_bn in fsl.methods.batch_norm_modes.TEST_BN_MODES:
        learner = fsl.FineTune(
            backbone, IMAGE, N_WAY, inner_lr=LR, test_steps=STEPS, test_bn=test_bn
        )
        logits[test_bn] = learner(support_x, support_y, query_x)
        alone = torch.cat([learner(support_x, support_y, q[None]) for q in query_x])
        assert torch.allclose(alone, logits[test_bn]) == (test_bn != "transductive"), test_bn
    assert not torch.allclose(logits["running"], logits["support"])
    assert not torch.allclose(logits["support"], logits["transductive"])


def test_default_modes_leave_the_layers_code_alone():
    from fslearn.methods.batch_norm_modes import normalising

    maml_net = fsl.maml_classifier(N_WAY, IMAGE, hidden_channels=4, seed=0)
    backbone = pretrained_backbone()
    for model, mode in ((maml_net, "transductive"), (backbone, "running")):
        with normalising(model, mode, 6):
            assert not any("forward" in vars(m) for m in model.modules())
        with normalising(model, "support", 6):
            assert all(
                "forward" in vars(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
            )
        assert not any("forward" in vars(m) for m in model.modules())


@pytest.mark.parametrize("learner", ["maml", "finetune"])
def test_head_only_leaves_the_backbone_and_whole_changes_it(learner):
    support_x, support_y, _ = (t[0] for t in tasks())
    if learner == "maml":
        net = fsl.maml_classifier(N_WAY, IMAGE, hidden_channels=4, seed=0).double()

        def make(adapt):
            return fsl.MAML(net, inner_lr=LR, test_steps=STEPS, test_adapt=adapt)

    else:
        backbone = pretrained_backbone()

        def make(adapt):
            return fsl.FineTune(
                backbone, IMAGE, N_WAY, inner_lr=LR, test_steps=STEPS, test_adapt=adapt
            )

    for adapt in ("head", "whole"):
        model = make(adapt)
        start = {k: v.detach().clone() for k, v in model.params().items()}
        adapted = model.adapt(support_x, support_y)
        moved = {k.split(".")[0] for k in start if not torch.equal(adapted[k], start[k])}
        assert moved == ({"head"} if adapt == "head" else {"backbone", "head"}), adapt
        assert all(torch.equal(v, start[k]) for k, v in model.params().items())  # a copy adapts


def test_maml_tests_head_only_or_whole_whatever_its_inner_loop_trained():
    net = fsl.maml_classifier(N_WAY, IMAGE, hidden_channels=4, seed=0).double()
    assert fsl.MAML(net).test_adapt == "whole" and fsl.MAML(net, anil=True).test_adapt == "head"
    whole_trained = fsl.MAML(net, anil=False, test_adapt="head", inner_lr=LR, test_steps=STEPS)
    anil = fsl.MAML(net, anil=True, inner_lr=LR, test_steps=STEPS)
    support_x, support_y, query_x = tasks()
    torch.testing.assert_close(
        whole_trained(support_x, support_y, query_x), anil(support_x, support_y, query_x)
    )
    anil.test_adapt = "whole"
    torch.testing.assert_close(
        anil(support_x, support_y, query_x),
        fsl.MAML(net, inner_lr=LR, test_steps=STEPS)(support_x, support_y, query_x),
    )


def test_predict_normalises_as_the_call_does():
    net = fsl.maml_classifier(N_WAY, IMAGE, hidden_channels=4, seed=0).double()
    maml = fsl.MAML(net, inner_lr=LR, test_steps=STEPS, test_bn="support")
    support_x, support_y, query_x = (t[0] for t in tasks())
    params = maml.adapt(support_x, support_y)
    torch.testing.assert_close(
        maml.predict(params, query_x, support_x=support_x), maml(support_x, support_y, query_x)
    )
    with pytest.raises(ValueError, match=r"test_bn='support' normalises the queries with the "):
        maml.predict(params, query_x)


def test_bad_settings_are_refused_with_the_fix():
    net = fsl.maml_classifier(N_WAY, IMAGE, hidden_channels=4, seed=0)
    with pytest.raises(ValueError, match=r"test_bn must be one of \('transductive', 'running', "):
        fsl.MAML(net, test_bn="batch")
    with pytest.raises(ValueError, match=r"test_bn='running' .* layers \['backbone.0.1', "):
        fsl.MAML(net, test_bn="running")
    with pytest.raises(ValueError, match=r"test_adapt must be 'whole' .* or 'head' .*; got 'all'"):
        fsl.FineTune(pretrained_backbone(), IMAGE, N_WAY, test_adapt="all")
    maml = fsl.MAML(net)
    with pytest.raises(ValueError, match=r"test_bn must be one of"):
        maml.test_bn = None
    assert maml.test_bn == "transductive"
    flat = fsl.MAML(nn.Sequential(nn.Flatten(), nn.Linear(256, 3)))
    with pytest.raises(ValueError, match=r"adapting only the head needs a model with .backbone"):
        flat.test_adapt = "head"


def test_whole_is_the_earlier_spelling_of_test_adapt():
    with pytest.warns(FutureWarning, match=r"FineTune\(whole=True\) is deprecated.*"
                      r"use FineTune\(test_adapt='whole'\)"):  # fmt: skip
        finetune = fsl.FineTune(pretrained_backbone(), IMAGE, N_WAY, whole=True)
    assert finetune.test_adapt == "whole"


def test_evaluate_records_each_learner_s_batch_norm_mode():
    data = labelled_dataset(n_classes=9, n_per_class=6, size=16)
    episodes = fsl.EpisodeSet(data, N_WAY, 1, 2, n_episodes=4, seed=0)
    backbone = fsl.Conv4(1, 4, seed=0)
    net = fsl.maml_classifier(N_WAY, (1, 16, 16), hidden_channels=4, seed=0)
    mean = fsl.mean_embedding(backbone, data)
    learners = {
        "transductive": fsl.MAML(net, test_steps=1),
        "support": fsl.MAML(net, test_steps=1, test_bn="support"),
        "running": fsl.FineTune(backbone, (1, 16, 16), N_WAY, test_steps=1),
        None: fsl.NearestPrototype(),
    }
    for mode, learner in learners.items():
        assert fsl.evaluate(learner, episodes).test_bn == mode
    for mode in ("running", "transductive"):
        assert fsl.evaluate(fsl.SimpleShot(backbone, mean, test_bn=mode), episodes).test_bn == mode
    assert fsl.evaluate(fsl.ProtoNet(backbone), episodes).test_bn == "running"
    within = fsl.evaluate_within_groups(learners["support"], data, N_WAY, 1, 2, 4)
    assert within.overall.test_bn == "support"
    curve = learners["support"].adaptation_curve(episodes, batch_size=2)
    assert [point.test_bn for point in curve] == ["support", "support"]


def test_paired_difference_is_the_mean_and_interval_of_per_episode_differences():
    first = fsl.confidence_interval([0.6, 0.8, 0.7, 0.9])
    second = fsl.confidence_interval([0.5, 0.8, 0.6, 0.6])
    gain = fsl.paired_difference(first, second)
    torch.testing.assert_close(
        gain.per_episode, torch.tensor([0.1, 0.0, 0.1, 0.3], dtype=torch.float64)
    )
    assert gain.mean == pytest.approx(0.125)
    with pytest.raises(ValueError, match=r"the same episodes; got 4 and 2 episodes"):
        fsl.paired_difference(first, fsl.confidence_interval([0.5, 0.6]))


def test_results_json_records_the_batch_norm_mode(tmp_path):
    maml, pretrain = tmp_path / "maml", tmp_path / "pretrain"
    fslearn(
        "train", "maml", *TINY, "--steps", 1, "--meta-batch", 2, "--test-steps", 1, "--out", maml
    )
    fslearn("train", "pretrain", *TINY, "--epochs", 1, "--out", pretrain)
    for out, mode in ((maml, "transductive"), (pretrain, "running")):
        assert json.loads((out / "results.json").read_text())["test_bn"] == mode
        again = fslearn("eval", out / "checkpoint.pt", "--episodes", 2, "--json").stdout
        assert json.loads(again)["test_bn"] == mode
