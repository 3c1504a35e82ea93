"""The edges of the knobs around test-time views, alphabets and classes made by symmetry: the
memory views take, checked before any work; the learners views accept, as their refusal says;
``--within-alphabet`` on a set without alphabets; rotations and reflections made once, of
square images; and the class counts of the classes a recipe trains on."""

import json
import os
import re
from pathlib import Path

import pytest
import torch

import fslearn as fsl
from fslearn.data.symmetries import training_classes
from fslearn.methods import views as views_module
from fslearn.methods.views import AVERAGEABLE_METHODS, check_views_memory, views_bytes
from fslearn.room import available_bytes
from fslearn.training.specs import SPEC_FIELDS, build_learner

from synthetic import fails, fslearn, labelled_dataset

SHAPE = (1, 28, 28)


@pytest.fixture
def backbone():
    return fsl.Conv4(1, 4, seed=0).eval()


def test_the_memory_check_names_the_value_the_estimate_and_the_largest_that_fits(
    backbone, monkeypatch
):
    room = views_bytes(backbone, SHAPE, 75, 10) + 5
    monkeypatch.setattr(views_module, "available_bytes", lambda device: room)
    assert views_bytes(backbone, SHAPE, 75, 11) > room  # so 10 is the largest that fits
    check_views_memory(backbone, SHAPE, 75, 10, "cpu")
    estimate = views_bytes(backbone, SHAPE, 75, 11) / 2**20
    for name, shown in [("views", "views=11"), ("--test-views", "--test-views 11")]:
        expected = (
            f"{shown} needs about {estimate:.0f} MiB to embed 75 images of shape (1, 28, 28) at "
            f"once, 11 views of each, but cpu has {room / 2**20:.0f} MiB available; the largest "
            f"{name} that fits is 10"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
            check_views_memory(backbone, SHAPE, 75, 11, "cpu", name)
    monkeypatch.setattr(views_module, "available_bytes", lambda device: 1000)
    with pytest.raises(ValueError, match="not even 2 views fit: test without views, or with"):
        check_views_memory(backbone, SHAPE, 75, 2, "cpu")


def test_averaged_views_refuse_views_that_do_not_fit_before_drawing_any(backbone, monkeypatch):
    room = views_bytes(backbone, SHAPE, 75, 20)
    monkeypatch.setattr(views_module, "available_bytes", lambda device: room)
    averaged = fsl.AveragedViews(backbone, views=50)
    state = averaged.generator.get_state()
    with pytest.raises(ValueError, match="views=50 needs about .* the largest views that fits is"):
        averaged(torch.rand(75, *SHAPE))
    assert torch.equal(averaged.generator.get_state(), state)  # no distortion drawn
    assert fsl.AveragedViews(backbone, views=20)(torch.rand(75, *SHAPE)).shape == (75, 4)


def test_views_are_embedded_one_at_a_time_into_the_mean_of_their_stack(backbone):
    x = torch.rand(6, *SHAPE)
    generator = torch.Generator().manual_seed(3)
    views = [x, *(fsl.random_affine(x, 1.0, generator) for _ in range(4))]
    with torch.no_grad():
        by_hand = torch.stack([backbone(view) for view in views]).mean(0)
        assert torch.equal(fsl.AveragedViews(backbone, 5, seed=3)(x), by_hand)


def test_the_estimate_bounds_what_the_views_take_on_a_gpu(device):
    if device.type != "cuda":
        pytest.skip("measured with torch.cuda.max_memory_allocated")
    backbone = fsl.Conv4(3, 64, seed=0).to(device).eval()
    x = torch.rand(75, 3, 84, 84, device=device)
    for views in (2, 64):
        averaged = fsl.AveragedViews(backbone, views)
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad():
            averaged(x)
        taken = torch.cuda.max_memory_allocated(device) - before
        estimate = views_bytes(backbone, (3, 84, 84), 75, views)
        assert taken <= estimate, (views, taken, estimate)


def test_available_memory_is_what_the_device_has_left(device):
    room = available_bytes(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        assert free <= room <= total
    elif Path("/proc/meminfo").exists():
        assert 0 < room <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:  # no MemAvailable to read: nothing is checked
        assert room is None
    assert available_bytes("meta") is None


def _spec(method: str) -> dict:
    options = {
        "protonet": {"distance": "euclidean"},
        "siamese": {"head": "koch"},
        "triplet": {"rule": "nearest-prototype"},
        "maml": dict(
            n_way=5, inner_lr=0.4, inner_steps=1, test_steps=1, first_order=False, anil=False
        ),
        "pretrain": {"n_classes": 10},
    }[method]
    return {"method": method, "image_shape": list(SHAPE), "hidden_channels": 4, **options}


@pytest.mark.parametrize("method", sorted(SPEC_FIELDS))
def test_test_views_take_exactly_the_learners_their_refusal_names(method):
    learner = build_learner(_spec(method), seed=0)
    if method == "pretrain":
        learner = fsl.FineTune(learner.backbone, SHAPE, 5)
    named = method in AVERAGEABLE_METHODS.replace(",", " ").split()
    if named:
        assert isinstance(fsl.with_test_views(learner, 2), type(learner))
    else:
        with pytest.raises(TypeError, match=re.escape(AVERAGEABLE_METHODS)):
            fsl.with_test_views(learner, 2)


def test_a_triplet_embedding_takes_views_by_either_rule(backbone):
    support_x, support_y = torch.rand(6, *SHAPE), torch.tensor([0, 0, 1, 1, 2, 2])
    query_x = torch.rand(4, *SHAPE)
    with torch.no_grad():
        by_prototype = fsl.with_test_views(
            fsl.NearestNeighbourLearner(backbone, "nearest-prototype"), 3, seed=1
        )
        same = fsl.with_test_views(fsl.NearestPrototype(backbone), 3, seed=1)
        assert torch.equal(
            by_prototype(support_x, support_y, query_x), same(support_x, support_y, query_x)
        )
        by_support = fsl.with_test_views(fsl.NearestNeighbourLearner(backbone), 3, seed=1)
        embed = fsl.AveragedViews(backbone, 3, seed=1)
        support, queries = embed(support_x), embed(query_x)  # in the learner's order
        distances = torch.cdist(queries, support) ** 2
        nearest = -torch.stack([distances[:, support_y == c].min(1).values for c in range(3)], 1)
        torch.testing.assert_close(by_support(support_x, support_y, query_x), nearest)


@pytest.fixture(scope="module")
def triplet_checkpoint(tmp_path_factory):
    """A triplet embedding classified by the nearest-prototype rule, trained for a step on
    the embedded set (whose test split fslearn eval then reads)."""
    path = tmp_path_factory.mktemp("triplet") / "checkpoint.pt"
    train = fsl.load_dataset("embedded", "train", progress=False).select(range(20))
    fsl.train_triplet(
        train,
        n_classes=4,
        n_per_class=2,
        steps=1,
        hidden_channels=4,
        rule="nearest-prototype",
        progress=False,
        checkpoint=fsl.Checkpoint(path),
    )
    return path


def test_eval_averages_the_views_of_a_triplet_checkpoint(triplet_checkpoint):
    args = ("eval", triplet_checkpoint, "--dataset", "embedded", "--episodes", 3)
    shown = json.loads(fslearn(*args, "--test-views", 2, "--device", "cpu", "--json").stdout)
    test = fsl.load_dataset("embedded", "test", progress=False)
    learner = fsl.load_learner(triplet_checkpoint, n_way=5, image_shape=SHAPE)
    episodes = fsl.EpisodeSet(test, 5, 1, 15, n_episodes=3, seed=0)
    by_hand = fsl.evaluate(fsl.with_test_views(learner, 2), episodes)
    assert shown["test_views"] == 2
    assert shown["accuracy"] == pytest.approx(by_hand.mean, abs=1e-6)
    # more views than any machine holds: refused before a single episode, naming the fix
    refused = fails(
        *args,
        "--test-views",
        10**12,
        match="fslearn eval: error: --test-views 1000000000000 needs about ",
    ).stderr
    assert re.search(r"GiB available; the largest --test-views that fits is \d+$", refused.strip())


ONE_GROUP = """
import fslearn as fsl
import fslearn.cli.eval_commands as commands
loaded = commands.dataset_for
def one_group(*args, **kwargs):
    test = loaded(*args, **kwargs)
    return fsl.FewShotDataset(test.images, test.class_names, ["test"] * test.n_classes, "flat")
commands.dataset_for = one_group
"""


def test_within_groups_refuses_a_set_without_groups(triplet_checkpoint):
    flat = labelled_dataset(n_classes=12)
    flat = fsl.FewShotDataset(flat.images, flat.class_names, ["all"] * 12, "flat")
    with pytest.raises(ValueError, match=r"^all 12 classes of flat are in one group \('all'\): "):
        fsl.evaluate_within_groups(lambda *a: None, flat, 5, 1)
    fails(
        "eval",
        triplet_checkpoint,
        "--dataset",
        "embedded",
        "--within-alphabet",
        prelude=ONE_GROUP,
        match=(
            "fslearn eval: error: --within-alphabet: embedded has no alphabets (the 659 classes "
            "of its test split are in one group, 'test'), so its accuracy within one alphabet "
            "would be its ordinary accuracy; leave --within-alphabet out"
        ),
    )


def test_rotations_and_reflections_are_made_once():
    dataset = labelled_dataset(n_classes=3, size=6)
    rotated, mirrored = fsl.with_rotations(dataset), fsl.with_reflections(dataset)
    with pytest.raises(ValueError, match=r"went through fsl.with_rotations already \(its class "):
        fsl.with_rotations(rotated)
    with pytest.raises(ValueError, match=r"went through fsl.with_reflections already"):
        fsl.with_reflections(mirrored)
    with pytest.raises(ValueError, match=r"with_reflections already"):
        fsl.with_reflections(fsl.with_rotations(mirrored))
    with pytest.raises(ValueError, match="with_rotations already"):
        training_classes(rotated, rotate_classes=True)  # Vinyals' split is rotated already
    # Either order: the 8 symmetries of the square, every class's images distinct from the rest.
    for eight in (fsl.with_rotations(mirrored), fsl.with_reflections(rotated)):
        assert eight.n_classes == 24 and len(set(eight.class_names)) == 24
        images = {tuple(c.flatten().tolist()) for c in eight.images.float()}
        assert len(images) == 24


def test_quarter_turns_need_square_images_and_half_turns_do_not():
    images = torch.randint(0, 256, (2, 3, 1, 6, 8), dtype=torch.uint8)
    wide = fsl.FewShotDataset(images, ["a", "b"], ["g", "g"], "wide")
    with pytest.raises(
        ValueError, match=r"rotating by 90 degrees turns wide's 6×8 images into 8×6 ones"
    ):
        fsl.with_rotations(wide)
    halves = fsl.with_rotations(wide, angles=(0, 180))
    assert torch.equal(halves.images[2:], images.flip(-1, -2))


TEN_CLASSES = """
import torch
import fslearn as fsl
import fslearn.cli.train_command as command
def ten_classes(name, split, **options):
    images = torch.zeros(10, 20, 1, 28, 28, dtype=torch.uint8)
    return fsl.FewShotDataset(images, [f"a/c{i}" for i in range(10)], ["a"] * 10, f"ten {split}")
command.dataset_for = ten_classes
"""


def test_class_counts_count_the_classes_the_recipe_trains_on(tmp_path):
    ten = labelled_dataset(n_classes=10)
    assert training_classes(ten, rotate_classes=True, reflect_classes=True).n_classes == 80
    fails(
        *("train", "protonet", "--dataset", "omniglot-small", "--recipe", "minimal"),
        *("--n-way", 81, "--out", tmp_path / "run", "--device", "cpu"),
        prelude=TEN_CLASSES,
        match=(
            "cannot be drawn: n_way=81 but ten train and its mirror image ×4 rotations has only "
            "80 classes; use n_way ≤ 80 (--n-way, --n-shot, --n-query)"
        ),
    )
    assert not (tmp_path / "run").exists()
