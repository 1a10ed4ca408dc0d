"""PnL decomposition and markouts (sweep/pnl.py) on hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from mmsweep.replay.engine import FILL_DTYPE
from mmsweep.sweep import pnl
from mmsweep.sweep.data.events import DEPTH, TRADE, Events, Instrument, make_table

S = 1_000_000_000


def _fills(rows):
    out = np.zeros(len(rows), FILL_DTYPE)
    for i, (ts, side, price, qty, maker) in enumerate(rows):
        out[i] = (0, ts, ts, side, price, qty, maker, i)
    return out


def test_decompose_fills_linear_by_hand() -> None:
    # mid 100.0 until t=10 s, 101.0 until 20 s, then 99.0
    mids = pnl.MidSeries(np.array([0, 10 * S, 20 * S]), np.array([100.0, 101.0, 99.0]))
    # buy 2 @ 99.9 at 5 s (mid 100: edge +0.1 each), sell 1 @ 101.2 at 15 s (mid 101: +0.2),
    # a taker sell 1 @ 98.9 at 25 s (mid 99: -0.1); flat at the end.
    fills = _fills([(5 * S, 1, 99.9, 2.0, True), (15 * S, -1, 101.2, 1.0, True), (25 * S, -1, 98.9, 1.0, False)])
    out = pnl.decompose_fills(fills, mids, end_mid=99.0, maker_fee=-1e-4, taker_fee=5e-4)
    assert out["spread_capture"] == pytest.approx(2 * 0.1 + 0.2 - 0.1)
    fees = -1e-4 * (2 * 99.9 + 101.2) + 5e-4 * 98.9  # positive = cost
    assert out["rebates_fees"] == pytest.approx(-fees)
    # inventory: 2 bought at mid 100 marked at 99 (-2), 1 sold at mid 101 (+2), 1 sold at mid 99 (0)
    assert out["inventory"] == pytest.approx(0.0, abs=1e-12)
    cash = -2 * 99.9 + 101.2 + 98.9  # flat at the end: PnL is the cash less fees
    assert out["PnL"] == pytest.approx(cash - fees)
    assert out["fills"] == 3


def test_decompose_fills_fill_at_a_mid_change_uses_the_mid_before() -> None:
    mids = pnl.MidSeries(np.array([0, 10 * S]), np.array([100.0, 90.0]))
    fills = _fills([(10 * S, 1, 99.0, 1.0, True)])  # the fill stamped with the crash
    out = pnl.decompose_fills(fills, mids, end_mid=90.0, maker_fee=0.0, taker_fee=0.0)
    assert out["spread_capture"] == pytest.approx(1.0) and out["inventory"] == pytest.approx(-10.0)


def test_decompose_fills_inverse_in_the_coin() -> None:
    # inverse: value(m) = -cm / m; long 1 contract (cm = 10 USD) bought at 2000, marked at 2500
    mids = pnl.MidSeries(np.array([0]), np.array([2000.0]))
    fills = _fills([(S, 1, 2000.0, 1.0, True)])
    out = pnl.decompose_fills(fills, mids, end_mid=2500.0, maker_fee=0.0, taker_fee=0.0, contract_multiplier=10.0,
                              inverse=True)
    assert out["inventory"] == pytest.approx(10.0 / 2000 - 10.0 / 2500)  # ETH
    assert out["spread_capture"] == 0.0 and out["PnL"] == pytest.approx(out["inventory"])


def test_decompose_record_by_hand() -> None:
    mid = np.array([100.0, 100.0, 102.0, 101.0])
    position = np.array([0.0, 1.0, 1.0, 0.0])
    # bought 1 @ 99.5 between rows 0 and 1 (edge vs mid[1]: +0.5), sold @ 101.5 between rows 2 and 3
    # (edge vs mid[3]: +0.5), a 0.01 rebate per fill; equity = cash + position * mid - fees
    cash = np.array([0.0, -99.5, -99.5, 2.0])
    fees = np.array([0.0, -0.01, -0.01, -0.02])
    equity = cash + position * mid - fees
    out = pnl.decompose_record(equity, position, mid, fees=-0.02)
    assert out["PnL"] == pytest.approx(2.02)
    assert out["inventory"] == pytest.approx(1.0)  # held 1 while the mid went 100 -> 102 -> 101
    assert out["rebates_fees"] == pytest.approx(0.02)
    assert out["spread_capture"] == pytest.approx(1.0)


def test_markouts_and_summary() -> None:
    mids = pnl.MidSeries(np.array([0, 2 * S, 20 * S]), np.array([100.0, 100.5, 99.0]))
    horizons = (S, 19 * S, 100 * S)
    per = pnl.markouts(np.array([S, S]), np.array([1, -1]), np.array([99.9, 100.1]), mids, horizons)
    np.testing.assert_allclose(per["spread"], [0.1 / 99.9 * 1e4, 0.1 / 100.1 * 1e4])
    np.testing.assert_allclose(per["markout"][:, 0], [0.6 / 99.9 * 1e4, -0.4 / 100.1 * 1e4])  # t = 2 s: 100.5
    np.testing.assert_allclose(per["markout"][:, 1], [-0.9 / 99.9 * 1e4, 1.1 / 100.1 * 1e4])  # t = 20 s: 99
    np.testing.assert_allclose(per["mid_move"][:, 1], [-1.0 / 99.9 * 1e4, 1.0 / 100.1 * 1e4])
    assert np.isnan(per["markout"][:, 2]).all()  # past the end of the data
    rows = pnl.summarize_markouts(per, np.array([1, -1]), horizons)
    by = {(r["side"], r["horizon_ns"]): r for r in rows}
    assert by[("buy", S)]["fills"] == 1 and by[("buy", S)]["markout_bps"] == pytest.approx(0.6 / 99.9 * 1e4)
    assert by[("all", 19 * S)]["markout_bps"] == pytest.approx(0.5 * (-0.9 / 99.9 + 1.1 / 100.1) * 1e4)
    assert by[("all", 100 * S)]["fills"] == 0 and np.isnan(by[("all", 100 * S)]["markout_bps"])


def test_touch_markouts_on_a_tiny_book() -> None:
    # book 99/101 (tick 1); a seller hits the bid at 99 at 1 s; the book drops to 97/99 at 2 s; a
    # buyer lifts the ask at 99 (the touch) and at 100 (walking the book: not counted) at 3 s; the
    # book jumps to 100/102 at 3.5 s.
    rows = [  # exch_ts, kind, side, price, qty
        (0, DEPTH, 1, 99.0, 5.0), (0, DEPTH, -1, 101.0, 5.0),
        (1 * S, TRADE, -1, 99.0, 1.0),
        (2 * S, DEPTH, 1, 99.0, 0.0), (2 * S, DEPTH, 1, 97.0, 5.0), (2 * S, DEPTH, -1, 101.0, 0.0),
        (2 * S, DEPTH, -1, 99.0, 5.0),
        (3 * S, TRADE, 1, 99.0, 1.0), (3 * S, TRADE, 1, 100.0, 1.0),
        (3500_000_000, DEPTH, -1, 99.0, 0.0), (3500_000_000, DEPTH, -1, 102.0, 5.0),
        (3500_000_000, DEPTH, 1, 97.0, 0.0), (3500_000_000, DEPTH, 1, 100.0, 5.0),
        (20 * S, DEPTH, 1, 100.0, 4.0),
    ]
    ts, kind, side, price, qty = (np.array(c) for c in zip(*rows))
    table = make_table(exch_ts=ts, local_ts=ts, kind=kind, side=side, price=price, qty=qty)
    events = Events(table, Instrument("TESTUSDT", 1.0, 1.0))
    out = pnl.touch_markouts(events, (S, 10 * S))
    assert out["trades"] == 2 and out["trade_rows"] == 3
    # 1 s after: the passive buyer at 99 sees mid 98 (-1/99), the passive seller at 99 sees 101 (-2/99)
    assert out["1s"]["mean_bps"] == pytest.approx(-1.5 / 99 * 1e4)
    # 10 s after: mid 101 for both: +2/99 and -2/99
    assert out["10s"]["mean_bps"] == pytest.approx(0.0, abs=1e-9) and out["10s"]["n"] == 2
    late = pnl.touch_markouts(events, (S,), since_ns=2 * S)
    assert late["trades"] == 1 and late["1s"]["mean_bps"] == pytest.approx(-2 / 99 * 1e4)
