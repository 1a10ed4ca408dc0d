"""Inverse (coin-margined) instruments: inferred from the data, overridable, accounted in the coin
by every engine, and checked against hftbacktest's ``inverse_asset`` on the real COIN-M capture
(ETHUSD_PERP, 10 USD contracts)."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import hbt_oracle as H
from mmsweep.kernels.policies.base import Market
from mmsweep.replay import ReplayConfig, build_data, replay_policy
from mmsweep.sweep.data.hftnpz import read_hftbacktest_npz
from mmsweep.sweep.data.instruments import apply_override, currencies, infer_contract, units
from mmsweep.sweep.errors import InputError

TICK, LOT, SIZE = 0.01, 1.0, 10.0


@pytest.fixture(scope="module")
def cm(shared_data):
    path = shared_data / "hftbacktest" / "cm" / "ethusd_perp_20240808.npz"
    events = read_hftbacktest_npz(str(path), tick_size=TICK, lot_size=LOT)
    return {"events": events, "raw": H.load_npz(path), "decisions": H.decision_grid(str(path), TICK)}


def test_engine_accounts_in_the_coin_like_hftbacktest_inverse_asset(cm) -> None:
    """The same fills, position and equity (ETH) at every decision as hftbacktest 2.4.4 with
    ``inverse_asset(10)``; a linear run of the same strategy differs (another currency)."""
    decisions = cm["decisions"][:1500]
    mid0 = 2682.0
    ticks_per_bp = mid0 * 1e-4 / TICK
    params = dict(half_spread=1.0 * ticks_per_bp, skew=0.2 * ticks_per_bp, grid_interval=0.5 * ticks_per_bp,
                  n_levels=3, order_qty=5.0, max_position=60.0)
    theirs = H.run_hbt_grid(cm["raw"], decision_ts=decisions, tick_size=TICK, lot_size=LOT, queue="power",
                            queue_n=2.0, inverse_contract_size=SIZE, **params)
    market = Market(TICK, LOT, int(round(mid0 / TICK)), (), 0.1, 5)
    config = ReplayConfig(queue="power", queue_n=2.0, cross_per_message=False, processes=1, inverse=True,
                          contract_size=SIZE)
    ours = replay_policy(cm["events"].table, tick_size=TICK, lot_size=LOT, decision_ts=decisions,
                         end_ts=int(decisions[-1]), features=np.zeros((len(decisions), 0)), market=market,
                         policy="grid", static=None, params={k: np.array([v], float) for k, v in params.items()},
                         config=config, data=build_data(cm["events"].table, TICK, LOT))
    seen = theirs["fills"][theirs["fills"]["local_ts"] <= decisions[-1]]
    mine = ours.fills[ours.fills["local_ts"] <= decisions[-1]]
    assert len(seen) > 20
    key = lambda f, p: sorted(zip(f["exch_ts"].tolist(), f["side"].tolist(), p.tolist(), f["qty"].tolist()))  # noqa
    assert key(mine, np.round(mine["price"] / TICK).astype(np.int64)) == key(seen, seen["price_tick"])
    np.testing.assert_allclose(ours.position[0], theirs["position"], atol=1e-9)
    equity = -theirs["balance"] - SIZE * theirs["position"] / theirs["mid"] - theirs["fee"]  # ETH
    scale = np.abs(equity).max()
    assert scale > 1e-6  # the strategy made or lost something
    np.testing.assert_allclose(ours.equity[0], equity, atol=1e-12, rtol=0)
    linear = replay_policy(cm["events"].table, tick_size=TICK, lot_size=LOT, decision_ts=decisions,
                           end_ts=int(decisions[-1]), features=np.zeros((len(decisions), 0)), market=market,
                           policy="grid", static=None, params={k: np.array([v], float) for k, v in params.items()},
                           config=dataclasses.replace(config, inverse=False, contract_size=1.0))
    assert np.abs(linear.equity[0] - ours.equity[0]).max() > 100 * scale  # USD-sized, not ETH-sized


def test_instrument_inference() -> None:
    assert infer_contract("ETHUSD_PERP", "binance-coinm").contract_size == 10.0
    assert infer_contract("BTCUSD_240927", "").contract_size == 100.0
    assert infer_contract("BTCUSD_PERP", "binance-delivery").inverse
    assert not infer_contract("BTCUSDT_240927", "binance-futures").inverse  # USD-M delivery: linear
    assert not infer_contract("BTCUSDT", "binance-futures").inverse
    assert infer_contract("XBTUSD", "bitmex").contract_size == 1.0
    assert infer_contract("BTC-PERPETUAL", "deribit").contract_size == 10.0
    assert infer_contract("ETH-PERPETUAL", "deribit").contract_size == 1.0
    assert not infer_contract("ETH-PERPETUAL", "binance-futures").inverse
    assert currencies("ETHUSD_PERP") == ("ETH", "USD")
    assert currencies("XBTUSD") == ("BTC", "USD")
    assert units({"symbol": "ETHUSD_PERP", "inverse": True, "contract_multiplier": 10.0})["pnl"] == "ETH"
    assert units({"symbol": "BTCUSDT", "inverse": False})["pnl"] == "USDT"


def test_readers_infer_coinm_and_overrides_win(shared_data) -> None:
    from mmsweep.sweep.data.loader import load_events

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = load_events(str(shared_data / "binance" / "cm" / "ethusd_perp_20240808.gz"))
    assert raw.instrument.venue == "binance-coinm" and raw.instrument.inverse
    assert raw.instrument.contract_multiplier == 10.0
    npz = load_events(str(shared_data / "hftbacktest" / "cm" / "ethusd_perp_20240808.npz"))
    assert npz.instrument.symbol == "ETHUSD_PERP" and npz.instrument.inverse  # from the file name
    given = apply_override(npz, {"contract_size": 100})
    assert given.instrument.contract_multiplier == 100.0 and given.instrument.inverse
    assert "given" in given.meta["contract"]["how"]
    lin = apply_override(load_events(str(shared_data / "hftbacktest" / "cm" / "ethusd_perp_20240808.npz")),
                         {"inverse": False})
    assert not lin.instrument.inverse and lin.instrument.contract_multiplier == 1.0
    with pytest.raises(InputError, match="contract_size"):
        apply_override(npz, {"contract_size": -1})
    with pytest.raises(InputError, match="unknown key"):
        apply_override(npz, {"contractsize": 10})


def _cm_experiment(shared_data, **sweep) -> dict:
    return {
        "name": "cm", "data": {"source": "files", "files": {"eth": {
            "path": str(shared_data / "binance" / "cm" / "ethusd_perp_20240808.gz")}}},
        "interval_ms": 100, "latency": {"entry_ms": 10}, "fees": {"maker_bps": -0.5, "taker_bps": 5},
        "strategy": {"policy": "grid", "params": {"n_levels": 2, "max_position": 50, "relative": 1,
                                                   "grid_interval": 1, "skew": 0.05}},
        "sweep": {"half_spread": {"list": [0.5, 1.0]}, **sweep},
        "split": {"train_fraction": 0.6}, "metrics": {"book_size": 1.0}, "run": {"dtype": "float64"},
    }


def test_a_coinm_sweep_is_in_the_coin_and_zero_lot_lanes_are_named(shared_data, monkeypatch, tmp_path) -> None:
    """On ETHUSD_PERP (1 contract lots) orders of 0.5 contract round to nothing: those lanes are
    named in a warning before the sweep (and do not trade); the others' PnL is in ETH and equals
    the exact engine's in the kernel's contract."""
    from mmsweep.replay import ReplayConfig
    from mmsweep.sweep.config import parse_experiment
    from mmsweep.sweep.exact import replay_lanes
    from mmsweep.sweep.run import prepare, run_chunk

    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path))
    exp = parse_experiment(_cm_experiment(shared_data, order_qty={"list": [0.5, 3]}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prep = prepare(exp, log=lambda *_: None)
    said = [str(w.message) for w in caught if "round to 0 lots" in str(w.message)]
    assert len(said) == 1 and "lanes 0, 2 " in said[0] and "order_qty=0.5" in said[0] and "contracts" in said[0]
    assert prep.manifest["zero_size_lanes"]["lanes"] == [0, 2]
    assert prep.manifest["units"]["pnl"] == "ETH" and prep.config.inverse and prep.config.contract_multiplier == 10
    out = run_chunk(prep, 0, 4)
    trades = out["train_NumberOfTrades"].to_numpy()
    assert trades[0] == trades[2] == 0 and trades[1] > 10 and trades[3] > 10
    result, exact = replay_lanes(prep, np.array([1, 3]), "train", ReplayConfig.degenerate(10_000_000, processes=1))
    np.testing.assert_allclose(exact["PnL"], out["train_PnL"].to_numpy()[[1, 3]], rtol=1e-9, atol=1e-12)
    assert np.abs(out["train_PnL"].to_numpy()).max() < 0.1  # ETH-sized: a few USD of PnL on 30 USD orders


def test_notional_sizing_on_an_inverse_instrument_is_warned(shared_data, monkeypatch, tmp_path) -> None:
    from mmsweep.sweep.config import parse_experiment
    from mmsweep.sweep.run import prepare

    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path))
    raw = _cm_experiment(shared_data)
    raw["features"] = [{"kind": "mid_return", "lag_s": 1}]
    raw["strategy"] = {"policy": "fair_value", "static": {"signals": ["mid_return_1s"]},
                       "params": {"order_notional": 5000, "relative_half_spread_bps": 1.0}}
    raw["sweep"] = {"beta": {"list": [0, 1]}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare(parse_experiment(raw), log=lambda *_: None)
    assert any("inverse" in str(w.message) and "order_notional" in str(w.message) for w in caught)


def test_verify_of_a_coinm_run_replays_and_records_in_the_coin(shared_data, monkeypatch, tmp_path) -> None:
    """`mmsweep verify` on a COIN-M run: the exact side is in ETH, and verify.json records the
    inverse accounting the replay ran with (not the linear default of the verify section)."""
    import json

    from mmsweep.sweep.config import parse_experiment
    from mmsweep.sweep.run import run_experiment
    from mmsweep.sweep.verify import verify_run

    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path / "cache"))
    spec = _cm_experiment(shared_data, order_qty={"list": [3]})
    spec["verify"] = {"top_k": 1, "sample": 1, "seed": 0, "processes": 1}
    run_dir = run_experiment(parse_experiment(spec), out_root=tmp_path / "runs", log=lambda m: None)
    summary = verify_run(run_dir, top_k=1, sample=1, log=lambda m: None)
    stored = json.loads((run_dir / "verify.json").read_text())
    config = stored["engine"]["config"]
    assert config["inverse"] is True and config["contract_size"] == 10.0
    assert summary["engine"]["config"]["inverse"] is True
    exact_pnl = np.asarray(__import__("polars").read_parquet(run_dir / "verify.parquet")["exact_PnL"])
    assert np.isfinite(exact_pnl).all() and np.abs(exact_pnl).max() < 0.1  # ETH-sized, not USD-sized
