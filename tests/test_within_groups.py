"""Episodes within one alphabet at a time: ``evaluate_within_groups`` and ``fslearn eval
--within-alphabet``, against episodes drawn and scored one group at a time by hand."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fslearn as fsl
from fslearn import bench
from fslearn.training.presets import MINIMAL, MINIMAL_TEST_VIEWS, recipe_settings

from synthetic import decode, labelled_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


class Recorder:
    """Predicts each query's instance number modulo n_way (right some of the time) and keeps
    the classes of every support set it is shown."""

    def __init__(self):
        self.classes = []

    def __call__(self, support_x, support_y, query_x):
        n_way = int(support_y.max()) + 1
        self.classes.append(set(decode(support_x)[0].tolist()))
        _, instance = decode(query_x)
        return torch.nn.functional.one_hot(instance % n_way, n_way).float()


def test_each_episode_draws_its_classes_from_one_group():
    # 14 classes in groups a0 (0, 3, 6, 9, 12), a1 (1, 4, …, 13) and a2 (2, 5, 8, 11)
    dataset = labelled_dataset(n_classes=14)
    group_of = dict(enumerate(dataset.groups))
    recorder = Recorder()
    scores = fsl.evaluate_within_groups(recorder, dataset, 5, 1, n_query=2, n_episodes=6, seed=3)
    assert list(scores.groups) == ["a0", "a1"] and scores.left_out == {"a2": 4}
    assert len(recorder.classes) == 12
    for classes in recorder.classes:
        assert len({group_of[c] for c in classes}) == 1, classes
    for group, accuracy in scores.groups.items():
        alone = fsl.EpisodeSet(dataset.select_groups(group), 5, 1, 2, 6, seed=3)
        assert torch.equal(accuracy.per_episode, fsl.evaluate(Recorder(), alone).per_episode)
    means = [a.mean for a in scores.groups.values()]
    assert scores.overall.n == 12 and scores.overall.mean == pytest.approx(sum(means) / 2)
    assert 0 < scores.overall.mean < 1 and scores.overall.ci95 > 0


def test_no_group_large_enough_is_refused():
    with pytest.raises(ValueError, match=r"the largest, a0, has 5\): lower n_way"):
        fsl.evaluate_within_groups(Recorder(), labelled_dataset(n_classes=14), 6, 1)


@pytest.fixture
def root(tmp_path, tmp_cache) -> Path:
    """A data root holding the two real small zips (linked, never copied into the repository)."""
    if not (SHARED / "images_background_small2.zip").exists():
        pytest.skip(f"no real Omniglot zips in {SHARED}")
    (tmp_path / "data" / "omniglot").mkdir(parents=True)
    for name in ("images_background_small1", "images_background_small2"):
        (tmp_path / "data" / "omniglot" / f"{name}.zip").symlink_to(SHARED / f"{name}.zip")
    return tmp_path / "data"


def test_the_minimal_recipe_then_the_within_alphabet_test_on_the_real_small_zips(tmp_path, root):
    out = tmp_path / "run"
    train = [
        *("train", "protonet", "--dataset", "omniglot-small", "--data-root", str(root)),
        *("--recipe", "minimal", "--steps", "2", "--hidden-channels", "8"),
        *("--test-episodes", "4", "--no-progress", "--device", "cpu", "--out", str(out)),
    ]
    command = [sys.executable, "-m", "fslearn"]
    trained = subprocess.run(
        [*command, *train], check=True, capture_output=True, text=True, timeout=300
    ).stdout
    assert "(1088 classes at 4 rotations × 2 reflections)" in trained.splitlines()[0]
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings == {**MINIMAL, "steps": 2, "hidden_channels": 8, "n_shot": 1}
    record = fsl.read_checkpoint(out / "checkpoint.pt")["config"]
    assert record["train_classes"] == 8 * 136  # every small1 character, 4 rotations × 2 mirrors
    within = [
        *("eval", str(out / "checkpoint.pt"), "--data-root", str(root), "--within-alphabet"),
        *("--n-way", "20", "--n-query", "1", "--episodes", "5", "--device", "cpu"),
    ]
    done = subprocess.run([*command, *within, "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert list(result["alphabets"]) == ["Japanese_(katakana)", "Sanskrit"]
    assert result["left_out"] == {"Tagalog": 17}
    means = [a["accuracy"] for a in result["alphabets"].values()]
    assert result["accuracy"] == pytest.approx(sum(means) / 2)
    printed = subprocess.run([*command, *within], capture_output=True, text=True).stdout
    assert "Tagalog: left out (17 characters, fewer than 20)" in printed
    assert "omniglot-small test within one alphabet, 20-way 1-shot" in printed


@pytest.mark.parametrize("method,dataset", [("maml", "omniglot-small"), ("protonet", "omniglot")])
def test_the_minimal_recipe_is_for_protonet_on_the_small_set(method, dataset):
    with pytest.raises(ValueError, match=rf"got {method} on {dataset}: use --recipe paper"):
        recipe_settings(method, dataset, recipe="minimal")


def test_the_ablation_benchmark_runs_every_row(tmp_path, root):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_minimal.py"
    out = tmp_path / "ablation.json"
    quick = ["--scale", "0.002", "--episodes", "3", "--threads", "1", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, str(script), "--data-root", str(root), *quick],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["setting"] == bench.SETTING
    assert record["command"].startswith("python benchmarks/bench_minimal.py --data-root")
    rows = {row["row"]: row for row in record["rows"]}
    assert list(rows) == [*bench.KEPT, *bench.DROPPED]
    kept = [row for row in record["rows"] if row["kept"]]
    assert [row["row"] for row in kept] == list(bench.KEPT)
    assert [row["compared_with"] for row in kept] == [None, *list(bench.KEPT)[:-1]]
    assert [r.get("rotate_classes", False) for r in kept] == [False] + [True] * (len(kept) - 1)
    recipe = {key: kept[-1][key] for key in MINIMAL}
    assert recipe == {**MINIMAL, "steps": round(MINIMAL["steps"] * 0.002), "halve_every": 6}
    # Test-time augmentation scores the network of the row above: no training of its own.
    assert kept[-1]["test_views"] == MINIMAL_TEST_VIEWS and kept[-1]["train_s"] == 0
    for name, (base, change, _) in bench.DROPPED.items():
        assert rows[name]["compared_with"] == base and not rows[name]["kept"]
        assert all(rows[name][key] == value for key, value in change.items() if value), name
    # 1 500 steps × 0.002 = 3; halving only at the last step; a third of the steps at 60-way
    assert rows["no learning-rate decay"]["halve_every"] == rows["baseline"]["steps"] == 3
    assert rows["60-way episodes, a third of the steps"]["steps"] == 1
    for row in rows.values():
        assert 0 <= row["accuracy"] <= 100 and row["test_s"] > 0 and row["test_episodes"] == 3
        assert len(row["per_episode"]) == 6
        assert row["accuracy"] == pytest.approx(
            (row["Japanese_(katakana) (%)"] + row["Sanskrit (%)"]) / 2
        )
        assert row["train_s"] > 0 or row["row"] == "+ test-time augmentation"


def test_training_episodes_within_one_group_draw_each_group_by_its_size():
    # 14 classes: a0 and a1 have 5 each, a2 only 4, too few for 5-way episodes
    dataset = labelled_dataset(n_classes=14)
    sampler = fsl.EpisodeSampler(dataset, 5, 1, 2, seed=0, within_groups=True)
    assert "within groups" in repr(sampler)
    episodes = sampler.sample_tasks(4000)
    classes, _ = decode(episodes.support_x)
    assert torch.equal(classes, episodes.classes)
    groups = [{dataset.groups[c] for c in row} for row in classes.tolist()]
    assert all(len(row) == 5 for row in map(set, classes.tolist()))  # distinct classes
    assert all(len(g) == 1 for g in groups)  # one group per episode
    drawn = [next(iter(g)) for g in groups]
    assert set(drawn) == {"a0", "a1"}  # a2 never: it has 4 classes
    assert abs(drawn.count("a0") / len(drawn) - 0.5) < 0.05  # 5 classes each: half and half
    # Queries are the episode's classes too, and the draws repeat from the seed.
    assert torch.equal(decode(episodes.query_x)[0][:, ::2], classes)
    again = fsl.EpisodeSampler(dataset, 5, 1, 2, seed=0, within_groups=True)
    assert torch.equal(again.sample_tasks(4000).classes, episodes.classes)


def test_training_episodes_within_groups_follow_the_group_sizes():
    names = [f"big/c{i}" for i in range(9)] + [f"small/c{i}" for i in range(3)]
    images = torch.zeros(12, 4, 1, 4, 4, dtype=torch.uint8)
    dataset = fsl.FewShotDataset(images, names, [n.split("/")[0] for n in names], "sizes")
    drawn = fsl.EpisodeSampler(dataset, 3, 1, 1, within_groups=True).sample_tasks(6000).classes
    share_big = (drawn[:, 0] < 9).float().mean().item()
    in_big = drawn < 9
    assert torch.equal(in_big.all(1), in_big.any(1))  # never a class of the other group
    assert abs(share_big - 0.75) < 0.03  # 9 of the 12 classes are in "big"
    with pytest.raises(ValueError, match=r"the largest, 'big', has 9: lower n_way"):
        fsl.EpisodeSampler(dataset, 10, 1, 1, within_groups=True)


def test_train_protonet_records_episodes_within_groups(tmp_path):
    dataset = labelled_dataset(n_classes=14, size=16)
    checkpoint = fsl.Checkpoint(tmp_path / "run.pt")
    _, history = fsl.train_protonet(
        dataset,
        n_way=5,
        n_query=2,
        steps=2,
        hidden_channels=4,
        within_groups=True,
        checkpoint=checkpoint,
        progress=False,
    )
    assert len(history.loss) == 2
    assert fsl.read_checkpoint(tmp_path / "run.pt")["config"]["within_groups"] is True


def test_the_second_ablation_measures_the_named_rows_and_merges_them(tmp_path, root):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_minimal.py"
    out = tmp_path / "followup.json"
    quick = ["--follow-up", "--scale", "0.0005", "--episodes", "2", "--threads", "1"]

    def run(*rows):
        command = [sys.executable, str(script), "--data-root", str(root), *quick]
        command += ["--rows", *rows, "--out", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return json.loads(out.read_text())

    run("without distortions", "stroke widths")
    record = run("transductive prototypes")
    rows = {row["row"]: row for row in record["rows"]}
    # The named rows, and the networks the second tests: in the table's order.
    network = bench.RECIPE_NETWORK
    assert list(rows) == [
        network,
        "without distortions",
        "stroke widths",
        bench.RECIPE_ROW,
        "transductive prototypes",
    ]
    assert rows["stroke widths"]["stroke_width"] == 0.5 and rows[network]["augment"] == 1
    assert "--rows" not in record["command"] and record["command"].endswith(str(out))
    assert "--rows 'without distortions' 'stroke widths'" in rows["stroke widths"]["measured_by"]
    assert rows["without distortions"]["augment"] == 0 and rows[network]["augment"] == 1
    assert rows[network]["steps"] == round(MINIMAL["steps"] * 0.0005)
    # Testing differently trains nothing; every row scores the same episodes.
    assert rows["transductive prototypes"]["train_s"] == 0
    assert rows["transductive prototypes"]["test_views"] == MINIMAL_TEST_VIEWS
    assert rows["transductive prototypes"]["transductive_steps"] == 1
    assert {len(row["per_episode"]) for row in rows.values()} == {4}
