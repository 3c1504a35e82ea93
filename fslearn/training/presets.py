"""Named training settings: the papers' hyperparameters per method and dataset, and a quick CPU run.

``recipe_settings("maml", "omniglot", n_way=20)`` gives the keyword arguments of
:func:`~fslearn.train_maml` that Finn et al. used for Omniglot 20-way (5 inner
steps, α = 0.1, meta-batch 16, 5 test steps, …). The command line's ``--recipe`` reads them;
options given explicitly override them. The book's page *Sources of the numbers*
(``book/sources.md``) says where each number below is printed, and a test holds this module
to it.

The papers behind the ``"paper"`` recipe, and the test accuracies they report
(``PUBLISHED``; %, ± 95% confidence interval where the paper gives one; 5w1s is 5-way
1-shot, and so on):

================================  ========  ========  ========  ========  ============  ============
method                            Omniglot  Omniglot  Omniglot  Omniglot  miniImageNet  miniImageNet
                                  5w1s      5w5s      20w1s     20w5s     5w1s          5w5s
================================  ========  ========  ========  ========  ============  ============
MAML (Finn et al. 2017, table 1)  98.7±0.4  99.9±0.1  95.8±0.3  98.9±0.2  48.70±1.84    63.11±0.92
first-order MAML (same)                                                   48.07±1.75    63.15±0.91
ProtoNet (Snell et al. 2017)      98.8      99.7      96.0      98.9      49.42±0.78    68.20±0.66
Siamese (Koch et al. 2015) [*]    97.3      98.4      88.2      97.0
================================  ========  ========  ========  ========  ============  ============

[*] As Finn et al. (2017) quote it in their table 1, which names Koch (2015). Koch et al.'s
paper tests Omniglot only on Lake et al.'s 20-way runs within one alphabet; the row is a
Siamese network tested under the protocol of Vinyals et al. (2016), on 28×28 images.

* Finn, Abbeel and Levine (2017), *Model-Agnostic Meta-Learning for Fast Adaptation of
  Deep Networks*, ICML: Conv4 with per-task batch statistics (on Omniglot the paper, §5.2,
  and its code, github.com/cbfinn/maml, use stride-2 convolutions instead of max-pooling;
  fslearn's Conv4 keeps max-pooling), Adam 1e-3 on the meta-objective, 60 000
  meta-iterations; the rest is :data:`MAML_PAPER`. Test-time steps follow the paper's
  appendix A.1 (3 for Omniglot 5-way, 5 for 20-way, 10 for miniImageNet); the authors'
  code takes 10 for every dataset, as :class:`~fslearn.MAML`'s default does. Queries per
  class: 15 on miniImageNet (the appendix), as many as shots on Omniglot (the appendix
  gives none; the code draws ``2 × shots`` images per class, half of them queries).
* Snell, Swersky and Zemel (2017), *Prototypical Networks for Few-shot Learning*,
  NeurIPS: Conv4-64, Adam 1e-3 halved every 2 000 episodes; Omniglot trained 60-way with 5
  queries, miniImageNet 30-way (1-shot) or 20-way (5-shot) with 15 queries.
* Koch, Zemel and Salakhutdinov (2015), *Siamese Neural Networks for One-shot Image
  Recognition*, and Schroff, Kalenichenko and Philbin (2015), *FaceNet*: the Siamese and
  triplet recipes keep their losses on the book's Conv4 (see the recipes' docstrings).
"""

from __future__ import annotations

from .gradient_recipes import train_maml, train_pretrained
from .metric_recipes import train_protonet, train_siamese
from .triplet_recipe import train_triplet

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
RECIPES = ("paper", "quick", "minimal")
MAML_FAMILY = ("maml", "fomaml", "anil")

#: The MAML settings of Finn et al. (2017, appendix A.1) for Omniglot 5-way, Omniglot 20-way
#: and miniImageNet, whose meta-batch is 4 for 1-shot and 2 for 5-shot tasks.
MAML_PAPER = {
    "omniglot": dict(
        hidden_channels=64, inner_steps=1, inner_lr=0.4, meta_batch=32, test_steps=3, rotate=True
    ),
    "omniglot-20way": dict(
        hidden_channels=64, inner_steps=5, inner_lr=0.1, meta_batch=16, test_steps=5, rotate=True
    ),
    "miniimagenet": dict(
        hidden_channels=32, inner_steps=5, inner_lr=0.01, meta_batch=4, test_steps=10, rotate=False
    ),
}
#: Queries per class of MAML's training tasks on miniImageNet (the appendix, after Ravi and
#: Larochelle); on Omniglot the authors' code draws as many queries as shots.
MAML_PAPER_MINIIMAGENET_QUERIES = 15

#: The test accuracies (%) reported by the papers behind the ``"paper"`` recipe:
#: ``(method, dataset, n_way, n_shot) → (mean, 95% interval, or None where the paper gives
#: none)``; the table in this module's docstring prints them.
PUBLISHED = {
    ("maml", "omniglot", 5, 1): (98.7, 0.4),
    ("maml", "omniglot", 5, 5): (99.9, 0.1),
    ("maml", "omniglot", 20, 1): (95.8, 0.3),
    ("maml", "omniglot", 20, 5): (98.9, 0.2),
    ("maml", "miniimagenet", 5, 1): (48.70, 1.84),
    ("maml", "miniimagenet", 5, 5): (63.11, 0.92),
    ("fomaml", "miniimagenet", 5, 1): (48.07, 1.75),
    ("fomaml", "miniimagenet", 5, 5): (63.15, 0.91),
    ("protonet", "omniglot", 5, 1): (98.8, None),
    ("protonet", "omniglot", 5, 5): (99.7, None),
    ("protonet", "omniglot", 20, 1): (96.0, None),
    ("protonet", "omniglot", 20, 5): (98.9, None),
    ("protonet", "miniimagenet", 5, 1): (49.42, 0.78),
    ("protonet", "miniimagenet", 5, 5): (68.20, 0.66),
    ("siamese", "omniglot", 5, 1): (97.3, None),
    ("siamese", "omniglot", 5, 5): (98.4, None),
    ("siamese", "omniglot", 20, 1): (88.2, None),
    ("siamese", "omniglot", 20, 5): (97.0, None),
}


def maml_paper_settings(dataset: str, n_way: int = 5, n_shot: int = 1) -> dict:
    """:data:`MAML_PAPER`'s settings for ``dataset`` (any character set counts as Omniglot)."""
    if dataset == "miniimagenet":
        return {**MAML_PAPER["miniimagenet"], "meta_batch": 4 if n_shot == 1 else 2}
    return dict(MAML_PAPER["omniglot-20way" if n_way >= 20 else "omniglot"])


def omniglot_protocol(method: str) -> str:
    """The Omniglot split each method's paper used: MAML's (rotations per task) or Vinyals'."""
    return "maml" if method in MAML_FAMILY else "vinyals"


def _paper(method: str, dataset: str, n_way: int | None, n_shot: int) -> dict:
    mini = dataset == "miniimagenet"
    if method == "protonet":
        if mini:
            return dict(n_way=n_way or (30 if n_shot == 1 else 20), n_shot=n_shot, n_query=15)
        return dict(n_way=n_way or 60, n_shot=n_shot, n_query=5)
    if method in MAML_FAMILY:
        n_way = n_way or 5
        settings = maml_paper_settings(dataset, n_way, n_shot)
        if not mini:
            settings.pop("rotate")  # train_maml rotates character sets by default
        n_query = MAML_PAPER_MINIIMAGENET_QUERIES if mini else n_shot
        return dict(n_way=n_way, n_shot=n_shot, n_query=n_query, **settings)
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


#: The ``"minimal"`` recipe: a prototypical network for the Omniglot challenge's minimal
#: setting (Lake et al. 2019), trained on ``images_background_small1``'s 5 alphabets alone
#: within 20 minutes on a 2-core CPU (13 measured); ``benchmarks/bench_minimal.py`` measures
#: what each choice adds on 20-way 1-shot episodes within one alphabet. In Python:
#: ``fsl.train_protonet(small1, **MINIMAL)``.
MINIMAL = dict(
    n_way=20,
    n_shot=1,
    n_query=5,
    steps=9000,
    halve_every=3000,
    hidden_channels=64,
    rotate_classes=True,
    reflect_classes=True,
    augment=1.0,
)
#: The number of views per test image with which the minimal recipe scores its network, the
#: image and 7 distortions (``fsl.with_test_views``, ``fslearn eval --test-views 8``).
MINIMAL_TEST_VIEWS = 8


def _minimal(method: str, dataset: str, n_way: int | None, n_shot: int) -> dict:
    if method != "protonet" or dataset != "omniglot-small":
        raise ValueError(
            f"the minimal recipe trains protonet on omniglot-small (the Omniglot challenge's "
            f"minimal setting); got {method} on {dataset}: use --recipe paper or quick"
        )
    return {**MINIMAL, "n_way": n_way or MINIMAL["n_way"], "n_shot": n_shot}


def recipe_settings(
    method: str, dataset: str, *, recipe: str = "paper", n_way: int | None = None, n_shot: int = 1
) -> dict:
    """Keyword arguments of ``METHODS[method]``'s training function for a named recipe.

    Args:
        method: one of :data:`METHODS`.
        dataset: ``"embedded"``, ``"omniglot"``, ``"omniglot-small"`` (character
            sets: Omniglot's settings) or ``"miniimagenet"``.
        recipe: ``"paper"`` — the published hyperparameters (the table above) at the
            recipes' full budgets (20 000 episodes, 60 000 meta-iterations, …);
            ``"quick"`` — Conv4-32 and a few hundred steps, a CPU-sized check that a
            run works end to end; ``"minimal"`` — :data:`MINIMAL`, protonet on
            ``omniglot-small`` only.
        n_way, n_shot: the training tasks, where the paper's settings depend on them.

    Returns:
        The method's fixed arguments (e.g. ``first_order=True``) and the recipe's.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {RECIPES}")
    if recipe == "paper":
        settings = _paper(method, dataset, n_way, n_shot)
    elif recipe == "minimal":
        settings = _minimal(method, dataset, n_way, n_shot)
    else:
        settings = _quick(method, n_way, n_shot)
    return {**METHODS[method][1], **settings}
