"""`mmsweep verify`: a run's top lanes and a random sample on the exact engine, end to end."""
from __future__ import annotations

import dataclasses
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
    ranked = results.filter(pl.col("feasible")).sort("rank")["lane"].to_list()
    top, frontier = ranked[:3], ranked[3:12]  # the frontier: the fast top 3 x 4 (the default)
    v = pl.read_parquet(run_dir / "verify.parquet")
    assert v.height == 15 and v["lane"].n_unique() == 15
    assert v.filter(pl.col("selected") == "top")["lane"].to_list() == top
    assert v.filter(pl.col("selected") == "top")["rank"].to_list() == [1, 2, 3]
    assert v.filter(pl.col("selected") == "frontier")["lane"].to_list() == frontier
    sample = v.filter(pl.col("selected") == "sample")["lane"].to_list()
    assert len(sample) == 3 and not set(sample) & set(top + frontier)
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
    assert set(v["fast_rank_in_verified"].drop_nulls().to_list()) <= set(range(1, 16))

    data = json.loads((run_dir / "verify.json").read_text())
    spearman = data["agreement"]["spearman"]
    for key in ("objective", "PnL", "NumberOfTrades"):
        assert spearman[key]["rho"] is None or -1.0 <= spearman[key]["rho"] <= 1.0
        assert spearman[key]["n"] + spearman[key]["dropped"] == 15
    assert 0.0 <= data["agreement"]["top_k_overlap"]["overlap"] <= 1.0
    assert data["agreement"]["fast_vs_results"]["ok"]
    assert data["engine"]["config"]["queue"] == "power"
    assert data["engine"]["stats"]["candidates"] == 15 and data["engine"]["stats"]["events"] > 0
    # the exact side's own best among the verified lanes, and where the fast #1 stands on it
    best = data["agreement"]["fast_best"]
    exact_sr = dict(zip(v["lane"].to_list(), v["exact_SR"].to_list()))
    exact_ok = {r["lane"] for r in v.iter_rows(named=True) if r["exact_NumberOfTrades"] >= 1}
    by_exact = sorted(exact_ok, key=lambda lane: (-exact_sr[lane], lane))
    assert best["lane"] == top[0] and best["best_lane"] == by_exact[0]
    assert best["exact_rank"] == by_exact.index(top[0]) + 1
    assert best["regret"] == pytest.approx(exact_sr[by_exact[0]] - exact_sr[top[0]])
    assert data["lanes"]["frontier"] == 4 and data["lanes"]["frontier_lanes"] == 12
    est = data["agreement"]["sample_estimates"]
    assert top[0] in exact_ok
    beat = sum(lane in exact_ok and exact_sr[lane] > exact_sr[top[0]] for lane in sample)
    assert est["beat_fast_best"]["sample_beating"] == beat and est["beat_fast_best"]["sample"] == 3
    assert est["spearman"]["n"] == 3 and est["spearman"]["resamples"] == 2000
    assert set(data["fill_models"]) == {"cross"}
    assert data["timing"]["total_s"] > 0 and data["part"] == "train"

    for name, min_width in (("verify_scatter.png", 800), ("verify_curves.png", 800)):
        path = run_dir / "plots" / name
        assert path.stat().st_size > 10_000, name
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] >= 400 and img.shape[1] >= min_width, (name, img.shape)
        assert img[..., :3].std() > 0.05  # not a blank canvas
    assert not list(run_dir.rglob("*.partial"))
    assert "Spearman SR" in summary["table"] and "top-3 overlap" in summary["table"]
    for text in ("top-3 overlap over the frontier", "exact rank of the fast #1", "regret", "bootstrap",
                 "random lanes beating the fast #1"):
        assert text in summary["table"], text
    assert not (run_dir / "plots" / "verify_fill_models.png").exists()  # one fill model: no comparison plot
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
    result = CliRunner().invoke(main, ["verify", str(copy), "--top", "2", "--sample", "1", "--frontier", "2"])
    assert result.exit_code == 0, result.output
    assert "Spearman" in result.output and str(copy / "verify.parquet") in result.output
    assert pl.read_parquet(copy / "verify.parquet")["selected"].to_list() == ["top"] * 2 + ["frontier"] * 2 + ["sample"]
    bad = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert bad.exit_code == 2 and "results.parquet" in bad.output


def test_degenerate_engine_reproduces_the_kernel(runs) -> None:
    """With the kernel's contract (no queue, no response latency, crosses per message, entry
    latency shorter than the interval) the exact engine fills exactly as the float64 kernel."""
    exp = tiny_experiment("parity", {"top_k": 3, "sample": 3, "seed": 2, "queue": "none", "response_ms": 0,
                                     "cross_per_message": True, "processes": 1})
    assert exp.latency.entry_ns < exp.interval_ns
    run_dir = run_experiment(exp, out_root=runs / "runs", log=lambda m: None)
    summary = verify_run(run_dir, exhaustive=True, log=lambda m: None)  # every lane
    v = pl.read_parquet(run_dir / "verify.parquet")
    assert v.height == 18 and "rest" in v["selected"].to_list()
    np.testing.assert_array_equal(v["exact_NumberOfTrades"].to_numpy(), v["fast_NumberOfTrades"].to_numpy())
    assert v["fast_NumberOfTrades"].sum() > 0
    np.testing.assert_allclose(v["exact_PnL"].to_numpy(), v["fast_PnL"].to_numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(v["exact_FinalPosition"].to_numpy(), v["fast_FinalPosition"].to_numpy(), atol=1e-12)
    assert summary["agreement"]["spearman"]["NumberOfTrades"]["rho"] == pytest.approx(1.0)
    whole = summary["agreement"]["exhaustive"]
    # lanes with equal PnL on one side and PnL differing in the last digits on the other are ties
    assert whole["spearman"]["PnL"]["rho"] == pytest.approx(1.0) and abs(whole["pnl_gap"]["median_gap"]) < 1e-9


def test_exhaustive_with_two_fill_models(run_dir, verified, runs, tmp_path) -> None:
    """Every lane replayed, cross and touch compared with the same replay; the whole-sweep numbers
    recomputed here from verify.parquet, the touch side from a touch run of its own."""
    from scipy.stats import spearmanr

    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "results.parquet"):
        shutil.copy(run_dir / name, copy)
    framed = pl.read_parquet(run_dir / "verify.parquet")  # the default verify of the same run
    summary = verify_run(copy, top_k=3, sample=3, frontier=1, fill_models="touch", exhaustive=True,
                         log=lambda m: None)
    v = pl.read_parquet(copy / "verify.parquet").sort("lane")
    assert v.height == 18 and v["lane"].to_list() == list(range(18))
    counts = dict(zip(*np.unique(v["selected"].to_numpy(), return_counts=True)))
    assert counts["top"] == 3 and counts["sample"] == 3 and counts["rest"] + counts.get("frontier", 0) == 12
    # the same lanes replay to the same exact metrics whichever way they were selected
    same = framed.join(v, on="lane", suffix="_x")
    np.testing.assert_array_equal(same["exact_PnL"].to_numpy(), same["exact_PnL_x"].to_numpy())

    results = pl.read_parquet(run_dir / "results.parquet").sort("lane")
    np.testing.assert_allclose(v["fast_SR"].to_numpy(), results["train_SR"].to_numpy(), rtol=1e-12)
    exp = tiny_experiment("tiny_touch", {"top_k": 3, "sample": 3, "seed": 1, "processes": 1})
    exp = dataclasses.replace(exp, fill_model="touch")
    touch = pl.read_parquet(run_experiment(exp, out_root=runs / "touch", log=lambda m: None) /
                            "results.parquet").sort("lane")
    np.testing.assert_allclose(v["fast_touch_SR"].to_numpy(), touch["train_SR"].to_numpy(), rtol=1e-12)
    assert v["fast_touch_rank"].to_list() == touch["rank"].to_list()

    data = json.loads((copy / "verify.json").read_text())
    assert set(data["fill_models"]) == {"cross", "touch"} and data["lanes"]["exhaustive"]
    # values equal to 10 significant digits are ties
    v = v.with_columns([pl.col(c).map_elements(lambda x: float(f"{x:.10g}"), return_dtype=pl.Float64)
                        for c in ("fast_SR", "fast_touch_SR", "exact_SR", "fast_PnL", "fast_touch_PnL", "exact_PnL")])
    exact_ok = (v["exact_NumberOfTrades"].to_numpy() >= 1) & np.isfinite(v["exact_SR"].to_numpy())
    exact_top = set(v.filter(pl.Series(exact_ok)).sort(["exact_SR", "lane"], descending=[True, False])["lane"]
                    .to_list()[:10])
    for model, col in (("cross", "fast_SR"), ("touch", "fast_touch_SR")):
        ex = data["fill_models"][model]["exhaustive"]
        rho = spearmanr(v[col].to_numpy(), v["exact_SR"].to_numpy()).statistic
        assert ex["spearman"]["objective"]["rho"] == pytest.approx(rho)
        assert ex["spearman"]["PnL"]["rho"] == pytest.approx(
            spearmanr(v[col.replace("SR", "PnL")].to_numpy(), v["exact_PnL"].to_numpy()).statistic)
        fast_ok = (v[col.replace("SR", "NumberOfTrades")].to_numpy() >= 1) & np.isfinite(v[col].to_numpy())
        fast_top = set(v.filter(pl.Series(fast_ok)).sort([col, "lane"], descending=[True, False])["lane"]
                       .to_list()[:10])
        assert ex["top_overlap"]["10"]["common"] == len(fast_top & exact_top)
        assert ex["top_overlap"]["20"]["k"] == 18  # capped at the lanes the fast side ranks
        gap = (v["exact_PnL"] - v[col.replace("SR", "PnL")]).to_numpy()[fast_ok & exact_ok]  # lanes both rank
        assert ex["pnl_gap"]["lanes"] == int((fast_ok & exact_ok).sum()) > 0
        assert ex["pnl_gap"]["median_gap"] == pytest.approx(float(np.median(gap)))
        assert ex["pnl_gap"]["exact_above"] == pytest.approx(float(np.mean(gap > 0)))
        assert ex["checks"]["sweep_beating"] == ex["fast_best"]["sweep_beating"]
    assert data["agreement"]["exhaustive"] == data["fill_models"]["cross"]["exhaustive"]
    assert data["exhaustive_estimate"]["lanes"] == 18 and data["exhaustive_estimate"]["seconds"] > 0
    table = summary["table"]
    assert "exhaustive: every lane of the sweep replayed (18)" in table
    header = next(line for line in table.splitlines() if line.split() == ["cross", "touch"])
    assert header
    path = copy / "plots" / "verify_fill_models.png"
    img = mpimg.imread(path)
    assert img.shape[0] >= 500 and img.shape[1] >= 1000 and img[..., :3].std() > 0.05
    assert str(path) in summary["files"].values()

    # a later verify of one fill model leaves no stale comparison plot behind
    verify_run(copy, top_k=1, sample=0, frontier=1, log=lambda m: None)
    assert not path.exists()


def test_exhaustive_and_frontier_refusals(run_dir, verified, tmp_path) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="frontier must be a whole number >= 1"):
            verify_run(run_dir, frontier=bad, log=lambda m: None)
    with pytest.raises(InputError, match=r"fill model 'nosuch' is not available .*available: cross, "):
        verify_run(run_dir, fill_models="cross,touch,nosuch", log=lambda m: None)
    with pytest.raises(InputError, match="max_exact_minutes"):
        verify_run(run_dir, exhaustive=True, max_exact_minutes=0, log=lambda m: None)
    before = (run_dir / "verify.json").read_bytes()
    with pytest.raises(InputError, match=r"exhaustive replay of 18 lanes would take about .* s .*per lane measured"
                                         r".*limit of 1e-06 min; raise --max-exact-minutes"):
        verify_run(run_dir, exhaustive=True, max_exact_minutes=1e-6, log=lambda m: None)
    assert (run_dir / "verify.json").read_bytes() == before  # refused before anything was written
    for args, words in ((["--frontier", "0"], "frontier"), (["--fill-models", "touch,nosuch"], "'nosuch'"),
                        (["--exhaustive", "--max-exact-minutes", "0.000001"], "--max-exact-minutes"),
                        (["--max-exact-minutes", "nan"], "--max-exact-minutes")):
        result = CliRunner().invoke(main, ["verify", str(run_dir), *args])
        assert result.exit_code == 2, (args, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and words in errors[0], (args, result.output)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["verify", str(empty), "--exhaustive"])
    assert result.exit_code == 2 and "no results.parquet" in result.output


def test_replay_and_score_takes_lanes_or_parameter_values(run_dir, verified) -> None:
    """The path a tuner re-checks candidates with: parameter values that need not be lanes."""
    from mmsweep.sweep.run import prepare
    from mmsweep.sweep.verify import replay_and_score

    v = pl.read_parquet(run_dir / "verify.parquet")
    stored = dict(zip(v["lane"].to_list(), v["exact_SR"].to_list()))
    pick = np.array(v["lane"].to_list()[-1:] + v["lane"].to_list()[:1])
    exp = parse_experiment(json.loads((run_dir / "config.json").read_text())["experiment"])
    prep = prepare(exp, log=lambda m: None)
    by_lane = replay_and_score(prep, pick)
    params = {k: np.asarray(v)[pick] for k, v in prep.lanes.items()}
    by_value = replay_and_score(prep, params=params)
    blocked = replay_and_score(prep, pick, block=1)
    for m in METRIC_COLUMNS:
        np.testing.assert_array_equal(by_lane.metrics[m], by_value.metrics[m], err_msg=m)
        np.testing.assert_array_equal(by_lane.metrics[m], blocked.metrics[m], err_msg=m)
    assert by_lane.objective.tolist() == [stored[int(lane)] for lane in pick]
    np.testing.assert_array_equal(by_lane.feasible, by_lane.metrics["NumberOfTrades"] >= 1)
    assert by_lane.record is not None and blocked.record is None and blocked.stats["passes"] == 2
