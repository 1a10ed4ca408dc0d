"""A warm run of a read-at-once source finds its cached frames from the source's own key, without
generating or parsing the events; any change to the source reads them again."""
from __future__ import annotations

import gzip
import json
import shutil
import warnings

import numpy as np
import pytest

from mmsweep.sweep import datasource
from mmsweep.sweep.config import load_experiment, parse_experiment
from mmsweep.sweep.run import prepare

from test_run import small_experiment


def _counting_load(monkeypatch) -> list:
    """Count the reads of the events (datasource.load) from here on."""
    calls: list = []
    real = datasource.load

    def load(data):
        calls.append(data)
        return real(data)

    monkeypatch.setattr(datasource, "load", load)
    return calls


def _same_prepared(a, b) -> None:
    assert a.manifest["data"] == b.manifest["data"]
    assert a.manifest["frames"]["cache_key"] == b.manifest["frames"]["cache_key"]
    assert a.manifest["frames"]["rows"] == b.manifest["frames"]["rows"]
    assert a.parts.keys() == b.parts.keys()
    for part in a.parts:
        for name, col in a.parts[part].items():
            assert np.array_equal(np.asarray(col), np.asarray(b.parts[part][name])), (part, name)


def test_warm_synthetic_run_generates_nothing_until_the_exact_engine_asks(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path / "cache"))
    exp = load_experiment(small_experiment(tmp_path))
    first = prepare(exp, log=lambda m: None)
    calls = _counting_load(monkeypatch)
    said: list[str] = []
    second = prepare(exp, log=said.append)
    assert calls == [] and any("not read: their frames are cached" in m for m in said)
    _same_prepared(first, second)
    assert len(second.quoted) == len(first.quoted)
    # the exact engine's events: generated on demand, the same as the cold run's
    # (bytes: NaN fields are equal to themselves there)
    assert second.quoted.table.tobytes() == first.quoted.table.tobytes() and len(calls) == 1
    assert second.quoted.instrument == first.quoted.instrument


def test_another_synthetic_market_or_frame_spec_is_not_served_the_cached_frames(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path / "cache"))
    path = small_experiment(tmp_path)
    prepare(load_experiment(path), log=lambda m: None)
    calls = _counting_load(monkeypatch)
    text = path.read_text()
    reseeded = tmp_path / "reseeded.yaml"
    reseeded.write_text(text.replace("seed: 0", "seed: 1"))
    assert "seed: 1" in reseeded.read_text()
    a = prepare(load_experiment(reseeded), log=lambda m: None)
    slower = tmp_path / "slower.yaml"
    slower.write_text(text.replace("interval_ms: 100", "interval_ms: 200"))
    assert "interval_ms: 200" in slower.read_text()
    b = prepare(load_experiment(slower), log=lambda m: None)
    assert len(calls) == 2
    assert a.manifest["frames"]["cache_key"] != b.manifest["frames"]["cache_key"]


def test_a_damaged_pointer_or_a_removed_frames_file_reads_the_events_again(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path / "cache"))
    exp = load_experiment(small_experiment(tmp_path))
    first = prepare(exp, log=lambda m: None)
    (pointer,) = (tmp_path / "cache" / "frames").glob("source-*.json")
    facts = json.loads(pointer.read_text())
    assert facts["frames_key"] == first.manifest["frames"]["cache_key"]
    calls = _counting_load(monkeypatch)
    pointer.write_text("{not json")
    with pytest.warns(UserWarning, match="reading the events"):
        again = prepare(exp, log=lambda m: None)
    assert len(calls) == 1
    _same_prepared(first, again)
    assert json.loads(pointer.read_text()) == facts  # rewritten by the read
    (tmp_path / "cache" / "frames" / f"{facts['frames_key']}.npz").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a removed cache entry is no surprise: no warning, a rebuild
        rebuilt = prepare(exp, log=lambda m: None)
    assert len(calls) == 2
    _same_prepared(first, rebuilt)


def test_a_capture_file_is_parsed_once_and_again_when_its_bytes_change(shared_data, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path / "cache"))
    capture = tmp_path / "ethusd_perp_20240808.gz"
    shutil.copy(shared_data / "binance" / "cm" / "ethusd_perp_20240808.gz", capture)
    spec = {"name": "cm", "data": {"source": "files", "files": {"eth": {"path": str(capture)}}},
            "interval_ms": 100, "fees": {"maker_bps": -0.5, "taker_bps": 5},
            "strategy": {"policy": "grid", "params": {"n_levels": 1, "max_position": 50,
                                                                          "order_qty": 1, "relative": 1}},
            "sweep": {"half_spread": {"list": [0.5, 1.0]}}, "metrics": {"book_size": 1.0}, "run": {"dtype": "float64"}}
    exp = parse_experiment(spec)
    with pytest.warns(UserWarning, match="capture clock is off"):
        first = prepare(exp, log=lambda m: None)
    assert first.manifest["units"]["pnl"] == "ETH"
    calls = _counting_load(monkeypatch)
    with pytest.warns(UserWarning, match=r"capture clock is off .*\(said when the events were read"):
        second = prepare(exp, log=lambda m: None)  # the reader's repair, said again
    assert calls == []
    _same_prepared(first, second)
    assert second.config.inverse and second.quoted.instrument.inverse
    # the same path, other bytes (the last thousand lines cut): read again, other frames
    lines = gzip.open(capture, "rb").read().splitlines(keepends=True)
    with gzip.open(capture, "wb") as fh:
        fh.writelines(lines[:-1000])
    third = prepare(parse_experiment(spec), log=lambda m: None)
    assert len(calls) == 1
    assert third.manifest["frames"]["cache_key"] != first.manifest["frames"]["cache_key"]
