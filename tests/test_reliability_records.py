"""Checkpoints whose weights do not fit their spec, runs whose checkpoint is damaged, output
paths checked before any long work, and records written only for runs that ran."""

import importlib.util
import json
import random
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

import fslearn as fsl
from fslearn.cli import main
from fslearn.cli.run_folder import check_folder

from synthetic import TINY, digests, make_runs, write_zip

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
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


# 3. Output paths are checked before the long work ----------------------------------------------


def no_work(*args, **kwargs):
    raise AssertionError("the long work started before the output path was checked")


@pytest.fixture
def read_only(monkeypatch):
    """Make ``folder`` refuse new files, as a read-only mount does (root writes anywhere)."""
    import fslearn.common as common

    real = common.tempfile.TemporaryFile
    refused_in = []

    def temporary_file(*args, dir=None, **kwargs):
        if any(Path(dir) == folder or folder in Path(dir).parents for folder in refused_in):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(common.tempfile, "TemporaryFile", temporary_file)
    return refused_in.append


def test_bench_out_that_cannot_be_written_is_refused_before_timing(
    tmp_path, monkeypatch, capsys, read_only
):
    from fslearn import bench

    for name in ("maml_speed", "sampler_speed", "maml_strategy_speed"):
        monkeypatch.setattr(bench, name, no_work)
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    quick = ["bench", "--device", "cpu", "--meta-batch", 1, "--iterations", 1, "--no-compile"]
    out = a_file / "maml.json"
    refused(
        capsys,
        *quick,
        "--out",
        out,
        match=f"--out {out} cannot be written ({a_file} is a file, not a folder): choose "
        "another --out",
    )
    locked = tmp_path / "shared"
    locked.mkdir()
    read_only(locked)
    refused(
        capsys,
        *quick,
        "--out",
        locked / "new" / "maml.json",
        match=f"(cannot write in {locked}: Permission denied)",
    )
    assert a_file.read_text() == "mine\n" and list(locked.iterdir()) == []


def test_train_out_that_cannot_be_written_is_refused_before_the_data(
    tmp_path, monkeypatch, capsys, read_only
):
    from fslearn.cli import train_command

    monkeypatch.setattr(train_command, "dataset_for", no_work)
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    out = a_file / "run"
    refused(
        capsys,
        *RUN,
        "--out",
        out,
        match=f"--out {out} cannot be written ({a_file} is a file): choose another --out",
    )
    read_only(tmp_path / "shared")
    (tmp_path / "shared").mkdir()
    refused(
        capsys,
        *RUN,
        "--out",
        tmp_path / "shared" / "run",
        match=f"(cannot write in {tmp_path / 'shared'}: Permission denied): choose another --out",
    )
    assert a_file.read_text() == "mine\n" and list((tmp_path / "shared").iterdir()) == []


def test_check_writable_creates_nothing(tmp_path):
    from fslearn.writable import check_writable

    assert check_writable(tmp_path / "a" / "b" / "x.json", flag="--out") == (
        tmp_path / "a" / "b" / "x.json"
    )
    assert check_writable(tmp_path / "run", flag="--out", folder=True) == tmp_path / "run"
    with pytest.raises(OSError, match=f"--out {tmp_path} cannot be written .*is a folder"):
        check_writable(tmp_path, flag="--out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", ["bench_maml.py", "bench_minimal.py"])
def test_benchmark_scripts_check_out_before_timing(script, tmp_path, monkeypatch, capsys):
    from fslearn import bench

    for name in ("maml_speed", "minimal_ablation"):
        monkeypatch.setattr(bench, name, no_work)
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    argv = [script, "--device", "cpu", "--out", str(a_file / "x.json")]
    if script == "bench_minimal.py":
        argv += ["--data-root", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        load_script(script).main()
    assert stop.value.code == 2
    assert f"cannot be written ({a_file} is a file, not a folder)" in capsys.readouterr().err


# 4. The GPU check writes a record only for a run that ran ---------------------------------------


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), BENCHMARKS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load_script("gpu_check.py")
GOOD = {"a record": "of a run that ran"}


@pytest.fixture
def scripts(tmp_path):
    """Prepared chapter scripts for one chapter, whose script does nothing."""
    folder = tmp_path / "scripts"
    folder.mkdir()
    chapter = gpu_check.TINY_CHAPTERS[0]
    (folder / f"{chapter}.py").write_text("pass\n")
    manifest = {chapter: gpu_check.md_hash(gpu_check.CHAPTERS / f"{chapter}.md")}
    (folder / gpu_check.MANIFEST).write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def record(tmp_path):
    """A good record already there, which a failed check must leave alone."""
    path = tmp_path / "record.json"
    path.write_text(json.dumps(GOOD))
    return path


def check(scripts, record, *options, tiny=True) -> list[str]:
    argv = ["run", "--device", "cpu", *["--tiny"] * tiny, "--scripts", scripts, "--out", record]
    return [str(arg) for arg in [*argv, *options]]


@pytest.mark.parametrize("deadline", ["0", "-5", "nan", "inf", "soon"])
def test_a_deadline_that_is_no_time_is_refused_first(
    deadline, scripts, record, monkeypatch, capsys
):
    monkeypatch.setattr(gpu_check, "unit_tests", no_work)
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(check(scripts, record, "--deadline", deadline))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"--deadline: must be a number of seconds above 0; got {deadline!r}" in err
    assert json.loads(record.read_text()) == GOOD


def test_a_run_whose_steps_did_not_run_writes_no_record(scripts, record, capsys):
    # Time for pytest to start, not to count anything; nothing else starts.
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(check(scripts, record, "--deadline", "0.01"))
    message = str(stop.value.code)
    assert message.startswith(f"{record} not written: the unit tests (pytest counted none, ")
    assert (
        f"the chapters ['{gpu_check.TINY_CHAPTERS[0]}']; the benchmarks did not run, so the "
        "record would not say what this machine does (a record already there is kept). Give the "
        "run more time (--deadline, now 0.01 s" in message
    )
    assert json.loads(record.read_text()) == GOOD


def test_write_validation_refuses_a_record_in_which_nothing_ran(record):
    from fslearn.bench import validation

    empty = {
        "tests": {"seconds": 0.0, "timed_out": True, "files": {}},
        "chapters": [{"chapter": "03_episodes", "passed": False, "seconds": 0.0,
                      "error": "not run: the run's deadline had passed"}],
        "benchmarks": {"seconds": 0.0, "error": "not run: the run's deadline had passed"},
    }  # fmt: skip
    with pytest.raises(ValueError, match="not written: the unit tests"):
        validation.write_validation(record, empty)
    assert json.loads(record.read_text()) == GOOD


@pytest.mark.parametrize(
    "manifest, match",
    [
        ('{"03_episodes": "ab', "manifest.json cannot be read (Unterminated string"),
        ("[1, 2]", "manifest.json is not a manifest of chapter hashes: run `make gpu-check"),
        ("{}", "manifest.json lists no chapter: run `make gpu-check"),
        ('{"99_gone": "abc"}', "no chapter ['99_gone'] in "),
    ],
)
def test_a_bad_manifest_is_refused_before_anything_runs(
    manifest, match, scripts, record, monkeypatch
):
    monkeypatch.setattr(gpu_check, "unit_tests", no_work)
    (scripts / gpu_check.MANIFEST).write_text(manifest)
    with pytest.raises(SystemExit, match=re.escape(match)):
        gpu_check.main(check(scripts, record, tiny=False))
    assert json.loads(record.read_text()) == GOOD


def test_a_manifest_whose_script_is_missing_is_refused_before_anything_runs(
    scripts, record, monkeypatch
):
    monkeypatch.setattr(gpu_check, "unit_tests", no_work)
    (scripts / f"{gpu_check.TINY_CHAPTERS[0]}.py").unlink()
    with pytest.raises(SystemExit, match="chapter scripts missing or older than their .md"):
        gpu_check.main(check(scripts, record))
    assert json.loads(record.read_text()) == GOOD


@pytest.mark.parametrize(
    "options, flag",
    [
        (["--tests", "tests/no_such_test.py"], "--tests ['tests/no_such_test.py']: no such"),
        (["--work", "{file}/work"], "--work {file}/work cannot be written ({file} is a file"),
    ],
)
def test_gpu_check_paths_are_checked_before_anything_runs(
    options, flag, scripts, record, tmp_path, monkeypatch
):
    monkeypatch.setattr(gpu_check, "unit_tests", no_work)
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    options = [option.format(file=a_file) for option in options]
    with pytest.raises(SystemExit, match=re.escape(flag.format(file=a_file))):
        gpu_check.main(check(scripts, record, *options))
    out = a_file / "record.json"
    with pytest.raises(SystemExit, match=re.escape(f"--out {out} cannot be written ({a_file}")):
        gpu_check.main(check(scripts, out))
    assert json.loads(record.read_text()) == GOOD and a_file.read_text() == "mine\n"
