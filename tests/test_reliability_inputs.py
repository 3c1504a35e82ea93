"""A read-only cache folder serves what it holds; public entry points check labels and shapes
themselves, with fslearn's own message instead of torch's or vmap's."""

import random
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fslearn as fsl
import fslearn.common as common
from fslearn.data import embedded, omniglot
from fslearn.training.specs import build_learner

from synthetic import glyph, png

# 1. A read-only cache ---------------------------------------------------------------------------


def never(*args, **kwargs):
    raise AssertionError("built again, although the cache holds it")


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """An empty cache folder (FSLEARN_CACHE) and a switch that makes it read-only, as a shared
    mount is: its permissions for everyone, and for root (who writes anyway) its write check."""
    folder = tmp_path / "shared"
    folder.mkdir()
    monkeypatch.setenv("FSLEARN_CACHE", str(folder))
    real = common.tempfile.TemporaryFile

    def temporary_file(*args, dir=None, **kwargs):
        if Path(dir) == folder or folder in Path(dir).parents:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    def lock():
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        monkeypatch.setattr(common.tempfile, "TemporaryFile", temporary_file)

    yield folder, lock
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755)


def test_a_read_only_cache_that_holds_the_embedded_set_is_read(shared, monkeypatch):
    folder, lock = shared
    with monkeypatch.context() as default:
        default.delenv("FSLEARN_CACHE")
        source = embedded._cache_file(0, 28)
        # The cache every other test reads (built once if it is not there yet).
        expected = fsl.load_embedded("evaluation", progress=False)
    shutil.copy(source, folder / source.name)
    lock()
    monkeypatch.setattr(embedded, "generate", never)
    dataset = fsl.load_embedded("evaluation", progress=False)
    assert dataset.n_classes == 659 and torch.equal(dataset.images, expected.images)
    assert sorted(p.name for p in folder.iterdir()) == [source.name]


def character_zip(path: Path, seed: int) -> Path:
    """An Omniglot-layout zip: 2 alphabets × 2 characters × 20 drawers."""
    rng = random.Random(seed)
    with zipfile.ZipFile(path, "w") as archive:
        for alphabet in ("Alpha", "Beta"):
            for c in (1, 2):
                for d in range(1, 21):
                    name = f"images_x/{alphabet}/character{c:02d}/{c:04d}_{d:02d}.png"
                    archive.writestr(name, png(glyph(rng)))
    return path


def test_a_read_only_cache_reads_what_it_holds_and_names_the_fix_for_what_it_lacks(
    shared, tmp_path, monkeypatch
):
    folder, lock = shared
    held, missing = character_zip(tmp_path / "a.zip", 0), character_zip(tmp_path / "b.zip", 1)
    expected = fsl.load_omniglot(path=held, progress=False)  # written while it may be
    lock()
    monkeypatch.setattr(omniglot, "_decode", never)
    assert torch.equal(fsl.load_omniglot(path=held, progress=False).images, expected.images)
    with pytest.raises(OSError) as error:
        fsl.load_omniglot(path=missing, progress=False)
    message = str(error.value)
    assert f"cannot write the cache {folder / 'omniglot'}" in message
    assert f"(cannot write in {folder / 'omniglot'}: Permission denied)" in message
    assert (
        f"fslearn only reads its cache folder {folder} where it cannot write, and that folder "
        f"does not hold this cache yet. It comes from FSLEARN_CACHE={str(folder)!r}: unset "
        f"FSLEARN_CACHE or point it at a writable folder (copying the caches {folder} holds "
        "there keeps them)" in message
    )


def test_a_download_into_a_read_only_cache_says_so_before_fetching(shared, monkeypatch):
    folder, lock = shared
    lock()
    monkeypatch.setattr(omniglot, "fetch", never)
    with pytest.raises(OSError, match="fslearn only reads its cache folder .* FSLEARN_CACHE="):
        fsl.download_omniglot("images_background_small1", progress=False)


# 2. Labels and shapes at the public entry points ------------------------------------------------


def test_fit_refuses_labels_outside_the_classes_the_model_scores():
    model = torch.nn.Linear(4, 10)
    x, y = torch.randn(20, 4), torch.arange(20)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError) as error:
        fsl.fit(model, x, y, batch_size=5, epochs=1, progress=False)
    assert str(error.value) == (
        "y holds class labels from 0 to 19, but the model scores 10 classes (outputs of shape "
        "(5, 10)): labels must be 0 … 9. Relabel them, or give the model 20 outputs"
    )
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="y holds class labels from -1 to 9"):
        fsl.fit(model, x, y % 10 - (y == 3).long() * 4, batch_size=5, epochs=1, progress=False)
    with pytest.raises(ValueError, match="y_val holds class labels from 1 to 20, but the"):
        fsl.fit(model, x, y % 10, batch_size=5, epochs=1, progress=False, validation=(x, y + 1))


def test_fit_still_trains_on_labels_it_should_take():
    # cross_entropy's ignore_index, and a loss that is not about classes, are left alone.
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(12, 4), torch.arange(12) % 3
    y[0] = -100
    history = fsl.fit(model, x, y, batch_size=4, epochs=1, progress=False)
    assert history.iterations == 3
    targets = torch.randn(12, 3)
    fsl.fit(model, x, targets, batch_size=4, epochs=1, progress=False, loss_fn=F.mse_loss)


def test_class_prototypes_refuses_labels_outside_n_way():
    embeddings = torch.randn(6, 3)
    with pytest.raises(ValueError) as error:
        fsl.class_prototypes(embeddings, torch.tensor([0, 1, 2, 3, 4, 5]), 3)
    assert str(error.value) == (
        "labels must be classes 0 … n_way − 1 = 2; got labels from 0 to 5. Relabel the classes "
        "0, 1, … (as fsl.EpisodeSampler does), or pass the right n_way"
    )
    with pytest.raises(ValueError, match="got labels from -1 to 2"):
        fsl.class_prototypes(embeddings, torch.tensor([0, 1, 2, -1, 1, 2]), 3)
    with pytest.raises(ValueError, match=r"one label per embedding, \(n_support,\); got \(6, 3\)"):
        fsl.class_prototypes(embeddings, torch.tensor([0, 1, 2]), 3)
    with pytest.raises(ValueError, match="got dtype torch.float32"):
        fsl.class_prototypes(embeddings, torch.zeros(6), 3)


def test_class_prototypes_are_the_class_means():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(9, 4, generator=generator)
    labels = torch.tensor([2, 0, 1, 2, 0, 1, 2, 0, 2])
    expected = torch.stack([embeddings[labels == k].mean(0) for k in range(3)])
    assert torch.allclose(fsl.class_prototypes(embeddings, labels, 3), expected)
    # A class without embeddings, as before: zeros.
    assert fsl.class_prototypes(embeddings, labels, 4)[3].eq(0).all()


MAML_SPEC = {
    "method": "maml", "image_shape": [1, 28, 28], "hidden_channels": 4, "n_way": 5,
    "inner_lr": 0.4, "inner_steps": 1, "test_steps": 1, "first_order": False, "anil": False,
}  # fmt: skip


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_maml_meta_loss_names_the_shapes_that_disagree(strategy):
    maml = build_learner({**MAML_SPEC, "strategy": strategy}, seed=0)
    support_x, support_y = torch.randn(2, 5, 1, 28, 28), torch.arange(5).repeat(2, 1)
    query_x, query_y = torch.randn(2, 10, 1, 28, 28), torch.arange(10).repeat(2, 1) % 5
    maml.meta_loss(support_x, support_y, query_x, query_y)  # a batch of two tasks
    cases = [
        (
            (support_x, support_y, torch.randn(3, 10, 1, 28, 28), query_y.repeat(2, 1)[:3]),
            "support and query must hold the same number of tasks T in their first dimension; "
            "got support_x (2, 5, 1, 28, 28), support_y (2, 5), query_x (3, 10, 1, 28, 28), "
            "query_y (3, 10)",
        ),
        (
            (support_x, support_y[:, :4], query_x, query_y),
            "support_y must hold one label per support item, shape (T, n_support) = (2, 5); "
            "got support_x (2, 5, 1, 28, 28), support_y (2, 4)",
        ),
        (
            (support_x, support_y, query_x, query_y[:, :7]),
            "query_y must hold one label per query item, shape (T, n_query) = (2, 10); got",
        ),
        (
            (support_x, support_y, query_x, query_y.float()),
            "query_y must hold integer class labels; got dtype torch.float32",
        ),
        (
            (support_x, support_y, torch.randn(2, 10, 1, 14, 14), query_y),
            "query items must have the shape of the support items; got",
        ),
    ]
    for tensors, message in cases:
        with pytest.raises(ValueError) as error:
            maml.meta_loss(*tensors)
        assert message in str(error.value)


def test_the_checks_are_not_host_syncs(monkeypatch):
    # meta_loss's check reads shapes only: a CUDA step stays free of host synchronisations.
    calls = []
    for name in ("item", "tolist"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _real=real, **k: calls.append(1) or _real(self)
        )
    from fslearn.sampling.tasks import check_task_batch

    check_task_batch(
        torch.randn(2, 5, 1, 4, 4), torch.zeros(2, 5).long(),
        torch.randn(2, 3, 1, 4, 4), torch.zeros(2, 3).long(),
    )  # fmt: skip
    assert calls == []


def test_class_prototypes_on_every_device(device):
    embeddings = torch.randn(6, 3, device=device)
    labels = torch.tensor([0, 1, 2, 0, 1, 2], device=device)
    expected = torch.stack([embeddings[labels == k].mean(0) for k in range(3)])
    assert torch.allclose(fsl.class_prototypes(embeddings, labels, 3), expected)
    for bad, span in ((labels + 1, "from 1 to 3"), (labels - 1, "from -1 to 1")):
        with pytest.raises(ValueError, match=f"got labels {span}"):
            fsl.class_prototypes(embeddings, bad, 3)
