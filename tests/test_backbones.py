import pytest
import torch
from torch import nn

import fslearn as fsl


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
