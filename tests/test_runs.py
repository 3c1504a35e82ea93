import random

import numpy as np
import pytest
import torch

from fslearn import OneShotRun, download_runs, evaluate_runs, load_runs
from fslearn.data import lake_runs as runs_module
from fslearn.data.archives import extract_zip

from synthetic import RUN_IMAGE_SIZE as SIZE
from synthetic import make_runs, write_zip


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    files, truth = make_runs(random.Random(0))
    return write_zip(tmp_path_factory.mktemp("runs") / "all_runs.zip", files), files, truth


@pytest.fixture(scope="module")
def loaded(replica):
    return load_runs(replica[0])


def lookup_embedding(files: dict, truth):
    """Maps each image of the replica to a one-hot of its class: a perfect embedding."""
    table = {}
    for r, labels in enumerate(truth, 1):
        for k in range(20):
            table[
                (files[f"run{r:02d}/training/class{k + 1:02d}.png"] * 255)
                .astype(np.uint8)
                .tobytes()
            ] = k
            table[
                (files[f"run{r:02d}/test/item{k + 1:02d}.png"] * 255).astype(np.uint8).tobytes()
            ] = labels[k]

    def embed(x: torch.Tensor) -> torch.Tensor:
        keys = [(image[0] * 255).round().to(torch.uint8).numpy().tobytes() for image in x]
        return torch.nn.functional.one_hot(torch.tensor([table[key] for key in keys]), 20).float()

    return embed


def test_load_from_zip(loaded, replica):
    _, files, truth = replica
    assert [run.name for run in loaded] == [f"run{r:02d}" for r in range(1, 21)]
    for run, labels in zip(loaded, truth):
        assert isinstance(run, OneShotRun)
        assert run.support_x.shape == run.query_x.shape == (20, 1, SIZE, SIZE)
        assert run.support_x.dtype == run.query_x.dtype == torch.uint8
        assert run.query_y.dtype == torch.long and run.query_y.tolist() == labels
        assert torch.equal(run.support_y, torch.arange(20))
    first = files["run01/training/class01.png"]
    assert torch.equal(loaded[0].support_x[0, 0], torch.from_numpy(first.astype(np.uint8) * 255)), (
        "ink is 255"
    )


def test_load_from_folder_and_resize(replica, loaded, tmp_path):
    folder = extract_zip(replica[0], tmp_path / "runs", progress=False)
    assert (folder / "run01" / "class_labels.txt").exists()
    from_folder = load_runs(folder)
    for a, b in zip(loaded, from_folder):
        assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
        assert torch.equal(a.query_y, b.query_y)
    assert load_runs(folder, image_size=14)[3].query_x.shape == (20, 1, 14, 14)


def test_perfect_and_constant_embeddings(loaded, replica):
    perfect = evaluate_runs(loaded, embed=lookup_embedding(*replica[1:]))
    assert perfect["errors"] == [0.0] * 20 and perfect["mean_error"] == 0.0
    # Every distance ties, so every test item goes to class 0, right for one item in 20.
    constant = evaluate_runs(loaded, embed=lambda x: torch.zeros(len(x), 8))
    assert constant["errors"] == [95.0] * 20 and constant["mean_error"] == pytest.approx(95.0)


def test_nearest_not_farthest(loaded, device):
    # Noisy copies lie nearest to their originals in pixel space.
    assert evaluate_runs(loaded, embed=torch.nn.Flatten(), device=device)["mean_error"] == 0.0


def test_learner_with_the_shared_call_shape(loaded, replica):
    embed, seen = lookup_embedding(*replica[1:]), []

    def learner(support_x, support_y, query_x):
        seen.append(support_y)
        assert support_x.dtype == torch.float32 and support_x.min() >= 0 and support_x.max() <= 1
        assert not torch.is_grad_enabled()
        return embed(query_x) @ embed(support_x)[support_y].T

    result = evaluate_runs(loaded, learner=learner)
    assert result["errors"] == [0.0] * 20 and len(seen) == 20
    assert all(torch.equal(y, torch.arange(20)) for y in seen)
    wrong = evaluate_runs(loaded[:2], learner=lambda s, y, q: -torch.arange(20.0).expand(20, 20))
    assert wrong["errors"] == [95.0, 95.0]
    with pytest.raises(ValueError, match=r"shape \(20, 19\).*\(20, 20\)"):
        evaluate_runs(loaded, learner=lambda s, y, q: torch.zeros(20, 19))


def test_argument_errors(loaded, tmp_path):
    with pytest.raises(TypeError, match="exactly one of embed="):
        evaluate_runs(loaded)
    with pytest.raises(TypeError, match="exactly one of embed="):
        evaluate_runs(loaded, embed=torch.nn.Flatten(), learner=lambda s, y, q: None)
    with pytest.raises(ValueError, match="no runs"):
        evaluate_runs([], embed=torch.nn.Flatten())
    with pytest.raises(FileNotFoundError, match="missing.zip"):
        load_runs(tmp_path / "missing.zip")
    with pytest.raises(FileNotFoundError, match="download=True") as error:
        load_runs(root=tmp_path / "data")
    assert str(tmp_path / "data" / "omniglot" / "all_runs.zip") in str(error.value)


def test_bad_layout(replica, tmp_path):
    _, files, _ = replica
    partial = write_zip(
        tmp_path / "partial.zip", {k: v for k, v in files.items() if k != "run20/test/item05.png"}
    )
    with pytest.raises(ValueError, match="1 of its 820 files are missing.*run20/test/item05.png"):
        load_runs(partial)
    relabelled = dict(
        files, **{"run03/class_labels.txt": "run03/test/item01.png run03/training/class21.png\n"}
    )
    with pytest.raises(ValueError, match="run03/class_labels.txt line 1"):
        load_runs(write_zip(tmp_path / "relabelled.zip", relabelled))
    garbled = dict(files, **{"run04/class_labels.txt": "item01 class02\n"})
    with pytest.raises(ValueError, match="line 1 reads 'item01 class02'"):
        load_runs(write_zip(tmp_path / "garbled.zip", garbled))
    unlabelled = dict(
        files, **{"run05/class_labels.txt": files["run05/class_labels.txt"].split("\n", 1)[1]}
    )
    with pytest.raises(ValueError, match="labels no test item 01"):
        load_runs(write_zip(tmp_path / "unlabelled.zip", unlabelled))
    page = tmp_path / "all_runs.zip"
    page.write_text("<html>404</html>")
    with pytest.raises(ValueError, match="not a valid zip"):
        load_runs(page)


def test_download_checks_the_layout_and_is_atomic(replica, tmp_path, monkeypatch):
    monkeypatch.setattr(runs_module, "RUNS_URL", replica[0].as_uri())
    root = tmp_path / "data"
    runs = load_runs(root=root, download=True, progress=False)
    assert len(runs) == 20 and (root / "omniglot" / "all_runs.zip").exists()
    assert download_runs(root, progress=False) == root / "omniglot" / "all_runs.zip"
    other = tmp_path / "other.zip"
    write_zip(other, {"run01/class_labels.txt": ""})
    monkeypatch.setattr(runs_module, "RUNS_URL", other.as_uri())
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(ValueError, match="not Lake et al.'s all_runs layout"):
        download_runs(elsewhere, progress=False)
    assert list((elsewhere / "omniglot").iterdir()) == []
