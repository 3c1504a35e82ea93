"""Training across processes: torchrun with gloo on this CPU, against one process.

Every run is a real ``torchrun … -m fslearn train`` on loopback addresses, bounded in time.
Weights are compared parameter by parameter. The tolerance: 1e-5 for every parameter that
receives a gradient; the convolution biases in front of a batch norm (and, for a
prototypical network, the last batch norm's shift, which no distance sees) have a true
gradient of exactly zero, so Adam turns rounding noise into steps of up to ``lr`` each in
any two runs, one process or several: those may differ by ``steps × lr`` and change
nothing the network computes.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import fslearn as fsl
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
    for name, value in a.items():
        if not value.is_floating_point():
            assert torch.equal(value, b[name]), name
            continue
        difference = (value - b[name]).abs().max().item()
        limit = steps * lr * 1.01 if name.endswith(zero_gradient) else 1e-5
        if "running_mean" in name:  # follows the biases in front of it
            limit = max(limit, steps * lr * 1.01)
        assert difference <= limit, f"{name}: max |difference| {difference:.3g} > {limit:.3g}"


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


@pytest.mark.parametrize(
    "method,args,zero_gradient",
    [
        ("protonet", ["--steps", "4", "--n-way", "5", "--episodes-per-step", "2"], ("3.1.bias",)),
        ("maml", ["--steps", "4", "--meta-batch", "4"], ()),
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


def test_pre_training_over_a_split_batch_is_close(tmp_path):
    """Each rank normalises its half of every batch: close to one process, not equal."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["pretrain", "--epochs", "1", "--batch-size", "482"]
    train(one, *args)
    train(two, *args, processes=2)
    a, b = weights(one), weights(two)
    for name in ("backbone.1.0.weight", "head.weight"):
        relative = ((a[name] - b[name]).norm() / a[name].norm()).item()
        assert relative < 0.05, f"{name}: relative difference {relative:.3g}"
    assert abs(results(one)["accuracy"] - results(two)["accuracy"]) < 0.1


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
        deadline = time.monotonic() + 180
        while not (out / "checkpoint.pt").exists():
            assert job.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        workers = subprocess.run(
            ["pgrep", "-P", str(job.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(workers) == 2, workers
        os.kill(int(workers[-1]), signal.SIGKILL)
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
