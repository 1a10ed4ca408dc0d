"""File sequences read as one continuous instrument: the book carried across files, sequence ids
checked at the boundary, per-file clock offsets, and every bad-input case a clear error or a
reported repair."""
from __future__ import annotations

import gzip
import shutil
import warnings

import numpy as np
import pytest

from mmsweep.sweep.data.book import NO_ASK, NO_BID, replay_book
from mmsweep.sweep.data.events import BBO, DEPTH, Events
from mmsweep.sweep.data.sequence import EventSequence
from mmsweep.sweep.data.store import save_events
from mmsweep.sweep.errors import InputError


@pytest.fixture(scope="module")
def cm(shared_data):
    d = shared_data / "binance" / "cm"
    files = [str(d / "ethusd_perp_20240808.gz"), str(d / "ethusd_perp_20240809.gz")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = EventSequence(files)
        joined = seq.load()
    return {"files": files, "seq": seq, "events": joined}


def test_continuation_file_continues_the_book(cm) -> None:
    """The second capture has no REST snapshot: read alone it has no depth; in the sequence its
    diffs continue the first file's book (no gap at the boundary) and that book agrees with the
    capture's own bookTicker stream after the boundary."""
    from mmsweep.sweep.data.binance import read_binance

    ev, seq = cm["events"], cm["seq"]
    facts = seq.describe()["sequence"]
    assert [f["resumed"] for f in facts] == [False, True] and [f["gaps"] for f in facts] == [0, 0]
    assert ev.meta["gaps"] == [] and ev.instrument.inverse and ev.instrument.contract_multiplier == 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = read_binance(cm["files"][1])
    assert alone.meta["rows"]["depth"] == 0 < facts[1]["counts"]["depth"]
    # offsets estimated per file, both ~1.27 s
    assert all(1.26e9 < f["clock_offset_ns"] < 1.28e9 for f in facts)
    assert facts[0]["clock_offset_ns"] != facts[1]["clock_offset_ns"]
    # every 100 ms, the local book's best bid and ask vs the latest bookTicker received: as good
    # after the boundary as before it (with no book carried there would be no depth at all)
    t, inst = ev.table, ev.instrument
    boundary = facts[1]["first_local_ns"]
    grid = np.arange(t["local_ts"][0] + 2_000_000_000, t["local_ts"][-1], 100_000_000)
    book = replay_book(t, inst.tick_size, inst.lot_size, clock="local", sample_ts=grid, n_levels=1)
    agree = np.ones(len(grid), bool)
    for side, col in ((1, book.bid_ticks[:, 0]), (-1, book.ask_ticks[:, 0])):
        ticker = t[(t["kind"] == BBO) & (t["side"] == side)]
        k = np.searchsorted(ticker["local_ts"], grid, side="right") - 1
        agree &= col == np.round(ticker["price"][k] / inst.tick_size).astype(np.int64)
    before, after = agree[grid < boundary].mean(), agree[grid > boundary + 1_000_000_000].mean()
    assert before > 0.95 and after > 0.95, (before, after)


def test_a_gap_at_the_boundary_names_the_file_and_line(cm, tmp_path) -> None:
    lines = gzip.open(cm["files"][1], "rt").read().splitlines()
    first_depth = next(i for i, ln in enumerate(lines) if "depthUpdate" in ln)
    lines[first_depth] = lines[first_depth].replace('"pu":', '"pu":1', 1)  # the chain breaks here
    broken = tmp_path / "ethusd_perp_20240809.gz"
    with gzip.open(broken, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ev = EventSequence([cm["files"][0], str(broken)]).load()
    gap = ev.meta["gaps"][0]
    assert gap["file"] == str(broken) and gap["line"] == first_depth + 1
    assert "across the file boundary" in gap["reason"] and cm["files"][0] in gap["reason"]
    assert any("gap" in str(w.message) for w in caught)


def test_overlapping_out_of_order_and_foreign_files_are_errors(cm, shared_data, tmp_path) -> None:
    a, b = cm["files"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="overlap or are out of order") as err:
            EventSequence([b, a]).load()
        assert a in str(err.value) and b in str(err.value)
        with pytest.raises(InputError, match="different instruments") as err:
            EventSequence([str(shared_data / "binance" / "usdm" / "btcusdt_20240808.gz"), b]).load()
        assert "BTCUSDT" in str(err.value) and "ETHUSD_PERP" in str(err.value)
    with pytest.raises(InputError, match="matches no file"):
        EventSequence([str(tmp_path / "nothing_*.gz")])


def test_a_truncated_middle_file_is_an_error_naming_it(cm, tmp_path) -> None:
    data = open(cm["files"][1], "rb").read()
    cut = tmp_path / "ethusd_perp_20240809.gz"
    cut.write_bytes(data[: len(data) // 2])
    third = tmp_path / "ethusd_perp_20240810.gz"
    shutil.copy(cm["files"][1], third)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="truncated") as err:
            EventSequence([cm["files"][0], str(cut), str(third)]).load()
    assert str(cut) in str(err.value) and "line" in str(err.value)


def test_a_gap_of_days_is_allowed_and_reported(tmp_path) -> None:
    from mmsweep.sweep.data.synthetic import SynthConfig, synthetic_market
    from mmsweep.sweep.frames import FrameSpec, build_frames

    ev = synthetic_market(SynthConfig(hours=0.05, seed=2, instruments=SynthConfig().instruments[:1]))["futures"]
    t = ev.table
    half = len(t) // 2
    later = t[half:].copy()
    later["local_ts"] += 2 * 86_400_000_000_000
    later["exch_ts"] += 2 * 86_400_000_000_000
    save_events(Events(t[:half].copy(), ev.instrument, "a"), tmp_path / "day1.npz")
    save_events(Events(later, ev.instrument, "b"), tmp_path / "day3.npz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seq = EventSequence(str(tmp_path / "day*.npz"))
        joined = seq.load()
        frames = build_frames(joined, FrameSpec(interval_ns=1_000_000_000), cache_dir=False)
    assert joined.meta["file_gaps"][0]["gap_s"] > 2 * 86_400 - 200
    assert any("a gap of 2.0 days" in str(w.message) for w in caught)
    assert frames.meta["stale_rows"] > 2 * 86_400 - 500  # the rows in the gap are flagged


def test_npz_days_with_an_initial_snapshot(shared_data, tmp_path) -> None:
    """hftbacktest users' daily files plus an initial snapshot: the snapshot is the book before
    the first file; a file split in two reads back as the whole."""
    from mmsweep.sweep.data.hftnpz import HFT_EVENT_DTYPE, read_hftbacktest_npz

    path = shared_data / "hftbacktest" / "cm" / "ethusd_perp_20240808.npz"
    raw = np.load(path)["data"]
    whole = read_hftbacktest_npz(str(path), tick_size=0.01, lot_size=1.0)
    cut_ts = int(whole.table["local_ts"][len(whole) // 2])
    cut = int(np.searchsorted(raw["local_ts"], cut_ts))
    cut = int(np.flatnonzero(raw["local_ts"][cut:] > raw["local_ts"][cut - 1])[0]) + cut
    np.savez(tmp_path / "ethusd_perp_20240808a.npz", data=raw[:cut])
    np.savez(tmp_path / "ethusd_perp_20240808b.npz", data=raw[cut:])
    both = EventSequence([str(tmp_path / "ethusd_perp_20240808a.npz"), str(tmp_path / "ethusd_perp_20240808b.npz")],
                         options={"tick_size": 0.01, "lot_size": 1.0}).load()
    assert both.table.tobytes() == whole.table.tobytes()
    # the book at the cut as hftbacktest's initial-snapshot records, then only the second half
    t = whole.table
    at = int(raw["local_ts"][cut - 1])
    book = replay_book(t[t["local_ts"] <= at], 0.01, 1.0, clock="local", sample_ts=np.array([at]), n_levels=5000)
    levels = [(1, p, q) for p, q in zip(book.bid_ticks[0], book.bid_qty[0]) if p != NO_BID]
    levels += [(-1, p, q) for p, q in zip(book.ask_ticks[0], book.ask_qty[0]) if p != NO_ASK]
    snap = np.zeros(len(levels), HFT_EVENT_DTYPE)
    snap["ev"] = [(4 | (1 << 31) | (1 << 30) | ((1 << 29) if s > 0 else (1 << 28))) for s, _, _ in levels]
    snap["px"] = [p / 100 for _, p, _ in levels]
    snap["qty"] = [q for _, _, q in levels]
    np.savez(tmp_path / "snapshot.npz", data=snap)
    rest = EventSequence([str(tmp_path / "ethusd_perp_20240808b.npz")], options={"tick_size": 0.01, "lot_size": 1.0},
                         snapshot=str(tmp_path / "snapshot.npz")).load()
    later = np.sort(t["local_ts"][t["local_ts"] > at])[::997][:50]
    a = replay_book(t, 0.01, 1.0, clock="local", sample_ts=later, n_levels=5)
    b = replay_book(rest.table, 0.01, 1.0, clock="local", sample_ts=later, n_levels=5)
    np.testing.assert_array_equal(a.bid_ticks, b.bid_ticks)
    np.testing.assert_array_equal(a.ask_qty, b.ask_qty)
    assert rest.meta["initial_snapshot"]["levels"] == len(levels)
    with pytest.raises(InputError, match="snapshot"):
        EventSequence([cm_file for cm_file in [str(shared_data / "binance" / "cm" / "ethusd_perp_20240808.gz")]],
                      snapshot=str(tmp_path / "snapshot.npz"))


def test_tardis_days_are_pieces(shared_data, tmp_path) -> None:
    """Tardis files of one day merge; several days are a sequence of pieces."""
    src = shared_data / "tardis"
    for kind in ("trades", "quotes"):
        text = (src / f"binance-futures_{kind}_2020-02-22_BTCUSDT.csv").read_text().splitlines()
        head, rows = text[0], text[1:]
        (tmp_path / f"binance-futures_{kind}_2020-02-22_BTCUSDT.csv").write_text("\n".join(text) + "\n")
        shifted = []
        for row in rows:
            cells = row.split(",")
            cells[2], cells[3] = str(int(cells[2]) + 86_400_000_000), str(int(cells[3]) + 86_400_000_000)
            shifted.append(",".join(cells))
        (tmp_path / f"binance-futures_{kind}_2020-02-23_BTCUSDT.csv").write_text("\n".join([head] + shifted) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = EventSequence(str(tmp_path / "binance-futures_*_BTCUSDT.csv"))
        assert [len(g) for g in seq.groups] == [2, 2]
        joined = seq.load()
    assert len(joined.meta["sequence"]) == 2 and len(joined) == 2 * joined.meta["sequence"][0]["events"]
    assert np.all(np.diff(joined.table["local_ts"]) >= 0)
    assert joined.table["kind"][0] in (DEPTH, BBO, 2)


def _exp(data: dict, run: dict | None = None) -> dict:
    return {"name": "x", "data": data, "fees": {"maker_bps": 0, "taker_bps": 0},
            "strategy": {"policy": "grid", "params": {"order_qty": 1, "half_spread": 1}}, "run": run or {}}


def test_experiment_keys_for_sources(shared_data, tmp_path) -> None:
    from mmsweep.sweep.config import parse_experiment

    cm_glob = str(shared_data / "binance" / "cm" / "ethusd_perp_2024080*.gz")
    exp = parse_experiment(_exp({"source": "files", "files": {"eth": {
        "path": cm_glob, "instrument": {"inverse": True, "contract_size": 10}, "base_latency_ms": 0}}},
        {"time_chunk_rows": 5000}))
    f = exp.data.files["eth"]
    assert len(f.paths) == 2 and f.paths[0].endswith("20240808.gz") and f.base_latency_ns == 0
    assert f.instrument == {"inverse": True, "contract_size": 10.0} and exp.data.streamed
    assert exp.run.time_chunk_rows == 5000
    again = parse_experiment(exp.to_dict())
    assert again.data == exp.data and again.run == exp.run
    single = parse_experiment(_exp({"source": "files", "files": {"eth": {"path": f.paths[0]}}}))
    assert not single.data.streamed and "instrument" not in single.to_dict()["data"]["files"]["eth"]
    days = parse_experiment(_exp({"source": "synthetic", "synthetic": {"days": 2, "piece_hours": 6}}))
    assert days.data.streamed and days.data.synthetic["days"] == 2.0 and "hours" not in days.data.synthetic
    assert parse_experiment(days.to_dict()).data == days.data  # as verify and export read it back
    archive = parse_experiment(_exp({"source": "files", "files": {"f": {
        "path": str(shared_data / "binance-archive" / "BTCUSDT-*-2024-08-08.zip"), "feed_latency_ms": 5}}}))
    assert archive.data.files["f"].options()["feed_latency_ns"] == 5_000_000 and not archive.data.streamed
    bad = [
        ({"source": "files", "files": {"eth": {"path": str(tmp_path / "none_*.gz")}}}, "data.files.eth.path",
         "matches no file"),
        ({"source": "files", "files": {"eth": {"path": f.paths[0], "instrument": {"inverted": True}}}},
         "data.files.eth.instrument.inverted", "unknown key"),
        ({"source": "files", "files": {"eth": {"path": f.paths[0], "instrument": {"contract_size": 0}}}},
         "data.files.eth.instrument.contract_size", "quote currency per contract"),
        ({"source": "synthetic", "synthetic": {"days": 2, "hours": 3}}, "data.synthetic.hours", "hours or days"),
        ({"source": "files", "instrument": {"inverse": True},
          "files": {"eth": {"path": f.paths[0], "instrument": {"inverse": True}}}}, "data.instrument", "one place"),
        ({"source": "files", "files": {"eth": {"path": [f.paths[0], f.paths[0]]}}}, "data.files.eth.path", "twice"),
    ]
    for data, key, text in bad:
        with pytest.raises(InputError, match=text) as err:
            parse_experiment(_exp(data))
        assert err.value.key == key, (key, err.value)


def test_data_inspect_reports_each_file_and_the_total(shared_data) -> None:
    from click.testing import CliRunner

    from mmsweep.sweep.cli import main

    d = shared_data / "binance" / "cm"
    out = CliRunner().invoke(main, ["data", "inspect", "--sequence", str(d / "ethusd_perp_20240808.gz"),
                                    str(d / "ethusd_perp_20240809.gz")])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "ETHUSD_PERP (binance-coinm)" in text and "PnL and fees in ETH" in text
    assert "file 1 " in text and "file 2 " in text and "book continued from the file before" in text
    assert text.count("clock offset +1.2") == 2 and "514,563" in text  # per file, and the events in total
    old = CliRunner().invoke(main, ["data", "inspect", str(shared_data / "binance" / "usdm" / "btcusdt_20230404.gz")])
    assert old.exit_code == 0 and "µs (16 digits, converted to ns)" in old.output
    lin = CliRunner().invoke(main, ["data", "inspect", "--linear", str(d / "ethusd_perp_20240808.gz")])
    assert lin.exit_code == 0 and "linear" in lin.output and "PnL in USD" in lin.output
