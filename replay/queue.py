"""Queue-position models for resting orders on an L2 feed (numba; reference notes §5).

Each resting order carries ``front`` (qty ahead of it at its price, instrument qty units) and
``cum_trade`` (qty traded at its price since the last size decrease).  ``front`` starts as the
visible size of the order's level when the order reaches the exchange (its own qty is never in
the book).  Models (the ``kind`` code):

* ``NONE``: no queue at all: an order fills only when the market trades *through* its price or
  the opposite best crosses it (the kernel's strict-cross contract; trades at the price never
  fill).
* ``RISK_AVERSE``: trades at the price advance the queue; size decreases only cap it
  (``front = min(front, new size)``).
* ``PROB_*``: trades advance the queue; a size decrease of ``chg`` (net of trades already
  counted) happens behind the order with probability ``p = P(front, back)``, ``back = prev -
  front``, and the estimate is ``front - (1-p) chg + min(back - p chg, 0)``, capped by the new
  size.  ``P`` is one of hftbacktest's families with parameter ``n``:

  ==============  =====================================
  PROB_POWER      b^n / (b^n + f^n)
  PROB_POWER2     b^n / (b + f)^n
  PROB_POWER3     1 - (f / (f + b))^n
  PROB_LOG        ln(1+b) / (ln(1+b) + ln(1+f))
  PROB_LOG2       ln(1+b) / ln(1+b+f)
  ==============  =====================================

A trade at the price fills the order once ``front <= -0.5 lot`` (the trades exceeded the
queue ahead by at least half a lot); ``front`` then resets to 0.  A NaN estimate (``f = b = 0``)
falls back to the new size, as hftbacktest's ``f64::min`` does.
"""
from __future__ import annotations

import math

import numba
import numpy as np

NONE = 0
RISK_AVERSE = 1
PROB_POWER = 2
PROB_POWER2 = 3
PROB_POWER3 = 4
PROB_LOG = 5
PROB_LOG2 = 6

QUEUE_MODELS = {
    "none": NONE, "risk_averse": RISK_AVERSE, "power": PROB_POWER, "power2": PROB_POWER2,
    "power3": PROB_POWER3, "log": PROB_LOG, "log2": PROB_LOG2,
}


def queue_code(name: str) -> int:
    try:
        return QUEUE_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown queue model {name!r}; known: {', '.join(QUEUE_MODELS)}") from None


# error_model numpy: f = b = 0 gives NaN (handled below), not ZeroDivisionError
@numba.njit(cache=True, error_model="numpy")
def _prob(kind, n, front, back):
    if kind == PROB_POWER:
        bn = back ** n
        return bn / (bn + front ** n)
    if kind == PROB_POWER2:
        return back ** n / (back + front) ** n
    if kind == PROB_POWER3:
        return 1.0 - (front / (front + back)) ** n
    if kind == PROB_LOG:
        lb = np.log1p(back)
        return lb / (lb + np.log1p(front))
    return np.log1p(back) / np.log1p(back + front)


@numba.njit(cache=True, inline="always")
def _min_non_nan(a, b):
    # Rust's f64::min: the non-NaN operand wins.
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return min(a, b)


@numba.njit(cache=True, inline="always")
def on_trade(kind, queue, slot, qty):
    """A trade of ``qty`` printed at the order's price (``queue[slot] = [front, cum_trade]``)."""
    if kind == NONE:
        return
    queue[slot, 0] -= qty
    queue[slot, 1] += qty


@numba.njit(cache=True, error_model="numpy")
def on_depth(kind, n, queue, slot, prev_qty, new_qty):
    """The order's level changed size from ``prev_qty`` to ``new_qty``."""
    if kind == NONE:
        return
    front = queue[slot, 0]
    if kind == RISK_AVERSE:
        queue[slot, 0] = _min_non_nan(front, new_qty)
        return
    chg = prev_qty - new_qty - queue[slot, 1]
    queue[slot, 1] = 0.0
    if chg < 0.0:
        queue[slot, 0] = _min_non_nan(front, new_qty)
        return
    back = prev_qty - front
    p = _prob(kind, n, front, back)
    if math.isinf(p):
        p = 1.0
    est = front - (1.0 - p) * chg + min(back - p * chg, 0.0)
    queue[slot, 0] = _min_non_nan(est, new_qty)


@numba.njit(cache=True, inline="always")
def filled_lots(kind, queue, slot, lot_size):
    """Lots filled by the queue after a trade at the price (0 if none); resets ``front``."""
    if kind == NONE:
        return 0
    x = -queue[slot, 0] / lot_size
    lots = np.int64(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)  # halves away from zero
    if lots > 0:
        queue[slot, 0] = 0.0
        return lots
    return 0
