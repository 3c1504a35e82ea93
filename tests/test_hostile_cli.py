"""The `fslearn` command line used as a hostile user would: every bad request is refused with one
line on stderr that names the values and the fix, and changes nothing in --out."""

import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fslearn as fsl
from fslearn.cli.run_folder import RunLock
from fslearn.cli.support import UsageError
from fslearn.training.checkpoint import FORMAT

from synthetic import TINY, digests, fails, fslearn, make_runs, pattern_dataset, write_zip

#: A finished run: 4 steps, checkpoints at steps 2 and 4.
RUN = ["train", "protonet", *TINY, "--checkpoint-every", 2]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    fslearn(*RUN, "--steps", 4, "--out", out)
    return out


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, to attack."""
    return shutil.copytree(finished, tmp_path / "run")


def records(out, drop=("time",)) -> list[dict]:
    """The run's metrics.jsonl, without the fields ``drop`` (clock times differ between runs)."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


def no_temporary_files(folder) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".stale"))]


# 1. Files of the user's in --out --------------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [
        ["config.json"],
        ["metrics.jsonl"],
        ["results.json"],
        ["checkpoint.pt"],
        ["results.json", "config.json"],
    ],
)
def test_a_new_run_never_overwrites_files_of_the_users(names, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    for name in names:
        (out / name).write_text(f"the user's own {name}\n")
    (out / "notes.txt").write_text("not a file fslearn writes\n")
    before = digests(out)
    listed = ", ".join(
        sorted(names, key=["checkpoint.pt", "config.json", "metrics.jsonl", "results.json"].index)
    )
    refusal = fails(
        *RUN, "--out", out, match=f"holds {listed}, which fslearn train would overwrite"
    )
    assert refusal.stderr.rstrip().endswith(": choose another --out")
    resumed = (
        "its checkpoint.pt is not an fslearn checkpoint"
        if "checkpoint.pt" in names
        else f"there is no checkpoint at {out / 'checkpoint.pt'}"
    )
    fails(*RUN, "--out", out, "--resume", match=resumed)
    assert digests(out) == before


def test_resume_refuses_a_folder_that_is_not_an_fslearn_run(run, tmp_path):
    (run / "config.json").write_text(json.dumps({"method": "my own experiment"}))
    before = digests(run)
    fails(
        *RUN,
        "--steps",
        6,
        "--out",
        run,
        "--resume",
        match="it is not an fslearn run (its config.json is not the record of its checkpoint's "
        "protonet run on embedded)",
    )
    fails(*RUN, "--steps", 2, "--out", run, match="not an fslearn run")
    assert digests(run) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save({"conv.weight": torch.zeros(2)}, foreign / "checkpoint.pt")
    before = digests(foreign)
    fails(
        *RUN,
        "--steps",
        2,
        "--out",
        foreign,
        "--resume",
        match="its checkpoint.pt is not an fslearn checkpoint",
    )
    assert digests(foreign) == before
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    fails(*RUN, "--steps", 2, "--out", a_file, match=f"--out {a_file} is a file, not a folder")
    assert a_file.read_text() == "mine\n"


# 2. Everything is checked before anything is written ------------------------------------------


@pytest.mark.parametrize(
    "options, match",
    [
        (["--steps", 2], "it is at steps=4, past this run's steps=2; ask for steps ≥ 4 (--steps 4"),
        (["--steps", 6, "--n-way", 6], "saved with n_way=20 but this run has n_way=6"),
        (["--steps", 6, "--lr", 0.5], "saved with lr=0.001 but this run has lr=0.5"),
        (
            ["--steps", 6, "--test-n-way", 700],
            "n_way=700 but embedded(seed=0, 28px) evaluation has only 659",
        ),
        (["--steps", 6, "--device", "nonsense"], "--device 'nonsense' is not a device name"),
    ],
)
def test_a_refused_resume_changes_nothing(run, options, match):
    before = digests(run)
    result = fails(*RUN, *options, "--out", run, "--resume", match=match)
    assert result.stdout == ""  # refused before it started
    assert digests(run) == before and no_temporary_files(run)


def test_a_pretrained_run_refuses_fewer_epochs(tmp_path):
    out = tmp_path / "pretrain"
    fslearn("train", "pretrain", *TINY, "--epochs", 2, "--out", out)
    before = digests(out)
    fails(
        "train",
        "pretrain",
        *TINY,
        "--epochs",
        1,
        "--out",
        out,
        "--resume",
        match="it is at epochs=2, past this run's epochs=1; ask for epochs ≥ 2 (--epochs 2 or",
    )
    assert digests(out) == before


# 3. One run per folder at a time --------------------------------------------------------------


def start(*args):
    """Start `python -m fslearn ARGS`, with Ctrl-C as in a terminal (a background shell ignores
    it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fslearn", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(path, process, seconds=300):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "shared"
    first = start(*RUN, "--steps", 100_000, "--checkpoint-every", 2, "--out", out)
    try:
        wait_for(out / "checkpoint.pt", first)  # it holds the lock and has written a run
        lock = out / "fslearn.lock"
        assert json.loads(lock.read_text())["pid"] == first.pid
        for resume in ([], ["--resume"]):
            fails(
                *RUN,
                "--steps",
                100_000,
                "--out",
                out,
                *resume,
                match=f"is in use by another fslearn train (PID {first.pid} on "
                f"{socket.gethostname()}",
            )
        assert (
            f"lock file {lock}" in fails(*RUN, "--out", out, "--resume", match="wait for it").stderr
        )
    finally:
        first.kill()  # SIGKILL: no chance to remove the lock
        first.communicate()
    assert lock.exists()
    before = digests(out)
    refused = fslearn(
        *RUN, "--steps", 100_000, "--out", out, "--resume", "--device", "cuda:99", check=False
    )
    assert refused.returncode == 1 and digests(out) == before  # a refusal does not take over
    done = fslearn(
        *RUN,
        "--steps",
        fsl.read_checkpoint(out / "checkpoint.pt")["history"]["steps"] + 2,
        "--out",
        out,
        "--resume",
    )
    assert (
        f"note: took over {lock}, left by PID {first.pid}, which is no longer running"
        in done.stderr
    )
    assert not lock.exists()


def test_ctrl_c_and_sigterm_remove_the_lock_and_leave_no_files(tmp_path):
    for number, code in ((signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)):
        out = tmp_path / f"stopped-{number}" / "run"
        process = start(*RUN, "--steps", 100_000, "--checkpoint-every", 100_000, "--out", out)
        wait_for(out / "fslearn.lock", process)
        time.sleep(1)
        process.send_signal(number)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == code, stderr
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
        assert "--resume" in stderr
        assert not (tmp_path / f"stopped-{number}").exists()  # nothing was saved: no folders


@pytest.mark.parametrize(
    "lock, match",
    [
        ({"pid": 1, "host": "another-machine", "since": "today"}, "PID 1 on another-machine"),
        ({}, "which names no process"),
    ],
)
def test_a_lock_this_host_cannot_check_is_respected(run, lock, match):
    (run / "fslearn.lock").write_text(json.dumps(lock) if lock else "")
    before = digests(run)
    result = fails(*RUN, "--steps", 6, "--out", run, "--resume", match=match)
    assert f"delete {run / 'fslearn.lock'}" in result.stderr
    assert digests(run) == before


def test_taking_the_lock_refuses_a_live_holder_and_takes_over_from_a_dead_one(tmp_path, capsys):
    """Taking the lock (not only the check before it) refuses: two runs may pass the check
    at once."""
    out = tmp_path / "run"
    out.mkdir()
    lock = out / "fslearn.lock"
    live = {"pid": os.getppid(), "host": socket.gethostname(), "since": "now"}
    lock.write_text(json.dumps(live))
    with pytest.raises(UsageError, match=f"PID {os.getppid()} on"), RunLock(out):
        pass
    assert json.loads(lock.read_text()) == live
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.write_text(json.dumps({**live, "pid": gone.pid}))
    with RunLock(out):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"left by PID {gone.pid}, which is no longer running" in capsys.readouterr().err
    assert not lock.exists() and no_temporary_files(out)


# 4. The log agrees with the checkpoint after any kill -----------------------------------------


STOP_AT_SAVE = """
from fslearn.training.checkpoint import Checkpoint

def save(self, history):
    raise KeyboardInterrupt  # Ctrl-C after the steps, before their checkpoint

Checkpoint.save = save
"""


def test_resuming_rebuilds_the_log_from_the_checkpoint(finished, tmp_path):
    straight = records(finished)
    assert [r["step"] for r in straight] == [1, 2, 3, 4]
    # Killed after the checkpoint of step 4 but before its log: the finished run is repaired.
    done = shutil.copytree(finished, tmp_path / "done")
    (done / "metrics.jsonl").write_text(
        (done / "metrics.jsonl").read_text().splitlines()[0] + '\n{"step": 2, "lo'
    )
    fslearn(*RUN, "--steps", 4, "--out", done, "--resume")
    assert records(done) == straight
    # Killed after the checkpoint of step 2, its log lost: resumed, the log is whole again
    # before the first step, even if that run is stopped before its next checkpoint ...
    half = tmp_path / "half"
    fslearn(*RUN, "--steps", 2, "--out", half)
    (half / "metrics.jsonl").unlink()
    stopped = fslearn(
        *RUN, "--steps", 4, "--out", half, "--resume", prelude=STOP_AT_SAVE, check=False
    )
    assert stopped.returncode == 130, stopped.stderr
    assert records(half) == straight[:2]
    # ... and the resumed run logs every step.
    fslearn(*RUN, "--steps", 4, "--out", half, "--resume")
    assert records(half) == straight


# 5. Impossible settings are refused before training -------------------------------------------


@pytest.mark.parametrize(
    "options, match",
    [
        (["--test-n-way", 700], "n_way=700 but embedded(seed=0, 28px) evaluation has only 659"),
        (["--test-n-shot", 10, "--test-n-query", 15], "n_shot + n_query = 10 + 15 = 25 images"),
        (["--n-shot", 15, "--n-query", 10], "the training episodes (20-way 15-shot, 10 queries"),
        (["--n-way", 1000], "n_way=1000 but embedded(seed=0, 28px) background has only 964"),
    ],
)
def test_impossible_episodes_are_refused_before_training(options, match, tmp_path):
    out = tmp_path / "new" / "run"
    result = fails(*RUN, "--steps", 2, *options, "--out", out, match=match)
    assert "--test-n-way" in result.stderr or "--n-way" in result.stderr
    assert result.stdout == "" and not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "options, match",
    [
        (["--steps", 0], "argument --steps: must be a positive integer; got '0'"),
        (["--steps", "many"], "argument --steps: must be a positive integer; got 'many'"),
        (["--lr", "nan"], "argument --lr: must be a positive, finite number; got 'nan'"),
        (["--lr", -1], "argument --lr: must be a positive, finite number; got '-1'"),
        (["--n-way", 1], "argument --n-way: must be an integer ≥ 2 (a 1-way task"),
        (["--test-episodes", 1], "argument --test-episodes: must be an integer ≥ 2"),
        (["--inner-steps", -1], "argument --inner-steps: must be an integer ≥ 0; got '-1'"),
        (["--seed", 10**30], "argument --seed: must be an integer between -2**63 and 2**63 - 2"),
    ],
)
def test_malformed_options_are_one_line(options, match, tmp_path):
    fails(*RUN, *options, "--out", tmp_path / "run", match=match, code=2)
    assert not (tmp_path / "run").exists()


def test_bench_refuses_what_it_would_ignore_or_overwrite_before_timing(tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "numbers"}\n')
    quick = ["bench", "--device", "cpu", "--meta-batch", 1, "--iterations", 1, "--no-compile"]
    for options, match in [
        (["--settings", "omniglot-20"], "unknown --settings ['omniglot-20']; choose from"),
        (["--what", "sampler", "--out", tmp_path / "x.json"], "--out apply to the MAML rows"),
        (["--what", "strategies", "--out", tmp_path / "x.json"], "--out, --no-compile apply to"),
        (["--out", tmp_path], f"--out {tmp_path} is a folder"),
        (["--out", mine], f"--out {mine} exists and is not a results file of fslearn bench"),
    ]:
        assert fails(*quick, *options, match=match).stdout == ""  # nothing was timed
    assert mine.read_text() == '{"my": "numbers"}\n' and not (tmp_path / "x.json").exists()


# 6. Devices -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs_zip(tmp_path_factory):
    files, _ = make_runs(random.Random(0))
    return write_zip(tmp_path_factory.mktemp("lake") / "all_runs.zip", files)


@pytest.mark.parametrize("device", ["nonsense", "cuda:99"])
def test_a_device_that_is_not_here_is_one_line_for_every_command(
    device, finished, runs_zip, tmp_path
):
    checkpoint = finished / "checkpoint.pt"
    commands = [
        [*RUN, "--out", tmp_path / "run"],
        ["eval", checkpoint, "--episodes", 2],
        ["eval-runs", checkpoint, "--runs", runs_zip],
        ["bench", "--what", "sampler", "--meta-batch", 1],
    ]
    for command in commands:
        result = fails(*command, "--device", device, match=f"--device {device!r}")
        assert "this machine has cpu" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "device, match",
    [("cpu:1", "no such device here")]
    + ([] if torch.cuda.is_available() else [("cuda", "CUDA is not available")]),
)
def test_a_device_this_machine_lacks_is_named_with_what_it_has(device, match, tmp_path):
    fails(*RUN, "--device", device, "--out", tmp_path / "run", match=f"{device!r}: {match}")


# 7. Checkpoint files --------------------------------------------------------------------------


def test_a_checkpoint_without_its_fields_is_refused(run, tmp_path):
    partial = tmp_path / "partial.pt"
    torch.save({"format": FORMAT, "spec": {"method": "protonet"}, "state": {}}, partial)
    fails("eval", partial, match="it lacks the fields ['config', 'history', 'rng', 'versions']")
    torch.save([1, 2], tmp_path / "list.pt")
    fails("eval", tmp_path / "list.pt", match="not an fslearn checkpoint: it holds a list")
    fails(
        "eval", run, match=f"{run} is a folder: pass the checkpoint in it, e.g. {run}/checkpoint.pt"
    )
    bare = tmp_path / "bare.pt"  # a training loop's, without a recipe: no learner to rebuild
    torch.save({**fsl.read_checkpoint(run / "checkpoint.pt"), "spec": {}}, bare)
    for command in (["eval", bare], ["eval-runs", bare, "--runs", tmp_path / "all_runs.zip"]):
        fails(*command, match="holds no learner to evaluate: its spec lacks ['method', 'image_")
    shutil.copy(partial, run / "checkpoint.pt")
    before = digests(run)
    fails(
        *RUN,
        "--steps",
        6,
        "--out",
        run,
        "--resume",
        match="its checkpoint.pt is not an fslearn checkpoint",
    )
    assert digests(run) == before


FULL_DISK = """
import errno, torch
errors = {
    "torch": RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed "
                          "writing file data/0: file write failed"),
    "os": OSError(errno.ENOSPC, "No space left on device"),
}
real_save, saves = torch.save, []

def full_disk(obj, f, *args, **kwargs):
    if ".checkpoint.pt." in str(f):
        saves.append(f)
        if len(saves) == 2:  # the second checkpoint: a part of it is written, then the disk is full
            with open(f, "wb") as file:
                file.write(b"part of a checkpoint")
            raise errors[%r]
    return real_save(obj, f, *args, **kwargs)

torch.save = full_disk
"""


@pytest.mark.parametrize("kind", ["torch", "os"])
def test_a_full_disk_keeps_the_previous_checkpoint(kind, tmp_path):
    out = tmp_path / "run"
    result = fails(
        *RUN,
        "--steps",
        4,
        "--out",
        out,
        prelude=FULL_DISK % kind,
        match=f"could not save the checkpoint {out / 'checkpoint.pt'}",
    )
    assert "the previous checkpoint there is intact. Free disk space" in result.stderr
    assert "enforce fail" not in result.stderr  # torch's C++ source location says nothing
    assert fsl.read_checkpoint(out / "checkpoint.pt")["history"]["steps"] == 2
    assert [r["step"] for r in records(out)] == [1, 2]
    assert no_temporary_files(out)
    fslearn(*RUN, "--steps", 4, "--out", out, "--resume")
    assert fsl.read_checkpoint(out / "checkpoint.pt")["history"]["steps"] == 4


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
            "data/0: file write failed"
        ),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_checkpoint_save_on_a_full_disk_raises_an_oserror_naming_the_file(
    error, tmp_path, monkeypatch
):
    path = tmp_path / "checkpoint.pt"
    options = dict(n_way=3, n_shot=1, n_query=2, hidden_channels=4, progress=False)
    fsl.train_protonet(pattern_dataset(), steps=1, **options, checkpoint=fsl.Checkpoint(path))
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"part of a checkpoint")
        raise error

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=f"could not save the checkpoint {path} ") as raised:
        fsl.train_protonet(
            pattern_dataset(), steps=2, **options, checkpoint=fsl.Checkpoint(path, resume=True)
        )
    assert "the previous checkpoint there is intact. Free disk space" in str(raised.value)
    assert "enforce fail" not in str(raised.value)
    assert path.read_bytes() == before and fsl.read_checkpoint(path)["history"]["steps"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


# 8. One error path ----------------------------------------------------------------------------

MISSING_ALPHABETS = """
import fslearn.cli.support as support

def load_dataset(name, split, **options):
    raise KeyError(%r)

support.load_dataset = load_dataset
"""


def test_library_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path):
    message = "omniglot small2 has no group(s) ['Tagalog']; it has ['Bengali', 'Latin']"
    result = fails(
        *RUN, "--out", tmp_path / "run", prelude=MISSING_ALPHABETS % message, match=message
    )
    assert result.stderr == f"fslearn train: error: {message}\n"
    bug = fslearn(
        *RUN, "--out", tmp_path / "run", prelude=MISSING_ALPHABETS % "config", check=False
    )
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "KeyError: 'config'" in bug.stderr
    assert not (tmp_path / "run").exists()


def test_diverged_training_is_one_line_and_leaves_no_files(tmp_path):
    out = tmp_path / "new" / "run"
    diverging = ["--steps", 30, "--lr", 1e30, "--checkpoint-every", 100]
    fails(*RUN, *diverging, "--out", out, match="the loss became nan at step")
    assert not (tmp_path / "new").exists()
