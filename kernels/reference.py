"""A plain numba loop of the skewed grid strategy over frames: one lane, no JAX.

It is written independently of the kernel (loops and scalars, not arrays and masks) and serves
two purposes: the fill-for-fill check of the float64 kernel (tests/test_reference.py), and the
single-lane baseline of bench/throughput.py.  It mirrors ``policies.grid`` in absolute-tick
mode (``relative = 0``) and the kernel's step order (see :mod:`mmsweep.kernels.scan`).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .policies._common import LOT_EPS, TICK_EPS


@numba.njit(cache=True)
def grid_lane(bid, ask, bid_ack, ask_ack, lag_a, lag_b, buy_a, sell_a, buy_b, sell_b,
              base_tick, lot_size, max_levels, half_spread, skew, grid_interval, n_levels, order_qty, max_position):
    """Run one lane; returns per-row ``position`` (lots) and ``cash_ticks`` before each step, and
    the number of fills.  Ticks are relative to ``base_tick``; sizes in lots."""
    n_rows = bid.shape[0]
    ring = max(int(lag_a.max()), 1) + 1 if n_rows else 2
    dec = np.zeros((ring, 6))  # bid_top, ask_top, step, bid_levels, ask_levels, lots
    seen = np.zeros((ring, 2, max_levels), np.bool_)  # level had a live order at decision time
    b_tick = np.zeros(max_levels, np.int64)
    b_lots = np.zeros(max_levels)
    b_live = np.zeros(max_levels, np.bool_)
    a_tick = np.zeros(max_levels, np.int64)
    a_lots = np.zeros(max_levels)
    a_live = np.zeros(max_levels, np.bool_)
    position = 0.0
    cash = 0.0
    fills = 0
    pos_out = np.empty(n_rows)
    cash_out = np.empty(n_rows)
    step = max(round(grid_interval), 1.0)
    origin = float(base_tick % int(step))
    order_lots_price = math.floor(max(order_qty, 0.0) / lot_size * (1.0 + LOT_EPS)) * lot_size
    lots = math.floor(order_lots_price / lot_size + 1e-6)
    levels = min(max(math.floor(n_levels + 1e-6), 0.0), float(max_levels))
    cap = max_position / lot_size - 1e-3
    for r in range(n_rows):
        pos_out[r] = position
        cash_out[r] = cash
        # the policy (grid, absolute ticks)
        mid = (bid[r] + ask[r]) * 0.5
        qty_pos = position * lot_size
        reservation = mid - skew * (qty_pos / order_qty if order_qty != 0 else 0.0)
        bid_top = math.floor((min(reservation - half_spread, bid[r]) + origin + TICK_EPS) / step) * step - origin
        ask_top = math.ceil((max(reservation + half_spread, ask[r]) + origin - TICK_EPS) / step) * step - origin
        bid_levels = 0.0 if (qty_pos >= max_position or position >= cap) else levels
        ask_levels = 0.0 if (qty_pos <= -max_position or position <= -cap) else levels
        slot = r % ring
        dec[slot, 0] = bid_top
        dec[slot, 1] = ask_top
        dec[slot, 2] = step
        dec[slot, 3] = bid_levels if lots > 0 else 0.0
        dec[slot, 4] = ask_levels if lots > 0 else 0.0
        dec[slot, 5] = lots
        for i in range(max_levels):
            tb = int(bid_top) - i * int(step)
            ta = int(ask_top) + i * int(step)
            seen[slot, 0, i] = False
            seen[slot, 1, i] = False
            for j in range(max_levels):
                if b_live[j] and b_tick[j] == tb:
                    seen[slot, 0, i] = True
                if a_live[j] and a_tick[j] == ta:
                    seen[slot, 1, i] = True
        for window in range(2):
            if window == 1 and lag_b[r] < lag_a[r]:
                d = (r - lag_b[r]) % ring
                for side in range(2):
                    ticks = b_tick if side == 0 else a_tick
                    sizes = b_lots if side == 0 else a_lots
                    live = b_live if side == 0 else a_live
                    new_t = np.zeros(max_levels, np.int64)
                    new_s = np.zeros(max_levels)
                    new_l = np.zeros(max_levels, np.bool_)
                    top = int(dec[d, 0] if side == 0 else dec[d, 1])
                    want = int(dec[d, 3] if side == 0 else dec[d, 4])
                    for i in range(max_levels):
                        t = top - i * int(dec[d, 2]) if side == 0 else top + i * int(dec[d, 2])
                        new_t[i] = t
                        if i >= want:
                            continue
                        kept = False
                        for j in range(max_levels):
                            if live[j] and ticks[j] == t:
                                kept = True
                                new_s[i] = sizes[j]
                        if kept:
                            new_l[i] = True
                        elif seen[d, side, i]:
                            pass  # the bot believed it had this level: it sent nothing
                        elif (side == 0 and t < ask_ack[r]) or (side == 1 and t > bid_ack[r]):
                            new_l[i] = True
                            new_s[i] = dec[d, 5]
                    ticks[:] = new_t
                    sizes[:] = new_s
                    live[:] = new_l
            buy_thr = buy_a[r] if window == 0 else buy_b[r]
            sell_thr = sell_a[r] if window == 0 else sell_b[r]
            for i in range(max_levels):
                if b_live[i] and b_tick[i] >= buy_thr:
                    b_live[i] = False
                    position += b_lots[i]
                    cash -= b_lots[i] * b_tick[i]
                    fills += 1
                if a_live[i] and a_tick[i] <= sell_thr:
                    a_live[i] = False
                    position -= a_lots[i]
                    cash += a_lots[i] * a_tick[i]
                    fills += 1
    return pos_out, cash_out, fills


def run_grid_reference(rows: dict[str, np.ndarray], base_tick: int, lot_size: float, max_levels: int,
                       params: dict[str, float]):
    """:func:`grid_lane` on rebased frame columns (numpy int arrays); ``params`` as for ``grid``."""
    cols = [np.asarray(rows[k], np.int64) for k in
            ("bid", "ask", "bid_ack", "ask_ack", "lag_a", "lag_b", "buy_fill_a", "sell_fill_a", "buy_fill_b",
             "sell_fill_b")]
    return grid_lane(*cols, int(base_tick), float(lot_size), int(max_levels), float(params["half_spread"]),
                     float(params["skew"]), float(params["grid_interval"]), float(params["n_levels"]),
                     float(params["order_qty"]), float(params.get("max_position", np.inf)))
