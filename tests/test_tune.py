"""`mmsweep tune`: the tune section's validation, the reparametrisation, a small end-to-end tune on
the synthetic market from the CLI (tuned points never below their starts on the hard train
objective, at least one above), tune.parquet's columns, and `export --tuned` reproducing a tuned
point's hard metrics through `mmsweep run`."""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from mmsweep.sweep.cli import main
from mmsweep.sweep.config import load_experiment, parse_experiment
from mmsweep.sweep.errors import InputError
from mmsweep.sweep.run import METRIC_COLUMNS, experiment_hash
from mmsweep.sweep.tune import Transform

#: a small grid experiment on ~3 minutes of the synthetic market (seeded), 6 lanes
SMALL = {
    "name": "small",
    "data": {"source": "synthetic", "synthetic": {"hours": 0.05, "seed": 3}, "quoted": "futures"},
    "interval_ms": 100,
    "latency": {"entry_ms": 10},
    "fees": {"maker_bps": -0.5, "taker_bps": 7.0},
    "strategy": {"policy": "grid", "params": {"order_qty": 0.01, "n_levels": 2, "max_position": 0.2, "relative": 1,
                                              "grid_interval": 0.5}},
    "sweep": {"half_spread": [0.25, 1.0, 2.0], "skew": [0.05, 0.5]},
    "objective": {"metric": "PnL"},
    "constraints": {"min_trades": 1},
    "split": {"train_fraction": 0.7},
    "run": {"chunk_lanes": 64},
    "tune": {"params": ["half_spread", "skew"], "bounds": {"half_spread": [0, 5], "skew": [0, 2]},
             "starts": {"top": 3}, "steps": 16, "exact": {"top": 1}},
}


def bits(value: float) -> bytes:
    return struct.pack("<d", float(value))


def write(tmp_path: Path, spec: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def tune_from_cli(root: Path, spec: dict, name: str):
    """``mmsweep tune`` of ``spec`` (written to ``root/name``) run in ``root`` with a frames cache
    of its own; yields the CLI's output once, the environment held until the generator resumes."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSWEEP_CACHE", str(root / "cache"))
        mp.chdir(root)
        result = CliRunner().invoke(main, ["tune", str(write(root, spec, name))])
        assert result.exit_code == 0, result.output
        yield result.output


def with_tune(**tune) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(SMALL))
    spec["tune"] = tune
    return spec


# --- the tune section ---------------------------------------------------------------------------


@pytest.mark.parametrize("tune,key,words", [
    ({"params": ["n_levels"]}, "tune.params[0]", "n_levels takes whole numbers"),
    ({"params": ["skew", "relative"]}, "tune.params[1]", "relative takes whole numbers"),
    ({"params": ["skw"]}, "tune.params[0]", "did you mean 'skew'"),
    ({"params": ["skew", "skew"]}, "tune.params", "listed twice"),
    ({"params": ["skew"], "bounds": {"skew": [1, 0.5]}}, "tune.bounds.skew.high", "must be greater than low"),
    ({"params": ["half_spread"], "bounds": {"half_spread": [-1, 3]}}, "tune.bounds.half_spread", "low -1 is outside"),
    ({"params": ["skew"], "bounds": {"half_spread": [0, 3]}}, "tune.bounds.half_spread", "not a tuned parameter"),
    ({"params": ["skew"], "bounds": {"skew": [0, 2]}, "starts": {"points": [{"skew": 0.5}, {"skew": 3.0}]}},
     "tune.starts.points[1].skew", "skew = 3, outside the bounds [0, 2]"),
    ({"params": ["skew"], "starts": {"sobol": {"n": 4}}}, "tune.bounds.skew", "Sobol starts need finite bounds"),
    ({"params": ["skew"], "objective": {"metric": "Sortino"}}, "tune.objective.metric", "unknown value 'Sortino'"),
    ({"params": ["skew"], "optimizer": {"name": "lbfgs"}}, "tune.optimizer.name", "unknown value 'lbfgs'"),
    ({"params": ["skew"], "temperature": {"start": 0}}, "tune.temperature.start", "must be a finite number > 0"),
    ({"params": ["skew"], "steps": 0}, "tune.steps", "must be >= 1"),
    ({"params": ["skew"], "startz": {"top": 2}}, "tune.startz", "unknown key"),
])
def test_bad_tune_sections_name_the_file_line_and_key(tmp_path, tune, key, words) -> None:
    path = write(tmp_path, with_tune(**tune))
    with pytest.raises(InputError) as info:
        load_experiment(path)
    message = str(info.value)
    assert key == info.value.key and words in message, message
    assert str(path) in message and info.value.line is not None and "\n" not in message


def test_a_derived_parameter_and_an_unsupported_objective_are_refused() -> None:
    spec = with_tune(params=["grid_interval"])
    del spec["strategy"]["params"]["grid_interval"]
    spec["sweep"]["derived"] = {"grid_interval": "half_spread"}
    with pytest.raises(InputError, match="derived from half_spread.*tune half_spread instead"):
        parse_experiment(spec, "x")
    spec = with_tune(params=["skew"])
    spec["objective"] = {"metric": "Sortino"}
    with pytest.raises(InputError, match="ranks on Sortino.*set tune.objective.metric") as info:
        parse_experiment(spec, "x")
    assert info.value.key == "tune.objective.metric"


def test_the_section_round_trips_and_does_not_change_the_run_hash() -> None:
    spec = with_tune(params=["skew", "half_spread"], bounds={"skew": [0, 2], "half_spread": {"low": 0.1, "high": 9}},
                     starts={"sobol": {"n": 8, "seed": 1}}, temperature=0.5, optimizer={"schedule": "exponential"})
    exp = parse_experiment(spec, "x")
    tune = exp.tune
    assert tune.bound("skew") == (0.0, 2.0) and tune.bound("half_spread") == (0.1, 9.0)
    assert tune.temperature.start == tune.temperature.end == 0.5 and tune.mode == "forward"
    again = parse_experiment(exp.to_dict(), "y")
    assert again.tune == tune
    other = with_tune(params=["skew"], steps=7)
    assert experiment_hash(parse_experiment(other, "z")) == experiment_hash(exp)  # resume-safe
    default = parse_experiment(with_tune(params=["half_spread"]), "d").tune
    assert default.bound("half_spread") == (0.0, math.inf)  # the policy's declared range


def test_transforms_are_inverse_and_their_derivatives_right() -> None:
    starts = np.array([0.5, 1.0, 2.0])
    for low, high, kind in ((0.0, 4.0, "sigmoid"), (0.0, math.inf, "softplus"), (-math.inf, 3.0, "softplus_upper"),
                            (-math.inf, math.inf, "linear")):
        t = Transform.make("p", low, high, starts)
        assert t.kind == kind
        np.testing.assert_allclose(t.x(t.u(starts)), starts, rtol=1e-12)
        u = np.linspace(-4, 4, 9)
        h = 1e-6
        np.testing.assert_allclose(t.dx_du(u), (t.x(u + h) - t.x(u - h)) / (2 * h), rtol=1e-6, atol=1e-9)
        x = t.x(np.array([-50.0, 50.0]))
        assert np.all(x >= low) and np.all(x <= high)  # bounds hold without clipping
    edge = Transform.make("p", 0.0, 4.0, starts)
    assert edge.x(edge.u(np.array([0.0, 4.0]))) == pytest.approx([0.08, 3.92])  # 2 % inside, free to move


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """``mmsweep tune small.yaml`` (the sweep runs first) in a fresh folder and frames cache."""
    root = tmp_path_factory.mktemp("tune")
    for output in tune_from_cli(root, SMALL, "small.yaml"):
        yield root, root / "runs" / "small", output


def test_tune_from_the_cli_improves_on_its_starts(tuned) -> None:
    _root, run_dir, output = tuned
    table = pl.read_parquet(run_dir / "tune.parquet")
    results = pl.read_parquet(run_dir / "results.parquet")
    assert table.height == 3
    # the starts are the run's top 3 lanes, and their hard scores are the sweep's
    top = results.filter(pl.col("rank") <= 3).sort("rank")
    assert sorted(table["start_lane"].to_list()) == sorted(top["lane"].to_list())
    for row in table.iter_rows(named=True):
        lane = results.filter(pl.col("lane") == row["start_lane"]).row(0, named=True)
        assert row["hard_start_train"] == lane["train_PnL"] and row["start_test_PnL"] == lane["test_PnL"]
        assert 0 <= row["half_spread"] <= 5 and 0 <= row["skew"] <= 2
    start, end = table["hard_start_train"].to_numpy(), table["hard_tuned_train"].to_numpy()
    assert np.all(end >= start) and np.any(end > start + 0.1), (start, end)
    assert np.all(table["step"].to_numpy()[end > start] > 0)
    assert table["tuned"].to_list()[0] == 1 and table["hard_tuned_train"][0] == end.max()
    # the best tuned point and its start on the exact engine, both parts
    best = table.row(0, named=True)
    for part in ("train", "test"):
        assert math.isfinite(best[f"exact_tuned_{part}"]) and math.isfinite(best[f"exact_start_{part}"])
        assert best[f"exact_{part}_NumberOfTrades"] > 0
    assert all(math.isnan(v) for v in table["exact_tuned_train"].to_list()[1:])
    assert "tune.parquet" in output and "hard train" in output


def test_tune_parquet_columns(tuned) -> None:
    _root, run_dir, _out = tuned
    table = pl.read_parquet(run_dir / "tune.parquet")
    expected = ["tuned", "start", "start_lane", "start_label", "start_half_spread", "start_skew", "half_spread",
                "grid_interval", "skew", "n_levels", "order_qty", "max_position", "relative", "step", "objective",
                "feasible", "exact_failure"]
    expected += [f"{kind}_{which}_{part}" for kind in ("smooth", "hard", "exact") for which in ("start", "tuned")
                 for part in ("train", "test")]
    expected += [f"{prefix}{part}_{m}" for prefix in ("", "start_", "exact_", "exact_start_")
                 for part in ("train", "test") for m in METRIC_COLUMNS]
    assert sorted(table.columns) == sorted(expected)
    assert set(table["objective"].to_list()) == {"PnL"}
    # untuned parameters stay at the start lane's values
    assert set(table["n_levels"].to_list()) == {2.0} and set(table["grid_interval"].to_list()) == {0.5}
    assert (run_dir / "plots" / "tune_objective.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_tuned_reruns_to_its_hard_metrics(tuned) -> None:
    root, run_dir, _out = tuned
    runner = CliRunner()
    best = root / "best.yaml"
    result = runner.invoke(main, ["export", str(run_dir), "--tuned", "1", "-o", str(best)])
    assert result.exit_code == 0, result.output
    text = best.read_text()
    assert "tuned point 1" in text and "small-tuned1" in text
    result = runner.invoke(main, ["run", str(best), "--out", str(root / "again")])
    assert result.exit_code == 0, result.output
    assert "metrics equal the exported ones exactly" in result.output, result.output
    row = pl.read_parquet(run_dir / "tune.parquet").filter(pl.col("tuned") == 1).row(0, named=True)
    rerun = pl.read_parquet(root / "again" / "small-tuned1" / "results.parquet").row(0, named=True)
    for part in ("train", "test"):
        for m in METRIC_COLUMNS:
            a, b = row[f"{part}_{m}"], rerun[f"{part}_{m}"]
            assert bits(a) == bits(b) or (math.isnan(a) and math.isnan(b)), (part, m, a, b)
    for name in ("half_spread", "skew"):
        assert bits(rerun[name]) == bits(row[name])


def test_bad_input_at_tune_time_is_one_line(tuned, tmp_path) -> None:
    root, run_dir, _out = tuned
    runner = CliRunner()

    def fails(args, *words):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], result.output  # one line, after the run's log
        assert all(w in errors[0] for w in words), errors[0]

    empty = tmp_path / "empty_run"
    empty.mkdir()
    fails(["tune", str(empty)], "no results.parquet")
    fails(["tune", str(run_dir), "--params", "n_levels"], "n_levels takes whole numbers", "--params")
    fails(["export", str(run_dir), "--tuned", "9", "-o", str(tmp_path / "x.yaml")], "--tuned", "beyond the table")
    fails(["export", str(run_dir), "--tuned", "1", "--rank", "1", "-o", str(tmp_path / "x.yaml")], "not two")
    # bounds that exclude the run's top lanes: named with the lane and the value
    spec = with_tune(params=["half_spread"], bounds={"half_spread": [0.5, 5]}, starts={"top": 3})
    spec["name"], spec["run"]["out"] = "small_bounds", str(tmp_path / "runs")
    fails(["tune", str(write(tmp_path, spec))], "tune.bounds.half_spread", "half_spread = 0.25",
          "outside the bounds [0.5, 5]", "(rank 1)")
    no_tune = tmp_path / "lanes_only"
    no_tune.mkdir()
    fails(["export", str(no_tune), "--tuned", "1", "-o", str(tmp_path / "y.yaml")], "no results.parquet")
