"""How much memory training a batch takes."""

from __future__ import annotations

import torch


def activation_bytes(model: torch.nn.Module, x: torch.Tensor, y=None, loss_fn=None) -> int:
    """Bytes of the tensors autograd keeps from one forward pass for the backward pass.

    This is the part of training memory that grows with the batch size; the
    parameters (and their gradients and optimizer state) do not, and are not
    counted. Measured, not estimated: every tensor saved for backward is
    caught with :func:`torch.autograd.graph.saved_tensors_hooks` and its storage
    counted once.

    Args:
        x: a batch of inputs of shape ``(B, ...)``.
        y, loss_fn: when given, the loss's saved tensors count too.
    """
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x)
        if loss_fn is not None:
            loss_fn(out, y)
    return sum(storages.values())
