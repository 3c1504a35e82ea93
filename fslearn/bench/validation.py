"""The GPU validation record: what ``make gpu-check`` ran on which hardware, and what passed.

``benchmarks/gpu_check.py run`` writes it; it ships inside the package beside the MAML speed
record, ``fslearn/results/gpu_validation.json``, so that chapter 12 prints it in a pip
install and in Colab too.
"""

from __future__ import annotations

import json
from importlib import resources

from ..common import atomic_path
from .maml import MAML_COLUMNS
from .report import format_table
from .sampler import SAMPLER_COLUMNS

VALIDATION_FILE = "results/gpu_validation.json"
#: How the error of a step that never started begins (its deadline had passed).
NOT_RUN = "not run"


def steps_not_run(record: dict) -> list[str]:
    """The steps of the validation ``record`` that did not run, in words; empty when all did.

    A step did not run when the run's deadline had passed before it started, and the unit
    tests did not run when pytest counted none (it timed out before writing its counts, or
    found no test).
    """
    missing = []
    tests = record["tests"]
    if not tests["files"]:
        late = f", timed out after {tests['seconds']:g} s" if tests["timed_out"] else ""
        missing.append(f"the unit tests (pytest counted none{late})")
    if not record["chapters"]:
        missing.append("the chapters (none was named)")
    late = [c["chapter"] for c in record["chapters"] if (c["error"] or "").startswith(NOT_RUN)]
    if late:
        missing.append(f"the chapters {late}")
    if (record["benchmarks"]["error"] or "").startswith(NOT_RUN):
        missing.append("the benchmarks")
    return missing


def write_validation(path, record: dict) -> None:
    """Write the validation ``record`` to ``path`` as JSON, atomically.

    Raises:
        ValueError: some step of the record did not run (``steps_not_run``); nothing
            is written, so an earlier record at ``path`` stays.
    """
    missing = steps_not_run(record)
    if missing:
        raise ValueError(
            f"{path} not written: {'; '.join(missing)} did not run, so the record would not say "
            "what this machine does (a record already there is kept)"
        )
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def recorded_gpu_validation() -> dict | None:
    """The GPU validation record shipped with fslearn, or ``None`` when none has been recorded.

    ``make gpu-check`` on a machine with a CUDA build of torch writes it to
    ``fslearn/results/gpu_validation.json``; :func:`format_validation` prints it.
    """
    file = resources.files("fslearn").joinpath(VALIDATION_FILE)
    if not file.is_file():
        return None
    return json.loads(file.read_text(encoding="utf-8"))


def format_validation(record: dict) -> str:
    """The validation ``record`` as text: hardware, software, tests, chapters, benchmarks."""
    tests = record["tests"]
    lines = [
        f"device:  {record['device']}",
        f"torch:   {record['torch']} (CUDA {record['cuda']}), Python {record['python']}",
        f"date:    {record['date']}",
        f"command: {record['command']}",
        f"unit tests ({tests['seconds']:.0f} s{', timed out' if tests['timed_out'] else ''}):",
    ]
    for file, counts in tests["files"].items():
        lines.append(
            f"  {file}: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['errors']} errors, {counts['skipped']} skipped"
        )
    lines.append(f"chapters ({record['configuration']} configuration):")
    for chapter in record["chapters"]:
        status = "passed" if chapter["passed"] else f"FAILED: {chapter['error']}"
        lines.append(f"  {chapter['chapter']}: {status} in {chapter['seconds']:.0f} s")
    benchmarks = record["benchmarks"]
    if benchmarks["error"]:
        lines.append(f"benchmarks FAILED: {benchmarks['error']}")
    if benchmarks["sampler"]:
        lines += ["", format_table(benchmarks["sampler"], SAMPLER_COLUMNS)]
    if benchmarks["maml"]:
        lines += ["", format_table(benchmarks["maml"], MAML_COLUMNS)]
    return "\n".join(lines)
