"""Reference-venue VAMP quoting with a tanh inventory spread.

    ref      = ref_mid * (1 + vamp_bps * 1e-4)        the reference venue's VAMP (price units)
    t        = tanh((position / order_qty) / q_scale)                 in (-1, 1)
    bid_half = base_bps + skew_bps * t      ask_half = base_bps - skew_bps * t      (bps of ref_mid)
    bid_top  = floor(ref - bid_half),       ask_top  = ceil(ref + ask_half)  (rel ticks, clamped
               to the local touch), levels every ``grid_step`` ticks outward

Long inventory (t > 0) widens the bid (the side that adds inventory) and tightens the ask (the
side that reduces it); short inventory the reverse.  ``tanh`` saturates, so the spread change is
bounded by ``skew_bps`` however large the position.

``static['venue']`` names the reference instrument: with ``venue='spot'`` the policy reads
``spot.vamp_bps_<levels>`` and ``spot.mid`` (price units, assumed in the quoted instrument's
price units); with ``venue=''`` it reads the quoted instrument's own ``vamp_bps_<levels>`` and
local mid.  While the reference mid is not positive (no book yet; features are zero-filled in
warm-up) the policy falls back to its own local mid.
"""
from __future__ import annotations

from functools import partial

from ._common import (GRID_STEP, MAX_POSITION, N_LEVELS, ask_tick, bid_tick, finish, level_count, lots_down,
                      mid_price, mid_ticks, order_qty_param, param, price_to_rel_ticks, safe_div, static_config,
                      step_ticks, ticks_per_bps)
from .base import Invariants, Param, Quote, Static

PARAMS = {
    "base_bps": Param(None, "bps of reference mid", "half-spread with zero inventory", low=0.0),
    "skew_bps": Param(0.0, "bps of reference mid", "max inventory change of each half-spread (tanh-saturated)",
                      low=0.0),
    "q_scale": Param(1.0, "orders (multiples of order_qty)", "inventory at which tanh reaches 0.76", low=0.0),
    "order_qty": order_qty_param(),
    "n_levels": N_LEVELS,
    "grid_step": GRID_STEP,
    "max_position": MAX_POSITION,
}
STATIC = {
    "venue": Static("", "reference instrument prefix ('' = the quoted instrument)", "instrument"),
    "levels": Static(5, "VAMP depth levels (feature vamp_bps_<levels>)", "count"),
}


def invariants(params) -> Invariants:
    """Size ``order_qty`` and step ``grid_step`` at every decision."""
    return Invariants(constant_size=True, constant_step=True)


def _names(static) -> tuple[str, str | None]:
    cfg = static_config(STATIC, static)
    venue, levels = cfg["venue"] or "", int(cfg["levels"])
    prefix = f"{venue}." if venue else ""
    return f"{prefix}vamp_bps_{levels}", (f"{prefix}mid" if venue else None)


def FEATURES(static=None, market=None) -> tuple[str, ...]:
    """Feature columns the policy reads: the reference VAMP (and the reference mid if another venue)."""
    vamp, mid = _names(static)
    return (vamp,) + ((mid,) if mid else ())


def inventory_tilt(position, order_qty, q_scale, xp):
    """``tanh(q / q_scale)`` with q in orders; ``q_scale <= 0`` gives the step limit ``sign(q)``."""
    q = safe_div(position, order_qty, xp)
    ok = q_scale > 0
    return xp.where(ok, xp.tanh(q / xp.where(ok, q_scale, 1.0)), xp.sign(q))


def quote(params, obs, position, market, xp, static=None) -> Quote:
    """The quote for one decision; see the module docstring.  ``position`` in qty units."""
    vamp_name, mid_name = _names(static)
    P = partial(param, params, PARAMS)
    own_px, own_rel = mid_price(obs, market), mid_ticks(obs)
    if mid_name is None:
        ref_px, ref_rel = own_px, own_rel
    else:
        other = market.feature(obs, mid_name)
        ok = other > 0
        ref_px = xp.where(ok, other, own_px)
        ref_rel = xp.where(ok, price_to_rel_ticks(other, market), own_rel)
    unit = ticks_per_bps(ref_px, market)
    vamp = ref_rel + market.feature(obs, vamp_name) * unit
    order_qty = P("order_qty")
    tilt = P("skew_bps") * inventory_tilt(position, order_qty, P("q_scale"), xp)
    bid_half = (P("base_bps") + tilt) * unit
    ask_half = (P("base_bps") - tilt) * unit
    return finish(obs, xp, bid_top=bid_tick(vamp - bid_half, xp), ask_top=ask_tick(vamp + ask_half, xp),
                  step=step_ticks(P("grid_step"), xp),
                  levels=level_count(P("n_levels"), market, xp),
                  qty=lots_down(order_qty, market, xp), position=position,
                  max_position=P("max_position"))
