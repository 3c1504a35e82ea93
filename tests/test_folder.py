"""The user's own images: folders of class folders, split files, torch datasets, and the
memory-mapped cache they are decoded into; on small folders of PNG and JPEG files."""

import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

import fslearn as fsl
from fslearn.data import image_files

from synthetic import digests, fails, fslearn

# Classes of different sizes, and a file of every size and aspect: nothing may be dropped.
CLASSES = {"cat": 5, "dog": 3, "eel": 7}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_cache):
    """Never write to the user's real cache."""
    return tmp_cache


def write_image(path, seed, mode="RGB"):
    """A random image of a random size (17 to 60 px a side) saved at ``path``."""
    rng = np.random.default_rng(seed)
    height, width = rng.integers(17, 61, size=2)
    shape = (height, width) if mode == "L" else (height, width, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def write_folder(root, classes=CLASSES, mode="RGB"):
    """Class folders of PNGs and JPEGs (every third a JPEG) under ``root``."""
    for c, (name, n) in enumerate(classes.items()):
        for i in range(n):
            write_image(
                root / name / f"{i:02d}.{'jpg' if i % 3 == 2 else 'png'}", 100 * c + i, mode
            )
    return root


def hand_decode(path, size, mode="RGB"):
    """What the loaders must give for one file, decoded another way: Pillow open, convert,
    resize, numpy."""
    image = Image.open(path).convert(mode).resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(image)
    return torch.from_numpy((array[None] if array.ndim == 2 else array.transpose(2, 0, 1)).copy())


def expected_images(files, size, mode="RGB"):
    return torch.stack([hand_decode(f, size, mode) for f in files])


def test_folder_keeps_every_image_of_ragged_classes(tmp_path):
    root = write_folder(tmp_path / "pets")
    dataset = fsl.load_folder(root, image_size=20, progress=False)
    assert dataset.class_names == ["cat", "dog", "eel"]
    assert dataset.groups == ["pets"] * 3
    assert dataset.count_list == [5, 3, 7] and len(dataset) == 15
    files = sorted(root.glob("*/*"))
    assert torch.equal(dataset.flat_images, expected_images(files, 20))
    assert torch.equal(dataset.class_images(1), expected_images(sorted(root.glob("dog/*")), 20))


def test_grey_and_workers_give_the_same_images(tmp_path):
    root = write_folder(tmp_path / "pets")
    one = fsl.load_folder(root, 16, channels=1, progress=False, workers=1, cache=False)
    pool = fsl.load_folder(root, 16, channels=1, progress=False, workers=4, cache=False)
    assert one.image_shape == (1, 16, 16)
    assert torch.equal(one.flat_images, expected_images(sorted(root.glob("*/*")), 16, "L"))
    assert torch.equal(one.flat_images, pool.flat_images)


def test_group_level_is_detected_and_recorded(tmp_path):
    root = tmp_path / "alphabets"
    write_folder(root / "Greek", {"alpha": 2, "beta": 3})
    write_folder(root / "Latin", {"a": 4})
    dataset = fsl.load_folder(root, 12, progress=False)
    assert dataset.class_names == ["Greek/alpha", "Greek/beta", "Latin/a"]
    assert dataset.groups == ["Greek", "Greek", "Latin"]
    assert dataset.count_list == [2, 3, 4]
    assert torch.equal(dataset.flat_images, expected_images(sorted(root.glob("*/*/*")), 12))
    assert fsl.load_folder(root, 12, groups=True, progress=False).class_names == (
        dataset.class_names
    )
    with pytest.raises(fsl.ImageFolderError, match=r"Greek holds folders \(alpha, beta\) but no"):
        fsl.load_folder(root, 12, groups=False, progress=False)
    with pytest.raises(fsl.ImageFolderError, match="group folder .*cat holds images"):
        fsl.load_folder(write_folder(tmp_path / "flat"), 12, groups=True, progress=False)


def test_channels_none_keeps_the_images_own_or_says_they_differ(tmp_path):
    grey = write_folder(tmp_path / "grey", {"a": 2, "b": 2}, mode="L")
    assert fsl.load_folder(grey, 8, channels=None, progress=False).image_shape == (1, 8, 8)
    write_image(grey / "b" / "colour.png", 7)
    with pytest.raises(fsl.ImageFolderError, match=r"grey and colour mixed \(4 grey.*colour.png"):
        fsl.load_folder(grey, 8, channels=None, progress=False)
    mixed = fsl.load_folder(grey, 8, channels=3, progress=False)  # converted: documented
    assert mixed.image_shape == (3, 8, 8) and mixed.count_list == [2, 3]


def split_copy(tmp_path):
    root = write_folder(tmp_path / "photos")
    rows = [(f"{p.parent.name}/{p.name}", p.parent.name) for p in sorted(root.glob("*/*"))]
    rows.reverse()  # the file's order, not the names', sets each class's order
    return root, rows


def test_split_csv_and_json_list_the_same_dataset(tmp_path):
    root, rows = split_copy(tmp_path)
    (root / "train.csv").write_text("filename,label\n" + "".join(f"{f},{c}\n" for f, c in rows))
    (root / "list.json").write_text(json.dumps([{"file": f, "label": c} for f, c in rows]))
    by_label = {}
    for f, c in rows:
        by_label.setdefault(c, []).append(f)
    (tmp_path / "map.json").write_text(json.dumps(by_label))
    expected = expected_images([root / f for c in sorted(by_label) for f in by_label[c]], 12)
    csv = fsl.load_split_file(root / "train.csv", 12, progress=False)
    listed = fsl.load_split_file(root / "list.json", 12, progress=False)
    mapped = fsl.load_split_file(tmp_path / "map.json", 12, root=root, progress=False)
    for dataset in (csv, listed, mapped):
        assert dataset.class_names == ["cat", "dog", "eel"] and dataset.count_list == [5, 3, 7]
        assert torch.equal(dataset.flat_images, expected)
    assert csv.groups == ["train"] * 3


def test_from_dataset_takes_pil_images_tensors_and_arrays():
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (10, 10, 3), dtype=np.uint8) for _ in range(6)]
    labels = ["b", "a", "b", "c", "a", "b"]
    pil = fsl.from_dataset(
        [(Image.fromarray(a), y) for a, y in zip(arrays, labels, strict=True)], progress=False
    )
    assert pil.class_names == ["b", "a", "c"] and pil.count_list == [3, 2, 1]  # first appearance
    order = [0, 2, 5, 1, 4, 3]
    expected = torch.from_numpy(np.stack([arrays[i] for i in order])).permute(0, 3, 1, 2)
    assert torch.equal(pil.flat_images, expected)
    floats = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays]).float() / 255
    tensors = torch.utils.data.TensorDataset(floats, torch.tensor([1, 0, 1, 2, 0, 1]))
    from_tensors = fsl.from_dataset(tensors, name="tensors", progress=False)
    assert from_tensors.class_names == ["1", "0", "2"] and from_tensors.groups == ["tensors"] * 3
    assert torch.equal(from_tensors.flat_images, expected)
    arrays_set = fsl.from_dataset(list(zip(arrays, labels)), progress=False)
    assert torch.equal(arrays_set.flat_images, expected)
    small = fsl.from_dataset(list(zip(arrays, labels)), image_size=6, channels=1, progress=False)
    grey = [np.asarray(Image.fromarray(arrays[i]).convert("L").resize((6, 6), 1)) for i in order]
    assert torch.equal(small.flat_images, torch.from_numpy(np.stack(grey))[:, None])


@pytest.mark.parametrize(
    "items, match",
    [
        ([(np.zeros((4, 4, 3)) + 2.0, 0)], "values from 2.0 to 2.0; float images must lie in"),
        ([(np.zeros((4, 4, 3), np.uint8), 0), (np.zeros((5, 5, 3), np.uint8), 0)], "item 1's"),
        ([(np.zeros((4, 4, 3), np.uint8), 0), (np.zeros((4, 4), np.uint8), 0)], "1 channel"),
        ([(np.zeros((4, 4, 3), np.uint8), [0])], "item 0's label [0] is a list"),
        ([np.zeros((4, 4, 3), np.uint8)], "item 0 of dataset is a ndarray, not an (image"),
        ([("picture.png", 0)], "item 0's image is a str"),
    ],
)
def test_from_dataset_names_the_bad_item(items, match):
    with pytest.raises(fsl.ImageFolderError, match=match.replace("(", r"\(").replace("[", r"\[")):
        fsl.from_dataset(items, progress=False)


def test_second_load_reads_the_cache_and_a_changed_file_rebuilds_it(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pets")
    first = fsl.load_folder(root, 12, progress=False)

    def no_decoding(*args):
        raise AssertionError("the second load must come from the cache")

    with monkeypatch.context() as patch:  # undoing it all would undo tmp_cache's FSLEARN_CACHE
        patch.setattr(image_files, "decode_image", no_decoding)
        second = fsl.load_folder(root, 12, progress=False)
    assert torch.equal(first.flat_images, second.flat_images)
    assert second.class_names == first.class_names and second.count_list == first.count_list
    changed = root / "dog" / "01.png"
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    edited = fsl.load_folder(root, 12, progress=False)
    assert edited.class_images(1)[1].max() == 0
    assert torch.equal(edited.flat_images, expected_images(sorted(root.glob("*/*")), 12))


def mapped_file(tensor):
    """The file whose mapping holds ``tensor``'s memory, from /proc/self/maps, or None."""
    address = tensor.data_ptr()
    with open("/proc/self/maps") as maps:
        lines = maps.read().splitlines()
    for line in lines:
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) > 5 and fields[5].startswith("/") else None
    return None


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's /proc")
def test_mapped_and_in_memory_give_the_same_images_and_episodes(tmp_path):
    root = write_folder(tmp_path / "pets")
    mapped = fsl.load_folder(root, 12, progress=False, mmap=True)
    in_memory = fsl.load_folder(root, 12, progress=False, mmap=False)
    cache = next((tmp_path / "cache" / "folders").iterdir()) / "images.npy"
    assert mapped_file(mapped.flat_images) == str(cache)
    assert mapped_file(in_memory.flat_images) is None
    assert torch.equal(mapped.flat_images, in_memory.flat_images)
    before = cache.read_bytes()
    mapped.flat_images[0] = 0  # copy-on-write: the process's copy changes, never the file
    assert cache.read_bytes() == before
    mapped = fsl.load_folder(root, 12, progress=False, mmap=True)
    draws = [fsl.EpisodeSampler(d, 3, 1, 2, seed=4) for d in (mapped, in_memory)]
    for _ in range(5):
        a, b = (next(iter(s)) for s in draws)
        assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
        assert torch.equal(a.query_y, b.query_y)


def test_a_damaged_or_foreign_cache_is_rebuilt(tmp_path):
    root = write_folder(tmp_path / "pets")
    first = fsl.load_folder(root, 12, progress=False)
    (folder,) = (tmp_path / "cache" / "folders").iterdir()
    images = folder / "images.npy"
    images.write_bytes(images.read_bytes()[:-100])  # truncated
    with pytest.warns(UserWarning, match="images.npy cannot be read") as record:
        again = fsl.load_folder(root, 12, progress=False)
    assert record[0].filename == __file__  # the warning points at the caller's line
    assert torch.equal(first.flat_images, again.flat_images)
    index = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**index, "counts": [5, 3, 6]}))
    with pytest.warns(UserWarning, match=r"of shape \(15, 3, 12, 12\); its index needs"):
        again = fsl.load_folder(root, 12, progress=False)
    assert torch.equal(first.flat_images, again.flat_images)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no leftovers


def test_an_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pets")
    decode, calls = image_files.decode_image, []

    def interrupted(*args):
        calls.append(args)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return decode(*args)

    monkeypatch.setattr(image_files, "decode_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fsl.load_folder(root, 12, progress=False, workers=1)
    assert list((tmp_path / "cache" / "folders").iterdir()) == []


def with_corrupt_image(root):
    write_folder(root)
    (root / "dog" / "bad.jpg").write_bytes(b"oops")
    return root


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda root: root / "missing", "missing does not exist: pass the folder"),
        (lambda root: root, "holds no class folders"),
        (lambda root: write_image(root / "loose.png", 0).parent, r"holds images \(loose.png\)"),
        (lambda root: (root / "cat").mkdir() or root, "class folder .*cat holds nothing"),
        (
            with_corrupt_image,
            r"dog/bad.jpg is not a readable image \(cannot identify image file",
        ),
        (
            lambda root: write_folder(root / "g", {"a": 1}) and write_folder(root, {"b": 1}),
            r"mixes class folders holding images \(b\) with folders of folders \(g\)",
        ),
    ],
)
def test_bad_folders_fail_with_one_clear_error_and_change_nothing(tmp_path, make, match):
    (tmp_path / "set").mkdir()
    root = make(tmp_path / "set") or tmp_path / "set"
    before = digests(tmp_path / "set")
    with pytest.raises(fsl.ImageFolderError, match=match):
        fsl.load_folder(root, 12, progress=False)
    assert digests(tmp_path / "set") == before


def test_loading_writes_nothing_in_the_users_folder(tmp_path):
    root = write_folder(tmp_path / "pets")
    (root / "train.csv").write_text("filename,label\ncat/00.png,cat\ndog/01.png,dog\n")
    before = digests(root)
    fsl.load_folder(root, 12, progress=False, mmap=True)
    fsl.load_split_file(root / "train.csv", 12, progress=False)
    fsl.load_folder(root, 12, progress=False, cache=False)
    assert digests(root) == before


def test_a_class_too_small_for_the_episodes_is_named(tmp_path):
    dataset = fsl.load_folder(write_folder(tmp_path / "pets"), 12, progress=False)
    with pytest.raises(ValueError, match=r"1 of .* classes have fewer: 'dog' \(3\)"):
        fsl.EpisodeSampler(dataset, 3, 1, 3)


@pytest.mark.parametrize(
    "text, match",
    [
        ("file,label\ncat/00.png,cat\n", "must start with the header line 'filename,label'.*"),
        ("filename,label\ncat/00.png,cat\ncat/99.png,cat\n", r"line 3: cat/99.png\. Fix"),
        ("filename,label\ncat/00.png\n", "line 2: expected 'filename,label', got 'cat/00.png'"),
        ("filename,label\n", "lists no images"),
    ],
)
def test_bad_split_files_are_named_with_their_line(tmp_path, text, match):
    root = write_folder(tmp_path / "pets")
    (root / "train.csv").write_text(text)
    with pytest.raises(fsl.ImageFolderError, match=match):
        fsl.load_split_file(root / "train.csv", 12, progress=False)


def test_bad_json_split_files_are_named_with_their_entry(tmp_path):
    root = write_folder(tmp_path / "pets")
    (root / "a.json").write_text(json.dumps([{"file": "cat/00.png", "label": "cat"}, {"f": 1}]))
    with pytest.raises(fsl.ImageFolderError, match=r"entry 2: \{\"f\": 1\} is not"):
        fsl.load_split_file(root / "a.json", 12, progress=False)
    (root / "b.json").write_text(json.dumps({"cat": ["cat/00.png", "cat/nope.png"]}))
    with pytest.raises(fsl.ImageFolderError, match=r"label 'cat', entry 2: cat/nope.png"):
        fsl.load_split_file(root / "b.json", 12, progress=False)


def test_load_dataset_reads_split_folders_and_split_files(tmp_path):
    write_folder(tmp_path / "folders" / "train")
    write_folder(tmp_path / "folders" / "test", {"fox": 4, "owl": 2})
    train = fsl.load_dataset("folder", "train", root=tmp_path / "folders", progress=False)
    assert train.image_shape == (3, 84, 84) and train.count_list == [5, 3, 7]
    test = fsl.load_dataset(
        "folder", "test", root=tmp_path / "folders", image_size=10, channels=1, progress=False
    )
    assert test.image_shape == (1, 10, 10) and test.class_names == ["fox", "owl"]
    root, rows = split_copy(tmp_path)
    (root / "val.csv").write_text("filename,label\n" + "".join(f"{f},{c}\n" for f, c in rows))
    val = fsl.load_dataset("folder", "val", root=root, image_size=10, progress=False)
    assert val.count_list == [5, 3, 7] and val.groups == ["val"] * 3
    with pytest.raises(fsl.ImageFolderError, match=r"no test split in .*photos \(which holds"):
        fsl.load_dataset("folder", "test", root=root, progress=False)
    with pytest.raises(ValueError, match="pass the folder holding train/, val/"):
        fsl.load_dataset("folder", "train")
    with pytest.raises(ValueError, match="channels=1 does not apply to 'embedded'"):
        fsl.load_dataset("embedded", "train", channels=1)


def test_cli_trains_on_a_colour_folder_without_rotations_and_evaluates_it(tmp_path):
    data = tmp_path / "data"
    write_folder(data / "train", {"a": 4, "b": 5, "c": 4})
    write_folder(data / "test", {"d": 4, "e": 4, "f": 6})
    out = tmp_path / "run"
    common = ["--dataset", "folder", "--data-root", data, "--image-size", 16, "--no-progress"]
    fslearn(
        "train", "maml", *common, "--recipe", "quick", "--hidden-channels", 4, "--steps", 1,
        "--n-way", 3, "--n-shot", 1, "--n-query", 1, "--meta-batch", 1, "--test-n-query", 2,
        "--test-episodes", 2, "--test-steps", 1, "--out", out,
    )  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["rotate"] is False and config["dataset"] == "folder"
    assert fsl.read_checkpoint(out / "checkpoint.pt")["config"]["rotate"] is False
    result = fslearn("eval", out / "checkpoint.pt", "--data-root", data, "--n-way", 3,
                     "--n-query", 2, "--episodes", 2, "--json", "--no-progress")  # fmt: skip
    assert json.loads(result.stdout)["n_way"] == 3
    fails(
        "train",
        "protonet",
        "--image-size",
        16,
        match="--image-size applies to --dataset folder, not embedded",
    )


def test_a_photos_exif_orientation_is_applied(tmp_path):
    """A camera stores a photo taken with the phone turned as it was read off the sensor, with
    an EXIF tag saying how to turn it upright; viewers turn it, and so must the loader."""
    pixels = np.zeros((12, 12), dtype=np.uint8)
    pixels[:, :6] = 255  # the left half white, as the sensor read it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: show it turned 90° clockwise
    (tmp_path / "photos" / "a").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(pixels, "L").save(tmp_path / "photos" / "a" / f"{i}.png", exif=exif)
    image = fsl.load_folder(tmp_path / "photos", image_size=12, progress=False).flat_images[0, 0]
    upright = torch.from_numpy(np.rot90(pixels, -1).copy())  # the top half white
    assert torch.equal(image, upright)
    assert image[:6].float().mean() > 250 and image[6:].float().mean() < 5
