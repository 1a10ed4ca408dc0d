"""Degenerate mode: the exact engine reproduces the sweep kernel fill for fill.

The kernel's contract (DESIGN §3): strict-cross fills (no queue), constant entry latency shorter
than the interval, no response latency, best prices judged after whole messages.  In that mode
the engine must give the same trades, positions and equity at every decision, for every lane,
on both parts of the split, here on the synthetic market and on the real usdm capture.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mmsweep.kernels.scan import run_lanes
from mmsweep.replay import ReplayConfig
from mmsweep.sweep.config import load_experiment
from mmsweep.sweep.exact import replay_lanes
from mmsweep.sweep.run import prepare

from conftest import REPO_ROOT


pytestmark = pytest.mark.usefixtures("x64")  # float64 kernels, module-wide (conftest)


def _check(prep, lanes, entry_ns):
    for part in prep.parts:
        params = {k: np.asarray(v)[lanes] for k, v in prep.lanes.items()}
        fast = run_lanes(params, prep.parts[part], prep.configs[part], record=True)
        result, exact = replay_lanes(prep, lanes, part, ReplayConfig.degenerate(entry_ns, processes=1))
        np.testing.assert_array_equal(np.asarray(fast["position"]), result.position)
        np.testing.assert_allclose(np.asarray(fast["equity"]), result.equity, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(np.asarray(fast["NumberOfTrades"]), exact["NumberOfTrades"])
        np.testing.assert_array_equal(np.asarray(fast["Rejections"]), exact["Rejections"])
        np.testing.assert_allclose(np.asarray(fast["PnL"]), exact["PnL"], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(np.asarray(fast["SR"]), exact["SR"], rtol=1e-6)
        assert np.sum(exact["NumberOfTrades"]) > 20  # the lanes trade


@pytest.mark.parametrize("entry_ms", [0, 10, 70])
def test_engine_reproduces_kernel_on_synthetic(entry_ms) -> None:
    exp = load_experiment(REPO_ROOT / "experiments" / "demo.yaml")
    exp = dataclasses.replace(
        exp, data=dataclasses.replace(exp.data, synthetic={**exp.data.synthetic, "hours": 0.05}),
        latency=dataclasses.replace(exp.latency, entry_ns=entry_ms * 1_000_000),
        run=dataclasses.replace(exp.run, dtype="float64"))
    prep = prepare(exp, log=lambda *_: None)
    lanes = np.array([0, 5, 17, 300, 1111, 2047, 4000])
    _check(prep, lanes, entry_ms * 1_000_000)


def test_engine_reproduces_kernel_on_real_capture(shared_data) -> None:
    exp = load_experiment(REPO_ROOT / "experiments" / "demo.yaml")
    from mmsweep.sweep.config import parse_experiment

    raw = exp.to_dict()
    raw["data"] = {"source": "files", "files": {"futures": {
        "path": str(shared_data / "binance" / "usdm" / "btcusdt_20240808.gz"), "format": "binance",
        "tick_size": 0.1, "lot_size": 0.001}}, "quoted": "futures"}
    raw["sweep"] = {"half_spread": {"list": [0.2, 1.0]}, "skew": {"list": [0.05, 0.5]},
                    "grid_interval": {"list": [0.2, 1.0]}}
    raw["run"]["dtype"] = "float64"
    prep = prepare(parse_experiment(raw), log=lambda *_: None)
    _check(prep, np.arange(8), exp.latency.entry_ns)


def test_engine_reproduces_kernel_for_an_inverse_contract() -> None:
    """Coin-margined accounting (10 USD contracts, PnL in the coin): the kernel's relative
    formulation equals the exact engine's hftbacktest-style InverseAsset, row by row."""
    exp = load_experiment(REPO_ROOT / "experiments" / "demo.yaml")
    exp = dataclasses.replace(
        exp, data=dataclasses.replace(exp.data, synthetic={**exp.data.synthetic, "hours": 0.05}),
        run=dataclasses.replace(exp.run, dtype="float64"))
    prep = prepare(exp, log=lambda *_: None)
    lanes = np.array([0, 17, 300, 2047])
    for part in prep.parts:
        config = prep.configs[part]._replace(inverse=True, contract_multiplier=10.0)
        params = {k: np.asarray(v)[lanes] for k, v in prep.lanes.items()}
        fast = run_lanes(params, prep.parts[part], config, record=True)
        result, exact = replay_lanes(prep, lanes, part, ReplayConfig.degenerate(
            exp.latency.entry_ns, processes=1, inverse=True, contract_size=10.0))
        np.testing.assert_array_equal(np.asarray(fast["position"]), result.position)
        scale = np.abs(result.equity).max()
        assert scale > 0
        np.testing.assert_allclose(np.asarray(fast["equity"]), result.equity, rtol=0, atol=1e-9 * scale)
        np.testing.assert_allclose(np.asarray(fast["Fees"]), exact["Fees"], rtol=1e-9)
        assert np.sum(exact["NumberOfTrades"]) > 20
