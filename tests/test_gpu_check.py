"""benchmarks/gpu_check.py: the JUnit counts, the record's guard and a CPU dry run end to end."""

import importlib.util
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fslearn import bench
from fslearn.bench import validation

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "benchmarks" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", HARNESS)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)

# Two files, a test class, and one of each outcome pytest writes.
JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="7">
  <testcase classname="tests.test_a" name="test_one[cpu]" time="0.1"/>
  <testcase classname="tests.test_a" name="test_one[cuda]" time="0.1">
    <failure message="assert 1 == 2">trace</failure></testcase>
  <testcase classname="tests.test_a.TestGroup" name="test_two" time="0.1"/>
  <testcase classname="tests.test_a" name="test_three" time="0.0">
    <skipped message="needs CUDA"/></testcase>
  <testcase classname="tests.test_b" name="test_four" time="0.1">
    <error message="fixture failed">trace</error></testcase>
  <testcase classname="tests.test_b" name="test_five" time="0.1"/>
  <testcase classname="tests.test_b" name="test_six" time="0.1">
    <system-out>printed</system-out></testcase>
</testsuite></testsuites>
"""


def test_junit_counts_per_file(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    assert gpu_check.junit_counts(junit) == {
        "tests/test_a.py": {"passed": 2, "failed": 1, "errors": 0, "skipped": 1},
        "tests/test_b.py": {"passed": 2, "failed": 0, "errors": 1, "skipped": 0},
    }


def test_a_step_out_of_time_is_recorded_as_failed():
    clock = gpu_check.Clock(deadline_s=60)
    status, seconds, error = clock.run([sys.executable, "-c", "import time; time.sleep(30)"], 0.5)
    assert status is None and seconds < 10 and "timed out" in error
    status, _, error = gpu_check.Clock(deadline_s=0).run([sys.executable, "-c", "pass"], 60)
    assert status is None and "deadline" in error


def test_a_dry_run_is_never_the_package_record(tmp_path, monkeypatch):
    results = tmp_path / "fslearn" / "results"  # stands in for the package's folder
    monkeypatch.setattr(gpu_check, "PACKAGE_RESULTS", results)
    out = results / "gpu_validation.json"
    # No scripts: past the guard, the run would stop at once with another message.
    argv = ["run", "--device", "cpu", "--tiny", "--scripts", str(tmp_path), "--out", str(out)]
    with pytest.raises(SystemExit, match="dry run"):
        gpu_check.main(argv)
    assert not out.exists()


def test_no_record_reads_as_none_and_a_written_one_reads_back(tmp_path, monkeypatch):
    monkeypatch.setattr(validation, "VALIDATION_FILE", "results/no_such_record.json")
    assert validation.recorded_gpu_validation() is None
    record = {
        "device": "NVIDIA H200",
        "tests": {"seconds": 1.0, "timed_out": False, "files": {"tests/test_a.py": {"passed": 1}}},
        "chapters": [{"chapter": "03_episodes", "passed": True, "seconds": 1.0, "error": None}],
        "benchmarks": {"seconds": 1.0, "error": None, "sampler": [], "maml": []},
    }
    validation.write_validation(tmp_path / "results" / "gpu_validation.json", record)
    monkeypatch.setattr(validation.resources, "files", lambda package: tmp_path)
    monkeypatch.setattr(validation, "VALIDATION_FILE", "results/gpu_validation.json")
    assert validation.recorded_gpu_validation() == record


def test_cpu_dry_run_end_to_end(tmp_path):
    scripts, work, out = tmp_path / "scripts", tmp_path / "work", tmp_path / "record.json"
    if importlib.util.find_spec("jupytext"):
        gpu_check.prepare(scripts)
    elif (gpu_check.SCRIPTS / gpu_check.MANIFEST).is_file():
        scripts = gpu_check.SCRIPTS
    else:
        pytest.skip("no jupytext to write the chapter scripts, and none prepared")
    argv = [sys.executable, str(HARNESS), "run", "--device", "cpu", "--tiny"]
    argv += ["--scripts", str(scripts), "--work", str(work), "--out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    record = json.loads(out.read_text())
    assert set(record) == {
        "date", "device", "torch", "cuda", "python", "command", "configuration", "seconds",
        "tests", "chapters", "benchmarks",
    }  # fmt: skip
    assert record["device"].startswith("CPU") and record["configuration"] == "reduced (CPU)"
    assert "--device cpu --tiny" in record["command"]
    # The counts are pytest's own: every test case of the JUnit file, under its file.
    cases = list(ET.parse(work / "junit.xml").getroot().iter("testcase"))
    files = record["tests"]["files"]
    assert list(files) == gpu_check.TINY_TESTS and not record["tests"]["timed_out"]
    assert files[gpu_check.TINY_TESTS[0]] == {
        "passed": len(cases), "failed": 0, "errors": 0, "skipped": 0,
    }  # fmt: skip
    assert len(cases) > 5
    [chapter] = record["chapters"]
    assert chapter["chapter"] == gpu_check.TINY_CHAPTERS[0] and chapter["passed"]
    assert chapter["seconds"] > 0
    rows = record["benchmarks"]
    assert rows["error"] is None and len(rows["sampler"]) == 4
    assert {row["implementation"] for row in rows["maml"]} == {
        bench.BASELINE, bench.EAGER,
    }  # fmt: skip
    assert "03_episodes: passed" in validation.format_validation(record)
