"""Shared pytest set-up for the unit tests, the chapters (nbval) and the browser test."""

import os

import pytest

# Plots in tests and chapters render off-screen.
os.environ.setdefault("MPLBACKEND", "Agg")
# Under pytest-xdist the workers already fill the cores: one thread each (and in the
# processes they start) instead of every worker's threads fighting over every core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after OMP_NUM_THREADS, which torch reads when imported)

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Every available device: CPU always, CUDA when a GPU is present."""
    return torch.device(request.param)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty fslearn cache folder for the test."""
    monkeypatch.setenv("FSLEARN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
