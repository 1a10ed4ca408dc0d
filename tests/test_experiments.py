"""The bundled study experiments run end to end (shrunk: minutes of market, two lanes), on the
synthetic market and, with --data, on the real sample; the fit step and the trade-flow feature."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from mmsweep.sweep.cli import main
from mmsweep.sweep.config import load_experiment, parse_experiment
from mmsweep.sweep.datafile import load_with_data
from mmsweep.sweep.errors import InputError
from mmsweep.sweep.features import FeatureSpec, compute_feature
from mmsweep.sweep.fit import regress
from mmsweep.sweep.run import run_experiment

REPO = Path(__file__).resolve().parents[1]
STUDIES = ("grid_trading", "grid_skew", "apt_spot_futures", "avellaneda_stoikov", "pricing_framework",
           "reference_vamp")
REAL = REPO / "experiments" / "data" / "binance_btcusdt.yaml"


def shrunk(name: str, hours: float = 0.04) -> dict:
    """The experiment with a few minutes of market and two lanes (the first axis' first two values)."""
    spec = yaml.safe_load((REPO / "experiments" / f"{name}.yaml").read_text())
    spec["data"]["synthetic"]["hours"] = hours
    axes = list(spec["sweep"])
    spec["sweep"] = {axes[0]: {"list": _values(spec["sweep"][axes[0]])[:2]},
                     **{a: {"list": _values(spec["sweep"][a])[:1]} for a in axes[1:]}}
    spec["constraints"] = {"min_trades": 0}
    spec["run"] = {"chunk_lanes": 64, "dtype": "float32"}
    params = spec["strategy"].get("params", {})
    if params.get("n_levels", 1) > 5:  # compile time grows with the levels; the structure is what is tested
        params["n_levels"] = 5
    return spec


def _values(axis) -> list[float]:
    if isinstance(axis, list):
        return axis
    kind, args = next(iter(axis.items()))
    if kind == "list":
        return list(args)
    start, stop, num = args
    return list(np.linspace(start, stop, num) if kind == "linspace" else np.logspace(start, stop, num))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSWEEP_CACHE", str(root / "cache"))
        yield root


@pytest.mark.parametrize("name", STUDIES)
def test_study_loads_in_full(name) -> None:
    exp = load_experiment(REPO / "experiments" / f"{name}.yaml")
    assert exp.data.source == "synthetic" and exp.description
    assert exp.sweep.blocks  # every study sweeps something


@pytest.mark.parametrize("name", STUDIES)
def test_study_runs_end_to_end(name, cache) -> None:
    exp = parse_experiment(shrunk(name), str(REPO / "experiments" / f"{name}.yaml"))
    log: list[str] = []
    run = run_experiment(exp, out_root=cache / "runs", log=log.append)
    results = pl.read_parquet(run / "results.parquet")
    assert results.height == 2 and results["rank"].null_count() <= 2
    assert np.isfinite(results["train_PnL"].to_numpy()).all() and "test_PnL" in results.columns
    stored = json.loads((run / "config.json").read_text())["experiment"]
    if exp.fit is not None:
        fitted = stored["fit"]["fitted"]["values"]
        assert set(fitted) == {p for p, _ in exp.fit.params} and any("fit:" in m for m in log)
        for p, v in fitted.items():  # the lanes trade with the fitted coefficients
            np.testing.assert_allclose(results[p].to_numpy(), v, rtol=1e-12)
            assert stored["strategy"]["params"][p] == pytest.approx(v)
        again = parse_experiment(stored)
        assert again.fit.fitted is not None and again.strategy.params[exp.fit.params[0][0]] == pytest.approx(
            fitted[exp.fit.params[0][0]])


def test_study_on_the_real_sample_with_one_option(shared_data, cache, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MMSWEEP_SHARED_DATA", str(shared_data))
    path = tmp_path / "grid_trading.yaml"
    path.write_text(yaml.safe_dump(shrunk("grid_trading")))
    result = CliRunner().invoke(main, ["run", str(path), "--data", str(REAL), "--out", str(cache / "runs")])
    assert result.exit_code == 0, result.output
    run = cache / "runs" / "grid_trading-binance_btcusdt"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data"]["quoted"].endswith("btcusdt_20240808.gz")
    assert pl.read_parquet(run / "results.parquet").height == 2


def test_fit_on_the_real_sample_skips_a_window_longer_than_the_train_part(shared_data, cache, monkeypatch) -> None:
    """The 5-minute spot window only warms up on 345 s of data: its beta stays 0, with a warning."""
    from mmsweep.sweep.fit import apply_fit

    monkeypatch.setenv("MMSWEEP_SHARED_DATA", str(shared_data))
    exp = load_with_data(REPO / "experiments" / "apt_spot_futures.yaml", REAL)
    assert exp.name == "apt_spot_futures-binance_btcusdt" and exp.data.source == "files"
    with pytest.warns(UserWarning) as caught:
        fitted = apply_fit(exp, log=lambda m: None)
    assert any("beta left at 0" in str(w.message) for w in caught)
    assert fitted.strategy.params["beta"] == 0.0 and fitted.fit.fitted["skipped"] == ["beta"]
    assert fitted.strategy.params["beta_1"] != 0.0 and fitted.fit.fitted["rows"] > 100


def test_fit_validation() -> None:
    base = shrunk("apt_spot_futures")
    for fit, needle in (({"horizon_s": 10, "params": ["beta_3"]}, "signals\\[3\\]"),
                        ({"horizon_s": 10, "params": ["gamma"]}, "not a fittable"),
                        ({"horizon_s": 0, "params": ["beta"]}, "horizon_s"),
                        ({"horizon_s": 10, "params": ["beta", "beta"]}, "twice")):
        with pytest.raises(InputError, match=needle):
            parse_experiment({**base, "fit": fit})
    swept = {**base, "sweep": {"beta": {"list": [0, 1]}}}
    with pytest.raises(InputError, match="cannot be swept"):
        parse_experiment(swept)
    grid = shrunk("grid_trading")
    with pytest.raises(InputError, match="no fittable"):
        parse_experiment({**grid, "fit": {"horizon_s": 1, "params": ["skew"]}})


def test_regression_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 2))
    y = x @ np.array([0.3, -1.2]) + 0.1 * rng.standard_normal(5000)
    out = regress(y, x)
    np.testing.assert_allclose(out["coef"], [0.3, -1.2], atol=0.005)
    assert out["r2"] > 0.99 and out["rows"] == 5000 and np.all(out["se"] < 0.005)


def test_trade_imbalance_by_hand() -> None:
    s = 1_000_000_000
    spec = FeatureSpec.parse({"kind": "trade_imbalance", "window_s": 2})
    assert spec.name == "trade_imbalance_2s"
    view = {"mid": np.full(6, 100.0), "sample_ts": np.arange(6) * s,
            # buys of 3 at 0.5 s and 1.0 s, a sell of 2 at 2.5 s, nothing after
            "trade_ts": np.array([s // 2, s, 5 * s // 2]), "trade_side": np.array([1.0, 1.0, -1.0]),
            "trade_qty": np.array([3.0, 3.0, 2.0])}
    got = compute_feature(spec, view, interval_ns=s, tick_size=0.1)
    assert np.isnan(got[:2]).all()  # warm-up: the first 2 s
    # windows (t - 2 s, t]: both buys at 2 s; only the sell at 3 s and 4 s; no trade at 5 s
    np.testing.assert_allclose(got[2:], [1.0, -1.0, -1.0, 0.0])
    view["trade_ts"] = np.array([s // 2, 3 * s // 2, 3 * s // 2])  # a buy and a sell in one window
    np.testing.assert_allclose(compute_feature(spec, view, interval_ns=s, tick_size=0.1)[2], (6 - 2) / 8)
