"""The slow ways, kept as the yardsticks: MAML one task at a time, episodes through a DataLoader.

Tests hold fslearn's batched :class:`~fslearn.MAML` to :func:`per_task_meta_loss`,
chapter 7 times the two against each other, and :func:`~fslearn.bench.sampler_speed`
times :class:`~fslearn.EpisodeSampler` against :func:`dataloader_episodes`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from ..data.dataset import FewShotDataset


def per_task_meta_loss(
    model: nn.Module,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    *,
    inner_lr: float,
    steps: int,
    first_order: bool = False,
    backward: bool = True,
) -> torch.Tensor:
    """MAML the way most libraries run it: one task at a time, with ``autograd.grad``.

    For each of the ``T`` tasks, adapt a copy of the parameters with
    ``torch.autograd.grad(..., create_graph=not first_order)``, compute the query
    loss and (``backward=True``) call ``backward`` on ``loss / T`` at once, so the
    gradients of θ accumulate task by task. Slow — a Python loop with small
    kernels — and kept as the reference that tests, benchmarks and chapter 7
    hold the batched :class:`~fslearn.MAML` to.

    Returns:
        The mean query loss over tasks (detached when ``backward=True``).
    """
    params = dict(model.named_parameters())
    n_tasks = support_x.shape[0]
    total = support_x.new_zeros(())
    for t in range(n_tasks):
        fast = params
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, fast, (support_x[t],)), support_y[t])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = {
                name: value - inner_lr * g
                for (name, value), g in zip(fast.items(), grads, strict=True)
            }
        query_loss = (
            F.cross_entropy(functional_call(model, fast, (query_x[t],)), query_y[t]) / n_tasks
        )
        if backward:
            query_loss.backward()
            query_loss = query_loss.detach()
        total = total + query_loss
    return total


def episode_indices(dataset: FewShotDataset, n_way: int, n_items: int, seed: int):
    """Endless flat index lists of N-way (K+Q)-shot episodes: easyfsl's TaskSampler, as a batch
    sampler."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        classes = torch.randperm(dataset.n_classes, generator=generator)[:n_way]
        yield [
            int(c) * dataset.n_per_class + int(i)
            for c in classes
            for i in torch.randperm(dataset.n_per_class, generator=generator)[:n_items]
        ]


def collate_episode(n_way: int, n_shot: int):
    """Stack one episode's images, remap its labels to 0..n_way-1 and split support from query."""

    def collate(batch):
        images = torch.stack([image for image, _ in batch]).float().div_(255)
        _, labels = torch.unique(torch.stack([label for _, label in batch]), return_inverse=True)
        x, y = images.view(n_way, -1, *images.shape[1:]), labels.view(n_way, -1)
        support, query = (x[:, :n_shot], y[:, :n_shot]), (x[:, n_shot:], y[:, n_shot:])
        return (
            support[0].flatten(0, 1),
            support[1].flatten(),
            query[0].flatten(0, 1),
            query[1].flatten(),
        )

    return collate


def dataloader_episodes(
    dataset: FewShotDataset, n_way: int, n_shot: int, n_query: int, *, seed: int = 0
):
    """An endless iterator of ``(support_x, support_y, query_x, query_y)`` built on the host.

    A ``Dataset`` of single (image, label) pairs, a batch sampler that yields one
    episode's indices, and a ``DataLoader`` whose collate function stacks the images,
    remaps the labels and splits support from query: the pipeline of easyfsl and torchmeta.
    """
    images, labels = dataset.flat(float_images=False)
    indices = episode_indices(dataset, n_way, n_shot + n_query, seed=seed)
    loader = DataLoader(
        TensorDataset(images, labels),
        batch_sampler=indices,
        collate_fn=collate_episode(n_way, n_shot),
    )
    return iter(loader)
