"""How a batch of tasks runs in the gradient learners: all at once under ``vmap``, or one
after another with plain autograd; the same numbers either way.

- ``"vmap"``: all tasks at once under :func:`torch.func.vmap`, each inner step a
  :func:`torch.func.grad`: a few large kernels instead of ``T`` small ones, which is what a
  GPU wants;
- ``"loop"``: one task after another, each inner step a plain ``torch.autograd.grad``, with
  torch's own batch-norm kernel (exact outside ``vmap``): the faster of the two on a CPU,
  where kernel launches cost little and ``vmap``'s batching rules cost a lot.
"""

from __future__ import annotations

import torch

#: How a batch of tasks runs: ``"auto"`` picks ``"loop"`` on a CPU and ``"vmap"`` elsewhere.
STRATEGIES = ("auto", "loop", "vmap")


def check_strategy(strategy: str) -> str:
    """``strategy``, or a ``ValueError`` naming it and the accepted values."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}")
    return strategy


def resolve_strategy(strategy: str, device: torch.device | str) -> str:
    """``"loop"`` or ``"vmap"``: what ``strategy`` means for tensors on ``device``."""
    if check_strategy(strategy) != "auto":
        return strategy
    return "loop" if torch.device(device).type == "cpu" else "vmap"


def stack_tasks(outputs: list):
    """Per-task outputs (tensors, or tuples of tensors) stacked on a new leading dimension."""
    if isinstance(outputs[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*outputs, strict=True))
    return torch.stack(outputs)


def autograd_gradient(loss_of, create_graph: bool):
    """``params → d loss_of(params) / d params`` by ``torch.autograd.grad``, also under
    ``torch.no_grad()``; differentiable (a second-order graph) when ``create_graph``."""

    def gradient(params: dict) -> dict:
        with torch.enable_grad():
            inputs = {
                name: value if value.requires_grad else value.detach().requires_grad_()
                for name, value in params.items()
            }
            # The graph is kept: ANIL's support features are shared by every inner step.
            grads = torch.autograd.grad(
                loss_of(inputs),
                list(inputs.values()),
                create_graph=create_graph,
                retain_graph=True,
                allow_unused=True,
            )
        return {
            name: torch.zeros_like(value) if g is None else g
            for (name, value), g in zip(params.items(), grads, strict=True)
        }

    return gradient
