"""A folder of the user's own images, one sub-folder per class, as a few-shot dataset.

The layout is torchvision's ``ImageFolder``, optionally with a group level above the classes::

    root/cat/001.jpg  root/cat/002.png  root/dog/x.jpg ...            (classes)
    root/Greek/alpha/1.png  root/Greek/beta/1.png  root/Latin/a/1.png  (groups / classes)

Groups (alphabets of characters, super-classes of photos) are what within-group evaluation
draws each episode's classes from (:func:`~fslearn.evaluate_within_groups`).
"""

from __future__ import annotations

from pathlib import Path

from .dataset import FewShotDataset
from .image_files import IMAGE_EXTENSIONS, ImageFolderError, is_image, load_classes


def _visible(path: Path) -> bool:
    # Hidden files and folders (.DS_Store, .ipynb_checkpoints) and macOS zip debris.
    return not path.name.startswith(".") and path.name != "__MACOSX"


def _listing(folder: Path) -> tuple[list[Path], list[Path]]:
    """The image files and the sub-folders of ``folder``, sorted by name."""
    entries = sorted((p for p in folder.iterdir() if _visible(p)), key=lambda p: p.name)
    return [p for p in entries if is_image(p)], [p for p in entries if p.is_dir()]


def _example(paths: list[Path]) -> str:
    return ", ".join(p.name for p in paths[:3]) + (", …" if len(paths) > 3 else "")


def _class_images(folder: Path, level: str) -> list[Path]:
    images, folders = _listing(folder)
    if folders and images:
        raise ImageFolderError(
            f"the {level} folder {folder} holds images and folders ({_example(folders)}): a "
            "class folder holds its images only. Move the folders out, or pass groups=True if "
            "they are classes"
        )
    if not images:
        what = f"folders ({_example(folders)}) but" if folders else "nothing readable:"
        raise ImageFolderError(
            f"the {level} folder {folder} holds {what} no images "
            f"({', '.join(IMAGE_EXTENSIONS)}): add its images, or remove the folder"
        )
    return images


def scan_folder(root: Path, groups="auto") -> list[tuple[str, str, list[Path]]]:
    """``[(class name, group, [image paths])]`` of ``root``: classes sorted by group then name,
    images by file name.

    Without a group level, the class names are the folder names and every class's group is
    ``root``'s name; with one, the class names are ``"group/class"``.

    Raises:
        ImageFolderError: ``root`` is missing or no folder, holds no class folders, images
            beside its folders, an empty class folder, or levels that do not match ``groups``.
    """
    if groups not in ("auto", True, False):
        raise ValueError(
            f"groups must be 'auto' (detect a group level), True or False; got {groups!r}"
        )
    if not root.is_dir():
        reason = "does not exist" if not root.exists() else "is a file, not a folder"
        raise ImageFolderError(
            f"{root} {reason}: pass the folder that holds one sub-folder of images per class"
        )
    loose, folders = _listing(root)
    if loose:
        raise ImageFolderError(
            f"{root} holds images ({_example(loose)}) "
            + ("beside its folders" if folders else "but no class folders")
            + ": put each class's images in a folder of its own, named after the class"
        )
    if not folders:
        raise ImageFolderError(
            f"{root} holds no class folders: put each class's images in a sub-folder of "
            "it, named after the class (root/cat/1.jpg, root/dog/2.jpg, …)"
        )
    if groups == "auto":
        listings = [_listing(folder) for folder in folders]
        with_images = [f for f, (images, _) in zip(folders, listings, strict=True) if images]
        # A folder of folders is a group; an empty folder is an empty class, said below.
        of_folders = [
            f for f, (images, sub) in zip(folders, listings, strict=True) if sub and not images
        ]
        if with_images and of_folders:
            raise ImageFolderError(
                f"{root} mixes class folders holding images ({_example(with_images)}) with "
                f"folders of folders ({_example(of_folders)}): give every class folder its "
                "images, or put every class folder in a group folder (root/group/class/image)"
            )
        groups = bool(of_folders)
    if not groups:
        return [(f.name, root.name, _class_images(f, "class")) for f in folders]
    classes = []
    for group in folders:
        images, members = _listing(group)
        if images or not members:
            raise ImageFolderError(
                f"the group folder {group} holds "
                + (f"images ({_example(images)})" if images else "no class folders")
                + ": with a group level (groups=True, or detected), each group folder holds "
                "class folders of images. Pass groups=False if its folders are the classes"
            )
        classes += [
            (f"{group.name}/{f.name}", group.name, _class_images(f, "class")) for f in members
        ]
    return classes


def load_folder(
    root,
    image_size: int = 84,
    channels: int | None = 3,
    *,
    groups="auto",
    mmap: bool | None = None,
    progress: bool = True,
    workers: int | None = None,
    cache: bool = True,
    device=None,
) -> FewShotDataset:
    """A folder of class sub-folders of images as a :class:`~fslearn.FewShotDataset`.

    Every image is kept, so classes may have different numbers of images (a ragged set; the
    samplers draw from each class's own count). The decoded set is cached under
    :func:`fslearn.cache_dir` as one array that large sets memory-map (see
    :mod:`fslearn.data.storage`); nothing is written in ``root``.

    Args:
        root: the folder of class folders, ``root/<class>/<image>``, or with a group level
            ``root/<group>/<class>/<image>``. Hidden files and folders are skipped, and so are
            files whose ending is not one of ``IMAGE_EXTENSIONS`` (png, jpg, jpeg, bmp, gif,
            webp, tif, tiff; any case).
        image_size: the side of the square images: every image is resized to it (Lanczos,
            without cropping: a plain resize, as miniImageNet's 84×84 images are made).
        channels: 3 converts every image to RGB, 1 to grey (Pillow's ``"RGB"`` and ``"L"``);
            None keeps the images' own, which must then agree.
        groups: ``"auto"`` detects a group level (every folder of ``root`` holds folders
            rather than images); True or False says whether there is one.
        mmap: map the cache (``True``), read it into memory (``False``), or map it when it is
            larger than half the memory available (``None``). A mapped set reads its pages as
            sampled; writing to its images changes this process's copy only.
        progress: show a progress bar while decoding.
        workers: threads decoding images (default: up to 8, one per CPU core).
        cache: read and write the decoded set in ``fslearn.cache_dir()/folders``, keyed by the
            resolved ``root``, ``image_size``, ``channels`` and ``groups`` and rebuilt when a
            file is added, removed or changed (names, sizes, modification times). False
            decodes every time, into memory.
        device: where to put the images (None: the CPU, mapped or not).

    Returns:
        uint8 images ``(n_images, C, image_size, image_size)`` as ``flat_images``, classes
        sorted by (group and) folder name, each class's images sorted by file name; class names
        are folder names (``"group/class"`` with a group level), the groups the group folders'
        names (without a group level, every class's group is ``root``'s name).

    Raises:
        ImageFolderError: ``root`` is missing or holds no class folders, a class folder holds
            no images, an image is unreadable (named, with Pillow's reason), or with
            ``channels=None`` the images are grey and colour mixed.
    """
    root = Path(root).expanduser().resolve()
    classes = scan_folder(root, groups)
    dataset = load_classes(
        classes,
        kind="folder",
        source=root,
        name=f"{root.name} {image_size}px",
        image_size=image_size,
        channels=channels,
        mmap=mmap,
        progress=progress,
        workers=workers,
        cache=cache,
        settings={"groups": groups},
    )
    return dataset if device is None else dataset.to(device)
