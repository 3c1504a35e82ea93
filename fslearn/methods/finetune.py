"""The pre-training baseline: an ordinary classifier's backbone, a new head fitted per task.

Train a backbone as a plain classifier on all background classes (one softmax
over hundreds of classes, :func:`~fslearn.train_pretrained`), then, for each test task, put a
fresh ``n_way`` head on it and fit that head (or the whole network) to the support set with
the same plain gradient steps MAML's inner loop takes. Pre-training looks for parameters that
are good for the training classes, MAML for parameters a few steps away from good parameters
for new tasks; but the two baselines of the literature also differ from MAML in what adapts,
in how batch norm normalises the test images, in the steps and their size, and in the head's
start, so a comparison that means to measure the starting point alone sets ``test_adapt``,
``test_bn``, ``inner_lr`` and ``test_steps`` alike on both sides.

What the settings match in the papers (Chen et al. 2019, "A Closer Look at Few-shot
Classification", and their code, github wyharveychen/CloserLookFewShot):

- ``test_adapt="head"`` with ``test_bn="running"`` (the defaults) is their Baseline: the
  backbone frozen in eval mode (their ``save_features.py`` extracts features after
  ``model.eval()``), a new linear head trained on the support features. ``"whole"`` fine-tunes
  the backbone too, which they do not.
- Their head starts at random and is trained by SGD (learning rate 0.01, momentum 0.9,
  dampening 0.9, weight decay 0.001) on mini-batches of 4 support features for 100 epochs
  (``methods/baselinefinetune.py``); here it starts at zero and takes ``test_steps``
  full-batch gradient steps of size ``inner_lr``, MAML's kind of step, so that the two differ
  in their start.
"""

from __future__ import annotations

from torch import nn

from ..deprecation import renamed_keywords
from ..models.classifier import Classifier
from .adaptation import GradientLearner


class FineTune(GradientLearner):
    """A pre-trained backbone with a new head fitted to each task's support set.

    Args:
        backbone: a trained embedding network with ``embedding_dim(image_shape)``
            (e.g. the ``backbone`` of a :class:`~fslearn.Classifier` trained with
            :func:`~fslearn.train_pretrained`).
        image_shape: ``(C, H, W)`` of the images.
        n_way: classes per task.
        inner_lr: step size of the gradient steps on the support loss (``lr`` before
            fslearn 0.2, still taken with a warning).
        test_steps: gradient steps per task (``steps`` before fslearn 0.2, still taken with
            a warning).
        test_adapt: ``"head"`` (default: only the new head adapts, on the fixed backbone's
            features) or ``"whole"`` (the backbone is fine-tuned too).
        test_bn: batch norm at test time (:mod:`fslearn.methods.batch_norm_modes`):
            ``"running"`` (default: the running statistics of pre-training),
            ``"transductive"`` (the support set's statistics while adapting, the queries'
            own when they are classified, as MAML's code does) or ``"support"`` (the support
            set's statistics for the queries too).
        head: the new head, ``(B, D) → (B, n_way)`` (default: a linear layer that starts at
            zero, so that before any step every class scores the same); every task starts
            from its parameters.
        strategy: how a batch of tasks runs (``"auto"``, ``"loop"`` or ``"vmap"``), as in
            :class:`~fslearn.GradientLearner`.

    ``whole=True`` (or ``False``), the earlier spelling of ``test_adapt="whole"`` (or
    ``"head"``), is still taken, with a warning, until fslearn 0.3.

    Call shape: ``finetune(support_x, support_y, query_x) -> logits``, one task or
    ``T`` stacked tasks, as every learner in fslearn. Running statistics are never updated:
    the backbone stays in eval mode.
    """

    @renamed_keywords(
        "FineTune",
        lr="inner_lr",
        steps="test_steps",
        whole=("test_adapt", lambda whole: None if whole is None else "whole" if whole else "head"),
    )
    def __init__(
        self,
        backbone: nn.Module,
        image_shape,
        n_way: int,
        *,
        inner_lr: float = 0.5,
        test_steps: int = 50,
        test_adapt: str = "head",
        test_bn: str = "running",
        head: nn.Module | None = None,
        strategy: str = "auto",
    ):
        # A given head replaces the linear one, whose draw must then leave torch's global
        # generator where it was.
        model = Classifier(backbone, image_shape, n_way, seed=None if head is None else 0)
        if head is not None:
            model.head = head
        else:
            nn.init.zeros_(model.head.weight)
            nn.init.zeros_(model.head.bias)
        reference = next(backbone.parameters(), None)
        if reference is not None:
            model.head.to(device=reference.device, dtype=reference.dtype)
        super().__init__(
            model,
            inner_lr=inner_lr,
            test_steps=test_steps,
            test_adapt=test_adapt,
            test_bn=test_bn,
            strategy=strategy,
        )
        self.train(self.training)

    def train(self, mode: bool = True) -> FineTune:
        super().train(mode)
        # Running statistics from pre-training are never updated by a task's batch: they
        # cannot be under vmap, and 5 support images are too few to estimate them.
        self.model.backbone.eval()
        return self
