"""Training across processes: torchrun with gloo on this CPU, against one process.

Every run is a real ``torchrun … -m fslearn train`` on loopback addresses, bounded in time.

Weights are compared parameter by parameter, after Adam. Adam moves an element by about
``lr`` per step whatever its gradient's size, so differences are measured in units of
``steps × lr``. Two runs differ by the rounding of a sum of shares against the whole
(float32, about 1e-5 of a layer's largest gradient element), which Adam turns into a
sizeable fraction of a step in the few elements whose gradient is that small (ANIL's
backbone has some): each parameter's largest difference may be a tenth of the unit and its
RMS difference a two-hundredth. A wrong share moves most elements by whole steps; the scale
of the averaged gradients, which Adam does not see, is checked on its own, on
:class:`World`'s collectives against one process's arithmetic. The convolution biases in
front of a batch norm (and, for a prototypical network, the last batch norm's shift, which
no distance sees) have a true gradient of exactly zero, so Adam turns rounding noise into
steps of up to ``lr`` each in any two runs, one process or several: those may differ by the
whole unit and change nothing the network computes.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fslearn as fsl
from fslearn.cli import main as fsl_main
from fslearn.distributed import SINGLE, World, world_from_env

TINY = ["--dataset", "embedded", "--recipe", "quick", "--hidden-channels", "8"]
TEST = ["--test-episodes", "12", "--test-n-query", "3", "--no-progress", "--device", "cpu"]
LR = 1e-3  # Adam's step, the quick recipe's learning rate
# Parameters whose true gradient is zero (see the module's docstring).
ZERO_GRADIENT = ("0.bias",)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(*launch: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "fslearn", "train"]


def _run(command, timeout=240):
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def train(out, *args, processes=1, timeout=240):
    if processes == 1:
        command = [sys.executable, "-m", "fslearn", "train"]
    else:
        launch = ["--nproc-per-node", str(processes), "--master-addr", "127.0.0.1"]
        command = _torchrun(*launch, "--master-port", str(_port()))
    return _run([*command, *args, *TINY, *TEST, "--out", str(out)], timeout)


def weights(out) -> dict:
    return fsl.read_checkpoint(out / "checkpoint.pt")["state"]["model"]


def assert_same_weights(a, b, steps, lr=LR, zero_gradient=ZERO_GRADIENT):
    """Every floating tensor of ``a`` and ``b`` within the module docstring's bounds, in units
    of ``steps × lr``: the most by which Adam can move an element."""
    for name, value in a.items():
        if not value.is_floating_point():
            assert torch.equal(value, b[name]), name
            continue
        difference = (value - b[name]).abs()
        unit = steps * lr
        if name.endswith(zero_gradient) or "running_mean" in name:  # the mean follows them
            worst = difference.max().item()
            assert worst <= 1.01 * unit, f"{name}: max |difference| {worst:.3g} > {unit:.3g}"
            continue
        worst, rms = difference.max().item(), difference.square().mean().sqrt().item()
        assert worst <= unit / 10, f"{name}: max |difference| {worst:.3g} > {unit / 10:.3g}"
        assert rms <= unit / 200, f"{name}: RMS difference {rms:.3g} > {unit / 200:.3g}"


def results(out) -> dict:
    import json

    return json.loads((out / "results.json").read_text())


def test_one_process_is_the_whole_world(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    world = world_from_env()
    assert world == SINGLE and world.is_main
    assert world.share(7, "meta_batch") == slice(0, 7)
    values = torch.arange(3.0)
    assert world.mean(values) is values and world.gather(values) is values


def test_shares_are_contiguous_and_refuse_a_remainder():
    shares = [World(rank, 4).share(8, "meta_batch") for rank in range(4)]
    assert [list(range(8))[s] for s in shares] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError, match=r"meta_batch=6 cannot be split evenly over 4 processes"):
        World(1, 4).share(6, "meta_batch")


def test_malformed_torchrun_variables_are_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ValueError, match="RANK"):
        world_from_env()
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5 is outside"):
        world_from_env()


#: Run in each of two processes by the test below: World's collectives against the arithmetic
#: of one process, which every rank can do itself since the data is its rank's function.
COLLECTIVES = r"""
import os
import torch
from fslearn.distributed import ProcessGroupError, world_from_env

world = world_from_env(timeout=20)
r, W = world.rank, world.size
torch.manual_seed(0)

# average_gradients: the mean of the ranks' gradients, a missing one counted as zeros
a, b = torch.zeros(3, requires_grad=True), torch.zeros(2, 2, requires_grad=True)
a.grad, b.grad = torch.full((3,), r + 1.0), torch.full((2, 2), 10.0 * r)
assert world.average_gradients([a, b]) == 7 * 4
assert torch.equal(a.grad, torch.full((3,), 1.5)) and torch.equal(b.grad, torch.full((2, 2), 5.0))

assert torch.equal(world.mean(torch.tensor([r, 2.0 * r])), torch.tensor([0.5, 1.0]))
assert torch.equal(world.gather(torch.full((r + 1,), float(r))), torch.tensor([0.0, 1, 1]))

# gather_rows then average_gradients: the gradient of one loss over every rank's rows
theta = torch.tensor(0.7, requires_grad=True)
rows = [torch.arange(1.0, 5.0).view(2, 2) * (k + 1) for k in range(W)]
loss = (world.gather_rows(theta * rows[r]) ** 2).sum()
loss.backward()
world.average_gradients([theta])
whole = torch.tensor(0.7, requires_grad=True)
(torch.cat([whole * x for x in rows]) ** 2).sum().backward()
torch.testing.assert_close(theta.grad, whole.grad)

# sync_running_stats("episodes"): one process's momentum recursion over every rank's passes
def passes(k):
    g = torch.Generator().manual_seed(k)
    return [torch.randn(6, 3, generator=g) * (k + 1) + k for _ in range(3)]
norm, alone = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
before = world.running_stats(norm)
for x in passes(r):
    norm(x)
world.sync_running_stats(before, "episodes")
for k in range(W):
    for x in passes(k):
        alone(x)
torch.testing.assert_close(norm.running_mean, alone.running_mean)
torch.testing.assert_close(norm.running_var, alone.running_var)
assert int(norm.num_batches_tracked) == int(alone.num_batches_tracked) == 3 * W

assert world.first_error("rank 1 failed" if r == 1 else None) == "rank 1 failed"
world.check_same({"steps": 2, "test": {"seed": 0}})
try:
    settings = {"steps": 2 + r, "seed": 0, "test": {"n_query": 15, "seed": r}}
    world.check_same({**settings, **({"out": "b"} if r else {})}, fix="do it")
    raise AssertionError("different settings were not noticed")
except ValueError as error:
    assert str(error) == (
        "the 2 processes were started with different settings: out (rank 0: (not set); "
        'rank 1: "b"), steps (rank 0: 2; rank 1: 3), test.seed (rank 0: 0; rank 1: 1); do it'
    ), error

world.barrier()
if r == 1:
    os._exit(0)  # gone without a word: rank 0's next collective must say so
try:
    world.mean(torch.ones(1))
    raise AssertionError("a collective with a missing rank returned")
except ProcessGroupError as error:
    assert "process 0 of 2 lost the others in all_reduce" in str(error), error
print("collectives agree", flush=True)
# Out at once: a gloo group whose peer is gone sometimes aborts in its threads' teardown at
# interpreter exit ("terminate called without an active exception"), a race inside torch that
# is not what this script checks.
os._exit(0)
"""


def _by_hand(code_or_args: list[str], ranks: int = 2, env=None) -> list[subprocess.Popen]:
    """``ranks`` processes started as torchrun would start them, each with its own command."""
    base = {**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_port())}
    base.update(env or {})
    return [
        subprocess.Popen(
            [sys.executable, *code_or_args[rank]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**base, "WORLD_SIZE": str(ranks), "RANK": str(rank), "LOCAL_RANK": str(rank)},
        )
        for rank in range(ranks)
    ]


def test_the_collectives_compute_what_one_process_does():
    ranks = _by_hand([["-c", COLLECTIVES]] * 2)
    printed = [rank.communicate(timeout=120)[0] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], printed
    assert "collectives agree" in printed[0]


@pytest.mark.parametrize(
    "flag,values",
    [
        ("--steps", ("2", "3")),
        # Test settings too: each rank would score its share of other episodes, and
        # results.json would name rank 0's setting.
        ("--test-seed", ("0", "1")),
        ("--test-n-query", ("3", "4")),
    ],
)
def test_ranks_started_with_different_settings_stop_before_writing(tmp_path, flag, values):
    out = tmp_path / "run"
    command = ["-m", "fslearn", "train", "maml", "--meta-batch", "2", "--steps", "1"]
    ranks = _by_hand([[*command, *TINY, *TEST, flag, v, "--out", str(out)] for v in values])
    printed = [rank.communicate(timeout=120)[0] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [1, 1], printed
    for said in printed:
        assert said.strip() == (
            "fslearn train: error: the 2 processes were started with different settings: "
            f"{flag} (rank 0: {values[0]}; rank 1: {values[1]}); start every rank with the same "
            "command"
        ), said
    assert not out.exists()


def test_ranks_started_with_and_without_normalize_stop_before_writing(tmp_path):
    out = tmp_path / "run"
    command = ["-m", "fslearn", "train", "protonet", "--steps", "1", *TINY, *TEST]
    ranks = _by_hand([[*command, "--normalize", "--out", str(out)], [*command, "--out", str(out)]])
    printed = [rank.communicate(timeout=120)[0] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [1, 1], printed
    for said in printed:
        assert "different settings: --normalize (rank 0: true; rank 1: false)" in said, said
    assert not out.exists()


def test_a_summary_of_the_data_tells_copies_apart():
    from fslearn.cli.train_command import _data_summary

    dataset = fsl.FewShotDataset(
        torch.zeros(3, 2, 1, 4, 4, dtype=torch.uint8), ["a", "b", "c"], ["x", "x", "y"], "toy"
    )
    summary = _data_summary(dataset)
    assert summary.startswith("toy, 3 classes, 6 images, hash ")
    copy = fsl.FewShotDataset(dataset.images.clone(), ["a", "b", "c"], ["x", "x", "y"], "toy")
    assert _data_summary(copy) == summary
    copy.images[2, 1, 0, 3, 3] = 1  # one pixel of one image
    assert _data_summary(copy) != summary
    assert _data_summary(dataset.select([0, 2, 1], name="toy")) != summary  # another order
    flat = dataset.flat_images
    regrouped = fsl.FewShotDataset(flat, ["a", "b", "c"], ["x", "x", "y"], "toy", counts=[1, 2, 3])
    assert _data_summary(regrouped) != summary  # the same images, other class sizes


def test_ranks_are_named_in_runs():
    from fslearn.distributed.world import _ranks

    assert _ranks([3]) == "rank 3"
    assert _ranks([0, 1, 2, 5, 7, 8]) == "ranks 0-2, 5, 7-8"


@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_alone_stops_with_one_line_after_the_timeout(tmp_path, rank):
    """Rank 0 waits for a peer that never comes; rank 1 for a master address nobody serves."""
    port = _port()
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fslearn", "train", "maml", "--meta-batch", "2", "--steps", "1"]
        + [*TINY, *TEST, "--dist-timeout", "2", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **_env(),
            **dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2"),
            **dict(RANK=str(rank), LOCAL_RANK=str(rank)),
        },
    )
    waited = time.monotonic() - start
    assert done.returncode == 1, done.stdout + done.stderr
    said = done.stderr.strip()
    assert "\n" not in said, said  # one line: neither a traceback nor torch's logged retries
    why = "Timed out after" if rank == 0 else "nobody answered there within 2 s"
    assert said.startswith(
        f"fslearn train: error: process {rank} of 2 lost the others in joining them at "
        f"MASTER_ADDR:MASTER_PORT = 127.0.0.1:{port} ({why}"
    ), said
    assert "--dist-timeout" in said and "--resume" in said
    assert waited < 60, f"stopped after {waited:.0f} s with a 2 s timeout"
    assert not (tmp_path / "run").exists()


BAD_TIMEOUTS = ["nan", "0", "-1", "inf", "-inf", "1e10"]


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_a_bad_timeout_is_refused_in_one_process(monkeypatch, capsys, value):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"timeout must be a number of seconds > 0 and at most"):
        world_from_env(timeout=float(value))
    with pytest.raises(SystemExit) as stopped:
        fsl_main(["train", "maml", f"--dist-timeout={value}"])  # "-inf" alone reads as a flag
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "fslearn train: error: argument --dist-timeout: must be a number of seconds > 0 and at "
        f"most 1e9 (31 years); got {value!r}; see `fslearn train --help`\n"
    )


@pytest.mark.parametrize("value", [True, "10", None])
def test_a_timeout_is_a_number(value):
    with pytest.raises(ValueError, match="timeout must be"):
        world_from_env(timeout=value)


def test_a_bad_timeout_is_refused_on_every_rank(tmp_path):
    out = tmp_path / "run"
    command = ["-m", "fslearn", "train", "maml", *TINY, "--dist-timeout", "nan", "--out", str(out)]
    ranks = _by_hand([command] * 2)
    printed = [rank.communicate(timeout=120)[0] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [2, 2], printed
    for said in printed:
        assert said.strip().startswith(
            "fslearn train: error: argument --dist-timeout: must be a number of seconds > 0"
        ), said
        assert "\n" not in said.strip(), said
    assert not out.exists()


@pytest.mark.parametrize(
    "method,args,zero_gradient",
    [
        ("protonet", ["--steps", "4", "--n-way", "5", "--episodes-per-step", "2"], ("3.1.bias",)),
        ("maml", ["--steps", "4", "--meta-batch", "4"], ()),
        ("fomaml", ["--steps", "4", "--meta-batch", "4"], ()),
        ("anil", ["--steps", "4", "--meta-batch", "4"], ()),
    ],
)
def test_two_processes_train_what_one_does(tmp_path, method, args, zero_gradient):
    one, two = tmp_path / "one", tmp_path / "two"
    train(one, method, *args)
    printed = train(two, method, *args, processes=2)
    first = next(line for line in printed.splitlines() if line.startswith(method))
    assert "in 2 processes" in first, printed
    assert_same_weights(weights(one), weights(two), 4, zero_gradient=ZERO_GRADIENT + zero_gradient)
    assert results(two)["processes"] == 2
    assert results(one)["accuracy"] == results(two)["accuracy"]
    assert results(one)["ci95"] == results(two)["ci95"]
    assert not (two / "checkpoint.pt.tmp").exists()  # one writer, no stray files


@pytest.mark.parametrize(
    "method,args",
    [
        ("pretrain", ["--epochs", "1", "--batch-size", "482"]),
        ("siamese", ["--steps", "4", "--n-pairs", "64"]),
        ("triplet", ["--steps", "4"]),
    ],
)
def test_a_split_batch_trains_close_to_one_process(tmp_path, method, args):
    """Each rank normalises its share of every batch: close to one process, not equal."""
    one, two = tmp_path / "one", tmp_path / "two"
    train(one, method, *args)
    train(two, method, *args, processes=2)
    a, b = weights(one), weights(two)
    kernels = [name for name, value in a.items() if value.dim() > 1]  # conv and linear weights
    assert kernels
    for name in kernels:
        relative = ((a[name] - b[name]).norm() / a[name].norm()).item()
        assert relative < 0.05, f"{name}: relative difference {relative:.3g}"
    assert abs(results(one)["accuracy"] - results(two)["accuracy"]) < 0.1
    assert results(two)["processes"] == 2


def test_a_divisor_is_required(tmp_path):
    launch = ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_port())]
    command = [*_torchrun(*launch), "maml", "--steps", "2", "--meta-batch", "3"]
    done = subprocess.run(
        [*command, *TINY, *TEST, "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=240,
        env=_env(),
    )
    assert done.returncode != 0
    assert "meta_batch=3 cannot be split evenly over 2 processes" in done.stderr
    assert not (tmp_path / "run").exists()


def test_two_nodes_of_one_process_each(tmp_path):
    port = _port()
    out = tmp_path / "nodes"
    args = ["maml", "--steps", "3", "--meta-batch", "2", *TINY, *TEST, "--out", str(out)]
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
    nodes = [
        subprocess.Popen(
            [
                *_torchrun("--nnodes", "2", "--nproc-per-node", "1", *rendezvous),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        for _ in range(2)
    ]
    printed = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], printed
    train(tmp_path / "one", "maml", "--steps", "3", "--meta-batch", "2")
    assert_same_weights(weights(tmp_path / "one"), weights(out), steps=3)


def test_a_run_resumes_on_another_number_of_processes(tmp_path):
    args = ["maml", "--meta-batch", "4", "--checkpoint-every", "1"]
    straight, moved = tmp_path / "straight", tmp_path / "moved"
    train(straight, *args, "--steps", "4")
    train(moved, *args, "--steps", "2", processes=2)
    train(moved, *args, "--steps", "4", "--resume")
    assert_same_weights(weights(straight), weights(moved), steps=4)
    assert results(straight)["accuracy"] == results(moved)["accuracy"]


def _workers_once_checkpointed(job: subprocess.Popen, out) -> list[int]:
    """The two worker pids of the torchrun ``job``, once its first checkpoint is on disk."""
    deadline = time.monotonic() + 180
    while not (out / "checkpoint.pt").exists():
        assert job.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    found = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True)
    workers = [int(pid) for pid in found.stdout.split()]
    assert len(workers) == 2, workers
    return workers


def test_a_killed_worker_is_restarted_and_the_run_continues(tmp_path):
    out = tmp_path / "run"
    # The c10d rendezvous (here --standalone's, on localhost) is what a restart needs: with
    # the static one a restarted rank can be handed the dead rank's old address.
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_port()}"]
    command = _torchrun("--nproc-per-node", "2", "--max-restarts", "1", *rendezvous)
    args = ["maml", "--steps", "60", "--meta-batch", "2", "--checkpoint-every", "5"]
    job = subprocess.Popen(
        [*command, *args, "--resume", "auto", *TINY, *TEST, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    try:
        workers = _workers_once_checkpointed(job, out)
        os.kill(workers[-1], signal.SIGKILL)
        printed = job.communicate(timeout=300)[0]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, printed
    history = fsl.read_checkpoint(out / "checkpoint.pt")["history"]
    assert history["steps"] == 60 and len(history["loss"]) == 60
    assert "failed (exitcode: -9)" in printed  # torchrun saw the worker die ...
    assert "resuming the run" in printed  # ... and the restarted workers continued it
    assert results(out)["processes"] == 2


def _running(pid: int) -> bool:
    """Whether ``pid`` runs still (not exited, nor a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_a_hanging_worker_stops_the_others_within_the_timeout(tmp_path):
    out = tmp_path / "run"
    launch = ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_port())]
    args = ["maml", "--steps", "100000", "--meta-batch", "2", "--checkpoint-every", "5"]
    job = subprocess.Popen(
        [*_torchrun(*launch), *args, "--dist-timeout", "10", *TINY, *TEST, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    workers = []
    try:
        workers = _workers_once_checkpointed(job, out)
        os.kill(workers[1], signal.SIGSTOP)  # alive, holding its sockets, silent
        stopped = time.monotonic()
        while _running(workers[0]) and time.monotonic() < stopped + 120:
            time.sleep(0.2)
        waited = time.monotonic() - stopped
    finally:
        # torchrun would wait out its grace period for the stopped worker; no need to.
        # Its workers lead sessions of their own: they are killed one by one.
        for pid in [*workers, job.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    printed = job.communicate(timeout=60)[0]
    assert re.search(r"fslearn train: error: process [01] of 2 lost the others", printed), printed
    assert "--resume" in printed
    assert waited < 60, f"the other worker stopped after {waited:.0f} s, with a 10 s timeout"
    fsl.read_checkpoint(out / "checkpoint.pt")  # the last checkpoint is whole
    assert not list(out.glob("*.tmp"))
