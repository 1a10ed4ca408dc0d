"""hftbacktest .npz reader: the real converted captures, tiny hand-built files, malformed input."""
from __future__ import annotations

import gzip
import json
import warnings

import numpy as np
import pytest

from mmsweep.sweep.data.book import NO_ASK, NO_BID, replay_book
from mmsweep.sweep.data.events import ASK, BBO, BID, CLEAR, DEPTH, SNAPSHOT, TRADE
from mmsweep.sweep.data.hftnpz import (
    BUY_EVENT, EXCH_EVENT, HFT_EVENT_DTYPE, LOCAL_EVENT, SELL_EVENT, read_hftbacktest_npz, read_order_latency,
)
from mmsweep.sweep.errors import InputError

EL = EXCH_EVENT | LOCAL_EVENT
KIND_NAME = {DEPTH: "depth", TRADE: "trade", CLEAR: "clear", SNAPSHOT: "snapshot"}


@pytest.fixture(scope="module")
def hft_dir(shared_data):
    return shared_data / "hftbacktest"


@pytest.fixture(scope="module")
def summary(hft_dir):
    return json.loads((hft_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def usdm(hft_dir):
    return read_hftbacktest_npz(hft_dir / "usdm/btcusdt_20240808.npz", tick_size=0.1, lot_size=0.001,
                                symbol="BTCUSDT")


def _file_counts(path) -> dict:
    """Per-kind counts of the EXCH-flagged rows, straight from the file."""
    d = np.load(path)["data"]
    exch = (d["ev"] & np.uint64(EXCH_EVENT)) != 0
    kinds, counts = np.unique((d["ev"][exch] & np.uint64(0xFF)).astype(int), return_counts=True)
    return {KIND_NAME[k]: int(c) for k, c in zip(kinds, counts)}


# ---------------------------------------------------------------- real files


@pytest.mark.parametrize("name", ["usdm/btcusdt_20240808", "spot/btcusdt_20240808"])
def test_counts_match_summary(hft_dir, summary, name):
    s = summary[name]
    tick, lot = s["tick_size"], s["lot_size"]
    ev = read_hftbacktest_npz(hft_dir / f"{name}.npz", tick_size=tick, lot_size=lot)
    # Every event once: the EXCH-flagged rows; LOCAL-only rows are their twins.
    assert len(ev) == s["rows_exch_and_local"] + s["rows_exch_only"] == s["rows"] - s["rows_local_only"]
    assert ev.meta["rows_exch_only"] == s["rows_exch_only"] and ev.meta["rows_local_only"] == s["rows_local_only"]
    if s["raw_rows_before_order_correction"] is not None:
        assert len(ev) == s["raw_rows_before_order_correction"]
    assert ev.meta["counts"] == _file_counts(hft_dir / f"{name}.npz")
    assert ev.meta["counts"]["snapshot"] == s["snapshot_rows"] // 2  # the REST snapshot, once
    assert ev.meta["counts"]["clear"] == s["clear_rows"] // 2
    assert ev.instrument.tick_size == tick and ev.instrument.lot_size == lot
    t = ev.table
    assert np.all(np.diff(t["local_ts"]) >= 0)
    assert t["local_ts"][0] == s["local_ts_first"] and t["local_ts"][-1] == s["local_ts_last"]
    assert t["exch_ts"].min() == s["exch_ts_first"] and t["exch_ts"].max() == s["exch_ts_last"]


def test_usdm_counts_match_raw_capture(usdm, shared_data):
    """The raw Binance capture has exactly as many book levels, market trades and snapshot rows."""
    depth = trades = snap = clears = 0
    with gzip.open(shared_data / "binance/usdm/btcusdt_20240808.gz", "rt") as fh:
        for line in fh:
            msg = json.loads(line.split(" ", 1)[1])
            data = msg.get("data")
            if data is None:
                for side in ("bids", "asks"):
                    snap += len(msg[side])
                    clears += bool(msg[side])
            elif data.get("e") == "depthUpdate":
                depth += len(data["b"]) + len(data["a"])
            elif data.get("e") == "trade" and data.get("X") == "MARKET":
                trades += 1
    assert usdm.meta["counts"] == {"depth": depth, "trade": trades, "snapshot": snap, "clear": clears}
    assert trades == 21313  # data/README.md


def test_order_is_hftbacktest_local_order(usdm, hft_dir):
    d = np.load(hft_dir / "usdm/btcusdt_20240808.npz")["data"]
    local = d[(d["ev"] & np.uint64(LOCAL_EVENT)) != 0]
    t = usdm.table
    assert len(local) == len(t)
    np.testing.assert_array_equal(t["local_ts"], local["local_ts"])
    np.testing.assert_array_equal(t["exch_ts"], local["exch_ts"])
    np.testing.assert_array_equal(t["kind"], (local["ev"] & np.uint64(0xFF)).astype(np.uint8))
    np.testing.assert_array_equal(t["qty"], local["qty"])
    buy = (local["ev"] & np.uint64(BUY_EVENT)) != 0
    np.testing.assert_array_equal(t["side"], np.where(buy, 1, -1))


def test_clear_keeps_finite_price_and_book_is_not_crossed(usdm):
    t = usdm.table
    clears = t[t["kind"] == CLEAR]
    assert np.all(np.isfinite(clears["price"])) and sorted(clears["side"]) == [ASK, BID]
    for clock in ("local", "exch"):
        ts = t["local_ts" if clock == "local" else "exch_ts"]
        samples = np.linspace(np.sort(ts)[10_000], ts.max(), 300).astype(np.int64)
        r = replay_book(t, 0.1, 0.001, clock=clock, sample_ts=samples, n_levels=5)
        bid, ask = r.bid_ticks[:, 0], r.ask_ticks[:, 0]
        assert np.all(bid != NO_BID) and np.all(ask != NO_ASK)
        assert np.all(bid < ask)
        assert np.all(r.bid_ticks[:, :-1] > r.bid_ticks[:, 1:]) and np.all(r.ask_ticks[:, :-1] < r.ask_ticks[:, 1:])
        mid = (bid + ask) * 0.05
        assert np.all((mid > 55_000) & (mid < 65_000))


def test_spot_book_and_inference(hft_dir):
    path = hft_dir / "spot/btcusdt_20240808.npz"
    ev = read_hftbacktest_npz(path, tick_size=None, lot_size=None)
    assert ev.instrument.tick_size == 0.01
    # Three spot depth rows carry 6-decimal sizes (e.g. 25.426189), so the data's own grid is 1e-6.
    assert ev.instrument.lot_size == pytest.approx(1e-6)
    assert ev.meta["tick_size_inferred"] and ev.meta["lot_size_inferred"]
    samples = np.linspace(ev.table["local_ts"][5_000], ev.table["local_ts"][-1], 200).astype(np.int64)
    r = replay_book(ev.table, 0.01, 1e-5, sample_ts=samples, n_levels=3)
    assert np.all(r.bid_ticks[:, 0] < r.ask_ticks[:, 0])
    eod = read_hftbacktest_npz(hft_dir / "spot/btcusdt_20240808_eod.npz", tick_size=0.01, lot_size=1e-5)
    assert eod.meta["counts"] == {"snapshot": 3405} and np.all(eod.table["local_ts"] == 0)


def test_order_latency_file(hft_dir):
    lat = read_order_latency(hft_dir / "usdm/btcusdt_20240808_order_latency.npz")
    assert lat.dtype.names == ("req_ts", "exch_ts", "resp_ts") and len(lat) == 346
    assert all(lat.dtype[n] == np.int64 for n in lat.dtype.names)
    assert np.all(np.diff(lat["req_ts"]) >= 0)
    entry, resp = lat["exch_ts"] - lat["req_ts"], lat["resp_ts"] - lat["exch_ts"]
    assert np.all(entry > 1_000_000) and np.all(resp > 1_000_000)  # both include the 1 ms offset
    assert lat["req_ts"][0] == 1723161256983084817


# ---------------------------------------------------------------- tiny hand-built files


def rows(*items) -> np.ndarray:
    """items: (ev, exch_ts, local_ts, px, qty)."""
    a = np.zeros(len(items), HFT_EVENT_DTYPE)
    for i, (ev, e, l, px, q) in enumerate(items):
        a[i] = (ev, e, l, px, q, 0, 0, 0.0)
    return a


def save(tmp_path, name, arr, key="data"):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, arr)
    else:
        np.savez(path, **{key: arr})
    return path


def test_split_twins_kept_once_in_local_order(tmp_path):
    # Event B (exch 20, local 50) arrives after C (exch 30, local 40): correct_event_order writes
    # B as EXCH-only then C (both flags) then B again as LOCAL-only.
    data = rows(
        (EL | BUY_EVENT | DEPTH, 10, 15, 100.0, 1.0),
        (EXCH_EVENT | SELL_EVENT | TRADE, 20, 50, 100.5, 2.0),
        (EL | SELL_EVENT | DEPTH, 30, 40, 101.0, 3.0),
        (LOCAL_EVENT | SELL_EVENT | TRADE, 20, 50, 100.5, 2.0),
        (EL | CLEAR, 60, 60, 99.0, 0.0),  # no side: wipes both sides, price ignored
        (EL | BUY_EVENT | CLEAR, 61, 61, 99.5, 0.0),  # clear bids up to 99.5
        (EL | SELL_EVENT | BBO, 62, 62, 101.5, 4.0),
        (EL | 0 | TRADE, 63, 63, 101.5, 1.0),  # trade with unknown aggressor
    )
    ev = read_hftbacktest_npz(save(tmp_path, "a.npz", data), tick_size=0.5, lot_size=1.0, symbol="X")
    t = ev.table
    assert list(t["kind"]) == [DEPTH, DEPTH, TRADE, CLEAR, CLEAR, BBO, TRADE]
    assert list(t["side"]) == [BID, ASK, ASK, 0, BID, ASK, 0]
    assert list(t["local_ts"]) == [15, 40, 50, 60, 61, 62, 63]
    assert list(t["exch_ts"]) == [10, 30, 20, 60, 61, 62, 63]
    np.testing.assert_array_equal(t["price"], [100.0, 101.0, 100.5, np.nan, 99.5, 101.5, 101.5])
    np.testing.assert_array_equal(t["qty"], [1, 3, 2, 0, 0, 4, 1])
    assert ev.meta["rows_exch_only"] == 1 and ev.instrument.symbol == "X"
    # A .npy holding the same array reads the same.
    again = read_hftbacktest_npz(save(tmp_path, "a.npy", data), tick_size=0.5, lot_size=1.0)
    assert again.table.tobytes() == t.tobytes()


def test_user_kinds_and_sideless_rows_skipped_with_warning(tmp_path):
    data = rows(
        (EL | BUY_EVENT | DEPTH, 10, 15, 100.0, 1.0),
        (EL | 101, 11, 16, 100.2, 0.0),  # mark price
        (EL | DEPTH, 12, 17, 100.0, 1.0),  # depth without side: hftbacktest ignores it
        (BUY_EVENT | DEPTH, 13, 18, 100.0, 1.0),  # neither EXCH nor LOCAL
    )
    with pytest.warns(UserWarning, match="user_kind_rows"):
        ev = read_hftbacktest_npz(save(tmp_path, "u.npz", data), tick_size=0.1, lot_size=1.0)
    assert len(ev) == 1
    assert ev.meta["skipped"] == {"user_kind_rows": 1, "rows_without_exch_or_local_flag": 1,
                                  "book_rows_without_side": 1}


def test_infers_tick_and_lot(tmp_path):
    data = rows((EL | BUY_EVENT | DEPTH, 1, 2, 100.25, 0.002), (EL | SELL_EVENT | DEPTH, 1, 2, 100.75, 0.004))
    ev = read_hftbacktest_npz(save(tmp_path, "i.npz", data), tick_size=None, lot_size=None)
    assert ev.instrument.tick_size == 0.5 and ev.instrument.lot_size == 0.002


# ---------------------------------------------------------------- malformed corpus


def expect_error(match, path, *, row=None, key=None, reader=None, **kw):
    reader = reader or (lambda p: read_hftbacktest_npz(p, tick_size=kw.get("tick_size", 0.5), lot_size=1.0))
    with pytest.raises(InputError, match=match) as info:
        reader(path)
    err = info.value
    assert str(path) in str(err), str(err)
    if row is not None:
        assert err.row == row and f"row {row}" in str(err), str(err)
    if key is not None:
        assert err.key == key, str(err)
    return err


def test_malformed_npz(tmp_path):
    good = (EL | BUY_EVENT | DEPTH, 10, 15, 100.0, 1.0)
    expect_error("no array named 'data'", save(tmp_path, "k.npz", rows(good), key="events"), key="data")
    wrong = np.zeros(2, [("ev", "<u8"), ("exch_ts", "<i8"), ("local_ts", "<i8"), ("px", "<f4"), ("qty", "<f8"),
                         ("order_id", "<u8"), ("ival", "<i8"), ("fval", "<f8")])
    expect_error("field 'px' is float32", save(tmp_path, "d.npz", wrong), key="data")
    expect_error("1-d structured array", save(tmp_path, "p.npz", np.zeros((3, 8))), key="data")
    expect_error("missing field 'qty'", save(tmp_path, "m.npz", np.zeros(2, [("ev", "<u8"), ("px", "<f8")])))
    expect_error("no events", save(tmp_path, "e.npz", rows()))
    expect_error("price must be finite", save(tmp_path, "nan.npz", rows(good, good, (EL | BUY_EVENT | DEPTH, 11, 16,
                                                                                     np.nan, 1.0))), row=2)
    expect_error("price must be finite", save(tmp_path, "neg.npz", rows(good, (EL | SELL_EVENT | TRADE, 11, 16,
                                                                               -1.0, 1.0))), row=1)
    expect_error("quantity", save(tmp_path, "q.npz", rows(good, (EL | SELL_EVENT | DEPTH, 11, 16, 100.0, -1.0))),
                 row=1)
    expect_error("L3", save(tmp_path, "l3.npz", rows(good, (EL | BUY_EVENT | 10, 11, 16, 100.0, 1.0))), row=1)
    expect_error("unknown event kind", save(tmp_path, "k7.npz", rows(good, (EL | 7, 11, 16, 100.0, 1.0))), row=1)
    expect_error("local_ts earlier", save(tmp_path, "lt.npz", rows(good, (EL | BUY_EVENT | DEPTH, 20, 16, 100, 1))),
                 row=1)
    expect_error("not a multiple of tick_size", save(tmp_path, "t.npz", rows(good, (EL | BUY_EVENT | DEPTH, 11, 16,
                                                                                    100.3, 1.0))), row=1)
    expect_error("no identical twin", save(tmp_path, "tw.npz", rows(good, (LOCAL_EVENT | BUY_EVENT | DEPTH, 11, 16,
                                                                           100.0, 1.0))), row=1)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    expect_error("not a readable", tmp_path / "junk.npz")
    expect_error("file not found", tmp_path / "nope.npz")


def test_malformed_order_latency(tmp_path):
    def lat(*r):
        a = np.zeros(len(r), [("req_ts", "<i8"), ("exch_ts", "<i8"), ("resp_ts", "<i8"), ("_padding", "<i8")])
        for i, x in enumerate(r):
            a[i] = (*x, 0)
        return a

    ok = read_order_latency(save(tmp_path, "ok.npz", lat((0, 1000, 2000), (10000, 13000, 14000), (20000, 0, 21500))))
    assert list(ok["exch_ts"]) == [1000, 13000, 0]  # exch_ts <= 0 marks a rejection
    read = read_order_latency
    expect_error("req_ts not sorted", save(tmp_path, "s.npz", lat((10, 20, 30), (5, 20, 30))), row=1, reader=read)
    expect_error("exch_ts earlier than req_ts", save(tmp_path, "e.npz", lat((10, 20, 30), (40, 30, 50))), row=1,
                 reader=read)
    expect_error("resp_ts earlier than exch_ts", save(tmp_path, "r.npz", lat((10, 20, 15))), row=0, reader=read)
    expect_error("rejection row", save(tmp_path, "j.npz", lat((10, 0, 5))), row=0, reader=read)
    expect_error("field 'resp_ts' is float64",
                 save(tmp_path, "f.npz", np.zeros(1, [("req_ts", "<i8"), ("exch_ts", "<i8"), ("resp_ts", "<f8")])),
                 key="data", reader=read)


def test_no_warnings_on_real_files(hft_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_hftbacktest_npz(hft_dir / "spot/btcusdt_20240808.npz", tick_size=0.01, lot_size=1e-5)
