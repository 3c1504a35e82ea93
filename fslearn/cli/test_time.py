"""How ``fslearn eval`` and ``fslearn eval-runs`` test a checkpoint's learner: on averaged
views of every image (``--test-views``), and transductively (``--transductive-steps``)."""

from __future__ import annotations

from ..methods.prototypes import ProtoNet
from ..methods.transductive import with_transductive_prototypes
from ..methods.views import AVERAGEABLE, AVERAGEABLE_METHODS, check_views_memory, with_test_views
from ..training.checkpoint_file import read_checkpoint
from .support import UsageError


def _holds(checkpoint, learner) -> str:
    method = read_checkpoint(checkpoint)["spec"]["method"]
    return f"{checkpoint} holds a {method} learner ({type(learner).__name__})"


def _check_views(learner, views: int, checkpoint, *, image_shape, n_images: int, device):
    """Refuse ``views`` views of every image for ``learner`` unless its embeddings views can
    average and all views of batches of ``n_images`` images fit ``device``'s memory, before
    any episode is scored."""
    if views == 1:
        return
    if not isinstance(learner, AVERAGEABLE):
        raise UsageError(
            f"--test-views averages the embeddings of the learners that classify by distances "
            f"between them ({AVERAGEABLE_METHODS}); {_holds(checkpoint, learner)}: leave "
            "--test-views out"
        )
    try:
        check_views_memory(learner.backbone, image_shape, n_images, views, device, "--test-views")
    except ValueError as error:
        raise UsageError(str(error)) from None


def check_test_time(
    learner, checkpoint, *, test_views: int, transductive_steps: int, image_shape, n_images, device
) -> None:
    """Refuse, with the fix, ``test_views`` views (:func:`_check_views`) or
    ``transductive_steps`` refinements that ``learner`` cannot take, before any episode is
    scored."""
    _check_views(
        learner, test_views, checkpoint, image_shape=image_shape, n_images=n_images, device=device
    )
    if transductive_steps and not isinstance(learner, ProtoNet):
        raise UsageError(
            "--transductive-steps refines the prototypes of a protonet learner; "
            f"{_holds(checkpoint, learner)}: leave --transductive-steps out"
        )


def as_tested(
    learner, checkpoint, *, test_views: int, transductive_steps: int, image_shape, n_images, device
):
    """``learner`` embedding each image as its mean over ``test_views`` views (1: the image
    alone) and refining its prototypes with the queries in ``transductive_steps`` steps (0:
    none), checked by :func:`check_test_time` first."""
    check_test_time(
        learner,
        checkpoint,
        test_views=test_views,
        transductive_steps=transductive_steps,
        image_shape=image_shape,
        n_images=n_images,
        device=device,
    )
    if test_views > 1:
        learner = with_test_views(learner, test_views)
    if transductive_steps:
        learner = with_transductive_prototypes(learner, transductive_steps)
    return learner


def test_fields(test_views: int, transductive_steps: int) -> dict:
    """How a result was tested, for its JSON: only what differs from a plain test, so that the
    results of plain tests read as they always have."""
    fields = {"test_views": test_views} if test_views > 1 else {}
    return fields | ({"transductive_steps": transductive_steps} if transductive_steps else {})


def how_tested(test_views: int, transductive_steps: int) -> str:
    """The same, in words, to follow a result's setting (empty for a plain test)."""
    words = f", {test_views} views per image" if test_views > 1 else ""
    if transductive_steps:
        words += f", transductive ({transductive_steps} refinements of the prototypes)"
    return words
