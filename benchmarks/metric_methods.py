"""Every metric-learning method, trained and tested on the same data and the same fixed episodes.

    python benchmarks/metric_methods.py --dataset embedded [--steps 300] [--episodes 1000]
    python benchmarks/metric_methods.py --dataset omniglot-small --zips ../shared/data/omniglot

``embedded``: train on the 964 background characters, test on the 659 evaluation
characters. ``omniglot-small``: train on real ``images_background_small1`` (136
characters) and test on the alphabets of ``images_background_small2`` that small1
lacks (Japanese_(katakana), Sanskrit, Tagalog: 106 characters). Each method uses
its recipe (``fsl.train_*``) with the same step budget; the table gives accuracy ±
95% CI on 5-way 1-shot and 20-way 1-shot episodes (15 queries), next to the
pixel-space nearest-prototype baseline on the same episodes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import fslearn as fsl
from fslearn.data.catalog import SMALL2_ONLY_ALPHABETS


def load(dataset: str, zips: Path | None):
    if dataset == "embedded":
        return fsl.load_embedded("background", progress=False), fsl.load_embedded(
            "evaluation", progress=False
        )
    if zips is None:
        raise SystemExit(
            "--dataset omniglot-small needs --zips FOLDER with images_background_small{1,2}.zip"
        )
    train = fsl.load_omniglot(path=zips / "images_background_small1.zip", progress=False)
    test = fsl.load_omniglot(path=zips / "images_background_small2.zip", progress=False)
    return train, test.select_groups(SMALL2_ONLY_ALPHABETS, name="small2 \\ small1")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=("embedded", "omniglot-small"), default="embedded")
    parser.add_argument("--zips", type=Path, help="folder with images_background_small{1,2}.zip")
    parser.add_argument("--steps", type=int, default=300, help="training steps per method")
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes per setting")
    parser.add_argument("--hidden", type=int, default=64, help="Conv4 channels")
    parser.add_argument("--device", default=str(fsl.default_device()))
    args = parser.parse_args()
    device = torch.device(args.device)
    train, test = load(args.dataset, args.zips)
    train, test = train.to(device), test.to(device)
    settings = {"5-way 1-shot": (5, 1), "20-way 1-shot": (20, 1)}
    episodes = {
        name: fsl.EpisodeSet(test, n, k, 15, args.episodes, seed=0)
        for name, (n, k) in settings.items()
    }
    common = dict(steps=args.steps, hidden_channels=args.hidden, seed=0, progress=False)
    methods = {
        "pixel nearest prototype": lambda: (fsl.NearestPrototype(), None),
        "Siamese, Koch head": lambda: fsl.train_siamese(train, head="koch", n_pairs=64, **common),
        "Siamese, contrastive": lambda: fsl.train_siamese(
            train, head="contrastive", n_pairs=64, **common
        ),
        "triplet, semi-hard": lambda: fsl.train_triplet(
            train, strategy="semi-hard", n_classes=16, **common
        ),
        "triplet, batch-hard": lambda: fsl.train_triplet(
            train, strategy="batch-hard", n_classes=16, **common
        ),
        "ProtoNet, Euclidean (20-way 5-shot)": lambda: fsl.train_protonet(
            train, n_way=20, n_shot=5, n_query=5, **common
        ),
        "ProtoNet, cosine (20-way 5-shot)": lambda: fsl.train_protonet(
            train, n_way=20, n_shot=5, n_query=5, distance="cosine", **common
        ),
    }
    print(f"torch {torch.__version__} on {device}; train: {train}; test: {test}")
    print(
        f"{args.steps} steps per method, Conv4-{args.hidden}, "
        f"{args.episodes} fixed test episodes per setting\n"
    )
    print("| method | train s | " + " | ".join(settings) + " |")
    print("|---|---|" + "---|" * len(settings))
    for name, build in methods.items():
        start = time.perf_counter()
        learner, _ = build()
        seconds = time.perf_counter() - start
        scores = [str(fsl.evaluate(learner, episodes[s])) for s in settings]
        print(f"| {name} | {seconds:.0f} | " + " | ".join(scores) + " |", flush=True)


if __name__ == "__main__":
    main()
