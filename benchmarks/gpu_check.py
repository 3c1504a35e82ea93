"""GPU validation: unit tests, every chapter and the speed benchmarks in one run, one record.

    python benchmarks/gpu_check.py prepare [--scripts build/gpu-check]       # needs jupytext
    python benchmarks/gpu_check.py run --device cuda [--short] --out FILE    # needs none

``prepare`` (on any machine with the book's requirements) writes every chapter as a plain
Python script into an ignored folder, with the chapters' hashes. ``run`` needs only torch,
pytest, numpy, matplotlib, tqdm and Pillow, so it works on a GPU machine without network:

1. the unit tests with pytest (every ``device``-parametrised test runs on CUDA too), without
   the browser test and the chapter-pair test, counted per file from pytest's JUnit XML;
2. the sampler and MAML speed benchmarks on the device;
3. every chapter script, each in its own process with the Agg backend, timed; its asserts
   are the checks. ``--short`` sets ``FSLEARN_GPU_CHECK=short``, which keeps every code path
   of the chapters' full (GPU) configuration with shorter training budgets.

Each step has a timeout and the whole run a deadline; a step that runs out of time is
recorded as failed, and a run in which a step never started (its deadline had passed) or
pytest counted no test writes no record, so that it cannot replace one of a run that ran.
The arguments, the output paths and the chapter scripts are checked before anything runs.
The record (date, GPU, torch and CUDA versions, the command, the counts,
seconds and benchmark rows) goes to ``--out``; ``make gpu-check`` writes it to
``fslearn/results/gpu_validation.json``, which chapter 12 prints. ``--device cpu
--tiny`` is the dry run of the whole harness: one test file, one chapter in its CPU
configuration, one benchmark iteration; its record must go elsewhere.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
SCRIPTS = ROOT / "build" / "gpu-check"
MANIFEST = "manifest.json"
PACKAGE_RESULTS = ROOT / "fslearn" / "results"
# jupytext and a browser are not on the GPU machine, and neither test needs a GPU; nor does
# the harness's own test, whose dry run would run inside this run.
IGNORED_TESTS = ["tests/test_chapters.py", "tests/test_book_browser.py", "tests/test_gpu_check.py"]
TINY_TESTS = ["tests/test_layout.py"]
TINY_CHAPTERS = ["03_episodes"]
OUTCOMES = ("passed", "failed", "errors", "skipped")


def md_hash(md: Path) -> str:
    return hashlib.sha256(md.read_bytes()).hexdigest()


def prepare(scripts: Path) -> None:
    """Write every chapter as a py:percent script into ``scripts``, with their .md hashes."""
    import jupytext

    scripts.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for md in sorted(CHAPTERS.glob("*.md")):
        jupytext.write(jupytext.read(md), scripts / f"{md.stem}.py", fmt="py:percent")
        manifest[md.stem] = md_hash(md)
    (scripts / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(manifest)} chapter scripts to {scripts}")


def chapter_scripts(scripts: Path, names: list[str] | None) -> list[Path]:
    """The prepared scripts of ``names`` (default: every chapter), checked against the .md."""
    manifest_file = scripts / MANIFEST
    fix = (
        f"run `make gpu-check-prepare` (or `python benchmarks/gpu_check.py prepare "
        f"--scripts {scripts}`)"
    )
    if not manifest_file.is_file():
        raise SystemExit(f"no chapter scripts in {scripts}: {fix} and bring that folder along")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # a copy cut short, or not the file prepare wrote
        raise SystemExit(f"{manifest_file} cannot be read ({error}): {fix}") from None
    if not (isinstance(manifest, dict) and all(isinstance(v, str) for v in manifest.values())):
        raise SystemExit(f"{manifest_file} is not a manifest of chapter hashes: {fix}")
    names = names or sorted(manifest)
    if not names:
        raise SystemExit(f"{manifest_file} lists no chapter: {fix}")
    unknown = [n for n in names if not (CHAPTERS / f"{n}.md").is_file()]
    if unknown:
        chapters = sorted(md.stem for md in CHAPTERS.glob("*.md"))
        raise SystemExit(
            f"no chapter {unknown} in {CHAPTERS}: pass --chapters from {chapters}, or if the "
            f"manifest names it, {fix}"
        )
    stale = [
        n
        for n in names
        if n not in manifest
        or md_hash(CHAPTERS / f"{n}.md") != manifest[n]
        or not (scripts / f"{n}.py").is_file()
    ]
    if stale:
        raise SystemExit(f"chapter scripts missing or older than their .md: {stale}; {fix}")
    return [scripts / f"{name}.py" for name in names]


def junit_counts(path: Path) -> dict[str, dict[str, int]]:
    """Passed, failed, errors and skipped per test file, from pytest's ``--junitxml`` file."""
    counts: dict[str, dict[str, int]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        # classname is the module's dotted path, then any class: tests.test_x.TestY
        parts = case.get("classname", "").split(".")
        module = next(
            (i for i, part in enumerate(parts) if part.startswith("test_")), len(parts) - 1
        )
        file = "/".join(parts[: module + 1]) + ".py"
        tags = {child.tag for child in case}
        outcome = (
            "failed"
            if "failure" in tags
            else "errors"
            if "error" in tags
            else "skipped"
            if "skipped" in tags
            else "passed"
        )
        counts.setdefault(file, dict.fromkeys(OUTCOMES, 0))[outcome] += 1
    return dict(sorted(counts.items()))


def environment(device: str, short: bool) -> dict[str, str]:
    """The child processes' environment: this checkout importable, plots off-screen, and on a
    CPU dry run no CUDA, so that the chapters pick their CPU configuration."""
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if short:
        env["FSLEARN_GPU_CHECK"] = "short"
    return env


class Clock:
    """Per-step timeouts within one deadline for the whole run."""

    def __init__(self, deadline_s: float):
        self.end = time.monotonic() + deadline_s

    def run(self, argv: list[str], timeout_s: float, **kwargs) -> tuple[int | None, float, str]:
        """Run ``argv``; return its exit status (``None`` if it ran out of time), its seconds
        and the last line of its error output."""
        timeout_s = min(timeout_s, self.end - time.monotonic())
        if timeout_s <= 0:
            return None, 0.0, "not run: the run's deadline had passed"
        start = time.monotonic()
        try:
            done = subprocess.run(
                argv, timeout=timeout_s, stderr=subprocess.PIPE, text=True, **kwargs
            )
        except subprocess.TimeoutExpired as expired:
            sys.stderr.write(expired.stderr or "")
            return None, time.monotonic() - start, f"timed out after {timeout_s:.0f} s"
        sys.stderr.write(done.stderr)
        last = done.stderr.strip().splitlines()[-1:] if done.returncode else []
        return done.returncode, time.monotonic() - start, "".join(last)


def unit_tests(clock: Clock, files: list[str], env: dict, timeout_s: float, tmp: Path) -> dict:
    junit = tmp / "junit.xml"
    junit.unlink(missing_ok=True)  # a file left by an earlier run is not this run's count
    ignores = [f"--ignore={file}" for file in IGNORED_TESTS]
    argv = [sys.executable, "-m", "pytest", "-o", "addopts=-ra -p no:cacheprovider", "-q"]
    argv += [*ignores, "-m", "not browser", f"--junitxml={junit}", *files]
    status, seconds, _ = clock.run(argv, timeout_s, cwd=ROOT, env=env)
    files_counts = junit_counts(junit) if junit.is_file() else {}
    return {"seconds": round(seconds, 1), "timed_out": status is None, "files": files_counts}


def benchmarks(clock: Clock, args, env: dict, timeout_s: float, tmp: Path) -> dict:
    rows = tmp / "benchmarks.json"
    argv = [sys.executable, __file__, "bench", "--device", args.device, "--rows", str(rows)]
    argv += ["--tiny"] * args.tiny + ["--compile"] * args.compile
    status, seconds, error = clock.run(argv, timeout_s, cwd=ROOT, env=env)
    result = {"seconds": round(seconds, 1), "compile": args.compile, "error": error or None}
    empty = {"sampler": [], "maml": []}
    return result | (json.loads(rows.read_text()) if status == 0 else empty)


def bench(device_arg: str, tiny: bool, compile: bool, rows: Path) -> None:
    """The benchmarks' rows as JSON at ``rows``: runs in a child process of ``run``."""
    import torch

    from fslearn import bench

    device = torch.device(device_arg)
    sampler = bench.sampler_speed(device, n_tasks=4 if tiny else 32, repeats=1 if tiny else 20)
    print(bench.format_table(sampler, bench.SAMPLER_COLUMNS), flush=True)
    maml = bench.maml_speed(
        device,
        settings=["omniglot-1"] if tiny else list(bench.MAML_SETTINGS),
        iterations=1 if tiny else 10,
        meta_batch=1 if tiny else None,
        compile=compile,
    )
    print(bench.format_table(maml, bench.MAML_COLUMNS), flush=True)
    rows.write_text(json.dumps({"sampler": sampler, "maml": maml}), encoding="utf-8")


def chapters(clock: Clock, scripts: list[Path], env: dict, timeout_s: float) -> list[dict]:
    results = []
    for script in scripts:
        print(f"--- {script.stem}", flush=True)
        # Run from chapters/, as the notebooks are, in a process of its own so that one
        # chapter's failure or memory does not reach the next.
        status, seconds, error = clock.run(
            [sys.executable, str(script)], timeout_s, cwd=CHAPTERS, env=env
        )
        passed = status == 0
        results.append(
            {
                "chapter": script.stem,
                "passed": passed,
                "seconds": round(seconds, 1),
                "error": None if passed else error,
            }
        )
        print(
            f"--- {script.stem}: {'passed' if passed else 'FAILED'} in {seconds:.0f} s", flush=True
        )
    return results


def check_out(args) -> None:
    """Refuse, before anything runs, a record or work folder that cannot be written, test
    paths that are not there, and a dry run as the package's record: only a CUDA run of the
    whole check may become it."""
    from fslearn.writable import check_writable

    try:
        check_writable(args.out, flag="--out")
        if args.work is not None:
            check_writable(args.work, flag="--work", folder=True)
    except OSError as error:
        raise SystemExit(str(error)) from None
    missing = [path for path in args.tests or () if not (ROOT / path).exists()]
    if missing:
        raise SystemExit(f"--tests {missing}: no such test file or folder under {ROOT}")
    if (args.device != "cuda" or args.tiny) and args.out.resolve().parent == PACKAGE_RESULTS:
        raise SystemExit(
            f"a --device {args.device}{' --tiny' if args.tiny else ''} run is a dry run and must "
            f"not be written to {args.out}: pass --out /tmp/gpu_validation.json"
        )
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(
                f"--device cuda, but torch {torch.__version__} sees no GPU (built for CUDA "
                f"{torch.version.cuda}): run on a machine with a GPU and a CUDA build of torch, "
                f"or pass --device cpu --tiny for a dry run"
            )


def run(args) -> dict:
    """Every step in turn; the record of what ran where, written to ``args.out``."""
    import torch

    from fslearn import bench

    check_out(args)
    start = time.monotonic()
    clock = Clock(args.deadline)
    env = environment(args.device, args.short)
    scripts = chapter_scripts(args.scripts, args.chapters or (TINY_CHAPTERS if args.tiny else None))
    tests = args.tests or (TINY_TESTS if args.tiny else ["tests"])
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        tested = unit_tests(clock, tests, env, args.test_timeout, work)
        benchmarked = benchmarks(clock, args, env, args.bench_timeout, work)
    ran = chapters(clock, scripts, env, args.chapter_timeout)
    configuration = "reduced (CPU)" if args.device == "cpu" else "short" if args.short else "full"
    record = {
        "date": datetime.date.today().isoformat(),
        "device": bench.device_name(args.device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "command": bench.command_line(["python", "benchmarks/gpu_check.py", *args.argv]),
        "configuration": configuration,
        "seconds": round(time.monotonic() - start, 1),
        "tests": tested,
        "chapters": ran,
        "benchmarks": benchmarked,
    }
    print(bench.format_validation(record))
    try:
        bench.write_validation(args.out, record)
    except ValueError as error:  # a run in which a step did not run: keep the record there
        raise SystemExit(
            f"{error}. Give the run more time (--deadline, now {args.deadline:g} s, and the "
            "steps' timeouts), or name fewer --tests / --chapters"
        ) from None
    print(f"wrote {args.out}")
    return record


def passed(record: dict) -> bool:
    """Whether every test, chapter and benchmark of ``record`` passed."""
    tests = record["tests"]
    return (
        bool(tests["files"])
        and not tests["timed_out"]
        and not any(c["failed"] or c["errors"] for c in tests["files"].values())
        and all(chapter["passed"] for chapter in record["chapters"])
        and record["benchmarks"]["error"] is None
    )


def seconds(text: str) -> float:
    """A time limit in seconds: a finite number above 0 (argparse's ``type``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0; got {text!r}")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    steps = parser.add_subparsers(dest="step", required=True)
    prep = steps.add_parser("prepare", help="write the chapter scripts (needs jupytext)")
    prep.add_argument("--scripts", type=Path, default=SCRIPTS)
    go = steps.add_parser("run", help="run the checks and write the record")
    go.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    go.add_argument("--out", type=Path, required=True, help="the record's JSON file")
    go.add_argument(
        "--short",
        action="store_true",
        help="FSLEARN_GPU_CHECK=short: full code paths, shorter budgets",
    )
    go.add_argument(
        "--tiny",
        action="store_true",
        help="dry run: one test file, one chapter, one benchmark iteration",
    )
    go.add_argument(
        "--compile", action="store_true", help="time MAML under torch.compile too (minutes)"
    )
    go.add_argument("--scripts", type=Path, default=SCRIPTS)
    go.add_argument("--tests", nargs="+", help="test files or folders (default: tests)")
    go.add_argument("--chapters", nargs="+", help="chapter names, e.g. 03_episodes (default: all)")
    go.add_argument("--work", type=Path, help="keep pytest's junit.xml and the benchmark rows here")
    go.add_argument("--deadline", type=seconds, default=450, help="seconds for the whole run")
    go.add_argument("--test-timeout", type=seconds, default=180)
    go.add_argument("--bench-timeout", type=seconds, default=90)
    go.add_argument("--chapter-timeout", type=seconds, default=90)
    child = steps.add_parser("bench", help="(used by run) the benchmarks' rows as JSON")
    child.add_argument("--device", required=True)
    child.add_argument("--rows", type=Path, required=True)
    child.add_argument("--tiny", action="store_true")
    child.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    if args.step == "prepare":
        from fslearn.writable import check_writable

        try:
            check_writable(args.scripts, flag="--scripts", folder=True)
        except OSError as error:
            raise SystemExit(str(error)) from None
        prepare(args.scripts)
    elif args.step == "bench":
        bench(args.device, args.tiny, args.compile, args.rows)
    else:
        args.argv = argv
        return 0 if passed(run(args)) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
