"""A split file listing images and their classes, as a few-shot dataset.

Two formats, told apart by the file's ending:

* CSV (``.csv``), as Ravi & Larochelle's miniImageNet splits: the header ``filename,label``,
  then one image per line, e.g. ``n0153282900000005.jpg,n01532829``;
* JSON (``.json``): a list of ``{"file": ..., "label": ...}`` objects, or an object mapping
  each label to its list of files, ``{"cat": ["cat/1.jpg", ...], ...}``.

Paths are relative to the split file's folder, or to ``root`` when given; absolute paths
stay as they are.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .dataset import FewShotDataset
from .image_files import ImageFolderError, load_classes

FORMATS = {".csv": "CSV", ".json": "JSON"}


def _read_csv(path: Path) -> list[tuple[str, str, str]]:
    """``[(label, file, where)]`` of a ``filename,label`` CSV; ``where`` is ``"line N"``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as error:
        raise ImageFolderError(
            f"{path} is not UTF-8 text (it holds the byte {error.object[error.start]:#04x}): "
            "save it as UTF-8 CSV"
        ) from error
    except csv.Error as error:  # e.g. an unclosed quote that swallows the rest of the file
        raise ImageFolderError(f"{path} is not a readable CSV file ({error})") from error
    header = [cell.strip() for cell in rows[0][1]] if rows else []
    if header != ["filename", "label"]:
        raise ImageFolderError(
            f"{path} must start with the header line 'filename,label' (then one "
            f"'file,class' line per image); its first line is {','.join(header)!r}"
        )
    entries = []
    for line, row in rows[1:]:
        if not row or not "".join(row).strip():
            continue
        cells = [cell.strip() for cell in row]
        if len(cells) != 2 or not all(cells):
            raise ImageFolderError(
                f"{path}, line {line}: expected 'filename,label', got {','.join(row)!r}"
            )
        entries.append((cells[1], cells[0], f"line {line}"))
    return entries


def _read_json(path: Path) -> list[tuple[str, str, str]]:
    """``[(label, file, where)]`` of a JSON split file; ``where`` is ``"entry N"``."""
    shapes = 'a list of {"file": ..., "label": ...} objects or an object {label: [files]}'
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ImageFolderError(
            f"{path} is not readable JSON ({error}); it must hold {shapes}"
        ) from None
    entries = []
    if isinstance(data, dict):
        for label, files in data.items():
            if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
                raise ImageFolderError(
                    f"{path}: label {label!r} maps to {str(files)[:80]!r}, not a list of file "
                    f"names; it must hold {shapes}"
                )
            entries += [(label, f, f"label {label!r}, entry {i}") for i, f in enumerate(files, 1)]
    elif isinstance(data, list):
        for i, item in enumerate(data, 1):
            if not (
                isinstance(item, dict)
                and isinstance(item.get("file"), str)
                and item["file"]
                and isinstance(item.get("label"), (str, int))
                and not isinstance(item["label"], bool)
            ):
                raise ImageFolderError(
                    f"{path}, entry {i}: {json.dumps(item)[:80]} is not "
                    '{"file": "<path>", "label": <string or integer>}'
                )
            entries.append((str(item["label"]), item["file"], f"entry {i}"))
    else:
        raise ImageFolderError(
            f"{path} holds a JSON {type(data).__name__}; it must hold {shapes}"
        ) from None
    return entries


def read_split_file(path: Path, root: Path | None) -> list[tuple[str, str, list[Path]]]:
    """``[(class name, group, [image paths])]`` of the split file ``path``: classes sorted by
    label, each class's images in the file's order, every group the file's name (its stem).

    Raises:
        ImageFolderError: the file is missing, not CSV or JSON, malformed (named with its line
            or entry), lists no image, or names a file that does not exist.
    """
    if not path.is_file():
        raise ImageFolderError(
            f"the split file {path} does not exist" + (" (it is a folder)" if path.is_dir() else "")
        )
    if path.suffix.lower() not in FORMATS:
        raise ImageFolderError(
            f"{path} is not a split file fslearn reads: name it .csv ('filename,label' lines) "
            "or .json"
        )
    entries = (_read_csv if path.suffix.lower() == ".csv" else _read_json)(path)
    if not entries:
        raise ImageFolderError(f"{path} lists no images")
    base = path.parent if root is None else root
    files: dict[str, list[Path]] = {}
    missing = []
    for label, name, where in entries:
        file = base / name
        if not file.is_file():
            missing.append(f"{where}: {name}")
        files.setdefault(label, []).append(file)
    if missing:
        fix = "pass root= the folder the paths are relative to" if root is None else "check root="
        raise ImageFolderError(
            f"{path} names {len(missing)} file(s) not in {base}: {'; '.join(missing[:3])}"
            + (" …" if len(missing) > 3 else "")
            + f". Fix the paths, or {fix}"
        )
    return [(label, path.stem, files[label]) for label in sorted(files)]


def load_split_file(
    path,
    image_size: int = 84,
    channels: int | None = 3,
    *,
    root=None,
    mmap: bool | None = None,
    progress: bool = True,
    workers: int | None = None,
    cache: bool = True,
    device=None,
) -> FewShotDataset:
    """The images a split file lists (see the module docs) as a :class:`~fslearn.FewShotDataset`.

    Decoding, caching and the arguments ``image_size``, ``channels``, ``mmap``, ``progress``,
    ``workers``, ``cache`` and ``device`` are those of :func:`~fslearn.load_folder`; the cache
    is keyed by the split file's resolved path and checked against the split file and every
    image it lists.

    Args:
        path: a ``.csv`` or ``.json`` split file.
        root: the folder the listed paths are relative to (default: the split file's).

    Returns:
        Classes sorted by label, each class's images in the file's order; every class's group
        is the file's name without its ending (``"train"`` for ``train.csv``).

    Raises:
        ImageFolderError: the file is missing, not CSV or JSON, malformed (named with its line
            or entry), lists no image, names a file that does not exist, or an image is
            unreadable (named).
    """
    path = Path(path).expanduser().resolve()
    base = None if root is None else Path(root).expanduser().resolve()
    classes = read_split_file(path, base)
    dataset = load_classes(
        classes,
        kind="split",
        source=path,
        name=f"{path.parent.name}/{path.name} {image_size}px",
        image_size=image_size,
        channels=channels,
        mmap=mmap,
        progress=progress,
        workers=workers,
        cache=cache,
        settings={"root": None if base is None else str(base)},
        # A relabelling lists the same files: the split file's own change rebuilds the cache.
        watched=[path],
    )
    return dataset if device is None else dataset.to(device)
