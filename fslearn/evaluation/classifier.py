"""A classifier's loss and accuracy on a labelled set."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import model_device
from ..data.dataset import to_float


@torch.no_grad()
def evaluate_classifier(model, x, y, *, batch_size: int = 1024, loss_fn=F.cross_entropy) -> dict:
    """Mean loss and accuracy of ``model`` on ``(x, y)``, in eval mode, without gradients.

    Args:
        x: inputs of shape ``(N, ...)`` (uint8 images are scaled to ``[0, 1]``).
        y: integer labels of shape ``(N,)``.
        loss_fn: a mean-reduced loss ``loss_fn(logits, labels) -> scalar``.

    Returns:
        ``{"loss": float, "accuracy": float}``.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    for start in range(0, len(x), batch_size):
        xb = to_float(x[start : start + batch_size].to(device))
        yb = y[start : start + batch_size].to(device)
        logits = model(xb)
        total_loss += loss_fn(logits, yb) * len(yb)
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    return {"loss": total_loss.item() / len(x), "accuracy": correct.item() / len(x)}
