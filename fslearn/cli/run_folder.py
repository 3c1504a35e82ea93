"""The run folder of ``fslearn train`` (``--out``): what marks one, and one writer at a time.

``fslearn train`` writes ``RUN_FILES`` into ``--out``: ``checkpoint.pt`` (every
``--checkpoint-every`` steps), ``metrics.jsonl`` (with each checkpoint), ``config.json``
(with the first checkpoint of a new run, or when a resumed run starts) and
``results.json`` (at the end). So a run that fails before its first checkpoint leaves
no file, and a checkpoint.pt without a config.json is a run killed between the two.

A folder is an *fslearn run* when its ``checkpoint.pt`` reads as an fslearn checkpoint
(:func:`~fslearn.read_checkpoint`) that ``fslearn train`` wrote — its config records the
method and the dataset — and its ``config.json``, if there is one, is a JSON object that
records the same method and dataset. A new run refuses a folder holding any of
``RUN_FILES``; ``--resume`` refuses one that is not an fslearn run. A folder whose
config.json records a run but whose checkpoint.pt cannot be read (a copy cut short) is a
damaged run: both refuse it, saying how to continue. Files of other names are left alone.

While a run may write the folder it holds ``fslearn.lock`` (:class:`RunLock`), created
with ``O_CREAT | O_EXCL`` and holding the process's PID and host, so a second ``fslearn
train`` into the same folder is refused instead of mixing its files with the first's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from ..training.checkpoint import Checkpoint
from ..training.checkpoint_file import DamagedCheckpointError, read_checkpoint
from ..writable import check_writable
from .support import UsageError, write_json

#: What ``fslearn train`` writes into ``--out``.
RUN_FILES = ("checkpoint.pt", "config.json", "metrics.jsonl", "results.json")
#: The lock file a run holds in ``--out`` while it may write there.
LOCK = "fslearn.lock"


def _recorded_run(out: Path) -> tuple[str, str] | None:
    """The ``(method, dataset)`` that ``out``'s config.json records, or None without one."""
    try:
        record = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    run = (record.get("method"), record.get("dataset"))
    return run if all(isinstance(field, str) and field for field in run) else None


def _not_a_run(out: Path) -> str | None:
    """Why ``out`` (which holds a checkpoint.pt) is not an fslearn run, or None when it is one.

    Raises:
        UsageError: ``out`` is an fslearn run (its config.json says so) whose checkpoint.pt
            cannot be read; the message says how to continue.
    """
    try:
        config = read_checkpoint(out / "checkpoint.pt")["config"]
    except DamagedCheckpointError as error:
        run = _recorded_run(out)
        if run is None:
            return f"its checkpoint.pt is not an fslearn checkpoint ({error.reason})"
        present = [name for name in RUN_FILES if os.path.lexists(out / name)]
        raise UsageError(
            f"{out} holds an fslearn run ({run[0]} on {run[1]}, says its config.json) whose "
            f"checkpoint.pt is damaged ({error.reason}): put back a whole copy of checkpoint.pt "
            f"(a copy or sync that was cut short leaves such a file) and --resume continues the "
            f"run; or delete {', '.join(present)} there to start it again, or choose another --out"
        ) from None
    except (ValueError, OSError):
        return "its checkpoint.pt is not an fslearn checkpoint"
    if not config.get("method") or not config.get("dataset"):
        return "its checkpoint.pt was not written by fslearn train (no method or dataset)"
    if not os.path.lexists(out / "config.json"):
        return None  # a run killed right after its first checkpoint: resuming writes it
    run = (config["method"], config["dataset"])
    if _recorded_run(out) != run:
        return f"its config.json is not the record of its checkpoint's {run[0]} run on {run[1]}"
    return None


def check_folder(out: Path, *, resume: bool) -> None:
    """Raise a UsageError unless ``fslearn train`` may write into ``out``; changes nothing.

    A new run needs a folder without any of ``RUN_FILES``, or none yet; ``resume`` needs
    an fslearn run (see the module's docstring).
    """
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: choose another --out")
    try:
        check_writable(out, flag="--out", folder=True)
    except OSError as error:
        raise UsageError(str(error)) from None
    present = [name for name in RUN_FILES if os.path.lexists(out / name)]
    has_checkpoint = "checkpoint.pt" in present
    if resume and not has_checkpoint:
        raise UsageError(
            f"cannot resume: there is no checkpoint at {out / 'checkpoint.pt'}; leave out "
            "--resume to start a new run"
        )
    reason = _not_a_run(out) if has_checkpoint else "no fslearn checkpoint.pt"
    if resume and reason:
        raise UsageError(
            f"cannot resume in {out}: it is not an fslearn run ({reason}); pass the --out of the "
            "run to continue, or start a new run in another --out"
        )
    if resume or not present:
        return
    if not reason:
        raise UsageError(
            f"{out} already holds a run: pass --resume to continue it, or choose another --out"
        )
    raise UsageError(
        f"--out {out} holds {', '.join(present)}, which fslearn train would overwrite, and is "
        f"not an fslearn run ({reason}): choose another --out"
    )


def snapshot(out: Path) -> dict:
    """Each entry of ``out`` but the lock, with its inode, size and mtime: equal snapshots,
    no change."""
    entries = {}
    for entry in out.iterdir() if out.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):  # another writer's temporary file, gone
            stat = entry.lstat()
            entries[entry.name] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    entries.pop(LOCK, None)
    return entries


def _terminated(signum, frame):
    print(
        "fslearn train: terminated; `fslearn train … --resume` continues from the last checkpoint",
        file=sys.stderr,
    )
    raise SystemExit(128 + signum)  # unwinds, so `kill PID` removes the lock as Ctrl-C does


def _alive(holder: dict) -> bool | None:
    """Whether the process that wrote lock contents ``holder`` runs; None: on another host."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():  # our own PID: reused since it died
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """``fslearn.lock`` in a run folder: one ``fslearn train`` at a time may write there.

    :meth:`check` refuses, without writing, a folder another live process holds;
    ``with lock:`` takes it (making the folder if needed), and on leaving — also on an
    error, Ctrl-C or SIGTERM — removes it, and the folders it made if they are still
    empty. A lock left by a process that is gone from this host (killed with SIGKILL, or
    with its machine) is taken over with a note.
    """

    def __init__(self, out: Path):
        self.out = out
        self.path = out / LOCK
        self.record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "token": uuid.uuid4().hex,
        }
        self.made: list[Path] = []
        self.on_term = None  # SIGTERM's handler before the lock was taken

    def _read(self, path: Path | None = None) -> dict | None:
        """The lock's contents; ``{}`` when unreadable, None when there is no lock."""
        try:
            record = json.loads((path or self.path).read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _refusal(self, holder: dict) -> UsageError:
        if not holder.get("pid"):
            return UsageError(
                f"--out {self.out} is locked by {self.path}, which names no process; if no "
                f"fslearn train is writing there, delete {self.path}"
            )
        gone = "" if _alive(holder) else f"; if it is no longer running, delete {self.path}"
        return UsageError(
            f"--out {self.out} is in use by another fslearn train (PID {holder['pid']} on "
            f"{holder.get('host')}, since {holder.get('since')}; lock file {self.path}): wait "
            f"for it to end, or choose another --out{gone}"
        )

    def check(self) -> None:
        """Raise a UsageError naming the other process if a live one holds the lock."""
        holder = self._read()
        if holder is not None and _alive(holder) is not False:
            raise self._refusal(holder)

    def _take_over(self, stale: dict) -> None:
        aside = self.path.with_name(f".{LOCK}.{os.getpid()}.stale")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return  # another process took it over first; the next attempt finds it
        if self._read(aside) != stale:  # taken over and held anew since we read it: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            os.unlink(aside)
            return
        os.unlink(aside)
        print(
            f"fslearn train: note: took over {self.path}, left by PID {stale['pid']}, which is "
            "no longer running",
            file=sys.stderr,
        )

    def __enter__(self) -> RunLock:
        missing = self.out
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        if not self.out.exists():
            self.out.mkdir(parents=True, exist_ok=True)
            self.made = [self.out, *[p for p in self.out.parents if p.is_relative_to(missing)]]
        try:
            for _ in range(3):
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    holder = self._read()
                    if holder is not None and _alive(holder) is not False:
                        raise self._refusal(holder) from None
                    if holder:
                        self._take_over(holder)
                    continue
                with os.fdopen(fd, "w") as file:
                    json.dump(self.record, file)
                if threading.current_thread() is threading.main_thread():
                    self.on_term = signal.signal(signal.SIGTERM, _terminated)
                return self
            raise UsageError(f"could not take {self.path}: other processes keep taking it")
        except BaseException:
            self._remove_made()
            raise

    def __exit__(self, *exc) -> None:
        if self.on_term is not None:
            signal.signal(signal.SIGTERM, self.on_term)
        if self._read() == self.record:
            self.path.unlink()
        self._remove_made()

    def _remove_made(self) -> None:
        for folder in self.made:  # deepest first; a folder the run wrote into stays
            try:
                folder.rmdir()
            except OSError:
                return


class RunCheckpoint(Checkpoint):
    """A :class:`~fslearn.Checkpoint` that also writes the run's ``config.json``.

    It writes it once the recipe has checked its settings: when a resumed run has been
    restored, or beside a new run's first checkpoint. A run that fails before then
    leaves no file. The checkpoints of torchrun's other ranks (``writer=False``) only read.
    """

    def __init__(self, path, *, record: dict, writer: bool = True, **options):
        super().__init__(path, **options)
        self.record = record
        self.recorded = not writer

    def _write_record(self) -> None:
        if not self.recorded:
            write_json(self.path.parent / "config.json", self.record)
            self.recorded = True

    def restore(self, history, **options) -> None:
        super().restore(history, **options)
        if self.resume:
            self._write_record()

    def save(self, history) -> None:
        super().save(history)
        self._write_record()
