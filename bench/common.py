"""Shared set-up of the kernel benchmarks: the synthetic market's frames and the strategies.

Strategies (all on the synthetic BTCUSDT-like futures book, 100 ms decisions, 10 ms latency):

* ``grid1`` / ``grid5`` / ``grid20``: the skewed grid of the demo with 1, 5 or 20 levels a side,
  grid interval and half-spread in ticks (a constant step: the mask-shift shortcut applies);
* ``apt``: the fair-value (APT) strategy quoting around a fair price from the spot market's
  return over a rolling window, notional sizing (one size per level).
"""
from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np

from mmsweep.kernels.metrics import MetricsConfig
from mmsweep.kernels.policies import bind, lane_invariants
from mmsweep.kernels.policies.base import Market
from mmsweep.kernels.scan import KernelConfig, rebase_frames
from mmsweep.sweep.data.synthetic import SynthConfig, synthetic_market
from mmsweep.sweep.features import FeatureSpec
from mmsweep.sweep.frames import FrameSpec, LatencySpec, build_frames

STRATEGIES = ("grid1", "grid5", "grid20", "apt")
SIGNAL = "spot.rolling_return_60s"


def synthetic_frames(hours: float, seed: int = 0, cache_dir=None):
    """(frames, seconds to build) of the synthetic futures market with the APT signal."""
    t = time.perf_counter()
    market = synthetic_market(SynthConfig(hours=hours, seed=seed))
    spec = FrameSpec(latency=LatencySpec(entry_ns=10_000_000),
                     features=(FeatureSpec.parse({"kind": "rolling_return", "instrument": "spot", "window_s": 60}),))
    frames = build_frames(market["futures"], spec, signals={"spot": market["spot"]}, cache_dir=cache_dir)
    return frames, time.perf_counter() - t


def lanes(strategy: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if strategy.startswith("grid"):
        return {"half_spread": rng.uniform(0, 40, n).round(), "skew": rng.uniform(0, 5, n),
                "grid_interval": rng.integers(1, 8, n) * 1.0, "n_levels": np.full(n, float(strategy[4:])),
                "order_qty": np.full(n, 0.01), "max_position": np.full(n, 0.5), "relative": np.zeros(n)}
    if strategy == "apt":
        return {"beta": rng.uniform(0, 2, n), "relative_half_spread_bps": rng.uniform(0, 3, n),
                "relative_skew_bps": rng.uniform(0, 3, n), "order_notional": np.full(n, 600.0),
                "max_notional": np.full(n, 30_000.0), "n_levels": np.full(n, 3.0), "grid_interval_bps": np.zeros(n)}
    raise KeyError(strategy)


def kernel_config(frames, strategy: str, params, fill_model: str = "cross", dtype=jnp.float32) -> KernelConfig:
    """The sweep's kernel config for ``strategy`` (its invariants' shortcuts on, as ``mmsweep run``)."""
    policy, static = ("grid", None) if strategy.startswith("grid") else ("fair_value", {"signals": [SIGNAL]})
    levels = int(np.max(params["n_levels"]))
    base = int(np.median(frames["bid"]))
    inv = lane_invariants(policy, params)
    return KernelConfig(bind(policy, static), Market(0.1, 0.001, base, tuple(frames.feature_names), 0.1, levels),
                        fill_model, -0.00005, 1.0, frames.meta["max_lag"] + 1,
                        MetricsConfig(resample_every=10, book_size=1e5), dtype,
                        constant_size=inv.constant_size, constant_step=inv.constant_step)


def rows_for(frames, config: KernelConfig, n_rows: int, host: bool = False) -> dict:
    rows = rebase_frames(frames, config.market.base_tick, config.dtype)
    rows = {k: v[:n_rows] for k, v in rows.items()}
    return {k: np.asarray(v) for k, v in rows.items()} if host else rows


def machine() -> str:
    """CPU model and core count, for the tables' captions."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    try:
        load = open("/proc/loadavg").read().split()[0]
    except OSError:
        load = "?"
    return f"{model}, {cores} cores usable, load average {load}"


def timed(fn, repeat: int) -> tuple[float, float]:
    """(first call, best of ``repeat`` later calls), seconds; each call waits for its results."""
    import jax

    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return first, best
