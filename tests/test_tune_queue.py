"""`mmsweep tune` on an experiment with ``fill_model: queue``: the smooth kernel relaxes the queue
model (kernels/fills/queue_smooth.py), the hard re-scoring runs the sweep's queue kernel, and at a
tiny final temperature with straight-through rounding the smooth scores of the starts and of
the tuned points are the hard ones (so the smooth kernel ran on the queue frames too: on this
market the queue model changes the train PnL of the top lanes, which quote at the touch, by
0.1-0.4 USDT against strict cross)."""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from test_tune import tune_from_cli

#: a small grid experiment on ~2 minutes of the synthetic market (seeded), 6 lanes, queue fills
QUEUE = {
    "name": "small_queue",
    "data": {"source": "synthetic", "synthetic": {"hours": 0.03, "seed": 3}, "quoted": "futures"},
    "interval_ms": 100,
    "latency": {"entry_ms": 10},
    "fees": {"maker_bps": -0.5, "taker_bps": 7.0},
    "fill_model": "queue",
    "queue_levels": 4,
    "strategy": {"policy": "grid", "params": {"order_qty": 0.01, "n_levels": 2, "max_position": 0.2, "relative": 0,
                                              "grid_interval": 1}},
    "sweep": {"half_spread": [0.5, 1.5, 3.0], "skew": [0.05, 0.5]},  # ticks from the mid
    "objective": {"metric": "PnL"},
    "constraints": {"min_trades": 1},
    "split": {"train_fraction": 0.7},
    "verify": {"queue": "power2"},
    "run": {"chunk_lanes": 64, "dtype": "float64"},  # the smooth kernel's dtype, for the T -> 0 comparison
    "tune": {"params": ["half_spread", "skew"], "bounds": {"half_spread": [0, 5], "skew": [0, 2]},
             "starts": {"top": 2}, "steps": 5, "rounding": "straight_through",
             "temperature": {"start": 1.0, "end": 1e-4}, "position_temperature": {"start": 1.0, "end": 1e-4},
             "exact": {"top": 1}},
}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune_queue")
    for output in tune_from_cli(root, QUEUE, "queue.yaml"):
        yield root / "runs" / "small_queue", output


def test_tune_on_a_queue_experiment_writes_finite_hard_scores(tuned) -> None:
    run_dir, output = tuned
    table = pl.read_parquet(run_dir / "tune.parquet")
    results = pl.read_parquet(run_dir / "results.parquet")
    assert table.height == 2 and "tune.parquet" in output
    for kind in ("hard", "smooth"):
        for which in ("start", "tuned"):
            for part in ("train", "test"):
                values = table[f"{kind}_{which}_{part}"].to_numpy()
                assert np.all(np.isfinite(values)), (kind, which, part, values)
    # the starts' hard scores are the queue sweep's own, and keeping the best never loses
    for row in table.iter_rows(named=True):
        lane = results.filter(pl.col("lane") == row["start_lane"]).row(0, named=True)
        assert row["hard_start_train"] == lane["train_PnL"] and row["start_test_PnL"] == lane["test_PnL"]
        assert lane["train_NumberOfTrades"] > 0
        assert row["hard_tuned_train"] >= row["hard_start_train"]
    # T -> 0 (1e-4 ticks and lots), whole ticks: the smooth queue kernel is the hard queue kernel
    for which in ("start", "tuned"):
        for part in ("train", "test"):
            np.testing.assert_allclose(table[f"smooth_{which}_{part}"].to_numpy(),
                                       table[f"hard_{which}_{part}"].to_numpy(), rtol=1e-9, atol=1e-9,
                                       err_msg=f"{which} {part}")
    # the best tuned point and its start replayed on the exact engine (the same queue model)
    best = table.row(0, named=True)
    for part in ("train", "test"):
        assert math.isfinite(best[f"exact_tuned_{part}"]) and math.isfinite(best[f"exact_start_{part}"])
