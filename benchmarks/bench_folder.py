"""A folder of the user's own photos: decoding speed, and episodes from a mapped cache.

    python benchmarks/bench_folder.py [--images 3000] [--workers 1 2 4 8] [--episodes 300]

1. Decoding: ``--images`` JPEGs of 500×375 (ImageNet's usual size: smooth colour fields with
   noise, quality 90) written to a temporary folder in 60 classes, then decoded and resized
   to 84×84 by ``fsl.load_folder(cache=False)`` with each number of ``--workers`` threads
   (1: no pool), interleaved, best of ``--repeats``; images per second, and the speed-up over
   the first ``--workers``.
2. Sampling: the decoded set, cached, opened memory-mapped and read into memory, and
   ``fsl.EpisodeSampler`` 5-way 5-shot 15-query episodes drawn from each, interleaved, best
   of ``--repeats``; episodes per second. The file is in the page cache (it was just
   written), as it is for every epoch after the first.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import fslearn as fsl


def write_photos(root: Path, n_images: int, n_classes: int = 60, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        # A smooth colour field (a small random image enlarged) with pixel noise on top.
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((500, 375), Image.Resampling.BICUBIC), np.int16)
        pixels = np.clip(field + rng.integers(-12, 13, field.shape, dtype=np.int16), 0, 255)
        folder = root / f"class{i % n_classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--episodes", type=int, default=300, help="episodes per timing")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["FSLEARN_CACHE"] = str(tmp / "cache")  # never the user's cache
        start = time.perf_counter()
        write_photos(tmp / "photos", args.images)
        print(
            f"torch {torch.__version__}, {os.cpu_count()} CPU cores; wrote {args.images} "
            f"500×375 JPEGs in {time.perf_counter() - start:.0f} s"
        )
        decode_times = {workers: [] for workers in args.workers}
        for _ in range(args.repeats):
            for workers in args.workers:  # interleaved: the same machine load for each
                start = time.perf_counter()
                fsl.load_folder(tmp / "photos", 84, progress=False, workers=workers, cache=False)
                decode_times[workers].append(time.perf_counter() - start)
        print("\n| threads | images/s | speed-up |\n|--:|--:|--:|")
        base = args.images / min(decode_times[args.workers[0]])
        for workers, measured in decode_times.items():
            rate = args.images / min(measured)
            print(f"| {workers} | {rate:,.0f} | {rate / base:.2f}× |")

        fsl.load_folder(tmp / "photos", 84, progress=False)  # writes the cache
        sets = {
            "memory-mapped": fsl.load_folder(tmp / "photos", 84, progress=False, mmap=True),
            "in memory": fsl.load_folder(tmp / "photos", 84, progress=False, mmap=False),
        }
        samplers = {name: iter(fsl.EpisodeSampler(d, 5, 5, 15, seed=0)) for name, d in sets.items()}
        times = {name: [] for name in sets}
        for _ in range(args.repeats):
            for name, sampler in samplers.items():  # interleaved: the same machine load
                start = time.perf_counter()
                for _ in range(args.episodes):
                    next(sampler)
                times[name].append(time.perf_counter() - start)
        size = sets["in memory"].flat_images.nbytes / 1e6
        print(f"\n{args.images} images of 3×84×84 ({size:.0f} MB), 5-way 5-shot 15-query")
        print("| images | episodes/s |\n|---|--:|")
        for name, measured in times.items():
            print(f"| {name} | {args.episodes / min(measured):,.0f} |")


if __name__ == "__main__":
    main()
