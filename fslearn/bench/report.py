"""Results files: a table of rows with the command, date, device and versions behind them."""

from __future__ import annotations

import datetime
import json
import shlex
from importlib import resources

import torch

from ..common import atomic_path
from .minimal_followup import in_recipe
from .timing import device_name

# Inside the package, not beside it, so that the chapters find it in a pip install and in Colab.
RESULTS_FILE = "results/maml_speed.json"
ABLATION_FILE = "results/minimal_ablation.json"
FOLLOW_UP_FILE = "results/minimal_followup.json"


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table of ``rows``: one column per ``(key, header, format string)``; ``None``
    prints as "—"."""
    headers = [header for _, header, _ in columns]
    cells = [
        ["—" if row[key] is None else fmt.format(row[key]) for key, _, fmt in columns]
        for row in rows
    ]
    widths = [
        max([len(header)] + [len(line[i]) for line in cells]) for i, header in enumerate(headers)
    ]
    # Text columns read best left-aligned, numbers right-aligned so their digits line up.
    left = [any(isinstance(row[key], str) for row in rows) for key, _, _ in columns]

    def line(values):
        return (
            "| "
            + " | ".join(
                v.ljust(w) if flush_left else v.rjust(w)
                for v, w, flush_left in zip(values, widths, left, strict=True)
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(
            "-" * (w + 2) if flush_left else "-" * (w + 1) + ":"
            for w, flush_left in zip(widths, left, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *map(line, cells)])


def command_line(argv: list[str]) -> str:
    """``argv`` as one shell line without ``--notes TEXT``: the command that reproduces the rows.

    The notes are stored in the record apart from the command, so they are left out of it.
    """
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--notes":
            skip = True
        elif not arg.startswith("--notes="):
            kept.append(arg)
    return shlex.join(kept)


def results_record(
    rows: list[dict], *, command: str, device, notes: str, setting: str | None = None
) -> dict:
    """The results file's content: the rows with the command, date, device, torch and fslearn
    versions behind them, and with ``setting`` (what the rows measured, in words) if given."""
    from .. import __version__  # here, not at import: fslearn/__init__ may still be running

    described = {} if setting is None else {"setting": setting}
    return {
        **described,
        "command": command,
        "date": datetime.date.today().isoformat(),
        "device": device_name(device),
        "torch": torch.__version__,
        "fslearn": __version__,
        "notes": notes,
        "rows": rows,
    }


def write_results(
    path, rows: list[dict], *, argv: list[str], device, notes: str, setting: str | None = None
) -> dict:
    """Write :func:`results_record` of ``rows`` to ``path`` as JSON, atomically; return the record.

    ``argv`` is the command that produced the rows, as :func:`command_line` records it.
    """
    record = results_record(
        rows, command=command_line(argv), device=device, notes=notes, setting=setting
    )
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return record


def recorded_maml_speed() -> dict:
    """The MAML speed measurement shipped with fslearn, as :func:`results_record` wrote it.

    It lives in ``fslearn/results/maml_speed.json``; chapter 10 prints it
    (``speed_table()`` and ``provenance_table()`` show it as tables). Replace it with
    a measurement of your own GPU by
    ``python benchmarks/bench_maml.py --device cuda --out fslearn/results/maml_speed.json``.
    """
    return json.loads(resources.files("fslearn").joinpath(RESULTS_FILE).read_text(encoding="utf-8"))


def recorded_minimal_ablation() -> dict:
    """The minimal recipe's ablation shipped with fslearn, as :func:`results_record` wrote it.

    It lives in ``fslearn/results/minimal_ablation.json``; chapter 8 shows it
    (``ablation_table()`` and ``provenance_table()``). ``python benchmarks/bench_minimal.py
    --data-root DIR --out fslearn/results/minimal_ablation.json`` regenerates it (about an
    hour on a 2-core CPU).
    """
    file = resources.files("fslearn").joinpath(ABLATION_FILE)
    return json.loads(file.read_text(encoding="utf-8"))


def recorded_followup_ablation() -> dict:
    """The minimal recipe's second ablation shipped with fslearn
    (``fslearn/results/minimal_followup.json``): changes to the recipe's own network, at its
    budget; chapter 8 shows it. Each row records the command that measured it
    (``measured_by``); ``python benchmarks/bench_minimal.py --data-root DIR --follow-up --out
    fslearn/results/minimal_followup.json`` measures every row again (hours on a 2-core CPU).
    Each row's ``kept`` says whether the recipe, as it is now, makes the row's change
    (``fslearn.bench.minimal_followup.in_recipe``), filled in as the record is read.
    """
    file = resources.files("fslearn").joinpath(FOLLOW_UP_FILE)
    record = json.loads(file.read_text(encoding="utf-8"))
    for row in record["rows"]:
        row["kept"] = in_recipe(row["row"])
    return record
