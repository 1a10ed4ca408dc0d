"""Tardis.dev normalized CSV reader: real samples, exact tiny tables, malformed input."""
from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest

from mmsweep.sweep.data.book import replay_book
from mmsweep.sweep.data.events import ASK, BBO, BID, CLEAR, DEPTH, EVENT_DTYPE, SNAPSHOT, TRADE, make_table
from mmsweep.sweep.data.tardis import read_tardis
from mmsweep.sweep.errors import InputError

NAN = float("nan")
T0 = 1_600_000_000_000_000  # µs
TRADES_HDR = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"
L2_HDR = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"
QUOTES_HDR = "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount"


def write(tmp_path, name: str, header: str, rows: list[str], *, gz: bool = False):
    path = tmp_path / name
    text = "\n".join([header, *rows]) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def expect(table: np.ndarray, rows: list[tuple]) -> None:
    """rows: (exch_us, local_us, kind, side, price, qty) -> compare every field exactly."""
    want = make_table(
        exch_ts=[r[0] * 1000 for r in rows], local_ts=[r[1] * 1000 for r in rows], kind=[r[2] for r in rows],
        side=[r[3] for r in rows], price=[r[4] for r in rows], qty=[r[5] for r in rows],
    )
    assert table.dtype == EVENT_DTYPE
    assert len(table) == len(want), table
    for name in EVENT_DTYPE.names:
        np.testing.assert_array_equal(table[name], want[name], err_msg=name)


def raises(match: str, path, line: int | None = None, **kw):
    """Call read_tardis expecting an InputError that names ``path`` (and ``line``)."""
    with pytest.raises(InputError, match=match) as info:
        read_tardis(path, **kw)
    err = info.value
    assert str(path if not isinstance(path, list) else path[-1]) in str(err), str(err)
    if line is not None:
        assert err.line == line, str(err)
        assert f"line {line}" in str(err)
    return err


# ---------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def tardis_dir(shared_data):
    return shared_data / "tardis"


def test_binance_futures_trades_and_quotes_pair(tardis_dir):
    trades = tardis_dir / "binance-futures_trades_2020-02-22_BTCUSDT.csv"
    quotes = tardis_dir / "binance-futures_quotes_2020-02-22_BTCUSDT.csv"
    ev = read_tardis([trades, quotes])
    t = ev.table
    # 10,000 lines each = header + 9,999 rows; a quote line is two BBO rows.
    assert ev.meta["counts"] == {"trade": 9999, "bbo": 19998}
    assert len(ev) == 29997
    assert ev.instrument.symbol == "BTCUSDT" and ev.instrument.venue == "binance-futures"
    assert ev.instrument.tick_size == pytest.approx(0.01)
    assert ev.instrument.lot_size == pytest.approx(0.001)
    assert not ev.has_depth
    assert np.all(np.diff(t["local_ts"]) >= 0)
    assert np.all(t["local_ts"] >= t["exch_ts"]) and ev.meta["exch_ts_clamped"] == 0
    # Same as reading each file alone, merged.
    tr, qu = read_tardis(trades).table, read_tardis(quotes).table
    assert len(tr) == 9999 and len(qu) == 19998
    assert np.array_equal(np.sort(t["local_ts"]), np.sort(np.concatenate([tr["local_ts"], qu["local_ts"]])))
    # First quote line: 1582329601096000,1582329603502092,ask 0.84@9682, bid 9681.92 x 0.67.
    expect(qu[:2], [(1582329601096000, 1582329603502092, BBO, BID, 9681.92, 0.67),
                    (1582329601096000, 1582329603502092, BBO, ASK, 9682.0, 0.84)])
    # First trade line: buy 0.132 @ 9682.
    expect(tr[:1], [(1582329602111000, 1582329602418379, TRADE, BID, 9682.0, 0.132)])
    sides = np.array([ln.split(",")[5] for ln in trades.read_text().splitlines()[1:]])
    assert np.count_nonzero(tr["side"] == 1) == np.count_nonzero(sides == "buy")
    assert np.count_nonzero(tr["side"] == -1) == np.count_nonzero(sides == "sell")
    # A quotes-only book rebuilds from BBO rows and is never crossed here.
    q = read_tardis(quotes)
    r = replay_book(q.table, 0.01, 0.001)
    assert np.all(r.best_bid[1:] < r.best_ask[1:])


def test_deribit_incremental_l2_snapshot_at_end_kept(tardis_dir):
    ev = read_tardis(tardis_dir / "deribit_incremental_book_L2_BTC-PERPETUAL.csv")
    t = ev.table
    # 15 snapshot rows (asks only) and nothing after them: hftbacktest drops such a snapshot, we keep it.
    assert ev.meta["counts"] == {"clear": 2, "snapshot": 15} and ev.meta["snapshots"] == 1
    assert list(t["kind"][:2]) == [CLEAR, CLEAR] and list(t["side"][:2]) == [BID, ASK]
    assert np.all(np.isnan(t["price"][:2]))
    assert np.all(t["side"][2:] == ASK)
    assert t["price"][2] == 6421.5 and t["qty"][2] == 18640
    assert ev.instrument.symbol == "BTC-PERPETUAL"
    assert ev.instrument.tick_size == 0.5 and ev.instrument.lot_size == 10.0  # USD contracts of 10
    r = replay_book(t, 0.5, 10.0, sample_ts=t["local_ts"][-1:], n_levels=20)
    assert r.ask_ticks[0, 0] * 0.5 == 6421.5 and np.count_nonzero(r.ask_qty[0]) == 15


@pytest.mark.parametrize("n", [5, 25])
def test_book_snapshot_n(tardis_dir, n):
    path = tardis_dir / f"binance-futures_book_snapshot_{n}_BTCUSDT.csv"
    ev = read_tardis(path)
    assert len(ev) == 10 * (2 + 2 * n)
    assert ev.meta["book_depth_levels"] == n and ev.meta["snapshots"] == 10
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    last = dict(zip(header, lines[-1].split(",")))
    t = ev.table
    r = replay_book(t, 0.01, 0.001, sample_ts=t["local_ts"][-1:], n_levels=n + 5)
    for i in range(n):
        assert r.bid_ticks[0, i] == round(float(last[f"bids[{i}].price"]) / 0.01)
        assert r.bid_qty[0, i] == float(last[f"bids[{i}].amount"])
        assert r.ask_ticks[0, i] == round(float(last[f"asks[{i}].price"]) / 0.01)
        assert r.ask_qty[0, i] == float(last[f"asks[{i}].amount"])
    # Levels beyond N are unknown: the rebuilt book has exactly N a side.
    assert np.count_nonzero(r.bid_qty[0]) == n and np.count_nonzero(r.ask_qty[0]) == n


def test_bitmex_trades_and_huobi_quotes(tardis_dir):
    ev = read_tardis(tardis_dir / "bitmex_trades_XBTUSD.csv")
    assert len(ev) == 10 and np.all(ev.table["kind"] == TRADE) and np.all(ev.table["side"] == -1)
    assert ev.instrument.symbol == "XBTUSD" and ev.instrument.lot_size == 1.0
    assert ev.table["qty"][0] == 2152 and ev.table["price"][0] == 8531.5
    hu = read_tardis(tardis_dir / "huobi-dm-swap_quotes_BTC-USD.csv", tick_size=0.1)
    assert hu.meta["counts"] == {"bbo": 20}
    assert np.all(hu.table["price"][0::2] == 8629.2) and np.all(hu.table["price"][1::2] == 8629.3)
    assert hu.instrument.venue == "huobi-dm-swap"


def test_real_files_tick_checked(tardis_dir):
    raises("not a multiple of tick_size", tardis_dir / "bitmex_trades_XBTUSD.csv", line=2, tick_size=1.0)


# ---------------------------------------------------------------- tiny hand-built files


def test_trades_exact(tmp_path):
    p = write(tmp_path, "t.csv", TRADES_HDR, [
        f"x,S,{T0},{T0 + 5},1,buy,100.5,0.25",
        f"x,S,{T0 + 1},{T0 + 6},2,sell,100.0,1",
        f"x,S,{T0 + 2},{T0 + 6},3,unknown,100.5,2",
        f"x,S,{T0 + 3},{T0 + 9},4,,101,3",
    ])
    ev = read_tardis(p)
    expect(ev.table, [
        (T0, T0 + 5, TRADE, 1, 100.5, 0.25), (T0 + 1, T0 + 6, TRADE, -1, 100.0, 1.0),
        (T0 + 2, T0 + 6, TRADE, 0, 100.5, 2.0), (T0 + 3, T0 + 9, TRADE, 0, 101.0, 3.0),
    ])
    assert ev.instrument.tick_size == 0.5 and ev.instrument.lot_size == 0.25


def test_l2_second_longer_snapshot_kept_whole(tmp_path):
    # hftbacktest 2.4.4 truncates every later snapshot to the first one's length (semantics §10.2).
    p = write(tmp_path, "l2.csv", L2_HDR, [
        f"x,S,{T0},{T0 + 10},true,bid,10,1",
        f"x,S,{T0},{T0 + 10},true,ask,11,2",
        f"x,S,{T0 + 20},{T0 + 30},false,bid,10,0",
        f"x,S,{T0 + 20},{T0 + 30},false,ask,11.5,4",
        f"x,S,{T0 + 40},{T0 + 50},true,bid,9,1",
        f"x,S,{T0 + 40},{T0 + 50},true,bid,8,1",
        f"x,S,{T0 + 40},{T0 + 50},true,ask,12,1",
        f"x,S,{T0 + 40},{T0 + 50},true,ask,13,1",
        f"x,S,{T0 + 60},{T0 + 70},false,ask,12,0",
    ])
    ev = read_tardis(p)
    a, b = (T0, T0 + 10), (T0 + 40, T0 + 50)
    expect(ev.table, [
        (*a, CLEAR, BID, NAN, 0), (*a, CLEAR, ASK, NAN, 0), (*a, SNAPSHOT, BID, 10, 1), (*a, SNAPSHOT, ASK, 11, 2),
        (T0 + 20, T0 + 30, DEPTH, BID, 10, 0), (T0 + 20, T0 + 30, DEPTH, ASK, 11.5, 4),
        (*b, CLEAR, BID, NAN, 0), (*b, CLEAR, ASK, NAN, 0),
        (*b, SNAPSHOT, BID, 9, 1), (*b, SNAPSHOT, BID, 8, 1), (*b, SNAPSHOT, ASK, 12, 1), (*b, SNAPSHOT, ASK, 13, 1),
        (T0 + 60, T0 + 70, DEPTH, ASK, 12, 0),
    ])
    assert ev.meta["snapshots"] == 2
    r = replay_book(ev.table, 0.5, 1.0, sample_ts=np.array([(T0 + 55) * 1000, (T0 + 80) * 1000]), n_levels=3)
    assert list(r.bid_ticks[0, :2]) == [18, 16] and list(r.ask_ticks[0, :2]) == [24, 26]  # 11.5 wiped
    assert list(r.ask_ticks[1, :1]) == [26]


def test_l2_back_to_back_snapshots_split_on_repeated_level(tmp_path):
    p = write(tmp_path, "l2.csv", L2_HDR, [
        f"x,S,{T0},{T0 + 10},true,bid,10,1",
        f"x,S,{T0},{T0 + 10},true,ask,11,1",
        f"x,S,{T0 + 5},{T0 + 15},true,bid,10,2",  # bid 10 again: a new snapshot begins
        f"x,S,{T0 + 5},{T0 + 15},true,ask,12,1",
    ])
    t = read_tardis(p).table
    assert list(t["kind"]) == [CLEAR, CLEAR, SNAPSHOT, SNAPSHOT, CLEAR, CLEAR, SNAPSHOT, SNAPSHOT]
    assert t["local_ts"][4] == (T0 + 15) * 1000
    r = replay_book(t, 1.0, 1.0, sample_ts=t["local_ts"][-1:], n_levels=3)
    assert r.ask_ticks[0, 0] == 12 and r.ask_qty[0, 1] == 0  # the first snapshot's ask 11 is gone


def test_quotes_exact_and_empty_sides(tmp_path):
    rows = [
        f"x,S,{T0},{T0 + 3},2,101,100,1",
        f"x,S,{T0 + 1},{T0 + 4},,,100,1",  # ask side empty
        f"x,S,{T0 + 2},{T0 + 5},3,101,100,0",  # bid amount zero: empty
    ]
    p = write(tmp_path, "q.csv", QUOTES_HDR, rows)
    ev = read_tardis(p)
    expect(ev.table, [
        (T0, T0 + 3, BBO, BID, 100, 1), (T0, T0 + 3, BBO, ASK, 101, 2),
        (T0 + 1, T0 + 4, BBO, BID, 100, 1), (T0 + 1, T0 + 4, CLEAR, ASK, NAN, 0),
        (T0 + 2, T0 + 5, CLEAR, BID, NAN, 0), (T0 + 2, T0 + 5, BBO, ASK, 101, 3),
    ])
    assert ev.meta["empty_quote_sides"] == 2
    # With depth alongside, BBO rows are cross-checks only: an empty side is dropped, never a CLEAR.
    l2 = write(tmp_path, "l2.csv", L2_HDR, [f"x,S,{T0},{T0 + 1},true,bid,99,1", f"x,S,{T0},{T0 + 1},true,ask,102,1"])
    both = read_tardis([l2, p])
    assert np.count_nonzero(both.table["kind"] == CLEAR) == 2  # the snapshot's two only
    assert np.count_nonzero(both.table["kind"] == BBO) == 4
    raises("both given or both empty", write(tmp_path, "q2.csv", QUOTES_HDR, [f"x,S,{T0},{T0},2,,100,1"]), line=2)


def test_book_snapshot_exact_with_missing_level(tmp_path):
    hdr = "exchange,symbol,timestamp,local_timestamp," + ",".join(
        f"asks[{i}].price,asks[{i}].amount,bids[{i}].price,bids[{i}].amount" for i in range(2))
    p = write(tmp_path, "book_snapshot_2.csv", hdr, [f"x,S,{T0},{T0 + 1},11,1,10,2,12,3,,"])
    a = (T0, T0 + 1)
    expect(read_tardis(p).table, [
        (*a, CLEAR, BID, NAN, 0), (*a, CLEAR, ASK, NAN, 0), (*a, SNAPSHOT, BID, 10, 2),
        (*a, SNAPSHOT, ASK, 11, 1), (*a, SNAPSHOT, ASK, 12, 3),
    ])
    bad_hdr = hdr.replace(",bids[1].amount", "")
    raises(r"lacks column.*bids\[1\]\.amount", write(tmp_path, "bs.csv", bad_hdr, [f"x,S,{T0},{T0},11,1,10,2,12,3,"]),
           line=1)


def test_gzip_equals_plain(tmp_path):
    rows = [f"x,S,{T0 + i},{T0 + i + 7},{i},buy,100,1" for i in range(50)]
    plain = read_tardis(write(tmp_path, "t.csv", TRADES_HDR, rows)).table
    gz = read_tardis(write(tmp_path, "t.csv.gz", TRADES_HDR, rows, gz=True)).table
    assert np.array_equal(plain, gz)


def test_merge_order_trades_first_on_ties_then_paths(tmp_path):
    q = write(tmp_path, "q.csv", QUOTES_HDR, [f"x,S,{T0},{T0 + 10},1,101,100,1"])
    t = write(tmp_path, "t.csv", TRADES_HDR, [f"x,S,{T0},{T0 + 10},1,sell,100,1", f"x,S,{T0},{T0 + 11},2,buy,101,1"])
    tab = read_tardis([q, t]).table  # quotes given first, the tied trade still comes first
    assert list(tab["kind"]) == [TRADE, BBO, BBO, TRADE]


def test_multi_symbol_needs_symbol_and_keeps_file_lines(tmp_path):
    p = write(tmp_path, "t.csv", TRADES_HDR, [
        f"x,AAA,{T0},{T0 + 1},1,buy,100,1",
        f"x,BBB,{T0 + 1},{T0 + 2},2,buy,200,1",
        f"x,BBB,{T0 + 2},{T0 + 3},3,sell,-201,1",
    ])
    raises("pass symbol=", p)
    ev = read_tardis(p, symbol="AAA")
    expect(ev.table, [(T0, T0 + 1, TRADE, 1, 100, 1)])
    assert ev.instrument.symbol == "AAA"
    raises("finite positive", p, line=4, symbol="bbb")  # line in the file, not in the filtered rows
    raises("no rows for symbol", p, symbol="CCC")
    other = write(tmp_path, "t2.csv", TRADES_HDR, [f"x,BBB,{T0},{T0 + 1},1,buy,100,1"])
    with pytest.raises(InputError, match="different symbols"):
        read_tardis([write(tmp_path, "t3.csv", TRADES_HDR, [f"x,AAA,{T0},{T0 + 1},1,buy,100,1"]), other])


def test_local_before_exch_clamped_with_warning(tmp_path):
    p = write(tmp_path, "t.csv", TRADES_HDR,
              [f"x,S,{T0 + 50},{T0 + 10},1,buy,100,1", f"x,S,{T0},{T0 + 20},2,buy,100,1"])
    with pytest.warns(UserWarning, match="1 row"):
        ev = read_tardis(p)
    expect(ev.table, [(T0 + 10, T0 + 10, TRADE, 1, 100, 1), (T0, T0 + 20, TRADE, 1, 100, 1)])
    assert ev.meta["exch_ts_clamped"] == 1 and ev.meta["exch_ts_clamped_max_ns"] == 40_000


# ---------------------------------------------------------------- malformed corpus


def test_malformed_corpus(tmp_path):
    ok = f"x,S,{T0},{T0 + 1},1,buy,100,1"
    raises("lacks column", write(tmp_path, "nocol.csv", "exchange,symbol,timestamp,local_timestamp,id,side,amount",
                                 [f"x,S,{T0},{T0},1,buy,1"]), line=1)
    raises("unrecognized Tardis CSV header", write(tmp_path, "weird.csv", "a,b,c", ["1,2,3"]), line=1)
    raises("bad number 'abc' in column 'price'",
           write(tmp_path, "num.csv", TRADES_HDR, [ok, ok, f"x,S,{T0},{T0 + 1},1,buy,abc,1"]), line=4)
    raises("bad number", write(tmp_path, "ts.csv", TRADES_HDR, [ok, f"x,S,{T0}.5,{T0 + 1},1,buy,1,1"]), line=3)
    raises("finite positive", write(tmp_path, "nan.csv", TRADES_HDR, [ok, f"x,S,{T0},{T0 + 1},1,buy,NaN,1"]), line=3)
    raises("finite positive", write(tmp_path, "neg.csv", L2_HDR, [f"x,S,{T0},{T0},false,bid,-5,1"]), line=2)
    raises("non-negative", write(tmp_path, "negq.csv", L2_HDR, [f"x,S,{T0},{T0},false,bid,5,-1"]), line=2)
    raises("empty price", write(tmp_path, "noprice.csv", TRADES_HDR, [ok, f"x,S,{T0},{T0 + 1},1,buy,,1"]), line=3)
    raises("goes backwards", write(tmp_path, "unsorted.csv", TRADES_HDR,
                                   [ok, f"x,S,{T0},{T0 + 9},1,buy,100,1", f"x,S,{T0},{T0 + 3},1,buy,100,1"]), line=4)
    raises("empty file", write_raw(tmp_path, "empty.csv", b""), line=1)
    raises("no data rows", write(tmp_path, "hdronly.csv", TRADES_HDR, []), line=2)
    raises("has 7 fields", write(tmp_path, "ragged.csv", TRADES_HDR, [ok, "x,S,1,2,3,buy,100"]), line=3)
    raises("cut short", write_raw(tmp_path, "cut.csv", (TRADES_HDR + "\n" + ok + "\nx,S,16000").encode()), line=3)
    raises("trade side must be", write(tmp_path, "side.csv", TRADES_HDR, [ok, f"x,S,{T0},{T0 + 1},1,bid,100,1"]),
           line=3)
    raises("book side must be", write(tmp_path, "l2side.csv", L2_HDR, [f"x,S,{T0},{T0},false,up,5,1"]), line=2)
    raises("is_snapshot", write(tmp_path, "snapflag.csv", L2_HDR, [f"x,S,{T0},{T0},maybe,bid,5,1"]), line=2)
    raises("microseconds", write(tmp_path, "ms.csv", TRADES_HDR, [ok, f"x,S,{T0 // 1000},{T0 // 1000},1,buy,1,1"]),
           line=3)
    raises("not a multiple of tick_size 0.5",
           write(tmp_path, "tick.csv", TRADES_HDR, [ok, ok, f"x,S,{T0},{T0 + 1},1,buy,100.25,1"]), line=4,
           tick_size=0.5)
    raises("liquidations", write(tmp_path, "x_liquidations.csv", TRADES_HDR, [ok]), line=1)
    options_hdr = ("exchange,symbol,timestamp,local_timestamp,type,strike_price,bid_price,bid_amount,"
                   "ask_price,ask_amount")
    raises("options_chain", write(tmp_path, "oc.csv", options_hdr, [f"x,S,{T0},{T0},put,1,1,1,1,1"]), line=1)
    with pytest.raises(InputError, match="file not found"):
        read_tardis(tmp_path / "missing.csv")


def write_raw(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_truncated_gzip_names_line(tmp_path):
    rows = [f"x,S,{T0 + i},{T0 + i + 7},{i},buy,{100 + i % 7},1" for i in range(20000)]
    full = write(tmp_path, "t.csv.gz", TRADES_HDR, rows, gz=True).read_bytes()
    cut = write_raw(tmp_path, "cut.csv.gz", full[: len(full) // 2])
    err = raises("truncated gzip", cut)
    assert err.line is not None and 2 < err.line < 20002 and f"line {err.line}" in str(err)
    raises("corrupt gzip", write_raw(tmp_path, "junk.csv.gz", b"\x1f\x8b" + b"junk" * 10), line=1)


def test_tolerates_crlf_and_trailing_blank_lines(tmp_path):
    text = TRADES_HDR + "\r\n" + f"x,S,{T0},{T0 + 1},1,buy,100,1\r\n\r\n\n"
    t = read_tardis(write_raw(tmp_path, "crlf.csv", text.encode())).table
    expect(t, [(T0, T0 + 1, TRADE, 1, 100, 1)])


def test_no_warnings_on_clean_real_files(tardis_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in sorted(tardis_dir.glob("*.csv")):
            read_tardis(f)
