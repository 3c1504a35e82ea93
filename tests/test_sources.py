"""The book's page of sources and the library agree on every number quoted from the papers."""

import inspect
import re
from pathlib import Path

import pytest
from torch import nn

import fslearn as fsl
from fslearn.data import embedded, lake_runs, omniglot_splits
from fslearn.models import resnet12
from fslearn.training import presets

PAGE = Path(__file__).resolve().parents[1] / "book" / "sources.md"
ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+) \|")


def page_values(text: str) -> dict[str, str]:
    """``key → value`` of every table row whose first cell is a key in backquotes."""
    values = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            key, value = match.group(1), match.group(2).strip()
            assert key not in values, f"{key} is listed twice"
            values[key] = value
    return values


def number(value: str) -> float:
    """``"1 623"`` → 1623.0, ``"0.4"`` → 0.4."""
    return float(value.replace(" ", ""))


def accuracy(value: str) -> tuple[float, float | None]:
    """``"98.7 ± 0.4"`` → (98.7, 0.4); ``"96.0"`` → (96.0, None)."""
    mean, _, ci = value.partition("±")
    return number(mean), number(ci) if ci else None


@pytest.fixture(scope="module")
def page():
    return page_values(PAGE.read_text())


def test_the_page_parses(page):
    assert len(page) > 80
    assert page_values("| `a.b` | 1 | x | y |\n| key | value |\n") == {"a.b": "1"}
    assert accuracy("48.70 ± 1.84") == (48.7, 1.84) and accuracy("98.8") == (98.8, None)


def test_published_accuracies_are_the_pages(page):
    names = {f"accuracy.{m}.{d}.{w}w{s}s": (m, d, w, s) for m, d, w, s in presets.PUBLISHED}
    for key, cell in names.items():
        assert key in page, f"presets.PUBLISHED has {cell}, which book/sources.md lacks"
        assert presets.PUBLISHED[cell] == accuracy(page[key]), key
    # every accuracy the page gives for a method the recipes train is in PUBLISHED
    for key in page:
        if key.startswith("accuracy.") and key.split(".")[1] in presets.METHODS:
            assert key in names, f"book/sources.md has {key}, which presets.PUBLISHED lacks"


def test_the_presets_docstring_prints_published():
    rows = {
        "MAML (Finn et al. 2017, table 1)": "maml",
        "first-order MAML (same)": "fomaml",
        "ProtoNet (Snell et al. 2017)": "protonet",
        "Siamese (Koch et al. 2015) [*]": "siamese",
    }
    columns = [("omniglot", 5, 1), ("omniglot", 5, 5), ("omniglot", 20, 1), ("omniglot", 20, 5)]
    columns += [("miniimagenet", 5, 1), ("miniimagenet", 5, 5)]
    lines = presets.__doc__.splitlines()
    for start, method in rows.items():
        (line,) = [line for line in lines if line.startswith(start)]
        # the cells start where the table's header columns start
        cells = [line[i : i + 10].strip() for i in (34, 44, 54, 64, 74, 88)]
        for cell, column in zip(cells, columns):
            expected = presets.PUBLISHED.get((method, *column))
            if expected is None:
                assert cell == "", (method, column)
            else:
                assert accuracy(cell.replace("±", " ± ")) == expected, (method, column)


def recipe(method, dataset, n_way, n_shot):
    """The "paper" recipe's settings with the training function's defaults under them."""
    function, _ = presets.METHODS[method]
    defaults = {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **presets.recipe_settings(method, dataset, n_way=n_way, n_shot=n_shot)}


MAML_CONFIGS = {
    "omniglot-5way": ("omniglot", 5),
    "omniglot-20way": ("omniglot", 20),
    "miniimagenet-1shot": ("miniimagenet", 5),
}


@pytest.mark.parametrize("method", presets.MAML_FAMILY)
@pytest.mark.parametrize("config", MAML_CONFIGS)
@pytest.mark.parametrize("n_shot", [1, 5])
def test_maml_paper_recipe_is_the_pages(page, method, config, n_shot):
    dataset, n_way = MAML_CONFIGS[config]
    if config == "miniimagenet-1shot" and n_shot == 5:
        config = "miniimagenet-5shot"
    settings = recipe(method, dataset, n_way, n_shot)
    base = "miniimagenet-1shot" if config == "miniimagenet-5shot" else config
    for name in ("hidden_channels", "inner_steps", "inner_lr", "meta_batch", "test_steps"):
        key = f"maml.{config}.{name}"
        value = page[key] if key in page else page[f"maml.{base}.{name}"]
        assert settings[name] == number(value), (key, settings[name])
    query = page[f"maml.{base}.n_query"]
    assert settings["n_query"] == (n_shot if query == "shots" else number(query))
    assert settings["lr"] == number(page["maml.meta_lr"])
    assert settings["steps"] == number(page["maml.meta_iterations"])


@pytest.mark.parametrize(
    "dataset, n_shot, way_key, query_key",
    [
        ("omniglot", 1, "omniglot", "omniglot"),
        ("omniglot", 5, "omniglot", "omniglot"),
        ("miniimagenet", 1, "miniimagenet-1shot", "miniimagenet"),
        ("miniimagenet", 5, "miniimagenet-5shot", "miniimagenet"),
    ],
)
def test_protonet_paper_recipe_is_the_pages(page, dataset, n_shot, way_key, query_key):
    settings = recipe("protonet", dataset, None, n_shot)
    assert settings["n_way"] == number(page[f"protonet.{way_key}.n_way"])
    assert settings["n_query"] == number(page[f"protonet.{query_key}.n_query"])
    assert settings["n_shot"] == n_shot
    assert settings["lr"] == number(page["protonet.lr"])
    assert settings["halve_every"] == number(page["protonet.halve_every"])


def test_dataset_constants_are_the_pages(page):
    background, evaluation = embedded.BACKGROUND_ALPHABET_SIZES, embedded.EVALUATION_ALPHABET_SIZES
    assert len(background) == number(page["omniglot.background.alphabets"])
    assert sum(background) == number(page["omniglot.background.characters"])
    assert len(evaluation) == number(page["omniglot.evaluation.alphabets"])
    assert sum(evaluation) == number(page["omniglot.evaluation.characters"])
    assert len(background) + len(evaluation) == number(page["omniglot.alphabets"])
    assert sum(background) + sum(evaluation) == number(page["omniglot.characters"])
    assert number(page["omniglot.characters"]) == omniglot_splits.N_CHARACTERS
    assert number(page["omniglot.drawers"]) == embedded.N_DRAWERS
    assert number(page["omniglot.image_px"]) in embedded.IMAGE_SIZES
    assert lake_runs.N_RUNS == lake_runs.N_WAY == number(page["lake.runs"])
    vinyals, maml = (omniglot_splits.PROTOCOL_SIZES[p] for p in ("vinyals", "maml"))
    assert vinyals[0] == number(page["vinyals.train_characters"])
    assert maml == tuple(number(page[f"maml.split.{s}"]) for s in ("train", "val", "test"))
    assert {
        s: number(page[f"miniimagenet.split.{s}"]) for s in ("train", "val", "test")
    } == fsl.MINIIMAGENET_SPLIT_SIZES


def test_resnet12_is_the_pages(page):
    net = fsl.ResNet12(seed=0)
    widths = tuple(number(w) for w in page["resnet12.widths"].split(","))
    assert resnet12.STANDARD_CHANNELS == net.channels == widths
    assert len(net.blocks) == number(page["resnet12.blocks"])
    slopes = {m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {number(page["resnet12.leaky_slope"])}
    shortcut = number(page["resnet12.shortcut_kernel"])
    for block in net.blocks:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        assert [m.kernel_size for m in convs].count((3, 3)) == number(
            page["resnet12.convs_per_block"]
        )
        assert [m.kernel_size for m in convs].count((shortcut, shortcut)) == 1
        assert all(m.stride == (1, 1) and m.bias is None for m in convs)
        assert block.pool.kernel_size == number(page["resnet12.pool_px"])
    side = number(page["resnet12.feature_px"])
    assert net.feature_shape((3, 84, 84)) == (widths[-1], side, side)
    assert widths[-1] * side * side == number(page["resnet12.flat_dim"])
    assert sum(p.numel() for p in net.parameters()) == number(page["resnet12.parameters"])


def test_transductive_prototypes_default_steps_are_the_pages(page):
    steps = number(page["ren.soft_kmeans_steps"])
    for function in (fsl.TransductivePrototypes, fsl.with_transductive_prototypes):
        assert inspect.signature(function).parameters["steps"].default == steps, function
