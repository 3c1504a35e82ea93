"""The recorded speed results as tables a reader can read: pandas DataFrames, short names.

:func:`format_table` prints rows as a Markdown table for a terminal; these functions give the
same rows, and where they came from, as DataFrames that fit a book's column:
:func:`speed_table` (the benchmark's rows), :func:`provenance_table` (device, date, command,
versions of a record) and :func:`reference_table` (:func:`reference_maml_speed`, the
figures measured with other libraries' own code). pandas is imported when they are called:
it is no dependency of fslearn itself.
"""

from __future__ import annotations

import json
import re
from importlib import resources

import torch

from ..evaluation.episodes import confidence_interval
from .maml import BASELINE, COMPILED, EAGER, N_QUERY

REFERENCE_FILE = "results/maml_speed_reference.json"
#: Short names of the benchmark's implementations, for tables.
SHORT_NAMES = {BASELINE: "per-task loop", EAGER: "vmap", COMPILED: "vmap, compiled"}
NOT_RECORDED = "not recorded"
NOT_MEASURED = "—"


def _pandas():
    try:
        import pandas
    except ImportError as missing:  # pragma: no cover - pandas is in requirements.txt
        raise ImportError(
            "the tables of fslearn.bench need pandas: pip install pandas"
        ) from missing
    return pandas


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def setting_label(row: dict) -> str:
    """A short name of a row's setting: its dataset and inner steps, ``"Omniglot, 1 step"``."""
    return f"{row['setting'].split()[0]}, {_steps(row['inner_steps'])}"


def speed_table(rows: list[dict]):
    """The rows of :func:`maml_speed` as a DataFrame indexed by setting and implementation.

    Columns: meta-iterations per second, milliseconds per meta-iteration, seconds to the end
    of the first meta-iteration (compilation included), peak GPU memory (left out when no row
    has one, as on a CPU) and the row's speed relative to the per-task loop of the same setting
    (the loop's time per meta-iteration over the row's: 2 runs twice as fast, 0.5 takes twice
    as long).
    """
    pd = _pandas()
    index = pd.MultiIndex.from_tuples(
        [(setting_label(row), SHORT_NAMES.get(row["implementation"], row["implementation"]))
         for row in rows],
        names=["setting", "implementation"],
    )  # fmt: skip
    table = pd.DataFrame(
        {
            "it/s": [round(row["meta_iterations_per_s"], 2) for row in rows],
            "ms/it": [round(row["ms_per_iteration"], 1) for row in rows],
            "first it (s)": [round(row["first_iteration_s"], 1) for row in rows],
            "peak (MB)": [row["peak_memory_mb"] for row in rows],
            "speed (loop = 1)": [round(row["speedup"], 2) for row in rows],
        },
        index=index,
    )
    if table["peak (MB)"].isna().all():
        table = table.drop(columns="peak (MB)")
    return table


def _settings(rows: list[dict]) -> str:
    """What the rows measured, in words: the task shape, then each setting with its
    meta-batch."""
    # A row's setting reads "Omniglot Conv4-64 28px 5w1s mb4": name, task shape, meta-batch.
    parts = [row["setting"].rsplit(" ", 2) for row in rows]
    shapes = dict.fromkeys(re.sub(r"(\d+)w(\d+)s", r"\1-way \2-shot", p[1]) for p in parts)
    settings = dict.fromkeys(f"{p[0]}, meta-batch {p[2].removeprefix('mb')}" for p in parts)
    return f"second-order MAML, {' / '.join(shapes)}, {N_QUERY} queries per class: " + "; ".join(
        settings
    )


def provenance_table(record: dict):
    """Where a results record came from, as a one-column DataFrame: what was measured, on which
    device, when, with which command, torch and fslearn version; "not recorded" where the
    record does not say."""
    pd = _pandas()
    fields = {
        "measured": record.get("setting")
        or (_settings(record["rows"]) if record["rows"] else None),
        "device": record.get("device"),
        "date": record.get("date"),
        "command": record.get("command"),
        "torch": record.get("torch"),
        "fslearn": record.get("fslearn"),
        "source": record.get("source"),
    }
    if fields["source"] is None:
        del fields["source"]
    return pd.DataFrame(
        {"recorded": [NOT_RECORDED if value is None else value for value in fields.values()]},
        index=pd.Index(list(fields)),
    )


def reference_maml_speed() -> dict:
    """The MAML speeds measured with other implementations' own code, shipped with fslearn.

    ``fslearn/results/maml_speed_reference.json``: meta-iterations per second of
    learn2learn, MAML-Pytorch and a plain ``torch.func`` version in the paper's Omniglot
    setting on one GPU, with their source. No fslearn command reproduces them, so the record's
    ``command`` and ``fslearn`` are ``None``.
    """
    file = resources.files("fslearn").joinpath(REFERENCE_FILE)
    return json.loads(file.read_text(encoding="utf-8"))


def reference_table(record: dict):
    """:func:`reference_maml_speed`'s rows as a DataFrame: one row per implementation and
    order of the meta-gradient, with its meta-iterations per second for each number of inner
    steps measured ("—" where that one was not)."""
    pd = _pandas()
    keys = list(dict.fromkeys((row["implementation"], row["order"]) for row in record["rows"]))
    steps = sorted({row["inner_steps"] for row in record["rows"]})
    rates = {
        (row["implementation"], row["order"], row["inner_steps"]): row for row in record["rows"]
    }
    columns = {"order": [order for _, order in keys]}
    for n in steps:
        columns[f"{_steps(n)} (it / s)"] = [
            rates[key + (n,)]["meta_iterations_per_s"] if key + (n,) in rates else None
            for key in keys
        ]
    table = pd.DataFrame(columns, index=pd.Index([name for name, _ in keys], name="implementation"))
    return table.astype(object).where(table.notna(), NOT_MEASURED)


def paired_difference(record: dict, row: str, other: str):
    """Accuracy of ``row`` minus that of ``other`` in a :func:`minimal_ablation` record, episode
    by episode on their shared episodes, as an :class:`~fslearn.Accuracy` in ``[-1, 1]``."""
    rows = {r["row"]: r for r in record["rows"]}
    first, second = (torch.tensor(rows[name]["per_episode"]) for name in (row, other))
    return confidence_interval(first - second)


def ablation_table(record: dict):
    """The rows of :func:`minimal_ablation` as a DataFrame indexed by row, in the record's order.

    Columns: the row it changes ("—" for the baseline), whether the recipe kept the change,
    the accuracy as "mean ± CI" (%), its paired difference from the row it changes (percentage
    points ± 95% CI, on the same episodes; :func:`paired_difference`), each alphabet's
    accuracy (%) and the training time (minutes; 0 for a row that only tests differently).
    """
    pd = _pandas()
    rows = record["rows"]
    alphabets = [key for key in rows[0] if key.endswith(" (%)")]

    def change(row):
        if row["compared_with"] is None:
            return NOT_MEASURED
        gain = paired_difference(record, row["row"], row["compared_with"])
        return f"{100 * gain.mean:+.1f} ± {100 * gain.ci95:.1f}"

    columns = {
        "changes": [row["compared_with"] or NOT_MEASURED for row in rows],
        "kept": ["yes" if row["kept"] else "no" for row in rows],
        "accuracy (%)": [f"{row['accuracy']:.1f} ± {row['ci95']:.1f}" for row in rows],
        "Δ (points)": [change(row) for row in rows],
        **{
            key.split("_")[0].replace(" (%)", "") + " (%)": [round(row[key], 1) for row in rows]
            for key in alphabets
        },
        "train (min)": [round(row["train_s"] / 60, 1) for row in rows],
    }
    return pd.DataFrame(columns, index=pd.Index([row["row"] for row in rows], name="row"))
