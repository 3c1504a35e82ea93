import json

import pytest
import torch

from fslearn import bench as speed

RECORD_KEYS = {"command", "date", "device", "torch", "notes", "rows"}
ROW_TYPES = {
    "setting": str, "implementation": str, "inner_steps": int, "meta_iterations_per_s": float,
    "ms_per_iteration": float, "first_iteration_s": float, "peak_memory_mb": (float, type(None)), "speedup": float,
}


def check_maml_rows(rows):
    assert rows
    for row in rows:
        assert set(row) == set(ROW_TYPES), row
        for key, kind in ROW_TYPES.items():
            assert isinstance(row[key], kind), (key, row[key])
        assert row["meta_iterations_per_s"] > 0 and row["first_iteration_s"] > 0 and row["speedup"] > 0
        # chapter 7 asserts the two columns are one measurement seen two ways
        assert row["ms_per_iteration"] * row["meta_iterations_per_s"] == pytest.approx(1000, rel=0.05)


@pytest.fixture(scope="module")
def tiny_rows():
    return speed.maml_speed("cpu", settings=("omniglot-1",), iterations=1, meta_batch=1, compile=False)


def test_maml_speed_rows(tiny_rows):
    check_maml_rows(tiny_rows)
    assert [row["implementation"] for row in tiny_rows] == [speed.BASELINE, speed.EAGER]
    assert tiny_rows[0]["speedup"] == 1.0
    assert all(row["setting"].endswith("mb1") and row["peak_memory_mb"] is None for row in tiny_rows)


def test_results_record_is_the_file_schema(tiny_rows):
    record = speed.results_record(tiny_rows, command="python benchmarks/bench_maml.py", device="cpu", notes="test")
    assert set(record) == RECORD_KEYS
    assert record["device"] == f"CPU, {torch.get_num_threads()} threads" and record["torch"] == torch.__version__
    assert json.loads(json.dumps(record)) == record


def test_committed_results_match_the_schema():
    record = speed.recorded_maml_speed()
    assert set(record) == RECORD_KEYS
    assert all(isinstance(record[key], str) for key in RECORD_KEYS - {"rows"})
    check_maml_rows(record["rows"])


def test_sampler_speed_rows():
    rows = speed.sampler_speed("cpu", n_tasks=2, repeats=1)
    assert [row["setting"] for row in rows][0] == "5-way 1-shot 15-query"
    for row in rows:
        assert set(row) == {"setting", "fslearn_ms", "dataloader_ms", "episodes_per_s", "speedup"}
        assert row["fslearn_ms"] > 0 and row["dataloader_ms"] > 0 and row["speedup"] > 0
    assert "| episode shape" in speed.format_table(rows, speed.SAMPLER_COLUMNS)


def test_unknown_setting_names_the_allowed_ones():
    with pytest.raises(ValueError, match="omniglot-1.*omniglot-5.*miniimagenet-5"):
        speed.maml_speed("cpu", settings=("omniglot-20",))


def test_format_table_aligns_and_prints_none_as_dash():
    rows = [{"name": "a", "value": 1.5, "memory": None}, {"name": "bbb", "value": 10.25, "memory": 3.0}]
    table = speed.format_table(rows, [("name", "name", "{}"), ("value", "v", "{:.1f}"), ("memory", "MB", "{:.0f}")])
    assert table.splitlines() == [
        "| name |    v | MB |",
        "|------|-----:|---:|",
        "| a    |  1.5 |  — |",
        "| bbb  | 10.2 |  3 |",
    ]


def test_command_line_leaves_out_the_notes_and_quotes_the_rest():
    argv = ["fslearn", "bench", "--notes", "a note", "--out", "my file.json", "--notes=other", "--iterations", "3"]
    assert speed.command_line(argv) == "fslearn bench --out 'my file.json' --iterations 3"
