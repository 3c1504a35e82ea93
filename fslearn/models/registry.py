"""Backbones by name: the built-in ``"conv4"`` and ``"resnet12"``, and any the user registers.

A learner's spec (:func:`~fslearn.build_learner`) names its backbone and the options it was
built with, so that a checkpoint can build it again: any network that maps images
``(B, C, H, W)`` to embeddings ``(B, D)`` can serve every learner once its *factory* is
registered under a name::

    def small_net(in_channels, *, seed, track_running_stats, width=8):
        with fsl.seeded(seed):
            return nn.Sequential(
                nn.Conv2d(in_channels, width, 3, padding=1),
                nn.BatchNorm2d(width) if track_running_stats else fsl.TaskBatchNorm2d(width),
                nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )

    fsl.register_backbone("small", small_net)
    protonet, _ = fsl.train_protonet(train, backbone="small", backbone_options={"width": 16})

A process that loads such a checkpoint registers the same factory first.
"""

from __future__ import annotations

import inspect
import json

import torch
from torch import nn

from ..common import model_device
from .conv4 import Conv4
from .resnet12 import ResNet12


class UnknownBackboneError(ValueError):
    """A backbone name that no factory is registered under."""


def _conv4(in_channels, *, seed=None, track_running_stats=True, hidden_channels=64):
    return Conv4(in_channels, hidden_channels, track_running_stats=track_running_stats, seed=seed)


def _resnet12(in_channels, *, seed=None, track_running_stats=True, channels=(64, 160, 320, 640)):
    return ResNet12(in_channels, channels, track_running_stats=track_running_stats, seed=seed)


BUILT_IN = {"conv4": _conv4, "resnet12": _resnet12}
_FACTORIES = dict(BUILT_IN)
#: What a factory receives from fslearn itself, never from the options of a spec.
RESERVED = ("in_channels", "seed", "track_running_stats")


def register_backbone(name: str, factory) -> None:
    """Make ``factory`` the backbone called ``name``, for every recipe, spec and checkpoint.

    Args:
        name: the name specs and recipes use (``backbone="name"``); ``"conv4"`` and
            ``"resnet12"`` are taken. Registering a name again replaces its factory.
        factory: ``factory(in_channels, *, seed, track_running_stats, **options) -> nn.Module``,
            a network that maps ``(B, in_channels, H, W)`` images to ``(B, D)`` embeddings,
            its weights drawn from ``seed`` (``None``: torch's global generator; see
            :func:`~fslearn.seeded`). With ``track_running_stats=False`` (MAML's network) its
            batch norms must keep no running statistics, and second-order MAML needs them to
            be :class:`~fslearn.TaskBatchNorm2d`. ``options`` are the ``backbone_options``
            of a recipe, saved in its checkpoint: JSON values (numbers, strings, lists, …).
            A method ``embedding_dim(image_shape)`` is optional: without one, ``D`` is
            measured with one forward pass.

    Raises:
        ValueError: a name that is not a non-empty string, a built-in name, or a factory
            that is not callable (or a network instead of a factory).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a backbone's name must be a non-empty string; got {name!r}")
    if name in BUILT_IN:
        raise ValueError(
            f"{name!r} is fslearn's built-in backbone and cannot be replaced: register yours "
            f"under another name, e.g. 'my_{name}'"
        )
    if isinstance(factory, nn.Module):
        raise ValueError(
            f"backbone {name!r}: register_backbone takes a factory that builds a new network "
            f"for every learner, not a network ({type(factory).__name__}); e.g. "
            "def factory(in_channels, *, seed, track_running_stats): return MyNet(in_channels)"
        )
    if not callable(factory):
        raise ValueError(
            f"the factory of backbone {name!r} must be callable, "
            f"factory(in_channels, *, seed, track_running_stats, **options); got {factory!r}"
        )
    _FACTORIES[name] = factory


def backbone_names() -> tuple[str, ...]:
    """The names :func:`~fslearn.build_backbone` knows now, the built-in ones first."""
    return (*BUILT_IN, *sorted(set(_FACTORIES) - set(BUILT_IN)))


def _unknown(name) -> UnknownBackboneError:
    return UnknownBackboneError(
        f"unknown backbone {name!r}; registered: {list(backbone_names())}. Register its factory "
        f"first: fsl.register_backbone({name!r}, factory), where factory(in_channels, *, seed, "
        "track_running_stats, **options) returns the nn.Module"
    )


def _option_names(factory) -> list[str] | None:
    """The keyword options ``factory`` takes besides the reserved ones (``None``: any)."""
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [
        p.name
        for p in parameters[1:]
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.name not in RESERVED
    ]


def check_backbone_options(name: str, options) -> dict:
    """``options`` as plain JSON values (tuples become lists), or a ValueError naming the bad
    one: they are saved in checkpoints and config files."""
    if name not in _FACTORIES:
        raise _unknown(name)
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ValueError(
            f"backbone_options must be a dict of keyword arguments of backbone {name!r}'s "
            f"factory, e.g. {{'channels': [16, 32, 64, 128]}}; got {options!r}"
        )
    reserved = sorted(set(options) & set(RESERVED))
    if reserved:
        raise ValueError(
            f"backbone_options may not set {reserved}: fslearn sets them itself (in_channels "
            "from the images, seed from the recipe's, track_running_stats False for MAML)"
        )
    takes = _option_names(_FACTORIES[name])
    unknown = [key for key in options if takes is not None and key not in takes]
    if unknown:
        raise ValueError(
            f"backbone {name!r} takes the options {takes}; got {unknown}"
            + (" (Conv4's width is hidden_channels)" if name == "conv4" else "")
        )
    for key, value in options.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError(
                f"backbone_options[{key!r}]={value!r} cannot be saved with the checkpoint: "
                "options must be JSON values (numbers, strings, booleans, lists, dicts)"
            ) from None
    return json.loads(json.dumps(options))


def build_backbone(
    name: str,
    in_channels: int,
    *,
    seed: int | None = None,
    track_running_stats: bool = True,
    **options,
) -> nn.Module:
    """The backbone registered as ``name``, for ``in_channels``-channel images.

    ``fsl.build_backbone("resnet12", 3, channels=[16, 32, 64, 128], seed=0)`` is
    ``fsl.ResNet12(3, (16, 32, 64, 128), seed=0)``; ``fsl.build_backbone("conv4", 1,
    hidden_channels=64)`` is ``fsl.Conv4(1, 64)``.

    Args:
        name: ``"conv4"``, ``"resnet12"`` or a name given to :func:`~fslearn.register_backbone`.
        in_channels: image channels.
        seed: seeds the weights.
        track_running_stats: ``False`` for MAML (per-task batch statistics).
        options: the factory's own keyword arguments (Conv4: ``hidden_channels``;
            ResNet12: ``channels``).

    Raises:
        UnknownBackboneError: no factory is registered as ``name`` (the message says how to
            register one).
        ValueError: options the factory does not take, or a factory that returns no module.
    """
    options = check_backbone_options(name, options)
    factory = _FACTORIES[name]
    try:
        backbone = factory(
            in_channels, seed=seed, track_running_stats=track_running_stats, **options
        )
    except TypeError as error:
        raise ValueError(
            f"backbone {name!r} cannot be built with the options {options}: {error}"
        ) from error
    if not isinstance(backbone, nn.Module):
        raise ValueError(
            f"the factory of backbone {name!r} returned {type(backbone).__name__}, not an nn.Module"
        )
    return backbone


def embedding_dim(backbone: nn.Module, image_shape) -> int:
    """Length ``D`` of ``backbone``'s embedding of one ``(C, H, W)`` image: its own
    ``embedding_dim(image_shape)`` if it has one, else measured on two blank images (in eval
    mode, without gradients: no running statistics move)."""
    if hasattr(backbone, "embedding_dim"):
        return backbone.embedding_dim(tuple(image_shape))
    reference = next(backbone.parameters(), None)
    dtype = torch.get_default_dtype() if reference is None else reference.dtype
    x = torch.zeros(2, *image_shape, device=model_device(backbone), dtype=dtype)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(x)
    finally:
        backbone.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"a backbone must map images (B, C, H, W) to embeddings (B, D); "
            f"{type(backbone).__name__} gives {shape} for images of shape {tuple(image_shape)}: "
            "end it with nn.Flatten() or a pooling to (B, D)"
        )
    return out.shape[1]


def resolve_backbone_options(name: str, hidden_channels: int | None, options) -> dict:
    """The options of backbone ``name``: ``options``, with Conv4's ``hidden_channels`` when given.

    ``hidden_channels`` is Conv4's width, the argument every recipe takes; another backbone
    refuses it (a ValueError that names its own options instead).
    """
    options = check_backbone_options(name, options)
    if hidden_channels is None:
        return options
    if name != "conv4":
        example = " (ResNet-12: channels=[64, 160, 320, 640])" if name == "resnet12" else ""
        raise ValueError(
            f"hidden_channels={hidden_channels} is Conv4's width and does not apply to "
            f"backbone={name!r}: leave it out and give that backbone's own widths in "
            f"backbone_options{example}"
        )
    if options.get("hidden_channels", hidden_channels) != hidden_channels:
        raise ValueError(
            f"hidden_channels={hidden_channels} and backbone_options={options} give Conv4 two "
            "widths: give one"
        )
    return {**options, "hidden_channels": hidden_channels}
