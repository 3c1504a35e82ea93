from pathlib import Path

import pytest
import torch

import fslearn as fsl

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


def test_embedded_by_name_matches_the_direct_loader():
    train = fsl.load_dataset("embedded", "train", progress=False)
    test = fsl.load_dataset("embedded", "test", progress=False)
    assert (train.n_classes, test.n_classes) == (964, 659)
    assert torch.equal(test.images, fsl.load_embedded("evaluation", progress=False).images)


@pytest.mark.parametrize(
    "name,split,message",
    [
        ("imagenet", "train", r"unknown dataset 'imagenet'; choose one of \('embedded'"),
        ("embedded", "val", r"embedded has splits \('train', 'test'\); got 'val'"),
        ("miniimagenet", "train", "pass the folder of your copy .* as root="),
        ("omniglot-small", "val", r"omniglot-small has splits \('train', 'test'\)"),
    ],
)
def test_bad_names_and_splits(name, split, message):
    with pytest.raises(ValueError, match=message):
        fsl.load_dataset(name, split)


def test_missing_omniglot_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True") as error:
        fsl.load_dataset("omniglot", "train", root=tmp_path, progress=False)
    assert f"{tmp_path / 'omniglot' / 'images_background.zip'} does not exist" in str(error.value)


@pytest.mark.skipif(
    not (SHARED / "images_background_small2.zip").exists(),
    reason=f"no real Omniglot zips in {SHARED}",
)
def test_omniglot_small_protocol_on_the_real_zips(tmp_path, tmp_cache):
    root = tmp_path / "data"
    (root / "omniglot").mkdir(parents=True)
    for name in ("images_background_small1", "images_background_small2"):
        (root / "omniglot" / f"{name}.zip").symlink_to(SHARED / f"{name}.zip")
    train = fsl.load_dataset("omniglot-small", "train", root=root, progress=False)
    test = fsl.load_dataset("omniglot-small", "test", root=root, progress=False)
    assert train.n_classes == 136 and len(set(train.groups)) == 5
    assert sorted(set(test.groups)) == list(fsl.data.catalog.SMALL2_ONLY_ALPHABETS)
    assert not set(train.groups) & set(test.groups)
    assert test.images.shape[1:] == (20, 1, 28, 28)
