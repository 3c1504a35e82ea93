"""``fslearn train --normalize --photo-augment`` on a folder of colour images: the training
split's channel statistics are measured, printed, recorded and saved with the learner, the
training episodes are augmented, and ``fslearn eval`` normalises as training did."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import fslearn as fsl

from synthetic import digests, fails, fslearn


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_cache):
    """Never write to the user's real cache."""
    return tmp_cache


def write_classes(root, classes: dict, seed: int):
    """PNGs of random sizes under ``root/class/``, each channel with a brightness of its own."""
    rng = np.random.default_rng(seed)
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            height, width = rng.integers(14, 40, size=2)
            pixels = rng.integers(0, 256, (height, width, 3)) * np.array([0.9, 0.5, 0.2])
            Image.fromarray(pixels.astype(np.uint8), "RGB").save(root / name / f"{i}.png")


@pytest.fixture
def colour_folder(tmp_path):
    data = tmp_path / "data"
    write_classes(data / "train", {"a": 4, "b": 5, "c": 3}, seed=0)  # ragged classes
    write_classes(data / "test", {"d": 4, "e": 3, "f": 5}, seed=1)
    return data


def folder_options(data):
    return ["--dataset", "folder", "--data-root", data, "--image-size", 16, "--no-progress"]


TRAIN = {
    "protonet": ["--n-way", 3, "--n-shot", 1, "--n-query", 1],
    "maml": ["--n-way", 3, "--n-shot", 1, "--n-query", 1, "--meta-batch", 1, "--test-steps", 1],
}


@pytest.mark.parametrize("method", list(TRAIN))
def test_train_normalizes_by_the_train_splits_statistics_and_eval_keeps_them(
    method, colour_folder, tmp_path
):
    out = tmp_path / "run"
    common = folder_options(colour_folder)
    result = fslearn(
        "train", method, *common, "--recipe", "quick", "--hidden-channels", 4, "--steps", 2,
        *TRAIN[method], "--test-n-way", 3, "--test-n-query", 2, "--test-episodes", 2, "--normalize",
        "--photo-augment", "--out", out,
    )  # fmt: skip
    train = fsl.load_dataset("folder", "train", root=colour_folder, image_size=16, progress=False)
    mean, std = fsl.channel_stats(train)
    expected = {"mean": mean.tolist(), "std": std.tolist()}
    rounded = [[round(v, 4) for v in values] for values in expected.values()]
    assert (
        "normalising every image by the training split's channel statistics: "
        f"mean {rounded[0]}, std {rounded[1]}"
    ) in result.stdout
    # recorded where the run's other options are
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["normalize"] is True and config["settings"]["photo_augment"] is True
    assert config["channel_stats"] == expected
    results = json.loads((out / "results.json").read_text())
    assert results["channel_stats"] == expected and results["photo_augment"] is True
    saved = fsl.read_checkpoint(out / "checkpoint.pt")
    assert saved["spec"]["normalize"] == expected
    assert saved["config"]["transform"] == repr(fsl.Augment())
    assert saved["config"]["normalize"] is True
    # the loaded learner starts with those statistics
    learner = fsl.load_learner(out / "checkpoint.pt", n_way=3)
    normalize = (learner.model if method == "maml" else learner).backbone[0]
    assert isinstance(normalize, fsl.Normalize)
    assert torch.equal(normalize.mean, mean) and torch.equal(normalize.std, std)
    # eval takes them from the checkpoint, and scores the test that train ran
    evaluated = fslearn(
        "eval", out / "checkpoint.pt", *common[2:], "--n-way", 3, "--n-query", 2,
        "--episodes", 2, "--json",
    )  # fmt: skip
    assert json.loads(evaluated.stdout)["accuracy"] == results["accuracy"]


def test_resuming_without_normalize_is_refused_and_changes_nothing(colour_folder, tmp_path):
    out = tmp_path / "run"
    run = [
        "train", "protonet", *folder_options(colour_folder), "--recipe", "quick",
        "--hidden-channels", 4, *TRAIN["protonet"], "--test-n-way", 3, "--test-n-query", 2,
        "--test-episodes", 2, "--out", out,
    ]  # fmt: skip
    fslearn(*run, "--steps", 2, "--normalize")
    before = digests(out)
    fails(*run, "--steps", 4, "--resume", match="it was saved with normalize={'mean': [")
    assert digests(out) == before


@pytest.mark.parametrize(
    "arguments, match",
    [
        (
            ["siamese", "--photo-augment"],
            "fslearn train: error: --photo-augment does not apply to siamese: it augments the "
            "training episodes of protonet, maml, fomaml and anil; see `fslearn train --help`",
        ),
        (
            ["pretrain", "--photo-augment"],
            "--photo-augment does not apply to pretrain",
        ),
        (
            ["protonet", "--photo-augment"],
            "fslearn train: error: --photo-augment (random crops, flips and colour jitter) is for "
            "colour photos, not the one-channel characters of embedded: characters have their "
            "own distortions, --augment STRENGTH (protonet)",
        ),
        (
            ["maml", "--photo-augment", "--dataset", "folder", "--channels", "1"],
            "not the one-channel characters of --dataset folder --channels 1: characters have",
        ),
    ],
)
def test_photo_augment_is_refused_where_it_does_not_apply(arguments, match, tmp_path):
    out = tmp_path / "run"
    fails("train", *arguments, "--data-root", tmp_path, "--out", out, match=match)
    assert not out.exists()
