"""Walk-forward / k-fold blocks, ranking across folds, the smoothed objective and the run warnings
(sweep/selection.py, sweep/diagnostics.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from mmsweep.sweep import selection
from mmsweep.sweep.config import parse_experiment
from mmsweep.sweep.diagnostics import distinct_outcomes, findings
from mmsweep.sweep.errors import InputError
from mmsweep.sweep.run import experiment_hash, run_experiment

REPO = Path(__file__).resolve().parents[1]


def spec(**overrides) -> dict:
    s = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    s["data"]["synthetic"]["hours"] = 0.03
    s["sweep"] = {"half_spread": {"list": [0.5, 1.0, 2.0, 3.0, 4.0]}, "skew": {"list": [0.01, 0.1, 1.0]},
                  "grid_interval": {"list": [0.5, 1.0]}}
    s["constraints"] = {"min_trades": 1}
    s["run"] = {"chunk_lanes": 64, "dtype": "float64"}
    s.update(overrides)
    return s


def test_fold_plans() -> None:
    assert selection.Folds("walk_forward", 3).plan() == [((0,), 1), ((1,), 2), ((2,), 3)]
    assert selection.Folds("walk_forward", 3, anchored=True).plan() == [((0,), 1), ((0, 1), 2), ((0, 1, 2), 3)]
    assert selection.Folds("k_fold", 3).plan() == [((1, 2), 0), ((0, 2), 1), ((0, 1), 2)]
    assert selection.Folds("walk_forward", 3).blocks == 4 and selection.Folds("k_fold", 3).blocks == 3
    bounds = selection.block_bounds(0, 1005, selection.Folds("k_fold", 4, align_rows=10))
    assert bounds == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    with pytest.raises(InputError, match="too short"):
        selection.block_bounds(0, 50, selection.Folds("k_fold", 4, align_rows=10))


def test_split_and_objective_config() -> None:
    plain = parse_experiment(spec(name="plain"))
    assert plain.split.folds is None and "walk_forward" not in plain.to_dict()["split"]
    assert set(plain.to_dict()["objective"]) == {"metric", "maximize"}  # older experiments keep their hash
    wf = parse_experiment(spec(name="wf", split={"train_fraction": 0.7, "walk_forward": {"folds": 3, "anchored": True}},
                               objective={"metric": "SR", "rank_on": "quantile", "quantile": 0.5, "neighbourhood": 1}))
    assert wf.split.folds == selection.Folds("walk_forward", 3, True, align_rows=10)
    again = parse_experiment(wf.to_dict())
    assert again == wf and experiment_hash(again) == experiment_hash(wf)
    assert experiment_hash(wf) != experiment_hash(parse_experiment(spec(name="wf")))
    bad = [({"split": {"walk_forward": {"folds": 2}, "k_fold": {"folds": 2}}}, "not both"),
           ({"split": {"k_fold": {"folds": 1}}}, "folds"),
           ({"split": {"walk_forward": {"folds": 2, "train": 3}}}, "train"),
           ({"objective": {"metric": "SR", "rank_on": "mean"}}, "walk_forward"),
           ({"objective": {"metric": "SR", "rank_on": "median"}}, "rank_on"),
           ({"objective": {"metric": "SR", "neighbourhood": -1}}, "neighbourhood")]
    for override, needle in bad:
        with pytest.raises(InputError, match=needle):
            parse_experiment(spec(name="bad", **override))


def _results(exp, blocks: np.ndarray, **extra) -> pl.DataFrame:
    n = blocks.shape[1]
    cols = {"lane": np.arange(n), "feasible": np.ones(n, bool), "train_SR": blocks.mean(axis=0)}
    cols.update({f"block{b}_SR": blocks[b] for b in range(blocks.shape[0])})
    cols.update({f"block{b}_PnL": blocks[b] for b in range(blocks.shape[0])})
    cols.update(extra)
    return pl.DataFrame(cols)


def test_ranking_across_folds_by_hand() -> None:
    exp = parse_experiment(spec(name="k", split={"train_fraction": 0.7, "k_fold": {"folds": 4}},
                                objective={"metric": "SR", "rank_on": "mean"}))
    n = 30
    blocks = np.zeros((4, n))
    blocks[:, 0] = [10, -9, -9, -9]  # one great block: best train mean? no: mean -4.25
    blocks[:, 1] = [1, 1, 1, 1]
    blocks[:, 2] = [4, 4, -1, 4]
    res = _results(exp, blocks)
    np.testing.assert_allclose(selection.ranking_score(res, exp)[:3], [-4.25, 1.0, 2.75])
    q = parse_experiment(spec(name="q", split={"train_fraction": 0.7, "k_fold": {"folds": 4}},
                              objective={"metric": "SR", "rank_on": "quantile", "quantile": 0.0}))
    np.testing.assert_allclose(selection.ranking_score(res, q)[:3], [-9.0, 1.0, -1.0])  # the worst fold
    # infeasible lanes and lanes with an undefined block are not ranked
    blocks[1, 3] = np.nan
    res = _results(exp, blocks).with_columns(pl.Series("feasible", np.arange(n) != 4))
    score = selection.ranking_score(res, exp)
    assert np.isnan(score[3]) and np.isnan(score[4]) and np.isfinite(score[5])


def test_neighbourhood_prefers_a_plateau_to_a_peak() -> None:
    exp = parse_experiment(spec(name="n", objective={"metric": "SR", "neighbourhood": 1}))  # 5 x 3 x 2 grid
    sizes, is_grid = selection.grid_shape(exp)
    assert sizes == [5, 3, 2] and all(is_grid)
    y = np.zeros((5, 3, 2))
    y[0, 0, 0] = 10.0  # a lone peak
    y[3:, :, :] = 4.0  # a plateau
    flat = y.reshape(-1)
    smoothed = selection.smooth(flat, exp, 1)
    # the peak's neighbourhood (2 x 2 x 2 cells inside the grid) averages 10 / 8
    assert smoothed.reshape(5, 3, 2)[0, 0, 0] == pytest.approx(10 / 8)
    assert smoothed.reshape(5, 3, 2)[4, 1, 0] == pytest.approx(4.0)
    assert np.argmax(smoothed) != 0 and np.argmax(flat) == 0
    holes = flat.copy()
    holes[1] = np.nan  # an infeasible neighbour is left out, an infeasible lane stays unranked
    out = selection.smooth(holes, exp, 1)
    assert np.isnan(out[1]) and out.reshape(5, 3, 2)[0, 0, 0] == pytest.approx(10 / 7)


def test_warnings_by_hand() -> None:
    exp = parse_experiment(spec(name="w", constraints={"min_trades": 5}, split={"train_fraction": 0.7}))
    n = 30
    pnl = np.r_[np.full(10, 3.0), 100.0 + np.arange(20.0)]  # the first ten lanes are one outcome
    res = pl.DataFrame({"lane": np.arange(n), "train_SR": pnl, "train_PnL": pnl, "train_NumberOfTrades": np.full(n, 9),
                        "train_TradingValue": pnl * 100, "train_MaxAbsPosition": np.ones(n), "train_Fees": -pnl / 10,
                        "train_MaxDrawdown": np.zeros(n), "test_SR": -pnl, "test_PnL": -pnl - 1,
                        "feasible": np.ones(n, bool), "rank": np.argsort(np.argsort(-pnl, kind="stable")) + 1})
    assert distinct_outcomes(res)[0] == 21
    manifest = {"frames": {"rows": 3600, "train_rows": 2520, "meta": {"warmup_rows": {"spot.rolling_return_300s": 2999,
                                                                                      "imbalance_5": 0}}}}
    got = {f.code: f for f in findings(res, exp, manifest)}
    assert set(got) == {"duplicates", "warmup", "test_losers"}
    assert got["duplicates"].facts["distinct"] == 21
    assert got["warmup"].facts["feature"] == "spot.rolling_return_300s" and got["warmup"].facts["share"] == 1.0
    assert got["test_losers"].facts["losers"] == 10 and got["test_losers"].facts["spearman"] == pytest.approx(-1.0)
    none = res.with_columns(pl.lit(False).alias("feasible"), pl.lit(None, pl.Int64).alias("rank"))
    codes = {f.code: f for f in findings(none, exp, manifest)}
    assert "no_feasible" in codes and "test_losers" not in codes
    rebate = res.with_columns(pl.Series("train_Fees", np.full(n, -200.0)))  # more rebate than PnL
    assert "rebate_only" in {f.code for f in findings(rebate, exp, manifest)}


@pytest.fixture(scope="module")
def fold_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("folds")
    exp = parse_experiment(spec(name="folds", split={"train_fraction": 0.7, "k_fold": {"folds": 4}},
                                objective={"metric": "SR", "rank_on": "mean", "neighbourhood": 1}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSWEEP_CACHE", str(root / "cache"))
        run = run_experiment(exp, out_root=root / "runs", log=lambda m: None)
    return exp, run


def test_fold_run_end_to_end(fold_run) -> None:
    exp, run = fold_run
    res = pl.read_parquet(run / "results.parquet").sort("lane")
    manifest = json.loads((run / "manifest.json").read_text())
    for b in range(4):
        assert {f"block{b}_SR", f"block{b}_PnL", f"block{b}_NumberOfTrades"} <= set(res.columns)
    # each block is a part of its own, backtested from flat: the blocks' trades add up to at most the train part's
    trades = sum(res[f"block{b}_NumberOfTrades"].to_numpy() for b in range(4))
    assert np.all(trades <= res["train_NumberOfTrades"].to_numpy() + 4) and trades.sum() > 0
    # ranked by the stored score, which is the smoothed mean of the fold test SR
    score = res["score"].to_numpy()
    np.testing.assert_allclose(score, selection.ranking_score(res, exp), equal_nan=True)
    ranked = res.filter(pl.col("rank").is_not_null()).sort("rank")
    assert np.all(np.diff(ranked["score"].to_numpy()) <= 0)
    table = selection.fold_table(res, exp)
    assert [r["test_block"] for r in table] == [0, 1, 2, 3]
    summary = selection.overfitting(res, exp, manifest)
    assert 0.0 <= summary["pbo"]["pbo"] <= 1.0 and summary["pbo"]["combinations"] == 6
    assert 2 <= summary["pbo"]["trials"] <= int(res["feasible"].sum())
    assert 0.0 <= summary["dsr"]["dsr"] <= 1.0 and summary["dsr"]["lane"] == int(ranked["lane"][0])
    text = selection.format_overfitting(summary)
    assert "PBO (CSCV, 4 blocks" in text and "deflated SR" in text


def test_fold_run_report(fold_run) -> None:
    from mmsweep.sweep.report_html import build_report

    _, run = fold_run
    page = build_report(run, top=2, exact=False, log=lambda m: None)
    text = page.read_text()
    assert "folds.png" in text and (page.parent / "folds.png").stat().st_size > 10_000
    for needle in ("PBO (CSCV)", "deflated SR, lane", "mean of 4 k-fold fold test SR", "its rank on test",
                   "not replayed on the exact engine"):
        assert needle in text, needle
