"""Position limits hold for every policy, with random parameters, in both engines.

The documented bound (README, "The kernel"): a side stops quoting at ``max_position`` and no
single order is larger than the limit, so with latencies below the decision interval the
position passes the limit by at most one step's fills, the old grid in window a plus the new
one in window b: ``|position| <= max_position * (1 + 2 * levels)``.  Before the size cap,
Avellaneda-Stoikov's shaped sizes (``order_qty * exp(eta * q)``) grew with every overshoot.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mmsweep.replay import ReplayConfig
from mmsweep.sweep.config import load_experiment, parse_experiment
from mmsweep.sweep.exact import replay_lanes
from mmsweep.sweep.run import prepare, run_chunk

from conftest import REPO_ROOT

LEVELS = 3
FEATURES = [{"kind": "realized_vol", "window_s": 30}, {"kind": "imbalance", "levels": 5},
            {"kind": "vamp_bps", "levels": 5}, {"kind": "rolling_return", "instrument": "spot", "window_s": 30},
            {"kind": "vamp_bps", "instrument": "spot", "levels": 5}, {"kind": "mid", "instrument": "spot"}]
# per policy: static, fixed params, random axes (low, high) and the position limit (qty units)
CASES = {
    "grid": ({}, {"order_qty": 0.01, "max_position": 0.03, "relative": 0},
             {"half_spread": (0, 3), "skew": (0, 0.5), "grid_interval": (1, 3)}),
    "avellaneda_stoikov": ({"vol": "realized_vol_30s"}, {"order_qty": 0.01, "max_position": 0.02, "grid_step": 1},
                           {"gamma": (0, 0.5), "k": (0.2, 2), "eta": (0, 3)}),
    "fair_value": ({"signals": ["spot.rolling_return_30s"]}, {"order_notional": 700.0, "max_notional": 1500.0},
                   {"beta": (0, 2), "relative_half_spread_bps": (0, 0.5), "relative_skew_bps": (0, 2)}),
    "linear_alpha": ({"features": ["imbalance_5"], "vol": "realized_vol_30s"},
                     {"order_qty": 0.01, "max_position": 0.02}, {"coef_0": (-2, 2), "half_spread": (0, 2),
                                                                 "risk_aversion": (0, 1)}),
    "vamp_reference": ({"venue": "spot"}, {"order_qty": 0.01, "max_position": 0.02},
                       {"base_bps": (0, 0.5), "skew_bps": (0, 0.5), "q_scale": (0.5, 3)}),
}


@pytest.mark.parametrize("policy", list(CASES))
def test_position_stays_within_the_documented_bound(policy):
    static, fixed, axes = CASES[policy]
    raw = load_experiment(REPO_ROOT / "experiments" / "demo.yaml").to_dict()
    raw.update(name=f"limits-{policy}", features=FEATURES,
               strategy={"policy": policy, "params": {**fixed, "n_levels": LEVELS}, "static": static},
               sweep={"joint": [{"random": {"n": 24, "seed": 3},
                                 "axes": {k: {"low": lo, "high": hi} for k, (lo, hi) in axes.items()}}]},
               constraints={})
    raw["data"]["synthetic"] = {**raw["data"]["synthetic"], "hours": 0.05}
    raw["split"] = {"train_fraction": 1.0}
    prep = prepare(parse_experiment(raw), log=lambda *_: None)
    table = run_chunk(prep, 0, 24)
    mid_low = float(np.min(prep.frames["bid"])) * prep.frames.instrument.tick_size
    limit = fixed.get("max_position", fixed.get("max_notional", 0) / mid_low)
    bound = limit * (1 + 2 * LEVELS) + 1e-9
    fast = table["train_MaxAbsPosition"].to_numpy()
    assert table["train_NumberOfTrades"].to_numpy().sum() > 20
    assert fast.max() <= bound, (policy, fast.max(), bound)
    assert fast.max() >= limit * 0.999, "the limit was never reached: the test would prove nothing"
    lanes = np.argsort(-fast)[:4]  # the lanes that went furthest
    result, _metrics = replay_lanes(prep, lanes, "train", ReplayConfig(entry_ns=10_000_000, response_ns=10_000_000,
                                                                     processes=1))
    exact = np.abs(result.position).max()
    assert exact <= bound, (policy, exact, bound)
