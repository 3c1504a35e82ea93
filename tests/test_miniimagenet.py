"""miniImageNet loading, on tiny fake copies written in both layouts."""

import os
import pickle
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fslearn import MINIIMAGENET_SPLIT_SIZES, load_miniimagenet
from fslearn.data import miniimagenet

# The fakes have 3 classes, not 64: every load warns about it; one test checks the warning.
pytestmark = pytest.mark.filterwarnings("ignore:miniImageNet .* standard split:UserWarning")

# Deliberately out of order, to check the loader sorts classes by wnid.
WNIDS = ["n03000000", "n01000000", "n02000000"]
N_PER_CLASS = 4


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_cache):
    """Never write to the user's real cache."""
    return tmp_cache


def fake_images(size=84, n_per_class=N_PER_CLASS):
    """``{wnid: uint8 array (n_per_class, size, size, 3)}``: a colour per class, a pattern per "
    "image."""
    y, x = np.mgrid[:size, :size]
    images = {}
    for c, wnid in enumerate(WNIDS):
        stack = []
        for i in range(n_per_class):
            image = np.zeros((size, size, 3), np.uint8)
            image[...] = (60 * c + 20, 200 - 40 * c, 30 * i + 10)
            image[(x + y * (i + 1)) % 7 == 0] = (255 - 10 * i, 5 * c, 128)
            stack.append(image)
        images[wnid] = np.stack(stack)
    return images


def expected_tensor(images):
    """The loader's output for ``images``: classes sorted, channels first."""
    return torch.from_numpy(np.stack([images[w] for w in sorted(images)])).permute(0, 1, 4, 2, 3)


def write_csv_copy(root, images, split="train"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["filename,label"]
    for wnid, stack in images.items():
        for i, image in enumerate(stack):
            name = f"{wnid}{i + 1:08d}.png"  # PNG: lossless, so pixels compare exactly
            Image.fromarray(image).save(root / "images" / name)
            lines.append(f"{name},{wnid}")
    (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


def write_pickle_copy(root, images, split="train", protocol=pickle.HIGHEST_PROTOCOL):
    root.mkdir(parents=True, exist_ok=True)
    flat = [(wnid, i) for wnid, stack in images.items() for i in range(len(stack))]
    order = np.random.default_rng(0).permutation(len(flat))  # classes interleaved in image_data
    image_data = np.stack([images[flat[j][0]][flat[j][1]] for j in order])
    position = {flat[j]: k for k, j in enumerate(order)}
    class_dict = {
        wnid: [position[(wnid, i)] for i in range(len(stack))] for wnid, stack in images.items()
    }
    class_dict[WNIDS[0]] = np.array(class_dict[WNIDS[0]])  # some copies hold index arrays
    path = root / f"mini-imagenet-cache-{split}.pkl"
    path.write_bytes(
        pickle.dumps({"image_data": image_data, "class_dict": class_dict}, protocol=protocol)
    )
    return path


def test_split_sizes_constant():
    assert MINIIMAGENET_SPLIT_SIZES == {"train": 64, "val": 16, "test": 20}


def test_csv_layout(tmp_path):
    images = fake_images()
    write_csv_copy(tmp_path, images, split="val")
    dataset = load_miniimagenet(tmp_path, "val", format="csv", progress=False)
    assert (
        dataset.images.shape == (3, N_PER_CLASS, 3, 84, 84) and dataset.images.dtype == torch.uint8
    )
    assert dataset.class_names == sorted(WNIDS)
    assert dataset.groups == ["val"] * 3
    assert torch.equal(dataset.images, expected_tensor(images))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_layout_equals_csv_layout(tmp_path, protocol):
    images = fake_images()
    write_csv_copy(tmp_path / "csv", images)
    write_pickle_copy(tmp_path / "pkl", images, protocol=protocol)
    from_pickle = load_miniimagenet(tmp_path / "pkl", format="pickle", progress=False)
    from_csv = load_miniimagenet(tmp_path / "csv", format="csv", progress=False)
    assert from_pickle.class_names == from_csv.class_names == sorted(WNIDS)
    assert from_pickle.groups == ["train"] * 3
    assert torch.equal(from_pickle.images, expected_tensor(images))
    assert torch.equal(from_pickle.images, from_csv.images)


def test_pickle_written_by_numpy_1(tmp_path):
    """The shared files predate numpy 2, so they name ``numpy.core`` rather than ``numpy._core``."""
    images = fake_images(size=12, n_per_class=2)
    path = write_pickle_copy(tmp_path, images, protocol=2)
    legacy = path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in legacy
    path.write_bytes(legacy)
    dataset = load_miniimagenet(tmp_path, image_size=12, progress=False)
    assert torch.equal(dataset.images, expected_tensor(images))


def test_resize_is_the_same_for_both_layouts(tmp_path):
    images = fake_images()
    write_csv_copy(tmp_path / "csv", images)
    write_pickle_copy(tmp_path / "pkl", images)
    from_pickle = load_miniimagenet(tmp_path / "pkl", image_size=32, progress=False)
    from_csv = load_miniimagenet(tmp_path / "csv", image_size=32, progress=False)
    assert from_pickle.images.shape == (3, N_PER_CLASS, 3, 32, 32)
    assert torch.equal(from_pickle.images, from_csv.images)


def test_small_images_are_upsampled_and_colours_kept(tmp_path):
    images = {
        wnid: np.full((2, 12, 12, 3), (10 * c, 100, 250 - c), np.uint8)
        for c, wnid in enumerate(WNIDS)
    }
    write_csv_copy(tmp_path, images)
    dataset = load_miniimagenet(tmp_path, progress=False)
    assert dataset.images.shape == (3, 2, 3, 84, 84)
    assert torch.equal(
        dataset.images[2, 1, :, 40, 40], torch.tensor([0, 100, 250], dtype=torch.uint8)
    )


def test_auto_detects_the_layout_and_prefers_the_pickle(tmp_path, monkeypatch):
    images = fake_images(size=12, n_per_class=2)
    write_csv_copy(tmp_path / "csv", images)
    write_pickle_copy(tmp_path / "pkl", images)
    write_csv_copy(tmp_path / "both", images)
    write_pickle_copy(tmp_path / "both", images)
    assert miniimagenet._detect_format(tmp_path / "csv", "train", "auto") == "csv"
    assert miniimagenet._detect_format(tmp_path / "pkl", "train", "auto") == "pickle"
    assert miniimagenet._detect_format(tmp_path / "both", "train", "auto") == "pickle"
    assert miniimagenet._detect_format(tmp_path / "both", "train", "csv") == "csv"
    reads = []
    read_pickle = miniimagenet.read_pickle
    monkeypatch.setattr(miniimagenet, "read_pickle", lambda *a: reads.append(a) or read_pickle(*a))
    dataset = load_miniimagenet(tmp_path / "both", progress=False, cache=False)
    assert len(reads) == 1 and dataset.images.shape == (3, 2, 3, 84, 84)


@pytest.mark.parametrize(
    "page",
    [
        "\n  <!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>"
        "<body>Google Drive can't scan this file for viruses. <a>Download anyway</a></body></html>",
        "<html><body>Not found</body></html>",
    ],
)
def test_html_page_instead_of_pickle(tmp_path, page):
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    path.write_text(page)
    with pytest.raises(ValueError, match="HTML page") as error:
        load_miniimagenet(tmp_path, progress=False)
    message = str(error.value)
    assert str(path) in message and f"{len(page.encode())} bytes" in message
    assert "gdown" in message and "Download anyway" in message
    assert ("virus-scan warning page" in message) == ("Google Drive" in page)


def test_html_page_instead_of_csv(tmp_path):
    write_csv_copy(tmp_path, fake_images(size=12, n_per_class=1))
    (tmp_path / "train.csv").write_text("<!doctype html>\n<html>Google Drive</html>")
    with pytest.raises(ValueError, match=r"train\.csv is an HTML page"):
        load_miniimagenet(tmp_path, progress=False)


def test_truncated_pickle(tmp_path):
    path = write_pickle_copy(tmp_path, fake_images())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt") as error:
        load_miniimagenet(tmp_path, progress=False)
    assert str(path) in str(error.value)


class _Exploit:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "hacked"
    exploit = _Exploit(f"echo hacked > {marker}")
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    path.write_bytes(pickle.dumps({"image_data": exploit, "class_dict": {}}))
    with pytest.raises(
        pickle.UnpicklingError, match=r"refusing to load (posix|nt|os)\.system"
    ) as error:
        load_miniimagenet(tmp_path, progress=False)
    assert str(path) in str(error.value)
    assert not marker.exists()


def test_wrong_image_shape_in_pickle(tmp_path):
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    channels_first = np.zeros((3, 3, 84, 84), np.uint8)
    path.write_bytes(
        pickle.dumps({"image_data": channels_first, "class_dict": {"n01000000": [0, 1, 2]}})
    )
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\).*\(3, 3, 84, 84\)"):
        load_miniimagenet(tmp_path, progress=False)


def test_missing_files_name_both_layouts(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_miniimagenet(tmp_path, "test")
    message = str(error.value)
    for looked_for in ["test.csv", "images", "mini-imagenet-cache-test.pkl", str(tmp_path)]:
        assert looked_for in message
    assert "filename,label" in message and "image_data" in message


def test_missing_images_listed_in_csv(tmp_path):
    write_csv_copy(tmp_path, fake_images(size=12, n_per_class=2))
    (tmp_path / "images" / "n0200000000000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 6 images.*n0200000000000002\.png"):
        load_miniimagenet(tmp_path, progress=False)


@pytest.mark.parametrize("write", [write_csv_copy, write_pickle_copy])
def test_unequal_class_sizes_keep_every_image(tmp_path, write):
    images = fake_images(size=12)
    images["n02000000"] = images["n02000000"][:3]
    write(tmp_path, images)
    dataset = load_miniimagenet(tmp_path, image_size=12, progress=False)
    assert dataset.count_list == [4, 3, 4] and dataset.is_ragged
    expected = torch.from_numpy(np.concatenate([images[w] for w in sorted(images)]))
    assert torch.equal(dataset.flat_images, expected.permute(0, 3, 1, 2))
    assert torch.equal(
        dataset.class_images(1), torch.from_numpy(images["n02000000"]).permute(0, 3, 1, 2)
    )


def test_unequal_class_sizes_cut_to_n_per_class(tmp_path):
    images = fake_images()
    images["n02000000"] = images["n02000000"][:3]
    write_csv_copy(tmp_path, images)
    dataset = load_miniimagenet(tmp_path, n_per_class=3, progress=False)
    assert dataset.images.shape == (3, 3, 3, 84, 84)
    assert torch.equal(
        dataset.images[0, :, :, 0, 0], torch.from_numpy(images["n01000000"][:3, 0, 0])
    )
    with pytest.raises(ValueError, match=r"n_per_class=4.*n02000000 has 3"):
        load_miniimagenet(tmp_path, n_per_class=4, progress=False)


def test_nonstandard_class_count_warns(tmp_path):
    write_pickle_copy(tmp_path, fake_images(size=12, n_per_class=1), split="test")
    with pytest.warns(UserWarning, match="has 3 classes; the standard split has 20"):
        load_miniimagenet(tmp_path, "test", progress=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        load_miniimagenet(tmp_path, "validation")
    with pytest.raises(ValueError, match="format must be one of"):
        load_miniimagenet(tmp_path, format="pkl")


def test_second_load_reads_the_cache(tmp_path, tmp_cache, monkeypatch):
    write_csv_copy(tmp_path, fake_images())
    decodes = []
    decode = miniimagenet.decode_csv
    monkeypatch.setattr(miniimagenet, "decode_csv", lambda *a: decodes.append(a) or decode(*a))
    first = load_miniimagenet(tmp_path, progress=False)
    assert len(decodes) == 1 and len(list(tmp_cache.glob("miniimagenet-*.pt"))) == 1
    second = load_miniimagenet(tmp_path, progress=False)
    assert len(decodes) == 1, "the second load must come from the cache"
    assert torch.equal(first.images, second.images) and first.class_names == second.class_names
    load_miniimagenet(tmp_path, image_size=32, progress=False)
    assert len(decodes) == 2, "another image size is another cache entry"
    # Editing an image changes its size and modification time: the cache no longer applies.
    image = tmp_path / "images" / "n0100000000000001.png"
    Image.fromarray(np.zeros((84, 84, 3), np.uint8)).save(image)
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))
    edited = load_miniimagenet(tmp_path, progress=False)
    assert len(decodes) == 3 and edited.images[0, 0].max() == 0
    load_miniimagenet(tmp_path, progress=False, cache=False)
    assert len(decodes) == 4 and len(list(tmp_cache.glob("miniimagenet-*.pt"))) == 3


def test_damaged_cache_is_rebuilt(tmp_path, tmp_cache):
    write_pickle_copy(tmp_path, fake_images(size=12, n_per_class=2))
    first = load_miniimagenet(tmp_path, progress=False)
    (cached,) = tmp_cache.glob("miniimagenet-*.pt")
    cached.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = load_miniimagenet(tmp_path, progress=False)
    assert torch.equal(first.images, again.images)
