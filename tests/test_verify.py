"""`mmsweep verify`: a run's top lanes and a random sample on the exact engine, end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from mmsweep.sweep.cli import main
from mmsweep.sweep.config import parse_experiment
from mmsweep.sweep.errors import InputError
from mmsweep.sweep.run import METRIC_COLUMNS, run_experiment
from mmsweep.sweep.verify import verify_run

REPO = Path(__file__).resolve().parents[1]
PARAMS = ("half_spread", "grid_interval", "skew", "n_levels", "order_qty", "max_position", "relative")


def tiny_experiment(name: str, verify: dict):
    """The demo's structure on ~2 minutes of market, 3 x 3 x 2 = 18 lanes, float64."""
    spec = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    spec["name"] = name
    spec["data"]["synthetic"]["hours"] = 0.03
    spec["sweep"] = {"half_spread": {"list": [0.5, 1.0, 2.0]}, "skew": {"list": [0.01, 0.1, 1.0]},
                     "grid_interval": {"list": [0.5, 1.0]}}
    spec["constraints"] = {"min_trades": 1}
    spec["verify"] = verify
    spec["run"] = {"chunk_lanes": 64, "dtype": "float64"}
    assert spec["fill_model"] == "cross"
    return parse_experiment(spec)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSWEEP_CACHE", str(root / "cache"))
        yield root


@pytest.fixture(scope="module")
def run_dir(runs) -> Path:
    exp = tiny_experiment("tiny", {"top_k": 3, "sample": 3, "seed": 1, "processes": 1})  # queue: power
    return run_experiment(exp, out_root=runs / "runs", log=lambda m: None)


@pytest.fixture(scope="module")
def verified(run_dir):
    log: list[str] = []
    summary = verify_run(run_dir, top_k=3, sample=3, log=log.append)
    return summary, log


def test_verify_outputs(run_dir, verified) -> None:
    summary, log = verified
    results = pl.read_parquet(run_dir / "results.parquet")
    top = results.filter(pl.col("feasible")).sort("rank")["lane"].to_list()[:3]
    v = pl.read_parquet(run_dir / "verify.parquet")
    assert v.height == 6 and v["lane"].n_unique() == 6
    assert v.filter(pl.col("selected") == "top")["lane"].to_list() == top
    assert v.filter(pl.col("selected") == "top")["rank"].to_list() == [1, 2, 3]
    sample = v.filter(pl.col("selected") == "sample")["lane"].to_list()
    assert len(sample) == 3 and not set(sample) & set(top)
    expected = {"lane", "selected", "rank", "fast_rank_in_verified", "exact_rank_in_verified", *PARAMS}
    expected |= {f"{side}_{m}" for m in METRIC_COLUMNS for side in ("fast", "exact")}
    assert expected <= set(v.columns)
    # The recomputed fast side is the sweep's, metric for metric.
    joined = v.join(results, on="lane", how="left")
    for m in METRIC_COLUMNS:
        np.testing.assert_allclose(joined[f"fast_{m}"].to_numpy(), joined[f"train_{m}"].to_numpy(), rtol=1e-12,
                                   equal_nan=True, err_msg=m)
    for p in ("half_spread", "skew", "grid_interval"):
        assert joined[p].to_list() == joined[f"{p}_right"].to_list()
    trades = v["exact_NumberOfTrades"].to_numpy()
    assert np.all(np.isfinite(trades)) and np.all(trades >= 0)
    assert set(v["fast_rank_in_verified"].drop_nulls().to_list()) <= set(range(1, 7))

    data = json.loads((run_dir / "verify.json").read_text())
    spearman = data["agreement"]["spearman"]
    for key in ("objective", "PnL", "NumberOfTrades"):
        assert spearman[key]["rho"] is None or -1.0 <= spearman[key]["rho"] <= 1.0
        assert spearman[key]["n"] + spearman[key]["dropped"] == 6
    assert 0.0 <= data["agreement"]["top_k_overlap"]["overlap"] <= 1.0
    assert data["agreement"]["fast_vs_results"]["ok"]
    assert data["engine"]["config"]["queue"] == "power"
    assert data["engine"]["stats"]["candidates"] == 6 and data["engine"]["stats"]["events"] > 0
    assert data["timing"]["total_s"] > 0 and data["part"] == "train"

    for name, min_width in (("verify_scatter.png", 800), ("verify_curves.png", 800)):
        path = run_dir / "plots" / name
        assert path.stat().st_size > 10_000, name
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] >= 400 and img.shape[1] >= min_width, (name, img.shape)
        assert img[..., :3].std() > 0.05  # not a blank canvas
    assert not list(run_dir.rglob("*.partial"))
    assert "Spearman SR" in summary["table"] and "top-3 overlap" in summary["table"]
    assert log[-1] == summary["table"] and any("exact replay" in line for line in log)


def test_failure_keeps_previous_outputs(run_dir, verified, monkeypatch) -> None:
    import mmsweep.sweep.report as report

    before = {p: p.read_bytes() for p in (run_dir / "verify.parquet", run_dir / "verify.json")}

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report, "verify_curves", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        verify_run(run_dir, top_k=1, sample=1, log=lambda m: None)
    assert {p: p.read_bytes() for p in before} == before
    assert not list(run_dir.rglob("*.partial"))


def test_clear_errors(run_dir, tmp_path) -> None:
    with pytest.raises(InputError, match="results.parquet"):
        verify_run(tmp_path, log=lambda m: None)
    for kw in ({"top_k": -1}, {"sample": 1.5}, {"top_k": 0, "sample": 0}):
        with pytest.raises(InputError):
            verify_run(run_dir, log=lambda m: None, **kw)
    with pytest.raises(InputError, match="part"):
        verify_run(run_dir, part="validation", log=lambda m: None)
    none_feasible = tmp_path / "none"
    none_feasible.mkdir()
    shutil.copy(run_dir / "config.json", none_feasible)
    results = pl.read_parquet(run_dir / "results.parquet")
    results.with_columns(pl.lit(False).alias("feasible"), pl.lit(None, pl.UInt32).alias("rank")).write_parquet(
        none_feasible / "results.parquet")
    with pytest.raises(InputError, match="constraints"):
        verify_run(none_feasible, log=lambda m: None)


def test_cli_verify(run_dir, tmp_path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "results.parquet"):
        shutil.copy(run_dir / name, copy)
    result = CliRunner().invoke(main, ["verify", str(copy), "--top", "2", "--sample", "1"])
    assert result.exit_code == 0, result.output
    assert "Spearman" in result.output and str(copy / "verify.parquet") in result.output
    assert pl.read_parquet(copy / "verify.parquet").height == 3
    bad = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert bad.exit_code == 2 and "results.parquet" in bad.output


def test_degenerate_engine_reproduces_the_kernel(runs) -> None:
    """With the kernel's contract (no queue, no response latency, crosses per message, entry
    latency shorter than the interval) the exact engine fills exactly as the float64 kernel."""
    exp = tiny_experiment("parity", {"top_k": 3, "sample": 3, "seed": 2, "queue": "none", "response_ms": 0,
                                     "cross_per_message": True, "processes": 1})
    assert exp.latency.entry_ns < exp.interval_ns
    run_dir = run_experiment(exp, out_root=runs / "runs", log=lambda m: None)
    summary = verify_run(run_dir, log=lambda m: None)
    v = pl.read_parquet(run_dir / "verify.parquet")
    assert v.height == 6
    np.testing.assert_array_equal(v["exact_NumberOfTrades"].to_numpy(), v["fast_NumberOfTrades"].to_numpy())
    assert v["fast_NumberOfTrades"].sum() > 0
    np.testing.assert_allclose(v["exact_PnL"].to_numpy(), v["fast_PnL"].to_numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(v["exact_FinalPosition"].to_numpy(), v["fast_FinalPosition"].to_numpy(), atol=1e-12)
    assert summary["agreement"]["spearman"]["NumberOfTrades"]["rho"] == pytest.approx(1.0)
