"""Small made-up datasets whose right answers the tests know, and the helpers that run the
`fslearn` command on them."""

import hashlib
import io
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import fslearn as fsl

#: The side of the images in the replica of Lake's one-shot runs.
RUN_IMAGE_SIZE = 28


def labelled_dataset(n_classes=12, n_per_class=10, size=6, device="cpu") -> fsl.FewShotDataset:
    """Every image's pixels encode (class, instance), so sampled batches can be decoded exactly."""
    images = torch.zeros(n_classes, n_per_class, 1, size, size, dtype=torch.uint8)
    images[:, :, 0, 0, 0] = torch.arange(n_classes, dtype=torch.uint8)[:, None]
    images[:, :, 0, 0, 1] = torch.arange(n_per_class, dtype=torch.uint8)[None, :]
    names = [f"a{i % 3}/c{i}" for i in range(n_classes)]
    return fsl.FewShotDataset(images, names, [n.split("/")[0] for n in names], "labelled").to(
        device
    )


def decode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, 1, H, W) float images of :func:`labelled_dataset` → class and instance ids."""
    raw = (x * 255).round().long()
    return raw[..., 0, 0, 0], raw[..., 0, 0, 1]


def separable_characters(n_classes=10, device="cpu") -> fsl.FewShotDataset:
    """Tiny 'characters' a small network learns in a few steps: a bright square per class, plus "
    "noise."""
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n_classes, 8, 1, 16, 16, generator=g) * 60).to(torch.uint8)
    for c in range(n_classes):
        row, col = divmod(c, 4)
        images[c, :, 0, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = 255
    return fsl.FewShotDataset(images, [f"a/c{c}" for c in range(n_classes)], ["a"] * n_classes).to(
        device
    )


def pattern_dataset(n_classes=8, n_per_class=10, size=16, device="cpu") -> fsl.FewShotDataset:
    """Each class is a random binary pattern; its images flip 10% of the pixels."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.rand(n_classes, 1, 1, size, size, generator=g) > 0.5
    flips = torch.rand(n_classes, n_per_class, 1, size, size, generator=g) < 0.1
    images = (patterns ^ flips).to(torch.uint8) * 255
    return fsl.FewShotDataset(
        images, [f"c{i}" for i in range(n_classes)], ["a"] * n_classes, "patterns"
    ).to(device)


def png(ink: np.ndarray) -> bytes:
    """A one-bit PNG with black ink on white, like Lake's, from a boolean ink mask."""
    buffer = io.BytesIO()
    Image.fromarray(~ink).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def glyph(rng: random.Random) -> np.ndarray:
    """A random four-point stroke, as a boolean ink mask."""
    size = RUN_IMAGE_SIZE
    image = Image.new("L", (size, size), 0)
    points = [(rng.randrange(2, size - 2), rng.randrange(2, size - 2)) for _ in range(4)]
    ImageDraw.Draw(image).line(points, fill=255, width=2)
    return np.asarray(image) > 127


def make_runs(rng: random.Random):
    """Files of a replica of Lake's all_runs (test items: noisy copies) and each run's labels."""
    files, truth = {}, []
    for r in range(1, 21):
        run = f"run{r:02d}"
        labels = list(range(20))
        rng.shuffle(labels)  # test item m shows class labels[m]
        truth.append(labels)
        classes = [glyph(rng) for _ in range(20)]
        lines = []
        for k, ink in enumerate(classes):
            files[f"{run}/training/class{k + 1:02d}.png"] = ink
        for m, label in enumerate(labels):
            noisy = classes[label].copy()
            for _ in range(6):
                noisy[rng.randrange(RUN_IMAGE_SIZE), rng.randrange(RUN_IMAGE_SIZE)] ^= True
            files[f"{run}/test/item{m + 1:02d}.png"] = noisy
            lines.append(f"{run}/test/item{m + 1:02d}.png {run}/training/class{label + 1:02d}.png")
        files[f"{run}/class_labels.txt"] = "\n".join(lines) + "\n"
    return files, truth


def write_zip(path: Path, files: dict, top: str = "all_runs") -> Path:
    """Zip :func:`make_runs`' files under the folder ``top``, ink masks as PNGs."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(f"{top}/{name}", content if isinstance(content, str) else png(content))
    return path


#: `fslearn train` options for runs of a few seconds on the embedded set.
TINY = ["--recipe", "quick", "--hidden-channels", "4", "--test-episodes", "4", "--no-progress"]


def fslearn(*args, cwd=None, check=True, prelude=None):
    """Run `python -m fslearn ARGS` (with ``prelude``: that Python code first, then the command
    line's ``main``); return the completed process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = (
        ["-m", "fslearn"]
        if prelude is None
        else ["-c", f"{prelude}\nimport sys\nfrom fslearn.cli import main\nsys.exit(main())"]
    )
    result = subprocess.run(
        [sys.executable, *start, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def fails(*args, match: str, code: int = 1, **kwargs):
    """Run the command, which must fail with exit status ``code`` and one line on stderr that
    holds ``match`` and no traceback."""
    result = fslearn(*args, check=False, **kwargs)
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert match in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result


def digests(folder: Path) -> dict:
    """The sha256 of every file under ``folder``, hidden ones too, by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
