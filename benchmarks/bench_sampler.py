"""Episode sampling speed: fslearn's EpisodeSampler vs a DataLoader + batch-sampler pipeline.

    python benchmarks/bench_sampler.py [--device cuda] [--tasks 32]

The baseline builds episodes the way easyfsl's TaskSampler and torchmeta do: a
``Dataset`` of single (image, label) pairs, a batch sampler that yields the
indices of one episode, a ``DataLoader`` whose collate function stacks the
images, splits support from query and remaps labels, then a copy to the device.
fslearn draws the same shape of episode batch with index arithmetic on the
device where the whole dataset already lives.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import fslearn as fsl


class _Images(Dataset):
    def __init__(self, dataset: fsl.FewShotDataset):
        self.images = dataset.images.cpu().flatten(0, 1)
        self.labels = torch.arange(dataset.n_classes).repeat_interleave(dataset.n_per_class)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])


class _TaskSampler(Sampler):
    """Yields the flat indices of one N-way (K+Q)-shot episode at a time (easyfsl's design)."""

    def __init__(self, n_classes, n_per_class, n_way, n_items, n_episodes, seed):
        self.n_classes, self.n_per_class, self.n_way, self.n_items = n_classes, n_per_class, n_way, n_items
        self.n_episodes = n_episodes
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return self.n_episodes

    def __iter__(self):
        for _ in range(self.n_episodes):
            classes = torch.randperm(self.n_classes, generator=self.generator)[: self.n_way]
            yield [
                int(c) * self.n_per_class + int(i)
                for c in classes
                for i in torch.randperm(self.n_per_class, generator=self.generator)[: self.n_items]
            ]


def _collate(n_way, n_shot):
    def collate(batch):
        images = torch.stack([image for image, _ in batch]).float().div_(255)
        labels = torch.tensor([label for _, label in batch])
        _, remapped = torch.unique(labels, return_inverse=True)
        x = images.view(n_way, -1, *images.shape[1:])
        y = remapped.view(n_way, -1)
        return x[:, :n_shot].flatten(0, 1), y[:, :n_shot].flatten(), x[:, n_shot:].flatten(0, 1), y[:, n_shot:].flatten()

    return collate


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(dataset, device, n_way, n_shot, n_query, n_tasks, repeats):
    on_device = dataset.to(device)
    sampler = fsl.EpisodeSampler(on_device, n_way, n_shot, n_query, seed=0)
    sampler.sample(n_tasks)  # warm-up: allocations, kernels
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        sampler.sample(n_tasks)
    _sync(device)
    ours = (time.perf_counter() - start) / repeats

    loader = DataLoader(
        _Images(dataset),
        batch_sampler=_TaskSampler(dataset.n_classes, dataset.n_per_class, n_way, n_shot + n_query, n_tasks * (repeats + 1), 0),
        collate_fn=_collate(n_way, n_shot),
    )
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    for _ in range(repeats):
        tasks = [next(batches) for _ in range(n_tasks)]
        [torch.stack(part).to(device, non_blocking=True) for part in zip(*tasks)]
    _sync(device)
    base = (time.perf_counter() - start) / repeats
    return ours, base


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=str(fsl.default_device()))
    parser.add_argument("--tasks", type=int, default=32, help="episodes per batch (MAML's meta-batch)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    dataset = fsl.load_embedded("background", progress=False)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {name}; batches of {args.tasks} episodes from {dataset.n_classes} classes")
    print(f"{'episode shape':<24} {'fslearn ms/batch':>17} {'DataLoader ms/batch':>20} {'episodes/s (fslearn)':>21} {'speed-up':>9}")
    for n_way, n_shot, n_query in [(5, 1, 15), (5, 5, 15), (20, 1, 15), (20, 5, 5)]:
        ours, base = bench(dataset, device, n_way, n_shot, n_query, args.tasks, args.repeats)
        print(
            f"{f'{n_way}-way {n_shot}-shot {n_query}-query':<24} {ours * 1e3:>17.3f} {base * 1e3:>20.2f} "
            f"{args.tasks / ours:>21,.0f} {base / ours:>8.0f}×"
        )


if __name__ == "__main__":
    main()
