"""Queue-aware fills: each resting order tracks the queue ahead of it.

The exact engine's queue models (:mod:`mmsweep.replay.queue`, hftbacktest's) applied to the
frames' per-window aggregates (:mod:`mmsweep.sweep.queue_frames`): for an order at offset ``k``
from the decision's touch (bids at ``bid - k``, asks at ``ask + k``),

* it starts with ``front`` = the displayed size at its tick when it arrives (window b's start);
* a trade *through* its price, or the opposite best reaching it, fills it outright (the strict
  cross thresholds);
* ``V`` traded *at* its price in a window consumes the queue: ``front -= V``; once ``front <=
  -lot/2`` the order fills (no partial fills: the whole order, as the no-partial exchange);
* a change of the displayed size at its price from ``D0`` to ``D1`` over the window moves
  ``front`` by the model's rule: ``risk_averse`` caps it at ``D1``; the probabilistic families
  treat the decrease net of the window's trades, ``chg = D0 - D1 - V``, as cancelled behind the
  order with probability ``p = P(front, D0 - front)`` (``power``: ``b^n/(b^n+f^n)``, ``power2``:
  ``b^n/(b+f)^n``, ``power3``: ``1-(f/(f+b))^n``, ``log``: ``ln(1+b)/(ln(1+b)+ln(1+f))``,
  ``log2``: ``ln(1+b)/ln(1+b+f)``).

An order beyond the ``K`` ticks the frames cover has an unknown queue: it fills only outright.
Within a window the trades are applied before the size change; with at most one event per
window that order is the events' own and the fills equal the exact engine's.  Quantities are in
the instrument's qty units.
"""
from __future__ import annotations

import jax.numpy as jnp

from . import cross

KINDS = ("risk_averse", "power", "power2", "power3", "log", "log2")
#: ``front`` of an order whose queue the frames do not cover (it then fills only outright).
UNKNOWN_QUEUE = 1e30


def columns(levels: int) -> tuple[str, ...]:
    """The window columns (without ``_a``/``_b``) of the per-tick quantities."""
    return tuple(f"queue_{s}_{q}_{k}" for s in ("bid", "ask") for q in ("trades", "depth_start", "depth_end")
                 for k in range(levels))


def _pick(window, side_name: str, quantity: str, k, levels: int, default):
    """``window[queue_<side>_<quantity>_<k>]`` for a traced offset ``k`` (a select chain)."""
    out = jnp.asarray(default, jnp.result_type(window[f"queue_{side_name}_{quantity}_0"]))
    for j in range(levels):
        out = jnp.where(k == j, window[f"queue_{side_name}_{quantity}_{j}"], out)
    return out


def _probability(kind: str, n: float, front, back):
    if kind == "power":
        bn = back ** n
        return bn / (bn + front ** n)
    if kind == "power2":
        return back ** n / (back + front) ** n
    if kind == "power3":
        return 1.0 - (front / (front + back)) ** n
    if kind == "log":
        lb = jnp.log1p(back)
        return lb / (lb + jnp.log1p(front))
    return jnp.log1p(back) / jnp.log1p(back + front)


def _min_non_nan(a, b):
    """hftbacktest's ``f64::min``: the non-NaN operand wins."""
    return jnp.where(jnp.isnan(a), b, jnp.where(jnp.isnan(b), a, jnp.minimum(a, b)))


def make(kind: str, n: float, levels: int, lot_size: float):
    """The queue fill model (a :class:`mmsweep.kernels.fills.FillModel`)."""
    from . import FillModel

    if kind not in KINDS:
        raise ValueError(f"unknown queue model {kind!r} for the kernel; known: {', '.join(KINDS)}")
    if levels < 1:
        raise ValueError(f"the queue fill model needs queue levels >= 1 in the frames, got {levels}")

    def offset(window, tick, side):
        return (window["bid"] - tick) if side > 0 else (tick - window["ask"])

    def init_order(window, tick, side, dtype):
        side_name = "bid" if side > 0 else "ask"
        front = _pick(window, side_name, "depth_start", offset(window, tick, side), levels, UNKNOWN_QUEUE)
        return front.astype(dtype), jnp.zeros((), dtype)

    def on_window(window, side, orders, dtype):
        side_name = "bid" if side > 0 else "ask"
        buy, sell = cross.thresholds(window)
        out = []
        for tick, live, (front, cum) in orders:
            k = offset(window, tick, side)
            traded = _pick(window, side_name, "trades", k, levels, 0.0).astype(dtype)
            before = _pick(window, side_name, "depth_start", k, levels, 0.0).astype(dtype)
            after = _pick(window, side_name, "depth_end", k, levels, 0.0).astype(dtype)
            through = (tick >= buy) if side > 0 else (tick <= sell)
            front = front - traded
            cum = cum + traded
            queue_filled = (traded > 0) & (front <= -0.5 * lot_size)
            changed = before != after
            if kind == "risk_averse":
                moved = _min_non_nan(front, after)
                cum_after = cum
            else:
                chg = before - after - cum
                back = before - front
                p = _probability(kind, n, front, back)
                p = jnp.where(jnp.isinf(p), 1.0, p)
                est = front - (1.0 - p) * chg + jnp.minimum(back - p * chg, 0.0)
                moved = jnp.where(chg < 0.0, _min_non_nan(front, after), _min_non_nan(est, after))
                cum_after = jnp.zeros_like(cum)
            front = jnp.where(changed & (front < UNKNOWN_QUEUE / 2), moved, front)
            cum = jnp.where(changed, cum_after, cum)
            out.append((live & (through | queue_filled), (front, cum)))
        return out

    return FillModel("queue", cross.COLUMNS + columns(levels), ("front", "cum_trade"), init_order, on_window,
                     None, columns(levels))
