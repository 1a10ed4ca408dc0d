"""The decision contract and the order grid of one side, shared by every engine.

A policy's :class:`~mmsweep.kernels.policies.base.Quote` (floats) becomes a typed
:class:`Decision` through :func:`to_decision`, the one place where grid rounding, lot rounding
and the position cap live.  The sweep kernel (every backend), the reference loop and the exact
replay engine (traced into numba by :mod:`mmsweep.kernels.jaxpr_numba`) all call it.

A side's resting orders always form a regular grid: level ``j`` sits at ``top - side*j*step``
(``side`` +1 bids, going down; -1 asks, going up), and a bitmask says which levels hold a live
order.  Keeping and cancelling on a new decision is then a remap of that mask onto the new grid,
fills a compare per level, and nothing is gathered or matched all-pairs.  Sizes are whole lots:
one per side when the policy's size is constant across decisions (``size_mode = "constant"``),
else one per level (an order kept from an older decision keeps its own size).

Every function here works on scalars of one lane (``jnp`` inside the kernels, traced once for
numba); loops over levels are static Python loops, so each level is its own lane vector once
vmapped.  Ticks are relative to ``market.base_tick`` (int32), masks are int32 (bit ``j`` = level
``j``, so ``max_levels <= 30``).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax

from .policies._common import round_half_even

#: Levels a side may hold: bit ``j`` of an int32 mask is level ``j`` (bit 31 stays clear).
MAX_LEVELS = 30
#: Below the cap by this much (lots) counts as at the cap: 0.2 / 0.001 = 199.99999999999997.
CAP_EPS_LOTS = 1e-3
#: Relative tolerance of lot rounding (0.01 / 0.001 = 9.999999 in float32).
LOT_ROUND_EPS = 1e-6


class Decision(NamedTuple):
    """What a bot decides at one decision time, in the engines' units.

    Attributes:
        bid_top, ask_top: int32, relative ticks of the innermost bid / ask.
        step: int32, ticks between levels (>= 1), the same on both sides.
        bid_levels, ask_levels: int32, levels wanted per side, ``0..max_levels``; 0 when the
            side is at the position cap or its size rounds to zero lots.
        bid_lots, ask_lots: float (whole numbers), lots per order of each side.
    """

    bid_top: Any
    ask_top: Any
    step: Any
    bid_levels: Any
    ask_levels: Any
    bid_lots: Any
    ask_lots: Any


def to_decision(quote, position_lots, market, xp=jnp, dtype=None, tick_dtype=jnp.int32) -> Decision:
    """Turn a policy's quote into a :class:`Decision`.

    ``position_lots`` is the bot's position in lots (signed).  Rules, identical in every engine:

    * tops and step are rounded to whole ticks, the step to at least 1;
    * levels are clipped to ``0..market.max_levels``;
    * sizes are rounded down to whole lots and capped at the position limit (so no single order
      can take the position past it from flat, and a shaped size cannot grow without bound);
      a side whose size rounds to 0 lots is not quoted;
    * no bids while ``position >= quote.max_position`` and no asks while ``position <=
      -quote.max_position`` (compared in lots, ``CAP_EPS_LOTS`` below the cap counts as at it).

    ``tick_dtype`` is int32 for every engine; the smooth kernel asks for floats (whole numbers
    whose straight-through rounding keeps a gradient).
    """
    lot = market.lot_size
    dtype = dtype or jnp.result_type(quote.bid_top)
    max_levels = float(market.max_levels)
    cap = quote.max_position / lot - CAP_EPS_LOTS
    bid_size, ask_size = quote.sizes()
    # No single order is larger than the position limit: shaped sizes (exp(eta q)) would
    # otherwise grow with every overshoot (inf when there is no limit)
    max_lots = xp.floor(quote.max_position / lot + CAP_EPS_LOTS)
    bid_lots = xp.minimum(xp.floor(bid_size / lot + LOT_ROUND_EPS), max_lots).astype(dtype)
    ask_lots = xp.minimum(xp.floor(ask_size / lot + LOT_ROUND_EPS), max_lots).astype(dtype)
    bid_levels = xp.where((position_lots >= cap) | (bid_lots <= 0), 0.0, xp.clip(quote.bid_levels, 0.0, max_levels))
    ask_levels = xp.where((position_lots <= -cap) | (ask_lots <= 0), 0.0, xp.clip(quote.ask_levels, 0.0, max_levels))
    return Decision(
        bid_top=round_half_even(quote.bid_top, xp).astype(tick_dtype),
        ask_top=round_half_even(quote.ask_top, xp).astype(tick_dtype),
        step=xp.maximum(round_half_even(quote.step, xp), 1.0).astype(tick_dtype),
        bid_levels=bid_levels.astype(tick_dtype),
        ask_levels=ask_levels.astype(tick_dtype),
        bid_lots=bid_lots,
        ask_lots=ask_lots,
    )


# ----------------------------------------------------------------------------- one side's grid

def level_tick(top, step, level: int, side: int):
    """Relative tick of grid level ``level`` (int32)."""
    return top - (side * level) * step


def level_bit(mask, level: int):
    """Whether bit ``level`` of an int32 mask is set (bool)."""
    return (mask & (1 << level)) != 0


def below(levels):
    """Mask of levels ``0..levels-1`` (int32), ``levels`` in ``0..MAX_LEVELS``."""
    return jnp.left_shift(jnp.int32(1), levels) - 1


def popcount(mask):
    """Number of set bits of an int32 mask (int32)."""
    return lax.population_count(mask)


def level_index_sum(mask, max_levels: int):
    """Sum of the indices of the set bits of ``mask`` (int32), from one popcount per index bit:
    ``sum_j j * bit_j = sum_k 2**k * popcount(mask & {j : bit k of j set})``."""
    total = jnp.int32(0)
    for k in range(max(max_levels - 1, 1).bit_length()):
        select = sum(1 << j for j in range(max_levels) if (j >> k) & 1)
        total = total + (popcount(mask & select) << k)
    return total


def reach(top, step, threshold, side: int, max_levels: int):
    """Mask of the levels of the grid at or through ``threshold`` (bids: ``tick >= threshold``,
    asks: ``tick <= threshold``): a prefix, since ticks move away from the touch with the
    level.  One compare per level and no division."""
    count = jnp.int32(0)
    for j in range(max_levels):
        tick = level_tick(top, step, j, side)
        count = count + ((tick >= threshold) if side > 0 else (tick <= threshold)).astype(jnp.int32)
    return below(count)


def shift_remap(mask, top, new_top, step, side: int, max_levels: int, dtype):
    """:func:`remap` when both grids have the same step: the old levels land on the new grid
    shifted by ``k = side * (new_top - top) / step`` levels if that is a whole number, else
    nowhere.  A couple of shifts instead of a loop over levels."""
    offset = side * (new_top - top)
    # the quotient of an exact multiple is within an ulp of a whole number: floor(q + 0.5) finds it
    k = jnp.floor(offset.astype(dtype) * (1.0 / step.astype(dtype)) + 0.5).astype(jnp.int32)
    aligned = k * step == offset
    k = jnp.clip(k, -31, 31)
    shifted = jnp.where(k >= 0, jnp.left_shift(mask, jnp.maximum(k, 0)), jnp.right_shift(mask, jnp.maximum(-k, 0)))
    return jnp.where(aligned, shifted & ((1 << max_levels) - 1), 0)


def remap(mask, top, step, new_top, new_step, side: int, max_levels: int, dtype, lots=None):
    """Levels of the grid ``(new_top, new_step)`` at which the grid ``(top, step)`` holds a live
    order (``mask``), as an int32 mask over the new levels; with per-level ``lots`` (a tuple),
    also the lots of those orders, per new level (0 where none).

    Exact integer logic: an old level ``j`` lands on new level ``i`` iff ``side * (new_top -
    tick_j) == i * new_step`` with ``0 <= i < max_levels``.  The quotient is found in floating
    point with one reciprocal per lane (``round(offset / new_step)``, exact for offsets below
    2**22 ticks) and then checked in integers, so no integer division runs in the loop.
    """
    inv_step = 1.0 / new_step.astype(dtype)
    out = jnp.int32(0)
    picked = [jnp.zeros((), dtype) for _ in range(max_levels)] if lots is not None else None
    for j in range(max_levels):
        offset = side * (new_top - level_tick(top, step, j, side))
        i = jnp.floor(offset.astype(dtype) * inv_step + 0.5).astype(jnp.int32)
        lands = level_bit(mask, j) & (offset >= 0) & (i * new_step == offset) & (i < max_levels)
        out = out | jnp.where(lands, jnp.left_shift(jnp.int32(1), jnp.clip(i, 0, max_levels - 1)), jnp.int32(0))
        if lots is not None:
            for k in range(max_levels):
                picked[k] = jnp.where(lands & (i == k), lots[j], picked[k])
    return out if lots is None else (out, tuple(picked))
