"""Saved state loaded back into a run's objects: a mismatch is one line naming what and where.

A checkpoint whose weights do not fit the learner its own spec describes (another width,
another kernel, a missing tensor) is damaged or was written by other code; torch would say
so in a ``load_state_dict`` traceback of every mismatched tensor. :func:`load_weights` names
the first one and both shapes instead; :func:`~fslearn.load_learner` and
:meth:`~fslearn.Checkpoint.restore` load through it.
"""

from __future__ import annotations

import torch

#: What a checkpoint that does not fit its own spec or run is, and what to do about it.
NOT_ITS_OWN = (
    "the file is damaged or was written by other code (another version of fslearn, or edited): "
    "use a checkpoint that fslearn wrote, or train again"
)


def _shape(value) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    return f"a {type(value).__name__}"


def weights_problem(module: torch.nn.Module, state: dict) -> str | None:
    """What keeps ``state`` from loading into ``module`` (strictly), in words, or None.

    Names the first tensor that has another shape than the module's (with both shapes),
    is missing, or is one the module does not have.
    """
    own = module.state_dict()
    if not isinstance(state, dict):
        return f"its weights are a {type(state).__name__}, not a dict of tensors"
    for name, tensor in own.items():
        if name not in state:
            return f"it has no tensor {name} (shape {_shape(tensor)} in the learner)"
        if isinstance(tensor, torch.Tensor) and (
            not isinstance(state[name], torch.Tensor) or state[name].shape != tensor.shape
        ):
            return (
                f"its tensor {name} has shape {_shape(state[name])}, but the learner its spec "
                f"describes has {_shape(tensor)}"
            )
    extra = [name for name in state if name not in own]
    if extra:
        return f"it has a tensor {extra[0]} (shape {_shape(state[extra[0]])}) the learner lacks"
    return None


def load_weights(module: torch.nn.Module, state: dict, path) -> None:
    """Load the saved weights ``state`` into ``module``, the learner ``path``'s spec describes.

    Raises:
        ValueError: the weights do not fit the learner: the message names the tensor, both
            shapes, and says the file is damaged or from other code.
    """
    problem = weights_problem(module, state)
    if problem is None:
        try:
            module.load_state_dict(state)
            return
        except (RuntimeError, ValueError, TypeError, KeyError) as error:
            problem = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise ValueError(f"{path} does not fit its own spec: {problem}; {NOT_ITS_OWN}")


def load_state(obj, state, name: str, path) -> None:
    """Load the saved ``state`` of the run's object ``name`` (a module, an optimizer, a
    scheduler or a generator) from the checkpoint ``path``; a mismatch is a ValueError."""
    if isinstance(obj, torch.nn.Module):
        load_weights(obj, state, path)
        return
    try:
        if isinstance(obj, torch.Generator):
            obj.set_state(state)
        else:
            obj.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"{path}: its saved {name} state does not fit this run's {name} ({reason}); "
            f"{NOT_ITS_OWN}"
        ) from None
