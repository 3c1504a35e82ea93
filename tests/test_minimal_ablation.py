"""The minimal recipe's ablation: test-time augmentation against views embedded by hand, the
extra classes of its rows, its table against the arithmetic of its rows, and the committed
record against the rows the code runs. ``tests/test_within_groups.py`` runs the benchmark
itself on the real small zips."""

import json

import pytest
import torch

import fslearn as fsl
from fslearn import bench
from fslearn.bench.minimal import _mirrored, _union
from fslearn.training.presets import MINIMAL

from synthetic import labelled_dataset


@pytest.fixture
def backbone():
    torch.manual_seed(0)
    return fsl.Conv4(hidden_channels=8).eval()


def test_averaged_views_is_the_mean_embedding_of_the_image_and_its_distortions(backbone):
    x = torch.rand(6, 1, 28, 28)
    averaged = bench.AveragedViews(backbone, views=3, strength=1.0, seed=4)
    generator = torch.Generator().manual_seed(4)
    views = [x, *(fsl.random_affine(x, 1.0, generator) for _ in range(2))]
    by_hand = torch.stack([backbone(view) for view in views]).mean(0)
    with torch.no_grad():
        assert torch.allclose(averaged(x), by_hand.detach(), atol=1e-6)
        # Distortions of strength 0 are the image itself; one view is the image alone.
        assert torch.allclose(bench.AveragedViews(backbone, 3, 0.0)(x), backbone(x), atol=1e-6)
        assert torch.equal(bench.AveragedViews(backbone, 1, 1.0)(x), backbone(x))
        assert not torch.allclose(averaged(x), backbone(x), atol=1e-3)


def test_reflections_and_extra_classes_are_classes_of_their_own():
    dataset = labelled_dataset(n_classes=5)
    mirrored = _mirrored(dataset)
    assert mirrored.n_classes == 10 and mirrored.n_per_class == dataset.n_per_class
    assert torch.equal(mirrored.images[:5], dataset.images)
    assert torch.equal(mirrored.images[5:], dataset.images.flip(-1))
    assert mirrored.class_names[5:] == [f"{name}@mirror" for name in dataset.class_names]
    assert mirrored.groups == dataset.groups * 2
    fewer = dataset.select(range(3))
    fewer = fsl.FewShotDataset(fewer.images[:, :2], fewer.class_names, fewer.groups, "few")
    both = _union(dataset, fewer)
    assert both.n_classes == 8 and both.n_per_class == 2
    assert torch.equal(both.images[5:], fewer.images)


def _row(name, compared_with, accuracy, kept=True, train_s=120.0):
    return {
        "row": name,
        "compared_with": compared_with,
        "kept": kept,
        "accuracy": accuracy,
        "ci95": 1.25,
        "Japanese_(katakana) (%)": accuracy + 2,
        "Sanskrit (%)": accuracy - 2,
        "train_s": train_s,
        "test_s": 3.0,
    }


def test_ablation_table_gives_each_row_against_the_row_it_changes():
    rows = [
        _row("baseline", None, 60.0),
        _row("+ a", "baseline", 65.5),
        _row("b instead", "baseline", 58.25, kept=False, train_s=30.0),
        _row("+ c", "+ a", 64.0, kept=False),
    ]
    record = bench.results_record(rows, command="python x.py", device="cpu", notes="", setting="s")
    table = bench.ablation_table(record)
    assert list(table.index) == ["baseline", "+ a", "b instead", "+ c"]
    assert table["changes"].tolist() == ["—", "baseline", "baseline", "+ a"]
    assert table["kept"].tolist() == ["yes", "yes", "no", "no"]
    assert table["Δ (points)"].tolist() == ["—", 5.5, -1.8, -1.5]
    assert table["accuracy (%)"].tolist()[1] == "65.5 ± 1.2"
    assert table["Japanese (%)"].tolist()[0] == 62.0 and table["Sanskrit (%)"].tolist()[0] == 58
    assert table["train (min)"].tolist() == [2.0, 2.0, 0.5, 2.0]
    assert bench.provenance_table(record)["recorded"]["measured"] == "s"


def test_a_setting_is_stored_only_when_given(tmp_path):
    rows = [_row("baseline", None, 60.0)]
    path = tmp_path / "r.json"
    bench.write_results(path, rows, argv=["python", "x.py"], device="cpu", notes="", setting="s")
    assert json.loads(path.read_text())["setting"] == "s"
    assert "setting" not in bench.results_record(rows, command="x", device="cpu", notes="")


def test_the_committed_ablation_is_the_rows_the_benchmark_runs():
    record = bench.recorded_minimal_ablation()
    assert record["setting"] == bench.SETTING
    assert record["command"].startswith("python benchmarks/bench_minimal.py")
    assert "--scale" not in record["command"]  # the full budget, as the chapter reads it
    rows = {row["row"]: row for row in record["rows"]}
    assert list(rows) == [*bench.KEPT, *bench.DROPPED]
    recipe = rows["+ the recipe's budget"]
    assert {key: recipe[key] for key in MINIMAL} == MINIMAL
    assert all(row["test_episodes"] == 200 for row in rows.values())
    for row in rows.values():
        alphabets = (row["Japanese_(katakana) (%)"] + row["Sanskrit (%)"]) / 2
        assert row["accuracy"] == pytest.approx(alphabets) and 0 < row["ci95"] < 5
