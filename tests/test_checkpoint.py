"""Checkpoints: exact resume for every recipe, atomic writes, safe loading, clear mismatch "
"errors."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import fslearn as fsl

from synthetic import pattern_dataset, separable_characters

SMALL = dict(hidden_channels=4, progress=False, seed=3)

# Each recipe with a budget of 6 steps (pre-training: 4 epochs) and how to stop it halfway.
RECIPES = {
    "protonet": (fsl.train_protonet, dict(n_way=3, n_shot=2, n_query=2, halve_every=2), "steps", 6),
    # the minimal recipe's additions: its distortions come from the checkpointed sampler
    "protonet-minimal": (
        fsl.train_protonet,
        dict(n_way=3, n_shot=1, n_query=2, rotate_classes=True, augment=1.0),
        "steps",
        6,
    ),
    "siamese": (fsl.train_siamese, dict(n_pairs=8), "steps", 6),
    "triplet": (
        fsl.train_triplet,
        dict(strategy="semi-hard", n_classes=4, n_per_class=3),
        "steps",
        6,
    ),
    "maml": (
        fsl.train_maml,
        dict(n_way=3, n_shot=1, n_query=2, meta_batch=2, test_steps=2),
        "steps",
        6,
    ),
    "fomaml": (
        fsl.train_maml,
        dict(n_way=3, n_shot=1, n_query=2, meta_batch=2, first_order=True),
        "steps",
        6,
    ),
    "pretrain": (fsl.train_pretrained, dict(batch_size=16), "epochs", 4),
}


def weights(learner) -> dict:
    return {k: v.detach().cpu().clone() for k, v in learner.state_dict().items()}


@pytest.mark.parametrize("method", RECIPES)
def test_interrupted_and_resumed_run_ends_with_bit_identical_weights(method, device, tmp_path):
    recipe, options, budget, total = RECIPES[method]
    data = pattern_dataset(device=device)
    straight, straight_history = recipe(data, **options, **SMALL, **{budget: total})

    path = tmp_path / "checkpoint.pt"
    recipe(
        data, **options, **SMALL, **{budget: total // 2}, checkpoint=fsl.Checkpoint(path, every=1)
    )
    resumed, resumed_history = recipe(
        data,
        **options,
        **SMALL,
        **{budget: total},
        checkpoint=fsl.Checkpoint(path, every=1, resume=True),
    )

    expected, got = weights(straight), weights(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert resumed_history.loss == straight_history.loss
    # Per-step metrics too (accuracy, active fraction, …): the resumed history holds every step.
    assert getattr(resumed_history, "metrics", None) == getattr(straight_history, "metrics", None)
    saved = fsl.read_checkpoint(path)["state"]["model"]  # the file holds the finished run
    assert all(torch.equal(saved[name], got[name]) for name in got)


def test_checkpoint_every_k_steps_and_the_log(tmp_path):
    data = pattern_dataset()
    path, log = tmp_path / "run" / "checkpoint.pt", tmp_path / "run" / "metrics.jsonl"
    checkpoint = fsl.Checkpoint(path, every=2, log=log, config={"note": "x"})
    saves = []
    original = checkpoint.save
    checkpoint.save = lambda history: (saves.append(history.steps), original(history))
    _, history = fsl.train_protonet(
        data, n_way=3, n_shot=1, n_query=2, steps=5, **SMALL, checkpoint=checkpoint
    )
    assert saves == [2, 4, 5]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in records] == history.loss
    assert [r["accuracy"] for r in records] == history.metrics["accuracy"]
    saved = fsl.read_checkpoint(path)
    assert saved["config"]["note"] == "x" and saved["config"]["n_way"] == 3
    assert saved["history"]["steps"] == 5
    assert not list(path.parent.glob(".*.tmp"))


def test_checkpoint_holds_only_safe_types(tmp_path):
    path = tmp_path / "c.pt"
    fsl.train_maml(
        pattern_dataset(),
        n_way=3,
        n_shot=1,
        n_query=1,
        meta_batch=2,
        steps=1,
        **SMALL,
        checkpoint=fsl.Checkpoint(path),
    )
    payload = torch.load(path, weights_only=True)  # raises if anything needs pickled code
    assert payload["format"] == fsl.training.checkpoint.FORMAT
    assert payload["spec"]["method"] == "maml" and payload["spec"]["n_way"] == 3


def test_existing_checkpoint_is_not_overwritten_without_resume(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="resume"):
        fsl.Checkpoint(path)
    assert path.read_bytes() == b"precious"
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fsl.Checkpoint(tmp_path / "missing.pt", resume=True)


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(lr=2e-3), "lr"),
        (dict(hidden_channels=8), "hidden_channels"),
        (dict(n_way=4), "n_way"),
        (dict(distance="cosine"), "distance"),
    ],
)
def test_resuming_with_other_settings_names_the_field(change, field, tmp_path):
    data = pattern_dataset()
    options = dict(n_way=3, n_shot=1, n_query=2, **SMALL)
    path = tmp_path / "c.pt"
    fsl.train_protonet(data, steps=2, **options, checkpoint=fsl.Checkpoint(path))
    before = path.read_bytes()
    with pytest.raises(ValueError, match=rf"saved with {field}=.* but this run has {field}="):
        fsl.train_protonet(
            data, steps=4, **{**options, **change}, checkpoint=fsl.Checkpoint(path, resume=True)
        )
    assert path.read_bytes() == before


def test_resuming_another_method_names_the_method(tmp_path):
    data = pattern_dataset()
    path = tmp_path / "c.pt"
    fsl.train_protonet(
        data, n_way=3, n_shot=1, n_query=2, steps=2, **SMALL, checkpoint=fsl.Checkpoint(path)
    )
    with pytest.raises(ValueError, match="method='protonet' but this run has method='maml'"):
        fsl.train_maml(
            data,
            n_way=3,
            n_shot=1,
            n_query=2,
            meta_batch=2,
            steps=4,
            **SMALL,
            checkpoint=fsl.Checkpoint(path, resume=True),
        )


def test_resuming_past_the_budget_is_an_error(tmp_path):
    data = pattern_dataset()
    path = tmp_path / "c.pt"
    fsl.train_protonet(
        data, n_way=3, n_shot=1, n_query=2, steps=4, **SMALL, checkpoint=fsl.Checkpoint(path)
    )
    with pytest.raises(ValueError, match="is at steps=4, past this run's steps=2"):
        fsl.train_protonet(
            data,
            n_way=3,
            n_shot=1,
            n_query=2,
            steps=2,
            **SMALL,
            checkpoint=fsl.Checkpoint(path, resume=True),
        )


def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path):
    """A process killed (SIGKILL) in the middle of writing a checkpoint: the old one still loads."""
    path = tmp_path / "c.pt"
    script = textwrap.dedent(
        f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        import fslearn as fsl
        from synthetic import pattern_dataset

        checkpoint = fsl.Checkpoint({str(path)!r}, every=1)
        real_save, saves = torch.save, []

        def dying_save(obj, f):
            saves.append(f)
            if len(saves) == 2:  # the second checkpoint: write half of it, then die
                real_save(obj, f)
                with open(f, "r+b") as file:
                    file.truncate(os.path.getsize(f) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            real_save(obj, f)

        torch.save = dying_save
        fsl.train_protonet(pattern_dataset(), n_way=3, n_shot=1, n_query=2, steps=3,
                           hidden_channels=4, progress=False, checkpoint=checkpoint)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    leftovers = list(tmp_path.glob(".c.pt.*.tmp"))
    assert len(leftovers) == 1  # the half-written file, under a name no reader looks at
    saved = fsl.read_checkpoint(path)
    assert saved["history"]["steps"] == 1
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        fsl.read_checkpoint(leftovers[0])
    # the run resumes from step 1, and its next save clears the leftover
    fsl.train_protonet(
        pattern_dataset(),
        n_way=3,
        n_shot=1,
        n_query=2,
        steps=3,
        **{**SMALL, "seed": 0},
        checkpoint=fsl.Checkpoint(path, resume=True),
    )
    assert fsl.read_checkpoint(path)["history"]["steps"] == 3
    assert not list(tmp_path.glob(".c.pt.*.tmp"))


def test_bad_files_get_clear_errors(tmp_path):
    truncated = tmp_path / "truncated.pt"
    fsl.train_protonet(
        pattern_dataset(),
        n_way=3,
        n_shot=1,
        n_query=2,
        steps=1,
        **SMALL,
        checkpoint=fsl.Checkpoint(truncated),
    )
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.pt is not a readable checkpoint"):
        fsl.read_checkpoint(truncated)
    foreign = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="not an fslearn checkpoint"):
        fsl.read_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nothing.pt"):
        fsl.read_checkpoint(tmp_path / "nothing.pt")


def test_load_learner_predicts_like_the_trained_learner(tmp_path):
    data = pattern_dataset()
    episodes = fsl.EpisodeSet(data, 3, 1, 2, n_episodes=4, seed=1)
    for name, (recipe, options, budget, _) in RECIPES.items():
        path = tmp_path / f"{name}.pt"
        learner, _ = recipe(
            data, **options, **SMALL, **{budget: 1}, checkpoint=fsl.Checkpoint(path)
        )
        loaded = fsl.load_learner(path, n_way=3, image_shape=data.image_shape)
        if name == "pretrain":
            learner = fsl.FineTune(learner.backbone, data.image_shape, 3)
        learner.eval()
        for episode in episodes:
            with torch.no_grad():
                expected = learner(episode.support_x, episode.support_y, episode.query_x)
            torch.testing.assert_close(
                loaded(episode.support_x, episode.support_y, episode.query_x), expected
            )


def test_load_learner_refuses_tasks_it_cannot_do(tmp_path):
    data = pattern_dataset()
    maml = tmp_path / "maml.pt"
    fsl.train_maml(
        data,
        n_way=3,
        n_shot=1,
        n_query=1,
        meta_batch=2,
        steps=1,
        **SMALL,
        checkpoint=fsl.Checkpoint(maml),
    )
    with pytest.raises(ValueError, match="3-way head .* cannot classify n_way=5"):
        fsl.load_learner(maml, n_way=5)
    with pytest.raises(ValueError, match=r"image_shape=\(1, 16, 16\)"):
        fsl.load_learner(maml, image_shape=(3, 84, 84))
    pretrain = tmp_path / "pretrain.pt"
    fsl.train_pretrained(
        data, epochs=1, batch_size=40, **SMALL, checkpoint=fsl.Checkpoint(pretrain)
    )
    with pytest.raises(ValueError, match="pass n_way="):
        fsl.load_learner(pretrain)


def test_build_learner_names_missing_fields():
    with pytest.raises(ValueError, match="unknown method 'matching'"):
        fsl.build_learner({"method": "matching"})
    with pytest.raises(ValueError, match=r"\['distance'\]"):
        fsl.build_learner({"method": "protonet", "image_shape": [1, 8, 8], "hidden_channels": 4})


def test_an_option_saved_only_when_given_cannot_be_dropped_at_a_resume(tmp_path):
    """augment= is saved only when set: resuming without it would train another run."""
    train = separable_characters()
    options = dict(n_way=3, n_shot=1, n_query=2, hidden_channels=4, progress=False)
    path = tmp_path / "run.pt"
    fsl.train_protonet(train, steps=2, augment=0.5, checkpoint=fsl.Checkpoint(path), **options)
    saved = path.read_bytes()
    with pytest.raises(ValueError, match=r"saved with augment=0.5 but this run has augment=None"):
        fsl.train_protonet(train, steps=3, checkpoint=fsl.Checkpoint(path, resume=True), **options)
    assert path.read_bytes() == saved
    _, history = fsl.train_protonet(
        train, steps=3, augment=0.5, checkpoint=fsl.Checkpoint(path, resume=True), **options
    )
    assert history.steps == 3
