import hashlib
import io
import random
import stat
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

import fslearn as fsl
from fslearn import download_omniglot, load_omniglot, omniglot_split
from fslearn.data import omniglot
from fslearn.data.archives import extract_zip

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
ALPHABETS = ("Zeta_script", "Alpha_(test)")  # not in sorted order, to test the sorting
N_CHARACTERS = 3


def character_png(alphabet: int, character: int, drawer: int) -> bytes:
    """A 105×105 one-bit PNG, black ink on white, like Omniglot's.

    A bar whose position tells the character apart, and a dot whose position tells the drawer.
    """
    image = Image.new("1", (105, 105), 1)
    draw = ImageDraw.Draw(image)
    top = 10 + 25 * character
    draw.rectangle([10 + 40 * alphabet, top, 40 + 40 * alphabet, top + 12], fill=0)
    draw.rectangle([4 * drawer, 95, 4 * drawer + 2, 97], fill=0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_omniglot_zip(path: Path, top: str = "images_background") -> Path:
    """A small zip in the real layout: 2 alphabets × 3 characters × 20 drawers, members shuffled."""
    members = [
        (
            f"{top}/{alphabet}/character{c + 1:02d}/{100 + 10 * a + c:04d}_{d + 1:02d}.png",
            character_png(a, c, d),
        )
        for a, alphabet in enumerate(ALPHABETS)
        for c in range(N_CHARACTERS)
        for d in range(20)
    ]
    random.Random(0).shuffle(members)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_zip(tmp_path) -> Path:
    return make_omniglot_zip(tmp_path / "images_fake.zip", top="images_fake")


@pytest.fixture
def published(tmp_path, monkeypatch):
    """The small zip served at a file:// URL as if it were images_background, with its md5."""
    source = make_omniglot_zip(tmp_path / "served.zip")
    monkeypatch.setitem(omniglot.OMNIGLOT_URLS, "images_background", source.as_uri())
    monkeypatch.setitem(omniglot.OMNIGLOT_MD5, "images_background", md5(source))
    return source


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_load_shapes_names_sorting_and_ink(tmp_cache, fake_zip):
    dataset = load_omniglot(path=fake_zip, image_size=105, progress=False)
    assert dataset.images.shape == (6, 20, 1, 105, 105) and dataset.images.dtype == torch.uint8
    assert dataset.class_names == [
        f"{a}/character{c:02d}" for a in sorted(ALPHABETS) for c in (1, 2, 3)
    ]
    assert dataset.groups == [a for a in sorted(ALPHABETS) for _ in range(3)]
    assert "images_fake" in dataset.name
    assert set(dataset.images.unique().tolist()) == {0, 255}
    assert dataset.images.float().mean() / 255 < 0.1, "ink is the foreground"
    # Sorted alphabets put Alpha_(test) (drawn as alphabet 1) first; drawers by number.
    for i, (a, c) in enumerate((a, c) for a in (1, 0) for c in range(3)):
        image = dataset.images[i, :, 0]
        top = 10 + 25 * c
        assert (image[:, top : top + 13, 10 + 40 * a : 41 + 40 * a] == 255).all()
        for d in range(20):
            assert (image[d, 95:98, 4 * d : 4 * d + 3] == 255).all()
            assert image[d, 95:98].sum() == 255 * 9, "one drawer mark, the drawer's own"


def test_resize_keeps_ink(tmp_cache, fake_zip):
    full = load_omniglot(path=fake_zip, image_size=105, progress=False)
    small = load_omniglot(path=fake_zip, image_size=28, progress=False)
    assert small.images.shape == (6, 20, 1, 28, 28) and small.images.dtype == torch.uint8
    assert small.images.float().mean().item() == pytest.approx(
        full.images.float().mean().item(), rel=0.1
    )


def test_folder_loads_like_the_zip(tmp_cache, tmp_path, fake_zip):
    folder = extract_zip(fake_zip, tmp_path / "extracted", progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(ALPHABETS), (
        "the top folder is unwrapped"
    )
    assert torch.equal(
        load_omniglot(path=folder, progress=False).images,
        load_omniglot(path=fake_zip, progress=False).images,
    )
    assert extract_zip(fake_zip, folder) == folder, "an existing folder counts as extracted"


def test_missing_zip_says_how_to_get_it(tmp_cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True") as error:
        load_omniglot("images_evaluation", root=tmp_path / "data")
    assert str(tmp_path / "data" / "omniglot" / "images_evaluation.zip") in str(error.value)
    with pytest.raises(FileNotFoundError, match="nowhere.zip"):
        load_omniglot(path=tmp_path / "nowhere.zip")


def test_unknown_name_lists_the_valid_ones(tmp_cache):
    with pytest.raises(ValueError, match="images_background_small1"):
        download_omniglot("images_backround")
    with pytest.raises(ValueError, match="images_evaluation"):
        load_omniglot("omniglot")


def test_download_from_file_url(tmp_cache, published):
    path = download_omniglot("images_background", progress=False)
    assert path == tmp_cache / "data" / "omniglot" / "images_background.zip"
    assert md5(path) == md5(published) and leftovers(path.parent) == []
    dataset = load_omniglot(download=True, progress=False)
    assert dataset.images.shape == (6, 20, 1, 28, 28)


def test_download_with_wrong_md5_leaves_no_file(tmp_cache, published, monkeypatch):
    monkeypatch.setitem(omniglot.OMNIGLOT_MD5, "images_background", "0" * 32)
    with pytest.raises(ValueError, match=f"{md5(published)}.*{'0' * 32}.*discarded"):
        load_omniglot(download=True, progress=False)
    folder = tmp_cache / "data" / "omniglot"
    assert list(folder.iterdir()) == []


def test_failed_download_leaves_no_file(tmp_cache, monkeypatch):
    def broken(url, dest, progress):
        dest.write_bytes(b"half a zi")
        raise ConnectionError("cable pulled")

    monkeypatch.setattr(omniglot, "fetch", broken)
    with pytest.raises(ConnectionError, match="cable pulled"):
        download_omniglot("images_evaluation", progress=False)
    assert list((tmp_cache / "data" / "omniglot").iterdir()) == []


def test_unreachable_url_is_a_clear_error(tmp_cache, tmp_path, monkeypatch):
    monkeypatch.setitem(
        omniglot.OMNIGLOT_URLS, "images_evaluation", (tmp_path / "absent.zip").as_uri()
    )
    with pytest.raises(ConnectionError, match="could not download .*absent.zip") as error:
        download_omniglot("images_evaluation", progress=False)
    assert f"copy it into {tmp_cache / 'data' / 'omniglot'} " in str(error.value)
    assert list((tmp_cache / "data" / "omniglot").iterdir()) == []  # no partial file left


def test_existing_zip_with_wrong_md5_is_named(tmp_cache, published):
    path = tmp_cache / "data" / "omniglot" / "images_background.zip"
    path.parent.mkdir(parents=True)
    path.write_bytes(published.read_bytes()[:1000])  # a truncated download
    with pytest.raises(ValueError) as error:
        load_omniglot(progress=False)
    message = str(error.value)
    assert str(path) in message and md5(path) in message and md5(published) in message
    assert "Delete it" in message
    assert not (tmp_cache / "omniglot").exists(), "nothing decoded or cached"


def test_not_a_zip_is_named_with_its_md5(tmp_cache, tmp_path, fake_zip):
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(fake_zip.read_bytes()[: fake_zip.stat().st_size // 2])
    with pytest.raises(
        ValueError, match=f"truncated.zip \\(md5 {md5(truncated)}\\) is not a valid zip"
    ):
        load_omniglot(path=truncated, progress=False)
    page = tmp_path / "images_background.zip"
    page.write_text("<!DOCTYPE html><html>Sign in</html>")
    with pytest.raises(ValueError, match="not a valid zip"):
        load_omniglot(path=page, md5_check=False, progress=False)
    with pytest.raises(ValueError, match="not a valid zip"):
        extract_zip(page, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_md5_check_applies_to_published_names_only(tmp_cache, tmp_path, fake_zip):
    renamed = tmp_path / "images_evaluation.zip"
    renamed.write_bytes(fake_zip.read_bytes())
    with pytest.raises(ValueError, match="6b91aef0f799c5bb55b94e3f2daec811"):
        load_omniglot(path=renamed, progress=False)
    assert load_omniglot(path=renamed, md5_check=False, progress=False).n_classes == 6


@pytest.mark.parametrize(
    "member",
    [
        zipfile.ZipInfo("../evil.png"),
        zipfile.ZipInfo("images/../../evil.png"),
        zipfile.ZipInfo("/tmp/evil.png"),
        "symlink",
    ],
)
def test_unsafe_members_are_refused_and_nothing_extracted(tmp_path, member):
    if member == "symlink":
        member = zipfile.ZipInfo("images/evil.png")
        member.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/ok.png", b"fine")
        zf.writestr(member, b"/etc/passwd")
    target = tmp_path / "out" / "images"
    with pytest.raises(ValueError, match=f"member {member.filename!r}"):
        extract_zip(archive, target, progress=False)
    assert not target.exists() and not (tmp_path / "evil.png").exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_interrupted_extraction_leaves_no_folder(tmp_path, fake_zip, monkeypatch):
    original, calls = zipfile.ZipFile.extract, []

    def fail_midway(self, member, path=None, pwd=None):
        calls.append(member)
        if len(calls) == 50:
            raise KeyboardInterrupt
        return original(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", fail_midway)
    with pytest.raises(KeyboardInterrupt):
        extract_zip(fake_zip, tmp_path / "out" / "images", progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_decoded_cache_is_reused(tmp_cache, fake_zip, monkeypatch):
    decode, calls = omniglot._decode, []

    def counting(*args):
        calls.append(args)
        return decode(*args)

    monkeypatch.setattr(omniglot, "_decode", counting)
    first = load_omniglot(path=fake_zip, progress=False)
    # The second load of the same zip and size must read the cache: decoding would fail.
    monkeypatch.setattr(omniglot, "_decode", lambda *args: pytest.fail("decoded again"))
    second = load_omniglot(path=fake_zip, progress=False)
    assert len(calls) == 1 and torch.equal(first.images, second.images)
    assert (first.class_names, first.groups) == (second.class_names, second.groups)
    monkeypatch.setattr(omniglot, "_decode", counting)
    load_omniglot(path=fake_zip, image_size=32, progress=False)
    assert len(calls) == 2, "another image size is another cache entry"
    assert leftovers(tmp_cache / "omniglot") == []


def test_damaged_cache_is_rebuilt(tmp_cache, fake_zip):
    first = load_omniglot(path=fake_zip, progress=False)
    (cache,) = (tmp_cache / "omniglot").iterdir()
    cache.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = load_omniglot(path=fake_zip, progress=False)
    assert torch.equal(first.images, again.images)


def test_layout_errors(tmp_cache, tmp_path):
    uneven = tmp_path / "uneven.zip"
    with zipfile.ZipFile(uneven, "w") as zf:
        for c, n in ((0, 20), (1, 19)):
            for d in range(n):
                zf.writestr(
                    f"top/Alpha/character{c + 1:02d}/0001_{d + 1:02d}.png", character_png(0, c, d)
                )
    with pytest.raises(ValueError, match="different numbers of drawers.*Alpha/character02: 19"):
        load_omniglot(path=uneven, progress=False)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no images")
    with pytest.raises(ValueError, match="holds no"):
        load_omniglot(path=empty, progress=False)
    doubled = tmp_path / "doubled"
    for top in ("small1", "small2"):
        extract_zip(make_omniglot_zip(tmp_path / f"{top}.zip", top), doubled / top, progress=False)
    with pytest.raises(ValueError, match="drawer twice"):
        load_omniglot(path=doubled, progress=False)


def pool(n_background: int, n_evaluation: int):
    """Two tiny disjoint datasets whose pixels spell out each class's index."""

    def dataset(start, n, prefix):
        images = torch.arange(start, start + n).view(n, 1, 1, 1, 1).expand(n, 2, 1, 2, 2)
        images = (images * torch.tensor([[1, 2], [3, 4]])).to(torch.int32)
        names = [f"{prefix}{i // 10}/character{i % 10:02d}" for i in range(n)]
        return fsl.FewShotDataset(images, names, [n.split("/")[0] for n in names], prefix)

    return dataset(0, n_background, "back"), dataset(n_background, n_evaluation, "eval")


def test_paper_split_sizes_on_1623_characters():
    background, evaluation = pool(964, 659)
    vinyals = {s: omniglot_split(background, evaluation, "vinyals", s) for s in ("train", "test")}
    assert (vinyals["train"].n_classes, vinyals["test"].n_classes) == (4800, 4 * 423)
    maml = {s: omniglot_split(background, evaluation, "maml", s) for s in ("train", "val", "test")}
    assert [maml[s].n_classes for s in ("train", "val", "test")] == [1100, 100, 423]
    names = [set(d.class_names) for d in maml.values()]
    assert set.union(*names) == set(background.class_names + evaluation.class_names)
    assert sum(map(len, names)) == 1623, "disjoint, and every character used"


def test_vinyals_rotations_and_disjointness():
    background, evaluation = pool(20, 13)
    train = omniglot_split(background, evaluation, "vinyals", "train", seed=3)
    test = omniglot_split(background, evaluation, "vinyals", "test", seed=3)
    assert (train.n_classes, test.n_classes) == (4 * 24, 4 * 9)  # round(33 * 1200 / 1623) = 24
    base = lambda d: {n.split("@")[0] for n in d.class_names}  # noqa: E731
    assert not base(train) & base(test) and len(base(train) | base(test)) == 33
    n = train.n_classes // 4
    assert train.class_names[n] == train.class_names[0].replace("@rot0", "@rot90")
    assert torch.equal(train.images[n], torch.rot90(train.images[0], 1, dims=(-2, -1)))
    assert "vinyals" in train.name and "seed 3" in train.name


def test_split_is_deterministic_by_seed():
    background, evaluation = pool(20, 13)

    def names(seed):
        return omniglot_split(background, evaluation, "maml", "train", seed=seed).class_names

    assert names(0) == names(0) and names(0) != names(1)


def test_lake_split_is_the_datasets_as_given():
    background, evaluation = pool(20, 13)
    assert (
        omniglot_split(background, evaluation, "lake", "train").class_names
        == background.class_names
    )
    assert torch.equal(
        omniglot_split(background, evaluation, "lake", "test").images, evaluation.images
    )
    with pytest.raises(ValueError, match="no validation split"):
        omniglot_split(background, evaluation, "lake", "val")


def test_split_sizes_and_argument_errors():
    background, evaluation = pool(20, 13)
    train = omniglot_split(background, evaluation, "maml", "train", sizes=(10, 5, 18))
    val = omniglot_split(background, evaluation, "maml", "val", sizes=(10, 5, 18))
    assert (train.n_classes, val.n_classes) == (10, 5)
    with pytest.raises(ValueError, match="too small for the 'maml' protocol"):
        omniglot_split(*pool(4, 2), "maml", "train")
    with pytest.raises(ValueError, match="summing to at most 33"):
        omniglot_split(background, evaluation, "maml", "train", sizes=(30, 5, 5))
    with pytest.raises(ValueError, match="protocol must be one of"):
        omniglot_split(background, evaluation, "snell", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        omniglot_split(background, evaluation, "maml", "validation")
    with pytest.raises(ValueError, match="share 20 classes"):
        omniglot_split(background, background, "vinyals", "train")


def real_zip(name: str) -> Path:
    path = REAL / f"{name}.zip"
    if not path.exists():
        pytest.skip(
            f"the real Omniglot zip {path} is not present (it is not part of the repository)"
        )
    return path


def test_real_small_zips(tmp_cache):
    small1 = load_omniglot(path=real_zip("images_background_small1"), progress=False)
    small2 = load_omniglot(path=real_zip("images_background_small2"), progress=False)
    assert small1.images.shape == (136, 20, 1, 28, 28) and small2.n_classes == 156
    assert sorted(set(small1.groups)) == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    assert sorted(set(small2.groups)) == [
        "Greek",
        "Japanese_(katakana)",
        "Latin",
        "Sanskrit",
        "Tagalog",
    ]
    shared = ["Greek", "Latin"]
    a, b = small1.select_groups(shared), small2.select_groups(shared)
    assert a.class_names == b.class_names and torch.equal(a.images, b.images)
    ink = small1.images.float().mean() / 255
    assert 0.02 < ink < 0.2, "ink is the foreground after inverting"


def test_real_zip_md5_is_checked(tmp_cache, tmp_path):
    source = real_zip("images_background_small1")
    assert download_omniglot("images_background_small1", root=source.parent.parent) == source
    copy = tmp_path / "images_background_small1.zip"
    copy.write_bytes(source.read_bytes()[:-100])
    with pytest.raises(ValueError, match="e704a628b5459e08445c13499850abc4"):
        load_omniglot(path=copy, progress=False)
