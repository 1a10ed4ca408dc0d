"""The command line as a user types it (click's runner, same process)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mmsweep.sweep.cli import main
from mmsweep.sweep.data.loader import detect_format, load_events
from mmsweep.sweep.errors import InputError


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_inspect_real_npz_json(runner: CliRunner, shared_data) -> None:
    path = shared_data / "hftbacktest" / "usdm" / "btcusdt_20240808.npz"
    result = runner.invoke(main, ["data", "inspect", "--json", str(path)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["tick_size"] == pytest.approx(0.1) and summary["lot_size"] == pytest.approx(0.001)
    assert summary["counts"]["trade"] == 21313
    assert 340 < summary["span_s"] < 350
    assert 0 <= summary["feed_latency_ms"]["min"] <= summary["feed_latency_ms"]["p50"] < 50


def test_inspect_text_tardis_merge(runner: CliRunner, shared_data) -> None:
    tardis = shared_data / "tardis"
    files = [tardis / "binance-futures_trades_2020-02-22_BTCUSDT.csv",
             tardis / "binance-futures_quotes_2020-02-22_BTCUSDT.csv"]
    result = runner.invoke(main, ["data", "inspect", "--merge", *map(str, files)])
    assert result.exit_code == 0, result.output
    # 10,000 lines each, header included: 9,999 trades and 9,999 quotes (one BBO row per side).
    assert "trade 9,999" in result.stdout and "bbo 19,998" in result.stdout


def test_bad_input_is_a_clear_error(runner: CliRunner, tmp_path) -> None:
    missing = tmp_path / "nope.gz"
    result = runner.invoke(main, ["data", "inspect", str(missing)])
    assert result.exit_code == 2 and "nope.gz" in result.output and "no such file" in result.output
    junk = tmp_path / "junk.txt"
    junk.write_text("hello world\n")
    result = runner.invoke(main, ["data", "inspect", str(junk)])
    assert result.exit_code == 2 and "junk.txt" in result.output and "line 1" in result.output
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        detect_format(empty)
    result = runner.invoke(main, ["data", "synth", "--hours", "-1", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "hours" in result.output


def test_synth_then_inspect_then_frames(runner: CliRunner, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "synth"
    result = runner.invoke(main, ["data", "synth", "--hours", "0.05", "--seed", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.npz"))
    assert len(files) >= 2 and not list(out.glob("*.partial"))
    assert detect_format(files[0]) == "mmsweep"
    events = load_events(files[0])
    assert len(events) > 1000
    result = runner.invoke(main, ["data", "inspect", str(files[0])])
    assert result.exit_code == 0 and "events" in result.stdout
    args = ["data", "frames", str(files[0]), "--feature", "imbalance:levels=3", "--feature", "mid_return:lag_s=1"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "built" in first.stdout and "imbalance_3" in first.stdout
    second = runner.invoke(main, args + ["-o", str(tmp_path / "f.npz")])
    assert second.exit_code == 0 and "cache hit" in second.stdout
    assert (tmp_path / "f.npz").exists()
    bad = runner.invoke(main, ["data", "frames", str(files[0]), "--feature", "imbalance:depth=3"])
    assert bad.exit_code == 2 and "depth" in bad.output


def test_demo_runs_end_to_end(runner: CliRunner, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MMSWEEP_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(main, ["demo", "--hours", "0.02", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "4,096 lanes" in result.stdout and "Top 10 by train SR" in result.stdout
    assert (tmp_path / "runs" / "demo-0.02h" / "results.parquet").exists()
    again = runner.invoke(main, ["demo", "--hours", "0.02", "--out", str(tmp_path / "runs")])
    assert again.exit_code == 0 and "1 chunk(s) already done" in again.output  # resumed, nothing recomputed


def test_public_api_resolves() -> None:
    import mmsweep

    for name in mmsweep.__all__:
        assert getattr(mmsweep, name) is not None, name
    with pytest.raises(AttributeError):
        mmsweep.not_a_thing  # noqa: B018
