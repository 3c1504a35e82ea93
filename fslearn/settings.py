"""Named training settings: the papers' hyperparameters per method and dataset, and a quick CPU run.

``recipe_settings("maml", "omniglot", n_way=20)`` gives the keyword arguments of
:func:`~fslearn.train_maml` that Finn et al. used for Omniglot 20-way (5 inner
steps, α = 0.1, meta-batch 16, …). The command line's ``--recipe`` reads them;
options given explicitly override them.
"""

from __future__ import annotations

from .recipes import train_maml, train_pretrained, train_protonet, train_siamese, train_triplet

#: Method name → (training function, fixed arguments).
METHODS = {
    "siamese": (train_siamese, {}),
    "triplet": (train_triplet, {}),
    "protonet": (train_protonet, {}),
    "maml": (train_maml, {}),
    "fomaml": (train_maml, {"first_order": True}),
    "anil": (train_maml, {"anil": True}),
    "pretrain": (train_pretrained, {}),
}
RECIPES = ("paper", "quick")
MAML_FAMILY = ("maml", "fomaml", "anil")


def omniglot_protocol(method: str) -> str:
    """The Omniglot protocol each method's paper used: MAML's split (rotations per task) or Vinyals'."""
    return "maml" if method in MAML_FAMILY else "vinyals"


def _paper(method: str, dataset: str, n_way: int | None, n_shot: int) -> dict:
    mini = dataset == "miniimagenet"
    if method == "protonet":
        # Snell et al.: Omniglot 60-way 5 queries; miniImageNet 30-way 15 queries (1-shot), 20-way (5-shot).
        if mini:
            return dict(n_way=n_way or (30 if n_shot == 1 else 20), n_shot=n_shot, n_query=15)
        return dict(n_way=n_way or 60, n_shot=n_shot, n_query=5)
    if method in MAML_FAMILY:
        n_way = n_way or 5
        if mini:  # Conv4-32, 5 steps of α = 0.01, meta-batch 4 (1-shot) or 2 (5-shot)
            return dict(n_way=n_way, n_shot=n_shot, n_query=15, hidden_channels=32, inner_steps=5, inner_lr=0.01,
                        meta_batch=4 if n_shot == 1 else 2, rotate=False)
        if n_way >= 20:  # Omniglot 20-way: 5 steps of α = 0.1, meta-batch 16
            return dict(n_way=n_way, n_shot=n_shot, n_query=15, inner_steps=5, inner_lr=0.1, meta_batch=16)
        return dict(n_way=n_way, n_shot=n_shot, n_query=15, inner_steps=1, inner_lr=0.4, meta_batch=32)
    return {}  # Siamese, triplet, pre-training: the recipes' defaults are the settings


def _quick(method: str, n_way: int | None, n_shot: int) -> dict:
    if method == "pretrain":
        return dict(hidden_channels=32, epochs=1)
    settings = dict(hidden_channels=32, steps=300)
    if method == "protonet":
        settings.update(n_way=n_way or 20, n_shot=n_shot, n_query=5)
    elif method in MAML_FAMILY:
        settings.update(n_way=n_way or 5, n_shot=n_shot, n_query=5, meta_batch=4, steps=100)
    return settings


def recipe_settings(method: str, dataset: str, *, recipe: str = "paper", n_way: int | None = None, n_shot: int = 1) -> dict:
    """Keyword arguments of ``METHODS[method]``'s training function for a named recipe.

    Args:
        method: one of :data:`METHODS`.
        dataset: ``"embedded"``, ``"omniglot"``, ``"omniglot-small"`` (character
            sets: Omniglot's settings) or ``"miniimagenet"``.
        recipe: ``"paper"`` — the published hyperparameters (design notes §5) at the
            recipes' full budgets (20 000 episodes, 60 000 meta-iterations, …);
            ``"quick"`` — Conv4-32 and a few hundred steps, a CPU-sized check that a
            run works end to end.
        n_way, n_shot: the training tasks, where the paper's settings depend on them.

    Returns:
        The method's fixed arguments (e.g. ``first_order=True``) and the recipe's.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {RECIPES}")
    settings = _paper(method, dataset, n_way, n_shot) if recipe == "paper" else _quick(method, n_way, n_shot)
    return {**METHODS[method][1], **settings}
