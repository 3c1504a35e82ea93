"""Checkpoints whose weights do not fit their spec, runs whose checkpoint is damaged, output
paths checked before any long work, and records written only for runs that ran."""

import random
import shutil

import pytest
import torch

import fslearn as fsl
from fslearn.cli import main
from fslearn.cli.run_folder import check_folder

from synthetic import TINY, digests, make_runs, write_zip

#: A finished run: 2 steps, a checkpoint at step 2.
RUN = ["train", "protonet", *TINY, "--checkpoint-every", 2]


def refused(capsys, *args, match: str) -> str:
    """Run the command line in this process: it must fail with status 1 and one line holding
    ``match`` (a traceback would propagate and fail the test)."""
    status = main([str(arg) for arg in args])
    err = capsys.readouterr().err
    assert status == 1, err
    assert match in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([str(arg) for arg in [*RUN, "--steps", 2, "--out", out]]) == 0
    return out


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, to damage."""
    return shutil.copytree(finished, tmp_path / "run")


@pytest.fixture(scope="module")
def runs_zip(tmp_path_factory):
    files, _ = make_runs(random.Random(0))
    return write_zip(tmp_path_factory.mktemp("lake") / "all_runs.zip", files)


# 1. Weights that do not fit their own spec ----------------------------------------------------


def _kernel(state):
    state["backbone.0.0.weight"] = torch.zeros(4, 1, 5, 5)


def _missing(state):
    del state["log_scale"]


def _extra(state):
    state["head.weight"] = torch.zeros(5, 64)


DAMAGES = {
    "kernel": (
        _kernel,
        "its tensor backbone.0.0.weight has shape (4, 1, 5, 5), but the learner its spec "
        "describes has (4, 1, 3, 3)",
    ),
    "missing": (_missing, "it has no tensor log_scale (shape () in the learner)"),
    "extra": (_extra, "it has a tensor head.weight (shape (5, 64)) the learner lacks"),
}


def damage(run, change) -> None:
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    change(payload["state"]["model"])
    torch.save(payload, run / "checkpoint.pt")


@pytest.mark.parametrize("kind", DAMAGES)
def test_weights_that_do_not_fit_the_spec_are_one_line_everywhere(kind, run, runs_zip, capsys):
    change, problem = DAMAGES[kind]
    damage(run, change)
    checkpoint = run / "checkpoint.pt"
    said = f"{checkpoint} does not fit its own spec: {problem}; the file is damaged or was "
    before = digests(run)
    refused(capsys, "eval", checkpoint, "--episodes", 2, "--no-progress", match=said)
    refused(capsys, "eval-runs", checkpoint, "--runs", runs_zip, match=said)
    refused(capsys, *RUN, "--steps", 4, "--out", run, "--resume", match=said)
    assert digests(run) == before, "a refused resume changes nothing"
    with pytest.raises(ValueError, match="written by other code") as error:
        fsl.load_learner(checkpoint, n_way=5)
    assert said in str(error.value)


def test_a_spec_with_another_width_names_the_tensor_and_both_shapes(run, capsys):
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload["spec"]["hidden_channels"] = 8
    torch.save(payload, run / "checkpoint.pt")
    refused(
        capsys,
        "eval",
        run / "checkpoint.pt",
        "--no-progress",
        match="its tensor backbone.0.0.weight has shape (4, 1, 3, 3), but the learner its spec "
        "describes has (8, 1, 3, 3)",
    )


def test_saved_optimizer_state_that_does_not_fit_is_named(run, capsys):
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload["state"]["optimizer"]["param_groups"].append(
        dict(payload["state"]["optimizer"]["param_groups"][0])
    )
    torch.save(payload, run / "checkpoint.pt")
    refused(
        capsys,
        *RUN,
        "--steps",
        4,
        "--out",
        run,
        "--resume",
        match=f"{run / 'checkpoint.pt'}: its saved optimizer state does not fit this run's "
        "optimizer (",
    )


# 2. A run whose checkpoint is damaged ---------------------------------------------------------


def test_a_truncated_checkpoint_is_a_damaged_run_with_a_way_on(run, capsys):
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    before = digests(run)
    said = (
        f"{run} holds an fslearn run (protonet on embedded, says its config.json) whose "
        "checkpoint.pt is damaged ("
    )
    for resume in (["--resume"], []):
        err = refused(capsys, *RUN, "--steps", 4, "--out", run, *resume, match=said)
        assert "put back a whole copy of checkpoint.pt" in err
        assert (
            "delete checkpoint.pt, config.json, metrics.jsonl, results.json there to start it "
            "again, or choose another --out" in err
        )
        assert "not an fslearn run" not in err
    assert digests(run) == before
    # Either way on that the message gives is open.
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl", "results.json"):
        (run / name).unlink()
    check_folder(run, resume=False)


def test_a_truncated_checkpoint_without_a_record_is_not_a_run(run, capsys):
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    (run / "config.json").unlink()
    refused(
        capsys,
        *RUN,
        "--out",
        run,
        "--resume",
        match="it is not an fslearn run (its checkpoint.pt is not an fslearn checkpoint (",
    )
