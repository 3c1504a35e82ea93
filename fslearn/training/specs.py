"""Learners from a spec: what a checkpoint records so that the learner can be built again.

A *spec* is a small JSON-able dict — the method, the image shape, the backbone (Conv4's
width, or another backbone's name and options) and the method's own options — from which
:func:`build_learner` builds the learner. The recipes build their learners this way and
store the spec in their checkpoints; :func:`load_learner` reads a checkpoint back into a
ready learner.
"""

from __future__ import annotations

import torch
from torch import nn

from ..deprecation import renamed_keywords
from ..methods.baseline_pp import BaselinePP, cosine_classifier
from ..methods.finetune import FineTune
from ..methods.maml import MAML, maml_classifier
from ..methods.nearest_neighbour import NearestNeighbourLearner
from ..methods.prototypes import ProtoNet
from ..methods.siamese import SiameseNet
from ..models.classifier import Classifier
from ..models.registry import (
    UnknownBackboneError,
    backbone_names,
    build_backbone,
    embedding_dim,
    resolve_backbone_options,
)
from ..sampling.normalize import Normalize
from .checkpoint_file import read_checkpoint
from .weights import NOT_ITS_OWN, load_weights

#: The ``method`` of every spec, with the options each one's spec adds to
#: ``image_shape`` and the backbone's fields.
SPEC_FIELDS = {
    "protonet": ("distance",),
    "siamese": ("head",),
    "triplet": ("rule",),
    "maml": ("n_way", "inner_lr", "inner_steps", "test_steps", "first_order", "anil"),
    "pretrain": ("n_classes",),
}


def build_learner(spec: dict, *, seed: int | None = None) -> nn.Module:
    """A freshly initialised learner as ``spec`` describes it.

    Args:
        spec: ``{"method": one of SPEC_FIELDS, "image_shape": [C, H, W],
            "hidden_channels": int, **the method's fields}``, e.g.
            ``{"method": "protonet", "image_shape": [1, 28, 28], "hidden_channels": 64,
            "distance": "euclidean"}``, a Conv4 of that width; or with
            ``"backbone": name, "backbone_options": {...}`` instead of
            ``"hidden_channels"``, the backbone :func:`~fslearn.build_backbone` builds, e.g.
            ``"backbone": "resnet12", "backbone_options": {"channels": [64, 160, 320, 640]}``.
            An optional ``"normalize": {"mean": [...], "std": [...]}`` (one number per
            channel each) puts :class:`~fslearn.Normalize` in front of the backbone, so that
            every image, training or test, is normalised by the same statistics; the weights
            are those of the same spec without it.
        seed: seeds the initial weights.

    Raises:
        ValueError: an unknown method or a missing field (named).
        UnknownBackboneError: a backbone name that is not registered
            (:func:`~fslearn.register_backbone`).
    """
    method = spec.get("method")
    if method not in SPEC_FIELDS:
        raise ValueError(
            f"unknown method {method!r} in spec; expected one of {sorted(SPEC_FIELDS)}"
        )
    # Specs without a backbone's name were all written for Conv4, which needs its width.
    width = () if "backbone" in spec else ("hidden_channels",)
    missing = [f for f in ("image_shape", *width, *SPEC_FIELDS[method]) if f not in spec]
    if missing:
        raise ValueError(f"a {method} spec needs the fields {missing}; got {sorted(spec)}")
    shape, name = tuple(spec["image_shape"]), spec.get("backbone", "conv4")
    body = resolve_backbone_options(name, spec.get("hidden_channels"), spec.get("backbone_options"))
    if method == "maml":
        model = maml_classifier(
            spec["n_way"], shape, seed=seed, backbone=name, backbone_options=body
        )
        options = {k: spec[k] for k in SPEC_FIELDS["maml"][1:]}
        # Optional: specs written before there was a choice ran what "auto" picks.
        return MAML(_normalized(model, spec), **options, strategy=spec.get("strategy", "auto"))
    backbone = build_backbone(name, shape[0], seed=seed, **body)
    if method == "protonet":
        learner = ProtoNet(backbone, spec["distance"])
    elif method == "siamese":
        learner = SiameseNet(backbone, embedding_dim(backbone, shape), spec["head"], seed=seed)
    elif method == "triplet":
        learner = NearestNeighbourLearner(backbone, spec["rule"])
    elif spec.get("head") == "cosine":  # Baseline++'s pre-training; older specs have no "head"
        learner = cosine_classifier(
            backbone, shape, spec["n_classes"], scale=spec["scale"], seed=seed
        )
    else:
        learner = Classifier(backbone, shape, spec["n_classes"], seed=seed)
    return _normalized(learner, spec)


def _normalized(learner: nn.Module, spec: dict) -> nn.Module:
    """``learner`` with the spec's ``normalize`` (if any) in front of its ``backbone``.

    Put there once the learner is built, so that its weights, and the heads sized by the
    backbone's embedding, are drawn exactly as without it; the statistics are buffers of the
    backbone, saved and loaded with its weights (keys ``backbone.0.mean``, ``backbone.0.std``).
    """
    statistics = spec.get("normalize")
    if statistics is None:
        return learner
    if not isinstance(statistics, dict) or set(statistics) != {"mean", "std"}:
        raise ValueError(
            'a spec\'s "normalize" must be {"mean": [...], "std": [...]}, one number per '
            f"channel each; got {statistics!r}"
        )
    normalize = Normalize(statistics["mean"], statistics["std"])
    if len(normalize.mean) != spec["image_shape"][0]:
        raise ValueError(
            f'the spec\'s "normalize" holds statistics for {len(normalize.mean)} channel(s), '
            f"but its images have {spec['image_shape'][0]} (image_shape="
            f"{list(spec['image_shape'])}): measure them on these images (fsl.channel_stats)"
        )
    learner.backbone = nn.Sequential(normalize, learner.backbone)
    return learner


@renamed_keywords("load_learner", finetune_lr="inner_lr", finetune_steps="test_steps")
def load_learner(
    path,
    *,
    n_way: int | None = None,
    image_shape=None,
    device=None,
    inner_lr: float | None = None,
    test_steps: int | None = None,
) -> nn.Module:
    """The learner saved in a checkpoint, with its trained weights, in eval mode.

    Args:
        path: a checkpoint written by a recipe or ``fslearn train``.
        n_way: the way count of the tasks it will classify. A MAML checkpoint's
            head has a fixed way count, which must match; a pre-trained
            classifier needs it to build the head that :class:`~fslearn.FineTune`
            fits per task.
        image_shape: the ``(C, H, W)`` of the images it will see, checked against
            the checkpoint's.
        device: where to put the learner (default CPU).
        inner_lr, test_steps: the step size and the number of the gradient steps that adapt
            the learner to each task: for a pre-trained classifier, those of the head fitted
            per task (default: :class:`~fslearn.FineTune`'s, or :class:`~fslearn.BaselinePP`'s
            for one pre-trained with a cosine head); for MAML, they replace the checkpoint's.
            Other learners take no gradient steps and refuse them. ``finetune_lr`` and
            ``finetune_steps`` before fslearn 0.2, still taken with a warning.

    Raises:
        ValueError: the checkpoint's learner cannot take such tasks or images (the
            message names the field), or its weights do not fit its spec (the message
            names the tensor and both shapes).
    """
    payload = read_checkpoint(path)
    spec = payload["spec"]
    if spec.get("backbone", "conv4") not in backbone_names():
        raise UnknownBackboneError(
            f"{path} holds a learner on the backbone {spec['backbone']!r}, which is not "
            f"registered in this process (registered: {list(backbone_names())}). Register the "
            f"factory it was trained with before loading it: fsl.register_backbone("
            f"{spec['backbone']!r}, factory), then fsl.load_learner"
        )
    if image_shape is not None and tuple(spec["image_shape"]) != tuple(image_shape):
        raise ValueError(
            f"{path} was trained on images of shape image_shape={tuple(spec['image_shape'])}, "
            f"but these have {tuple(image_shape)}: evaluate it on the dataset it was trained for"
        )
    if spec["method"] == "maml" and n_way is not None and n_way != spec["n_way"]:
        raise ValueError(
            f"{path} is a MAML learner with a {spec['n_way']}-way head (n_way={spec['n_way']}); "
            f"it cannot classify n_way={n_way} tasks. Evaluate with n_way={spec['n_way']}, "
            f"or train with --n-way {n_way}"
        )
    adapting = {
        name: value
        for name, value in (("inner_lr", inner_lr), ("test_steps", test_steps))
        if value is not None
    }
    if adapting and spec["method"] not in ("maml", "pretrain"):
        raise ValueError(
            f"{path} is a {spec['method']} learner, which takes no gradient steps at test time; "
            f"drop {', '.join(f'{name}=' for name in adapting)} (they apply to maml and pretrain "
            "checkpoints)"
        )
    learner = build_learner({**spec, **adapting} if spec["method"] == "maml" else spec)
    if "model" not in payload["state"]:
        raise ValueError(f"{path} holds no weights (no state 'model'); {NOT_ITS_OWN}")
    load_weights(learner, payload["state"]["model"], path)
    if spec["method"] == "pretrain":
        if n_way is None:
            raise ValueError(
                f"{path} is a pre-trained classifier: pass n_way= for the head fitted to each task"
            )
        kind = BaselinePP if spec.get("head") == "cosine" else FineTune
        learner = kind(learner.backbone, spec["image_shape"], n_way, **adapting)
    return learner.to(torch.device("cpu") if device is None else device).eval()
