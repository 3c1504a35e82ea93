"""The `fslearn` command line, run as a subprocess on the embedded set with tiny budgets."""

import json
import math
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fslearn as fsl

from synthetic import TINY, fails, fslearn, make_runs, write_zip


@pytest.fixture(scope="module")
def protonet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "protonet"
    result = fslearn(
        "train",
        "protonet",
        *TINY,
        "--steps",
        6,
        "--n-way",
        5,
        "--checkpoint-every",
        3,
        "--out",
        out,
    )
    return out, result


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["eval-runs"], ["bench"], ["info"]])
def test_every_command_has_help(command):
    result = fslearn(*command, "--help")
    assert "usage: fslearn" in result.stdout


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("fslearn")
    assert script.exists(), "pip install . installs the `fslearn` command"
    result = subprocess.run([script, "info"], capture_output=True, text=True, check=True)
    assert f"torch           {torch.__version__}" in result.stdout
    assert "cache" in result.stdout and "default device" in result.stdout


def test_train_writes_config_metrics_checkpoint_and_results(protonet_run):
    out, result = protonet_run
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
        "results.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert (
        config["method"] == "protonet"
        and config["settings"]["steps"] == 6
        and config["settings"]["n_way"] == 5
    )
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    results = json.loads((out / "results.json").read_text())
    test = {"split": "test", "n_way": 5, "n_shot": 1, "n_query": 15, "episodes": 4, "seed": 0}
    assert {key: results[key] for key in test} == test
    # Score the saved learner on those episodes here, by hand: the run must report just that.
    device = torch.device(config["device"])  # the run's, so that the arithmetic is the same
    dataset = fsl.load_dataset("embedded", "test", progress=False, device=device)
    learner = fsl.load_learner(
        out / "checkpoint.pt", n_way=5, image_shape=(1, 28, 28), device=device
    )
    accuracies = []
    with torch.no_grad():
        for episode in fsl.EpisodeSet(dataset, 5, 1, 15, n_episodes=4, seed=0):
            logits = learner(episode.support_x, episode.support_y, episode.query_x)
            accuracies.append((logits.argmax(1) == episode.query_y).double().mean().item())
    # Per-episode accuracies are float32 in fslearn; one query more or less right is 1/75.
    assert results["accuracy"] == pytest.approx(statistics.fmean(accuracies), abs=1e-6)
    ci95 = 1.96 * statistics.stdev(accuracies) / math.sqrt(4)
    assert results["ci95"] == pytest.approx(ci95, abs=1e-6)
    assert f"{100 * results['accuracy']:.2f} ± {100 * results['ci95']:.2f}%" in result.stdout
    assert fsl.read_checkpoint(out / "checkpoint.pt")["history"]["steps"] == 6


def test_eval_reproduces_the_test_of_train_and_prints_json(protonet_run):
    out, _ = protonet_run
    results = json.loads((out / "results.json").read_text())
    shown = json.loads(fslearn("eval", out / "checkpoint.pt", "--episodes", 4, "--json").stdout)
    assert shown["accuracy"] == results["accuracy"] and shown["ci95"] == results["ci95"]
    text = fslearn(
        "eval",
        out / "checkpoint.pt",
        "--episodes",
        4,
        "--n-shot",
        5,
        "--n-query",
        5,
        "--no-progress",
    ).stdout
    assert "embedded test, 5-way 5-shot, 4 episodes of 5 queries per class:" in text


def test_eval_with_test_views_scores_embeddings_averaged_over_the_views(protonet_run):
    out, _ = protonet_run
    checkpoint = out / "checkpoint.pt"
    shown = json.loads(
        fslearn("eval", checkpoint, "--episodes", 4, "--test-views", 3, "--json").stdout
    )
    assert shown["test_views"] == 3
    assert "test_views" not in json.loads(fslearn("eval", checkpoint, "--json").stdout)
    device = torch.device(json.loads((out / "config.json").read_text())["device"])
    dataset = fsl.load_dataset("embedded", "test", progress=False, device=device)
    learner = fsl.load_learner(checkpoint, n_way=5, image_shape=(1, 28, 28), device=device)
    episodes = fsl.EpisodeSet(dataset, 5, 1, 15, n_episodes=4, seed=0)
    by_hand = fsl.evaluate(fsl.with_test_views(learner, 3), episodes)
    assert shown["accuracy"] == pytest.approx(by_hand.mean, abs=1e-6)
    assert shown["ci95"] == pytest.approx(by_hand.ci95, abs=1e-6)
    text = fslearn("eval", checkpoint, "--episodes", 4, "--test-views", 3, "--no-progress")
    assert "4 episodes of 15 queries per class, 3 views per image:" in text.stdout


def test_eval_test_bn_sets_the_learners_batch_norm_and_records_it(protonet_run, tmp_path):
    out = tmp_path / "maml"
    fslearn("train", "maml", *TINY, "--meta-batch", 2, "--test-steps", 1, "--steps", 2,
            "--out", out)  # fmt: skip
    checkpoint = out / "checkpoint.pt"
    shown = json.loads(
        fslearn("eval", checkpoint, "--episodes", 3, "--test-bn", "support", "--json").stdout
    )
    # The same episodes scored in Python, the learner switched to the support set's statistics.
    device = torch.device(json.loads((out / "config.json").read_text())["device"])
    dataset = fsl.load_dataset("embedded", "test", progress=False, device=device)
    learner = fsl.load_learner(checkpoint, n_way=5, image_shape=(1, 28, 28), device=device)
    assert learner.test_bn == "transductive"
    learner.test_bn = "support"
    by_hand = fsl.evaluate(learner, fsl.EpisodeSet(dataset, 5, 1, 15, n_episodes=3, seed=0))
    assert shown["test_bn"] == by_hand.test_bn == "support"
    assert shown["accuracy"] == pytest.approx(by_hand.mean, abs=1e-6)
    plain = json.loads(fslearn("eval", checkpoint, "--episodes", 3, "--json").stdout)
    assert plain["test_bn"] == "transductive"
    text = fslearn("eval", checkpoint, "--episodes", 3, "--test-bn", "support", "--no-progress")
    assert text.stdout.rstrip().endswith("(batch norm: support)")
    fails("eval", checkpoint, "--test-bn", "running", match="--test-bn running: test_bn='running'")
    protonet = protonet_run[0] / "checkpoint.pt"
    running = json.loads(
        fslearn("eval", protonet, "--episodes", 2, "--test-bn", "running", "--json").stdout
    )
    assert running["test_bn"] == "running"
    fails("eval", protonet, "--test-bn", "transductive", match="holds a protonet learner")
    fails("eval", checkpoint, "--test-bn", "batch", match="invalid choice: 'batch'", code=2)


def test_interrupted_cli_run_resumes_to_the_same_weights(tmp_path):
    args = ["train", "maml", *TINY, "--meta-batch", 2, "--test-steps", 1]
    fslearn(*args, "--steps", 4, "--out", tmp_path / "straight")
    fslearn(*args, "--steps", 2, "--checkpoint-every", 1, "--out", tmp_path / "resumed")
    fslearn(*args, "--steps", 4, "--checkpoint-every", 1, "--out", tmp_path / "resumed", "--resume")
    straight = fsl.read_checkpoint(tmp_path / "straight" / "checkpoint.pt")["state"]["model"]
    resumed = fsl.read_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["state"]["model"]
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    log = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3, 4]
    # which way the tasks ran, on this CPU: recorded in the checkpoint and the results
    saved = fsl.read_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    assert saved["config"]["maml_strategy"] == "loop"
    results = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert results["maml_strategy"] == "loop"


def test_pretrain_trains_in_epochs_and_tests_with_a_fitted_head(tmp_path):
    out = tmp_path / "pretrain"
    result = fslearn("train", "pretrain", *TINY, "--epochs", 1, "--out", out)
    assert "5-way 1-shot" in result.stdout
    fails(
        "eval",
        out / "checkpoint.pt",
        "--test-views",
        4,
        match="holds a pretrain learner (FineTune): leave --test-views out",
    )
    fails(
        "eval",
        out / "checkpoint.pt",
        "--transductive-steps",
        1,
        match="holds a pretrain learner (FineTune): leave --transductive-steps out",
    )
    fails(
        "train",
        "pretrain",
        *TINY,
        "--steps",
        3,
        "--out",
        tmp_path / "other",
        match="it trains in --epochs",
    )


def test_eval_runs_scores_lakes_twenty_runs(protonet_run, tmp_path):
    files, _ = make_runs(random.Random(0))
    runs = write_zip(tmp_path / "all_runs.zip", files)
    out, _ = protonet_run
    scores = json.loads(
        fslearn("eval-runs", out / "checkpoint.pt", "--runs", runs, "--json").stdout
    )
    # Each run's error of the saved learner, worked out here: 20-way 1-shot, support labels 0..19.
    device = torch.device(json.loads((out / "config.json").read_text())["device"])
    learner = fsl.load_learner(
        out / "checkpoint.pt", n_way=20, image_shape=(1, 28, 28), device=device
    )
    errors = []
    with torch.no_grad():
        for run in fsl.load_runs(runs):
            support_x, query_x = (x.to(device) / 255 for x in (run.support_x, run.query_x))
            logits = learner(support_x, torch.arange(20, device=device), query_x).cpu()
            errors.append(100 * (logits.argmax(1) != run.query_y).double().mean().item())
    assert scores["errors"] == pytest.approx(errors, abs=1e-9)
    assert scores["mean_error"] == pytest.approx(statistics.fmean(errors), abs=1e-9)
    assert (
        "mean error over 20 runs"
        in fslearn("eval-runs", out / "checkpoint.pt", "--runs", runs).stdout
    )
    fails(
        "eval-runs", out / "checkpoint.pt", "--runs", tmp_path / "missing.zip", match="missing.zip"
    )


def test_eval_runs_takes_the_same_test_views_as_evaluate_runs(protonet_run, tmp_path):
    files, _ = make_runs(random.Random(1))
    runs = write_zip(tmp_path / "all_runs.zip", files)
    out, _ = protonet_run
    command = ("eval-runs", out / "checkpoint.pt", "--runs", runs, "--test-views", 3)
    scores = json.loads(fslearn(*command, "--json").stdout)
    device = torch.device(json.loads((out / "config.json").read_text())["device"])
    learner = fsl.load_learner(
        out / "checkpoint.pt", n_way=20, image_shape=(1, 28, 28), device=device
    )
    loaded = fsl.load_runs(runs)
    expected = fsl.evaluate_runs(loaded, learner=learner, test_views=3)
    assert scores["test_views"] == expected["test_views"] == 3
    assert scores["errors"] == pytest.approx(expected["errors"], abs=1e-9)
    # The views are the library's: each run scored by hand through fsl.with_test_views.
    viewed = fsl.with_test_views(learner, 3)
    errors = []
    with torch.no_grad():
        for run in loaded:
            support_x, query_x = (x.to(device) / 255 for x in (run.support_x, run.query_x))
            logits = viewed(support_x, torch.arange(20, device=device), query_x).cpu()
            errors.append(100 * (logits.argmax(1) != run.query_y).double().mean().item())
    assert expected["errors"] == pytest.approx(errors, abs=1e-9)
    assert fsl.evaluate_runs(loaded, learner=learner)["test_views"] == 1
    assert "20 runs, 3 views per image:" in fslearn(*command).stdout
    with pytest.raises(TypeError, match="test_views=2 averages the embeddings of a module"):
        fsl.evaluate_runs(loaded, embed=lambda x: x.flatten(1), test_views=2)
    with pytest.raises(ValueError, match="test_views must be a positive integer"):
        fsl.evaluate_runs(loaded, learner=learner, test_views=0)


def test_eval_and_eval_runs_test_transductively_as_the_library_does(protonet_run, tmp_path):
    from test_transductive import refined_by_hand

    out, _ = protonet_run
    checkpoint = out / "checkpoint.pt"
    device = torch.device(json.loads((out / "config.json").read_text())["device"])
    learner = fsl.load_learner(checkpoint, n_way=5, image_shape=(1, 28, 28), device=device)
    dataset = fsl.load_dataset("embedded", "test", progress=False, device=device)
    episodes = fsl.EpisodeSet(dataset, 5, 1, 15, n_episodes=4, seed=0)
    both = ("--test-views", 3, "--transductive-steps", 2)
    shown = json.loads(fslearn("eval", checkpoint, "--episodes", 4, *both, "--json").stdout)
    assert shown["transductive_steps"] == 2 and shown["test_views"] == 3
    tested = fsl.with_transductive_prototypes(fsl.with_test_views(learner, 3), 2)
    assert shown["accuracy"] == pytest.approx(fsl.evaluate(tested, episodes).mean, abs=1e-6)
    assert "transductive_steps" not in json.loads(fslearn("eval", checkpoint, "--json").stdout)
    # Lake's runs: each run's 20 test images refine the prototypes, soft k-means by hand.
    files, _ = make_runs(random.Random(1))
    runs = write_zip(tmp_path / "all_runs.zip", files)
    command = ("eval-runs", checkpoint, "--runs", runs, "--transductive-steps", 2)
    scores = json.loads(fslearn(*command, "--json").stdout)
    learner = fsl.load_learner(checkpoint, n_way=20, image_shape=(1, 28, 28), device=device)
    loaded = fsl.load_runs(runs)
    expected = fsl.evaluate_runs(loaded, learner=learner, transductive_steps=2)
    assert scores["transductive_steps"] == expected["transductive_steps"] == 2
    assert scores["errors"] == pytest.approx(expected["errors"], abs=1e-9)
    errors, scale = [], learner.scale.item()
    with torch.no_grad():
        for run in loaded:
            images = (run.support_x, run.query_x)
            support, query = (learner.backbone(x.to(device) / 255).cpu() for x in images)
            logits = refined_by_hand(support, torch.arange(20), query, 20, scale, 2)
            errors.append(100 * (logits.argmax(1) != run.query_y).double().mean().item())
    assert expected["errors"] == pytest.approx(errors, abs=1e-9)
    assert expected["errors"] != fsl.evaluate_runs(loaded, learner=learner)["errors"]
    assert "transductive" not in fsl.evaluate_runs(loaded, learner=learner)
    assert "transductive (2 refinements of the prototypes)" in fslearn(*command).stdout
    with pytest.raises(TypeError, match="pass learner= .* not embed="):
        fsl.evaluate_runs(loaded, embed=lambda x: x.flatten(1), transductive_steps=1)
    with pytest.raises(ValueError, match="transductive_steps must be an integer ≥ 0"):
        fsl.evaluate_runs(loaded, learner=learner, transductive_steps=-1)
    fails("eval", checkpoint, "--transductive-steps", -1, match="must be an integer ≥ 0", code=2)


def test_bad_requests_fail_with_a_clear_message(protonet_run, tmp_path):
    out, _ = protonet_run
    fails("train", "matchingnet", match="invalid choice: 'matchingnet'", code=2)
    fails("train", "protonet", "--steps", 0, match="must be a positive integer", code=2)
    fails(
        "train",
        "protonet",
        *TINY,
        "--meta-batch",
        4,
        match="--meta-batch does not apply to protonet",
    )
    fails("train", "protonet", *TINY, "--out", out, match="already holds a run: pass --resume")
    fails(
        "train", "protonet", *TINY, "--out", tmp_path / "new", "--resume", match="no checkpoint at"
    )
    fails(
        "train",
        "maml",
        *TINY,
        "--test-n-way",
        20,
        "--out",
        tmp_path / "m",
        match="cannot be tested on 20-way",
    )
    fails(
        "train",
        "protonet",
        *TINY,
        "--n-shot",
        15,
        "--n-query",
        10,
        "--out",
        tmp_path / "p",
        match="n_shot + n_query = 15 + 10 = 25 images per class",
    )
    fails(
        "train",
        "maml",
        *TINY,
        "--dataset",
        "miniimagenet",
        "--out",
        tmp_path / "mini",
        match="--data-root",
    )
    fails("eval", tmp_path / "nothing.pt", match="no checkpoint at")
    broken = tmp_path / "broken.pt"
    broken.write_bytes((out / "checkpoint.pt").read_bytes()[:500])
    fails("eval", broken, match="is not a readable checkpoint")
    assert not (tmp_path / "new").exists() and not (tmp_path / "m").exists()


def test_resuming_with_other_options_changes_nothing(protonet_run):
    out, _ = protonet_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fails(
        "train",
        "protonet",
        *TINY,
        "--steps",
        8,
        "--n-way",
        6,
        "--out",
        out,
        "--resume",
        match="saved with n_way=5 but this run has n_way=6",
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_maml_checkpoint_refuses_other_way_counts(tmp_path):
    out = tmp_path / "maml"
    fslearn(
        "train", "maml", *TINY, "--steps", 1, "--meta-batch", 2, "--test-steps", 1, "--out", out
    )
    fails(
        "eval", out / "checkpoint.pt", "--n-way", 20, "--episodes", 2, match="5-way head (n_way=5)"
    )


def test_bench_prints_tables_and_writes_a_results_file(tmp_path):
    out = tmp_path / "speed.json"
    result = fslearn(
        "bench",
        "--device",
        "cpu",
        "--settings",
        "omniglot-1",
        "--meta-batch",
        1,
        "--iterations",
        1,
        "--no-compile",
        "--out",
        out,
        "--notes",
        "test run",
    )
    assert "| episode shape" in result.stdout and "| per-task loop (baseline)" in result.stdout
    record = json.loads(out.read_text())
    assert record["notes"] == "test run" and record["command"].startswith(
        "fslearn bench --device cpu"
    )
    assert "--notes" not in record["command"]
    assert [row["implementation"] for row in record["rows"]] == [
        "per-task loop (baseline)",
        "fslearn eager (vmap)",
    ]
    fails("bench", "--what", "maml", "--settings", "omniglot-20", match="omniglot-1")
