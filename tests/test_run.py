"""`mmsweep run`: the run folder, ranking, and resume after a hard kill."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from mmsweep.sweep.config import load_experiment
from mmsweep.sweep.errors import InputError
from mmsweep.sweep.run import run_experiment

REPO = Path(__file__).resolve().parents[1]


def small_experiment(tmp_path: Path, name: str = "small", chunk_lanes: int = 16) -> Path:
    spec = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    spec["name"] = name
    spec["data"]["synthetic"]["hours"] = 0.05
    spec["sweep"] = {"half_spread": {"linspace": [0.5, 4, 4]}, "skew": {"list": [0.0, 0.1, 0.5, 1.0]},
                     "grid_interval": {"list": [0.5, 1.0, 2.0, 3.0]}}
    spec["run"] = {"chunk_lanes": chunk_lanes, "dtype": "float32", "out": str(tmp_path / "runs")}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_run_folder_and_ranking(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path / "cache"))
    exp = load_experiment(small_experiment(tmp_path))
    run_dir = run_experiment(exp, log=lambda m: None)
    results = pl.read_parquet(run_dir / "results.parquet")
    assert results.height == 64 and sorted(results["lane"].to_list()) == list(range(64))
    assert {"config.json", "manifest.json", "results.parquet"} <= {p.name for p in run_dir.iterdir()}
    feasible = results.filter(pl.col("feasible"))
    assert feasible.height > 0
    # Ranked by train SR, best first, constraints honoured.
    sr = feasible["train_SR"].to_list()
    assert sr == sorted(sr, reverse=True) and feasible["rank"].to_list()[:3] == [1, 2, 3]
    assert feasible["train_NumberOfTrades"].min() >= exp.constraints.min_trades
    assert "test_PnL" in results.columns
    with pytest.raises(InputError, match="--resume"):
        run_experiment(exp, log=lambda m: None)


def test_killed_sweep_resumes_to_identical_results(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path / "cache"))  # the same frames in every process
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # one lane per chunk: 64 chunks, so that the kill lands mid-run however fast a chunk is
    path = small_experiment(tmp_path, "killed", chunk_lanes=1)
    reference = small_experiment(tmp_path, "reference", chunk_lanes=1)
    chunks = tmp_path / "runs" / "killed" / "chunks"
    proc = subprocess.Popen([sys.executable, "-m", "mmsweep.sweep.cli", "run", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(chunks.glob("chunk_*.parquet"))) < 2:
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)  # a hard kill: no cleanup code runs
    proc.wait()
    finished = len(list(chunks.glob("chunk_*.parquet")))
    assert 2 <= finished < 64, f"kill landed after {finished} chunks"
    assert not (tmp_path / "runs" / "killed" / "results.parquet").exists()
    log = []
    resumed = run_experiment(load_experiment(path), resume=True, log=log.append)
    assert any(f"{finished} chunk(s) already done" in line for line in log)
    assert sum("chunk " in line and "lanes/s" in line for line in log) == 64 - finished  # nothing repeated
    full = run_experiment(load_experiment(reference), log=lambda m: None)
    a = pl.read_parquet(resumed / "results.parquet").drop("lane").sort("half_spread", "skew", "grid_interval")
    b = pl.read_parquet(full / "results.parquet").drop("lane").sort("half_spread", "skew", "grid_interval")
    assert a.equals(b)
