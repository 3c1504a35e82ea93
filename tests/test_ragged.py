"""Classes of any size: a ragged FewShotDataset and every sampler drawing from each class's own
count, checked against plain torch and against counts over many draws."""

from collections import Counter

import pytest
import torch

import fslearn as fsl
from tests.synthetic import decode, labelled_dataset

COUNTS = [3, 7, 4, 12, 5, 9]


def ragged(counts=COUNTS, device="cpu") -> fsl.FewShotDataset:
    """Class c's image i has pixel (0, 0) = c and pixel (0, 1) = i, as labelled_dataset's."""
    classes = []
    for c, n in enumerate(counts):
        images = torch.zeros(n, 1, 6, 6, dtype=torch.uint8)
        images[:, 0, 0, 0] = c
        images[:, 0, 0, 1] = torch.arange(n, dtype=torch.uint8)
        classes.append(images)
    names = [f"g{c % 2}/c{c}" for c in range(len(counts))]
    dataset = fsl.FewShotDataset.from_classes(
        classes, names, [n.split("/")[0] for n in names], "ragged"
    )
    return dataset.to(device)


def test_ragged_dataset_keeps_every_image_of_every_class():
    dataset = ragged()
    assert dataset.is_ragged and dataset.count_list == COUNTS and len(dataset) == sum(COUNTS)
    assert dataset.counts.tolist() == COUNTS
    assert dataset.offsets.tolist() == [0, 3, 10, 14, 26, 31]
    assert (dataset.min_per_class, dataset.max_per_class) == (3, 12)
    for c, n in enumerate(COUNTS):
        images = dataset.class_images(c)
        assert images[:, 0, 0, 0].tolist() == [c] * n
        assert images[:, 0, 0, 1].tolist() == list(range(n))
    x, y = dataset.flat()
    assert Counter(y.tolist()) == dict(enumerate(COUNTS))
    assert torch.equal(decode(x)[0], y)
    assert "3 to 12 images each" in repr(dataset)


def test_ragged_dataset_has_no_single_n_per_class():
    dataset = ragged()
    with pytest.raises(ValueError, match=r"3 to 12 images \(class 'g0/c0' has 3\).*\.counts"):
        _ = dataset.n_per_class
    with pytest.raises(ValueError, match=r"\.flat_images with \.offsets and \.counts"):
        _ = dataset.images


def test_equal_sizes_in_the_flat_form_are_the_equal_dataset():
    equal = labelled_dataset(n_classes=5, n_per_class=4)
    flat = fsl.FewShotDataset(
        equal.images.flatten(0, 1), equal.class_names, equal.groups, "flat", counts=[4] * 5
    )
    assert not flat.is_ragged and flat.n_per_class == 4
    assert torch.equal(flat.images, equal.images)
    a = fsl.EpisodeSampler(equal, 3, 1, 2, seed=7).sample_tasks(20)
    b = fsl.EpisodeSampler(flat, 3, 1, 2, seed=7).sample_tasks(20)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)


def test_equal_sets_draw_what_they_drew_before():
    """The rows of an equal set come from random_subsets over n_per_class, as before the ragged
    form: the same seed gives the same episodes."""
    dataset = labelled_dataset()
    episode = fsl.EpisodeSampler(dataset, 4, 2, 3, seed=5).sample_tasks(6)
    generator = torch.Generator().manual_seed(5)
    classes = torch.rand(6, 12, generator=generator).topk(4, dim=-1).indices
    instances = torch.rand(6, 4, 10, generator=generator).topk(5, dim=-1).indices
    expected = fsl.to_float(dataset.images[classes[..., None], instances])
    assert torch.equal(episode.support_x, expected[:, :, :2].flatten(1, 2))
    assert torch.equal(episode.query_x, expected[:, :, 2:].flatten(1, 2))


@pytest.mark.parametrize("counts", [[3, 7, 4], [5, 5, 40]])
def test_episodes_draw_each_image_of_a_class_equally_often(counts):
    dataset = ragged(counts)
    episodes = fsl.EpisodeSampler(dataset, 2, 1, 2, seed=0).sample_tasks(6000)
    x = torch.cat([episodes.support_x, episodes.query_x], dim=1)
    classes, instances = decode(x)
    assert (instances < torch.tensor(counts)[classes]).all()  # never past a class's count
    # Within one task and class, the 3 images are distinct.
    per_class = torch.cat(
        [
            instances[:, :2].reshape(-1, 2, 1),
            instances[:, 2:].reshape(-1, 2, 2),
        ],
        dim=2,
    )
    assert (per_class.sort(-1).values.diff(dim=-1) > 0).all()
    # The labels say which class: support label l holds episodes.classes[:, l].
    assert torch.equal(classes[:, :2], episodes.classes)
    seen = Counter(zip(classes.flatten().tolist(), instances.flatten().tolist(), strict=True))
    for c, n in enumerate(counts):
        draws = [seen[(c, i)] for i in range(n)]
        expected = sum(draws) / n
        assert max(abs(d - expected) for d in draws) < 5 * expected**0.5, (c, draws)
    drawn_classes = Counter(episodes.classes.flatten().tolist())
    assert max(drawn_classes.values()) - min(drawn_classes.values()) < 0.1 * 4000


def test_episode_set_pair_and_pk_samplers_stay_inside_each_class():
    dataset = ragged()
    test_set = fsl.EpisodeSet(dataset, 3, 1, 2, n_episodes=300, seed=1)
    assert (test_set.instances < dataset.counts[test_set.classes][..., None]).all()
    episode = test_set[4]
    assert torch.equal(decode(episode.support_x)[0], test_set.classes[4])
    x1, x2, same = fsl.PairSampler(dataset, seed=0).sample(4000)
    (c1, i1), (c2, i2) = decode(x1), decode(x2)
    counts = torch.tensor(COUNTS)
    assert (i1 < counts[c1]).all() and (i2 < counts[c2]).all()
    assert torch.equal(c1 == c2, same.bool())
    assert (i1[same.bool()] != i2[same.bool()]).all()  # two different images of the class
    assert {i for c, i in zip(c2.tolist(), i2.tolist(), strict=True) if c == 3} == set(range(12))
    x, y = fsl.PKSampler(dataset, n_classes=4, n_per_class=3, seed=0).sample()
    classes, instances = decode(x)
    assert (instances < counts[classes]).all()
    assert all(len(set(classes[y == label].tolist())) == 1 for label in range(4))


def test_select_rotate_and_mirror_keep_each_class_and_its_count():
    dataset = ragged()
    chosen = dataset.select([3, 0])
    assert chosen.count_list == [12, 3]
    assert torch.equal(chosen.class_images(0), dataset.class_images(3))
    assert dataset.select_groups("g1").count_list == [7, 12, 9]
    square = fsl.with_reflections(fsl.with_rotations(dataset, (0, 90)))
    assert square.count_list == COUNTS * 4
    assert torch.equal(
        square.class_images(len(COUNTS) + 2), torch.rot90(dataset.class_images(2), 1, (-2, -1))
    )
    assert torch.equal(square.class_images(2 * len(COUNTS) + 1), dataset.class_images(1).flip(-1))


def test_a_class_too_small_for_the_episode_is_named():
    dataset = ragged()
    with pytest.raises(
        ValueError,
        match=r"1 \+ 3 = 4 images per class, but 1 of ragged's .*"
        r"'g0/c0' \(3\); use n_shot \+ n_query ≤ 3, or leave those classes out",
    ):
        fsl.EpisodeSampler(dataset, 2, 1, 3)
    with pytest.raises(ValueError, match=r"'g0/c0' \(3\), 'g0/c2' \(4\)"):
        fsl.EpisodeSet(dataset, 2, 1, 4)
    with pytest.raises(ValueError, match=r"n_per_class=4 .*'g0/c0' \(3\)"):
        fsl.PKSampler(dataset, 2, 4)


@pytest.mark.parametrize(
    "counts,match",
    [
        ([2, 2], "counts add up to 4 images but images holds 5"),
        ([5, 0], r"classes \[1\] have counts \[0\]"),
        ([2.5, 2.5], "counts must be a 1-D list of integers"),
    ],
)
def test_bad_counts_are_named(counts, match):
    with pytest.raises(ValueError, match=match):
        fsl.FewShotDataset(
            torch.zeros(5, 1, 2, 2, dtype=torch.uint8), ["a", "b"], ["g", "g"], counts=counts
        )


def test_from_classes_names_a_class_of_another_shape():
    with pytest.raises(ValueError, match=r"class 'b' has images of shape \(2, 1, 3, 3\)"):
        fsl.FewShotDataset.from_classes(
            [
                torch.zeros(2, 1, 2, 2, dtype=torch.uint8),
                torch.zeros(2, 1, 3, 3, dtype=torch.uint8),
            ],
            ["a", "b"],
            ["g", "g"],
        )


def test_transform_gets_the_samplers_generator_and_resumes_exactly():
    calls = []

    def shift(x, generator):
        calls.append(x.shape)
        return (x + torch.rand(len(x), 1, 1, 1, generator=generator)).clamp(0, 1)

    sampler = fsl.EpisodeSampler(ragged(), 3, 1, 2, seed=3, transform=shift)
    state = sampler.state_dict()
    first = sampler.sample_tasks(2)
    assert calls == [(6, 1, 6, 6), (12, 1, 6, 6)]  # support then query, as one batch each
    plain = fsl.EpisodeSampler(ragged(), 3, 1, 2, seed=3).sample_tasks(2)
    assert torch.equal(first.classes, plain.classes)
    assert not torch.equal(first.support_x, plain.support_x)
    sampler.load_state_dict(state)
    assert torch.equal(sampler.sample_tasks(2).query_x, first.query_x)


def test_a_transform_that_changes_the_shape_is_refused():
    sampler = fsl.EpisodeSampler(ragged(), 2, 1, 1, transform=lambda x: x[..., :4, :4])
    with pytest.raises(
        ValueError,
        match=r"turned a batch of shape \(2, 1, 6, 6\) into "
        r"\(2, 1, 4, 4\); a transform must keep the batch's shape",
    ):
        sampler.sample()
    with pytest.raises(TypeError, match="transform must be a callable"):
        fsl.EpisodeSampler(ragged(), 2, 1, 1, transform="flip")


def test_sample_with_n_tasks_is_the_deprecated_sample_tasks():
    a = fsl.EpisodeSampler(ragged(), 2, 1, 1, seed=0)
    b = fsl.EpisodeSampler(ragged(), 2, 1, 1, seed=0)
    with pytest.warns(FutureWarning, match=r"use sample_tasks\(n_tasks\)"):
        old = a.sample(n_tasks=3)
    assert torch.equal(old.support_x, b.sample_tasks(3).support_x)
    assert b.sample_tasks(1).support_x.shape == (1, 2, 1, 6, 6)
    assert b.sample().support_x.shape == (2, 1, 6, 6)


def test_episodes_sent_to_another_device_are_the_same(device):
    on_host = fsl.EpisodeSampler(ragged(), 3, 1, 2, seed=2, device=device).sample_tasks(5)
    there = fsl.EpisodeSampler(ragged(device=device), 3, 1, 2, seed=2).sample_tasks(5)
    assert on_host.support_x.device.type == device.type
    if device.type == "cpu":
        assert torch.equal(on_host.support_x, there.support_x)
    else:  # another generator draws the indices there; the episodes are right either way
        classes, instances = decode(on_host.query_x.cpu())
        assert (instances < torch.tensor(COUNTS)[classes]).all()


def test_every_sampler_sends_its_draws_where_asked(device):
    """A set kept on the host, the draws on ``device``: the same draws as on the host."""
    dataset = ragged()
    episodes = fsl.EpisodeSet(dataset, 3, 1, 2, n_episodes=10, seed=0, device=device)
    assert episodes.batch(0, 4).query_x.device.type == device.type
    assert torch.equal(
        episodes.batch(0, 4).query_x.cpu(),
        fsl.EpisodeSet(dataset, 3, 1, 2, n_episodes=10, seed=0).batch(0, 4).query_x,
    )
    pairs = fsl.PairSampler(dataset, seed=1, device=device).sample(8)
    assert all(t.device.type == device.type for t in pairs)
    on_host = fsl.PairSampler(dataset, seed=1).sample(8)
    assert all(torch.equal(a.cpu(), b) for a, b in zip(pairs, on_host, strict=True))
    x, y = fsl.PKSampler(dataset, 3, 2, seed=1, device=device).sample()
    x_host, y_host = fsl.PKSampler(dataset, 3, 2, seed=1).sample()
    assert torch.equal(x.cpu(), x_host) and torch.equal(y.cpu(), y_host)


def test_a_set_too_large_for_the_device_stays_on_the_host(monkeypatch):
    from fslearn.sampling import transfer

    dataset = ragged()  # 40 images of 36 bytes: 1 440 bytes
    monkeypatch.setattr(transfer, "available_bytes", lambda device: 2_000)
    assert not transfer.fits_on(dataset, torch.device("cuda"))  # more than half of 2 000
    monkeypatch.setattr(transfer, "available_bytes", lambda device: 3_000)
    assert transfer.fits_on(dataset, torch.device("cuda"))
    monkeypatch.setattr(transfer, "available_bytes", lambda device: None)
    assert transfer.fits_on(dataset, torch.device("cuda"))  # unknown: move it, as before
    assert transfer.fits_on(dataset, torch.device("cpu"))  # there already


def test_recipes_leave_a_set_that_does_not_fit_where_it_is(monkeypatch):
    from fslearn.training import skeleton

    dataset = ragged()
    monkeypatch.setattr(skeleton, "fits_on", lambda train, device: False)
    _, learner, train = skeleton.setup_recipe(
        "protonet", dataset, 8, "cpu", 0, distance="euclidean"
    )
    assert train is dataset  # not copied: the sampler sends each draw over
    monkeypatch.setattr(skeleton, "fits_on", lambda train, device: True)
    assert (
        skeleton.setup_recipe("protonet", dataset, 8, "cpu", 0, distance="euclidean")[2]
        is not dataset
    )


@pytest.mark.parametrize("recipe", ["protonet", "maml"])
def test_recipes_transform_training_episodes_only(recipe, tmp_path):
    seen = []

    def darken(x, generator):
        seen.append(len(x))
        return x * torch.rand(len(x), 1, 1, 1, generator=generator)

    train = fsl.FewShotDataset.from_classes(
        [torch.randint(0, 255, (n, 1, 16, 16), dtype=torch.uint8) for n in (3, 5, 4, 6)],
        ["a", "b", "c", "d"],
        ["g"] * 4,
    )
    val = fsl.EpisodeSet(train, 2, 1, 1, n_episodes=2)
    options = dict(
        n_way=2,
        n_shot=1,
        n_query=1,
        steps=2,
        hidden_channels=4,
        transform=darken,
        val_episodes=val,
        eval_every=1,
        progress=False,
        checkpoint=fsl.Checkpoint(tmp_path / "run.pt"),
    )
    if recipe == "maml":
        fsl.train_maml(train, meta_batch=2, **options)
    else:
        fsl.train_protonet(train, **options)
    # Support, then query, each one batch (of both tasks, for MAML's meta-batch of 2), at
    # each of the 2 training steps, and none for the validation episodes.
    assert seen == [4 if recipe == "maml" else 2] * 4
    config = fsl.read_checkpoint(tmp_path / "run.pt")["config"]
    assert config["transform"].startswith("<function test_recipes_transform_training")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's sync debug mode needs a GPU")
def test_sampling_on_the_gpu_never_waits_for_the_host():
    """Ragged or not, augmented or not, every sampler's draw is queued work alone: CUDA's
    debug mode raises on any call that would make the host wait for the device."""
    ragged_set = ragged(device="cuda")
    equal_set = labelled_dataset(device="cuda")
    samplers = [
        fsl.EpisodeSampler(ragged_set, 3, 1, 2, seed=0, transform=fsl.Augment(), augment=0.5),
        fsl.EpisodeSampler(equal_set, 3, 1, 2, seed=0, rotate=True),
    ]
    for sampler in samplers:
        sampler.sample_tasks(4)  # warm-up: the first call may allocate and load kernels
    pairs, batches = fsl.PairSampler(ragged_set), fsl.PKSampler(ragged_set, 3, 2)
    pairs.sample(8), batches.sample()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for sampler in samplers:
            sampler.sample_tasks(4)
        pairs.sample(8)
        batches.sample()
    finally:
        torch.cuda.set_sync_debug_mode("default")
