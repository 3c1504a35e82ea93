"""Per-dataset normalisation stored with the learner: ``normalize=(mean, std)`` in every recipe
puts :class:`~fslearn.Normalize` in front of the backbone, the spec records it, and a loaded
checkpoint normalises as the trained learner did."""

import pytest
import torch

import fslearn as fsl
from fslearn.training.specs import build_learner

MEAN, STD = [0.45, 0.5, 0.4], [0.2, 0.25, 0.3]
N_WAY = 3

SPECS = {
    "protonet": dict(method="protonet", distance="euclidean"),
    "siamese": dict(method="siamese", head="koch"),
    "triplet": dict(method="triplet", rule="nearest-support"),
    "maml": dict(
        method="maml",
        n_way=N_WAY,
        inner_lr=0.1,
        inner_steps=1,
        test_steps=2,
        first_order=False,
        anil=False,
    ),
    "anil": dict(
        method="maml",
        n_way=N_WAY,
        inner_lr=0.1,
        inner_steps=1,
        test_steps=2,
        first_order=True,
        anil=True,
    ),
    "pretrain": dict(method="pretrain", n_classes=5),
    "baseline++": dict(method="pretrain", n_classes=5, head="cosine", scale=2.0),
}

RECIPES = {
    "protonet": (fsl.train_protonet, dict(n_way=N_WAY, n_shot=1, n_query=2, steps=2)),
    "siamese": (fsl.train_siamese, dict(n_pairs=8, steps=2)),
    "triplet": (fsl.train_triplet, dict(n_classes=4, n_per_class=2, steps=2)),
    "maml": (fsl.train_maml, dict(n_way=N_WAY, n_shot=1, n_query=2, meta_batch=2, steps=2)),
    "pretrain": (fsl.train_pretrained, dict(epochs=1, batch_size=40)),
}


def colour_dataset(n_classes=6, n_per_class=8, size=16) -> fsl.FewShotDataset:
    """Random colour images, each channel with its own brightness."""
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([200, 120, 255])[None, None, :, None, None]
    images = (torch.rand(n_classes, n_per_class, 3, size, size, generator=g) * scale).to(
        torch.uint8
    )
    return fsl.FewShotDataset(
        images, [f"c{i}" for i in range(n_classes)], ["a"] * n_classes, "colours"
    )


def one_task(seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    support_x = torch.rand(N_WAY * 2, 3, size, size, generator=g)
    support_y = torch.arange(N_WAY).repeat_interleave(2)
    query_x = torch.rand(N_WAY * 3, 3, size, size, generator=g)
    return support_x, support_y, query_x


def by_hand(x):
    """``(x - mean) / std`` per channel, computed without fsl.Normalize."""
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def outputs(learner, kind, support_x, support_y, query_x):
    if kind in ("pretrain", "baseline++"):
        return learner(query_x)
    return learner(support_x, support_y, query_x)


@pytest.mark.parametrize("kind", list(SPECS))
def test_a_normalized_learner_equals_the_plain_one_on_normalized_images(kind):
    spec = {"image_shape": [3, 16, 16], "hidden_channels": 4, **SPECS[kind]}
    plain = build_learner(spec, seed=3).eval()
    normalized = build_learner({**spec, "normalize": {"mean": MEAN, "std": STD}}, seed=3).eval()
    support_x, support_y, query_x = one_task()
    expected = outputs(plain, kind, by_hand(support_x), support_y, by_hand(query_x))
    got = outputs(normalized, kind, support_x, support_y, query_x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # and it does something: the same learner on raw images differs
    assert not torch.allclose(outputs(plain, kind, support_x, support_y, query_x), expected)


@pytest.mark.parametrize("method", list(RECIPES))
def test_every_recipe_records_its_normalisation_and_a_loaded_checkpoint_keeps_it(method, tmp_path):
    train, options = RECIPES[method]
    path = tmp_path / "c.pt"
    learner, _ = train(
        colour_dataset(),
        **options,
        hidden_channels=4,
        normalize=(torch.tensor(MEAN), torch.tensor(STD)),
        progress=False,
        checkpoint=fsl.Checkpoint(path),
    )
    statistics = fsl.read_checkpoint(path)["spec"]["normalize"]
    assert statistics == {
        "mean": torch.tensor(MEAN).tolist(),
        "std": torch.tensor(STD).tolist(),
    }
    loaded = fsl.load_learner(path, n_way=N_WAY)
    support_x, support_y, query_x = one_task(seed=1)
    trained = learner.model if method == "maml" else learner
    restored = loaded.model if method in ("maml", "pretrain") else loaded
    assert isinstance(restored.backbone[0], fsl.Normalize)
    torch.testing.assert_close(restored.backbone[0].mean, torch.tensor(MEAN))
    if method == "pretrain":
        torch.testing.assert_close(restored.backbone(query_x), trained.backbone.eval()(query_x))
    else:
        expected = learner.eval()(support_x, support_y, query_x)
        torch.testing.assert_close(loaded(support_x, support_y, query_x), expected)


def test_a_run_without_normalize_keeps_the_spec_of_earlier_runs(tmp_path):
    path = tmp_path / "c.pt"
    train, options = RECIPES["protonet"]
    train(colour_dataset(), **options, hidden_channels=4, progress=False,
          checkpoint=fsl.Checkpoint(path))  # fmt: skip
    assert fsl.read_checkpoint(path)["spec"] == {
        "method": "protonet",
        "image_shape": [3, 16, 16],
        "hidden_channels": 4,
        "distance": "euclidean",
    }


def test_resuming_with_other_statistics_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    train, options = RECIPES["protonet"]
    common = dict(hidden_channels=4, progress=False)
    train(colour_dataset(), **options, **common, normalize=(MEAN, STD),
          checkpoint=fsl.Checkpoint(path))  # fmt: skip
    with pytest.raises(ValueError, match="normalize"):
        train(colour_dataset(), **{**options, "steps": 4}, **common, normalize=(MEAN, [1] * 3),
              checkpoint=fsl.Checkpoint(path, resume=True))  # fmt: skip


@pytest.mark.parametrize(
    "normalize, match",
    [
        ([0.5], r"normalize must be None or \(mean, std\), e\.g\. normalize=fsl\.channel_stats"),
        (([0.5], [0.2]), r"normalize gives statistics for 1 channel\(s\), but the training "),
        ((MEAN, [0.2, 0.0, 0.3]), r"every std a finite number > 0"),
    ],
)
def test_bad_statistics_are_refused_before_training(normalize, match, tmp_path):
    path = tmp_path / "c.pt"
    with pytest.raises(ValueError, match=match):
        fsl.train_protonet(colour_dataset(), **RECIPES["protonet"][1], normalize=normalize,
                           progress=False, checkpoint=fsl.Checkpoint(path))  # fmt: skip
    assert not path.exists()


def test_a_spec_with_statistics_for_other_images_is_refused():
    spec = {"image_shape": [1, 16, 16], "hidden_channels": 4, **SPECS["protonet"]}
    with pytest.raises(ValueError, match=r"holds statistics for 3 channel\(s\), but its images"):
        build_learner({**spec, "normalize": {"mean": MEAN, "std": STD}})
    with pytest.raises(ValueError, match=r'"normalize" must be \{"mean": \[\.\.\.\]'):
        build_learner({**spec, "normalize": [MEAN, STD]})
