import pytest
import torch

import fslearn as fsl
from fslearn.data import embedded, glyphs


@pytest.fixture(scope="module")
def full_set():
    """The whole default set, through the user's cache (generated once per machine)."""
    return fsl.load_embedded("all", progress=False)


def test_split_sizes_match_omniglot(full_set):
    background = fsl.load_embedded("background", progress=False)
    evaluation = fsl.load_embedded("evaluation", progress=False)
    assert full_set.n_classes == 1623 and full_set.n_per_class == 20
    assert (background.n_classes, evaluation.n_classes) == (964, 659)
    assert len(set(background.groups)) == 30 and len(set(evaluation.groups)) == 20
    assert not set(background.groups) & set(evaluation.groups)
    assert (
        background.images.shape == (964, 20, 1, 28, 28) and background.images.dtype == torch.uint8
    )
    assert torch.equal(torch.cat([background.images, evaluation.images]), full_set.images)
    assert len(set(full_set.class_names)) == 1623


def test_images_are_ink_on_blank_and_not_empty(full_set):
    images = full_set.images.float() / 255
    ink = images.flatten(2).mean(-1)  # (classes, drawers)
    assert ink.min() > 0.01, "every image has some ink"
    assert ink.max() < 0.5, "ink is the foreground, not the background"
    border = torch.cat(
        [images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], -1
    )
    assert border.mean() < 0.2 * images.mean(), "characters sit inside the canvas"


def test_alphabets_are_order_independent_and_deterministic(full_set):
    sizes = embedded.BACKGROUND_ALPHABET_SIZES + embedded.EVALUATION_ALPHABET_SIZES
    subset = embedded.generate(seed=0, alphabets=[31, 2])
    start_31, start_2 = sum(sizes[:31]), sum(sizes[:2])
    expected = torch.cat(
        [
            full_set.images[start_31 : start_31 + sizes[31]],
            full_set.images[start_2 : start_2 + sizes[2]],
        ]
    )
    assert torch.equal(subset.images, expected)
    assert (
        subset.class_names
        == full_set.class_names[start_31 : start_31 + sizes[31]]
        + full_set.class_names[start_2 : start_2 + sizes[2]]
    )


def test_another_seed_draws_other_alphabets():
    a = embedded.generate(seed=0, alphabets=[0])
    b = embedded.generate(seed=1, alphabets=[0])
    assert a.images.shape == b.images.shape
    assert (a.images.float() - b.images.float()).abs().mean() > 10


@pytest.mark.parametrize("image_size", [84, 105])
def test_larger_renderings_have_the_same_characters(image_size):
    small = embedded.generate(seed=0, alphabets=[5], image_size=28)
    large = embedded.generate(seed=0, alphabets=[5], image_size=image_size)
    assert large.images.shape[-2:] == (image_size, image_size)
    down = torch.nn.functional.interpolate(large.images.flatten(0, 1).float(), size=28, mode="area")
    diff = (down - small.images.flatten(0, 1).float()).abs().mean() / 255
    assert diff < 0.05


def test_pixel_nearest_neighbour_is_far_from_solved(full_set):
    """The set must not be trivial: 5-way 1-shot pixel NN on evaluation characters."""
    evaluation = full_set.images[964:].flatten(2).float() / 255  # (659, 20, 784)
    g = torch.Generator().manual_seed(0)
    correct = total = 0
    for _ in range(300):
        classes = torch.randperm(659, generator=g)[:5]
        drawers = torch.stack([torch.randperm(20, generator=g)[:16] for _ in classes])
        x = evaluation[classes[:, None], drawers]  # (5, 16, 784)
        support, query = x[:, 0], x[:, 1:].reshape(-1, 784)
        predicted = torch.cdist(query, support).argmin(1)
        correct += (predicted == torch.arange(5).repeat_interleave(15)).sum().item()
        total += 75
    accuracy = correct / total
    assert 0.25 < accuracy < 0.6, accuracy


def test_cache_is_written_atomically_and_reused(tmp_cache, monkeypatch):
    calls = []
    real_generate = embedded.generate

    def small_generate(seed, image_size, progress=False):
        calls.append((seed, image_size))
        return real_generate(seed, image_size, alphabets=[0, 40])

    monkeypatch.setattr(embedded, "generate", small_generate)
    first = fsl.load_embedded("all", seed=3, progress=False)
    files = list(tmp_cache.iterdir())
    assert [f.name for f in files] == [embedded._cache_file(3, 28).name]
    assert "seed3" in files[0].name and "28px" in files[0].name
    # Once the file is written, loading the same set must read it: generating would fail.
    monkeypatch.setattr(embedded, "generate", lambda *args, **kwargs: pytest.fail("regenerated"))
    second = fsl.load_embedded("all", seed=3, progress=False)
    assert calls == [(3, 28)]
    assert torch.equal(first.images, second.images) and first.class_names == second.class_names
    monkeypatch.setattr(embedded, "generate", small_generate)
    fsl.load_embedded("all", seed=4, progress=False)
    assert calls == [(3, 28), (4, 28)] and len(list(tmp_cache.iterdir())) == 2


def test_interrupted_cache_write_leaves_nothing(tmp_cache, monkeypatch):
    monkeypatch.setattr(
        embedded,
        "generate",
        lambda seed, size, progress=False: embedded.FewShotDataset(
            torch.zeros(1, 2, 1, 28, 28, dtype=torch.uint8), ["a/c1"], ["a"]
        ),
    )

    def crash(obj, path):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        fsl.load_embedded("all", seed=5, progress=False)
    assert list(tmp_cache.iterdir()) == []


def test_corrupt_cache_is_regenerated_with_a_warning(tmp_cache, monkeypatch):
    monkeypatch.setattr(
        embedded,
        "generate",
        lambda seed, size, progress=False: embedded.FewShotDataset(
            torch.ones(1, 2, 1, 28, 28, dtype=torch.uint8), ["a/c1"], ["a"]
        ),
    )
    path = embedded._cache_file(6, 28)
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable cache"):
        dataset = fsl.load_embedded("all", seed=6, progress=False)
    assert dataset.images.sum() == 2 * 28 * 28
    assert torch.load(path, weights_only=True)["images"].sum() == 2 * 28 * 28


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FSLEARN_CACHE", str(tmp_path / "x"))
    assert fsl.cache_dir() == tmp_path / "x" and (tmp_path / "x").is_dir()
    monkeypatch.delenv("FSLEARN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fsl.cache_dir() == tmp_path / "xdg" / "fslearn"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(split="train"), "split must be one of .*got 'train'"),
        (dict(image_size=32), r"image_size must be one of \(28, 84, 105\); got 32"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fsl.load_embedded(**kwargs)


def test_device_argument(device):
    dataset = fsl.load_embedded("evaluation", progress=False, device=device)
    assert dataset.device.type == device.type


def test_render_matches_brute_force_distance():
    """Oracle: ink from the exact point-to-segment distance, pixel by pixel."""
    g = torch.Generator().manual_seed(0)
    segments = torch.rand(3, 4, 2, 2, generator=g, dtype=torch.float64)
    widths = 0.03 + 0.05 * torch.rand(3, 4, generator=g, dtype=torch.float64)
    size = 12
    got = glyphs.render(segments, widths, size)
    expected = torch.zeros(3, size, size)
    for n in range(3):
        for row in range(size):
            for col in range(size):
                p = torch.tensor([(col + 0.5) / size, (row + 0.5) / size], dtype=torch.float64)
                edges = []
                for (a, b), w in zip(segments[n], widths[n]):
                    t = ((p - a) @ (b - a) / (b - a).square().sum()).clamp(0, 1)
                    edges.append((p - a - t * (b - a)).norm() - w / 2)
                expected[n, row, col] = (0.5 - min(edges) * size).clamp(0, 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_a_horizontal_stroke_inks_its_row():
    segment = torch.tensor([[[[0.1, 0.5], [0.9, 0.5]]]], dtype=torch.float64)
    ink = glyphs.render(segment, torch.tensor([[0.2]], dtype=torch.float64), 10)[0]
    # Row centres 0.45 and 0.55 lie half a pixel inside the pen; 0.35 and 0.65 on the ramp's
    # outer end.
    assert ink[4:6, 1:9].min() > 0.999
    # Round caps: pixel (0.05, 0.45) is 0.05·√2 from the end point, inside the pen by 0.1 - 0.0707.
    assert ink[4, 0].item() == pytest.approx(0.5 + (0.1 - 0.05 * 2**0.5) * 10, abs=1e-5)
    assert ink[:4].max() < 1e-6 and ink[6:].max() < 1e-6
