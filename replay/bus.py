"""FIFO message buses between the bot and the exchange (numba).

A message's delivery time is ``max(sent + latency, delivery time of the previous message on the
same bus)``: messages never overtake each other, in either direction (as on one TCP link; the
reference notes §2.1).
"""
from __future__ import annotations

import numba
import numpy as np

from .state import K_NEXT_REQ, K_NEXT_RESP, TO_EXCH, M_EXCH_TS, M_FLAG, M_ID, M_KIND, M_LOTS, M_SLOT, M_TICK, M_TS, P_HEAD, P_LAST_TS, P_TAIL

NEVER = np.iinfo(np.int64).max


@numba.njit(cache=True)
def push(sim, which, c, ts, kind, slot, order_id, lots, tick, flag, exch_ts):
    ptr = sim.bus_ptr[which, c]
    size = sim.bus.shape[2]
    if ptr[P_TAIL] - ptr[P_HEAD] >= size:
        raise RuntimeError("replay: message bus full (raise bus_size)")
    if ts < ptr[P_LAST_TS]:
        ts = ptr[P_LAST_TS]
    ptr[P_LAST_TS] = ts
    m = sim.bus[which, c, ptr[P_TAIL] % size]
    m[M_TS] = ts
    m[M_KIND] = kind
    m[M_SLOT] = slot
    m[M_ID] = order_id
    m[M_LOTS] = lots
    m[M_TICK] = tick
    m[M_FLAG] = flag
    m[M_EXCH_TS] = exch_ts
    ptr[P_TAIL] += 1
    k = K_NEXT_REQ if which == TO_EXCH else K_NEXT_RESP
    if ts < sim.cur[k]:
        sim.cur[k] = ts


@numba.njit(cache=True, inline="always")
def front_ts(sim, which, c):
    """Delivery time of the oldest undelivered message (NEVER if none)."""
    ptr = sim.bus_ptr[which, c]
    if ptr[P_HEAD] == ptr[P_TAIL]:
        return NEVER
    return sim.bus[which, c, ptr[P_HEAD] % sim.bus.shape[2], M_TS]


@numba.njit(cache=True, inline="always")
def refresh(sim, which):
    """Recompute the earliest delivery time on bus ``which`` over all candidates (after
    deliveries; :func:`push` keeps it current otherwise)."""
    best = NEVER
    for c in range(sim.bus.shape[1]):
        t = front_ts(sim, which, c)
        if t < best:
            best = t
    sim.cur[K_NEXT_REQ if which == TO_EXCH else K_NEXT_RESP] = best


@numba.njit(cache=True, inline="always")
def pop(sim, which, c):
    """The oldest message (a view; valid until the slot is reused)."""
    ptr = sim.bus_ptr[which, c]
    m = sim.bus[which, c, ptr[P_HEAD] % sim.bus.shape[2]]
    ptr[P_HEAD] += 1
    return m
