"""Run folders that cannot be mixed or broken (sweep/runfolder.py, sweep/run.py): the lock, atomic
files, resume checks on the experiment, the input files and the chunks, folders that cannot be
written.  The run-folder class of the adversarial corpus (tests/corpus/make_corpus.py)."""
from __future__ import annotations

import errno
import json
import shutil
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from mmsweep.sweep.cli import main
from mmsweep.sweep.config import load_experiment, parse_experiment
from mmsweep.sweep.errors import InputError
from mmsweep.sweep.run import run_experiment
from mmsweep.sweep.runfolder import FolderLock

sys.path.insert(0, str(Path(__file__).parent / "corpus"))
import make_corpus  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*capture clock is off:UserWarning")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, shared_data):
    """A capture the tests may edit, and an experiment on it (8 lanes in 4 chunks of 2)."""
    root = tmp_path_factory.mktemp("runfolder")
    capture = make_corpus._write_lines(root / "capture.txt", make_corpus._binance_lines(shared_data))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSWEEP_CACHE", str(root / "cache"))
        yield root, capture


def experiment(root: Path, name: str, capture: Path, **changes):
    return parse_experiment(make_corpus.experiment(name, root / "runs", capture, **changes), base_dir=root)


def quiet(message: str) -> None:
    pass


def test_resume_recomputes_damaged_chunks_and_refuses_edited_inputs(folder) -> None:
    root, capture = folder
    exp = experiment(root, "resume", capture)
    run_dir = run_experiment(exp, log=quiet, max_chunks=3)
    chunks = run_dir / "chunks"
    first = pl.read_parquet(chunks / "chunk_00000.parquet")
    # A kill mid-write in an older version, a disk error: a truncated chunk, stale partial files.
    raw = (chunks / "chunk_00000.parquet").read_bytes()
    (chunks / "chunk_00000.parquet").write_bytes(raw[: len(raw) // 2])
    (chunks / "chunk_00003.parquet.4242.partial").write_bytes(b"half")
    (run_dir / "results.parquet.4242.partial").write_bytes(b"half")
    log: list[str] = []
    with pytest.warns(UserWarning, match=r"chunk_00000.parquet: checkpoint chunk unreadable .* computed again"):
        run_experiment(exp, resume=True, log=log.append)
    assert any("removed 2 unfinished temporary file(s)" in m for m in log)
    assert any("resuming, 2 chunk(s) already done" in m for m in log)  # chunks 1 and 2 kept
    assert not list(run_dir.rglob("*.partial"))
    assert pl.read_parquet(chunks / "chunk_00000.parquet").equals(first)  # recomputed, the same lanes
    results = pl.read_parquet(run_dir / "results.parquet")
    assert sorted(results["lane"].to_list()) == list(range(8))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["inputs"] and str(capture) in config["inputs"] and config["frames_cache_key"]

    # The capture edited in place: resume must not mix old and new data.
    lines = capture.read_text().splitlines()
    capture.write_text("\n".join(lines[:-1]) + "\n")
    try:
        with pytest.raises(InputError, match=rf"input file {capture} changed since the run started") as info:
            run_experiment(exp, resume=True, log=quiet)
        assert info.value.source == str(run_dir / "config.json")
        # verify replays the run's data too, so it refuses the same way
        result = CliRunner().invoke(main, ["verify", str(run_dir), "--top", "1", "--sample", "0"])
        assert result.exit_code == 2 and f"input file {capture} changed" in result.stderr
    finally:
        capture.write_text("\n".join(lines) + "\n")
    # Another experiment under the same name: refused by its hash.
    other = experiment(root, "resume", capture, interval_ms=200, metrics={"resample_s": 1.0})
    with pytest.raises(InputError, match="experiment changed since this run started"):
        run_experiment(other, resume=True, log=quiet)


def test_concurrent_runs_are_refused(folder) -> None:
    root, capture = folder
    exp = experiment(root, "locked", capture)
    run_dir = root / "runs" / "locked"
    run_dir.mkdir(parents=True)
    with FolderLock(run_dir, "mmsweep run locked"):  # another run holding the folder
        with pytest.raises(InputError, match=r"in use by mmsweep run locked \(pid \d+ on .*since"):
            run_experiment(exp, log=quiet)
        spec_path = root / "locked.yaml"
        spec_path.write_text(yaml.safe_dump(make_corpus.experiment("locked", root / "runs", capture)))
        result = CliRunner().invoke(main, ["run", str(spec_path)])
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.exit_code == 2 and len(errors) == 1 and "in use by mmsweep run locked" in errors[0]
    assert not (run_dir / "config.json").exists()  # the refused run wrote nothing
    run_experiment(exp, log=quiet, max_chunks=1)  # once released, the folder is usable


def test_damaged_run_folders_are_clear_errors(folder) -> None:
    root, capture = folder
    exp = experiment(root, "damaged", capture)
    run_dir = root / "runs" / "damaged"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("")  # what a kill during a non-atomic write left
    with pytest.raises(InputError, match=r"config.json is unreadable .*damaged") as info:
        run_experiment(exp, resume=True, log=quiet)
    assert info.value.source == str(run_dir / "config.json")
    (run_dir / "config.json").unlink()
    (run_dir / "chunks").mkdir()
    (run_dir / "chunks" / "chunk_00000.parquet").write_bytes(b"PAR1")
    with pytest.raises(InputError, match="checkpoint chunks but no config.json"):
        run_experiment(exp, resume=True, log=quiet)
    shutil.rmtree(run_dir)
    # run.out naming a file: one error line, nothing written
    blocker = root / "not_a_folder"
    blocker.write_text("x")
    spec = make_corpus.experiment("blocked", blocker / "runs", capture)
    spec_path = root / "blocked.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(main, ["run", str(spec_path)])
    assert result.exit_code == 2 and f"{blocker} is a file, not a folder" in result.stderr
    assert "run.out" in result.stderr and blocker.read_text() == "x"
    with pytest.raises(InputError, match="is a file, not a folder"):
        run_experiment(load_experiment(spec_path), log=quiet)


def test_full_disk_leaves_nothing_half_written(folder, monkeypatch) -> None:
    root, capture = folder
    exp = experiment(root, "full", capture)
    run_dir = run_experiment(exp, log=quiet, max_chunks=1)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    real = pl.DataFrame.write_parquet

    def disk_full(self, file, *args, **kwargs):
        real(self, file, *args, **kwargs)
        Path(file).write_bytes(Path(file).read_bytes()[:100])  # a partial write, then the error
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", disk_full)
    with pytest.raises(InputError, match=r"cannot write chunk_00001.parquet: no space left on the device") as info:
        run_experiment(exp, resume=True, log=quiet)
    assert info.value.source == str(run_dir / "chunks" / "chunk_00001.parquet")
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # no partial file, no half chunk; config.json rewritten whole and equal
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: (_ for _ in ()).throw(
        OSError(errno.EROFS, "Read-only file system")))
    with pytest.raises(InputError, match=r"cannot write config.json: permission denied \(read-only\?\)"):
        run_experiment(exp, resume=True, log=quiet)
    monkeypatch.undo()
    assert json.loads((run_dir / "config.json").read_text())["hash"]  # the old one, whole
    assert not list(run_dir.rglob("*.partial"))


def test_event_and_frames_files_are_whole_or_absent(tmp_path, monkeypatch) -> None:
    import numpy as np

    from mmsweep.sweep.data.events import Events, Instrument, make_table
    from mmsweep.sweep.data.store import save_events
    from mmsweep.sweep.frames import FrameSpec, build_frames

    events = Events(make_table(exch_ts=[1, 2], local_ts=[1, 2], kind=[1, 1], side=[1, -1], price=[99.0, 101.0],
                               qty=[1.0, 1.0]), Instrument("X", 1.0, 1.0))
    target = save_events(events, tmp_path / "events.npz")
    before = target.read_bytes()
    real = np.savez

    def disk_full(file, *args, **kwargs):
        real(file, *args, **kwargs)
        file.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError):
        save_events(events, target)
    assert target.read_bytes() == before and not list(tmp_path.glob("*.partial"))
    # a frames cache that cannot be written: a warning, the frames are used uncached
    cache = tmp_path / "cache"
    book = make_table(exch_ts=[0, 0, 10**9, 2 * 10**9, 3 * 10**9], local_ts=[0, 0, 10**9, 2 * 10**9, 3 * 10**9],
                      kind=[1, 1, 1, 1, 1], side=[1, -1, 1, -1, 1], price=[99.0, 101.0, 99.0, 101.0, 99.0],
                      qty=[1.0, 1.0, 2.0, 2.0, 3.0])
    with pytest.warns(UserWarning, match="is not writable .*not cached"):
        frames = build_frames(Events(book, Instrument("X", 1.0, 1.0), "book"), FrameSpec(), cache_dir=cache)
    assert len(frames) > 0 and not list(tmp_path.rglob("*.partial"))
    # the command line: an output folder under a file is one error line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.undo()
    result = CliRunner().invoke(main, ["data", "synth", "--hours", "0.001", "-o", str(blocker / "out")])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and len(errors) == 1 and str(blocker) in errors[0], result.output
