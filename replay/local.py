"""The bot side (numba): what the bot knows, the requests it sends, the grid it maintains.

The bot's position, balance and fees change only when a fill *response* reaches it (after the
response latency), like hftbacktest's local state.  Unlike hftbacktest, every fill response is
booked, partial ones included, and a response only ever updates the order it names.
"""
from __future__ import annotations

import numba

from . import bus
from .exchange import apply_fill
from .latency import entry_latency
from .state import (C_NEXT_ID, C_REJECTIONS, F_CAND, F_EXCH_TS, F_LOCAL_TS, F_LOTS, F_MAKER, F_ORDER, F_SIDE, F_TICK,
                    FLAG_FINISHED, FLAG_MAKER, K_FILLS, K_FILLS_DROPPED, L_DONE, L_FREE, L_LIVE, L_PENDING, LIMIT,
                    M_EXCH_TS, M_FLAG, M_ID, M_KIND, M_LOTS, M_SLOT, M_TICK, MSG_ACK, MSG_CANCEL,
                    MSG_CANCEL_REJECTED, MSG_CANCELED, MSG_EXPIRED, MSG_FILL, MSG_NEW, MSG_REJECTED, O_ID,
                    O_LEAVES, O_LOTS, O_LREQ, O_LST, O_SIDE, O_TICK, O_TIF, O_TYPE, O_XST, R_CANCEL, R_NEW,
                    R_NONE, TIF_GTX, TO_BOT, TO_EXCH, X_NONE)


#: raised when a candidate needs more order slots than its state has (the engine grows them)
SLOTS_FULL = "replay: every order slot is in use"


@numba.njit(cache=True)
def on_response(sim, cfg, c, m, ts):
    """A response reaches candidate ``c``'s bot at ``ts``."""
    s = m[M_SLOT]
    o = sim.ordi[c, s]
    if o[O_ID] != m[M_ID] or o[O_LST] == L_FREE:
        return
    kind = m[M_KIND]
    if kind == MSG_ACK:
        o[O_LST] = L_LIVE
        if o[O_LREQ] == R_NEW:
            o[O_LREQ] = R_NONE
    elif kind == MSG_FILL:
        maker = (m[M_FLAG] & FLAG_MAKER) != 0
        apply_fill(sim.acct, sim.pos, 0, c, o[O_SIDE], m[M_LOTS], m[M_TICK], maker, cfg)
        k = sim.cur[K_FILLS]
        if k < sim.fills.shape[0]:
            f = sim.fills[k]
            f[F_CAND] = c
            f[F_EXCH_TS] = m[M_EXCH_TS]
            f[F_LOCAL_TS] = ts
            f[F_SIDE] = o[O_SIDE]
            f[F_TICK] = m[M_TICK]
            f[F_LOTS] = m[M_LOTS]
            f[F_MAKER] = 1 if maker else 0
            f[F_ORDER] = o[O_ID]
            sim.cur[K_FILLS] = k + 1
        else:
            sim.cur[K_FILLS_DROPPED] += 1
        if o[O_LREQ] == R_NEW:
            o[O_LREQ] = R_NONE
        if (m[M_FLAG] & FLAG_FINISHED) != 0:
            o[O_LST] = L_DONE
        elif o[O_LST] == L_PENDING:
            o[O_LST] = L_LIVE
    elif kind == MSG_CANCELED or kind == MSG_EXPIRED:
        o[O_LST] = L_DONE
        o[O_LREQ] = R_NONE
    elif kind == MSG_CANCEL_REJECTED:
        if o[O_LREQ] == R_CANCEL:
            o[O_LREQ] = R_NONE
    elif kind == MSG_REJECTED:
        if m[M_FLAG] == R_NEW:
            o[O_LST] = L_DONE
            sim.count[c, C_REJECTIONS] += 1
        o[O_LREQ] = R_NONE


@numba.njit(cache=True)
def _send(sim, lat, c, s, kind, ts):
    """Send request ``kind`` about order ``s``: to the exchange after the entry latency, or,
    when the latency model rejects it, straight back to the bot."""
    o = sim.ordi[c, s]
    delay = entry_latency(lat, ts)
    if delay >= 0:
        bus.push(sim, TO_EXCH, c, ts + delay, kind, s, o[O_ID], 0, 0, 0, 0)
    else:
        bus.push(sim, TO_BOT, c, ts - delay, MSG_REJECTED, s, o[O_ID], 0, 0,
                 R_NEW if kind == MSG_NEW else R_CANCEL, 0)


@numba.njit(cache=True)
def submit(sim, lat, c, side, tick, lots, tif, order_type, ts):
    """New order of candidate ``c``; returns its slot (-1 when every slot is in use)."""
    for s in range(sim.ordi.shape[1]):
        o = sim.ordi[c, s]
        if o[O_LST] != L_FREE:
            continue
        o[O_ID] = sim.count[c, C_NEXT_ID]
        sim.count[c, C_NEXT_ID] += 1
        o[O_SIDE] = side
        o[O_TICK] = tick
        o[O_TIF] = tif
        o[O_TYPE] = order_type
        o[O_LOTS] = lots
        o[O_LEAVES] = lots
        o[O_XST] = X_NONE
        o[O_LST] = L_PENDING
        o[O_LREQ] = R_NEW
        _send(sim, lat, c, s, MSG_NEW, ts)
        return s
    return -1


@numba.njit(cache=True)
def cancel(sim, lat, c, s, ts):
    """Cancel order ``s`` if the bot may (acknowledged, live, nothing pending); returns whether
    the request was sent."""
    o = sim.ordi[c, s]
    if o[O_LST] != L_LIVE or o[O_LREQ] != R_NONE:
        return False
    o[O_LREQ] = R_CANCEL
    _send(sim, lat, c, s, MSG_CANCEL, ts)
    return True


@numba.njit(cache=True)
def clear_finished(sim, c):
    """Free the slots of finished orders with nothing pending (hftbacktest's
    ``clear_inactive_orders``)."""
    for s in range(sim.ordi.shape[1]):
        o = sim.ordi[c, s]
        if o[O_LST] == L_DONE and o[O_LREQ] == R_NONE:
            o[O_LST] = L_FREE


@numba.njit(cache=True)
def maintain_grid(sim, lat, c, side, top, step, levels, lots, ts, want):
    """Make candidate ``c``'s orders on ``side`` the grid ``top - side*i*step`` (absolute ticks,
    ``i < levels``) of ``lots`` each: orders at a grid price are kept (with their queue place
    and size), orders elsewhere are cancelled, missing prices get post-only orders.

    ``want`` is a scratch bool array of at least ``levels`` entries.  Decided from the bot's
    view: an order it still believes live or pending counts as present.
    """
    for i in range(levels):
        want[i] = True
    for s in range(sim.ordi.shape[1]):
        o = sim.ordi[c, s]
        if o[O_SIDE] != side or not (o[O_LST] == L_PENDING or o[O_LST] == L_LIVE):
            continue
        offset = (top - o[O_TICK]) * side
        i = offset // step
        if 0 <= offset and offset % step == 0 and i < levels:
            want[i] = False
        else:
            cancel(sim, lat, c, s, ts)
    if lots <= 0:
        return
    for i in range(levels):
        if want[i]:
            if submit(sim, lat, c, side, top - side * i * step, lots, TIF_GTX, LIMIT, ts) < 0:
                raise RuntimeError(SLOTS_FULL)
