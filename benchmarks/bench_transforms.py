"""Augmentation speed: ``fsl.Augment`` on a whole episode batch against the same transforms
applied one image at a time.

    python benchmarks/bench_transforms.py [--device cpu] [--tasks 4] [--repeats 5] [--rounds 5]
        [--threads N]

The batch is what an ``EpisodeSampler`` draws for 5-way 5-shot 15-query episodes of
84×84 RGB images (miniImageNet's shape), ``--tasks`` episodes at a time. ``fsl.Augment()``
(random resized crops of 35–100% of the area, flips, colour jitter 0.4) transforms all its
images in one call, each with its own parameters; the baseline, in the same run, calls it on
each image alone, as a per-image pipeline (a DataLoader's workers, torchvision transforms on
single images) does. Each time is the median of ``--rounds`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import fslearn as fsl
from fslearn import bench
from fslearn.bench.timing import seconds_per_call

N_WAY, N_SHOT, N_QUERY, SIZE = 5, 5, 15, 84


def augment_speed(device: torch.device, n_tasks: int, repeats: int, rounds: int) -> dict:
    """One row: ms per episode batch and images per second, batched and image by image, the
    medians of ``rounds`` interleaved rounds of ``repeats`` calls each."""
    n_images = n_tasks * N_WAY * (N_SHOT + N_QUERY)
    x = torch.rand(n_images, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    augment, generator = fsl.Augment(), torch.Generator(device).manual_seed(0)

    def per_image():
        return torch.cat([augment(image[None], generator) for image in x])

    augment(x, generator), per_image()  # warm-up: allocations, kernels
    times = [
        (
            seconds_per_call(lambda: augment(x, generator), device, repeats),
            seconds_per_call(per_image, device, repeats),
        )
        for _ in range(rounds)
    ]
    batched, single = (statistics.median(column) for column in zip(*times, strict=True))
    return dict(
        setting=f"{N_WAY}-way {N_SHOT}-shot {N_QUERY}-query, {SIZE}×{SIZE}×3, T={n_tasks}",
        images=n_images,
        batched_ms=batched * 1e3,
        images_per_s=n_images / batched,
        per_image_ms=single * 1e3,
        speedup=single / batched,
    )


COLUMNS = [
    ("setting", "episode batch", "{}"),
    ("images", "images", "{}"),
    ("batched_ms", "Augment ms/batch", "{:.1f}"),
    ("images_per_s", "images/s", "{:,.0f}"),
    ("per_image_ms", "image by image ms/batch", "{:.1f}"),
    ("speedup", "speed-up", "{:.1f}×"),
]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", type=int, default=4, help="episodes per batch (T)")
    parser.add_argument("--repeats", type=int, default=5, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__} on {bench.device_name(device)}; {fsl.Augment()}")
    row = augment_speed(device, args.tasks, args.repeats, args.rounds)
    print(bench.format_table([row], COLUMNS))


if __name__ == "__main__":
    main()
