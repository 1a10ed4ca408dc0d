"""Frames: every column on hand-built sequences, a brute-force oracle on random streams."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmsweep.sweep.data.book import NO_ASK, NO_BID, replay_book
from mmsweep.sweep.data.events import BID, ASK, CLEAR, DEPTH, SNAPSHOT, TRADE, Events, Instrument, make_table, sort_events
from mmsweep.sweep.errors import InputError
from mmsweep.sweep.features import FeatureSpec
from mmsweep.sweep.frames import (NO_FILL_BUY, NO_FILL_SELL, FrameSpec, LatencySpec, build_frames, load_frames,
                                  save_frames)

MS = 1_000_000
B = 1_000_000_000_000  # a base time aligned to 100 ms
FEED = 1 * MS
INST = Instrument("TEST", tick_size=1.0, lot_size=1.0)


def events(rows: list[tuple], feed_ns: int = FEED) -> Events:
    """rows: (exch_ts, kind, side, price, qty[, local_ts])."""
    cols = {k: [] for k in ("exch_ts", "local_ts", "kind", "side", "price", "qty")}
    for r in rows:
        exch, kind, side, price, qty = r[:5]
        cols["exch_ts"].append(exch)
        cols["local_ts"].append(r[5] if len(r) > 5 else exch + feed_ns)
        cols["kind"].append(kind)
        cols["side"].append(side)
        cols["price"].append(price)
        cols["qty"].append(qty)
    return Events(sort_events(make_table(**cols)), INST, source="hand-built")


def snapshot(ts: int, bids: dict, asks: dict) -> list[tuple]:
    rows = [(ts, CLEAR, BID, np.nan, 0.0), (ts, CLEAR, ASK, np.nan, 0.0)]
    rows += [(ts, SNAPSHOT, BID, p, q) for p, q in bids.items()]
    rows += [(ts, SNAPSHOT, ASK, p, q) for p, q in asks.items()]
    return rows


@pytest.fixture
def scenario() -> Events:
    return events(
        snapshot(B, {100: 5, 99: 4}, {101: 5, 102: 3})
        + [
            (B + 105 * MS, TRADE, ASK, 100, 1),  # seller-aggressor at 100 in row 0 window a
            (B + 150 * MS, DEPTH, ASK, 101, 0),  # ask 101 gone: best ask 102 (row 0 window b)
            (B + 160 * MS, TRADE, BID, 102, 2),  # buyer-aggressor at 102 (row 0 window b)
            (B + 250 * MS, DEPTH, BID, 101, 2),  # new best bid 101 (row 1 window b)
            # seen locally late: exch in row 2's window a, local only after row 3's decision
            (B + 302 * MS, DEPTH, ASK, 103, 1, B + 305 * MS),
            (B + 395 * MS, DEPTH, BID, 100, 7, B + 450 * MS),
            (B + 600 * MS, TRADE, BID, 102, 1),
        ]
    )


def test_every_column_on_a_hand_built_sequence(scenario: Events) -> None:
    frames = build_frames(scenario, FrameSpec(latency=LatencySpec(entry_ns=10 * MS)), cache_dir=False)
    c = frames.columns
    # Book first two-sided at local B+1ms -> grid aligned up to B+100ms; last event at B+601ms.
    np.testing.assert_array_equal(c["local_ts"], B + np.arange(1, 6) * 100 * MS)
    np.testing.assert_array_equal(c["ack_ts"], c["local_ts"] + 10 * MS)
    np.testing.assert_array_equal(c["split_ts"], c["ack_ts"])
    np.testing.assert_array_equal(c["lag_a"], 1)
    np.testing.assert_array_equal(c["lag_b"], 0)
    # Local view at each decision (local clock!).
    np.testing.assert_array_equal(c["bid"], [100, 100, 101, 101, 101])
    np.testing.assert_array_equal(c["ask"], [101, 102, 102, 102, 102])
    # Exchange best at arrival (B+110, 210, 310, 410, 510 ms).
    np.testing.assert_array_equal(c["bid_ack"], [100, 100, 101, 101, 101])
    np.testing.assert_array_equal(c["ask_ack"], [101, 102, 102, 102, 102])
    # Row 0: a=(100,110]: sell trade at 100 -> 101 = min(ask 101, 100+1); b=(110,200]: ask 101 in
    # force at the start; buy trade at 102 -> sell_fill 101 = max(bid 100, 102-1).
    np.testing.assert_array_equal(c["buy_fill_a"], [101, 102, 102, 102, 102])
    np.testing.assert_array_equal(c["sell_fill_a"], [100, 100, 101, 101, 101])
    np.testing.assert_array_equal(c["buy_fill_b"], [101, 102, 102, 102, 102])
    np.testing.assert_array_equal(c["sell_fill_b"], [101, 101, 101, 101, 101])
    np.testing.assert_array_equal(c["sell_trade_low_a"], [100, NO_ASK, NO_ASK, NO_ASK, NO_ASK])
    np.testing.assert_array_equal(c["sell_trade_low_qty_a"], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(c["buy_trade_high_b"], [102, NO_BID, NO_BID, NO_BID, 102])  # 600 ms: row 4 b
    np.testing.assert_array_equal(c["buy_trade_high_qty_b"], [2, 0, 0, 0, 1])
    assert frames.meta["superseded_arrivals"] == 0
    assert not c["entry_rejected"].any()


def test_local_view_ignores_events_not_yet_received(scenario: Events) -> None:
    frames = build_frames(scenario, FrameSpec(latency=LatencySpec(entry_ns=10 * MS)), cache_dir=False,
                          ).columns
    # The ask at 103 (exch 302 ms) is deeper than 102 so it never shows at the top; the bid 100
    # resize at exch 395 ms reaches the bot at 450 ms: the decision at 400 ms cannot know it,
    # but the exchange book at 410 ms (arrival) already has it.  Bid stays 101 either way.
    assert frames["bid"][3] == 101 and frames["bid_ack"][3] == 101


def test_latency_longer_than_interval_pends_across_rows(scenario: Events) -> None:
    frames = build_frames(scenario, FrameSpec(latency=LatencySpec(entry_ns=250 * MS)), cache_dir=False)
    c = frames.columns
    # Decision d arrives at local[d] + 250 ms = inside row d+2 at +50 ms.
    np.testing.assert_array_equal(c["lag_a"][3:], 3)
    np.testing.assert_array_equal(c["lag_b"][2:], 2)
    np.testing.assert_array_equal(c["split_ts"][2:], c["local_ts"][2:] + 50 * MS)
    # Rows 0 and 1 have no arrival: window b is empty, nothing can fill there.
    np.testing.assert_array_equal(c["split_ts"][:2], c["local_ts"][1:3])
    np.testing.assert_array_equal(c["buy_fill_b"][:2], NO_FILL_BUY)
    np.testing.assert_array_equal(c["sell_fill_b"][:2], NO_FILL_SELL)
    assert (c["lag_a"][0] > 0) and (0 - c["lag_a"][0] < 0)  # nothing live yet
    assert frames.meta["max_lag"] == 3


def test_interpolated_latency_and_rejections(scenario: Events) -> None:
    rows = np.zeros(4, dtype=[("req_ts", "<i8"), ("exch_ts", "<i8"), ("resp_ts", "<i8")])
    rows["req_ts"] = [B, B + 200 * MS, B + 400 * MS, B + 500 * MS]
    rows["exch_ts"] = [B + 10 * MS, B + 230 * MS, 0, B + 520 * MS]  # third row: a rejection
    rows["resp_ts"] = rows["exch_ts"] + 5 * MS
    rows["resp_ts"][2] = B + 405 * MS
    lat = LatencySpec(rows=rows, source="rows")
    entry, rejected = lat.entry(B + np.array([100, 200, 300, 400, 450, 500, 700]) * MS)
    # Interpolated between accepted rows (10 ms -> 30 ms -> 20 ms); held flat past the end.
    np.testing.assert_array_equal(entry[:3], [20 * MS, 30 * MS, int(30 * MS - 10 * MS / 3)])  # truncated toward zero
    assert entry[-1] == 20 * MS
    # 200..<500 brackets the rejected row; at 500 the last (accepted) row applies.
    np.testing.assert_array_equal(rejected, [False, True, True, True, True, False, False])
    frames = build_frames(scenario, FrameSpec(latency=lat), cache_dir=False)
    assert frames.meta["entry_rejected_rows"] == int(frames["entry_rejected"].sum()) > 0


def test_fifo_arrivals_and_superseded_decisions() -> None:
    ev = events(snapshot(B, {100: 1}, {101: 1}) + [(B + 2000 * MS, TRADE, BID, 101, 1)])
    rows = np.zeros(3, dtype=[("req_ts", "<i8"), ("exch_ts", "<i8"), ("resp_ts", "<i8")])
    # Latency collapses from 500 ms to 0 within 300 ms: later decisions would overtake.
    rows["req_ts"] = [B, B + 500 * MS, B + 800 * MS]
    rows["exch_ts"] = [B + 500 * MS, B + 1000 * MS, B + 800 * MS]
    rows["resp_ts"] = rows["exch_ts"]
    frames = build_frames(ev, FrameSpec(latency=LatencySpec(rows=rows)), cache_dir=False)
    ack = frames["ack_ts"]
    assert np.all(np.diff(ack) >= 0)
    assert frames.meta["fifo_delayed_acks"] > 0
    assert frames.meta["superseded_arrivals"] > 0


def test_features_known_values() -> None:
    rows = snapshot(B, {100: 3, 99: 1}, {102: 1, 103: 5})
    rows += [(B + 150 * MS, DEPTH, ASK, 102, 0), (B + 150 * MS, DEPTH, BID, 101, 2)]  # -> 101/103
    rows += [(B + 1000 * MS, TRADE, BID, 103, 1)]
    spec = FrameSpec(latency=LatencySpec(entry_ns=0), features=tuple(FeatureSpec.parse(f) for f in [
        {"kind": "mid_return", "lag_s": 0.1}, {"kind": "imbalance", "levels": 2}, {"kind": "vamp_bps", "levels": 1},
        {"kind": "rolling_return", "window_s": 0.2}, {"kind": "realized_vol", "window_s": 0.1}, "mid"]))
    f = build_frames(events(rows), spec, cache_dir=False)
    mid0, mid1 = 101.0, 102.0
    assert f["mid"][0] == mid0 and f["mid"][1] == mid1
    assert f["mid_return_0.1s"][0] == 0.0 and f.meta["warmup_rows"]["mid_return_0.1s"] == 1
    assert f["mid_return_0.1s"][1] == pytest.approx(np.log(mid1 / mid0))
    # Row 0: bids 3+1, asks 1+5 -> (4-6)/10; row 1: bids 2+3, asks 5 -> 0.
    assert f["imbalance_2"][0] == pytest.approx(-0.2) and f["imbalance_2"][1] == pytest.approx(0.0)
    # Row 0 level pair (100 x3, 102 x1): (100*1 + 102*3)/4 = 101.5 vs mid 101.
    assert f["vamp_bps_1"][0] == pytest.approx((101.5 / 101 - 1) * 1e4)
    assert f["rolling_return_0.2s"][1] == pytest.approx(mid1 / ((mid0 + mid1) / 2) - 1)
    assert f["realized_vol_0.1s"][1] == pytest.approx(abs(np.log(mid1 / mid0)) / np.sqrt(0.1))
    assert f.feature_names == [s.name for s in spec.features]


def test_feature_on_another_instrument_and_errors(scenario: Events) -> None:
    spec = FrameSpec(features=(FeatureSpec.parse({"kind": "mid", "instrument": "spot"}),))
    with pytest.raises(InputError, match="spot"):
        build_frames(scenario, spec, cache_dir=False)
    f = build_frames(scenario, spec, signals={"spot": scenario}, cache_dir=False)
    np.testing.assert_allclose(f["spot.mid"], f.mid_price())
    with pytest.raises(InputError, match="features.lag_s"):
        FeatureSpec.parse({"kind": "mid_return", "lag_s": -1})
    with pytest.raises(InputError, match="unknown key"):
        FeatureSpec.parse({"kind": "imbalance", "depth": 3})
    with pytest.raises(InputError, match="whole number"):
        build_frames(scenario, FrameSpec(features=(FeatureSpec.parse({"kind": "mid_return", "lag_s": 0.15}),)),
                     cache_dir=False)
    with pytest.raises(InputError, match="interval"):
        FrameSpec(interval_ns=0)
    with pytest.raises(InputError, match="never two-sided"):
        build_frames(events([(B, DEPTH, BID, 100, 1), (B + 10**9, DEPTH, BID, 100, 2)]), FrameSpec(), cache_dir=False)


def test_cache_hit_roundtrip_and_key(scenario: Events, tmp_path) -> None:
    spec = FrameSpec(latency=LatencySpec(entry_ns=10 * MS), features=(FeatureSpec.parse("imbalance"),))
    first = build_frames(scenario, spec, cache_dir=tmp_path)
    second = build_frames(scenario, spec, cache_dir=tmp_path)
    assert not first.meta["cache_hit"] and second.meta["cache_hit"]
    for k, v in first.columns.items():
        np.testing.assert_array_equal(v, second.columns[k], err_msg=k)
    np.testing.assert_array_equal(first.features, second.features)
    other = build_frames(scenario, FrameSpec(latency=LatencySpec(entry_ns=20 * MS)), cache_dir=tmp_path)
    assert other.meta["cache_key"] != first.meta["cache_key"] and not other.meta["cache_hit"]
    # A damaged cache entry is rebuilt with a warning, never trusted.
    path = tmp_path / f"{first.meta['cache_key']}.npz"
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        again = build_frames(scenario, spec, cache_dir=tmp_path)
    np.testing.assert_array_equal(again["buy_fill_a"], first["buy_fill_a"])
    assert not list(tmp_path.glob("*.partial"))
    roundtrip = load_frames(save_frames(first, tmp_path / "f.npz"))
    assert roundtrip.feature_names == first.feature_names


# ----------------------------------------------------------------------------- properties


@st.composite
def random_stream(draw):
    """A random but consistent L2 stream (tick 1) with trades at or away from the touch."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    n = draw(st.integers(20, 200))
    rows = snapshot(B, {100 - i: float(rng.integers(1, 5)) for i in range(3)},
                    {101 + i: float(rng.integers(1, 5)) for i in range(3)})
    bid, ask = 100, 101
    t = B
    for _ in range(n):
        t += int(rng.integers(1, 60)) * MS
        r = rng.random()
        if r < 0.3:
            side = BID if rng.random() < 0.5 else ASK
            price = (bid if side == BID else ask) + int(rng.integers(-2, 3)) * side * -1
            if side == BID and price >= ask:
                price = ask - 1
            if side == ASK and price <= bid:
                price = bid + 1
            qty = float(rng.integers(0, 4))
            rows.append((t, DEPTH, side, float(price), qty))
        elif r < 0.55:
            # move the touch: delete the best and add a new one
            if rng.random() < 0.5:
                rows.append((t, DEPTH, BID, float(bid), 0.0))
                bid = bid - 1 if rng.random() < 0.5 else min(bid + 1, ask - 1)
                rows.append((t, DEPTH, BID, float(bid), 2.0))
            else:
                rows.append((t, DEPTH, ASK, float(ask), 0.0))
                ask = ask + 1 if rng.random() < 0.5 else max(ask - 1, bid + 1)
                rows.append((t, DEPTH, ASK, float(ask), 2.0))
        else:
            side = BID if rng.random() < 0.5 else ASK
            price = (ask if side == BID else bid) + int(rng.integers(-1, 2))
            rows.append((t, TRADE, side, float(price), float(rng.integers(1, 3))))
    feed = int(rng.integers(0, 30)) * MS
    latency = int(rng.integers(0, 350)) * MS
    return events(rows, feed_ns=feed), latency


def brute_thresholds(ev: Events, lo: int, hi: int) -> tuple[int, int]:
    """The definition, evaluated naively: exchange book after each message, trades in (lo, hi]."""
    if hi <= lo:
        return NO_FILL_BUY, NO_FILL_SELL
    table = ev.table
    buy, sell = NO_ASK, NO_BID
    for cut in sorted({lo} | {int(x) for x in table["exch_ts"] if lo < x <= hi}):
        rep = replay_book(table, 1.0, 1.0, clock="exch", sample_ts=np.array([cut]), n_levels=1)
        buy = min(buy, int(rep.ask_ticks[0, 0]))
        sell = max(sell, int(rep.bid_ticks[0, 0]))
    trades = table[(table["kind"] == TRADE) & (table["exch_ts"] > lo) & (table["exch_ts"] <= hi)]
    for tr in trades:
        if tr["side"] < 0:
            buy = min(buy, int(tr["price"]) + 1)
        elif tr["side"] > 0:
            sell = max(sell, int(tr["price"]) - 1)
    return buy, sell


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_stream())
def test_thresholds_match_the_definition(stream) -> None:
    ev, latency = stream
    frames = build_frames(ev, FrameSpec(latency=LatencySpec(entry_ns=latency)), cache_dir=False)
    c = frames.columns
    ends = np.append(c["local_ts"][1:], c["local_ts"][-1] + 100 * MS)
    for r in range(len(frames)):
        assert (c["buy_fill_a"][r], c["sell_fill_a"][r]) == brute_thresholds(ev, c["local_ts"][r], c["split_ts"][r])
        assert (c["buy_fill_b"][r], c["sell_fill_b"][r]) == brute_thresholds(ev, c["split_ts"][r], ends[r])
        # Windows tile the row; the live decision never runs ahead of the row.
        assert c["local_ts"][r] <= c["split_ts"][r] <= ends[r]
        assert c["lag_a"][r] >= c["lag_b"][r] >= 0
    # Monotone in the window: the thresholds over the whole row are the extremes of a and b.
    for r in range(len(frames)):
        whole = brute_thresholds(ev, c["local_ts"][r], ends[r])
        assert whole == (min(c["buy_fill_a"][r], c["buy_fill_b"][r]), max(c["sell_fill_a"][r], c["sell_fill_b"][r]))
