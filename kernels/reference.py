"""A plain scalar numba loop of the kernel's contract: one lane at a time, no JAX, no masks.

It is written independently of :mod:`mmsweep.kernels.step` (per-order arrays, loops and
branches, not bitmasks and shifts) and shares with it only the decision contract: the policy
and :func:`mmsweep.kernels.orders.to_decision`, compiled by
:func:`mmsweep.kernels.policy_numba.compile_decision`.  It serves two purposes: the
fill-for-fill check of the kernel backends (tests/test_reference.py) and the scalar baselines
of bench/throughput.py (one lane per loop iteration, on one core or over all cores).

Fills use strict-cross thresholds (``cross``) or touch thresholds (``touch``); accounting is in
lots and relative ticks (float64), like the kernel's.
"""
from __future__ import annotations

import numba
import numpy as np

from .policy_numba import compile_decision


@numba.njit(cache=True, nogil=True)
def _fill_side(tick, lots, live, s, threshold, side):
    """Fill side ``s``'s live orders at or through ``threshold``; returns (lots, lots x tick,
    count).  Arrays are indexed ``[side, level]`` (no views: each costs reference counting)."""
    qty = 0.0
    lots_ticks = 0.0
    count = 0
    for j in range(tick.shape[1]):
        if live[s, j] and ((side > 0 and tick[s, j] >= threshold) or (side < 0 and tick[s, j] <= threshold)):
            live[s, j] = False
            qty += lots[s, j]
            lots_ticks += lots[s, j] * tick[s, j]
            count += 1
    return qty, lots_ticks, count


@numba.njit(cache=True, nogil=True)
def _arrive_side(tick, lots, live, s, new_tick, new_lots, new_live, top, step, levels, size, seen, d, opposite,
                 side, rejected_entry):
    """A decision's grid reaching side ``s`` of the book; returns the rejections."""
    rejections = 0
    n = tick.shape[1]
    for i in range(n):
        new_live[i] = False
        t = top - side * i * step
        new_tick[i] = t
        if i >= levels:
            continue
        held = -1
        for j in range(n):
            if live[s, j] and tick[s, j] == t:
                held = j
        if held >= 0:
            new_live[i] = True
            new_lots[i] = lots[s, held]
        elif seen[d, s, i]:
            pass  # the bot believed it had this level: it sends nothing
        elif rejected_entry or (side > 0 and t >= opposite) or (side < 0 and t <= opposite):
            rejections += 1
        else:
            new_live[i] = True
            new_lots[i] = size
    if not rejected_entry:  # a rejected decision's messages never arrive: the old orders stay
        for i in range(n):
            tick[s, i] = new_tick[i]
            lots[s, i] = new_lots[i]
            live[s, i] = new_live[i]
    return rejections


@numba.njit(nogil=True)  # not cached: it takes the compiled decision function as an argument
def _lane(decide, params, bid, ask, bid_ack, ask_ack, lag_a, lag_b, rejected, buy_a, sell_a, buy_b, sell_b,
          features, max_levels, ring, pos_out, cash_out):
    """One lane over every row; fills ``pos_out``/``cash_out`` (lots, lots x ticks before each
    row) when they are non-empty; returns (position, cash_ticks, traded lots x ticks, fills,
    rejections)."""
    n_rows = bid.shape[0]
    L = max_levels
    dec = np.zeros((ring, 8))  # bid_top, ask_top, step, bid_levels, ask_levels, bid_lots, ask_lots, rejected
    seen = np.zeros((ring, 2, L), np.bool_)
    ticks = np.zeros((2, L), np.int64)
    lots = np.zeros((2, L))
    live = np.zeros((2, L), np.bool_)
    new_tick = np.zeros(L, np.int64)
    new_lots = np.zeros(L)
    new_live = np.zeros(L, np.bool_)
    position = 0.0
    cash = 0.0
    fills = 0
    rejections = 0
    record = pos_out.shape[0] > 0
    feature_row = np.zeros(features.shape[1])
    for r in range(n_rows):
        if record:
            pos_out[r] = position
            cash_out[r] = cash
        for k in range(features.shape[1]):
            feature_row[k] = features[r, k]
        q = decide(params, np.float64(bid[r]), np.float64(ask[r]), feature_row, position)
        slot = r % ring
        for k in range(7):
            dec[slot, k] = q[k]
        dec[slot, 7] = rejected[r]
        for s in range(2):
            side = 1 if s == 0 else -1
            for i in range(L):
                t = np.int64(q[s]) - side * i * np.int64(q[2])
                seen[slot, s, i] = False
                for j in range(L):
                    if live[s, j] and ticks[s, j] == t:
                        seen[slot, s, i] = True
        for window in range(2):
            if window == 1 and lag_b[r] < lag_a[r]:
                d = (r - lag_b[r]) % ring
                for s in range(2):
                    side = 1 if s == 0 else -1
                    rejections += _arrive_side(ticks, lots, live, s, new_tick, new_lots, new_live,
                                               np.int64(dec[d, s]), np.int64(dec[d, 2]), np.int64(dec[d, 3 + s]),
                                               dec[d, 5 + s], seen, d, ask_ack[r] if s == 0 else bid_ack[r],
                                               side, dec[d, 7] != 0)
            b_qty, b_ticks, b_n = _fill_side(ticks, lots, live, 0, buy_a[r] if window == 0 else buy_b[r], 1)
            a_qty, a_ticks, a_n = _fill_side(ticks, lots, live, 1, sell_a[r] if window == 0 else sell_b[r], -1)
            position += b_qty - a_qty
            cash += a_ticks - b_ticks
            fills += b_n + a_n
    return position, cash, fills, rejections


@numba.njit(parallel=True)
def _lanes(decide, params, bid, ask, bid_ack, ask_ack, lag_a, lag_b, rejected, buy_a, sell_a, buy_b, sell_b,
           features, max_levels, ring, out):
    empty = np.zeros(0)
    for c in numba.prange(params.shape[0]):
        p, cash, n, rej = _lane(decide, params[c], bid, ask, bid_ack, ask_ack, lag_a, lag_b, rejected, buy_a, sell_a,
                                buy_b, sell_b, features, max_levels, ring, empty, empty)
        out[c, 0] = p
        out[c, 1] = cash
        out[c, 2] = n
        out[c, 3] = rej


def _columns(rows, fill_model: str):
    col = {k: np.ascontiguousarray(np.asarray(rows[k]), np.int64) for k in
           ("bid", "ask", "bid_ack", "ask_ack", "lag_a", "lag_b", "buy_fill_a", "sell_fill_a", "buy_fill_b",
            "sell_fill_b", "sell_trade_low_a", "buy_trade_high_a", "sell_trade_low_b", "buy_trade_high_b")}
    rejected = np.ascontiguousarray(np.asarray(rows.get("entry_rejected", np.zeros(len(col["bid"]))), np.int64))
    buy_a, sell_a, buy_b, sell_b = col["buy_fill_a"], col["sell_fill_a"], col["buy_fill_b"], col["sell_fill_b"]
    if fill_model == "touch":
        buy_a, buy_b = np.minimum(buy_a, col["sell_trade_low_a"]), np.minimum(buy_b, col["sell_trade_low_b"])
        sell_a, sell_b = np.maximum(sell_a, col["buy_trade_high_a"]), np.maximum(sell_b, col["buy_trade_high_b"])
    elif fill_model != "cross":
        raise ValueError(f"the reference loop knows the cross and touch fill models, not {fill_model!r}")
    features = np.ascontiguousarray(np.asarray(rows["features"]), np.float64)
    return (col["bid"], col["ask"], col["bid_ack"], col["ask_ack"], col["lag_a"], col["lag_b"], rejected, buy_a,
            sell_a, buy_b, sell_b, features)


def reference_lane(policy: str, static, market, params: dict[str, float], rows, *, ring: int,
                   fill_model: str = "cross"):
    """One lane on rebased frame rows (:func:`mmsweep.kernels.scan.rebase_frames`, as numpy):
    ``(position, cash_ticks, fills, rejections)`` with per-row ``position`` and ``cash_ticks``
    before each row (lots; lots x relative ticks) as the first two, totals as the last two."""
    names = tuple(sorted(params))
    decide = compile_decision(policy, static, market, names)
    values = np.array([float(params[k]) for k in names])
    cols = _columns(rows, fill_model)
    n = len(cols[0])
    pos, cash = np.zeros(n), np.zeros(n)
    _p, _c, fills, rejections = _lane(decide, values, *cols, int(market.max_levels), int(ring), pos, cash)
    return pos, cash, fills, rejections


def reference_lanes(policy: str, static, market, params: dict[str, np.ndarray], rows, *, ring: int,
                    fill_model: str = "cross", parallel: bool = True) -> np.ndarray:
    """Every lane of ``params`` (arrays ``[lanes]``), one lane per loop iteration; ``parallel``
    spreads the lanes over all cores (numba's prange), else one core.  Returns ``[lanes, 4]``:
    final position (lots), cash (lots x relative ticks), fills, rejections."""
    names = tuple(sorted(params))
    decide = compile_decision(policy, static, market, names)
    values = np.ascontiguousarray(np.stack([np.asarray(params[k], np.float64) for k in names], axis=1))
    cols = _columns(rows, fill_model)
    out = np.zeros((values.shape[0], 4))
    if parallel:
        _lanes(decide, values, *cols, int(market.max_levels), int(ring), out)
    else:
        empty = np.zeros(0)
        for c in range(values.shape[0]):
            out[c] = _lane(decide, values[c], *cols, int(market.max_levels), int(ring), empty, empty)
    return out
