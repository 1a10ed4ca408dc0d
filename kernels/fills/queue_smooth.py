"""The queue fill model (:mod:`mmsweep.kernels.fills.queue`) relaxed for the smooth kernel
(:mod:`mmsweep.kernels.smooth`).

Each resting order of the smooth book carries the hard model's state, ``front`` (qty ahead of
it, qty units) and ``cum_trade`` (qty units), and it moves by the hard model's own rules: the
state is :func:`queue.make`'s ``init_order`` at the order's arrival and its ``on_window`` every
window, both evaluated at the order's *hard* tick (the whole tick it rests at).  Where an order
sits in the queue is discrete bookkeeping, like which ticks match on a new grid, so the state
carries no gradient (``lax.stop_gradient``); the gradient flows through the fill probabilities
and the alive probabilities they update.

In one window an order at tick ``p`` (relative ticks) fills with probability::

    P = 1 - (1 - P_through) (1 - P_queue)
    P_through = sigmoid((side (p - cross_threshold) + 1/2) / T)          T in ticks
    P_queue   = [V > 0] sigmoid((-(front - V) - lot/2) / (T lot))        T lot in qty units

``cross_threshold`` is the strict-cross threshold of the window (``buy_fill`` / ``sell_fill``),
``V`` the qty traded at the order's tick in the window and ``front - V`` its queue ahead once
those trades are applied: the queue temperature is the same number ``T`` read in lots.  As ``T
-> 0`` both sigmoids are 0 or 1 (``side (p - threshold)`` is a whole number of ticks, and the
hard model fills iff ``front - V <= -lot/2``), so ``P`` is the hard model's fill: a trade through
the price, or the queue ahead consumed by trades at it.

The expected-value semantics of the smooth kernel make a level a mixture of the order kept from
the older grid (probability ``kept``) and the one sent in its place (probability ``fresh``: the
old one may have filled); the level carries one queue state, the kept order's when ``kept >
fresh`` and the new order's otherwise (the hard choice as ``T -> 0``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from . import cross, queue


def _offset(window, tick, side: int):
    """Ticks from the row's local touch (the frames' queue columns are per offset: bids at ``bid -
    k``, asks at ``ask + k``, :mod:`mmsweep.sweep.queue_frames`)."""
    return (window["bid"] - tick) if side > 0 else (tick - window["ask"])


def window_fills(model, window, side: int, orders, dtype, *, lot_size: float, levels: int, temperature):
    """One side's orders in one window.  ``orders`` is a list over levels of ``(tick, hard_tick,
    state)``: the order's tick (float relative ticks, with a gradient), the whole tick it rests at
    (int32) and its queue state ``(front, cum_trade)``.  Returns a list of ``(P, state)``: the
    probability that the order fills in the window (see the module docstring) and its state
    after it (the hard model's rules, no gradient)."""
    buy, sell = cross.thresholds(window)
    threshold = (buy if side > 0 else sell).astype(dtype)
    side_name = "bid" if side > 0 else "ask"
    moved = model.on_window(window, side, [(hard_tick, jnp.bool_(True), state) for _t, hard_tick, state in orders],
                            dtype)
    out = []
    for (tick, hard_tick, (front, _cum)), (_filled, state) in zip(orders, moved):
        through = jax.nn.sigmoid((side * (tick - threshold) + 0.5) / temperature)
        traded = queue._pick(window, side_name, "trades", _offset(window, hard_tick, side), levels, 0.0).astype(dtype)
        ahead = lax.stop_gradient(front) - traded
        in_queue = jnp.where(traded > 0, jax.nn.sigmoid((-ahead - 0.5 * lot_size) / (temperature * lot_size)), 0.0)
        out.append((1.0 - (1.0 - through) * (1.0 - in_queue), tuple(lax.stop_gradient(s) for s in state)))
    return out


def arrival_state(model, window, side: int, hard_tick, dtype):
    """The queue state of an order arriving at ``hard_tick`` (int32) at window b's start: the
    hard model's ``init_order`` (no gradient)."""
    return tuple(lax.stop_gradient(s) for s in model.init_order(window, hard_tick, side, dtype))
