"""Speed of the foundation pieces, each against an in-process baseline.

    python benchmarks/bench_foundation.py [--threads 1]

1. Embedded dataset rendering: one character's 20 images at a time (what
   ``fslearn.embedded`` does) vs one padded batch of many characters; and the time
   to generate the whole set.
2. ``fslearn.fit`` vs a bare hand-written mini-batch loop on the same model and data:
   what the counters, history and progress bar cost per iteration.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

import fslearn as fsl
from fslearn.data import embedded, glyphs


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_generation(n_characters: int) -> list[tuple[str, float, str]]:
    """Rendering one character's 20 images at a time vs padded batches of many characters."""
    style = glyphs.make_alphabet_style(torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    strokes = [
        glyphs.draw(glyphs.make_glyph(style, gen), embedded.N_DRAWERS, gen)
        for _ in range(n_characters)
    ]

    def per_character():
        for segments, widths in strokes:
            glyphs.render(segments, widths, 28)

    def padded_batch():
        n_seg = max(s.shape[1] for s, _ in strokes)
        segments = torch.full(
            (n_characters, embedded.N_DRAWERS, n_seg, 2, 2), 1e3, dtype=torch.float64
        )
        widths = torch.zeros(n_characters, embedded.N_DRAWERS, n_seg, dtype=torch.float64)
        for i, (s, w) in enumerate(strokes):
            segments[i, :, : s.shape[1]], widths[i, :, : w.shape[1]] = s, w
        glyphs.render(segments.flatten(0, 1), widths.flatten(0, 1), 28)

    ours = _timed(per_character, 3)
    base = _timed(padded_batch, 3)
    whole = _timed(lambda: embedded.generate(seed=0))
    return [
        (
            f"render {n_characters} characters × 20 drawers, per character (ms)",
            ours * 1e3,
            f"{base / ours:.1f}× faster",
        ),
        (
            f"render {n_characters} characters × 20 drawers, one padded batch (ms)",
            base * 1e3,
            "baseline",
        ),
        ("generate the whole embedded set, 28 px (s; budget 20 s)", whole, "drawing + rendering"),
    ]


def bench_fit(iterations: int) -> list[tuple[str, float, str]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60_000, 20, generator=g)
    y = (x @ torch.randn(20, 10, generator=g)).argmax(1)

    def bare():
        model = nn.Linear(20, 10)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        order = torch.randperm(60_000, generator=torch.Generator().manual_seed(0))
        for index in order.split(100)[:iterations]:
            F.cross_entropy(model(x[index]), y[index]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    def library(progress):
        model = nn.Linear(20, 10)
        fsl.fit(
            model,
            x,
            y,
            batch_size=100,
            iterations=iterations,
            progress=progress,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        )

    base = _timed(bare, 3) / iterations * 1e6
    quiet = _timed(lambda: library(False), 3) / iterations * 1e6
    bar = _timed(lambda: library(True), 3) / iterations * 1e6
    return [
        ("bare loop, Linear(20, 10), B = 100 (µs/iteration)", base, "baseline"),
        ("fsl.fit, no progress bar (µs/iteration)", quiet, f"{quiet / base:.2f}× baseline"),
        ("fsl.fit, progress bar (µs/iteration)", bar, f"{bar / base:.2f}× baseline"),
    ]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--characters", type=int, default=64, help="characters in the rendering comparison"
    )
    parser.add_argument("--iterations", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = bench_generation(args.characters) + bench_fit(args.iterations)
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s)")
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'value':>9}  comparison")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>9.2f}  {note}")


if __name__ == "__main__":
    main()
