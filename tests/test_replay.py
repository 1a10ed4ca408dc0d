"""The exact engine on hand-built event streams: hftbacktest's micro-tests (reference notes §14),
order types, the fixed partial-fill accounting, latency models, and properties on random streams.

Micro-test setup (reference notes §14): tick 1, lot 1, feed latency 100 ns, order latency
100 ns each way, a GTX buy of 3 @100 sent at 4000 (reaches the exchange at 4100, acknowledged
at 4200) into a book bid 100x5 / ask 101x5.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsweep.replay import Backtest, ReplayConfig
from mmsweep.replay import state as S
from mmsweep.replay.local import clear_finished
from mmsweep.replay.latency import entry_latency, interpolated_latency, response_latency
from mmsweep.sweep.data.book import replay_book
from mmsweep.sweep.data.events import CLEAR, DEPTH, EVENT_DTYPE, TRADE

BUY, SELL = 1, -1


def events(rows, feed_ns=100):
    """``(exch_ts, kind, side, price, qty)`` rows -> an event table (local = exch + feed)."""
    t = np.zeros(len(rows), EVENT_DTYPE)
    for i, (ts, kind, side, price, qty) in enumerate(rows):
        t[i] = (ts, ts + feed_ns, kind, side, price, qty, 0)
    return t


BOOK = [(1000, DEPTH, BUY, 100.0, 5.0), (1000, DEPTH, SELL, 101.0, 5.0)]


def backtest(rows, **config):
    config.setdefault("entry_ns", 100)
    config.setdefault("response_ns", 100)
    return Backtest(events(rows), tick_size=1.0, lot_size=1.0, config=ReplayConfig(**config))


def buy_at_4000(bt, price=100.0, qty=3.0, tif="GTX"):
    bt.goto(4000)
    return bt.submit(BUY, price, qty, tif)


def test_t1_queue_front_must_be_overshot_by_half_a_lot() -> None:
    trades = [(10000, TRADE, SELL, 100.0, 5.0), (12000, TRADE, SELL, 100.0, 0.4), (14000, TRADE, SELL, 100.0, 0.1)]
    bt = backtest(BOOK + trades, queue="risk_averse")
    slot = buy_at_4000(bt)
    bt.goto(4199)
    assert bt.order(slot)["lst"] == S.L_PENDING
    bt.goto(4200)
    assert bt.order(slot)["lst"] == S.L_LIVE
    bt.goto(14099)  # 5 then 0.4 leave front at -0.4: no fill; 0.1 more fills at 14000, seen at 14100
    assert bt.position == 0.0 and len(bt.fills()) == 0
    bt.goto(14100)
    f = bt.fills()
    assert bt.position == 3.0 and bt.balance == -300.0
    assert (f["exch_ts"][0], f["local_ts"][0], f["price"][0], f["qty"][0], f["maker"][0]) == (14000, 14100, 100, 3, True)


def test_t2_partial_fills_are_all_booked() -> None:
    """hftbacktest books only the last chunk (local position 1.0 after 1+1+1); here all three."""
    trades = [(10000 + 1000 * i, TRADE, SELL, 100.0, q) for i, q in enumerate([5.0, 1.0, 1.0, 1.0, 1.0])]
    bt = backtest(BOOK + trades, queue="risk_averse", partial_fills=True)
    slot = buy_at_4000(bt)
    bt.goto(20000)
    assert bt.position == 3.0 and bt.num_trades == 3
    assert list(bt.fills()["qty"]) == [1.0, 1.0, 1.0]
    assert bt.order(slot)["lst"] == S.L_DONE and bt.order(slot)["leaves"] == 0


def test_t3_post_only_meets_the_book_at_its_arrival_time() -> None:
    # an ask at 100 printed at the buy's arrival time (4100) is seen first: the GTX buy expires
    bt = backtest(BOOK + [(4100, DEPTH, SELL, 100.0, 1.0)], queue="risk_averse")
    slot = buy_at_4000(bt)
    bt.goto(5000)
    assert bt.order(slot)["lst"] == S.L_DONE and bt.position == 0
    assert bt.sim.count[0, S.C_REJECTIONS] == 1
    # one ns later the order rests first, then the falling ask crosses it: a maker fill at 100
    bt = backtest(BOOK + [(4101, DEPTH, SELL, 100.0, 1.0)], queue="risk_averse")
    buy_at_4000(bt)
    bt.goto(5000)
    f = bt.fills()
    assert bt.position == 3.0 and f["maker"][0] and f["exch_ts"][0] == 4101


@pytest.mark.parametrize("trades,filled", [([6.5, 0.2], True), ([6.6], False)])
def test_t4_power2_queue(trades, filled) -> None:
    """Reference notes §5.2: front 10; level grows to 20; trade 2; level drops to 12 -> front
    6.154; then trades of 6.5 + 0.2 fill (front -0.55), a single 6.6 does not (-0.45)."""
    rows = [(1000, DEPTH, BUY, 100.0, 10.0), (1000, DEPTH, SELL, 101.0, 5.0),
            (5000, DEPTH, BUY, 100.0, 20.0), (6000, TRADE, SELL, 100.0, 2.0), (7000, DEPTH, BUY, 100.0, 12.0)]
    rows += [(8000 + 100 * i, TRADE, SELL, 100.0, q) for i, q in enumerate(trades)]
    bt = backtest(rows, queue="power", queue_n=2.0)
    buy_at_4000(bt, qty=1.0)
    bt.goto(7000)
    assert bt.sim.queue[0, 0, 0] == pytest.approx(8 - (1 - 144 / 208) * 6, abs=1e-9)
    bt.goto(10000)
    assert (bt.position == 1.0) == filled


def test_t7_interpolated_latency_and_rejection() -> None:
    rows = np.zeros(3, [("req_ts", "i8"), ("exch_ts", "i8"), ("resp_ts", "i8")])
    rows[:] = [(0, 1000, 2000), (10000, 13000, 14000), (20000, 0, 21500)]
    model = interpolated_latency(rows)
    assert entry_latency(model, 5000) == 2000  # 1000 + (3000-1000)/10000*5000
    assert response_latency(model, 7000) == 1000
    assert entry_latency(model, 15000) < 0  # bracketed by a recorded rejection
    book = [(0, DEPTH, BUY, 100.0, 5.0), (0, DEPTH, SELL, 101.0, 5.0), (30000, TRADE, SELL, 100.0, 1.0)]
    bt = Backtest(events(book, feed_ns=0), tick_size=1.0, lot_size=1.0, config=ReplayConfig(latency_rows=rows))
    bt.goto(5000)
    slot = bt.submit(BUY, 100.0, 1.0)
    bt.goto(7999)
    assert bt.order(slot)["lst"] == S.L_PENDING and bt.order(slot)["xst"] == S.X_RESTING  # at 7000
    bt.goto(8000)
    assert bt.order(slot)["lst"] == S.L_LIVE
    bt.goto(15000)
    slot = bt.submit(BUY, 99.0, 1.0)
    # rejected before the exchange: the bot hears of it after the interpolated resp - req
    wait = -entry_latency(bt.lat, 15000)
    bt.goto(15000 + wait - 1)
    assert bt.order(slot)["lst"] == S.L_PENDING
    bt.goto(15000 + wait)
    assert bt.order(slot)["lst"] == S.L_DONE and bt.order(slot)["xst"] == S.X_NONE


def test_marketable_orders_take_at_the_best() -> None:
    book = [(1000, DEPTH, BUY, 100.0, 5.0), (1000, DEPTH, SELL, 101.0, 2.0), (1000, DEPTH, SELL, 102.0, 4.0)]
    # no partial fills: the whole order at the best ask, as a taker, whatever the size there
    bt = backtest(book, taker_fee=0.001)
    buy_at_4000(bt, price=105.0, qty=3.0, tif="GTC")
    bt.goto(5000)
    f = bt.fills()
    assert (f["price"][0], f["qty"][0], f["maker"][0]) == (101.0, 3.0, False)
    assert bt.fee == pytest.approx(0.001 * 303.0)
    # partial fills: level by level; IOC remainder expires; market orders too
    bt = backtest(book, partial_fills=True)
    slot = buy_at_4000(bt, price=101.0, qty=3.0, tif="IOC")
    bt.goto(5000)
    assert list(bt.fills()["qty"]) == [2.0] and bt.order(slot)["lst"] == S.L_DONE
    bt = backtest(book, partial_fills=True)
    bt.goto(4000)
    bt.submit(BUY, 0.0, 5.0, market=True)
    bt.goto(5000)
    assert list(bt.fills()["price"]) == [101.0, 102.0] and bt.position == 5.0
    # a passive IOC expires; a passive GTC rests
    bt = backtest(book)
    ioc = buy_at_4000(bt, price=99.0, tif="IOC")
    gtc = bt.submit(BUY, 99.0, 1.0, "GTC")
    bt.goto(5000)
    assert bt.order(ioc)["lst"] == S.L_DONE and bt.order(gtc)["lst"] == S.L_LIVE


def test_cancel_races_a_fill() -> None:
    # the cancel leaves at 10000 and reaches the exchange at 10100
    for trade_ts, filled in ((10099, True), (10100, True), (10101, False)):
        bt = backtest(BOOK + [(trade_ts, TRADE, SELL, 99.0, 1.0)], queue="risk_averse")
        slot = buy_at_4000(bt)
        bt.goto(10000)
        assert bt.cancel(slot)
        bt.goto(20000)
        assert (bt.position == 3.0) == filled
        assert bt.order(slot)["lst"] == S.L_DONE and bt.order(slot)["lreq"] == S.R_NONE
        assert bt.sim.count[0, S.C_CANCEL_LOST] == int(filled)


def test_negative_entry_latency_rejects_every_request() -> None:
    bt = backtest(BOOK, entry_ns=-500)
    slot = buy_at_4000(bt)
    bt.goto(4499)
    assert bt.order(slot)["lst"] == S.L_PENDING
    bt.goto(4500)
    assert bt.order(slot)["lst"] == S.L_DONE and bt.order(slot)["xst"] == S.X_NONE


def test_inverse_asset_accounting() -> None:
    rows = BOOK + [(10000, TRADE, SELL, 99.0, 1.0)]
    bt = backtest(rows, inverse=True, contract_size=10.0, maker_fee=0.0)
    buy_at_4000(bt)
    bt.goto(20000)
    assert bt.position == 3.0
    assert bt.balance == pytest.approx(-10.0 * 3.0 / 100.0)  # amount = cs * qty / price (base coin)


# ------------------------------------------------------------------------------ properties

def random_stream(seed: int, n: int = 400):
    """A random L2 stream: a wandering touch with 3 levels a side, trades at or near the touch."""
    rng = np.random.default_rng(seed)
    rows, ts, mid = [], 1000, 1000
    for _ in range(n):
        ts += int(rng.integers(1, 400))
        mid += int(rng.integers(-1, 2))
        spread = int(rng.integers(1, 3))
        if rng.random() < 0.3:
            side = SELL if rng.random() < 0.5 else BUY
            price = mid - int(rng.integers(0, 3)) if side == SELL else mid + spread + int(rng.integers(0, 3)) - 1
            rows.append((ts, TRADE, side, float(price), float(rng.integers(1, 6))))
        else:
            rows.append((ts, CLEAR, 0, np.nan, 0.0))
            for k in range(3):
                rows.append((ts, DEPTH, BUY, float(mid - k), float(rng.integers(0, 8))))
                rows.append((ts, DEPTH, SELL, float(mid + spread + k), float(rng.integers(0, 8))))
    return events(rows, feed_ns=int(rng.integers(0, 300)))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), queue=st.sampled_from(["none", "risk_averse", "power", "log2"]),
       partial=st.booleans())
def test_properties_on_random_streams(seed, queue, partial) -> None:
    table = random_stream(seed)
    rng = np.random.default_rng(seed + 1)
    entry = int(rng.integers(0, 500))
    bt = Backtest(table, tick_size=1.0, lot_size=1.0, config=ReplayConfig(
        queue=queue, partial_fills=partial, entry_ns=entry, response_ns=int(rng.integers(0, 500))))
    cancel_arrival: dict[int, int] = {}
    positions = []
    end = int(table["local_ts"].max()) + 2000
    while bt.now < end:
        bt.elapse(int(rng.integers(50, 800)))
        live = [s for s in range(bt.sim.ordi.shape[1]) if bt.order(s)["lst"] == S.L_LIVE]
        for s in live:
            if rng.random() < 0.3 and bt.cancel(s):
                cancel_arrival[bt.order_id(s)] = bt.now + entry
        if rng.random() < 0.5 and np.sum(bt.sim.ordi[0, :, S.O_LST] == S.L_FREE) > 2:
            mid = np.nanmedian(table["price"][table["kind"] == DEPTH][-50:])
            side = BUY if rng.random() < 0.5 else SELL
            bt.submit(side, float(np.round(mid - side * rng.integers(0, 3))), float(rng.integers(1, 4)),
                      "GTX" if rng.random() < 0.8 else "GTC")
        clear_finished(bt.sim, 0)
        positions.append((bt.now, bt.position))
    fills = bt.fills()
    signed = fills["side"] * fills["qty"]
    # position = sum of the fills the bot has heard of, at every step
    for now, pos in positions:
        assert pos == pytest.approx(signed[fills["local_ts"] <= now].sum())
    # every fill has a cause at its exchange time: a trade at or through its price, or the opposite
    # best crossing it (the exchange's book after the rows stamped at that time), or it took liquidity
    exch = replay_book(table, 1.0, 1.0, clock="exch", n_levels=1)
    ts_sorted = table["exch_ts"][exch.order]
    trades = table[table["kind"] == TRADE]
    for f in fills:
        if not f["maker"]:
            continue
        at = ts_sorted == f["exch_ts"]
        if f["side"] == BUY:
            crossed = np.any(exch.best_ask[at] <= f["price"])
            traded = np.any((trades["exch_ts"] == f["exch_ts"]) & (trades["side"] == SELL) & (trades["price"] <= f["price"]))
        else:
            crossed = np.any(exch.best_bid[at] >= f["price"])
            traded = np.any((trades["exch_ts"] == f["exch_ts"]) & (trades["side"] == BUY) & (trades["price"] >= f["price"]))
        assert crossed or traded, f
        if queue == "none":  # strict cross: a trade must go through the price
            through = np.any((trades["exch_ts"] == f["exch_ts"]) & (trades["side"] == -f["side"])
                             & ((trades["price"] < f["price"]) if f["side"] == BUY else (trades["price"] > f["price"])))
            assert crossed or through, f
    # a cancel that reached the exchange is never followed by a fill of that order
    for f in fills:
        if f["order_id"] in cancel_arrival:
            assert f["exch_ts"] <= cancel_arrival[f["order_id"]]
    assert len(fills) > 0 and len(cancel_arrival) > 0  # the stream exercised both
