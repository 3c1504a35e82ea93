"""Training-step time of a prototypical network on Conv4 against ResNet-12.

    python benchmarks/bench_backbones.py [--device cpu] [--steps 3] [--rounds 3] [--threads N]

One step is what ``fsl.train_protonet`` does per episode: a 5-way 1-shot 15-query episode of
84×84 RGB images (random pixels: the time does not depend on them) through the backbone, the
prototypes' cross-entropy, ``backward`` and an Adam step. Conv4-64 (the baseline, in the same
run), Conv4-32 and the standard ResNet-12 (64, 160, 320, 640) take turns, ``--rounds`` rounds of
``--steps`` timed steps each after one warm-up step; each row is the median round, and the ratio
is its time over Conv4-64's.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

import fslearn as fsl
from fslearn import bench
from fslearn.bench.timing import seconds_per_call

N_WAY, N_SHOT, N_QUERY, SHAPE = 5, 1, 15, (3, 84, 84)

BACKBONES = {
    "Conv4-64": ("conv4", {"hidden_channels": 64}),
    "Conv4-32": ("conv4", {"hidden_channels": 32}),
    "ResNet-12": ("resnet12", {"channels": [64, 160, 320, 640]}),
}


def protonet_step(name: str, options: dict, device: torch.device):
    """``(step, parameters)``: one training step of a ProtoNet on ``name``, as a function."""
    backbone = fsl.build_backbone(name, SHAPE[0], seed=0, **options).to(device)
    learner = fsl.ProtoNet(backbone).train()
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    support_x = torch.rand(N_WAY * N_SHOT, *SHAPE, generator=g).to(device)
    query_x = torch.rand(N_WAY * N_QUERY, *SHAPE, generator=g).to(device)
    support_y = torch.arange(N_WAY, device=device).repeat_interleave(N_SHOT)
    query_y = torch.arange(N_WAY, device=device).repeat_interleave(N_QUERY)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(learner(support_x, support_y, query_x), query_y)
        loss.backward()
        optimizer.step()

    return step, sum(p.numel() for p in backbone.parameters())


def backbone_speed(device: torch.device, steps: int, rounds: int) -> list[dict]:
    """One row per backbone: parameters, median ms per step, and the ratio to Conv4-64's."""
    runs = {label: protonet_step(*BACKBONES[label], device) for label in BACKBONES}
    for step, _ in runs.values():
        step()  # warm-up: allocations, kernels
    times = {label: [] for label in runs}
    for _ in range(rounds):  # interleaved, so that a slower minute of the machine hits all
        for label, (step, _) in runs.items():
            times[label].append(seconds_per_call(step, device, steps))
    baseline = statistics.median(times["Conv4-64"])
    return [
        dict(
            backbone=label,
            parameters=runs[label][1],
            ms=statistics.median(times[label]) * 1e3,
            ratio=statistics.median(times[label]) / baseline,
        )
        for label in runs
    ]


COLUMNS = [
    ("backbone", "backbone", "{}"),
    ("parameters", "parameters", "{:,}"),
    ("ms", "ms/step", "{:.0f}"),
    ("ratio", "× Conv4-64", "{:.1f}×"),
]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__} on {bench.device_name(device)}; ProtoNet {N_WAY}-way "
        f"{N_SHOT}-shot {N_QUERY}-query, {SHAPE[1]}×{SHAPE[2]}×{SHAPE[0]}"
    )
    print(bench.format_table(backbone_speed(device, args.steps, args.rounds), COLUMNS))


if __name__ == "__main__":
    main()
