"""The exact engine's limits are not the user's problem (replay/engine.py, sweep/verify.py):
order slots sized from the experiment, grown when a replay still runs out, a lane that cannot be
replayed reported failed while the others complete; ``verify --part test`` writes its own files.
The slot-hungry class of the adversarial corpus: 20-level grids with 1-2 tick spacing, and
5-level grids whose entry + response latency (150 + 150 ms) exceed the 100 ms interval."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from mmsweep.replay import engine
from mmsweep.replay.engine import order_slots
from mmsweep.sweep.cli import main
from mmsweep.sweep.config import parse_experiment
from mmsweep.sweep.exact import replay_config, replay_lanes
from mmsweep.sweep.run import prepare, run_experiment

sys.path.insert(0, str(Path(__file__).parent / "corpus"))
import make_corpus  # noqa: E402

OLD_DEFAULT_SLOTS = 4 * 20 + 8  # the fixed count verify died with on these experiments


def slot_hungry(root: Path, name: str = "hungry"):
    spec = make_corpus.experiment(
        name, root / "runs", None,
        strategy={"policy": "grid", "params": {"order_qty": 0.01, "half_spread": 1, "skew": 0.0}},
        sweep={"n_levels": {"list": [5, 20]}, "grid_interval": {"list": [1, 2]}},
        latency={"entry_ms": 150}, split={"train_fraction": 0.6},
        verify={"response_ms": 150, "processes": 1, "top_k": 2, "sample": 2},
        constraints={"min_trades": 0})
    return parse_experiment(spec)


@pytest.fixture(scope="module")
def hungry(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSWEEP_CACHE", str(root / "cache"))
        exp = slot_hungry(root)
        yield root, exp, prepare(exp, log=lambda m: None)


def test_slot_bound() -> None:
    # per decision 2 x levels orders; each lives up to 2 * ceil(round trip / interval) + 2 decisions
    assert order_slots(20, 20_000_000, 100_000_000) == 2 * 20 * (2 * 1 + 3) + 8
    assert order_slots(5, 300_000_000, 100_000_000) == 2 * 5 * (2 * 3 + 3) + 8
    assert order_slots(5, 0, 100_000_000) == 2 * 5 * 3 + 8
    assert order_slots(5, 10**9, 10**8) > order_slots(5, 10**8, 10**8)


def test_slots_sized_grown_and_failures_isolated(hungry, monkeypatch) -> None:
    _, exp, prep = hungry
    lanes = np.arange(len(prep.lanes["n_levels"]))
    config = replay_config(exp)
    sized, metrics = replay_lanes(prep, lanes, config=config)
    assert not any(sized.final["Failure"])
    # the bound held: the replay never had to grow past the slots sized from the experiment
    assert sized.stats["order_slots_used"] == sized.stats["order_slots"] == order_slots(
        20, config.max_round_trip_ns(), exp.interval_ns)
    assert np.all(metrics["NumberOfTrades"] > 0)
    # too few slots: grown until the replay fits, with the same result
    grown, grown_metrics = replay_lanes(prep, lanes, config=dataclasses.replace(config, n_slots=8))
    assert grown.stats["order_slots_used"] > 8 and not any(grown.final["Failure"])
    for m in ("PnL", "NumberOfTrades", "FinalPosition"):
        np.testing.assert_array_equal(grown_metrics[m], metrics[m])
    # a ceiling the 20-level lanes cannot replay under: they fail, with the reason; the rest complete
    monkeypatch.setattr(engine, "MAX_SLOTS", OLD_DEFAULT_SLOTS)
    monkeypatch.setattr(engine, "MAX_BUS", config.bus_size)
    capped, capped_metrics = replay_lanes(prep, lanes, config=dataclasses.replace(config, n_slots=OLD_DEFAULT_SLOTS))
    wide = prep.lanes["n_levels"][lanes] == 20
    assert all("every order slot is in use" in f for f in capped.final["Failure"][wide])
    assert not any(capped.final["Failure"][~wide])
    assert np.all(np.isnan(capped_metrics["PnL"][wide])) and np.all(np.isnan(capped.equity[wide]))
    np.testing.assert_array_equal(capped_metrics["PnL"][~wide], metrics["PnL"][~wide])


def test_verify_completes_and_parts_keep_their_files(hungry) -> None:
    root, exp, _ = hungry
    run_dir = run_experiment(exp, log=lambda m: None)
    # What an earlier `verify` of the train part left: the test part must not touch it.
    train = {run_dir / "verify.parquet": b"train table", run_dir / "verify.json": b"{}",
             run_dir / "plots" / "verify_scatter.png": b"png", run_dir / "plots" / "verify_curves.png": b"png"}
    (run_dir / "plots").mkdir()
    for path, content in train.items():
        path.write_bytes(content)
    result = CliRunner().invoke(main, ["verify", str(run_dir), "--part", "test"])
    assert result.exit_code == 0, result.output
    assert all(path.read_bytes() == content for path, content in train.items())
    summary = json.loads((run_dir / "verify_test.json").read_text())
    assert summary["part"] == "test" and summary["failed_lanes"] == []
    v = pl.read_parquet(run_dir / "verify_test.parquet")
    assert v.height == 4 and v["exact_failure"].null_count() == 4 and v["exact_NumberOfTrades"].min() > 0
    assert set(v["n_levels"].to_list()) == {5.0, 20.0}  # both slot-hungry grids replayed
    for name in ("verify_test.parquet", "verify_test.json", "plots/verify_test_scatter.png",
                 "plots/verify_test_curves.png"):
        assert str(run_dir / name) in result.stdout
