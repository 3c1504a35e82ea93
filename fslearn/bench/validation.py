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


def write_validation(path, record: dict) -> None:
    """Write the validation ``record`` to ``path`` as JSON, atomically."""
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
