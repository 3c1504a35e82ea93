"""Omniglot's protocols: which characters train and which test, as the papers split them.

Lake et al. keep the 30 background alphabets for training and the 20 evaluation
alphabets for testing; Vinyals et al. (and Snell et al.) pool all 1 623 characters
and draw 1 200 for training, each rotation a class of its own; Finn et al. (MAML)
draw 1 100 / 100 / 1 623 − 1 200 and rotate per task instead.
"""

from __future__ import annotations

import torch

from ..common import check_positive_int
from .dataset import FewShotDataset
from .symmetries import with_rotations

# Characters (train, val, test) of each protocol, out of Omniglot's 1 623.
N_CHARACTERS = 1623
PROTOCOL_SIZES = {"vinyals": (1200, 0, 423), "maml": (1100, 100, 423)}
PROTOCOLS = ("lake", *PROTOCOL_SIZES)
SPLIT_NAMES = ("train", "val", "test")


def _protocol_sizes(protocol: str, n: int, sizes) -> tuple[int, int, int]:
    if sizes is None:
        # The paper's split fractions, exact for Omniglot's 1 623 characters.
        train, val, _ = (round(n * s / N_CHARACTERS) for s in PROTOCOL_SIZES[protocol])
        sizes = (train, val, n - train - val)
    given = sizes
    try:
        # int() would round 10.7 down without a word: a count is an integer or an error.
        sizes = tuple(check_positive_int("sizes", s, minimum=0) for s in given)
    except (TypeError, ValueError):  # not a sequence, or not counts
        sizes = None
    if sizes is None or len(sizes) != 3 or sum(sizes) > n:
        shown = given if sizes is None else sizes
        raise ValueError(
            f"sizes must be 3 counts (train, val, test) summing to at most {n} characters; got "
            f"{shown}"
        )
    needs_val = PROTOCOL_SIZES[protocol][1] > 0
    if sizes[0] < 1 or sizes[2] < 1 or (needs_val and sizes[1] < 1):
        raise ValueError(
            f"a pool of {n} characters is too small for the {protocol!r} protocol: it gives "
            f"(train, val, test) = {sizes}. Load more alphabets or pass sizes=(train, val, test)"
        )
    return sizes


def omniglot_split(
    background: FewShotDataset,
    evaluation: FewShotDataset,
    protocol: str,
    split: str,
    seed: int = 0,
    sizes=None,
) -> FewShotDataset:
    """One split of Omniglot under a published protocol (say which one a number uses).

    ``"lake"`` (Lake et al. 2015): the background alphabets train, the evaluation
    alphabets test; there is no validation split and no randomness.

    ``"vinyals"`` (Vinyals et al. 2016, Snell et al. 2017): all characters of both
    datasets are pooled (background first) and shuffled with ``seed``; the first 1 200
    train, the other 423 test. Every class is then rotated by 0, 90, 180 and 270 degrees,
    each rotation a class of its own (:func:`~fslearn.with_rotations`): 4 800
    training classes. The test classes are rotated too (1 692 classes), as Snell et al.
    test on rotated classes. Vinyals et al.'s own character list is not published with
    the data, so the characters differ from theirs; the sizes do not.

    ``"maml"`` (Finn et al. 2017): the same shuffled pool split 1 100 / 100 / 423, with
    no rotation classes: MAML instead rotates each class of an episode by a random
    multiple of 90 degrees when the episode is sampled, which the episode sampler does.

    Args:
        background: the ``images_background`` dataset (or any training pool).
        evaluation: the ``images_evaluation`` dataset (or any test pool).
        protocol: ``"lake"``, ``"vinyals"`` or ``"maml"``.
        split: ``"train"``, ``"val"`` (``"maml"`` only) or ``"test"``.
        seed: the seed of the shuffle (``"vinyals"`` and ``"maml"``).
        sizes: ``(train, val, test)`` character counts; default the paper's, scaled to the
            pool's size (exactly the paper's for all 1 623 characters), so that small
            pools work too.

    Returns:
        The split's classes; with ``"vinyals"``, ``4 × n_characters`` classes, named
        ``"Alphabet/characterNN@rot90"`` and so on.

    Raises:
        ValueError: unknown protocol or split, overlapping pools, or a pool too small.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")
    seed = check_positive_int("seed", seed, minimum=0, why="the seed of the shuffle")
    if seed >= 2**64:
        raise ValueError(f"seed must be below 2**64 (torch's generators hold 64 bits); got {seed}")
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}; got {split!r}")
    if split == "val" and protocol != "maml":
        raise ValueError(
            f"the {protocol!r} protocol has no validation split; use protocol='maml' or hold out "
            f"some training classes yourself"
        )
    shared = sorted(set(background.class_names) & set(evaluation.class_names))
    if shared:
        raise ValueError(
            f"{background.name} and {evaluation.name} share {len(shared)} classes (e.g. "
            f"{shared[:3]}); "
            f"pool disjoint datasets (small1 and small2 both hold Greek and Latin)"
        )
    name = f"omniglot {protocol} {split}"
    if protocol == "lake":
        if sizes is not None:
            raise ValueError("the 'lake' protocol uses the datasets as given; it takes no sizes")
        chosen = background if split == "train" else evaluation
        return FewShotDataset(chosen.images, chosen.class_names, chosen.groups, name)
    if background.images.shape[1:] != evaluation.images.shape[1:]:
        raise ValueError(
            f"cannot pool images of shape {tuple(background.images.shape[1:])} and "
            f"{tuple(evaluation.images.shape[1:])}; load both at the same image_size"
        )
    n = background.n_classes + evaluation.n_classes
    train, val, test = _protocol_sizes(protocol, n, sizes)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    start = {"train": 0, "val": train, "test": train + val}[split]
    chosen = order[start : start + {"train": train, "val": val, "test": test}[split]]
    pool = FewShotDataset(
        torch.cat([background.images, evaluation.images.to(background.device)]),
        background.class_names + evaluation.class_names,
        background.groups + evaluation.groups,
    ).select(chosen)
    if protocol == "vinyals":
        pool = with_rotations(pool)
    return FewShotDataset(pool.images, pool.class_names, pool.groups, f"{name} (seed {seed})")
