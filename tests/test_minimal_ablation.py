"""The minimal recipe's ablation: test-time augmentation against views embedded by hand, the
extra classes of its rows, its table against the arithmetic of its rows, and the committed
record against the rows the code runs. ``tests/test_within_groups.py`` runs the benchmark
itself on the real small zips."""

import json
import math
import statistics

import pytest
import torch

import fslearn as fsl
from fslearn import bench
from fslearn.bench.minimal import _union
from fslearn.bench.minimal_followup import NETWORK_SETTINGS
from fslearn.training.presets import MINIMAL, MINIMAL_TEST_VIEWS

from synthetic import labelled_dataset


@pytest.fixture
def backbone():
    torch.manual_seed(0)
    return fsl.Conv4(hidden_channels=8).eval()


def test_averaged_views_is_the_mean_embedding_of_the_image_and_its_distortions(backbone):
    x = torch.rand(6, 1, 28, 28)
    averaged = fsl.AveragedViews(backbone, views=3, strength=1.0, seed=4)
    generator = torch.Generator().manual_seed(4)
    views = [x, *(fsl.random_affine(x, 1.0, generator) for _ in range(2))]
    with torch.no_grad():
        by_hand = torch.stack([backbone(view) for view in views]).mean(0)
        assert torch.allclose(averaged(x), by_hand, atol=1e-6)
        # Distortions of strength 0 are the image itself; one view is the image alone.
        assert torch.allclose(fsl.AveragedViews(backbone, 3, 0.0)(x), backbone(x), atol=1e-6)
        assert torch.equal(fsl.AveragedViews(backbone, 1, 1.0)(x), backbone(x))
        assert not torch.allclose(fsl.AveragedViews(backbone, 3)(x), backbone(x), atol=1e-3)


def test_test_views_keep_the_learner_and_its_scale_and_share_its_weights(backbone):
    protonet = fsl.ProtoNet(backbone, scale=3.0)
    support_x, query_x = torch.rand(4, 1, 28, 28), torch.rand(5, 1, 28, 28)
    support_y = torch.tensor([0, 1, 2, 3])
    tested = fsl.with_test_views(protonet, views=4, seed=1)
    assert type(tested) is fsl.ProtoNet and tested.scale.item() == pytest.approx(3.0)
    assert tested.backbone.backbone is backbone
    embed = fsl.AveragedViews(backbone, 4, 1.0, seed=1)
    with torch.no_grad():
        # support first, then queries: the order in which the learner embeds them
        support, queries = embed(support_x), embed(query_x)
        by_hand = -3.0 * torch.cdist(queries, support) ** 2
        assert torch.allclose(tested(support_x, support_y, query_x), by_hand, rtol=1e-4, atol=1e-3)
    cosine = fsl.with_test_views(fsl.NearestPrototype(backbone, "cosine"), 2)
    assert type(cosine) is fsl.NearestPrototype and cosine.distance == "cosine"


@pytest.mark.parametrize(
    "learner,views,error,match",
    [
        ("finetune", 8, TypeError, "got FineTune"),
        ("protonet", 0, ValueError, "views"),
    ],
)
def test_test_views_refuse_what_they_cannot_average(backbone, learner, views, error, match):
    learners = {
        "finetune": fsl.FineTune(backbone, (1, 28, 28), 5),
        "protonet": fsl.ProtoNet(backbone),
    }
    with pytest.raises(error, match=match):
        fsl.with_test_views(learners[learner], views)


def test_reflections_and_extra_classes_are_classes_of_their_own():
    dataset = labelled_dataset(n_classes=5)
    mirrored = fsl.with_reflections(dataset)
    assert mirrored.n_classes == 10 and mirrored.n_per_class == dataset.n_per_class
    assert torch.equal(mirrored.images[:5], dataset.images)
    assert torch.equal(mirrored.images[5:], dataset.images.flip(-1))
    assert mirrored.class_names[5:] == [f"{name}@mirror" for name in dataset.class_names]
    assert mirrored.groups == dataset.groups * 2
    # With the rotations after them: the 8 symmetries of the square, angle-major.
    images = torch.randint(0, 256, (2, 3, 1, 6, 6), dtype=torch.uint8)
    square = fsl.FewShotDataset(images, ["a", "b"], ["g", "g"], "square")
    eight = fsl.with_rotations(fsl.with_reflections(square))
    image = images[0, 0]
    by_hand = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4) for x in (image, image.flip(-1))]
    assert eight.n_classes == 16
    assert all(torch.equal(eight.images[2 * i, 0], x) for i, x in enumerate(by_hand))
    assert len({tuple(x.flatten().tolist()) for x in by_hand}) == 8
    fewer = dataset.select(range(3))
    fewer = fsl.FewShotDataset(fewer.images[:, :2], fewer.class_names, fewer.groups, "few")
    both = _union(dataset, fewer)
    assert both.n_classes == 8 and both.n_per_class == 2
    assert torch.equal(both.images[5:], fewer.images)


def _row(name, compared_with, per_episode, kept=True, train_s=120.0):
    accuracy = 100 * statistics.fmean(per_episode)
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
        "per_episode": per_episode,
    }


def test_ablation_table_gives_each_row_against_the_row_it_changes():
    rows = [
        _row("baseline", None, [0.5, 0.6, 0.7, 0.4]),
        _row("+ a", "baseline", [0.6, 0.6, 0.9, 0.5]),
        _row("b instead", "baseline", [0.5, 0.5, 0.7, 0.3], kept=False, train_s=30.0),
        _row("+ c", "+ a", [0.6, 0.65, 0.85, 0.5], kept=False),
    ]
    record = bench.results_record(rows, command="python x.py", device="cpu", notes="", setting="s")
    table = bench.ablation_table(record)
    assert list(table.index) == ["baseline", "+ a", "b instead", "+ c"]
    assert table["changes"].tolist() == ["—", "baseline", "baseline", "+ a"]
    assert table["kept"].tolist() == ["yes", "yes", "no", "no"]

    def paired(a, b):  # by hand: the mean and 1.96 s / √n of the differences, in points
        differences = [100 * (x - y) for x, y in zip(a["per_episode"], b["per_episode"])]
        ci = 1.96 * statistics.stdev(differences) / math.sqrt(len(differences))
        return f"{statistics.fmean(differences):+.1f} ± {ci:.1f}"

    expected = [paired(rows[1], rows[0]), paired(rows[2], rows[0]), paired(rows[3], rows[1])]
    assert table["Δ (points)"].tolist() == ["—", *expected]
    assert expected[0] == "+10.0 ± 8.0" and expected[2].startswith("+0.0 ±")
    assert table["accuracy (%)"].tolist()[1] == "65.0 ± 1.2"
    assert table["Japanese (%)"].tolist()[0] == 57.0 and table["Sanskrit (%)"].tolist()[0] == 53
    assert table["train (min)"].tolist() == [2.0, 2.0, 0.5, 2.0]
    assert bench.provenance_table(record)["recorded"]["measured"] == "s"
    gain = bench.paired_difference(record, "+ a", "baseline")
    assert gain.mean == pytest.approx(0.1) and gain.n == 4


def test_a_setting_is_stored_only_when_given(tmp_path):
    rows = [_row("baseline", None, [0.6, 0.5])]
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
    # The network the recipe trained then, which the second ablation trains again.
    recipe = rows["+ the recipe's budget"]
    assert {key: recipe[key] for key in NETWORK_SETTINGS} == NETWORK_SETTINGS
    assert all(row["test_episodes"] == 200 for row in rows.values())
    for row in rows.values():
        alphabets = (row["Japanese_(katakana) (%)"] + row["Sanskrit (%)"]) / 2
        assert row["accuracy"] == pytest.approx(alphabets) and 0 < row["ci95"] < 5
        assert len(row["per_episode"]) == 400  # 200 in each of the two alphabets
        assert 100 * statistics.fmean(row["per_episode"]) == pytest.approx(row["accuracy"])


def test_merged_rows_replace_rows_by_name_in_the_tables_order(tmp_path):
    path = tmp_path / "followup.json"
    assert (
        bench.merged_rows(path, [_row("without distortions", "n", [0.5])], "c1")[0]["measured_by"]
        == "c1"
    )  # no file yet: the new rows alone
    old = [
        _row("transductive prototypes", bench.RECIPE_ROW, [0.7]),
        _row(bench.RECIPE_NETWORK, None, [0.6]),
        _row("a row of an older table", None, [0.1]),
    ]
    bench.write_results(path, old, argv=["python", "x.py"], device="cpu", notes="")
    new = [_row(bench.RECIPE_NETWORK, None, [0.65]), _row(bench.RECIPE_ROW, "n", [0.7])]
    merged = bench.merged_rows(path, new, "python x.py --rows y")
    assert [row["row"] for row in merged] == [
        bench.RECIPE_NETWORK,
        bench.RECIPE_ROW,
        "transductive prototypes",
        "a row of an older table",
    ]
    assert merged[0]["per_episode"] == [0.65] and merged[0]["measured_by"].endswith("--rows y")
    assert "measured_by" not in merged[2]  # kept as the file had it


def test_a_row_that_tests_differently_needs_the_network_it_tests():
    from fslearn.bench.minimal_followup import _needed

    assert _needed(["without distortions"]) == ["without distortions"]
    assert _needed(["transductive, 5 refinements"]) == [
        bench.RECIPE_NETWORK,
        bench.RECIPE_ROW,
        "transductive prototypes",
        "transductive, 5 refinements",
    ]
    with pytest.raises(ValueError, match=r"unknown rows \['nope'\]"):
        bench.followup_ablation("data", rows=["nope"])


def test_the_committed_second_ablation_is_the_rows_the_benchmark_runs():
    from fslearn.bench.minimal_followup import in_recipe

    record = bench.recorded_followup_ablation()
    assert record["command"].startswith("python benchmarks/bench_minimal.py")
    assert "--follow-up" in record["command"] and "--scale" not in record["command"]
    rows = {row["row"]: row for row in record["rows"]}
    assert list(rows) == list(bench.FOLLOW_UP)
    network = rows[bench.RECIPE_NETWORK]
    assert {key: network[key] for key in NETWORK_SETTINGS} == NETWORK_SETTINGS
    for name, (base, change) in bench.FOLLOW_UP.items():
        row = rows[name]
        assert row["compared_with"] == base and row["kept"] == in_recipe(name)
        assert {key: row[key] for key in change} == change
        # Measured with the rows named, or as the network a named row tests.
        assert row["measured_by"].startswith("python benchmarks/bench_minimal.py")
        assert "--follow-up" in row["measured_by"] and " --rows " in row["measured_by"]
        assert len(row["per_episode"]) == 400 and row["test_episodes"] == 200
        alphabets = (row["Japanese_(katakana) (%)"] + row["Sanskrit (%)"]) / 2
        assert row["accuracy"] == pytest.approx(alphabets)
        assert 100 * statistics.fmean(row["per_episode"]) == pytest.approx(row["accuracy"])
    # Two rows are the recipe: the network it trains, and that network as it is scored.
    trained, scored = (row for row in rows.values() if row["kept"])
    assert {key: trained[key] for key in MINIMAL} == MINIMAL and "test_views" not in trained
    assert scored["compared_with"] == trained["row"]
    assert {key: scored[key] for key in MINIMAL} == MINIMAL
    assert scored["test_views"] == MINIMAL_TEST_VIEWS


def test_the_rows_kept_follow_the_recipe_as_it_is_now(monkeypatch):
    from fslearn.bench import minimal_followup
    from fslearn.bench.minimal_followup import in_recipe, row_settings

    kept = [name for name in bench.FOLLOW_UP if in_recipe(name)]
    assert kept == [bench.RECIPE_NETWORK, bench.RECIPE_ROW]
    # A row is its chain of changes: the five refinements test the 8 views' network.
    settings = row_settings("transductive, 5 refinements", scale=0.5)
    assert settings["test_views"] == MINIMAL_TEST_VIEWS and settings["transductive_steps"] == 5
    assert settings["steps"] == MINIMAL["steps"] // 2 and settings["augment"] == 1.0
    # Without distortions, the recipe would be the rows trained without them.
    monkeypatch.setitem(minimal_followup.MINIMAL, "augment", 0.0)
    assert [name for name in bench.FOLLOW_UP if in_recipe(name)] == [
        "without distortions",
        "8 views, trained without distortions",
    ]
