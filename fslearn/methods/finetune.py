"""The pre-training baseline: an ordinary classifier's backbone, a new head fitted per task.

Train a backbone as a plain classifier on all background classes (one softmax
over hundreds of classes, :func:`~fslearn.fit`), then, for each test task, put a
fresh ``n_way`` head on it and fit that head (optionally the whole network) to
the support set with the same gradient steps MAML's inner loop takes. Only the
starting point differs from MAML: pre-training looks for parameters that are
good for the training classes, MAML for parameters a few steps away from good
parameters for new tasks.
"""

from __future__ import annotations

from torch import nn

from ..models.classifier import Classifier
from .adaptation import GradientLearner


class FineTune(GradientLearner):
    """A pre-trained backbone with a new head fitted to each task's support set.

    Args:
        backbone: a trained embedding network with ``embedding_dim(image_shape)``
            (e.g. the ``backbone`` of a :class:`~fslearn.Classifier` trained with
            :func:`~fslearn.train_pretrained`). Its batch norm always uses the
            running statistics of pre-training.
        image_shape: ``(C, H, W)`` of the images.
        n_way: classes per task.
        lr: step size of the gradient steps on the support loss.
        steps: gradient steps per task.
        whole: also fine-tune the backbone (default: only the head).
        strategy: how a batch of tasks runs (``"auto"``, ``"loop"`` or ``"vmap"``), as in
            :class:`~fslearn.GradientLearner`.

    The head starts at zero, so before any step every class scores the same.
    Call shape: ``finetune(support_x, support_y, query_x) -> logits``, one task or
    ``T`` stacked tasks, as every learner in fslearn.
    """

    def __init__(
        self,
        backbone: nn.Module,
        image_shape,
        n_way: int,
        *,
        lr: float = 0.5,
        steps: int = 50,
        whole: bool = False,
        strategy: str = "auto",
    ):
        model = Classifier(backbone, image_shape, n_way)
        reference = next(backbone.parameters(), None)
        if reference is not None:
            model.head.to(device=reference.device, dtype=reference.dtype)
        nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
        super().__init__(
            model, inner_lr=lr, test_steps=steps, head_only=not whole, strategy=strategy
        )
        self.train(self.training)

    def train(self, mode: bool = True) -> FineTune:
        super().train(mode)
        # Running statistics from pre-training, never this task's batch: they cannot
        # be updated under vmap, and 5 support images are too few to estimate them.
        self.model.backbone.eval()
        return self
