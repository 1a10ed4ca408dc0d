"""The event loop (numba): one pass over the events, several candidates in lock-step.

Four kinds of things happen, each at its own time: a market row reaches the bot (``local_ts``),
a response reaches a bot, a market row happens at the exchange (``exch_ts``), a request
reaches the exchange.  The earliest goes first; at equal times in that order (hftbacktest's
tie order, the reference notes §2.2).  So an order arriving at ``t`` meets the exchange book
after every row stamped ``<= t``, and the bot deciding at ``t`` has seen every row and every
response stamped ``<= t``.  Candidates share the market and never interact (no market impact).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from . import bus
from .book import BEST_ASK, BEST_BID, clear_side, set_level
from .exchange import CLEAR, DEPTH, SNAPSHOT, TRADE, cross, depth_queues, on_request, trade
from .queue import NONE as NO_QUEUE
from .local import clear_finished, maintain_grid, on_response
from .state import (A_BALANCE, A_FEE, A_TRADES, A_VALUE, FULL_CLEAR, K_EXCH_ROW, K_LOCAL_ROW, K_MAX_BUY, K_MIN_SELL,
                    K_NEXT_REQ, K_NEXT_RESP, K_REF_ASK, K_REF_BID, K_RESTING, K_TS, TO_BOT, TO_EXCH)

NEVER = bus.NEVER


@numba.njit(cache=True)
def advance(sim, cfg, lat, data, target):
    """Process everything stamped ``<= target``; the clock then reads ``target``.

    The per-row work is written out here rather than called: a call that passes the state
    costs more than the row (reference counts of every array in it), so only the rare work
    (orders to scan, messages to deliver) is in called functions.
    """
    half_lot = 0.5 * cfg.lot_size
    n_ticks = sim.xbid.shape[0]
    n_local = data.l_ts.shape[0]
    n_exch = data.x_ts.shape[0]
    n_cand = sim.ordi.shape[0]
    while True:
        li = sim.cur[K_LOCAL_ROW]
        xi = sim.cur[K_EXCH_ROW]
        t_local = data.l_ts[li] if li < n_local else NEVER
        t_exch = data.x_ts[xi] if xi < n_exch else NEVER
        t_resp = sim.cur[K_NEXT_RESP]
        t_req = sim.cur[K_NEXT_REQ]
        t = min(min(t_local, t_resp), min(t_exch, t_req))
        if t > target or t == NEVER:
            break
        sim.cur[K_TS] = t
        if t_local == t:
            kind = data.l_kind[li]
            if kind == DEPTH or kind == SNAPSHOT:
                set_level(sim.lbid, sim.lask, sim.lbest, data.l_side[li], data.l_idx[li], data.l_qty[li], half_lot)
            elif kind == CLEAR:
                idx = data.l_idx[li]
                clear_side(sim.lbid, sim.lask, sim.lbest, data.l_side[li], idx, idx == FULL_CLEAR)
            sim.cur[K_LOCAL_ROW] = li + 1
        elif t_resp == t:
            for c in range(n_cand):
                while bus.front_ts(sim, TO_BOT, c) == t:
                    on_response(sim, cfg, c, bus.pop(sim, TO_BOT, c), t)
            bus.refresh(sim, TO_BOT)
        elif t_exch == t:
            # a market row at the exchange (all candidates)
            kind = data.x_kind[xi]
            if kind == DEPTH or kind == SNAPSHOT:
                side = data.x_side[xi]
                idx = data.x_idx[xi]
                new_qty = data.x_qty[xi]
                prev = set_level(sim.xbid, sim.xask, sim.xbest, side, idx, new_qty, half_lot)
                resting_here = sim.rest_bid[idx] if side > 0 else sim.rest_ask[idx]
                if cfg.queue_kind != NO_QUEUE and resting_here > 0:
                    depth_queues(sim, cfg, side, idx + cfg.book_base, prev, new_qty)
            elif kind == CLEAR:
                idx = data.x_idx[xi]
                clear_side(sim.xbid, sim.xask, sim.xbest, data.x_side[xi], idx, idx == FULL_CLEAR)
            elif kind == TRADE and sim.cur[K_RESTING] > 0:
                trade(sim, cfg, lat, data.x_side[xi], data.x_idx[xi] + cfg.book_base, data.x_qty[xi], t)
            if (not cfg.cross_per_message) or data.x_msg_end[xi]:
                # the order scan only when a best moved onto a resting order's side of the book
                best_bid = sim.xbest[BEST_BID]
                best_ask = sim.xbest[BEST_ASK]
                rose = best_bid >= 0 and best_bid > sim.cur[K_REF_BID]
                fell = best_ask < n_ticks and best_ask < sim.cur[K_REF_ASK]
                if (rose and best_bid + cfg.book_base >= sim.cur[K_MIN_SELL]) or (
                        fell and best_ask + cfg.book_base <= sim.cur[K_MAX_BUY]):
                    cross(sim, cfg, lat, t)
                else:
                    sim.cur[K_REF_BID] = best_bid
                    sim.cur[K_REF_ASK] = best_ask
            sim.cur[K_EXCH_ROW] = xi + 1
        else:
            for c in range(n_cand):
                while bus.front_ts(sim, TO_EXCH, c) == t:
                    on_request(sim, cfg, lat, c, bus.pop(sim, TO_EXCH, c), t)
            bus.refresh(sim, TO_EXCH)
            bus.refresh(sim, TO_BOT)
    sim.cur[K_TS] = target


@numba.njit(cache=True)
def local_mid_ticks(sim, cfg):
    """The bot's mid (absolute ticks, float), NaN while a side is empty."""
    b = sim.lbest[BEST_BID]
    a = sim.lbest[BEST_ASK]
    if b < 0 or a >= sim.lbid.shape[0]:
        return np.nan
    return (b + a + 2 * cfg.book_base) * 0.5


@numba.njit(cache=True)
def equity(sim, cfg, c, mid_price):
    """The bot's equity at ``mid_price`` (quote currency; base coin for inverse assets)."""
    a = sim.acct[0, c]
    qty = sim.pos[0, c] * cfg.lot_size
    if cfg.inverse:
        return -a[A_BALANCE] - cfg.contract_size * qty / mid_price - a[A_FEE]
    return (a[A_BALANCE] + cfg.contract_size * qty * mid_price) - a[A_FEE]


@numba.njit
def run_policy(sim, cfg, lat, data, decision_ts, end_ts, features, params, base_tick, max_levels, decide,
               rec_equity, rec_position, rec_trades, rec_value, rec_fee, rec_mid):
    """Replay with every candidate quoting at each decision time.

    ``params[c]`` are candidate c's policy parameters (in the compiled function's order);
    ``decide`` is a :func:`mmsweep.kernels.policy_numba.compile_decision` function: the policy and
    the shared decision contract (:func:`mmsweep.kernels.orders.to_decision`: position cap,
    tick and lot rounding, at most ``max_levels`` a side), in relative ticks around
    ``base_tick``.  At each decision: record the bot's state (as hftbacktest's Recorder would),
    free finished orders, decide, then keep/cancel/post the grid.  After the last decision the
    replay runs to ``end_ts``.
    """
    n_cand = sim.ordi.shape[0]
    want = np.zeros(max(max_levels, 1), np.bool_)
    for d in range(decision_ts.shape[0]):
        ts = decision_ts[d]
        advance(sim, cfg, lat, data, ts)
        mid = local_mid_ticks(sim, cfg)
        mid_price = mid * cfg.tick_size
        rec_mid[d] = mid_price
        for c in range(n_cand):
            rec_equity[c, d] = equity(sim, cfg, c, mid_price)
            rec_position[c, d] = sim.pos[0, c] * cfg.lot_size
            rec_trades[c, d] = sim.acct[0, c, A_TRADES]
            rec_value[c, d] = sim.acct[0, c, A_VALUE]
            rec_fee[c, d] = sim.acct[0, c, A_FEE]
        if math.isnan(mid):
            continue  # a one-sided book: leave the orders as they are
        bid_rel = np.float64(sim.lbest[BEST_BID] + cfg.book_base - base_tick)
        ask_rel = np.float64(sim.lbest[BEST_ASK] + cfg.book_base - base_tick)
        obs = features[d]
        for c in range(n_cand):
            clear_finished(sim, c)
            q = decide(params[c], bid_rel, ask_rel, obs, np.float64(sim.pos[0, c]))
            step = np.int64(q[2])
            bid_lots = np.int64(q[5])
            ask_lots = np.int64(q[6])
            maintain_grid(sim, lat, c, 1, np.int64(q[0]) + base_tick, step, np.int64(q[3]), bid_lots, ts, want)
            maintain_grid(sim, lat, c, -1, np.int64(q[1]) + base_tick, step, np.int64(q[4]), ask_lots, ts, want)
    advance(sim, cfg, lat, data, end_ts)
