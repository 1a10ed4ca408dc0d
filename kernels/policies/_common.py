"""Small pure helpers shared by the seed policies (array maths on an ``xp`` namespace).

Everything here works on numpy scalars/arrays and on traced ``jax.numpy`` values inside
``jit``/``vmap``: no Python branching on values, no data-dependent shapes.  Branching is only
on static things (parameter *names*, ``Market`` fields, static config).

Units: "rel ticks" are ticks relative to ``market.base_tick`` (see base.py); prices are in
price units; sizes in instrument qty units; bps are 1e-4 of a price.
"""
from __future__ import annotations

import math

import numpy as np
from typing import Any, Mapping

from .base import Market, Observation, Param, Quote

# Tolerance (in ticks) when rounding a price to a tick: 99.99999 ticks computed from bps should
# be 100, not 99.  1e-4 tick is far below anything that matters and above float32 noise for
# relative ticks up to ~1e3.
TICK_EPS = 1e-4
# Relative tolerance when rounding sizes down to lots (0.3 / 0.1 = 2.9999999999999996).
LOT_EPS = 1e-6
# A quote further than this from base_tick (or not finite) is dropped (levels 0): the kernel
# casts ticks to int32.
TICK_BOUND = 2.0 ** 30
INF = math.inf

# Shared order-management parameters (DESIGN §3: a regular grid of n_levels orders per side).
N_LEVELS = Param(1, "levels per side", "orders per side, capped at market.max_levels", low=1, integer=True)
MAX_POSITION = Param(INF, "qty units", "no bids at position >= +max, no asks at <= -max", low=0.0, open_low=True,
                     allow_inf=True)
GRID_STEP = Param(1.0, "ticks", "spacing between levels, rounded to whole ticks >= 1", low=0.0)


def order_qty_param(doc: str = "size per order (rounded down to lots); inventory unit") -> Param:
    return Param(None, "qty units", doc, low=0.0, open_low=True)


def all_equal(params: Mapping[str, Any], name: str, value: float) -> bool:
    """Whether every lane's ``params[name]`` equals ``value`` (for ``invariants``)."""
    return bool(np.all(np.asarray(params[name], np.float64) == value))


# ----------------------------------------------------------------------------- parameters

def param(params: Mapping[str, Any], spec: Mapping[str, tuple], name: str):
    """``params[name]``, else the default from ``spec`` (a module's ``PARAMS``).

    Raises KeyError for a missing required parameter (default ``None``).  Resolved statically
    (by name), so it is safe inside jit.
    """
    if name in params:
        return params[name]
    if name not in spec:
        raise KeyError(f"unknown parameter {name!r}")
    default = spec[name][0]
    if default is None:
        raise KeyError(f"missing required parameter {name!r}")
    return default


def static_config(spec: Mapping[str, tuple], static: Mapping[str, Any] | None) -> dict:
    """Static (never traced) config with defaults from ``spec`` (a module's ``STATIC``)."""
    static = dict(static or {})
    unknown = set(static) - set(spec)
    if unknown:
        raise KeyError(f"unknown static option(s) {sorted(unknown)}; known: {sorted(spec)}")
    return {name: static.get(name, option[0]) for name, option in spec.items()}


def feature_tuple(value, what: str, max_len: int) -> tuple[str, ...]:
    """A static feature-name list as a tuple (a lone string counts as one name)."""
    if value is None:
        return ()
    names = (value,) if isinstance(value, str) else tuple(value)
    if len(names) > max_len:
        raise ValueError(f"{what}: at most {max_len} features, got {len(names)}")
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{what}: feature names must be non-empty strings, got {names!r}")
    return names


# ----------------------------------------------------------------------------- arithmetic

def weighted_features(params: Mapping[str, Any], spec: Mapping[str, tuple], weights, names, obs: Observation,
                      market: Market):
    """``sum_j params[weights[j]] * feature(names[j])`` over the configured feature names."""
    total = 0.0
    for weight, name in zip(weights, names):
        total = total + param(params, spec, weight) * market.feature(obs, name)
    return total


def reject_unused_weights(params: Mapping[str, Any], weights, n_used: int, what: str) -> None:
    """Concrete (untraced) check: a weight past the ``n_used`` configured features must be 0."""
    for name in weights[n_used:]:
        if name in params and np.any(np.asarray(params[name]) != 0):
            raise ValueError(f"{what}: {name} is set but there are only {n_used} of them configured; "
                             "add the feature or drop the parameter")


def safe_div(num, den, xp, default=0.0):
    """``num / den`` where ``den != 0``, else ``default``; never evaluates a division by zero
    (so no NaN/inf leaks through either branch of ``where``)."""
    ok = den != 0
    return xp.where(ok, num / xp.where(ok, den, 1.0), default)


def mid_ticks(obs: Observation):
    """Local mid, rel ticks (a half-integer when the spread is odd)."""
    return (obs.bid + obs.ask) * 0.5


def base_price(market: Market) -> float:
    """Price of rel tick 0 (a static Python float, so a huge base_tick never meets int32)."""
    return float(market.base_tick) * market.tick_size


def mid_price(obs: Observation, market: Market):
    """Local mid, price units."""
    return base_price(market) + mid_ticks(obs) * market.tick_size


def price_to_rel_ticks(price, market: Market):
    """Rel ticks (float) of an absolute price.  Subtracting the base *price* first keeps float32
    lanes accurate."""
    return (price - base_price(market)) / market.tick_size


def ticks_per_bps(price, market: Market):
    """Ticks in one basis point of ``price`` (price units)."""
    return price * 1e-4 / market.tick_size


def vol_ticks(vol, price, horizon_s, market: Market, xp):
    """A realised-vol feature (fraction per sqrt(second)) as ticks per sqrt(horizon_s)."""
    return vol * price / market.tick_size * xp.sqrt(xp.maximum(horizon_s, 0.0))


# ----------------------------------------------------------------------------- rounding

def bid_tick(x, xp):
    """Round a bid price (rel ticks) down to a tick: conservative (never more aggressive)."""
    return xp.floor(x + TICK_EPS)


def ask_tick(x, xp):
    """Round an ask price (rel ticks) up to a tick."""
    return xp.ceil(x - TICK_EPS)


def round_half_even(x, xp):
    """``x`` rounded to the nearest whole number, ties to even (numpy's and Python's rule),
    from ``floor`` alone: some backends (the GPU kernel's Triton lowering) have no rounding
    instruction, and the result must be the same everywhere.  NaN and inf pass through."""
    low = xp.floor(x)
    frac = x - low  # exact
    odd = (low - 2.0 * xp.floor(low * 0.5)) != 0
    return low + xp.where(frac > 0.5, 1.0, xp.where((frac == 0.5) & odd, 1.0, 0.0))


def step_ticks(x, xp):
    """A grid step (ticks, maybe fractional) as whole ticks >= 1 (like hftbacktest's
    ``max(round(interval / tick), 1)``)."""
    return xp.maximum(round_half_even(x, xp), 1.0)


def exact_mod(x, step, xp):
    """``x mod step`` for whole numbers ``0 <= x < 2**24`` and ``1 <= step < 2**12`` held as
    floats, exactly and without ``fmod`` (a library call per lane that no vector unit runs): the
    quotient is rounded by the division, then corrected by one step either way."""
    r = x - xp.floor(x / step) * step
    r = xp.where(r < 0, r + step, r)
    return xp.where(r >= step, r - step, r)


def grid_origin(market: Market, step, xp):
    """``base_tick mod step`` (ticks, in [0, step)), so grids align to absolute multiples.

    Computed exactly in float32: base_tick is split statically as ``hi * 2**16 + lo`` so every
    intermediate stays below 2**24 for |base_tick| < 2**40 and step < 4096 ticks.
    """
    hi, lo = divmod(int(market.base_tick), 1 << 16)
    hi_mod = exact_mod(xp.zeros_like(step) + float(hi), step, xp)
    return exact_mod(hi_mod * exact_mod(xp.zeros_like(step) + 65536.0, step, xp) + lo, step, xp)


def align_down(x, step, origin, xp):
    """Largest rel tick <= x whose absolute tick is a multiple of ``step`` (bids)."""
    return xp.floor((x + origin + TICK_EPS) / step) * step - origin


def align_up(x, step, origin, xp):
    """Smallest rel tick >= x whose absolute tick is a multiple of ``step`` (asks)."""
    return xp.ceil((x + origin - TICK_EPS) / step) * step - origin


def lots_down(qty, market: Market, xp):
    """Size (qty units) rounded down to whole lots; negative sizes become 0."""
    lots = xp.floor(xp.maximum(qty, 0.0) / market.lot_size * (1.0 + LOT_EPS))
    return lots * market.lot_size


def level_count(n, market: Market, xp):
    """Levels per side from a parameter: whole number, clipped to ``0..market.max_levels``."""
    return xp.clip(xp.floor(n * 1.0 + 1e-6), 0.0, float(market.max_levels))


# ----------------------------------------------------------------------------- the result

def _side(top, touch, levels, size, xp, is_bid):
    # Never quote through the local touch (hftbacktest's grid examples clamp the same way): a
    # skewed price joins the touch instead of being rejected post-only.
    top = xp.minimum(top, touch) if is_bid else xp.maximum(top, touch)
    ok = xp.isfinite(top) & (xp.abs(top) <= TICK_BOUND) & (size > 0)
    return xp.where(ok, top, touch * 1.0), xp.where(ok, levels, 0.0)


def finish(obs: Observation, xp, *, bid_top, ask_top, step, levels, qty, position, max_position,
           bid_qty=None, ask_qty=None) -> Quote:
    """Assemble a :class:`Quote` the same way for every policy.

    * tops clamped to the local touch (bid <= best bid, ask >= best ask);
    * ``max_position`` (qty units) travels in the quote: :func:`mmsweep.kernels.orders.to_decision`
      stops a side at the limit (no bids while ``position >= max_position``, no asks while
      ``position <= -max_position``, as hftbacktest's examples do), the same way in every engine;
    * a side with a non-finite or out-of-range top, or size 0, gets 0 levels (its top is set to
      the touch so the field stays finite).
    """
    one = xp.ones_like(mid_ticks(obs) * 1.0)
    bid_size = qty if bid_qty is None else bid_qty
    ask_size = qty if ask_qty is None else ask_qty
    bid_top, bid_levels = _side(bid_top, obs.bid, levels, bid_size, xp, True)
    ask_top, ask_levels = _side(ask_top, obs.ask, levels, ask_size, xp, False)
    return Quote(
        bid_top=bid_top * one, ask_top=ask_top * one, step=step * one,
        bid_levels=bid_levels * one, ask_levels=ask_levels * one, qty=qty * one,
        bid_qty=None if bid_qty is None else bid_qty * one,
        ask_qty=None if ask_qty is None else ask_qty * one,
        max_position=max_position * one,
    )
