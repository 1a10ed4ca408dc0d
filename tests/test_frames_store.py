"""Long horizons in bounded memory: frames built piece by piece into an on-disk store equal the
frames built from all the events at once, bit for bit; sweeps scanned in time chunks with the
lane state carried equal the unchunked sweep, bit for bit; the synthetic market streams day by
day; caches are keyed by the builder's code too."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from mmsweep.sweep.data.events import Events
from mmsweep.sweep.data.synthetic import SynthConfig, synthetic_market
from mmsweep.sweep.data.synthetic_stream import synthetic_pieces
from mmsweep.sweep.features import FeatureSpec
from mmsweep.sweep.frames import FrameSpec, LatencySpec, _build
import mmsweep.sweep.frames_store as fs

FEATURES = tuple(FeatureSpec.parse(d) for d in [
    {"kind": "rolling_return", "instrument": "spot", "window_s": 30},
    {"kind": "mid_return", "lag_s": 1}, {"kind": "imbalance", "levels": 3},
    {"kind": "realized_vol", "window_s": 20}, {"kind": "trade_imbalance", "window_s": 5},
    {"kind": "trade_imbalance", "instrument": "spot", "window_s": 7}, {"kind": "vamp_bps", "levels": 2}])


def _pieces(ev: Events, cut_s):
    """``ev`` cut into pieces at local times (s after its start)."""
    tab = ev.table
    t0 = int(tab["local_ts"][0])
    idx = np.searchsorted(tab["local_ts"], [t0 + int(s * 1e9) for s in cut_s])
    lo = 0
    for hi in list(idx) + [len(tab)]:
        yield Events(tab[lo:hi].copy(), ev.instrument, ev.source, dict(ev.meta))
        lo = hi


def _assert_same(whole, got) -> None:
    assert len(got) == len(whole) > 0
    assert sorted(got.columns) == sorted(whole.columns)
    for k in whole.columns:
        np.testing.assert_array_equal(got.columns[k], whole.columns[k], err_msg=k)
    assert got.feature_names == whole.feature_names
    np.testing.assert_array_equal(got.features, whole.features)


@pytest.fixture(scope="module")
def market():
    return synthetic_market(SynthConfig(hours=0.12, seed=3))


def test_store_equals_the_frames_built_at_once(market, monkeypatch, tmp_path) -> None:
    """Pieces cut anywhere (quoted and signal instrument cut at different times), many store chunks,
    features with windows across the cuts, an entry latency longer than the interval."""
    monkeypatch.setattr(fs, "LOOKAHEAD_NS", 20_000_000_000)
    spec = FrameSpec(interval_ns=100_000_000, latency=LatencySpec(entry_ns=150_000_000), features=FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = _build(market["futures"], spec, {"spot": market["spot"]})
    store = fs.build_store({"futures": _pieces(market["futures"], (100, 190, 250, 333)),
                            "spot": _pieces(market["spot"], (60, 210))}, "futures", spec, "k1",
                           cache_dir=tmp_path, segment_rows=900)
    assert len(store.chunks) >= 4
    _assert_same(whole, store.to_frames())
    assert store.median_bid() == int(np.median(whole["bid"]))
    assert store.meta["max_lag"] == whole.meta["max_lag"]
    # one piece and the look-back in memory, never all the events
    assert store.meta["peak_buffer_events"]["futures"] < 0.75 * len(market["futures"])
    # reading in other time chunks gives the same rows
    parts = [f for _, f in store.iter_frames(17, len(store) - 5, 977)]
    np.testing.assert_array_equal(np.concatenate([p["bid_ack"] for p in parts]), whole["bid_ack"][17:-5])
    assert store.rows_before(int(whole["local_ts"][100])) == 100
    again = fs.build_store({"futures": iter(()), "spot": iter(())}, "futures", spec, "k1", cache_dir=tmp_path)
    assert again.meta["cache_hit"] and len(again) == len(store)  # served from disk, inputs never read


def test_store_with_start_and_end_skips_the_pieces_before(market, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(fs, "LOOKAHEAD_NS", 10_000_000_000)
    ev = market["futures"]
    t0 = int(ev.table["local_ts"][0])
    spec = FrameSpec(start_ns=t0 + 200_000_000_003, end_ns=t0 + 330_000_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = _build(ev, spec, {})
    store = fs.build_store({"q": _pieces(ev, (50, 100, 150, 250, 300))}, "q", spec, "k3", cache_dir=tmp_path,
                           segment_rows=300)
    _assert_same(whole, store.to_frames())


def test_store_equals_at_once_on_real_quotes_only_data(shared_data, monkeypatch, tmp_path) -> None:
    """Tardis quotes + trades (no depth: the BBO rows are the book), cut into pieces."""
    from mmsweep.sweep.data.tardis import read_tardis

    monkeypatch.setattr(fs, "LOOKAHEAD_NS", 5_000_000_000)
    d = shared_data / "tardis"
    ev = read_tardis([d / "binance-futures_trades_2020-02-22_BTCUSDT.csv",
                      d / "binance-futures_quotes_2020-02-22_BTCUSDT.csv"])
    spec = FrameSpec(features=(FeatureSpec.parse({"kind": "trade_imbalance", "window_s": 10}),))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = _build(ev, spec, {})
        store = fs.build_store({"q": _pieces(ev, (60, 150, 2000))}, "q", spec, "k2", cache_dir=tmp_path,
                               segment_rows=700)
    assert len(store.chunks) > 3
    _assert_same(whole, store.to_frames())


def test_cache_keys_cover_the_frame_builders_code(market, monkeypatch) -> None:
    from mmsweep.sweep import codehash
    from mmsweep.sweep.frames import cache_key

    spec = FrameSpec()
    before = (cache_key(market["futures"], spec, {}), fs.store_key("input", spec, "futures", ["futures"]))
    monkeypatch.setattr(codehash, "code_digest", lambda files=codehash.FRAMES_CODE: "changed-code")
    after = (cache_key(market["futures"], spec, {}), fs.store_key("input", spec, "futures", ["futures"]))
    assert before[0] != after[0] and before[1] != after[1]


def test_synthetic_market_streams_piece_by_piece() -> None:
    """The pieces join into one continuous market, whatever their length."""
    cfg = SynthConfig(seed=5)
    a = list(synthetic_pieces(cfg, 0.15 / 24, piece_hours=0.05))
    b = list(synthetic_pieces(cfg, 0.15 / 24, piece_hours=0.1))
    assert len(a) == 3 and len(b) == 2
    for name in ("futures", "spot"):
        ta = np.concatenate([p[name].table for p in a])
        tb = np.concatenate([p[name].table for p in b])
        assert ta.tobytes() == tb.tobytes()
        assert np.all(np.diff(ta["local_ts"]) >= 0) and np.all(np.diff(ta["exch_ts"]) >= 0)
        assert (ta["kind"] == 4).sum() == (a[0][name].table["kind"] == 4).sum() > 0  # one snapshot, at the start
        assert all(len(p[name]) > 1000 for p in a)


def _experiment(data: dict, run: dict | None = None) -> dict:
    return {
        "name": "chunks", "data": data, "interval_ms": 100, "latency": {"entry_ms": 10},
        "fees": {"maker_bps": -0.5, "taker_bps": 7},
        "features": [{"kind": "rolling_return", "instrument": "spot", "window_s": 30},
                     {"kind": "rolling_return", "instrument": "spot", "window_s": 10}],
        "strategy": {"policy": "grid", "params": {"n_levels": 2, "order_qty": 0.01, "max_position": 0.2,
                                                   "relative": 1, "grid_interval": 1}},
        "sweep": {"half_spread": {"linspace": [0.5, 3, 3]}, "skew": {"list": [0.02, 0.2]}},
        "split": {"train_fraction": 0.6}, "run": {"dtype": "float32", **(run or {})},
    }


def test_sweep_in_time_chunks_equals_the_sweep_at_once(monkeypatch, tmp_path) -> None:
    """Streamed synthetic days (a frames store, swept in time chunks) and the same events read whole
    (swept at once, and in time chunks) give the same metrics, bit for bit."""
    from mmsweep.sweep.config import parse_experiment
    from mmsweep.sweep.data.store import save_events
    from mmsweep.sweep.datasource import load
    from mmsweep.sweep.run import prepare, run_chunk

    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fs, "LOOKAHEAD_NS", 20_000_000_000)
    synthetic = {"source": "synthetic", "synthetic": {"days": 0.1 / 24, "piece_hours": 0.03, "seed": 4},
                 "quoted": "futures"}
    quiet = lambda *_: None  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        streamed = prepare(parse_experiment(_experiment(synthetic, {"time_chunk_rows": 1111})), log=quiet)
        assert len(streamed.frames.chunks) >= 3
        got = run_chunk(streamed, 0, 6)
        futures, signals = load(parse_experiment(_experiment(synthetic)).data)
        save_events(futures, tmp_path / "futures.npz")
        save_events(signals["spot"], tmp_path / "spot.npz")
        files = {"source": "files", "quoted": "futures",
                 "files": {"futures": {"path": str(tmp_path / "futures.npz")}, "spot": {"path": str(tmp_path / "spot.npz")}}}
        at_once = run_chunk(prepare(parse_experiment(_experiment(files)), log=quiet), 0, 6)
        chunked = run_chunk(prepare(parse_experiment(_experiment(files, {"time_chunk_rows": 333})), log=quiet), 0, 6)
    assert float(at_once["train_NumberOfTrades"].sum()) > 50
    for column in at_once.columns:
        want = at_once[column].to_numpy()
        for other in (got, chunked):
            np.testing.assert_array_equal(other[column].to_numpy(), want, err_msg=column)
    _check_device_chunks(streamed)


def _check_device_chunks(prep) -> None:
    """The JAX path's time chunks (the kernel itself is tests/test_backends.py's): device arrays,
    the row clock counting on through the part, the state of one call handed to the next, and
    every chunk built before the previous call's result is read."""
    import dataclasses

    import jax

    from mmsweep.sweep.timechunks import run_part_chunked

    calls = []

    def fake_run(params, rows, config, state=None, return_state=False):
        assert isinstance(rows["bid"], jax.Array) and return_state
        calls.append((int(rows["index"][0]), len(rows["index"]), state))
        return {"n": len(calls)}, f"state{len(calls)}"

    import mmsweep.sweep.timechunks as tc

    exp = dataclasses.replace(prep.experiment, run=dataclasses.replace(prep.experiment.run, time_chunk_rows=700))
    chunked_prep = dataclasses.replace(prep, experiment=exp)
    lines: list[str] = []
    chunked_prep.progress = lines.append
    tc.PROGRESS_EVERY_S, every = 0.0, tc.PROGRESS_EVERY_S  # a progress line after every chunk but the last
    try:
        out = run_part_chunked(chunked_prep, "train", {"x": np.zeros(3)}, fake_run, host=False)
    finally:
        tc.PROGRESS_EVERY_S = every
    n = len(prep.parts["train"])
    assert [c[0] for c in calls] == list(range(0, n, 700)) and sum(c[1] for c in calls) == n
    assert [c[2] for c in calls] == [None] + [f"state{i}" for i in range(1, len(calls))]
    assert out == {"n": len(calls)}
    assert len(lines) == len(calls) - 1 >= 2
    assert lines[0].startswith(f"  train: 700/{n:,} rows x 3 lanes, ") and "lane-steps/s, ETA" in lines[0]
    # the pieces filled chunk by chunk equal the store's own reader, across stored chunks too
    store = prep.frames
    for lo, hi, size in ((0, len(store), 700), (5, len(store) - 3, 1111), (900, 1300, 7)):
        want, got = list(store.iter_frames(lo, hi, size)), list(tc._pieces(store, lo, hi, size))
        assert [r - lo for r, _ in want] == [r for r, _ in got]
        for (_, a), (_, b) in zip(want, got):
            assert a.feature_names == b.feature_names
            np.testing.assert_array_equal(a.features, b.features)
            for k in a.columns:
                assert a.columns[k].dtype == b.columns[k].dtype
                np.testing.assert_array_equal(a.columns[k], b.columns[k], err_msg=k)


def test_half_built_stores_of_killed_builds_are_removed(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from mmsweep.sweep.frames_store import _remove_abandoned

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    old = time.time() - 2 * 3600
    folders = {"killed": f"a.partial-{dead}", "killed_just_now": f"b.partial-{dead}",
               "alive": f"c.partial-{os.getppid()}", "not_a_pid": "d.partial-x"}
    for name in folders.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "chunk_00000.npz").write_bytes(b"x")
    for key in ("killed", "alive", "not_a_pid"):
        os.utime(tmp_path / folders[key], (old, old))
    with pytest.warns(UserWarning, match="did not finish"):
        _remove_abandoned(tmp_path)
    assert not (tmp_path / folders["killed"]).exists()
    assert all((tmp_path / folders[k]).exists() for k in ("killed_just_now", "alive", "not_a_pid"))
