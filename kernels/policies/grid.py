"""Grid trading with optional inventory skew (hftbacktest's grid-trading example).

    reservation = mid - skew * position / order_qty
    bid_top     = align_down(min(reservation - half_spread, best_bid))
    ask_top     = align_up  (max(reservation + half_spread, best_ask))

``align_*`` snaps to *absolute* ticks that are multiples of the grid interval (so the grid does
not move with every mid change and resting orders keep their queue position); levels go
outward every ``grid_interval``.  ``skew = 0`` is the plain grid.

Units: with ``relative = 0`` (default) ``half_spread``, ``grid_interval`` and ``skew`` are in
ticks; with ``relative = 1`` they are in bps of the local mid (converted to ticks at every
decision, as in hftbacktest's ``relative_half_spread`` examples).  ``skew`` is "per order of
inventory": a position of one ``order_qty`` shifts the reservation by ``skew``.
``relative`` is a parameter (not static), so a sweep may compare both unit systems.
"""
from __future__ import annotations

from functools import partial

from ._common import (MAX_POSITION, N_LEVELS, align_down, align_up, finish, grid_origin, level_count, lots_down,
                      mid_price, mid_ticks, param, safe_div, static_config, step_ticks,
                      ticks_per_bps, all_equal, order_qty_param)
from .base import Invariants, Param, Quote

PARAMS = {
    "half_spread": Param(None, "ticks | bps of mid if relative=1",
                         "distance from the reservation price to the innermost level (before alignment)", low=0.0),
    "grid_interval": Param(1.0, "ticks | bps of mid if relative=1",
                           "spacing between levels; rounded to whole ticks >= 1; grid prices are absolute "
                           "multiples of it", low=0.0),
    "skew": Param(0.0, "ticks | bps of mid if relative=1, per order_qty of position",
                  "reservation shift against inventory (0 = plain grid)"),
    "n_levels": N_LEVELS,
    "order_qty": order_qty_param("size per order, rounded down to lots"),
    "max_position": MAX_POSITION,
    "relative": Param(0, "flag 0/1", "0: half_spread/grid_interval/skew in ticks; 1: in bps of mid", low=0, high=1,
                      integer=True),
}
STATIC: dict = {}


def invariants(params) -> Invariants:
    """The size is always ``order_qty``; the step is constant unless it is in bps of the mid."""
    return Invariants(constant_size=True, constant_step=all_equal(params, "relative", 0))


def FEATURES(static=None, market=None) -> tuple[str, ...]:
    """Feature columns the policy reads: none (it uses only the local best bid/ask)."""
    static_config(STATIC, static)
    return ()


def quote(params, obs, position, market, xp, static=None) -> Quote:
    """The grid for one decision; see the module docstring.  ``position`` in qty units."""
    static_config(STATIC, static)
    P = partial(param, params, PARAMS)
    mid = mid_ticks(obs)
    # ticks per parameter unit: 1, or ticks per bp of the mid
    unit = xp.where(P("relative") > 0, ticks_per_bps(mid_price(obs, market), market), 1.0)
    half = P("half_spread") * unit
    step = step_ticks(P("grid_interval") * unit, xp)
    order_qty = P("order_qty")
    reservation = mid - P("skew") * unit * safe_div(position, order_qty, xp)
    origin = grid_origin(market, step, xp)
    # clamp to the touch *before* aligning (as hftbacktest does) so the aligned price stays on
    # the grid and never crosses
    bid_top = align_down(xp.minimum(reservation - half, obs.bid), step, origin, xp)
    ask_top = align_up(xp.maximum(reservation + half, obs.ask), step, origin, xp)
    return finish(obs, xp, bid_top=bid_top, ask_top=ask_top, step=step,
                  levels=level_count(P("n_levels"), market, xp),
                  qty=lots_down(order_qty, market, xp), position=position,
                  max_position=P("max_position"))
