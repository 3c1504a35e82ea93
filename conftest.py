"""Shared pytest set-up for the unit tests, the chapters (nbval) and the browser test."""

import os

import pytest
import torch

# Plots in tests and chapters render off-screen.
os.environ.setdefault("MPLBACKEND", "Agg")

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
