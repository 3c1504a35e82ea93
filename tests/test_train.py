import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import fslearn as fsl


def _problem(n=96, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(classes, (n,), generator=g)
    return x, y


@pytest.mark.parametrize("n", [1, 2, 7, 10, 99, 100, 101, 1000])
@pytest.mark.parametrize("b", [1, 3, 10, 100, 1000])
@pytest.mark.parametrize("drop_last", [False, True])
def test_iterations_per_epoch_matches_dataloader(n, b, drop_last):
    if drop_last and b > n:
        with pytest.raises(ValueError, match=f"batch_size={b}.*{n} samples"):
            fsl.iterations_per_epoch(n, b, drop_last)
        return
    expected = len(DataLoader(range(n), batch_size=b, drop_last=drop_last))
    assert fsl.iterations_per_epoch(n, b, drop_last) == expected


@pytest.mark.parametrize(
    "n,b,drop_last",
    [
        (10, 3, False),
        (10, 3, True),
        (12, 4, False),
        (12, 4, True),
        (5, 5, False),
        (7, 1, True),
        (6, 10, False),
    ],
)
@pytest.mark.parametrize("epochs", [1, 3])
def test_fit_counts_every_epoch_exactly(n, b, drop_last, epochs):
    x, y = _problem(n)
    h = fsl.fit(
        nn.Linear(5, 3), x, y, batch_size=b, epochs=epochs, drop_last=drop_last, progress=False
    )
    per_epoch = len(DataLoader(range(n), batch_size=b, drop_last=drop_last))
    samples_per_epoch = per_epoch * b if drop_last else n
    assert h.iterations_per_epoch == per_epoch
    assert h.iterations == h.updates == epochs * per_epoch
    assert h.epochs_completed == epochs and h.epoch == epochs
    assert h.samples_seen == epochs * samples_per_epoch
    assert len(h.loss) == len(h.time) == len(h.samples) == h.iterations
    assert h.samples[-1] == h.samples_seen
    assert [r["iterations"] for r in h.epochs] == [per_epoch * (e + 1) for e in range(epochs)]
    assert [r["updates"] for r in h.epochs] == [per_epoch * (e + 1) for e in range(epochs)]


@pytest.mark.parametrize("iterations", [1, 5, 7, 12, 13])
def test_fit_by_iterations_can_stop_mid_epoch(iterations):
    x, y = _problem(30)  # batch 5 -> 6 iterations per epoch
    h = fsl.fit(nn.Linear(5, 3), x, y, batch_size=5, iterations=iterations, progress=False)
    assert h.iterations == h.updates == iterations
    assert h.epochs_completed == iterations // 6
    assert h.epoch == pytest.approx(iterations / 6)
    assert h.samples_seen == 5 * iterations


@pytest.mark.parametrize("n,b,k", [(100, 10, 4), (100, 10, 5), (37, 5, 3), (8, 8, 2)])
def test_accumulation_counts_updates_per_epoch(n, b, k):
    x, y = _problem(n)
    h = fsl.fit(nn.Linear(5, 3), x, y, batch_size=b, epochs=2, accumulate=k, progress=False)
    per_epoch = math.ceil(n / b)
    assert h.iterations == 2 * per_epoch
    assert h.updates == 2 * math.ceil(per_epoch / k)


def test_accumulated_update_equals_one_big_batch():
    x, y = _problem(40)
    big, small = nn.Linear(5, 3), nn.Linear(5, 3)
    small.load_state_dict(big.state_dict())
    fsl.fit(
        big,
        x,
        y,
        batch_size=40,
        epochs=1,
        shuffle=False,
        optimizer=torch.optim.SGD(big.parameters(), lr=0.5),
        progress=False,
    )
    fsl.fit(
        small,
        x,
        y,
        batch_size=10,
        epochs=1,
        shuffle=False,
        accumulate=4,
        optimizer=torch.optim.SGD(small.parameters(), lr=0.5),
        progress=False,
    )
    torch.testing.assert_close(small.weight, big.weight)
    torch.testing.assert_close(small.bias, big.bias)


def test_fit_matches_a_hand_written_sgd_loop(device):
    """Oracle: the same shuffled batches and SGD steps written out by hand."""
    x, y = _problem(50)
    model = nn.Linear(5, 3)
    oracle = nn.Linear(5, 3)
    oracle.load_state_dict(model.state_dict())
    fsl.fit(
        model,
        x,
        y,
        batch_size=8,
        epochs=2,
        seed=3,
        device=device,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.3),
        progress=False,
    )
    oracle.to(device)
    xd, yd = x.to(device), y.to(device)
    g = torch.Generator(device=device).manual_seed(3)
    with torch.no_grad():
        for _ in range(2):
            for index in torch.randperm(50, generator=g, device=device).split(8):
                oracle.zero_grad()
                with torch.enable_grad():
                    F.cross_entropy(oracle(xd[index]), yd[index]).backward()
                for p in oracle.parameters():
                    p -= 0.3 * p.grad
    torch.testing.assert_close(model.weight, oracle.weight)
    torch.testing.assert_close(model.bias, oracle.bias)


def test_fit_is_reproducible_and_leaves_global_rng_alone(device):
    x, y = _problem(64)

    template = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5), nn.Linear(16, 3))

    def run():
        model = copy.deepcopy(template)
        h = fsl.fit(model, x, y, batch_size=16, epochs=2, seed=11, device=device, progress=False)
        return h.loss, [p.detach().cpu() for p in model.parameters()]

    torch.manual_seed(123)
    loss_a, params_a = run()
    after = torch.rand(1)
    torch.manual_seed(123)
    loss_b, params_b = run()
    assert loss_a == loss_b
    for a, b in zip(params_a, params_b):
        torch.testing.assert_close(a, b)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)


def test_fit_trains_where_the_model_is_by_default(device):
    x, y = _problem(32)
    model = nn.Linear(5, 3).to(device)
    h = fsl.fit(model, x, y, batch_size=8, epochs=3, validation=(x, y), progress=False)
    assert model.weight.device.type == device.type
    assert h.epoch_values("val_loss")[-1] < h.epoch_values("val_loss")[0] + 1e-6
    # The last epoch's validation scores the model as fit leaves it: worked out here.
    with torch.no_grad():
        logits = model(x.to(device)).cpu()
    assert h.epochs[-1]["val_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert h.epochs[-1]["val_accuracy"] == (logits.argmax(1) == y).double().mean().item()


def test_fit_scales_uint8_images():
    images = torch.randint(0, 256, (20, 1, 4, 4), dtype=torch.uint8)
    y = torch.randint(2, (20,))
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(16, 2)

        def forward(self, x):
            seen.append(x)
            return self.linear(x.flatten(1))

    fsl.fit(Spy(), images, y, batch_size=20, epochs=1, shuffle=False, progress=False)
    torch.testing.assert_close(seen[0], images.float() / 255)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(batch_size=0, epochs=1), "batch_size must be a positive integer; got 0"),
        (dict(batch_size=-4, epochs=1), "batch_size must be a positive integer; got -4"),
        (dict(batch_size=2.5, epochs=1), "batch_size must be a positive integer; got 2.5"),
        (
            dict(batch_size=4),
            "exactly one of epochs and iterations; got epochs=None, iterations=None",
        ),
        (dict(batch_size=4, epochs=1, iterations=3), "exactly one of epochs and iterations"),
        (dict(batch_size=4, epochs=0), "epochs must be a positive integer; got 0"),
        (dict(batch_size=4, iterations=-1), "iterations must be a positive integer; got -1"),
        (
            dict(batch_size=4, epochs=1, accumulate=0),
            "accumulate must be a positive integer; got 0",
        ),
        (
            dict(batch_size=100, epochs=1, drop_last=True),
            "batch_size=100 is larger than the 10 samples",
        ),
    ],
)
def test_fit_rejects_bad_arguments_with_the_values(kwargs, message):
    x, y = _problem(10)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fsl.fit(nn.Linear(5, 3), x, y, progress=False, **kwargs)


def test_fit_rejects_empty_and_mismatched_data():
    x, y = _problem(10)
    with pytest.raises(ValueError, match="x is empty"):
        fsl.fit(nn.Linear(5, 3), x[:0], y[:0], batch_size=1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="same length; got 10 and 9"):
        fsl.fit(nn.Linear(5, 3), x, y[:9], batch_size=1, epochs=1, progress=False)


def test_fit_reports_a_nan_loss_with_iteration_and_learning_rate():
    x, y = _problem(20)
    x[13] = float("nan")
    model = nn.Linear(5, 3)
    message = (
        r"loss became nan at iteration 14 \(epoch 0.70, batch_size=1, lr=0.1\); "
        "lower the learning rate"
    )
    with pytest.raises(FloatingPointError, match=message):
        fsl.fit(
            model,
            x,
            y,
            batch_size=1,
            epochs=1,
            shuffle=False,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            progress=False,
        )


def test_history_axes_and_epoch_values():
    x, y = _problem(12)
    h = fsl.fit(nn.Linear(5, 3), x, y, batch_size=4, epochs=2, progress=False)
    assert h.axis("iteration") == [1, 2, 3, 4, 5, 6]
    assert h.axis("epoch") == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])
    assert h.axis("samples") == [4, 8, 12, 16, 20, 24]
    assert h.axis("time") == sorted(h.axis("time"))
    assert h.epoch_values("train_loss") == pytest.approx([sum(h.loss[:3]) / 3, sum(h.loss[3:]) / 3])
    with pytest.raises(ValueError, match="got 'minutes'"):
        h.axis("minutes")
    with pytest.raises(KeyError, match="val_loss"):
        h.epoch_values("val_loss")


def test_evaluate_classifier_oracle(device):
    x, y = _problem(50)
    model = nn.Linear(5, 3).to(device)
    got = fsl.evaluate_classifier(model, x, y, batch_size=7)
    with torch.no_grad():
        logits = model(x.to(device))
    assert got["loss"] == pytest.approx(F.cross_entropy(logits, y.to(device)).item(), rel=1e-5)
    assert got["accuracy"] == pytest.approx((logits.argmax(1).cpu() == y).float().mean().item())
