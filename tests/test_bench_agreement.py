"""bench/agreement.py: unknown fill models and cases stop it at once, named; a tiny run of all
three fill models writes one row per model from one exhaustive replay, with the fast queue
model checked against the exact engine's queue model (its measurements are `mmsweep verify
--exhaustive --fill-models`, tested in test_verify.py)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "agreement.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _module():
    spec = importlib.util.spec_from_file_location("bench_agreement", ROOT / "bench" / "agreement.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_unknown_fill_models_and_cases_are_named_before_any_work(tmp_path) -> None:
    result = _bench("--fill-models", "cross,touch,queue,nosuch", "--out", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "fill model 'nosuch' is not available" in lines[0], result.stderr
    assert not (tmp_path / "agreement.json").exists()
    result = _bench("no_such_case", "--out", str(tmp_path))
    assert result.returncode == 2 and "'no_such_case'" in result.stderr


def test_check_queue_names_a_mismatch_with_the_exact_engine() -> None:
    mod = _module()
    from mmsweep.sweep.config import parse_experiment

    spec = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())
    spec["verify"] = {"queue": "power", "queue_n": 3}
    exp = parse_experiment(spec, "demo")
    good = {"queue_model": "power", "queue_n": 3.0, "queue_levels": exp.queue_levels, "queue_columns": 48,
            "queue_columns_expected": 48}
    mod.check_queue(exp, {"queue": "power", "queue_n": 3.0}, good)  # matches: no error
    with pytest.raises(SystemExit, match="exponent 2 vs the exact engine's 3"):
        mod.check_queue(exp, {"queue": "power", "queue_n": 3.0}, {**good, "queue_n": 2.0})
    with pytest.raises(SystemExit, match="queue model 'log' vs the exact engine's 'power'"):
        mod.check_queue(exp, {"queue": "power", "queue_n": 3.0}, {**good, "queue_model": "log"})
    with pytest.raises(SystemExit, match="0 queue levels"):
        mod.check_queue(exp, {"queue": "power", "queue_n": 3.0}, {**good, "queue_levels": 0})
    with pytest.raises(SystemExit, match="47 of 48 queue columns"):
        mod.check_queue(exp, {"queue": "power", "queue_n": 3.0}, {**good, "queue_columns": 47})


def test_tiny_run_of_three_fill_models(tmp_path) -> None:
    spec = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())
    spec["name"] = "tiny_agreement"
    spec["data"]["synthetic"]["hours"] = 0.02
    spec["sweep"] = {"half_spread": {"list": [1.0, 3.0]}, "skew": {"list": [0.1, 0.5]}, "grid_interval": {"list": [1.0]}}
    spec["constraints"] = {"min_trades": 1}
    # the JAX backend: it compiles the three fill models' kernels in seconds where numba takes
    # minutes (the numba queue kernel is tested in tests/test_queue.py)
    spec.setdefault("run", {})["backend"] = "jax"
    spec["split"] = {"train_fraction": 1.0}
    spec["verify"] = {"top_k": 2, "sample": 1, "seed": 0, "queue": "power", "queue_n": 2}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    result = _bench(str(path), "--fill-models", "touch,queue", "--out", str(out), "--repeat", "1",
                    "--timing-lanes", "8", "--processes", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((out / "agreement.json").read_text())
    assert data["fill_models"] == ["cross", "touch", "queue"]
    (case,) = data["cases"]
    assert case["exact_engine"]["queue"] == "power" and case["exact_engine"]["queue_n"] == 2
    rows = {r["fill_model"]: r for r in case["rows"]}
    assert list(rows) == ["cross", "touch", "queue"]
    assert {r["lanes"] for r in rows.values()} == {4}
    # one exhaustive replay for every row: the same best exact objective
    assert len({r["best_exact_objective"] for r in rows.values()}) == 1
    q = rows["queue"]
    assert (q["sweep_queue_model"], q["sweep_queue_n"]) == ("power", 2.0)
    assert q["sweep_queue_levels"] >= 1 and q["sweep_queue_columns"] == q["sweep_queue_columns_expected"] > 0
    assert rows["cross"]["sweep_queue_levels"] == 0 and rows["cross"]["sweep_vs_cross"] == 1.0
    assert "| queue |" in result.stdout and (out / "runs" / "tiny_agreement" / "plots").is_dir()
