"""Fair-value (APT) market making: quote a grid around a fair price driven by other instruments.

    fair        = mid * (1 + sum_i beta_i * r_i)                      (price units)
    norm_pos    = position * mid / max_notional                       (dimensionless)
    reservation = fair - relative_skew_bps * 1e-4 * mid * norm_pos
    bid/ask     = reservation -/+ relative_half_spread_bps * 1e-4 * mid, clamped to the touch
                  and aligned to absolute multiples of the grid interval
    qty         = order_notional / mid, rounded down to lots

``r_i`` are return features (fractions), e.g. ``spot.rolling_return_300s`` (the APT study's
"spot price vs its 5-minute mean").  Their names are *static* config (``static['signals']``,
up to 4), never traced parameters; ``beta`` weights ``signals[0]`` and ``beta_1..beta_3`` the
rest.  The base price is the quoted instrument's own local mid (not a rolling mean): the fair
price is "where the mid should be given what the other market just did".  All bps are of the
local mid, so ``beta`` moves only the centre of the quotes, not their width.

``max_notional`` (quote currency) both normalises the skew and limits the position: no bids
while ``position * mid >= max_notional``, no asks while ``<= -max_notional``.
"""
from __future__ import annotations

from functools import partial


from ._common import (INF, N_LEVELS, align_down, align_up, all_equal, feature_tuple, finish, grid_origin,
                      level_count, lots_down, mid_price, mid_ticks, param, reject_unused_weights, safe_div,
                      static_config, step_ticks, ticks_per_bps, weighted_features)
from .base import Invariants, Param, Quote, Static

MAX_SIGNALS = 4
BETAS = ("beta", "beta_1", "beta_2", "beta_3")

PARAMS = {
    "beta": Param(0.0, "fraction of price per unit of signal return (dimensionless)", "weight of signals[0]",
                  slot=("signals", 0)),
    "beta_1": Param(0.0, "dimensionless", "weight of signals[1] (must be 0 if absent)", slot=("signals", 1)),
    "beta_2": Param(0.0, "dimensionless", "weight of signals[2] (must be 0 if absent)", slot=("signals", 2)),
    "beta_3": Param(0.0, "dimensionless", "weight of signals[3] (must be 0 if absent)", slot=("signals", 3)),
    "relative_half_spread_bps": Param(None, "bps of mid", "distance from the reservation to the innermost level",
                                      low=0.0),
    "relative_skew_bps": Param(0.0, "bps of mid per unit of normalised position",
                               "reservation shift; normalised position = position*mid/max_notional"),
    "order_notional": Param(None, "quote currency", "size per order; qty = order_notional/mid rounded down to lots",
                            low=0.0, open_low=True),
    "max_notional": Param(INF, "quote currency", "skew normaliser and position limit (|position*mid|)", low=0.0,
                          open_low=True, allow_inf=True),
    "n_levels": N_LEVELS,
    "grid_interval_bps": Param(0.0, "bps of mid", "spacing between levels, rounded to whole ticks >= 1 (0 = one tick)",
                               low=0.0),
}
STATIC = {
    "signals": Static(("spot.rolling_return_300s",), "names of return features r_i (fractions), up to 4",
                      "features", max_len=MAX_SIGNALS),
}


def invariants(params) -> Invariants:
    """The size is a notional (it moves with the mid); the step is one tick unless set in bps."""
    return Invariants(constant_size=False, constant_step=all_equal(params, "grid_interval_bps", 0))


def _signals(static) -> tuple[str, ...]:
    return feature_tuple(static_config(STATIC, static)["signals"], "fair_value signals", MAX_SIGNALS)


def FEATURES(static=None, market=None) -> tuple[str, ...]:
    """Feature columns the policy reads: the static ``signals``."""
    return _signals(static)


def validate(params, static=None) -> None:
    """Concrete (untraced) check: a beta without a signal must not be set to non-zero."""
    reject_unused_weights(params, BETAS, len(_signals(static)), "fair_value: static 'signals'")


def signal_sum(params, obs, market, signals):
    """``sum_i beta_i * r_i`` (fraction of price): fair = mid * (1 + this)."""
    return weighted_features(params, PARAMS, BETAS, signals, obs, market)


def quote(params, obs, position, market, xp, static=None) -> Quote:
    """The grid for one decision; see the module docstring.  ``position`` in qty units."""
    signals = _signals(static)
    P = partial(param, params, PARAMS)
    mid_px = mid_price(obs, market)
    unit = ticks_per_bps(mid_px, market)
    # fair in rel ticks as mid + mid * signal (never mid*(1+s) - mid: float32 lanes would lose
    # the small offset against the large price)
    fair = mid_ticks(obs) + mid_px * signal_sum(params, obs, market, signals) / market.tick_size
    norm_pos = safe_div(position * mid_px, P("max_notional"), xp)
    reservation = fair - P("relative_skew_bps") * unit * norm_pos
    half = P("relative_half_spread_bps") * unit
    step = step_ticks(P("grid_interval_bps") * unit, xp)
    origin = grid_origin(market, step, xp)
    bid_top = align_down(xp.minimum(reservation - half, obs.bid), step, origin, xp)
    ask_top = align_up(xp.maximum(reservation + half, obs.ask), step, origin, xp)
    return finish(obs, xp, bid_top=bid_top, ask_top=ask_top, step=step,
                  levels=level_count(P("n_levels"), market, xp),
                  qty=lots_down(safe_div(P("order_notional"), mid_px, xp), market, xp),
                  position=position,
                  max_position=safe_div(P("max_notional"), mid_px, xp, default=INF))
