"""Sanity checks of the hftbacktest oracle (tests/hbt_oracle.py) on the real BTCUSDT capture."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hftbacktest", reason="the oracle needs the dev dependency hftbacktest==2.4.4")

import hbt_oracle as H  # noqa: E402  (tests/ is on sys.path)

TICK, LOT = 0.1, 0.001
TICKS_PER_BP = 61.80025  # the local mid at the first decision is 61800.25


@pytest.fixture(scope="module")
def capture(shared_data):
    usdm = shared_data / "hftbacktest" / "usdm"
    data = H.load_npz(usdm / "btcusdt_20240808.npz")
    return data, H.decision_grid(data, TICK), usdm / "btcusdt_20240808_order_latency.npz"


@pytest.fixture(scope="module")
def reference(capture):
    """The data README's reference setup: 2 bp half spread, 0.1 bp skew, 1 bp grid, 5 levels,
    0.01 BTC, max position 0.05, 10 ms/10 ms, power-2 queue, no partial fills, -0.5/7 bp."""
    data, dts, _ = capture
    return H.run_hbt_grid(data, decision_ts=dts, tick_size=TICK, lot_size=LOT, half_spread=2 * TICKS_PER_BP,
                          skew=0.1 * TICKS_PER_BP, grid_interval=TICKS_PER_BP, n_levels=5, order_qty=0.01,
                          max_position=0.05)


@pytest.fixture(scope="module")
def tight(capture):
    """A busy setup: 1-tick grid at the touch, inventory skew, risk-averse queue, latency from the
    order-latency file, the first 60 s."""
    data, dts, latency = capture
    return H.run_hbt_grid(data, decision_ts=dts[:600], tick_size=TICK, lot_size=LOT, half_spread=1.0, skew=1.0,
                          grid_interval=1.0, n_levels=3, order_qty=0.004, max_position=0.02,
                          latency_npz=latency, queue="risk_averse")


def test_decision_grid(capture) -> None:
    data, dts, _ = capture
    assert dts[0] >= H.first_two_sided_ts(data, TICK) >= H.first_timestamp(data)
    assert np.all(np.diff(dts) == 100_000_000) and dts[0] % 100_000_000 == 0
    assert len(dts) == 3448


def test_reproduces_hftbacktest_grid_example(reference) -> None:
    """The README's figures (hftbacktest's own grid example): 48 trades, +3.154 USDT."""
    r = reference
    assert r["events"] == 491_973
    assert r["mid"][0] == pytest.approx(TICKS_PER_BP * 1e3)
    final = r["final"]
    equity = final["balance"] + final["position"] * final["mid"] - final["fee"]
    assert final["num_trades"] == 48 == len(r["fills"])
    assert equity == pytest.approx(3.1538935, abs=1e-6)
    assert r["elapsed_s"] > 0
    # 1 bp grid of 61.8 ticks -> step 62: every fill sits on an absolute multiple of 62 ticks
    assert np.all(r["fills"]["price_tick"] % 62 == 0)
    assert np.all(np.abs(r["position"]) <= 0.05 + 0.01 * 5 + 1e-9)


@pytest.mark.parametrize("which", ["reference", "tight"])
def test_fills_agree_with_local_state(which, request) -> None:
    r = request.getfixturevalue(which)
    fills, ts = r["fills"], r["timestamp"]
    assert len(fills) > (20 if which == "reference" else 100)
    # post-only orders: every fill is a maker fill, seen by the local after it happened
    assert fills["maker"].all()
    assert np.all(fills["local_ts"] > fills["exch_ts"])
    assert set(np.unique(fills["side"])) <= {-1, 1}
    # fills seen by decision i (local_ts <= ts[i]) reproduce the state recorded at decision i
    seen = np.searchsorted(fills["local_ts"], ts, side="right")
    signed = fills["side"] * fills["qty"]
    value = fills["price_tick"] * TICK * fills["qty"]
    cum = lambda x: np.concatenate([[0.0], np.cumsum(x)])[seen]  # noqa: E731
    np.testing.assert_array_equal(r["num_trades"], seen)
    np.testing.assert_allclose(r["position"], cum(signed), atol=1e-9)
    np.testing.assert_allclose(r["balance"], -cum(fills["side"] * value), atol=1e-6)
    np.testing.assert_allclose(r["trading_value"], cum(value), atol=1e-6)
    np.testing.assert_allclose(r["fee"], -0.00005 * cum(value), atol=1e-9)
    # the end-of-data drain: everything, including fills seen only after the last decision
    assert r["final"]["num_trades"] == len(fills)
    assert r["final"]["position"] == pytest.approx(signed.sum(), abs=1e-9)
    late = fills["local_ts"] > ts[-1]
    assert np.all(fills["local_ts"][late] == H.END_OF_DATA_TS)
    # every fill happened on the exchange after the first decision (no order exists before it)
    assert np.all(fills["exch_ts"] > ts[0])

def test_errors(capture) -> None:
    data, dts, _ = capture
    kw = dict(tick_size=TICK, lot_size=LOT, half_spread=5.0, skew=0.0, grid_interval=1.0, n_levels=1,
              order_qty=0.001, max_position=1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        H.run_hbt_grid(data, decision_ts=dts[[0, 2, 1]], **kw)
    with pytest.raises(RuntimeError, match="data ended"):
        H.run_hbt_grid(data, decision_ts=np.array([dts[0], dts[-1] + 10_000_000_000]), **kw)
    with pytest.raises(ValueError, match="queue"):
        H.run_hbt_grid(data, decision_ts=dts[:2], queue="fifo", **kw)
