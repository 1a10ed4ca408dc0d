"""Older and other Binance captures: µs and ms receive times detected from their digit count;
Binance's public daily CSV archives as a top-of-book + trades source with an explicit feed
latency; the capture clock's base latency (0 ms = hftbacktest's converter)."""
from __future__ import annotations

import gzip
import warnings
import zipfile

import numpy as np
import pytest

from mmsweep.sweep.data.binance import read_binance
from mmsweep.sweep.data.binance_archive import read_binance_archive
from mmsweep.sweep.data.events import BBO, DEPTH, TRADE
from mmsweep.sweep.data.loader import detect_format, load_events
from mmsweep.sweep.errors import InputError


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def test_microsecond_capture_loads(shared_data) -> None:
    """The older collector's 16-digit µs times (rejected at line 1 before): ns after reading."""
    ev = _quiet(read_binance, str(shared_data / "binance" / "usdm" / "btcusdt_20230404.gz"))
    assert ev.meta["local_ts_unit"] == "us"
    t = ev.table
    assert 1.68e18 < t["local_ts"][0] < 1.69e18  # ns since the epoch (2023-04-04)
    span = (t["local_ts"][-1] - t["local_ts"][0]) / 1e9
    assert 95 < span < 100
    assert ev.meta["rows"]["depth"] > 10_000 and ev.meta["messages"]["trade"] == 2197
    assert ev.meta["skipped"] == {"markPriceUpdate": 99}
    lat = (t["local_ts"] - t["exch_ts"])[t["kind"] != BBO]
    assert lat.min() == 1_000_000 and np.median(lat) < 50_000_000  # ms-scale feed latency: the unit is right


def _rewrite(src, dst, digits: int, *, bad_line: int | None = None) -> None:
    lines = gzip.open(src, "rt").read().splitlines()[:3000]
    out = []
    for i, line in enumerate(lines):
        ts, rest = line.split(" ", 1)
        ns = int(ts)
        stamp = str(ns // 10 ** (19 - digits))
        if bad_line is not None and i == bad_line - 1:
            stamp = str(ns)
        out.append(f"{stamp} {rest}")
    with gzip.open(dst, "wt") as fh:
        fh.write("\n".join(out) + "\n")


def test_millisecond_capture_and_mixed_units(shared_data, tmp_path) -> None:
    src = shared_data / "binance" / "usdm" / "btcusdt_20240808.gz"
    ms = tmp_path / "ms.gz"
    _rewrite(src, ms, 13)
    _rewrite(src, tmp_path / "ns.gz", 19)
    ev = _quiet(read_binance, str(ms))
    ns = _quiet(read_binance, str(tmp_path / "ns.gz"))
    assert ev.meta["local_ts_unit"] == "ms" and ns.meta["local_ts_unit"] == "ns"
    assert np.all((ev.table["local_ts"] - ev.meta["clock_offset_ns"]) % 1_000_000 == 0)  # whole ms, in ns
    assert abs(int(ev.table["local_ts"][0]) - int(ns.table["local_ts"][0])) < 2_000_000  # the same clock, to a ms
    mixed = tmp_path / "mixed.gz"
    _rewrite(src, mixed, 16, bad_line=40)
    with pytest.raises(InputError, match=r"16-digit local receive timestamp \(µs since epoch") as err:
        _quiet(read_binance, str(mixed))
    assert err.value.line == 40
    odd = tmp_path / "odd.txt"
    odd.write_text("17231612563 {\"stream\": \"x\"}\n")
    with pytest.raises(InputError, match=r"ns since the epoch \(19 digits\), µs \(16\) or ms \(13\), got 11 digits"):
        read_binance(str(odd))


def test_base_latency_zero_is_hftbacktests_clock(shared_data) -> None:
    from mmsweep.sweep.data.hftnpz import read_hftbacktest_npz

    raw = shared_data / "binance" / "usdm" / "btcusdt_20240808.gz"
    theirs = read_hftbacktest_npz(str(shared_data / "hftbacktest" / "usdm" / "btcusdt_20240808.npz"),
                                  tick_size=0.1, lot_size=0.001)
    want = np.sort(theirs.table["local_ts"][theirs.table["kind"] == TRADE])
    for base in (0, 2_500_000):
        ours = _quiet(read_binance, str(raw), base_latency_ns=base)
        got = np.sort(ours.table["local_ts"][ours.table["kind"] == TRADE])
        np.testing.assert_array_equal(got - want, np.full(len(want), base))


def test_archive_matches_the_raw_capture(shared_data) -> None:
    """The archive day was written from the raw capture's bookTicker and trade messages: the
    reader gives the same rows (exchange time, side, price, size); local = exchange + the
    assumed feed latency; frames build from it without depth."""
    from mmsweep.sweep.frames import FrameSpec, build_frames

    d = shared_data / "binance-archive"
    files = [str(d / "BTCUSDT-bookTicker-2024-08-08.zip"), str(d / "BTCUSDT-trades-2024-08-08.zip")]
    assert detect_format(files[0]) == "binance-archive"
    arch = load_events(files, feed_latency_ns=7_000_000)
    raw = _quiet(read_binance, str(shared_data / "binance" / "usdm" / "btcusdt_20240808.gz"))
    assert arch.instrument.symbol == "BTCUSDT" and arch.instrument.venue == "binance-usdm"
    assert (arch.instrument.tick_size, arch.instrument.lot_size) == (0.1, 0.001)
    for kind in (TRADE, BBO):
        a, r = arch.of_kind(kind), raw.of_kind(kind)
        key = lambda x: np.sort(np.rec.fromarrays([x["exch_ts"], x["side"], x["price"], x["qty"]]))  # noqa: E731
        assert len(a) == len(r) > 20_000
        assert np.array_equal(key(a), key(r))
    assert np.all(arch.table["local_ts"] - arch.table["exch_ts"] == 7_000_000)
    assert not arch.has_depth and (arch.table["kind"] == DEPTH).sum() == 0
    frames = _quiet(build_frames, arch, FrameSpec(), cache_dir=False)
    assert len(frames) > 3000 and np.all(frames["ask"] > frames["bid"])


def _zip(path, name: str, text: str) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name, text)
    return str(path)


def test_archive_bad_input(tmp_path, shared_data) -> None:
    head = "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n"
    good = "1,100.0,1,100.1,2,1723161256313,1723161256313\n"
    book = _zip(tmp_path / "XUSDT-bookTicker-2024-08-08.zip", "x.csv", head + good + good.replace("1,", "2,", 1))
    with pytest.raises(InputError, match="feed_latency_ms"):
        read_binance_archive([book])
    bad = _zip(tmp_path / "YUSDT-bookTicker-2024-08-08.zip", "y.csv", head + good + "2,abc,1,100.1,2,1723161256314,0\n")
    with pytest.raises(InputError, match="best_bid_price 'abc' is not a number") as err:
        read_binance_archive([bad], feed_latency_ns=0)
    assert err.value.line == 3
    secs = _zip(tmp_path / "ZUSDT-bookTicker-2024-08-08.zip", "z.csv", head + "1,100.0,1,100.1,2,1723161256,0\n")
    with pytest.raises(InputError, match="not milliseconds"):
        read_binance_archive([secs], feed_latency_ns=0)
    trades = _zip(tmp_path / "XUSDT-trades-2024-08-08.zip", "t.csv",
                  "id,price,qty,quote_qty,time,is_buyer_maker\n5,100.0,1,100,1723161256313,maybe\n")
    with pytest.raises(InputError, match="is_buyer_maker must be true or false") as err:
        read_binance_archive([book, trades], feed_latency_ns=0)
    assert err.value.line == 2
    headless = _zip(tmp_path / "XUSDT-trades-2024-08-09.zip", "t.csv", "5,100.0,1,100,1723161256313,true\n"
                    "6,100.1,1,100,1723161256314,false\n")
    ev = read_binance_archive([book, headless], feed_latency_ns=0)
    assert list(ev.of_kind(TRADE)["side"]) == [-1, 1]
    with pytest.raises(InputError, match="no bookTicker file"):
        read_binance_archive([headless], feed_latency_ns=0)
