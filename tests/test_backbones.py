import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import fslearn as fsl

from synthetic import pattern_dataset


@pytest.mark.parametrize(
    "shape,hidden,dim",
    [
        ((1, 28, 28), 64, 64),
        ((3, 84, 84), 64, 1600),
        ((3, 84, 84), 32, 800),
        ((1, 105, 105), 64, 64 * 6 * 6),
        ((1, 16, 16), 8, 8),
        ((1, 28, 60), 64, 64 * 3),
    ],
)
def test_conv4_embedding_dim_matches_forward(shape, hidden, dim, device):
    net = fsl.Conv4(shape[0], hidden, seed=0).to(device)
    assert net.embedding_dim(shape) == dim
    out = net(torch.zeros(2, *shape, device=device))
    assert out.shape == (2, dim)


def test_conv4_is_four_conv_bn_relu_pool_blocks():
    net = fsl.Conv4(1, 64)
    blocks = list(net)[:4]
    assert isinstance(list(net)[4], nn.Flatten) and len(net) == 5
    for block, c_in in zip(blocks, (1, 64, 64, 64)):
        conv, bn, relu, pool = block
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (
            c_in,
            64,
            (3, 3),
            (1, 1),
        )
        assert isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
        assert isinstance(pool, nn.MaxPool2d) and pool.kernel_size == 2
    expected = sum(9 * c_in * 64 + 64 + 2 * 64 for c_in in (1, 64, 64, 64))
    assert sum(p.numel() for p in net.parameters()) == expected


def test_conv4_oracle_against_functional_ops():
    net = fsl.Conv4(1, 8, seed=0).eval()
    x = torch.rand(3, 1, 28, 28)
    h = x
    for conv, bn, _, _ in list(net)[:4]:
        h = torch.nn.functional.conv2d(h, conv.weight, conv.bias, padding=1)
        h = (h - bn.running_mean[:, None, None]) / torch.sqrt(
            bn.running_var[:, None, None] + bn.eps
        )
        h = h * bn.weight[:, None, None] + bn.bias[:, None, None]
        h = torch.nn.functional.max_pool2d(h.relu(), 2)
    torch.testing.assert_close(net(x), h.flatten(1))


def test_seed_makes_initialisation_reproducible_without_touching_global_rng():
    torch.manual_seed(0)
    a = fsl.Conv4(seed=7)
    after = torch.rand(1)
    torch.manual_seed(0)
    b = fsl.Conv4(seed=7)
    assert torch.equal(torch.rand(1), after)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    c = fsl.Conv4(seed=8)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_without_running_stats_batch_norm_keeps_no_buffers():
    net = fsl.Conv4(track_running_stats=False)
    assert not any(
        name.endswith(("running_mean", "running_var")) for name, _ in net.named_buffers()
    )
    net.eval()
    x = torch.rand(4, 1, 28, 28)
    # Batch statistics are used even in eval mode, so the output depends on the batch.
    assert not torch.allclose(net(x)[:1], net(x[:1]))


@pytest.mark.parametrize(
    "shape,message",
    [
        ((2, 3, 28, 28), r"built for 1-channel images but got 3 channels .*in_channels=3"),
        ((2, 1, 15, 28), r"at least 16×16 .*got 15×28"),
        ((1, 28, 28), r"batch of images \(B, C, H, W\); got shape \(1, 28, 28\)"),
    ],
)
def test_conv4_rejects_inputs_it_cannot_take(shape, message):
    with pytest.raises(ValueError, match=message):
        fsl.Conv4(1)(torch.zeros(shape))


def test_conv4_rejects_bad_widths():
    with pytest.raises(ValueError, match="in_channels must be a positive integer; got 0"):
        fsl.Conv4(0, 64)
    with pytest.raises(ValueError, match="hidden_channels must be a positive integer; got 2.5"):
        fsl.Conv4(1, 2.5)


def test_classifier_shapes_and_errors(device):
    model = fsl.Classifier(fsl.Conv4(3, 32), (3, 84, 84), 5, seed=0).to(device)
    assert model.head.in_features == 800
    assert model(torch.zeros(4, 3, 84, 84, device=device)).shape == (4, 5)
    with pytest.raises(ValueError, match="n_classes must be a positive integer; got 0"):
        fsl.Classifier(fsl.Conv4(), (1, 28, 28), 0)
    with pytest.raises(ValueError, match="at least 16×16"):
        fsl.Classifier(fsl.Conv4(), (1, 8, 8), 5)


def test_conv4_trains_on_every_device(device):
    """A tiny end-to-end run: the loss falls on separable images."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=g) * 0.1
    y = torch.arange(64) % 2
    x[y == 1, :, :14] += 0.8  # class 1: bright top half
    model = fsl.Classifier(fsl.Conv4(1, 16, seed=0), (1, 28, 28), 2, seed=0).to(device)
    history = fsl.fit(model, x, y, batch_size=16, epochs=5, validation=(x, y), progress=False)
    assert history.epochs[-1]["val_accuracy"] == 1.0
    assert history.epoch_values("train_loss")[-1] < history.epoch_values("train_loss")[0]


def test_conv4_slices_are_plain_sequentials():
    net = fsl.Conv4(1, 8, seed=0)
    first_two = net[:2]
    assert isinstance(first_two, nn.Sequential) and len(first_two) == 2
    assert first_two(torch.zeros(1, 1, 28, 28)).shape == (1, 8, 7, 7)
    assert isinstance(net[0], nn.Sequential)


# ResNet-12 and the backbone registry.

SMALL = (4, 6, 8, 10)


def test_resnet12_embeds_any_image_from_16_pixels_into_its_last_width(device):
    for shape in [(3, 84, 84), (1, 28, 28), (3, 16, 20)]:
        net = fsl.ResNet12(shape[0], SMALL, seed=0).to(device)
        assert net.feature_shape(shape) == (10, shape[1] // 16, shape[2] // 16)
        assert net.embedding_dim(shape) == 10
        assert net(torch.rand(3, *shape, device=device)).shape == (3, 10)
    standard = fsl.ResNet12()
    assert standard.embedding_dim((3, 84, 84)) == 640
    assert standard.feature_shape((3, 84, 84)) == (640, 5, 5)  # Lee et al.'s 5×5 maps


def test_resnet12_has_the_standard_networks_parameter_count():
    def block(c_in, c):
        convs = 9 * c_in * c + 2 * 9 * c * c  # three 3×3 convolutions, no bias
        shortcut = c_in * c  # the 1×1 convolution, no bias
        return convs + shortcut + 4 * 2 * c  # four batch norms, a scale and a shift each

    widths = (64, 160, 320, 640)
    expected = sum(block(c_in, c) for c_in, c in zip((3, *widths[:-1]), widths))
    assert expected == 12_424_320
    assert sum(p.numel() for p in fsl.ResNet12(3, widths).parameters()) == expected


def test_resnet12_block_oracle_against_functional_ops():
    net = fsl.ResNet12(2, SMALL, seed=0).double().eval()
    for norm in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        nn.init.uniform_(norm.running_mean, -0.5, 0.5)
        nn.init.uniform_(norm.running_var, 0.5, 2.0)
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -0.5, 0.5)
    x = torch.rand(3, 2, 32, 32, dtype=torch.float64)

    def bn(h, norm):
        return F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias)

    h = x
    for block in net.blocks:
        out = F.leaky_relu(bn(F.conv2d(h, block.conv1.weight, padding=1), block.bn1), 0.1)
        out = F.leaky_relu(bn(F.conv2d(out, block.conv2.weight, padding=1), block.bn2), 0.1)
        out = bn(F.conv2d(out, block.conv3.weight, padding=1), block.bn3)
        conv, norm = block.shortcut
        assert conv.kernel_size == (1, 1) and conv.bias is None and block.conv1.bias is None
        h = F.max_pool2d(F.leaky_relu(out + bn(F.conv2d(h, conv.weight), norm), 0.1), 2)
    assert h.shape == (3, 10, 2, 2)
    torch.testing.assert_close(net(x), h.mean(dim=(2, 3)))


def test_resnet12_seed_and_per_task_batch_norm():
    a, b = fsl.ResNet12(1, SMALL, seed=3), fsl.ResNet12(1, SMALL, seed=3)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    task = fsl.ResNet12(1, SMALL, track_running_stats=False, seed=3)
    norms = [m for m in task.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 16 and all(isinstance(m, fsl.TaskBatchNorm2d) for m in norms)
    assert list(task.buffers()) == []
    fsl.check_batch_norm(task, second_order=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(channels=(8, 8, 8)), "four widths"),
        (dict(channels=(8, 8, 0, 8)), r"channels\[2\] must be a positive integer; got 0"),
        (dict(channels="wide"), "four block widths"),
        (dict(in_channels=0), "in_channels must be a positive integer"),
    ],
)
def test_resnet12_rejects_bad_widths(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fsl.ResNet12(**kwargs)


def test_resnet12_rejects_inputs_it_cannot_take():
    net = fsl.ResNet12(3, SMALL)
    with pytest.raises(ValueError, match=r"at least 16×16.*got 12×12"):
        net(torch.zeros(1, 3, 12, 12))
    with pytest.raises(ValueError, match="built for 3-channel images but got 1"):
        net(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"batch of images \(B, C, H, W\)"):
        net(torch.zeros(3, 28, 28))


def test_build_backbone_builds_the_built_in_networks():
    built = fsl.build_backbone("resnet12", 3, channels=[4, 6, 8, 10], seed=1)
    direct = fsl.ResNet12(3, SMALL, seed=1)
    assert isinstance(built, fsl.ResNet12) and built.channels == SMALL
    torch.testing.assert_close(built.state_dict(), direct.state_dict())
    conv4 = fsl.build_backbone("conv4", 1, hidden_channels=8, seed=1, track_running_stats=False)
    torch.testing.assert_close(
        conv4.state_dict(), fsl.Conv4(1, 8, track_running_stats=False, seed=1).state_dict()
    )
    assert fsl.backbone_names()[:2] == ("conv4", "resnet12")


def tiny_factory(in_channels, *, seed, track_running_stats, width=4):
    """A user's own backbone: no ``embedding_dim``, pooled to 2×2."""
    with fsl.seeded(seed):
        return nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width) if track_running_stats else fsl.TaskBatchNorm2d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )


@pytest.fixture
def registered(monkeypatch):
    """``tiny`` registered for this test only."""
    from fslearn.models import registry

    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    fsl.register_backbone("tiny", tiny_factory)
    return "tiny"


def test_registering_refuses_built_in_names_and_what_is_not_a_factory(registered):
    with pytest.raises(ValueError, match="'resnet12' is fslearn's built-in backbone"):
        fsl.register_backbone("resnet12", tiny_factory)
    with pytest.raises(ValueError, match=r"takes a factory .* not a network \(Conv2d\)"):
        fsl.register_backbone("mine", nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="must be callable"):
        fsl.register_backbone("mine", "conv4")
    with pytest.raises(ValueError, match="non-empty string"):
        fsl.register_backbone("", tiny_factory)
    assert fsl.backbone_names() == ("conv4", "resnet12", "tiny")
    with pytest.raises(ValueError, match=r"backbone 'tiny' takes the options \['width'\]"):
        fsl.build_backbone("tiny", 1, depth=3)
    with pytest.raises(ValueError, match=r"may not set \['seed'\]"):
        fsl.maml_classifier(N_WAY, IMAGE, backbone="tiny", backbone_options={"seed": 1})
    with pytest.raises(ValueError, match="cannot be saved with the checkpoint"):
        fsl.build_backbone("tiny", 1, width=torch.tensor(3))


def test_an_unknown_backbone_says_how_to_register_it():
    with pytest.raises(fsl.UnknownBackboneError) as error:
        fsl.build_backbone("vgg", 3)
    assert str(error.value) == (
        "unknown backbone 'vgg'; registered: ['conv4', 'resnet12']. Register its factory first: "
        "fsl.register_backbone('vgg', factory), where factory(in_channels, *, seed, "
        "track_running_stats, **options) returns the nn.Module"
    )
    spec = {"method": "protonet", "image_shape": [1, 16, 16], "distance": "euclidean"}
    with pytest.raises(fsl.UnknownBackboneError, match="unknown backbone 'vgg'"):
        fsl.build_learner({**spec, "backbone": "vgg"})


def test_hidden_channels_is_conv4s_width_only():
    with pytest.raises(ValueError, match="hidden_channels=32 is Conv4's width and does not apply"):
        fsl.maml_classifier(5, (3, 84, 84), 32, backbone="resnet12")
    with pytest.raises(ValueError, match="hidden_channels=32 is Conv4's width"):
        fsl.train_protonet(pattern_dataset(), hidden_channels=32, backbone="resnet12", steps=1)


N_WAY, N_SHOT, N_QUERY = 3, 2, 2
IMAGE = (1, 16, 16)


def one_task(seed=0, n_tasks=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    lead = () if n_tasks is None else (n_tasks,)
    support_x = torch.rand(*lead, N_WAY * N_SHOT, *IMAGE, generator=g, dtype=dtype)
    query_x = torch.rand(*lead, N_WAY * N_QUERY, *IMAGE, generator=g, dtype=dtype)
    support_y = torch.arange(N_WAY).repeat_interleave(N_SHOT).expand(*lead, -1)
    query_y = torch.arange(N_WAY).repeat_interleave(N_QUERY).expand(*lead, -1)
    return support_x, support_y, query_x, query_y


def test_a_users_own_module_serves_every_learner():
    body = tiny_factory(1, seed=0, track_running_stats=True, width=5)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    support_x, support_y, query_x, _ = one_task()
    learners = {
        "protonet": fsl.ProtoNet(body),
        "siamese": fsl.SiameseNet(body, 20, "koch", seed=0),
        "triplet": fsl.NearestNeighbourLearner(body, "nearest-support"),
        "finetune": fsl.FineTune(body, IMAGE, N_WAY),
        "baseline++": fsl.BaselinePP(body, IMAGE, N_WAY),
    }
    # The embedding's length, 5 × 2 × 2, measured without moving the running statistics.
    assert learners["finetune"].model.head.in_features == 20
    torch.testing.assert_close(body.state_dict(), before)
    for name, learner in learners.items():
        logits = learner.eval()(support_x, support_y, query_x)
        assert logits.shape == (N_WAY * N_QUERY, N_WAY) and logits.isfinite().all(), name
    prototypes = body(support_x).reshape(N_WAY, N_SHOT, -1).mean(1)
    torch.testing.assert_close(
        learners["protonet"](support_x, support_y, query_x),
        -(torch.cdist(body(query_x), prototypes) ** 2),
    )
    task_body = tiny_factory(1, seed=0, track_running_stats=False, width=5)
    maml = fsl.MAML(fsl.Classifier(task_body, IMAGE, N_WAY, seed=0), inner_lr=0.1)
    loss, _ = maml.meta_loss(*one_task(n_tasks=2))
    loss.backward()
    assert all(p.grad is not None for p in maml.parameters())
    assert maml(support_x, support_y, query_x).shape == (N_WAY * N_QUERY, N_WAY)


def test_a_backbone_without_a_flat_embedding_is_named():
    with pytest.raises(ValueError, match=r"gives \(2, 4, 16, 16\) for images of shape"):
        fsl.Classifier(nn.Conv2d(1, 4, 3, padding=1), IMAGE, 3)


RECIPES = {
    "protonet": (fsl.train_protonet, dict(n_way=3, n_shot=1, n_query=2, steps=2)),
    "siamese": (fsl.train_siamese, dict(n_pairs=8, steps=2)),
    "triplet": (fsl.train_triplet, dict(n_classes=4, n_per_class=2, steps=2)),
    "maml": (fsl.train_maml, dict(n_way=3, n_shot=1, n_query=2, meta_batch=2, steps=2)),
    "pretrain": (fsl.train_pretrained, dict(epochs=1, batch_size=40)),
}


@pytest.mark.parametrize("method", list(RECIPES))
def test_a_registered_backbone_round_trips_through_a_checkpoint(method, registered, tmp_path):
    train, options = RECIPES[method]
    path = tmp_path / "c.pt"
    learner, _ = train(
        pattern_dataset(),
        **options,
        backbone="tiny",
        backbone_options={"width": 3},
        progress=False,
        checkpoint=fsl.Checkpoint(path),
    )
    spec = fsl.read_checkpoint(path)["spec"]
    assert spec["backbone"] == "tiny" and spec["backbone_options"] == {"width": 3}
    assert "hidden_channels" not in spec
    loaded = fsl.load_learner(path, n_way=N_WAY)
    support_x, support_y, query_x, _ = one_task(seed=1)
    if method == "pretrain":
        trained, restored = learner.backbone.eval(), loaded.model.backbone
        torch.testing.assert_close(restored(query_x), trained(query_x))
    else:
        expected = learner.eval()(support_x, support_y, query_x)
        torch.testing.assert_close(loaded(support_x, support_y, query_x), expected)


def test_a_checkpoint_of_an_unregistered_backbone_says_which_factory_to_register(
    registered, tmp_path, monkeypatch
):
    from fslearn.models import registry

    path = tmp_path / "c.pt"
    train, options = RECIPES["protonet"]
    train(
        pattern_dataset(),
        **options,
        backbone="tiny",
        progress=False,
        checkpoint=fsl.Checkpoint(path),
    )
    monkeypatch.delitem(registry._FACTORIES, "tiny")  # a new process, which has not registered it
    with pytest.raises(fsl.UnknownBackboneError) as error:
        fsl.load_learner(path)
    assert str(error.value) == (
        f"{path} holds a learner on the backbone 'tiny', which is not registered in this "
        "process (registered: ['conv4', 'resnet12']). Register the factory it was trained with "
        "before loading it: fsl.register_backbone('tiny', factory), then fsl.load_learner"
    )


def test_a_conv4_spec_keeps_the_form_of_earlier_runs(tmp_path):
    path = tmp_path / "c.pt"
    train, options = RECIPES["protonet"]
    train(
        pattern_dataset(),
        **options,
        hidden_channels=4,
        progress=False,
        checkpoint=fsl.Checkpoint(path),
    )
    assert fsl.read_checkpoint(path)["spec"] == {
        "method": "protonet",
        "image_shape": [1, 16, 16],
        "hidden_channels": 4,
        "distance": "euclidean",
    }


def test_resnet12_recipe_records_its_widths_and_resumes_only_with_them(tmp_path):
    path = tmp_path / "c.pt"
    train, options = RECIPES["protonet"]
    small = dict(backbone="resnet12", backbone_options={"channels": (2, 2, 4, 4)})
    train(pattern_dataset(), **options, **small, progress=False, checkpoint=fsl.Checkpoint(path))
    spec = fsl.read_checkpoint(path)["spec"]
    assert spec["backbone"] == "resnet12"
    assert spec["backbone_options"] == {"channels": [2, 2, 4, 4]}
    assert isinstance(fsl.load_learner(path).backbone, fsl.ResNet12)
    with pytest.raises(ValueError, match="saved with backbone_options="):
        train(
            pattern_dataset(),
            **{**options, "steps": 4},
            backbone="resnet12",
            backbone_options={"channels": [2, 2, 4, 8]},
            progress=False,
            checkpoint=fsl.Checkpoint(path, resume=True),
        )


def hand_meta_gradient(model, batch, *, inner_lr, steps, create_graph):
    """MAML's meta-gradient by a per-task loop of plain autograd, each task normalised by its
    own batch statistics (TaskBatchNorm2d's composite path, exact to second order)."""
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
    grads = torch.autograd.grad(total / len(support_x), list(params.values()))
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_maml_on_resnet12_keeps_per_task_statistics_oracle(strategy):
    model = fsl.maml_classifier(
        N_WAY, IMAGE, backbone="resnet12", backbone_options={"channels": [2, 3, 4, 4]}, seed=0
    ).double()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 16 and all(isinstance(m, fsl.TaskBatchNorm2d) for m in norms)
    batch = one_task(seed=2, n_tasks=3, dtype=torch.float64)
    maml = fsl.MAML(model, inner_lr=0.3, inner_steps=2, strategy=strategy)
    loss, _ = maml.meta_loss(*batch)
    loss.backward()
    batched = torch.cat([p.grad.flatten() for p in model.parameters()])
    second = hand_meta_gradient(model, batch, inner_lr=0.3, steps=2, create_graph=True)
    first = hand_meta_gradient(model, batch, inner_lr=0.3, steps=2, create_graph=False)

    def relative(a, b):
        return ((a - b).norm() / b.norm()).item()

    assert relative(batched, second) < 1e-8
    assert relative(first, second) > 1e-4  # the test tells second order from first


def test_fslearn_train_takes_a_backbone_and_eval_reads_it_from_the_spec(tmp_path):
    from fslearn.cli import main

    out = tmp_path / "run"
    small = ["--backbone", "resnet12", "--backbone-options", '{"channels": [2, 2, 4, 4]}']
    common = ["--recipe", "quick", "--steps", "2", "--test-episodes", "2", "--no-progress"]
    assert main(["train", "protonet", *small, *common, "--out", str(out)]) == 0
    spec = fsl.read_checkpoint(out / "checkpoint.pt")["spec"]
    assert (spec["backbone"], spec["backbone_options"]) == ("resnet12", {"channels": [2, 2, 4, 4]})
    assert "hidden_channels" not in spec  # the quick recipe's Conv4 width is dropped
    assert main(["eval", str(out / "checkpoint.pt"), "--episodes", "2", "--no-progress"]) == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--backbone", "resnet12", "--hidden-channels", "8"],
            "--hidden-channels is Conv4's width and does not apply to --backbone resnet12",
        ),
        (["--backbone", "vgg"], "argument --backbone: must be one of conv4, resnet12"),
        (["--backbone-options", "[1]"], "argument --backbone-options: must be a JSON object"),
        (
            ["--backbone", "resnet12", "--backbone-options", '{"width": 3}'],
            "--backbone-options: backbone 'resnet12' takes the options ['channels']; got ['width']",
        ),
    ],
)
def test_fslearn_train_refuses_backbone_options_that_cannot_apply(args, message, tmp_path, capsys):
    from fslearn.cli import main

    out = tmp_path / "run"
    try:
        status = main(["train", "protonet", *args, "--out", str(out)])
    except SystemExit as exit:  # argparse's refusals
        status = exit.code
    err = capsys.readouterr().err
    assert status in (1, 2) and message in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_fslearn_train_takes_a_backbone_registered_before_main(tmp_path):
    from synthetic import fslearn

    prelude = (
        "import fslearn as fsl\nfrom torch import nn\n"
        "fsl.register_backbone('flat', lambda c, *, seed, track_running_stats: "
        "nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * c, 8)))"
    )
    out = tmp_path / "run"
    common = ["--recipe", "quick", "--steps", "2", "--test-episodes", "2", "--no-progress"]
    fslearn("train", "protonet", "--backbone", "flat", *common, "--out", out, prelude=prelude)
    assert fsl.read_checkpoint(out / "checkpoint.pt")["spec"]["backbone"] == "flat"
    result = fslearn("eval", out / "checkpoint.pt", "--episodes", 2, check=False)
    assert result.returncode == 1
    assert "not registered in this process" in result.stderr
    assert "fsl.register_backbone('flat', factory)" in result.stderr
