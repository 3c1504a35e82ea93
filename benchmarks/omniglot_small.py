"""Every metric-learning method on real Omniglot: train on small1, test on small2's new alphabets.

    python benchmarks/omniglot_small.py --zips ../shared/data/omniglot [--steps 400] [--episodes 600]

Trains each method on ``images_background_small1`` (5 alphabets, 136 characters) and
tests on the alphabets of ``images_background_small2`` that small1 lacks
(Japanese_(katakana), Sanskrit, Tagalog: 106 characters), on the same fixed
5-way 1-shot and 20-way 1-shot episodes (15 queries), next to the pixel-space
nearest-prototype baseline. Prints a table of accuracy ± 95% CI.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import fslearn as fsl
from fslearn.datasets import SMALL2_ONLY_ALPHABETS


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zips", type=Path, required=True, help="folder with images_background_small{1,2}.zip")
    parser.add_argument("--steps", type=int, default=400, help="training steps per method")
    parser.add_argument("--episodes", type=int, default=600, help="test episodes per setting")
    parser.add_argument("--device", default=str(fsl.default_device()))
    args = parser.parse_args()
    device = torch.device(args.device)
    train = fsl.load_omniglot(path=args.zips / "images_background_small1.zip", progress=False).to(device)
    test = fsl.load_omniglot(path=args.zips / "images_background_small2.zip", progress=False)
    test = test.select_groups(SMALL2_ONLY_ALPHABETS, name="small2 \\ small1").to(device)
    settings = {"5-way 1-shot": (5, 1), "20-way 1-shot": (20, 1)}
    episodes = {name: fsl.EpisodeSet(test, n, k, 15, args.episodes, seed=0) for name, (n, k) in settings.items()}
    common = dict(steps=args.steps, seed=0, progress=False)
    methods = {
        "pixel nearest prototype": lambda: (fsl.NearestPrototype(), None),
        "Siamese (Koch head)": lambda: fsl.train_siamese(train, head="koch", **common),
        "Siamese (contrastive)": lambda: fsl.train_siamese(train, head="contrastive", **common),
        "triplet (batch-hard)": lambda: fsl.train_triplet(train, strategy="batch-hard", **common),
        "triplet (semi-hard)": lambda: fsl.train_triplet(train, strategy="semi-hard", **common),
        "ProtoNet (Euclidean, 20-way 5-shot)": lambda: fsl.train_protonet(train, n_way=20, n_shot=5, n_query=5, **common),
        "ProtoNet (cosine, 20-way 5-shot)": lambda: fsl.train_protonet(train, n_way=20, n_shot=5, n_query=5, distance="cosine", **common),
    }
    print(f"torch {torch.__version__} on {device}; train: {train}; test: {test}")
    print(f"{args.steps} training steps per method, {args.episodes} test episodes per setting\n")
    print(f"{'method':<36} {'train s':>8} " + " ".join(f"{name:>16}" for name in settings))
    for name, build in methods.items():
        start = time.perf_counter()
        learner, _ = build()
        seconds = time.perf_counter() - start
        scores = [str(fsl.evaluate(learner, episodes[s])) for s in settings]
        print(f"{name:<36} {seconds:>8.0f} " + " ".join(f"{score:>16}" for score in scores))


if __name__ == "__main__":
    main()
