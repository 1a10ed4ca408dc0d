"""The JAX backend: the lane step (:mod:`mmsweep.kernels.step`) in ``lax.scan`` over rows,
``vmap`` over lanes.  The reference formulation of the kernel, and the GPU path through XLA.

Layout (what makes it fast on XLA:CPU): every piece of state is one ``[lanes]`` vector (each
level its own vector, each ring entry its own set of vectors, a side's orders a bitmask), so
the loop body is elementwise work on lane vectors with no gathers, no strided reductions and no
all-pairs matching.  Work that depends only on the row (does the row close a resample window?
does a decision arrive?) is a ``lax.cond`` on an unbatched predicate, so rows that need none
of it skip it for every lane at once.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .step import (NO_FILL, ROW_COLUMNS, KernelConfig, LaneState, Pending, closes, make_lane,  # noqa: F401
                   window_columns)

__all__ = ["KernelConfig", "NO_FILL", "rebase_frames", "run_lanes", "final_metrics", "KernelState"]

#: Tick columns of the frames, rebased to int32 relative ticks by :func:`rebase_frames`.
TICK_COLUMNS = ("bid", "ask", "bid_ack", "ask_ack", "buy_fill_a", "sell_fill_a", "buy_fill_b", "sell_fill_b",
                "sell_trade_low_a", "buy_trade_high_a", "sell_trade_low_b", "buy_trade_high_b")


class KernelState(NamedTuple):
    """Everything a sweep carries from one time chunk to the next: the lanes' states and the
    ring of decisions still on their way (``ring[k]`` holds decisions made at rows ``r`` with
    ``r % ring_size == k``).  Leaves are ``[lanes]`` arrays."""

    lanes: LaneState
    ring: tuple


def rebase_frames(frames, base_tick: int, dtype=jnp.float32) -> dict[str, jnp.ndarray]:
    """Frame columns as device arrays in relative ticks (int32), sentinels made int32-safe."""
    c = frames.columns
    out: dict[str, Any] = {}
    for name in TICK_COLUMNS:
        rel = np.clip(c[name].astype(np.int64) - base_tick, -NO_FILL, NO_FILL)
        out[name] = jnp.asarray(rel, jnp.int32)
    out["lag_a"] = jnp.asarray(np.minimum(c["lag_a"], 1 << 20), jnp.int32)
    out["lag_b"] = jnp.asarray(np.minimum(c["lag_b"], 1 << 20), jnp.int32)
    rejected = c["entry_rejected"] if "entry_rejected" in c else np.zeros(len(frames), bool)
    out["entry_rejected"] = jnp.asarray(np.asarray(rejected, np.int32))
    for name in c:  # the queue fill model's per-tick quantities (qty units)
        if name.startswith("queue_"):
            out[name] = jnp.asarray(c[name], dtype)
    out["features"] = jnp.asarray(frames.features, dtype)
    out["index"] = jnp.arange(len(frames), dtype=jnp.int32)
    return out


def _window(row: dict, columns: dict[str, str]) -> dict:
    return {name: row[col] for name, col in columns.items()}


def _select(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def make_scan_step(config: KernelConfig, record: bool = False, lane=None):
    """``(init, body, lane)`` for ``lax.scan`` over rows, for one lane (vmapped by the caller):
    ``init() -> KernelState`` and ``body(params, state, row) -> (state, per-row record)``.
    ``lane`` defaults to :func:`mmsweep.kernels.step.make_lane` (the smooth kernel passes its
    relaxed lane functions through the same wiring)."""
    lane = make_lane(config) if lane is None else lane
    ring_size = config.ring
    win_a = window_columns(lane.fill_model, "a")
    win_b = window_columns(lane.fill_model, "b")

    def init() -> KernelState:
        return KernelState(lane.init(), tuple(lane.empty_pending() for _ in range(ring_size)))

    def body(params, carry: KernelState, row):
        state, ring = carry
        seen = lane.observe(state, row)
        close = closes(config, row["index"])
        state = jax.lax.cond(close, lane.commit, lambda s, _seen: s, state, seen)
        state = lane.track(state, seen, close)
        pending = lane.decide(params, state, row)
        slot = row["index"] % ring_size
        ring = tuple(_select(slot == k, pending, entry) for k, entry in enumerate(ring))
        state = lane.fill(state, _window(row, win_a))
        arrived_slot = (row["index"] - row["lag_b"]) % ring_size
        arriving = ring[-1]
        for k in range(ring_size - 2, -1, -1):
            arriving = _select(arrived_slot == k, ring[k], arriving)
        state = jax.lax.cond(row["lag_b"] < row["lag_a"], lane.arrive, lambda s, _p, _r: s, state, arriving, row)
        state = lane.fill(state, _window(row, win_b))
        out = (seen.equity, seen.position) if record else None
        return KernelState(state, ring), out

    return init, body, lane


def final_metrics(state: LaneState, config: KernelConfig) -> dict[str, jnp.ndarray]:
    """hftbacktest-compatible metrics (:func:`mmsweep.kernels.metrics.metrics_finalize`) plus the
    kernel's own counters: ``Rejections`` and ``FinalPosition`` (qty units)."""
    return make_lane(config).finalize(state)


def run_lanes(params: dict[str, Any], rows: dict[str, jnp.ndarray], config: KernelConfig, *,
              record: bool = False, state: KernelState | None = None, return_state: bool = False):
    """Backtest every lane of ``params`` (each value an array ``[lanes]``) over ``rows``.

    Returns a dict of metric arrays ``[lanes]``; with ``record=True`` also per-row ``equity``
    (quote currency) and ``position`` (qty units) arrays ``[lanes, rows]`` (use only for a few
    lanes: memory is lanes x rows).  Time chunking: pass the ``state`` a previous call returned
    (``return_state=True`` makes the result ``(metrics, state)``) and rows whose ``index`` keeps
    counting; the metrics of the last chunk are those of the whole record, bit for bit.
    Compiled once per (config, record, parameter names).
    """
    lane_params = {k: jnp.asarray(v, config.dtype) for k, v in sorted(params.items())}
    n = int(np.shape(next(iter(lane_params.values())))[0]) if lane_params else 1
    if state is None:
        state = _initial_state(config, n)
    fn = _compiled(config, bool(record), tuple(lane_params))
    metrics, new_state = fn(lane_params, rows, state)
    return (metrics, new_state) if return_state else metrics


@functools.lru_cache(maxsize=32)
def _initial_state_fn(config: KernelConfig):
    init, _body, _lane = make_scan_step(config)
    return jax.jit(jax.vmap(lambda _i: init()), static_argnums=())


def _initial_state(config: KernelConfig, n_lanes: int) -> KernelState:
    return _initial_state_fn(config)(jnp.arange(n_lanes))


@functools.lru_cache(maxsize=32)
def _compiled(config: KernelConfig, record: bool, names: tuple):
    _init, body, lane = make_scan_step(config, record)

    def one_lane(lane_params, rows, state):
        state, ys = jax.lax.scan(lambda s, r: body(lane_params, s, r), state, rows, unroll=config.unroll)
        out = lane.finalize(state.lanes)
        if record:
            out["equity"], out["position"] = ys
        return out, state

    return jax.jit(jax.vmap(one_lane, in_axes=(0, None, 0)))
