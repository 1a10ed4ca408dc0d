"""A run folder's safety: one writer at a time, files that are whole or absent, and checks that
what a resumed run continues was computed from the same experiment and the same data.

* **Lock.** ``<run>/.lock`` is held with an OS file lock (``flock``) for as long as a command
  writes into the folder; a second command gets an error naming the holder (pid, host, command,
  start time).  The OS drops the lock when its process dies, even by SIGKILL, so a lock is
  never stale.
* **Atomic files.** Every file is written under a temporary ``*.partial`` name in the same
  folder, flushed to disk and renamed over the target: a kill or a full disk leaves the old
  file or none, never half of one.  Stale ``*.partial`` files are removed under the lock.
* **Inputs.** The sha256 of every input file (data files, the order-latency file) is recorded
  when a run starts; ``--resume`` recomputes them and refuses a file that changed.
* Folders that cannot be created or written (read-only, ``run.out`` naming a file, a full
  disk) are :class:`InputError`\\ s naming the path.
"""
from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import InputError

LOCK_NAME = ".lock"
PARTIAL = ".partial"


def _os_problem(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (read-only?)"
    return exc.strerror or str(exc)


def make_folder(path: Path, what: str, key: str | None = None) -> None:
    """``mkdir -p`` with errors a user can act on: a file in the way, no permission."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise InputError(f"cannot create the {what} folder: {blocker} is a file, not a folder", source=str(path),
                         key=key) from None
    except OSError as exc:
        raise InputError(f"cannot create the {what} folder: {_os_problem(exc)}", source=str(path), key=key) from None


class FolderLock:
    """An exclusive OS lock on ``<folder>/.lock``, held until :meth:`release` (or the process
    ends).  ``purpose`` (e.g. ``mmsweep run``) is recorded for whoever finds it taken."""

    def __init__(self, folder: Path, purpose: str) -> None:
        self.path = folder / LOCK_NAME
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"cannot write in the run folder: {_os_problem(exc)}", source=str(folder)) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            os.close(self.fd)
            raise InputError(f"the run folder is in use by {holder}; wait for it to finish (two commands writing "
                             "one run folder would mix their files)", source=str(folder)) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                "command": " ".join(sys.argv[:4]), "since": dt.datetime.now().isoformat(timespec="seconds")}
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps(info).encode(), 0)
        except OSError:  # the holder's description is a courtesy; the lock itself is held
            pass

    def _holder(self) -> str:
        try:
            info = json.loads(os.pread(self.fd, 4096, 0) or b"{}")
            return (f"{info.get('purpose', 'another command')} (pid {info.get('pid')} on {info.get('host')}, "
                    f"since {info.get('since')}: {info.get('command')})")
        except (OSError, ValueError):
            return "another command"

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def partial_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}{PARTIAL}")


def write_atomic(path: Path, write: Callable[[Path], None], what: str = "") -> None:
    """Write ``path`` whole or not at all: ``write(tmp)`` fills a temporary file in the same
    folder, which is synced and renamed over ``path``.  OS errors (a full disk, a read-only
    folder) become an :class:`InputError` naming the file, and the temporary file is removed."""
    tmp = partial_path(path)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"cannot write {what or path.name}: {_os_problem(exc)}; the file was left as it was",
                         source=str(path)) from None
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str)))


def write_parquet(df: Any, path: Path) -> None:
    write_atomic(path, lambda tmp: df.write_parquet(tmp))


def read_json(path: Path, what: str) -> dict:
    """A JSON object written by :func:`write_json`; an unreadable one is an :class:`InputError`."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"the {what} is unreadable ({type(exc).__name__}: {exc}); the run folder is damaged: "
                         "move it away and start the run again", source=str(path)) from None
    if not isinstance(obj, dict):
        raise InputError(f"the {what} is not a JSON object; the run folder is damaged", source=str(path))
    return obj


def remove_partials(folder: Path) -> int:
    """Delete ``*.partial`` files left by killed writers (call under the lock); returns how many."""
    n = 0
    for tmp in folder.rglob(f"*{PARTIAL}"):
        try:
            tmp.unlink()
            n += 1
        except OSError:
            pass
    return n


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"cannot read the input file: {_os_problem(exc)}", source=path) from None
    return digest.hexdigest()


def input_files(exp) -> list[str]:
    """Every file the experiment reads (absolute paths): data files, the order-latency file."""
    files: list[str] = []
    if exp.data.files:
        for source in exp.data.files.values():
            files.extend(source.paths)
            if getattr(source, "snapshot", None):  # an initial snapshot of an npz sequence
                files.append(source.snapshot)
    if exp.latency.file:
        files.append(exp.latency.file)
    return sorted(set(files))


def fingerprint_inputs(exp) -> dict[str, str]:
    """``{path: sha256}`` of :func:`input_files`."""
    return {path: file_sha256(path) for path in input_files(exp)}


def check_same_inputs(recorded: dict[str, str], current: dict[str, str], config_path: Path) -> None:
    """Refuse to resume when an input file changed, appeared or went since the run started."""
    for path in sorted(set(recorded) | set(current)):
        before, now = recorded.get(path), current.get(path)
        if before == now:
            continue
        if before is None:
            why = "is read by the experiment now but was not when the run started"
        elif now is None:
            why = "was read when the run started but is not now"
        else:
            why = f"changed since the run started (sha256 {before[:12]}... then, {now[:12]}... now)"
        raise InputError(f"input file {path} {why}: the finished chunks were computed from other data; restore "
                         "the file or start a new run (another name)", source=str(config_path))
