"""Avellaneda–Stoikov market making, stationary (infinite-horizon) form.

    q        = position / order_qty                                   (orders)
    sigma    = vol * mid / tick_size * sqrt(horizon_s)                 (ticks per sqrt(horizon))
    r        = s - q * gamma * sigma**2                                (rel ticks)
    delta    = gamma * sigma**2 + (2 / gamma) * ln(1 + gamma / k)      (ticks, full spread)
    bid_top  = floor(r - delta / 2),  ask_top = ceil(r + delta / 2)    (clamped to the touch)
    bid_qty  = order_qty * exp(-eta * q),  ask_qty = order_qty * exp(eta * q)   (rounded down to lots)

The finite-horizon ``(T - t)`` factor is replaced by a fixed horizon folded into sigma: the
stationary form suits a bot that runs all day.  ``vol`` is a realised-vol feature
(``realized_vol_<w>s``: fraction per sqrt(second), static ``static['vol']``) converted to ticks
with the local mid.  Unit system: prices in ticks, inventory in orders of ``order_qty``, so
``gamma`` is in 1/tick (per order of inventory) and ``k`` in 1/tick (fill intensity
``A * exp(-k * distance_in_ticks)``).  gamma -> 0 takes the limit ``delta = 2/k``; gamma < 0
counts as 0; ``k <= 0`` (no finite optimal spread) quotes nothing.

Size shaping returns per-side sizes in ``Quote.bid_qty``/``ask_qty`` (``qty`` is the unshaped
``order_qty``); a side whose shaped size rounds to 0 lots is not quoted.
"""
from __future__ import annotations

from functools import partial

from ._common import (GRID_STEP, INF, MAX_POSITION, N_LEVELS, all_equal, ask_tick, bid_tick, finish, level_count,
                      lots_down, mid_price, mid_ticks, order_qty_param, param, safe_div, static_config, step_ticks,
                      vol_ticks)
from .base import Invariants, Param, Quote, Static

# exp(30) ~ 1e13: keeps shaped sizes finite in float32 for any position
MAX_SHAPE_EXPONENT = 30.0

PARAMS = {
    "gamma": Param(None, "1/tick per order of inventory", "risk aversion", low=0.0),
    "k": Param(None, "1/tick", "decay of fill intensity with quote distance, A*exp(-k*ticks)", low=0.0,
               open_low=True),
    "horizon_s": Param(1.0, "s", "horizon of the price variance sigma**2 (stands in for T - t)", low=0.0),
    "eta": Param(0.0, "1/order", "size shaping: bid size *exp(-eta*q), ask size *exp(eta*q)", low=0.0),
    "order_qty": order_qty_param("base size per order; inventory unit q = position/order_qty"),
    "n_levels": N_LEVELS,
    "grid_step": GRID_STEP,
    "max_position": MAX_POSITION,
}
STATIC = {
    "vol": Static("realized_vol_60s", "realised-vol feature name (fraction per sqrt(s))", "feature"),
}


def invariants(params) -> Invariants:
    """Sizes are shaped by inventory unless ``eta`` is 0; the step is ``grid_step``."""
    return Invariants(constant_size=all_equal(params, "eta", 0), constant_step=True)


def FEATURES(static=None, market=None) -> tuple[str, ...]:
    """Feature columns the policy reads: the realised-vol feature."""
    return (static_config(STATIC, static)["vol"],)


def reservation_and_spread(s, q, gamma, sigma2, k, xp):
    """``(r, delta)``: reservation price and full optimal spread, ticks.

    ``s`` mid (ticks), ``q`` inventory (orders), ``gamma``/``k`` in 1/tick, ``sigma2`` ticks**2.
    """
    gamma = xp.maximum(gamma, 0.0)
    k_ok = k > 0
    k_safe = xp.where(k_ok, k, 1.0)
    g_safe = xp.where(gamma > 0, gamma, 1.0)
    # (2/gamma) ln(1 + gamma/k) -> 2/k as gamma -> 0; log1p keeps small gamma/k accurate
    liquidity = xp.where(gamma > 0, 2.0 / g_safe * xp.log1p(g_safe / k_safe), 2.0 / k_safe)
    delta = xp.where(k_ok, gamma * sigma2 + liquidity, INF)
    return s - q * gamma * sigma2, delta


def quote(params, obs, position, market, xp, static=None) -> Quote:
    """The quote for one decision; see the module docstring.  ``position`` in qty units."""
    cfg = static_config(STATIC, static)
    P = partial(param, params, PARAMS)
    order_qty = P("order_qty")
    q = safe_div(position, order_qty, xp)
    sigma = vol_ticks(market.feature(obs, cfg["vol"]), mid_price(obs, market), P("horizon_s"), market, xp)
    r, delta = reservation_and_spread(mid_ticks(obs), q, P("gamma"), sigma * sigma, P("k"), xp)
    shape = xp.clip(P("eta") * q, -MAX_SHAPE_EXPONENT, MAX_SHAPE_EXPONENT)
    return finish(obs, xp, bid_top=bid_tick(r - 0.5 * delta, xp), ask_top=ask_tick(r + 0.5 * delta, xp),
                  step=step_ticks(P("grid_step"), xp),
                  levels=level_count(P("n_levels"), market, xp),
                  qty=lots_down(order_qty, market, xp), position=position,
                  max_position=P("max_position"),
                  bid_qty=lots_down(order_qty * xp.exp(-shape), market, xp),
                  ask_qty=lots_down(order_qty * xp.exp(shape), market, xp))
