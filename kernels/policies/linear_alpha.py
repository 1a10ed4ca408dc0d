"""The pricing framework: reservation = fair value + forecast - risk aversion * position * volatility.

    fair        = local mid                                            (rel ticks)
    forecast    = sum_j coef_j * feature_j        (bps of mid, converted to ticks)
    volatility  = vol * mid / tick_size * sqrt(horizon_s)              (ticks per sqrt(horizon))
    reservation = fair + forecast - risk_aversion * (position / order_qty) * volatility
    bid_top     = floor(reservation - half_spread),  ask_top = ceil(reservation + half_spread)
                  (clamped to the touch), levels every ``grid_step`` ticks outward

The forecast features are static config (``static['features']``, up to 4 names, any feature
kind); ``coef_j`` weights ``features[j]`` in bps of mid per unit of that feature (e.g. bps per
unit of imbalance, or bps per bp for ``vamp_bps``).  ``static['vol']`` names the realised-vol
feature (fraction per sqrt(second)); with ``vol=None`` the volatility is taken as 1 tick, making
``risk_aversion`` a plain skew in ticks per order of inventory.
"""
from __future__ import annotations

from functools import partial


from ._common import (GRID_STEP, MAX_POSITION, N_LEVELS, ask_tick, bid_tick, feature_tuple, finish, level_count,
                      lots_down, mid_price, mid_ticks, order_qty_param, param, reject_unused_weights, safe_div,
                      static_config, step_ticks, ticks_per_bps, vol_ticks, weighted_features)
from .base import Invariants, Param, Quote, Static

MAX_FEATURES = 4
COEFS = tuple(f"coef_{j}" for j in range(MAX_FEATURES))

PARAMS = {
    **{c: Param(0.0, "bps of mid per feature unit", f"weight of features[{j}] in the forecast (must be 0 if absent)",
                slot=("features", j))
       for j, c in enumerate(COEFS)},
    "risk_aversion": Param(0.0, "ticks per order of position per tick of volatility (dimensionless)",
                           "reservation shift against inventory, scaled by volatility", low=0.0),
    "horizon_s": Param(1.0, "s", "horizon of the volatility (ticks per sqrt(horizon_s))", low=0.0),
    "half_spread": Param(None, "ticks", "distance from the reservation to the innermost level", low=0.0),
    "order_qty": order_qty_param(),
    "n_levels": N_LEVELS,
    "grid_step": GRID_STEP,
    "max_position": MAX_POSITION,
}
STATIC = {
    "features": Static((), "forecast feature names (up to 4); features[j] is weighted by coef_j", "features",
                       max_len=MAX_FEATURES),
    "vol": Static("realized_vol_60s", "realised-vol feature (fraction per sqrt(s)); null = 1 tick", "feature",
                  nullable=True),
}


def invariants(params) -> Invariants:
    """Size ``order_qty`` and step ``grid_step`` at every decision."""
    return Invariants(constant_size=True, constant_step=True)


def _config(static):
    cfg = static_config(STATIC, static)
    return feature_tuple(cfg["features"], "linear_alpha features", MAX_FEATURES), cfg["vol"] or None


def FEATURES(static=None, market=None) -> tuple[str, ...]:
    """Feature columns the policy reads: the forecast features and the vol feature."""
    features, vol = _config(static)
    return features + ((vol,) if vol and vol not in features else ())


def validate(params, static=None) -> None:
    """Concrete (untraced) check: a coefficient without a feature must not be non-zero."""
    reject_unused_weights(params, COEFS, len(_config(static)[0]), "linear_alpha: static 'features'")


def forecast_bps(params, obs, market, features):
    """``sum_j coef_j * feature_j``, bps of mid."""
    return weighted_features(params, PARAMS, COEFS, features, obs, market)


def quote(params, obs, position, market, xp, static=None) -> Quote:
    """The quote for one decision; see the module docstring.  ``position`` in qty units."""
    features, vol = _config(static)
    P = partial(param, params, PARAMS)
    mid_px = mid_price(obs, market)
    volatility = (vol_ticks(market.feature(obs, vol), mid_px, P("horizon_s"), market, xp)
                  if vol else 1.0)
    order_qty = P("order_qty")
    reservation = (mid_ticks(obs)
                   + forecast_bps(params, obs, market, features) * ticks_per_bps(mid_px, market)
                   - P("risk_aversion") * safe_div(position, order_qty, xp) * volatility)
    half = P("half_spread")
    return finish(obs, xp, bid_top=bid_tick(reservation - half, xp),
                  ask_top=ask_tick(reservation + half, xp),
                  step=step_ticks(P("grid_step"), xp),
                  levels=level_count(P("n_levels"), market, xp),
                  qty=lots_down(order_qty, market, xp), position=position,
                  max_position=P("max_position"))
