"""A sweep's lanes on the exact replay engine: the glue between a prepared experiment and
:mod:`mmsweep.replay` (same policy, same decision times, same features, same part bounds)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np

from ..replay import ReplayConfig, ReplayResult, build_data, replay_metrics, replay_policy


def replay_config(exp, **overrides) -> ReplayConfig:
    """The exact engine's assumptions for ``exp``: its latency and fees, and the ``verify``
    section's queue model, exchange, response latency and parallelism."""
    v = exp.verify
    kw: dict[str, Any] = dict(
        queue=v.queue, queue_n=v.queue_n, partial_fills=v.partial_fills, cross_per_message=v.cross_per_message,
        maker_fee=exp.fees.maker_bps * 1e-4, taker_fee=exp.fees.taker_bps * 1e-4, lockstep=v.lockstep,
        processes=v.processes or max(1, os.cpu_count() or 1),
    )
    if exp.latency.file is not None:
        from .data.hftnpz import read_order_latency

        kw["latency_rows"] = read_order_latency(exp.latency.file)
    else:
        kw["entry_ns"] = int(exp.latency.entry_ns)
        kw["response_ns"] = int(exp.latency.entry_ns if v.response_ms is None else round(v.response_ms * 1e6))
    kw.update(overrides)
    return ReplayConfig(**kw)


def with_instrument(config: ReplayConfig, instrument) -> ReplayConfig:
    """``config`` accounting as the instrument does: an inverse instrument's PnL, fees and equity
    in the coin (``inverse``, ``contract_size`` = the contract size), as the sweep kernel's.  A
    linear instrument with multiplier 1 leaves ``config`` as given."""
    if instrument is None or not (getattr(instrument, "inverse", False) or instrument.contract_multiplier != 1.0):
        return config
    return dataclasses.replace(config, inverse=bool(instrument.inverse),
                               contract_size=float(instrument.contract_multiplier))


def part_window(prep, part: str) -> tuple[np.ndarray, int, np.ndarray]:
    """Decision times, end time and feature rows of a part (``train`` / ``test``)."""
    from .run import part_bounds

    frames = prep.frames
    lo, hi = part_bounds(frames, prep.experiment.split)[part]
    local_ts = frames["local_ts"]
    end = int(local_ts[hi]) if hi < len(frames) else int(local_ts[-1] + prep.experiment.interval_ns)
    return local_ts[lo:hi], end, frames.features[lo:hi]


def replay_lanes(prep, lanes: np.ndarray, part: str = "train", config: ReplayConfig | None = None,
                 progress: Callable[[str], None] | None = None, data: Any = None
                 ) -> tuple[ReplayResult, dict[str, np.ndarray]]:
    """Replay lanes (indices into the sweep's lane table) on one part; returns the record and
    the metrics (the sweep's metric names)."""
    exp = prep.experiment
    if prep.quoted is None:
        raise ValueError("the prepared experiment holds no events (prepare() keeps them)")
    config = with_instrument(config or replay_config(exp), prep.quoted.instrument)
    lanes = np.asarray(lanes, np.int64)
    params = {k: np.asarray(v, np.float64)[lanes] for k, v in prep.lanes.items()}
    decision_ts, end_ts, features = part_window(prep, part)
    inst = prep.quoted.instrument
    market = prep.configs[part].market
    static = dict(exp.strategy.static) if exp.strategy.static else None
    if data is None:
        data = build_data(prep.quoted.table, inst.tick_size, inst.lot_size)
    result = replay_policy(prep.quoted.table, tick_size=inst.tick_size, lot_size=inst.lot_size,
                           decision_ts=decision_ts, end_ts=end_ts, features=features, market=market,
                           policy=exp.strategy.policy, static=static, params=params, config=config, data=data,
                           progress=progress)
    metrics = replay_metrics(result, resample_ns=int(round(exp.metrics.resample_s * 1e9)),
                             book_size=exp.metrics.book_size,
                             trading_days_per_year=exp.metrics.trading_days_per_year,
                             contract_multiplier=inst.contract_multiplier)
    return result, metrics
