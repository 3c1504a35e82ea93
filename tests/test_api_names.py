"""One name per knob: the public API spells each setting one way, and the names it replaced
keep working for one release, each with a FutureWarning that names the new spelling."""

import inspect
import warnings

import pytest
import torch
from torch import nn

import fslearn as fsl
from fslearn.book import glue

from synthetic import pattern_dataset

IMAGE = (1, 16, 16)
N_WAY = 3

#: Each concept's one name, and the names it had before.
CONCEPTS = {
    "inner_lr": ("lr", "finetune_lr"),
    "test_steps": ("steps", "finetune_steps"),
    "test_adapt": ("whole",),
}
GRADIENT_LEARNERS = [fsl.GradientLearner, fsl.MAML, fsl.FineTune, fsl.BaselinePP]


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def backbone() -> nn.Module:
    return fsl.Conv4(1, 4, seed=0).double()


def task(seed=0):
    episode = fsl.EpisodeSet(pattern_dataset(), N_WAY, 2, 3, n_episodes=1, seed=seed)[0]
    return (episode.support_x.double(), episode.support_y, episode.query_x.double())


@pytest.mark.parametrize("learner", GRADIENT_LEARNERS, ids=lambda c: c.__name__)
def test_gradient_learners_name_the_adaptation_alike(learner):
    names = parameters(learner)
    for name, old_names in CONCEPTS.items():
        assert name in names, (learner.__name__, name)
        assert not set(old_names) & set(names), (learner.__name__, old_names)


def test_load_learner_names_the_adaptation_as_the_learners_do():
    names = parameters(fsl.load_learner)
    assert {"inner_lr", "test_steps"} <= set(names)
    assert not {"finetune_lr", "finetune_steps", "lr", "steps"} & set(names)
    # The recipe that trains MAML spells its inner loop as MAML does.
    assert {"inner_lr", "inner_steps", "test_steps"} <= set(parameters(fsl.train_maml))


def test_predict_takes_params_first_as_functional_call_does():
    assert parameters(fsl.GradientLearner.predict)[1:3] == ["params", "query_x"]


def public_callables():
    for name in fsl.__all__:
        obj = getattr(fsl, name)
        if inspect.isclass(obj):
            yield name, obj
            for member, function in inspect.getmembers(obj, inspect.isfunction):
                if not member.startswith("_"):
                    yield f"{name}.{member}", function
        elif callable(obj):
            yield name, obj


def test_n_query_defaults_to_15_everywhere():
    seen = {}
    for name, function in public_callables():
        try:
            parameter = inspect.signature(function).parameters.get("n_query")
        except (TypeError, ValueError):  # builtins without a signature
            continue
        if parameter is not None:
            seen[name] = parameter.default
    # plot_episode's n_query is how many of an episode's queries to draw (None: all of them),
    # not a task's shape.
    assert seen.pop("plot_episode") is None
    assert {"EpisodeSampler", "EpisodeSet", "train_maml", "train_protonet"} <= set(seen)
    assert "evaluate_within_groups" in seen
    assert {name: default for name, default in seen.items() if default != 15} == {}


def renamed(match: str):
    return pytest.warns(FutureWarning, match=match)


@pytest.mark.parametrize("kind", [fsl.FineTune, fsl.BaselinePP], ids=lambda c: c.__name__)
def test_old_adaptation_names_warn_and_adapt_the_same(kind):
    support_x, support_y, query_x = task()
    new = kind(backbone(), IMAGE, N_WAY, inner_lr=0.3, test_steps=4)
    name = kind.__name__
    with (
        renamed(rf"{name}\(lr=…\) is deprecated .* 0\.3\.0; use {name}\(inner_lr=…\)"),
        renamed(rf"{name}\(steps=…\) is deprecated .*; use {name}\(test_steps=…\)"),
    ):
        old = kind(backbone(), IMAGE, N_WAY, lr=0.3, steps=4)
    assert (old.inner_lr, old.test_steps) == (0.3, 4)
    expected = new(support_x, support_y, query_x)
    assert not torch.allclose(expected, expected[:, :1])  # it did adapt: the classes differ
    torch.testing.assert_close(old(support_x, support_y, query_x), expected, rtol=0, atol=0)


def test_whole_warns_and_adapts_the_whole_network():
    with renamed(r"FineTune\(whole=True\) is deprecated.*use FineTune\(test_adapt='whole'\)"):
        old = fsl.FineTune(backbone(), IMAGE, N_WAY, whole=True, test_steps=2)
    new = fsl.FineTune(backbone(), IMAGE, N_WAY, test_adapt="whole", test_steps=2)
    assert old.test_adapt == "whole"
    torch.testing.assert_close(old(*task()), new(*task()), rtol=0, atol=0)


def test_an_old_name_with_its_new_name_is_refused():
    with pytest.raises(TypeError, match=r"FineTune\(\) got both lr= and inner_lr=; .* alone"):
        fsl.FineTune(backbone(), IMAGE, N_WAY, lr=0.1, inner_lr=0.2)
    with pytest.raises(TypeError, match=r"got both whole= and test_adapt="):
        fsl.FineTune(backbone(), IMAGE, N_WAY, whole=True, test_adapt="head")
    with pytest.raises(TypeError, match="unexpected keyword argument 'inner_lrr'"):
        fsl.FineTune(backbone(), IMAGE, N_WAY, inner_lrr=0.2)


def test_the_warning_points_at_the_caller():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fsl.FineTune(backbone(), IMAGE, N_WAY, steps=1)
        fsl.FineTune(backbone(), IMAGE, N_WAY, whole=False)
        fsl.glue  # noqa: B018
    assert [w.filename for w in caught] == [__file__] * 3


def test_predict_in_the_old_order_warns_and_predicts_the_same():
    support_x, support_y, query_x = task()
    maml = fsl.MAML(fsl.maml_classifier(N_WAY, IMAGE, 4, seed=0).double(), test_steps=2)
    params = maml.adapt(support_x, support_y)
    # The oracle: the adapted parameters applied to the queries by torch.func itself, batch
    # norm normalising the queries by their own statistics (test_bn="transductive").
    expected = torch.func.functional_call(maml.model, params, (query_x,))
    torch.testing.assert_close(maml.predict(params, query_x), expected)
    with renamed(r"predict\(query_x, params\) is deprecated.*use predict\(params, query_x\)"):
        old = maml.predict(query_x, params)
    torch.testing.assert_close(old, expected, rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"predict takes the parameters from adapt\(\) first"):
        maml.predict(query_x, query_x)


def checkpoint(tmp_path, method: str):
    path = tmp_path / f"{method}.pt"
    data = pattern_dataset(n_classes=6)
    options = dict(hidden_channels=4, progress=False, checkpoint=fsl.Checkpoint(path))
    if method == "pretrain":
        fsl.train_pretrained(data, epochs=1, batch_size=20, **options)
    elif method == "maml":
        fsl.train_maml(data, n_way=N_WAY, n_query=2, meta_batch=2, steps=1, **options)
    else:
        fsl.train_protonet(data, n_way=N_WAY, n_shot=1, n_query=2, steps=1, **options)
    return path


def test_load_learner_old_names_warn_and_give_the_same_learner(tmp_path):
    path = checkpoint(tmp_path, "pretrain")
    new = fsl.load_learner(path, n_way=N_WAY, inner_lr=0.2, test_steps=3)
    with (
        renamed(r"load_learner\(finetune_lr=…\) is deprecated.*load_learner\(inner_lr=…\)"),
        renamed(r"load_learner\(finetune_steps=…\) .*load_learner\(test_steps=…\)"),
    ):
        old = fsl.load_learner(path, n_way=N_WAY, finetune_lr=0.2, finetune_steps=3)
    assert (old.inner_lr, old.test_steps) == (new.inner_lr, new.test_steps) == (0.2, 3)
    x = torch.rand(N_WAY, *IMAGE)
    y = torch.arange(N_WAY)
    torch.testing.assert_close(old(x, y, x), new(x, y, x), rtol=0, atol=0)
    default = fsl.load_learner(path, n_way=N_WAY)
    assert (default.inner_lr, default.test_steps) == (0.5, 50)  # FineTune's own


def test_load_learner_sets_maml_s_adaptation_and_refuses_it_elsewhere(tmp_path):
    path = checkpoint(tmp_path, "maml")
    saved = fsl.load_learner(path)
    assert (saved.inner_lr, saved.test_steps) == (0.4, 10)  # the checkpoint's
    changed = fsl.load_learner(path, inner_lr=0.1, test_steps=2)
    assert (changed.inner_lr, changed.test_steps) == (0.1, 2)
    protonet = checkpoint(tmp_path, "protonet")
    refused = r"is a protonet learner, which takes no gradient steps .* drop test_steps="
    with pytest.raises(ValueError, match=refused):
        fsl.load_learner(protonet, test_steps=2)


def test_glue_left_the_top_level_and_still_works_there_with_a_warning():
    assert "glue" not in fsl.__all__
    with renamed(r"fslearn\.glue is deprecated.*use fslearn\.book\.glue"):
        old = fsl.glue
    assert old is glue
    with pytest.raises(AttributeError, match="has no attribute 'gleu'"):
        fsl.gleu  # noqa: B018


def colour(images: torch.Tensor) -> fsl.FewShotDataset:
    n_classes = images.shape[0]
    names = [f"class{i}" for i in range(n_classes)]
    return fsl.FewShotDataset(images, names, ["all"] * n_classes, name="colour")


def maml_weights(data, **options):
    learner, _ = fsl.train_maml(
        data, n_way=N_WAY, n_query=2, meta_batch=2, steps=2, hidden_channels=4, progress=False,
        **options,
    )  # fmt: skip
    return learner.model.state_dict()


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_train_maml_rotates_characters_but_not_photos_by_default():
    characters = pattern_dataset(n_classes=6)
    assert characters.image_shape[0] == 1
    default = maml_weights(characters)
    assert same(default, maml_weights(characters, rotate=True))
    assert not same(default, maml_weights(characters, rotate=False))
    photos = colour(characters.images.expand(-1, -1, 3, -1, -1).contiguous())
    default = maml_weights(photos)
    assert same(default, maml_weights(photos, rotate=False))
    assert not same(default, maml_weights(photos, rotate=True))
