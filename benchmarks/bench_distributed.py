"""MAML across processes: ms per meta-iteration in 1 and in W processes, and what crosses.

    python benchmarks/bench_distributed.py [--processes 2] [--steps 30] [--meta-batch 8]

The baseline is the one-process run in the same invocation, with the same seed, settings and
threads per process. Each process is one torch.distributed rank (gloo on the CPU, NCCL with
``--device cuda``, one GPU per rank), started here with ``torch.multiprocessing`` as torchrun
would; the meta-batch is split across the ranks and the gradients are all-reduced once per
meta-iteration. On a machine with fewer cores than processes the ratio says more about the
cores than about the method. The table ends with the paper arithmetic for 8 GPUs.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fslearn as fsl  # noqa: E402
from fslearn.distributed import SINGLE, world_from_env  # noqa: E402

WARMUP = 3  # meta-iterations left out of the timing


def _train(args, world, device):
    torch.set_num_threads(1)
    train = fsl.load_dataset("embedded", "train", progress=False).to(device)
    model, history = fsl.train_maml(
        train,
        n_way=5,
        n_shot=1,
        n_query=15,
        meta_batch=args.meta_batch,
        steps=args.steps,
        hidden_channels=args.hidden_channels,
        progress=False,
        world=world,
    )
    times = history.time
    per_step = (times[-1] - times[WARMUP - 1]) / (len(times) - WARMUP)
    # The convolution biases in front of batch norm have a true gradient of zero: Adam turns
    # rounding noise into steps of size lr there, in any two runs, so they are left out.
    named = model.named_parameters()
    weights = torch.cat([p.detach().flatten().cpu() for n, p in named if not n.endswith("0.bias")])
    return 1000 * per_step, weights, sum(p.numel() for p in model.parameters())


def _rank(rank, args, port, out):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(args.processes),
        LOCAL_RANK=str(rank),
    )
    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    world = world_from_env(device.type)
    result = _train(args, world, device)
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--hidden-channels", type=int, default=32)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)

    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    one_ms, one_weights, n_params = _train(args, SINGLE, device)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rank0.pt"
        mp.spawn(_rank, args=(args, port, out), nprocs=args.processes)
        many_ms, many_weights, _ = torch.load(out)

    reduced = 4 * (n_params + 2)  # float32 gradients, plus the loss and accuracy
    w = args.processes
    print(
        f"MAML 5-way 1-shot, 15 queries, meta-batch {args.meta_batch}, "
        f"Conv4-{args.hidden_channels} ({n_params:,} parameters), {args.device}, "
        f"{args.steps} meta-iterations ({WARMUP} untimed), 1 thread per process\n"
    )
    print(f"{'processes':>9}  {'ms / meta-it':>12}  {'speed-up':>8}  {'all-reduced / it':>16}")
    print(f"{1:>9}  {one_ms:>12.1f}  {1.0:>7.2f}×  {'—':>16}")
    print(f"{w:>9}  {many_ms:>12.1f}  {one_ms / many_ms:>7.2f}×  {reduced / 1e6:>13.3f} MB")
    difference = (one_weights - many_weights).abs().max().item()
    print(
        f"\nmax |weight difference| after {args.steps} meta-iterations: {difference:.2e} "
        "(weights that receive a gradient)"
    )
    print(f"(cores here: {os.cpu_count()})\n")

    # On paper: MAML's Omniglot setting (meta-batch 32, Conv4-64) on 8 GPUs.
    conv4_64 = 4 * (112_261 + 2) / 1e6  # MB all-reduced per meta-iteration
    ring = 2 * 7 / 8 * conv4_64  # MB each GPU sends in a ring all-reduce over 8
    nvlink = 150e3  # MB/s, a conservative NVLink bus bandwidth
    latency_ms = 0.03  # an NCCL all-reduce's fixed cost on one machine
    comm_ms = latency_ms + 1000 * ring / nvlink
    compute_ms = 1000 / 96  # one H100, torch.func vmap + compile + CUDA graphs: 96 it/s
    per_gpu_ms = compute_ms / 8  # 4 tasks per GPU, if the work split were perfect
    print("8 GPUs, MAML Omniglot 5-way 1-shot (meta-batch 32 → 4 tasks per GPU), on paper:")
    print(f"  all-reduce per meta-iteration: {conv4_64:.2f} MB; a ring sends {ring:.2f} MB per GPU")
    print(f"  communication: {latency_ms} ms + {ring:.2f} MB / {nvlink / 1e3:.0f} GB/s")
    print(f"    = {comm_ms:.3f} ms per meta-iteration")
    print(f"  compute: {compute_ms:.1f} ms on one H100 (96 it/s) → {per_gpu_ms:.2f} ms per GPU")
    print(
        f"  → {comm_ms / per_gpu_ms:.0%} of the compute; at most "
        f"{compute_ms / (per_gpu_ms + comm_ms):.1f}× faster, less where 4 tasks leave a GPU idle"
    )


if __name__ == "__main__":
    main()
