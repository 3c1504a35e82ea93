import datetime
import itertools
import json
import shlex
import time
import types

import pytest
import torch

import fslearn
import fslearn.bench.maml as maml_bench
import fslearn.bench.sampler as sampler_bench
from fslearn import bench as speed
from fslearn.bench import timing

RECORD_KEYS = {"command", "date", "device", "torch", "fslearn", "notes", "rows"}
ROW_TYPES = {
    "setting": str,
    "implementation": str,
    "inner_steps": int,
    "meta_iterations_per_s": float,
    "ms_per_iteration": float,
    "first_iteration_s": float,
    "peak_memory_mb": (float, type(None)),
    "speedup": float,
}
# What the fake clock reports to maml_speed, in the order it times: for each implementation,
# the first iteration alone, then the mean of the timed ones.
MAML_SECONDS = {speed.BASELINE: (2.5, 0.8), speed.EAGER: (1.5, 0.4)}
# ... and to sampler_speed: for each episode shape, fslearn's batch, then the DataLoader's.
SAMPLER_SECONDS = [(0.002, 0.01), (0.004, 0.01), (0.008, 0.02), (0.016, 0.064)]


def fake_seconds_per_call(seconds):
    """A stand-in for seconds_per_call: runs ``fn`` as asked, reports the next of ``seconds``."""
    reported = iter(seconds)

    def seconds_per_call(fn, device, repeats):
        for _ in range(repeats):
            fn()
        return next(reported)

    return seconds_per_call


def table_cells(table: str) -> list[list[str]]:
    """The cells of a :func:`format_table` table, line by line, without their padding."""
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()]


def check_schema(rows):
    assert rows
    for row in rows:
        assert set(row) == set(ROW_TYPES), row
        for key, kind in ROW_TYPES.items():
            assert isinstance(row[key], kind), (key, row[key])


@pytest.fixture(scope="module")
def tiny_rows():
    timings = [s for first_and_timed in MAML_SECONDS.values() for s in first_and_timed]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(maml_bench, "seconds_per_call", fake_seconds_per_call(timings))
        return speed.maml_speed(
            "cpu", settings=("omniglot-1",), iterations=1, meta_batch=1, compile=False
        )


def test_maml_rows_report_the_timings_they_measured(tiny_rows):
    check_schema(tiny_rows)
    assert [row["implementation"] for row in tiny_rows] == list(MAML_SECONDS)
    for row, (first, timed) in zip(tiny_rows, MAML_SECONDS.values()):
        assert row["setting"] == "Omniglot Conv4-64 28px 5w1s mb1" and row["inner_steps"] == 1
        assert row["first_iteration_s"] == first
        assert row["ms_per_iteration"] == pytest.approx(1e3 * timed)
        assert row["meta_iterations_per_s"] == pytest.approx(1 / timed)
        assert row["peak_memory_mb"] is None  # measured on CUDA only
    # The speed-up is the baseline's time per iteration over the row's: 0.8 s / 0.4 s.
    assert [row["speedup"] for row in tiny_rows] == [1.0, 2.0]
    assert table_cells(speed.format_table(tiny_rows, speed.MAML_COLUMNS))[2:] == [
        [tiny_rows[0]["setting"], speed.BASELINE, "1", "1.25", "800.0", "2.5", "—", "1.0×"],
        [tiny_rows[0]["setting"], speed.EAGER, "1", "2.50", "400.0", "1.5", "—", "2.0×"],
    ]


def test_maml_rows_fit_in_the_time_the_benchmark_took():
    start = time.perf_counter()
    rows = speed.maml_speed(
        "cpu", settings=("omniglot-1",), iterations=1, meta_batch=1, compile=False
    )
    elapsed = time.perf_counter() - start
    check_schema(rows)
    # The timed calls are part of the run, so together they cannot outlast it: a time in the
    # wrong unit (milliseconds read as seconds) overshoots it many times.
    timed = sum(row["first_iteration_s"] + row["ms_per_iteration"] / 1e3 for row in rows)
    assert timed <= elapsed
    baseline, eager = rows
    assert eager["speedup"] == round(baseline["ms_per_iteration"] / eager["ms_per_iteration"], 2)


def test_results_record_is_the_file_schema(tiny_rows):
    record = speed.results_record(
        tiny_rows, command="python benchmarks/bench_maml.py", device="cpu", notes="test"
    )
    assert set(record) == RECORD_KEYS
    assert record["rows"] == tiny_rows and record["date"] == datetime.date.today().isoformat()
    assert record["command"] == "python benchmarks/bench_maml.py" and record["notes"] == "test"
    assert record["device"] == f"CPU, {torch.get_num_threads()} threads"
    assert record["torch"] == torch.__version__ and record["fslearn"] == fslearn.__version__
    assert json.loads(json.dumps(record)) == record


def test_committed_results_follow_from_their_command_and_timings():
    record = speed.recorded_maml_speed()
    assert set(record) == RECORD_KEYS
    assert all(isinstance(record[key], str) for key in RECORD_KEYS - {"rows"})
    rows = record["rows"]
    check_schema(rows)
    # The rows are those the recorded command asks for, in the order maml_speed runs them.
    args = shlex.split(record["command"])
    meta_batch = int(args[args.index("--meta-batch") + 1]) if "--meta-batch" in args else None
    settings = list(speed.MAML_SETTINGS)
    if "--settings" in args:
        after = args[args.index("--settings") + 1 :]
        settings = list(itertools.takewhile(lambda arg: not arg.startswith("--"), after))
    compiled = [speed.COMPILED] * ("--no-compile" not in args)
    implementations = [speed.BASELINE, speed.EAGER, *compiled]
    expected = [
        (f"{spec['name']} 5w1s mb{meta_batch or spec['meta_batch']}", spec["inner_steps"], name)
        for spec in map(speed.MAML_SETTINGS.get, settings)
        for name in implementations
    ]
    assert [(row["setting"], row["inner_steps"], row["implementation"]) for row in rows] == expected
    on_cpu = record["device"].startswith("CPU")
    for start in range(0, len(rows), len(implementations)):
        baseline = rows[start]
        for row in rows[start : start + len(implementations)]:
            ms = row["ms_per_iteration"]
            assert row["speedup"] == round(baseline["ms_per_iteration"] / ms, 2)
            # Both come from one time per iteration, stored to 2 and 4 decimals.
            assert row["meta_iterations_per_s"] == pytest.approx(1e3 / ms, abs=1e-4)
            assert (row["peak_memory_mb"] is None) == on_cpu


def test_sampler_rows_report_the_timings_they_measured(monkeypatch):
    timings = [s for ours_and_base in SAMPLER_SECONDS for s in ours_and_base]
    monkeypatch.setattr(sampler_bench, "seconds_per_call", fake_seconds_per_call(timings))
    rows = speed.sampler_speed("cpu", n_tasks=2, repeats=1)
    shapes = [f"{n}-way {k}-shot {q}-query" for n, k, q in sampler_bench.SHAPES]
    assert [row["setting"] for row in rows] == shapes
    for row, (ours, base) in zip(rows, SAMPLER_SECONDS):
        assert set(row) == {"setting", "fslearn_ms", "dataloader_ms", "episodes_per_s", "speedup"}
        assert row["fslearn_ms"] == pytest.approx(1e3 * ours)
        assert row["dataloader_ms"] == pytest.approx(1e3 * base)
        assert row["episodes_per_s"] == pytest.approx(2 / ours)  # two tasks a batch
        assert row["speedup"] == pytest.approx(base / ours)  # the DataLoader's time over ours
    cells = table_cells(speed.format_table(rows, speed.SAMPLER_COLUMNS))
    assert cells[0] == [header for _, header, _ in speed.SAMPLER_COLUMNS]
    assert cells[2:] == [
        [shapes[0], "2.000", "10.00", "1,000", "5.0×"],
        [shapes[1], "4.000", "10.00", "500", "2.5×"],
        [shapes[2], "8.000", "20.00", "250", "2.5×"],
        [shapes[3], "16.000", "64.00", "125", "4.0×"],
    ]


def test_seconds_per_call_is_the_mean_over_the_repeats(monkeypatch):
    clock = types.SimpleNamespace(now=100.0)
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    durations = iter([0.5, 1.0, 1.5, 3.0])

    def work():
        clock.now += next(durations)

    assert timing.seconds_per_call(work, torch.device("cpu"), 4) == pytest.approx(1.5)
    assert next(durations, "all used") == "all used"


def test_unknown_setting_names_the_allowed_ones():
    with pytest.raises(ValueError, match="omniglot-1.*omniglot-5.*miniimagenet-5"):
        speed.maml_speed("cpu", settings=("omniglot-20",))


def test_format_table_aligns_and_prints_none_as_dash():
    rows = [
        {"name": "a", "value": 1.5, "memory": None},
        {"name": "bbb", "value": 10.25, "memory": 3.0},
    ]
    table = speed.format_table(
        rows, [("name", "name", "{}"), ("value", "v", "{:.1f}"), ("memory", "MB", "{:.0f}")]
    )
    assert table.splitlines() == [
        "| name |    v | MB |",
        "|------|-----:|---:|",
        "| a    |  1.5 |  — |",
        "| bbb  | 10.2 |  3 |",
    ]


def test_command_line_leaves_out_the_notes_and_quotes_the_rest():
    argv = [
        "fslearn",
        "bench",
        "--notes",
        "a note",
        "--out",
        "my file.json",
        "--notes=other",
        "--iterations",
        "3",
    ]
    assert speed.command_line(argv) == "fslearn bench --out 'my file.json' --iterations 3"


def test_speed_table_shows_the_rows_with_short_names(tiny_rows):
    table = speed.speed_table(tiny_rows)
    assert list(table.index) == [
        ("Omniglot, 1 step", "per-task loop"),
        ("Omniglot, 1 step", "vmap"),
    ]
    # No peak memory on a CPU: the column is left out rather than shown empty.
    assert list(table.columns) == ["it/s", "ms/it", "first it (s)", "speed (loop = 1)"]
    assert table["ms/it"].tolist() == [800.0, 400.0]
    assert table["speed (loop = 1)"].tolist() == [1.0, 2.0]
    with_memory = [{**row, "peak_memory_mb": 12.5} for row in tiny_rows]
    assert speed.speed_table(with_memory)["peak (MB)"].tolist() == [12.5, 12.5]


def test_provenance_table_says_what_a_record_does_not(tiny_rows):
    record = speed.results_record(tiny_rows, command="python x.py", device="cpu", notes="")
    table = speed.provenance_table(record)["recorded"]
    assert list(table.index) == ["measured", "device", "date", "command", "torch", "fslearn"]
    assert table["measured"] == (
        "second-order MAML, 5-way 1-shot, 15 queries per class: "
        "Omniglot Conv4-64 28px, meta-batch 1"
    )
    assert table["command"] == "python x.py" and table["fslearn"] == fslearn.__version__
    reference = speed.provenance_table(speed.reference_maml_speed())["recorded"]
    assert reference["command"] == "not recorded" and "design notes" in reference["source"]


def test_reference_record_has_a_source_and_one_rate_per_row():
    record = speed.reference_maml_speed()
    assert {"source", "setting", "device", "date", "command", "fslearn", "rows"} <= set(record)
    assert record["source"] and record["device"] and record["command"] is None
    for row in record["rows"]:
        assert set(row) == {"implementation", "order", "inner_steps", "meta_iterations_per_s"}
        assert row["order"] in ("first", "second") and row["meta_iterations_per_s"] > 0
    table = speed.reference_table(record)
    assert list(table.columns) == ["order", "1 step (it / s)", "5 steps (it / s)"]
    assert len(table) == len({(r["implementation"], r["order"]) for r in record["rows"]})
    learn2learn = table.loc["learn2learn (per-task loop)"].set_index("order")
    assert learn2learn.loc["second", "1 step (it / s)"] == 1.6
    assert learn2learn.loc["first", "5 steps (it / s)"] == "—"  # not measured


def test_strategy_rows_cover_every_setting_and_implementation():
    rows = speed.maml_strategy_speed(
        "cpu", meta_batches=(1,), inner_steps=(1,), orders=("second", "first"), rounds=1
    )
    names = [speed.LOOP, speed.VMAP] + [speed.HIGHER] * speed.higher_available()
    assert [(row["order"], row["implementation"]) for row in rows] == [
        (order, name) for order in ("second", "first") for name in names
    ]
    for row in rows:
        assert row["meta_batch"] == 1 and row["inner_steps"] == 1 and row["ms_per_iteration"] > 0
        if speed.higher_available():
            higher = next(
                r
                for r in rows
                if r["order"] == row["order"] and r["implementation"] == speed.HIGHER
            )
            expected = row["ms_per_iteration"] / higher["ms_per_iteration"]
            assert row["vs_higher"] == pytest.approx(expected, rel=0.02)
        else:
            assert row["vs_higher"] is None
    table = speed.format_table(rows, speed.STRATEGY_COLUMNS)
    assert speed.LOOP in table and "× higher" in table
    with pytest.raises(ValueError, match="orders must be"):
        speed.maml_strategy_speed("cpu", orders=("third",))


@pytest.mark.parametrize("first_order", [False, True])
def test_the_higher_loop_computes_the_same_meta_gradient_as_fsl_maml(first_order):
    pytest.importorskip("higher")
    from fslearn.bench.strategies import _loss_backward, _with_torch_batch_norm

    generator = torch.Generator().manual_seed(0)
    batch = fslearn.Episode(
        torch.rand(2, 6, 1, 16, 16, generator=generator, dtype=torch.float64),
        torch.arange(3).repeat_interleave(2).expand(2, -1),
        torch.rand(2, 9, 1, 16, 16, generator=generator, dtype=torch.float64),
        torch.arange(3).repeat_interleave(3).expand(2, -1),
        torch.arange(3).expand(2, -1),
    )
    grads = {}
    for name in (speed.LOOP, speed.VMAP, speed.HIGHER):
        model = fslearn.maml_classifier(3, (1, 16, 16), hidden_channels=4, seed=0).double()
        if name == speed.HIGHER:
            model = _with_torch_batch_norm(model)
            assert not any(isinstance(m, fslearn.TaskBatchNorm2d) for m in model.modules())
        _loss_backward(name, model, 2, first_order)(batch)
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads[speed.HIGHER], grads[speed.LOOP], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads[speed.VMAP], grads[speed.LOOP], rtol=1e-9, atol=1e-12)
