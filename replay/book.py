"""Dense L2 book updates (numba), shared by the replay engine and the frame builder.

A side is a float64 array of level sizes (instrument qty units) indexed by ``tick - base``;
``best`` holds ``[best_bid_index, best_ask_index, crossed_repairs]`` (an empty bid side is -1,
an empty ask side ``n_ticks``).

Semantics (DESIGN §4; hftbacktest's where sound):

* DEPTH / SNAPSHOT set the absolute size of a level; a size below half a lot deletes it.
* A level that crosses the opposite best deletes the crossed opposite levels: a consistent
  exchange book cannot be crossed, so they are stale.  hftbacktest keeps them behind the best
  (quirk 8 of the reference notes); the best prices are the same, and nothing stale can come
  back.  Each repair is counted.
* CLEAR deletes a whole side, or (finite price) from the best through that price.
"""
from __future__ import annotations

import numba
import numpy as np

BEST_BID = 0
BEST_ASK = 1
REPAIRS = 2


def price_to_ticks(price: np.ndarray, tick_size: float) -> np.ndarray:
    """Nearest integer tick (halves away from zero, as hftbacktest's ``tick()``) of finite prices."""
    price = np.asarray(price, dtype=np.float64)
    if price.ndim != 1:
        scaled = price / tick_size
        return (np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)).astype(np.int64)
    return _price_to_ticks(price, float(tick_size))


@numba.njit(cache=True, nogil=True, inline="always")
def tick_of(price, tick_size):
    """:func:`price_to_ticks` of one finite price: the same float operations, so the same tick."""
    scaled = price / tick_size
    rounded = np.floor(abs(scaled) + 0.5)
    return np.int64(rounded) if scaled >= 0.0 else -np.int64(rounded)


@numba.njit(cache=True, nogil=True)
def _price_to_ticks(price, tick_size):
    # one pass (numpy's version makes four temporaries of the column: a third of a frames build)
    out = np.empty(price.shape[0], np.int64)
    for i in range(price.shape[0]):
        out[i] = tick_of(price[i], tick_size)
    return out


@numba.njit(cache=True)
def new_best(n_ticks):
    """``[best_bid, best_ask, repairs]`` of an empty book with ``n_ticks`` levels a side."""
    best = np.zeros(3, np.int64)
    best[BEST_BID] = -1
    best[BEST_ASK] = n_ticks
    return best


@numba.njit(cache=True, inline="always")
def set_level(bid_q, ask_q, best, side, idx, qty, half_lot):
    """Set the size of level ``idx`` (array index) on ``side`` (+1 bid, -1 ask); returns the
    size stored before.  ``qty`` below ``half_lot`` deletes the level."""
    n_ticks = bid_q.shape[0]
    if qty < half_lot:
        qty = 0.0
    if side > 0:
        prev = bid_q[idx]
        bid_q[idx] = qty
        if qty > 0.0:
            if idx > best[BEST_BID]:
                best[BEST_BID] = idx
            if idx >= best[BEST_ASK]:
                best[REPAIRS] += 1
                for j in range(best[BEST_ASK], idx + 1):
                    ask_q[j] = 0.0
                j = idx + 1
                while j < n_ticks and ask_q[j] <= 0.0:
                    j += 1
                best[BEST_ASK] = j
        elif idx == best[BEST_BID]:
            j = idx
            while j >= 0 and bid_q[j] <= 0.0:
                j -= 1
            best[BEST_BID] = j
        return prev
    prev = ask_q[idx]
    ask_q[idx] = qty
    if qty > 0.0:
        if idx < best[BEST_ASK]:
            best[BEST_ASK] = idx
        if idx <= best[BEST_BID]:
            best[REPAIRS] += 1
            for j in range(idx, best[BEST_BID] + 1):
                bid_q[j] = 0.0
            j = idx - 1
            while j >= 0 and bid_q[j] <= 0.0:
                j -= 1
            best[BEST_BID] = j
    elif idx == best[BEST_ASK]:
        j = idx
        while j < n_ticks and ask_q[j] <= 0.0:
            j += 1
        best[BEST_ASK] = j
    return prev


@numba.njit(cache=True, inline="always")
def clear_side(bid_q, ask_q, best, side, idx, full):
    """CLEAR: ``full`` wipes the side(s) (``side`` 0 = both); otherwise bids from ``idx`` up to
    the best bid, or asks from the best ask up to ``idx``, are deleted."""
    n_ticks = bid_q.shape[0]
    if side >= 0 and best[BEST_BID] >= 0:
        lo = 0 if full else max(idx, 0)
        for j in range(lo, best[BEST_BID] + 1):
            bid_q[j] = 0.0
        j = lo - 1
        while j >= 0 and bid_q[j] <= 0.0:
            j -= 1
        best[BEST_BID] = j
    if side <= 0 and best[BEST_ASK] < n_ticks:
        hi = n_ticks - 1 if full else min(idx, n_ticks - 1)
        for j in range(best[BEST_ASK], hi + 1):
            ask_q[j] = 0.0
        j = hi + 1
        while j < n_ticks and ask_q[j] <= 0.0:
            j += 1
        best[BEST_ASK] = j
