"""The data layer against hostile input: damaged archives, caches and settings, odd numbers.

Every test builds the bad input as a user would meet it (a zip whose member fails its CRC,
a cache written by other code, a cache folder that is a file) and checks the error's type,
that its message names the file or value and the fix, and that the user's files are as
they were.
"""

import hashlib
import http.client
import io
import os
import pickle
import random
import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fslearn as fsl
from fslearn import common
from fslearn.common import atomic_path, cache_dir, cached, check_positive_int
from fslearn.data import archives, embedded
from fslearn.data.archives import DamagedFileError, extract_zip

from synthetic import RUN_IMAGE_SIZE, glyph, make_runs, png

# miniImageNet fakes have 2 classes, not 64: every load warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:miniImageNet .* standard split:UserWarning")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_cache):
    """Never touch the user's real cache, even in a test that expects to fail first."""
    return tmp_cache


def sha256s(*paths: Path) -> dict:
    """The sha256 of every file under ``paths``: what must not change."""
    files = [q for p in paths for q in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files or folders (what an interrupted write leaves)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def character_zip(path: Path, compression=zipfile.ZIP_STORED, replace=None) -> Path:
    """An Omniglot-layout zip, 2 alphabets × 2 characters × 20 drawers; ``replace`` maps a
    member to other bytes."""
    rng, replace = random.Random(0), replace or {}
    with zipfile.ZipFile(path, "w", compression) as archive:
        for alphabet in ("Alpha", "Beta"):
            for c in (1, 2):
                for d in range(1, 21):
                    name = f"images_x/{alphabet}/character{c:02d}/{c:04d}_{d:02d}.png"
                    archive.writestr(name, replace.get(name, png(glyph(rng))))
    return path


MEMBER = "images_x/Beta/character02/0002_07.png"


def member_data_offset(archive: Path, member: str) -> tuple[int, int]:
    """Where ``member``'s compressed bytes start in the file, and how many there are."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    header = archive.read_bytes()[info.header_offset : info.header_offset + 30]
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length, info.compress_size


def flip_member_bytes(archive: Path, member: str) -> None:
    """Flip bytes inside ``member``'s compressed data: its CRC (or its deflate stream) fails,
    while the zip's table of contents stays intact, as after a bad copy or a bad sector."""
    start, size = member_data_offset(archive, member)
    data = bytearray(archive.read_bytes())
    for i in range(start + size // 2, start + size // 2 + 4):
        data[i] ^= 0xFF
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as zf, pytest.raises((zipfile.BadZipFile, zlib.error)):
        zf.read(member)  # the damage is real


def patch_headers(archive: Path, member: str, *, local: int, central: int, value: int) -> None:
    """Set a 2-byte field of ``member``'s local header and central directory entry."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        local_at = zf.getinfo(member).header_offset
    struct.pack_into("<H", data, local_at + local, value)
    encoded = member.encode()
    at = data.find(b"PK\x01\x02")  # the central directory entries' signature
    while at != -1:
        (name_length,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46 : at + 46 + name_length] == encoded:
            struct.pack_into("<H", data, at + central, value)
        at = data.find(b"PK\x01\x02", at + 4)
    archive.write_bytes(bytes(data))


# -- 1. damaged archives ------------------------------------------------------------------


@pytest.mark.parametrize(
    "compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"]
)
def test_omniglot_member_with_a_bad_crc_names_archive_and_member(tmp_cache, tmp_path, compression):
    archive = character_zip(tmp_path / "images_x.zip", compression)
    flip_member_bytes(archive, MEMBER)
    before = sha256s(archive)
    with pytest.raises(DamagedFileError) as error:
        fsl.load_omniglot(path=archive, progress=False)
    message = str(error.value)
    assert f"{MEMBER} in {archive} fails the zip's integrity check" in message
    assert f"Delete {archive} and download it again" in message
    assert isinstance(error.value, ValueError)
    assert sha256s(archive) == before
    assert not list((tmp_cache / "omniglot").glob("*")), "nothing cached, nothing left over"


@pytest.mark.parametrize(
    "field,local,central,value,words",
    [
        ("compression method", 8, 10, 98, "That compression method is not supported"),
        ("encryption flag", 6, 8, 0x1, "encrypted"),
    ],
)
def test_member_zipfile_cannot_decode_is_named(
    tmp_cache, tmp_path, field, local, central, value, words
):
    archive = character_zip(tmp_path / "images_x.zip")
    patch_headers(archive, MEMBER, local=local, central=central, value=value)
    with pytest.raises(ValueError, match=re.escape(f"cannot read {MEMBER} in {archive}")) as error:
        fsl.load_omniglot(path=archive, progress=False)
    assert words in str(error.value) and "extract it with another tool" in str(error.value)


def test_member_names_that_are_not_utf8_mean_a_damaged_zip(tmp_cache, tmp_path):
    archive = tmp_path / "names.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Alpha/caf\u00e9/0001_01.png", png(np.eye(8, dtype=bool)))
    archive.write_bytes(archive.read_bytes().replace("caf\u00e9".encode(), b"caf\xff\xfe"))
    with pytest.raises(ValueError, match=re.escape(f"{archive} (md5 ") + ".*not a valid zip"):
        fsl.load_omniglot(path=archive, progress=False)


PNG = png(np.eye(RUN_IMAGE_SIZE, dtype=bool))


def _damaged_png(position: int, value: int) -> bytes:
    data = bytearray(PNG)
    data[position] = value
    return bytes(data)


NOT_IMAGES = {
    "text": b"<html><body>404 Not Found</body></html>",
    "empty": b"",
    "truncated": PNG[: len(PNG) // 2],
    # Pillow raises SyntaxError for a chunk length that breaks the chunk sequence...
    "broken chunk": _damaged_png(36, 0),
    # ...and ValueError for a short header: neither is an OSError.
    "short header": _damaged_png(11, 0),
}


@pytest.mark.parametrize("kind", NOT_IMAGES)
def test_omniglot_member_that_is_not_an_image_is_named(tmp_cache, tmp_path, kind):
    archive = character_zip(tmp_path / "images_x.zip", replace={MEMBER: NOT_IMAGES[kind]})
    with pytest.raises(
        DamagedFileError, match=re.escape(f"{MEMBER} in {archive} is not a readable image")
    ) as error:
        fsl.load_omniglot(path=archive, progress=False)
    assert "BytesIO" not in str(error.value), "an in-memory buffer is no name for a file"
    assert "download it again" in str(error.value)


def test_image_in_an_extracted_folder_that_is_not_one_is_named(tmp_cache, tmp_path):
    archive = character_zip(tmp_path / "images_x.zip", replace={MEMBER: NOT_IMAGES["text"]})
    folder = extract_zip(archive, tmp_path / "images_x", progress=False)
    bad = folder / MEMBER.split("/", 1)[1]
    before = sha256s(folder)
    with pytest.raises(
        DamagedFileError, match=re.escape(f"{bad} is not a readable image")
    ) as error:
        fsl.load_omniglot(path=folder, progress=False)
    assert "Replace it" in str(error.value)
    assert sha256s(folder) == before


def test_a_broken_link_in_an_extracted_folder_is_skipped(tmp_cache, tmp_path):
    folder = extract_zip(character_zip(tmp_path / "images_x.zip"), tmp_path / "x", progress=False)
    (folder / "Alpha" / "character01" / "9999_99.png").symlink_to(tmp_path / "gone.png")
    assert fsl.load_omniglot(path=folder, progress=False).n_classes == 4


def test_extracting_a_damaged_zip_names_the_member_and_leaves_no_folder(tmp_path):
    archive = character_zip(tmp_path / "images_x.zip", zipfile.ZIP_DEFLATED)
    flip_member_bytes(archive, MEMBER)
    target = tmp_path / "out" / "images_x"
    with pytest.raises(ValueError, match=re.escape(f"{MEMBER} in {archive}")):
        extract_zip(archive, target, progress=False)
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []


@pytest.fixture(scope="module")
def run_files():
    files, _ = make_runs(random.Random(1))
    return files


def runs_zip(path: Path, files: dict, replace=None, compression=zipfile.ZIP_STORED) -> Path:
    """Lake's all_runs layout; ``replace`` maps a run file (``"run01/..."``) to raw bytes."""
    replace = replace or {}
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in files.items():
            if name in replace:
                data = replace[name]
            else:
                data = content.encode() if isinstance(content, str) else png(content)
            archive.writestr(f"all_runs/{name}", data)
    return path


@pytest.mark.parametrize(
    "compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"]
)
def test_runs_member_with_a_bad_crc_names_archive_and_member(tmp_path, run_files, compression):
    archive = runs_zip(tmp_path / "all_runs.zip", run_files, compression=compression)
    member = "all_runs/run07/training/class03.png"
    flip_member_bytes(archive, member)
    before = sha256s(archive)
    with pytest.raises(DamagedFileError) as error:
        fsl.load_runs(archive)
    assert f"{member} in {archive} fails the zip's integrity check" in str(error.value)
    assert f"Delete {archive} and download it again" in str(error.value)
    assert sha256s(archive) == before


def test_runs_label_file_that_is_not_utf8_is_named(tmp_path, run_files):
    labels = run_files["run04/class_labels.txt"].encode("utf-16")  # as a Windows editor saves it
    archive = runs_zip(tmp_path / "all_runs.zip", run_files, {"run04/class_labels.txt": labels})
    with pytest.raises(
        ValueError,
        match=re.escape(f"all_runs/run04/class_labels.txt in {archive} is not UTF-8 text"),
    ):
        fsl.load_runs(archive)


def test_runs_label_file_with_a_byte_order_mark_loads(tmp_path, run_files):
    labels = run_files["run04/class_labels.txt"].encode("utf-8-sig")
    archive = runs_zip(tmp_path / "all_runs.zip", run_files, {"run04/class_labels.txt": labels})
    plain = runs_zip(tmp_path / "plain.zip", run_files)
    assert torch.equal(fsl.load_runs(archive)[3].query_y, fsl.load_runs(plain)[3].query_y)


@pytest.mark.parametrize("kind", ["text", "truncated", "broken chunk"])
def test_runs_image_that_is_not_an_image_is_named(tmp_path, run_files, kind):
    member = "run02/test/item03.png"
    archive = runs_zip(tmp_path / "all_runs.zip", run_files, {member: NOT_IMAGES[kind]})
    with pytest.raises(
        DamagedFileError, match=re.escape(f"all_runs/{member} in {archive} is not a readable image")
    ) as error:
        fsl.load_runs(archive)
    assert "BytesIO" not in str(error.value)


def test_runs_in_a_folder_name_the_damaged_file(tmp_path, run_files):
    member = "run05/training/class11.png"
    archive = runs_zip(tmp_path / "all_runs.zip", run_files, {member: b"GIF89a garbage"})
    folder = extract_zip(archive, tmp_path / "runs", progress=False)
    with pytest.raises(
        DamagedFileError, match=re.escape(f"{folder / member} is not a readable image")
    ):
        fsl.load_runs(folder)


# -- downloads that break off ---------------------------------------------------------------


class _Response(io.BytesIO):
    """What urlopen returns, from a server that sends a garbled Content-Length."""

    headers = {"Content-Length": "not a number"}


class _CutOff(_Response):
    """A connection that closes before the end of the file."""

    def read(self, n=-1):
        raise http.client.IncompleteRead(b"PK\x03\x04", 99)


def test_a_download_that_breaks_off_is_a_connection_error(tmp_path, monkeypatch):
    monkeypatch.setattr(archives.urllib.request, "urlopen", lambda *a, **k: _CutOff())
    url = "https://example.org/all_runs.zip"
    with pytest.raises(
        ConnectionError, match=re.escape(f"could not download {url}") + ".*IncompleteRead"
    ):
        archives.fetch(url, tmp_path / "all_runs.zip", progress=False)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a full disk)")
def test_a_download_onto_a_full_disk_names_the_file(monkeypatch):
    monkeypatch.setattr(archives.urllib.request, "urlopen", lambda *a, **k: _Response(b"x" * 10))
    with pytest.raises(
        OSError, match="cannot write the download of .* to /dev/full .*the disk has room"
    ) as error:
        archives.fetch("https://example.org/a.zip", Path("/dev/full"), progress=False)
    assert not isinstance(error.value, ConnectionError), "a full disk is not a network problem"


# -- 2. caches that hold the wrong thing ---------------------------------------------------

GOOD = {
    "images": torch.zeros(20, 20, 1, 28, 28, dtype=torch.uint8),
    "class_names": [f"A/character{i:02d}" for i in range(20)],
    "groups": ["A"] * 20,
    "name": "x",
}
WRONG_CACHES = {
    "no class_names": ({k: v for k, v in GOOD.items() if k != "class_names"}, "no 'class_names'"),
    "float images": (dict(GOOD, images=GOOD["images"].float()), "torch.float32"),
    "4-D images": (dict(GOOD, images=GOOD["images"][:, :, 0]), r"shape \(20, 20, 28, 28\)"),
    "another size": (
        dict(GOOD, images=torch.zeros(20, 20, 1, 105, 105, dtype=torch.uint8)),
        r"expected torch.uint8 of shape \(n_classes, n_per_class, 1, 28, 28\)",
    ),
    "names short": (
        dict(GOOD, class_names=GOOD["class_names"][:3]),
        "20 classes .* but 3 class_names",
    ),
    "names not strings": (
        dict(GOOD, class_names=list(range(20))),
        "class_names is not a list of strings",
    ),
    "images not a tensor": (
        dict(GOOD, images=[[0]]),
        "images is a list, not a tensor",
    ),
    "a tensor, not a dict": (GOOD["images"], "holds a Tensor, not a dict"),
    "a list": ([1, 2], "holds a list, not a dict"),
}


@pytest.fixture
def small_embedded(monkeypatch):
    """load_embedded draws one alphabet (20 characters) instead of 50; the calls are listed."""
    real, calls = embedded.generate, []

    def one_alphabet(seed, image_size, progress=False):
        calls.append((seed, image_size))
        return real(seed, image_size, alphabets=[0])

    monkeypatch.setattr(embedded, "generate", one_alphabet)
    return calls


@pytest.mark.parametrize("kind", WRONG_CACHES)
def test_embedded_cache_of_the_wrong_shape_is_rebuilt(tmp_cache, small_embedded, kind):
    saved, problem = WRONG_CACHES[kind]
    path = embedded._cache_file(7, 28)
    torch.save(saved, path)
    with pytest.warns(
        UserWarning, match=f"ignoring unreadable cache .*{problem}.*building it again"
    ):
        dataset = fsl.load_embedded("all", seed=7, progress=False)
    assert small_embedded == [(7, 28)], "built again"
    assert dataset.images.shape == (20, 20, 1, 28, 28) and dataset.images.dtype == torch.uint8
    rebuilt = torch.load(path, weights_only=True)
    assert torch.equal(rebuilt["images"], dataset.images) and len(rebuilt["class_names"]) == 20
    assert leftovers(tmp_cache) == []
    fsl.load_embedded("all", seed=7, progress=False)
    assert len(small_embedded) == 1, "the rebuilt cache is read"


def test_omniglot_cache_without_class_names_is_rebuilt(tmp_cache, tmp_path):
    archive = character_zip(tmp_path / "images_x.zip")
    first = fsl.load_omniglot(path=archive, progress=False)
    (path,) = (tmp_cache / "omniglot").iterdir()
    torch.save({"images": first.images, "groups": first.groups}, path)
    with pytest.warns(UserWarning, match="ignoring unreadable cache .*no 'class_names'"):
        again = fsl.load_omniglot(path=archive, progress=False)
    assert torch.equal(first.images, again.images) and again.class_names == first.class_names
    torch.save(dict(torch.load(path), images=first.images.to(torch.int16)), path)
    with pytest.warns(UserWarning, match="ignoring unreadable cache .*torch.int16"):
        assert fsl.load_omniglot(path=archive, progress=False).images.dtype == torch.uint8


def test_omniglot_name_cannot_steer_the_cache_out_of_its_folder(tmp_cache, tmp_path):
    archive = character_zip(tmp_path / "images_x.zip")
    fsl.load_omniglot("../../escaped", path=archive, progress=False)
    assert [p.parent for p in tmp_path.rglob("*escaped*")] == [tmp_cache / "omniglot"]


def write_pickle(root: Path, image_data, class_dict, split="train") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"mini-imagenet-cache-{split}.pkl"
    path.write_bytes(pickle.dumps({"image_data": image_data, "class_dict": class_dict}))
    return path


def tiny_pickle(root: Path) -> Path:
    images = np.arange(4 * 12 * 12 * 3, dtype=np.uint8).reshape(4, 12, 12, 3)
    return write_pickle(root, images, {"n02": [0, 1], "n01": [2, 3]})


def test_miniimagenet_cache_with_wrong_keys_or_channels_is_rebuilt(tmp_cache, tmp_path):
    tiny_pickle(tmp_path / "mini")
    first = fsl.load_miniimagenet(tmp_path / "mini", image_size=12, progress=False)
    (path,) = tmp_cache.glob("miniimagenet-*.pt")
    torch.save({"pixels": first.images, "class_names": first.class_names}, path)
    with pytest.warns(UserWarning, match="ignoring unreadable cache .*no 'images'"):
        again = fsl.load_miniimagenet(tmp_path / "mini", image_size=12, progress=False)
    assert torch.equal(again.images, first.images)
    grey = {"images": first.flat_images[:, :1], "counts": first.counts}
    torch.save({**grey, "class_names": first.class_names}, path)
    with pytest.warns(UserWarning, match=r"unreadable cache .*\(n_images, 3, 12, 12\)"):
        again = fsl.load_miniimagenet(tmp_path / "mini", image_size=12, progress=False)
    assert torch.equal(again.flat_images, first.flat_images)


def test_cached_checks_keys_and_content(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"a": 1}, path)
    with pytest.warns(
        UserWarning, match=re.escape(f"ignoring unreadable cache {path} (it has no 'b')")
    ):
        assert cached(path, lambda: {"a": 2, "b": 3}, keys=("a", "b")) == {"a": 2, "b": 3}
    assert cached(path, lambda: pytest.fail("rebuilt"), keys=("a", "b")) == {"a": 2, "b": 3}
    with pytest.warns(UserWarning, match=r"\(b is odd\)"):
        cached(
            path,
            lambda: {"a": 2, "b": 4},
            keys=("a",),
            check=lambda s: "b is odd" if s["b"] % 2 else None,
        )


def test_a_cache_that_cannot_be_written_is_skipped_with_a_warning(tmp_path, monkeypatch):
    def full_disk(obj, path):
        Path(path).write_bytes(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.warns(
        UserWarning, match="could not write the cache .*file write failed.*continuing"
    ):
        assert cached(tmp_path / "c.pt", lambda: {"a": 1}, keys=("a",)) == {"a": 1}
    assert list(tmp_path.iterdir()) == [], "no partial file"


# -- 3. the cache folder ----------------------------------------------------------------------


def test_cache_folder_that_is_a_file(tmp_path, monkeypatch):
    taken = tmp_path / "cache"
    taken.write_text("the user's notes")
    before = sha256s(taken)
    monkeypatch.setenv("FSLEARN_CACHE", str(taken))
    with pytest.raises(OSError) as error:
        cache_dir()
    message = str(error.value)
    assert (
        f"cannot use {taken} as fslearn's cache folder ({taken} is a file, not a folder)" in message
    )
    assert f"FSLEARN_CACHE={str(taken)!r}" in message
    assert "unset FSLEARN_CACHE or point it at a writable folder" in message
    assert sha256s(taken) == before


def test_xdg_cache_home_that_is_a_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "xdg").write_text("x")
    monkeypatch.delenv("FSLEARN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(OSError, match=f"XDG_CACHE_HOME={re.escape(repr(str(tmp_path / 'xdg')))}"):
        cache_dir()


def test_cache_file_that_is_a_folder_is_skipped(tmp_path):
    (tmp_path / "c.pt").mkdir()
    with pytest.warns(UserWarning) as caught:
        assert cached(tmp_path / "c.pt", lambda: {"a": 1}, keys=("a",)) == {"a": 1}
    messages = [str(w.message) for w in caught]
    assert any("ignoring unreadable cache" in m for m in messages)
    assert any("could not write the cache" in m for m in messages)
    assert (tmp_path / "c.pt").is_dir() and leftovers(tmp_path) == []


def test_cache_folder_under_a_file(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("FSLEARN_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(
        OSError, match=re.escape(f"({tmp_path / 'file'} is a file)") + ".*FSLEARN_CACHE="
    ):
        fsl.load_embedded(progress=False)


def test_a_missing_cache_in_a_folder_that_is_not_writable(tmp_path, monkeypatch):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    monkeypatch.setenv("FSLEARN_CACHE", str(folder))
    try:
        if os.geteuid() == 0:
            # root writes anyway: make the write check fail as it does for everyone else.
            def refuse(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(common.tempfile, "TemporaryFile", refuse)
        assert cache_dir() == folder  # read-only is fine until a cache is missing
        with pytest.raises(
            OSError,
            match=re.escape(
                f"cannot write the cache {folder / 'c.pt'} (cannot write in {folder}: "
                f"Permission denied): fslearn only reads its cache folder {folder} where"
            ),
        ) as error:
            cached(folder / "c.pt", lambda: pytest.fail("built"), keys=("a",))
        assert "unset FSLEARN_CACHE or point it at a writable folder" in str(error.value)
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="root only: checks the check itself creates a file")
def test_the_write_check_really_creates_a_file(tmp_path, monkeypatch):
    made = []
    real = common.tempfile.TemporaryFile
    monkeypatch.setattr(
        common.tempfile, "TemporaryFile", lambda **kw: made.append(kw) or real(**kw)
    )
    monkeypatch.setenv("FSLEARN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and made == []
    common.check_cache_writable(tmp_path / "c" / "x.pt")
    assert made == [{"dir": tmp_path / "c"}]
    assert list((tmp_path / "c").iterdir()) == [], "the test file is gone"


@pytest.mark.parametrize("empty", ["", "   "])
def test_empty_variables_count_as_unset(tmp_path, monkeypatch, empty):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FSLEARN_CACHE", empty)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "fslearn"
    monkeypatch.setenv("XDG_CACHE_HOME", empty)
    assert cache_dir() == home / ".cache" / "fslearn"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: ignore it
    assert cache_dir() == home / ".cache" / "fslearn"
    assert list(work.iterdir()) == [], "nothing in the working directory"


def test_no_home_folder_says_to_set_the_variable(monkeypatch):
    monkeypatch.delenv("FSLEARN_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def homeless():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(common.Path, "home", homeless)
    with pytest.raises(
        OSError, match="home folder is unknown .*set FSLEARN_CACHE to a writable folder"
    ):
        cache_dir()


# -- 4. file modes ------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_files_get_the_usual_mode(tmp_path, umask):
    existing = tmp_path / "shared.json"
    existing.write_text("old")
    existing.chmod(0o640)
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "new.json") as tmp:
            tmp.write_text("{}")
        with atomic_path(existing) as tmp:
            tmp.write_text("new")
        assert common._umask() == umask
        assert os.umask(umask) == umask, "the umask is as it was"
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640 and existing.read_text() == "new"


def test_umask_without_proc_is_read_and_put_back(monkeypatch):
    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/self/status")

    monkeypatch.setattr(common, "open", no_proc, raising=False)
    old = os.umask(0o027)
    try:
        assert common._umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


def test_a_cache_file_is_readable_by_the_group_under_umask_022(tmp_cache, small_embedded):
    old = os.umask(0o022)
    try:
        fsl.load_embedded("all", seed=8, progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(embedded._cache_file(8, 28).stat().st_mode) == 0o644


# -- 5. integers of every kind ---------------------------------------------------------------


@pytest.mark.parametrize("value", [np.int64(5), np.uint8(5), np.int32(5), torch.tensor(5), 5])
def test_integral_numbers_are_accepted_as_plain_ints(value):
    result = check_positive_int("n_way", value)
    assert result == 5 and type(result) is int


@pytest.mark.parametrize(
    "value",
    [True, np.True_, torch.tensor(True), 2.0, np.float64(2.0), torch.tensor(2.0), "5", None,
     torch.tensor([1, 2]), 0, np.int64(0), -3],
)  # fmt: skip
def test_bools_floats_and_small_numbers_are_refused(value):
    with pytest.raises(
        ValueError, match=re.escape(f"n_way must be a positive integer; got {value!r}")
    ):
        check_positive_int("n_way", value)


def test_the_message_text_is_unchanged():
    with pytest.raises(ValueError) as error:
        check_positive_int("n_classes", np.int64(1), minimum=2, why="a triplet needs a negative")
    assert str(error.value) == (
        "n_classes must be an integer ≥ 2 (a triplet needs a negative); got np.int64(1)"
    )


def test_numpy_sizes_reach_the_loaders_as_ints(tmp_cache, tmp_path, small_embedded, run_files):
    assert (
        fsl.load_embedded(
            "all", image_size=np.int64(28), seed=np.int64(2), progress=False
        ).n_classes
        == 20
    )
    assert small_embedded == [(2, 28)] and all(type(v) is int for v in small_embedded[0])
    tiny_pickle(tmp_path / "mini")
    mini = fsl.load_miniimagenet(
        tmp_path / "mini", image_size=np.int64(12), n_per_class=np.int64(1), progress=False
    )
    assert mini.images.shape == (2, 1, 3, 12, 12)
    archive = character_zip(tmp_path / "images_x.zip")
    assert fsl.load_omniglot(path=archive, image_size=np.int32(14), progress=False).image_shape == (
        1,
        14,
        14,
    )
    assert any("14px" in p.name for p in (tmp_cache / "omniglot").iterdir())
    runs = fsl.load_runs(runs_zip(tmp_path / "all_runs.zip", run_files), image_size=np.int64(14))
    assert runs[0].query_x.shape == (20, 1, 14, 14)


@pytest.mark.parametrize("size", [0, -28, 28.0, True])
def test_image_sizes_that_are_not_positive_integers_are_refused(tmp_cache, tmp_path, size):
    with pytest.raises(
        ValueError,
        match=re.escape(f"image_size must be a positive integer (e.g. 28 or 105); got {size!r}"),
    ):
        fsl.load_omniglot(path=character_zip(tmp_path / "images_x.zip"), image_size=size)
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        fsl.load_runs(tmp_path / "nowhere.zip", image_size=size)
    with pytest.raises(
        ValueError, match=re.escape(f"image_size must be one of (28, 84, 105); got {size!r}")
    ):
        fsl.load_dataset("embedded", image_size=size)


@pytest.mark.parametrize("seed", [-1, 1.5, 2**64])
def test_seeds_out_of_reach_are_refused(seed):
    with pytest.raises(ValueError, match="seed must be"):
        fsl.load_embedded(seed=seed)
    background, evaluation = tiny_pools()
    with pytest.raises(ValueError, match="seed must be"):
        fsl.omniglot_split(background, evaluation, "maml", "train", seed=seed)


def tiny_pools():
    def pool(prefix, n):
        names = [f"{prefix}/c{i}" for i in range(n)]
        return fsl.FewShotDataset(
            torch.zeros(n, 2, 1, 4, 4, dtype=torch.uint8), names, [prefix] * n
        )

    return pool("back", 20), pool("eval", 13)


def test_split_sizes_are_integers_not_rounded(tmp_path):
    background, evaluation = tiny_pools()
    with pytest.raises(ValueError, match=r"sizes must be 3 counts .*; got \(10.7, 5, 18\)"):
        fsl.omniglot_split(background, evaluation, "maml", "train", sizes=(10.7, 5, 18))
    split = fsl.omniglot_split(
        background, evaluation, "maml", "train", sizes=np.array([10, 5, 18]), seed=np.int64(1)
    )
    assert split.n_classes == 10
    assert (
        split.class_names
        == fsl.omniglot_split(
            background, evaluation, "maml", "train", sizes=(10, 5, 18), seed=1
        ).class_names
    )


def test_class_indices_are_integers_in_range():
    dataset, _ = tiny_pools()
    with pytest.raises(
        ValueError, match=r"class indices must be integers; got \[1.5\] \(torch.float32\)"
    ):
        dataset.select([1.5])
    with pytest.raises(
        IndexError, match=r"class indices \[20, -21\] are outside dataset's 20 classes \(0 to 19\)"
    ) as error:
        dataset.select([0, 20, -21])
    assert isinstance(error.value, ValueError)
    assert dataset.select(np.array([2, -1])).class_names == ["back/c2", "back/c19"]


def test_select_groups_takes_one_name_or_names_the_unknown_ones():
    background, evaluation = tiny_pools()
    pooled = fsl.FewShotDataset(
        torch.cat([background.images, evaluation.images]),
        background.class_names + evaluation.class_names,
        background.groups + evaluation.groups,
    )
    assert pooled.select_groups("eval").n_classes == 13
    with pytest.raises(KeyError, match=r"no group\(s\) \['Greek'\]; it has \['back', 'eval'\]"):
        pooled.select_groups(["back", "Greek"])


@pytest.mark.parametrize(
    "angles,message",
    [
        ((0, 90.0), r"multiples of 90 degrees; got \[90.0\]"),
        ((), "at least one rotation"),
        ((0, 360), "repeat a rotation"),
    ],
)
def test_rotations_must_be_distinct_integer_quarter_turns(angles, message):
    dataset, _ = tiny_pools()
    with pytest.raises(ValueError, match=message):
        fsl.with_rotations(dataset, angles)


def test_a_numpy_array_is_not_taken_for_a_tensor():
    with pytest.raises(
        TypeError, match="images must be a torch.Tensor .*got a ndarray .*torch.from_numpy"
    ):
        fsl.FewShotDataset(np.zeros((2, 2, 1, 4, 4), np.uint8), ["a", "b"], ["g", "g"])


# -- 6. miniImageNet's files ------------------------------------------------------------------


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo hacked > {self.marker}",)


def test_a_malicious_pickle_is_a_value_error_naming_file_and_global(tmp_path):
    marker = tmp_path / "hacked"
    path = write_pickle(tmp_path / "mini", _Exploit(marker), {})
    before = sha256s(path)
    with pytest.raises(ValueError) as error:
        fsl.load_miniimagenet(tmp_path / "mini", progress=False)
    assert isinstance(error.value, pickle.UnpicklingError), "still what pickle's callers catch"
    message = str(error.value)
    assert re.search(r"refusing to load (posix|nt|os)\.system", message) and str(path) in message
    assert "Nothing was run" in message and "a source you trust" in message
    assert not marker.exists() and sha256s(path) == before


def test_the_command_line_prints_the_refusal_in_one_line(tmp_path, tmp_cache, capsys):
    from fslearn.cli import main

    marker = tmp_path / "hacked"
    write_pickle(tmp_path / "mini", _Exploit(marker), {})
    argv = ["train", "protonet", "--dataset", "miniimagenet", "--data-root", str(tmp_path / "mini"),
            "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("fslearn train: error: ") and "refusing to load" in err
    assert err.count("\n") == 1 and "Traceback" not in err and not marker.exists()


@pytest.mark.parametrize(
    "class_dict,message",
    [
        ({}, "got an empty dict"),
        ({"n01": []}, "class n01 lists no images"),
        ({"n01": [0.0, 1.0]}, "class n01 lists indices of dtype float64"),
        ({"n01": [[0, 1], [2]]}, "class n01 lists indices of dtype object"),
        ({"n01": ["0", "1"]}, "class n01 lists indices of dtype <U1"),
        ({"n01": [0, 1], b"n01": [2, 3]}, "names the class n01 twice"),
    ],
)
def test_inconsistent_class_dicts_are_named(tmp_path, class_dict, message):
    path = write_pickle(tmp_path / "mini", np.zeros((4, 12, 12, 3), np.uint8), class_dict)
    with pytest.raises(ValueError, match=re.escape(f"{path}: ") + ".*" + re.escape(message)):
        fsl.load_miniimagenet(tmp_path / "mini", image_size=12, progress=False)


def write_csv_copy(root: Path, csv_bytes: bytes, images=("a.png", "b.png")) -> None:
    (root / "images").mkdir(parents=True)
    for name in images:
        Image.fromarray(np.full((12, 12, 3), 7, np.uint8)).save(root / "images" / name)
    (root / "train.csv").write_bytes(csv_bytes)


@pytest.mark.parametrize(
    "content,message",
    [
        (
            "filename,label\na.png,n01\nb.png,n0\u00e9\n".encode("latin-1"),
            "is not UTF-8 text (it holds the byte 0xe9)",
        ),
        (b"filename,label\na.png,n01\nb.png,n01" + bytes(50), "line 3 holds NUL bytes"),
        # An unclosed quote swallows the rest of the file into one field.
        (
            b'filename,label\n"a.png,n01\n' + b"b.png,n01\n" * 20000,
            "is not a readable CSV file (field larger than field limit",
        ),
        (
            b"filename,label\na.png,n01\n,n01\n",
            "line 3: expected 'filename,label', got ',n01' (an empty filename",
        ),
    ],
)
def test_damaged_split_csvs_are_named(tmp_path, content, message):
    write_csv_copy(tmp_path / "mini", content)
    before = sha256s(tmp_path / "mini")
    with pytest.raises(
        ValueError,
        match=re.escape(f"{tmp_path / 'mini' / 'train.csv'}") + ".*" + re.escape(message),
    ):
        fsl.load_miniimagenet(tmp_path / "mini", progress=False)
    assert sha256s(tmp_path / "mini") == before


@pytest.mark.parametrize("kind", ["broken chunk", "short header", "text"])
def test_csv_image_that_is_not_an_image_is_named(tmp_path, kind):
    write_csv_copy(tmp_path / "mini", b"filename,label\na.png,n01\nb.png,n01\n")
    bad = tmp_path / "mini" / "images" / "b.png"
    bad.write_bytes(NOT_IMAGES[kind])
    with pytest.raises(
        ValueError, match=re.escape(f"cannot read image {bad}") + ".*replace the file"
    ):
        fsl.load_miniimagenet(tmp_path / "mini", cache=False, progress=False)


# -- evaluation on the runs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(run_files, tmp_path_factory):
    return fsl.load_runs(runs_zip(tmp_path_factory.mktemp("runs") / "all_runs.zip", run_files))[:2]


def test_embeddings_with_nan_or_the_wrong_shape_are_refused(runs):
    with pytest.raises(ValueError, match="run01: embed returned 320 NaN or infinite values of 320"):
        fsl.evaluate_runs(runs, embed=lambda x: torch.full((len(x), 8), float("nan")))
    with pytest.raises(
        ValueError, match=r"embed returned shape \(40, 8, 1, 1\) for 40 images; expected \(40, D\)"
    ):
        fsl.evaluate_runs(runs, embed=lambda x: torch.zeros(len(x), 8, 1, 1))
    with pytest.raises(ValueError, match=r"shape \(39, 8\) for 40 images"):
        fsl.evaluate_runs(runs, embed=lambda x: torch.zeros(len(x) - 1, 8))
    logits = torch.zeros(20, 20)
    logits[3, 5] = float("inf")
    with pytest.raises(
        ValueError, match="run01: the learner returned 1 NaN or infinite values of 400"
    ):
        fsl.evaluate_runs(runs, learner=lambda s, y, q: logits)


@pytest.mark.parametrize("device", ["gpu", "cuda:99", "mps:7"])
def test_a_device_this_machine_lacks_is_named(device):
    dataset, _ = tiny_pools()
    with pytest.raises(ValueError, match=f"cannot put dataset on device '{device}' .*has 'cpu'"):
        dataset.to(device)
