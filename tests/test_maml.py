"""MAML, ANIL and the fine-tuning baseline, held to per-task autograd loops in float64."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import fslearn as fsl
from fslearn.bench import per_task_meta_loss

from synthetic import labelled_dataset, pattern_dataset

N_WAY, N_SHOT, N_QUERY, N_TASKS = 3, 2, 3, 4
IMAGE = (1, 16, 16)


@pytest.fixture(params=["loop", "vmap"])
def strategy(request) -> str:
    """Each way a batch of tasks can run; the oracle tests hold every one of them."""
    return request.param


def tiny_model(seed=0, dtype=torch.float64):
    return fsl.maml_classifier(N_WAY, IMAGE, hidden_channels=4, seed=seed).to(dtype)


def tasks(seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    support_x = torch.rand(N_TASKS, N_WAY * N_SHOT, *IMAGE, generator=g, dtype=dtype)
    query_x = torch.rand(N_TASKS, N_WAY * N_QUERY, *IMAGE, generator=g, dtype=dtype)
    support_y = torch.arange(N_WAY).repeat_interleave(N_SHOT).expand(N_TASKS, -1)
    query_y = torch.arange(N_WAY).repeat_interleave(N_QUERY).expand(N_TASKS, -1)
    return [t.to(device) for t in (support_x, support_y, query_x, query_y)]


def flat_grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def batched_meta_gradient(maml, batch, **kwargs):
    maml.model.zero_grad()
    loss, _ = maml.meta_loss(*batch, **kwargs)
    loss.backward()
    return loss.detach(), flat_grad(maml.model)


def hand_loop_meta_gradient(model, batch, *, inner_lr, steps, create_graph):
    """A per-task loop written out here, independent of fslearn's reference."""
    support_x, support_y, query_x, query_y = batch
    params = dict(model.named_parameters())
    total = 0
    for t in range(len(support_x)):
        fast = params
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, fast, (support_x[t],)), support_y[t])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph)
            fast = {k: v - inner_lr * g for (k, v), g in zip(fast.items(), grads)}
        total = total + F.cross_entropy(functional_call(model, fast, (query_x[t],)), query_y[t])
    return torch.autograd.grad(total / len(support_x), list(params.values()))


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_meta_gradient_equals_per_task_autograd_loop(steps, strategy):
    model = tiny_model()
    batch = tasks()
    _, vmapped = batched_meta_gradient(
        fsl.MAML(model, strategy=strategy, inner_lr=0.3, inner_steps=steps), batch
    )
    loop = torch.cat(
        [
            g.flatten()
            for g in hand_loop_meta_gradient(
                model, batch, inner_lr=0.3, steps=steps, create_graph=True
            )
        ]
    )
    assert relative_error(vmapped, loop) < 1e-8
    # Dropping the second-order terms changes the gradient: the test can tell them apart.
    first = torch.cat(
        [
            g.flatten()
            for g in hand_loop_meta_gradient(
                model, batch, inner_lr=0.3, steps=steps, create_graph=False
            )
        ]
    )
    assert relative_error(first, loop) > 1e-4


@pytest.mark.parametrize("steps", [1, 2])
def test_first_order_equals_loop_without_create_graph(steps, strategy):
    model = tiny_model()
    batch = tasks()
    _, vmapped = batched_meta_gradient(
        fsl.MAML(model, strategy=strategy, inner_lr=0.3, inner_steps=steps, first_order=True), batch
    )
    loop = torch.cat(
        [
            g.flatten()
            for g in hand_loop_meta_gradient(
                model, batch, inner_lr=0.3, steps=steps, create_graph=False
            )
        ]
    )
    assert relative_error(vmapped, loop) < 1e-8


@pytest.mark.parametrize("first_order", [False, True])
def test_library_reference_loop_matches_batched_maml(first_order, strategy):
    model = tiny_model()
    batch = tasks(seed=3)
    loss, vmapped = batched_meta_gradient(
        fsl.MAML(model, strategy=strategy, inner_lr=0.2, inner_steps=2, first_order=first_order),
        batch,
    )
    model.zero_grad()
    reference_loss = per_task_meta_loss(
        model, *batch, inner_lr=0.2, steps=2, first_order=first_order
    )
    torch.testing.assert_close(reference_loss, loss, rtol=1e-12, atol=0)
    assert relative_error(vmapped, flat_grad(model)) < 1e-8


def test_zero_inner_steps_is_ordinary_training(strategy):
    model = tiny_model()
    support_x, support_y, query_x, query_y = tasks()
    loss, vmapped = batched_meta_gradient(
        fsl.MAML(model, strategy=strategy, inner_steps=0), (support_x, support_y, query_x, query_y)
    )
    model.zero_grad()
    # Per-task batch statistics: the plain loss is the mean over tasks of each task's batch.
    plain = torch.stack(
        [F.cross_entropy(model(query_x[t]), query_y[t]) for t in range(N_TASKS)]
    ).mean()
    plain.backward()
    torch.testing.assert_close(loss, plain.detach(), rtol=1e-12, atol=0)
    assert relative_error(vmapped, flat_grad(model)) < 1e-10


def test_anil_adapts_only_the_head(strategy):
    model = tiny_model()
    maml = fsl.MAML(model, strategy=strategy, inner_lr=0.5, anil=True, test_steps=3)
    support_x, support_y, _, _ = tasks()
    adapted = maml.adapt(support_x[0], support_y[0])
    for name, value in model.named_parameters():
        changed = not torch.equal(adapted[name], value.detach())
        assert changed == name.startswith("head."), name


def test_anil_meta_gradient_equals_loop_over_head_only(strategy):
    model = tiny_model()
    batch = tasks(seed=5)
    support_x, support_y, query_x, query_y = batch
    _, vmapped = batched_meta_gradient(
        fsl.MAML(model, strategy=strategy, inner_lr=0.3, inner_steps=2, anil=True), batch
    )
    params = dict(model.named_parameters())
    head = {k: v for k, v in params.items() if k.startswith("head.")}
    total = 0
    for t in range(N_TASKS):
        fast = dict(head)
        for _ in range(2):
            loss = F.cross_entropy(
                functional_call(model, {**params, **fast}, (support_x[t],)), support_y[t]
            )
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {k: v - 0.3 * g for (k, v), g in zip(fast.items(), grads)}
        total = total + F.cross_entropy(
            functional_call(model, {**params, **fast}, (query_x[t],)), query_y[t]
        )
    loop = torch.autograd.grad(total / N_TASKS, list(params.values()))
    assert relative_error(vmapped, torch.cat([g.flatten() for g in loop])) < 1e-8


def test_step_weights_give_the_weighted_sum_of_per_step_query_losses(strategy):
    model = tiny_model()
    batch = tasks()
    maml = fsl.MAML(model, strategy=strategy, inner_lr=0.3, inner_steps=2)
    _, metrics = maml.meta_loss(*batch, record_steps=True)
    weights = torch.tensor([0.25, 0.75], dtype=torch.float64)
    weighted, _ = maml.meta_loss(*batch, step_weights=weights)
    expected = 0.25 * metrics["query_loss_1"] + 0.75 * metrics["query_loss_2"]
    torch.testing.assert_close(weighted.detach(), expected, rtol=1e-10, atol=0)
    last_only, _ = maml.meta_loss(
        *batch, step_weights=torch.tensor([0.0, 1.0], dtype=torch.float64)
    )
    torch.testing.assert_close(last_only.detach(), metrics["query_loss_2"], rtol=1e-10, atol=0)
    # Recorded step-0 loss is the unadapted model's.
    zero, _ = fsl.MAML(model, strategy=strategy, inner_steps=0).meta_loss(*batch)
    torch.testing.assert_close(metrics["query_loss_0"], zero.detach(), rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match=r"step_weights must have shape \(steps,\) = \(2,\)"):
        maml.meta_loss(*batch, step_weights=torch.ones(3, dtype=torch.float64))


def test_learner_is_invariant_to_support_order(strategy):
    model = tiny_model()
    maml = fsl.MAML(model, strategy=strategy, inner_lr=0.4, test_steps=3)
    support_x, support_y, query_x, _ = tasks()
    order = torch.randperm(N_WAY * N_SHOT, generator=torch.Generator().manual_seed(1))
    a = maml(support_x[0], support_y[0], query_x[0])
    b = maml(support_x[0][order], support_y[0][order], query_x[0])
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_call_shape_single_and_batched_agree_and_adapt_predict_match(strategy):
    model = tiny_model()
    maml = fsl.MAML(model, strategy=strategy, inner_lr=0.4, test_steps=2)
    support_x, support_y, query_x, _ = tasks()
    batched = maml(support_x, support_y, query_x)
    assert batched.shape == (N_TASKS, N_WAY * N_QUERY, N_WAY)
    for t in range(N_TASKS):
        single = maml(support_x[t], support_y[t], query_x[t])
        torch.testing.assert_close(batched[t], single, rtol=1e-10, atol=1e-12)
        params = maml.adapt(support_x[t], support_y[t])
        torch.testing.assert_close(maml.predict(params, query_x[t]), single, rtol=1e-10, atol=1e-12)
    # Test-time adaptation works under no_grad (fsl.evaluate runs learners there).
    with torch.no_grad():
        torch.testing.assert_close(maml(support_x, support_y, query_x), batched)


def test_step_logits_start_at_the_unadapted_model(strategy):
    model = tiny_model()
    maml = fsl.MAML(model, strategy=strategy, inner_lr=0.4, test_steps=2)
    support_x, support_y, query_x, _ = tasks()
    logits = maml.step_logits(support_x[0], support_y[0], query_x[0])
    assert len(logits) == 3
    torch.testing.assert_close(logits[0], model(query_x[0]).detach())
    torch.testing.assert_close(logits[-1], maml(support_x[0], support_y[0], query_x[0]))


def test_batch_norm_that_cannot_serve_maml_is_refused():
    tracked = fsl.Classifier(fsl.Conv4(1, 4), IMAGE, N_WAY)
    with pytest.raises(ValueError, match="track running statistics.*track_running_stats=False"):
        fsl.MAML(tracked)


def test_fused_batch_norm_refused_for_second_order_only():
    class Body(nn.Sequential):
        def embedding_dim(self, image_shape):
            return 4 * 14 * 14

    body = Body(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten())
    model = fsl.Classifier(body, IMAGE, N_WAY)
    with pytest.raises(ValueError, match="wrong second derivatives.*TaskBatchNorm2d"):
        fsl.MAML(model)
    fsl.MAML(model, first_order=True)


def test_task_batch_norm_equals_torch_batch_norm_without_running_stats():
    norm = fsl.TaskBatchNorm2d(5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(7, 5, 6, 6, dtype=torch.float64)
    expected = F.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.1, norm.eps)
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(norm.eval()(x), expected)
    assert list(norm.buffers()) == []  # no running statistics to carry between tasks


def test_labels_beyond_the_head_are_an_error():
    maml = fsl.MAML(tiny_model())
    support_x, _, query_x, _ = tasks()
    with pytest.raises(
        ValueError, match="support labels go up to 4 but the model's head has 3 outputs"
    ):
        maml(support_x[0][:5], torch.arange(5), query_x[0])


def test_diverging_adaptation_is_an_error():
    maml = fsl.MAML(tiny_model(), inner_lr=0.4, test_steps=3)
    support_x, support_y, query_x, _ = tasks()
    support_x[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite after 3 steps with inner_lr=0.4"):
        maml(support_x[0], support_y[0], query_x[0])


def test_bad_arguments_name_the_values():
    with pytest.raises(ValueError, match="inner_lr must be > 0; got -1"):
        fsl.MAML(tiny_model(), inner_lr=-1)
    with pytest.raises(ValueError, match="inner_steps"):
        fsl.MAML(tiny_model(), inner_steps=-2)
    with pytest.raises(ValueError, match=r"sampler.sample_tasks\(T\)"):
        fsl.MAML(tiny_model()).meta_loss(*(t[0] for t in tasks()))
    with pytest.raises(ValueError, match=".backbone and .head"):
        fsl.MAML(nn.Sequential(nn.Flatten(), nn.Linear(256, 3)), anil=True)


def test_maml_learns_on_every_device(device):
    """Meta-training on random patterns beats chance by far on unseen patterns, on CPU and on "
    "CUDA."""
    patterns = pattern_dataset(n_classes=16, n_per_class=10)
    train = patterns.select(range(10)).to(device)
    test = fsl.EpisodeSet(patterns.select(range(10, 16)), 3, 1, 4, 30, seed=0)
    maml, history = fsl.train_maml(
        train,
        n_way=3,
        n_shot=1,
        n_query=4,
        meta_batch=4,
        steps=30,
        hidden_channels=8,
        rotate=False,
        progress=False,
        record_steps=True,
        seed=0,
    )
    assert fsl.model_device(maml).type == torch.device(device).type
    assert history.steps == 30 and history.episodes == 120
    assert set(history.metrics) == {"accuracy", "query_loss_0", "query_loss_1"}
    accuracy = fsl.evaluate(maml, [episode.to(device) for episode in test])
    assert accuracy.mean > 0.6, accuracy


def test_maml_training_is_reproducible():
    train = labelled_dataset(n_classes=6, n_per_class=5, size=16)

    def run():
        maml, history = fsl.train_maml(
            train,
            n_way=3,
            n_shot=1,
            n_query=2,
            meta_batch=2,
            steps=3,
            hidden_channels=4,
            progress=False,
            seed=7,
        )
        return torch.cat([p.detach().flatten() for p in maml.parameters()]), history.loss

    (w1, l1), (w2, l2) = run(), run()
    assert torch.equal(w1, w2) and l1 == l2


def test_finetune_baseline_fits_the_support_set_and_keeps_the_backbone(strategy):
    patterns = pattern_dataset(n_classes=10)
    classifier, _ = fsl.train_pretrained(
        patterns.select(range(7)), epochs=3, batch_size=10, hidden_channels=8, progress=False
    )
    backbone = classifier.backbone
    finetune = fsl.FineTune(backbone, IMAGE, N_WAY, inner_lr=1.0, test_steps=50, strategy=strategy)
    episode = fsl.EpisodeSampler(
        patterns.select(range(7, 10)), N_WAY, N_SHOT, N_QUERY, seed=0
    ).sample()
    support_x, support_y = episode.support_x, episode.support_y
    before = [p.detach().clone() for p in backbone.parameters()]
    logits = finetune.step_logits(support_x, support_y, support_x)
    # A zero head scores every class the same before the first step.
    assert torch.count_nonzero(logits[0]) == 0
    # 50 steps of logistic regression on 6 support images classify them all.
    assert (logits[-1].argmax(-1) == support_y).all()
    assert all(torch.equal(a, b) for a, b in zip(before, backbone.parameters()))
    assert not backbone.training and not finetune.train().model.backbone.training


def test_finetune_head_only_is_logistic_regression_on_frozen_features(strategy):
    backbone = fsl.Conv4(1, 4, seed=0).double().eval()
    finetune = fsl.FineTune(backbone, IMAGE, N_WAY, inner_lr=0.3, test_steps=5, strategy=strategy)
    support_x, support_y, query_x, _ = tasks()
    features = backbone(support_x[0]).detach()
    head = nn.Linear(features.shape[1], N_WAY).double()
    nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.3)
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(head(features), support_y[0]).backward()
        optimizer.step()
    expected = head(backbone(query_x[0])).detach()
    torch.testing.assert_close(finetune(support_x[0], support_y[0], query_x[0]), expected)


def test_pretrained_backbone_and_adaptation_curve(device, strategy):
    train = labelled_dataset(n_classes=8, n_per_class=6, size=16).to(device)
    classifier, history = fsl.train_pretrained(
        train, epochs=2, batch_size=16, hidden_channels=4, progress=False
    )
    assert classifier.head.out_features == 8 and history.epoch == 2
    finetune = fsl.FineTune(
        classifier.backbone, train.image_shape, 4, inner_lr=0.5, test_steps=3, strategy=strategy
    )
    episodes = fsl.EpisodeSet(train, 4, 1, 2, n_episodes=6, seed=0)
    curve = finetune.adaptation_curve(episodes, batch_size=4)
    assert len(curve) == 4 and all(a.n == 6 for a in curve)
    assert curve[0].mean == pytest.approx(0.25)  # zero head: every query gets class 0
    batched = fsl.evaluate(finetune, episodes, batch_size=4)
    single = fsl.evaluate(finetune, episodes)
    assert batched.mean == pytest.approx(single.mean) == pytest.approx(curve[-1].mean)


def test_auto_strategy_is_the_loop_on_a_cpu_and_vmap_on_a_gpu():
    from fslearn.methods.strategies import resolve_strategy

    assert resolve_strategy("auto", "cpu") == "loop"
    assert resolve_strategy("auto", torch.device("cuda", 0)) == "vmap"
    assert resolve_strategy("vmap", "cpu") == "vmap" and resolve_strategy("loop", "cuda") == "loop"
    maml = fsl.MAML(tiny_model())
    assert maml.strategy == "auto" and maml.strategy_for("cpu") == "loop"
    assert "strategy='auto'" in repr(maml)
    with pytest.raises(
        ValueError, match=r"strategy must be one of \('auto', 'loop', 'vmap'\); got"
    ):
        fsl.MAML(tiny_model(), strategy="batched")


def test_the_loop_uses_torch_s_batch_norm_kernel_and_its_second_derivatives_are_exact():
    from fslearn.models.task_batch_norm import native_batch_norm

    norm = fsl.TaskBatchNorm2d(3).double()
    nn.init.normal_(norm.weight)
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    composite = norm(x)
    with native_batch_norm():
        native = norm(x)
    torch.testing.assert_close(native, composite)
    assert native.grad_fn.name() != composite.grad_fn.name()  # another kernel, same numbers
    with native_batch_norm():
        assert torch.autograd.gradgradcheck(norm, (x,))


def test_loop_and_vmap_give_the_same_meta_gradient_in_float32():
    batch = tasks(seed=5, dtype=torch.float32)
    grads = {}
    for strategy in ("loop", "vmap"):
        model = tiny_model(dtype=torch.float32)
        _, grads[strategy] = batched_meta_gradient(
            fsl.MAML(model, inner_lr=0.3, inner_steps=2, strategy=strategy), batch
        )
    assert relative_error(grads["loop"], grads["vmap"]) < 1e-5
