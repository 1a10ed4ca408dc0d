"""`mmsweep export`: a lane of a run as an experiment of its own that reruns to the sweep's
metrics bit for bit, on the real sample and on the synthetic market; the informational
provenance section; run.max_levels; every bad input a one-line error."""
from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from mmsweep.sweep.cli import main
from mmsweep.sweep.config import POLICIES, load_experiment, parse_experiment
from mmsweep.sweep.errors import InputError
from mmsweep.sweep.export import Chosen, export_experiment, export_run, read_run
from mmsweep.sweep.run import kernel_max_levels, run_experiment

REPO = Path(__file__).resolve().parents[1]
METRIC = re.compile(r"^(train|test|block\d+)_")


def bits(value: float) -> bytes:
    return struct.pack("<d", float(value))


def assert_same_metrics(sweep_row: dict, rerun_row: dict) -> int:
    """Every metric column of the sweep's lane equals the rerun's, bit for bit (NaN = NaN)."""
    columns = sorted(c for c in sweep_row if METRIC.match(c))
    assert columns == sorted(c for c in rerun_row if METRIC.match(c))
    differ = [(c, sweep_row[c], rerun_row[c]) for c in columns
              if bits(sweep_row[c]) != bits(rerun_row[c])
              and not (math.isnan(sweep_row[c]) and math.isnan(rerun_row[c]))]
    assert not differ, differ
    return len(columns)


@pytest.fixture(scope="module")
def root(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSWEEP_CACHE", str(root / "cache"))
        mp.setenv("MMSWEEP_SHARED_DATA", str(shared_data))
        yield root


@pytest.fixture(scope="module")
def real_run(root) -> Path:
    """The APT study on the real sample (latency file, float32), 2 x 2 x 16 = 64 lanes with
    n_levels 1 and 2, so that a one-level lane ran with 2 order slots per side."""
    spec = yaml.safe_load((REPO / "experiments" / "real_btcusdt_apt.yaml").read_text())
    del spec["strategy"]["params"]["n_levels"]
    spec["sweep"] = {"relative_half_spread_bps": {"list": [0.5, 1.5]}, "n_levels": {"list": [1, 2]},
                     "beta": {"sobol": {"low": 0, "high": 2, "n": 16, "seed": 1}}}
    assert spec["run"]["dtype"] == "float32"
    exp = parse_experiment(spec, "real", base_dir=REPO / "experiments")
    return run_experiment(exp, out_root=root / "runs", log=lambda m: None)


@pytest.fixture(scope="module")
def synthetic_run(root) -> Path:
    """The demo's structure on ~2 minutes of synthetic market, 4 x 3 x 2 = 24 lanes; the
    60 bps half-spread never trades, so those lanes miss min_trades and stay unranked."""
    spec = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    spec["name"] = "synth"
    spec["data"]["synthetic"]["hours"] = 0.03
    del spec["strategy"]["params"]["n_levels"]
    spec["sweep"] = {"half_spread": {"list": [0.5, 1.0, 2.0, 60.0]}, "skew": {"list": [0.01, 0.1, 1.0]},
                     "n_levels": {"list": [3, 1]}}
    spec["constraints"] = {"min_trades": 1}
    spec["split"] = {"train_fraction": 1.0}  # one part: one kernel compilation per run
    spec["run"] = {"chunk_lanes": 64, "dtype": "float32"}
    return run_experiment(parse_experiment(spec, "synth"), out_root=root / "runs", log=lambda m: None)


def test_real_lane_reruns_to_identical_metrics(real_run, root, tmp_path) -> None:
    results = pl.read_parquet(real_run / "results.parquet")
    assert results["n_levels"].max() == 2
    one_level = results.filter(pl.col("feasible") & (pl.col("n_levels") == 1)).sort("rank")
    lane = int(one_level["lane"][0])
    sweep_row = results.filter(pl.col("lane") == lane).row(0, named=True)
    runner = CliRunner()
    out = tmp_path / "best.yaml"
    result = runner.invoke(main, ["export", str(real_run), "--lane", str(lane), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"exported lane {lane}" in result.output

    spec = yaml.safe_load(out.read_text())
    exp = load_experiment(out)
    active = POLICIES["fair_value"].active(exp.strategy.static)
    assert spec["sweep"] == {} and spec["run"]["max_levels"] == 2 and exp.run.max_levels == 2
    for name in exp.param_names:  # results.parquet's values, bit for bit
        assert bits(exp.strategy.params[name]) == bits(sweep_row[name]), name
    # each parameter's unit, as the policy declares it, next to its value and in provenance
    lines = {line.split(":")[0].strip(): line for line in out.read_text().splitlines()
             if line.startswith("    ") and "  # " in line}
    for name in active:
        unit = POLICIES["fair_value"].params[name].unit
        assert lines[name].endswith(f"# {unit}")
        assert spec["provenance"]["parameters"][name]["unit"] == unit
    prov = spec["provenance"]
    assert prov["exported_from"]["lane"] == lane and prov["exported_from"]["rank"] == sweep_row["rank"]
    assert prov["instrument"]["tick_size"] == 0.1 and prov["instrument"]["lot_size"] == 0.001
    assert prov["instrument"]["contract_multiplier"] == 1.0 and prov["instrument"]["accounting"].startswith("linear")
    inputs = prov["data"]["inputs"]
    assert len(inputs) == 3  # futures, spot, the order-latency file
    for path, digest in inputs.items():
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert prov["metrics"]["fast"]["train"]["SR"] == sweep_row["train_SR"]

    rerun = runner.invoke(main, ["run", str(out), "--out", str(root / "runs")])
    assert rerun.exit_code == 0, rerun.output
    assert "metrics equal the exported ones exactly" in rerun.output
    rerun_dir = root / "runs" / exp.name
    again = pl.read_parquet(rerun_dir / "results.parquet")
    assert again.height == 1
    assert assert_same_metrics(sweep_row, again.row(0, named=True)) == 34  # 17 metrics x train, test
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (real_run, rerun_dir)]
    assert manifests[0]["frames"]["cache_key"] == manifests[1]["frames"]["cache_key"]
    assert manifests[0]["kernel"] == manifests[1]["kernel"]


def test_synthetic_rank_reruns_verifies_and_a_point_takes_the_same_path(synthetic_run, tmp_path) -> None:
    results = pl.read_parquet(synthetic_run / "results.parquet")
    best = results.filter(pl.col("rank") == 2).row(0, named=True)
    path, chosen = export_run(synthetic_run, tmp_path / "second.yaml", rank=2)
    assert chosen.origin["lane"] == best["lane"] and chosen.label == f"lane {best['lane']} (rank 2)"
    exp = load_experiment(path)
    assert exp.data.synthetic == read_run(synthetic_run).experiment.data.synthetic
    rerun = run_experiment(exp, out_root=tmp_path / "runs", log=lambda m: None)
    assert_same_metrics(best, pl.read_parquet(rerun / "results.parquet").row(0, named=True))

    # mmsweep verify accepts the exported run; exporting it again carries the exact metrics
    runner = CliRunner()
    verified = runner.invoke(main, ["verify", str(rerun), "--processes", "1"])
    assert verified.exit_code == 0, verified.output
    exact = pl.read_parquet(rerun / "verify.parquet").row(0, named=True)
    assert exact["selected"] == "top" and exact["rank"] == 1
    twice = tmp_path / "again.yaml"
    assert runner.invoke(main, ["export", str(rerun), "-o", str(twice)]).exit_code == 0
    exported_exact = yaml.safe_load(twice.read_text())["provenance"]["metrics"]["exact"]["train"]
    assert exported_exact["metrics"]["PnL"] == exact["exact_PnL"]
    assert exported_exact["metrics"]["NumberOfTrades"] == exact["exact_NumberOfTrades"]
    assert exported_exact["engine"]["queue"] == exp.verify.queue

    # A point that is not a row of the table (as a tuned one will be) goes through the same code:
    # parameter values plus metrics give the same experiment as the lane, under its own name.
    run = read_run(synthetic_run)
    params = {name: best[name] for name in run.experiment.param_names}
    point = Chosen(params, "tuned point 1", "tuned1", {"selected_by": "tuned point 1"}, chosen.fast)
    text = export_experiment(run, point)
    from_point = parse_experiment(yaml.safe_load(text), "point")
    assert from_point.name == f"{run.experiment.name}-tuned1"
    assert from_point.strategy == exp.strategy and from_point.run == exp.run and from_point.verify == exp.verify
    # a point's values are range-checked like any experiment's
    bad = Chosen({**params, "order_qty": -1.0}, "tuned point 2", "tuned2", {}, {})
    with pytest.raises(InputError, match="strategy.params.order_qty"):
        export_experiment(run, bad)


def test_bad_input_is_one_line_naming_the_value(synthetic_run, tmp_path, monkeypatch) -> None:
    runner = CliRunner()
    out = str(tmp_path / "x.yaml")
    results = pl.read_parquet(synthetic_run / "results.parquet")
    n, ranked = results.height, int(results["rank"].is_not_null().sum())
    assert 0 < ranked < n
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((synthetic_run / "config.json").read_text())
    outside = tmp_path / "a_file"
    outside.write_text("")

    def error(*args: str) -> str:
        result = runner.invoke(main, ["export", *args])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        return lines[0]

    run = str(synthetic_run)
    assert "results.parquet" in error(str(unfinished), "-o", out)
    assert "no such run folder" in error(str(tmp_path / "nope"), "-o", out)
    assert "--rank" in error(run, "--rank", "0", "-o", out)
    assert f"rank {n + 1} is beyond the table" in error(run, "--rank", str(n + 1), "-o", out)
    msg = error(run, "--rank", str(ranked + 1), "-o", out)
    assert "--rank" in msg and f"only {ranked} of the {n} lanes meet the constraints" in msg
    assert "no lane 999" in error(run, "--lane", "999", "-o", out)
    assert "not both" in error(run, "--lane", "1", "--rank", "1", "-o", out)
    assert "is a folder" in error(run, "-o", str(tmp_path))
    assert "no such folder" in error(run, "-o", str(tmp_path / "missing" / "x.yaml"))
    assert "is a file, not a folder" in error(run, "-o", str(outside / "x.yaml"))
    assert not Path(out).exists()

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as mp:  # a folder this user may not write (root could write anywhere)
        mp.setattr(Path, "write_text", refuse)
        assert "permission denied" in error(run, "-o", out)
    assert not list(tmp_path.glob(".x.yaml.*"))  # no temporary file left behind

    # An unranked lane can still be exported by id, with a warning.
    infeasible = int(results.filter(~pl.col("feasible"))["lane"][0])
    result = runner.invoke(main, ["export", run, "--lane", str(infeasible), "-o", out])
    assert result.exit_code == 0 and "does not meet the run's constraints" in result.output
    assert yaml.safe_load(Path(out).read_text())["provenance"]["exported_from"]["feasible"] is False


BASE = {
    "name": "t",
    "data": {"source": "synthetic", "synthetic": {"hours": 0.5, "seed": 3}},
    "fees": {"maker_bps": -0.5, "taker_bps": 7.0},
    "strategy": {"policy": "grid", "params": {"order_qty": 0.01, "half_spread": 2, "n_levels": 5}},
}


def test_provenance_is_checked_and_changes_nothing_that_runs(tmp_path) -> None:
    prov = {"exported_from": {"lane": 3, "rank": None}, "exported_at": "2026-01-01T00:00:00+00:00",
            "metrics": {"fast": {"train": {"SR": float("nan"), "PnL": 1.5}}}}
    plain = parse_experiment(BASE)
    with_prov = parse_experiment({**BASE, "provenance": prov})
    assert with_prov == plain and with_prov.provenance["exported_from"] == {"lane": 3, "rank": None}
    assert with_prov.to_dict() == {**plain.to_dict(), "provenance": with_prov.provenance}
    assert "provenance" not in plain.to_dict()
    for bad, key in (("text", "provenance"), ({"origin": {}}, "provenance.origin"),
                     ({"exported_at": 5}, "provenance.exported_at"), ({"data": [1]}, "provenance.data")):
        with pytest.raises(InputError, match=re.escape(f"key '{key}'")):
            parse_experiment({**BASE, "provenance": bad})
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({**BASE, "provenance": {"exported_from": {}, "orgin": 1}}, sort_keys=False))
    with pytest.raises(InputError, match=r"line \d+.*provenance\.orgin"):
        load_experiment(path)


def test_max_levels_is_pinned_or_the_widest_lane() -> None:
    exp = parse_experiment({**BASE, "sweep": {"n_levels": {"list": [1, 4]}},
                            "strategy": {"policy": "grid", "params": {"order_qty": 0.01, "half_spread": 2}}})
    lanes = {"n_levels": np.array([1.0, 4.0])}
    assert exp.run.max_levels is None and "max_levels" not in exp.to_dict()["run"]  # older hashes unchanged
    assert kernel_max_levels(exp, lanes) == 4
    pinned = parse_experiment({**exp.to_dict(), "run": {"max_levels": 6}})
    assert pinned.to_dict()["run"]["max_levels"] == 6 and kernel_max_levels(pinned, lanes) == 6
    too_few = parse_experiment({**exp.to_dict(), "run": {"max_levels": 3}})
    with pytest.raises(InputError, match=r"run\.max_levels.*up to 4"):
        kernel_max_levels(too_few, lanes)
    for bad in (0, 2.5, "five"):
        with pytest.raises(InputError, match=r"run\.max_levels"):
            parse_experiment({**BASE, "run": {"max_levels": bad}})
