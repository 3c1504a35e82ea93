"""The package's shape: imports run one way, options that cannot apply are refused, and the
helpers that several stages share exist once."""

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import fslearn as fsl

from synthetic import labelled_dataset, pattern_dataset

PACKAGE = Path(fsl.__file__).parent
# Each stage may import the stages before it (and common), never one after it.
ORDER = ["common", "distributed", "data", "sampling", "models", "evaluation", "methods", "training"]


def _imported_stages(path: Path) -> set[str]:
    """The fslearn stages that ``path`` imports, from its relative imports."""
    package = path.relative_to(PACKAGE).parts[:-1]
    stages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[: len(package) - node.level + 1])
            target = base + (node.module.split(".") if node.module else [])
            if target:
                stages.add(target[0])
    return stages


@pytest.mark.parametrize("stage", ORDER)
def test_imports_run_one_way(stage):
    later = set(ORDER[ORDER.index(stage) + 1 :]) | {"plot", "cli", "bench", "book"}
    files = [PACKAGE / f"{stage}.py"] if (PACKAGE / f"{stage}.py").exists() else []
    files += sorted((PACKAGE / stage).glob("*.py")) if (PACKAGE / stage).is_dir() else []
    assert files
    for path in files:
        wrong = _imported_stages(path) & later
        assert not wrong, f"{path.relative_to(PACKAGE)} imports the later stage(s) {sorted(wrong)}"


def test_no_library_module_is_long():
    lengths = {
        p.relative_to(PACKAGE): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    assert {path: n for path, n in lengths.items() if n > 320} == {}


def test_benchmarks_are_not_public_api():
    from fslearn import bench

    assert not {"per_task_meta_loss", "maml_speed", "sampler_speed"} & set(fsl.__all__)
    assert callable(bench.per_task_meta_loss) and callable(bench.maml_speed)


def test_koch_head_refuses_a_margin():
    with pytest.raises(ValueError, match=r"margin=0.5 does not apply to head='koch'"):
        fsl.train_siamese(pattern_dataset(), head="koch", margin=0.5, steps=1, progress=False)


@pytest.mark.parametrize(
    "name, options, named",
    [
        ("embedded", dict(protocol="maml"), "protocol='maml'"),
        ("embedded", dict(download=True), "download=True"),
        ("embedded", dict(root="/data"), "root='/data'"),
        ("miniimagenet", dict(root="/data", seed=3), "seed=3"),
        ("omniglot", dict(seed=1), "seed=1"),
        ("omniglot-small", dict(protocol="vinyals"), "protocol='vinyals'"),
    ],
)
def test_load_dataset_refuses_options_that_do_not_apply(name, options, named):
    with pytest.raises(ValueError, match=rf"{named} does not apply to '{name}'"):
        fsl.load_dataset(name, "train", **options)


def test_evaluate_refuses_an_endless_sampler_and_an_empty_list():
    sampler = fsl.EpisodeSampler(labelled_dataset(), 3, 1, 2, seed=0)
    with pytest.raises(TypeError, match="EpisodeSampler draws episodes without end"):
        fsl.evaluate(fsl.NearestPrototype(), sampler)
    with pytest.raises(ValueError, match="no episodes"):
        fsl.evaluate(fsl.NearestPrototype(), [])


def test_evaluate_builds_each_task_batch_when_its_turn_comes():
    episodes = fsl.EpisodeSet(labelled_dataset(), 3, 1, 2, n_episodes=10, seed=0)
    built, seen = [], []
    batch = episodes.batch

    def counting_batch(start, stop):
        built.append((start, stop))
        return batch(start, stop)

    episodes.batch = counting_batch

    def learner(support_x, support_y, query_x):
        seen.append(len(built))  # batches built so far, when this one is classified
        return torch.zeros(*query_x.shape[:2], 3)

    fsl.evaluate(learner, episodes, batch_size=4)
    assert built == [(0, 4), (4, 8), (8, 10)]
    assert seen == [1, 2, 3]


def test_nearest_neighbour_prototype_rule_is_nearest_prototype():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(36, 5))
    for episode in fsl.EpisodeSet(labelled_dataset(), 4, 3, 2, n_episodes=3, seed=1):
        args = (episode.support_x, episode.support_y, episode.query_x)
        torch.testing.assert_close(
            fsl.NearestNeighbourLearner(backbone, "nearest-prototype")(*args),
            fsl.NearestPrototype(backbone)(*args),
        )


def test_train_maml_records_per_step_losses_only_when_asked():
    options = dict(n_way=3, n_shot=1, n_query=2, meta_batch=2, steps=2, hidden_channels=4)
    _, plain = fsl.train_maml(pattern_dataset(), **options, progress=False)
    _, recorded = fsl.train_maml(pattern_dataset(), **options, record_steps=True, progress=False)
    assert set(plain.metrics) == {"accuracy"}
    assert set(recorded.metrics) == {"accuracy", "query_loss_0", "query_loss_1"}
    assert plain.loss == recorded.loss
