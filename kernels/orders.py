"""Shared order management on one side of the book (pure JAX, one lane; vmapped outside).

Resting orders of a side live in ``max_levels`` slots: ``tick`` (relative ticks, int32),
``qty`` (instrument qty units) and ``alive``.  Slot ``i`` holds the order of grid level ``i``
after an arrival, so the arrays never grow.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class SideOrders(NamedTuple):
    tick: jnp.ndarray  # int32 [L], relative ticks
    qty: jnp.ndarray  # float [L], instrument qty units
    alive: jnp.ndarray  # bool [L]


def empty_side(max_levels: int, dtype) -> SideOrders:
    return SideOrders(jnp.zeros(max_levels, jnp.int32), jnp.zeros(max_levels, dtype), jnp.zeros(max_levels, bool))


def grid_ticks(top, step, levels, side: int, max_levels: int):
    """Ticks of a regular grid and which levels are wanted.  ``side`` +1 bids (going down)."""
    i = jnp.arange(max_levels, dtype=jnp.int32)
    ticks = top - side * i * step
    return ticks, i < levels


def present(orders: SideOrders, top, step, side: int):
    """Which levels of a grid already have a live order (``[L]`` bool), as the bot sees it when
    it decides: those levels get no new order, even if the order fills before the decision's
    messages arrive (the bot only learns of that fill after deciding)."""
    ticks, _ = grid_ticks(top, step, orders.tick.shape[0], side, orders.tick.shape[0])
    return (orders.alive[None, :] & (orders.tick[None, :] == ticks[:, None])).any(axis=1)


def arrive(orders: SideOrders, top, step, levels, qty, opposite_best, side: int, seen) -> tuple[SideOrders, jnp.ndarray]:
    """Apply a decision's grid when its messages reach the exchange.

    Resting orders whose tick is in the new grid are kept with their queue place and size;
    the rest are cancelled; levels that had no order when the decision was made (``seen``
    False, see :func:`present`) are sent post-only and rejected if marketable against the
    exchange's opposite best at arrival (a buy at ``p >= best ask``, a sell at ``p <= best
    bid``).  Returns the new orders and the number of post-only rejections.
    """
    max_levels = orders.tick.shape[0]
    ticks, wanted = grid_ticks(top, step, levels, side, max_levels)
    # All-pairs match of new levels against old orders: L x L compares, L is small (<= ~10).
    match = orders.alive[None, :] & (orders.tick[None, :] == ticks[:, None])
    kept = wanted & match.any(axis=1)
    kept_qty = jnp.sum(jnp.where(match, orders.qty[None, :], 0), axis=1)
    marketable = (ticks >= opposite_best) if side > 0 else (ticks <= opposite_best)
    send = wanted & ~kept & ~seen
    accepted = send & ~marketable
    new = SideOrders(
        tick=ticks.astype(jnp.int32),
        qty=jnp.where(kept, kept_qty, qty).astype(orders.qty.dtype),
        alive=kept | accepted,
    )
    return new, jnp.sum(send & marketable)


def fills(orders: SideOrders, threshold, side: int) -> tuple[SideOrders, jnp.ndarray]:
    """Orders at or through ``threshold`` fill in full as makers at their own tick.

    Returns the remaining orders and the filled mask.
    """
    hit = orders.alive & ((orders.tick >= threshold) if side > 0 else (orders.tick <= threshold))
    return orders._replace(alive=orders.alive & ~hit), hit
