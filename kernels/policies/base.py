"""The contract every quoting policy implements (DESIGN §3).

A policy is a pure function written against an array namespace ``xp`` (``jax.numpy`` inside the
sweep kernel, ``numpy`` inside the exact replay engine), so both engines run the same maths:

    quote(params, obs, position, market, xp) -> Quote

* ``params``: mapping of parameter name -> scalar (a 0-d array inside a vmapped lane).
* ``obs``: :class:`Observation`, what the bot sees locally at the decision time.
* ``position``: current position in instrument qty units (signed; + long).
* ``market``: :class:`Market`, static facts (tick, lot, feature names) closed over, not traced.

Prices inside the kernel are *ticks relative to* ``market.base_tick`` so that float32 lanes
stay exact (an absolute BTCUSDT tick index is ~6e5; relative ticks are small).  The absolute
price of relative tick ``k`` is ``(market.base_tick + k) * market.tick_size``.

The returned grid: bids at ``bid_top - i * step`` for ``i < bid_levels`` and asks at
``ask_top + i * step`` for ``i < ask_levels``, each for ``qty`` (instrument qty units).
Policies must return ``bid_top < ask_top``-compatible values only in the sense that the shared
order management rejects marketable orders (post-only) — they need not check it themselves.
Order management (keep/cancel/submit, max position) is shared and lives in the kernel.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import numpy as np


class Market(NamedTuple):
    """Static instrument facts (Python floats/ints, never traced).

    Attributes:
        tick_size: price units per tick.
        lot_size: smallest qty step (instrument qty units).
        base_tick: absolute tick index that relative tick 0 stands for.
        feature_names: names of the columns of ``Observation.features``.
        interval_s: decision interval in seconds.
        max_levels: the static upper bound of levels per side (array shapes).
    """

    tick_size: float
    lot_size: float
    base_tick: int
    feature_names: tuple[str, ...] = ()
    interval_s: float = 0.1
    max_levels: int = 5

    def feature(self, obs: "Observation", name: str):
        """The column ``name`` of ``obs.features``; a clear KeyError names what exists."""
        try:
            k = self.feature_names.index(name)
        except ValueError:
            raise KeyError(f"policy needs feature {name!r}; frames have {list(self.feature_names)}") from None
        return obs.features[..., k]

    def price(self, rel_ticks, xp):
        """Absolute price (price units) of relative ticks (float)."""
        return (rel_ticks + self.base_tick) * self.tick_size


class Observation(NamedTuple):
    """What the bot sees at a decision.

    Attributes:
        bid, ask: local best bid/ask, relative ticks (integers, as floats or ints).
        features: feature vector ``[K]`` (units per feature, see mmsweep.sweep.features).
    """

    bid: Any
    ask: Any
    features: Any


class Quote(NamedTuple):
    """A desired quote grid.

    The seed policies return every field as an ``xp`` floating array; ticks, step and level
    counts hold whole numbers (the kernel casts them to integers).

    Attributes:
        bid_top, ask_top: relative ticks of the innermost bid / ask (integer-valued).
        step: grid step in ticks (integer-valued, >= 1).
        bid_levels, ask_levels: number of levels per side (integer-valued, 0..max_levels).
        qty: size per order, instrument qty units (>= 0).
        bid_qty, ask_qty: optional per-side sizes (instrument qty units) for policies that
            shape size by side (Avellaneda–Stoikov ``exp(-eta*q)``); ``None`` means both sides
            use ``qty``.  ``None`` is static (a pytree with no leaves), so a kernel can
            specialise on it.  Read sizes through :meth:`sizes`.
        max_position: the position limit (instrument qty units, ``inf`` = none) that
            :func:`mmsweep.kernels.orders.to_decision` enforces the same way in every engine: no
            bids at ``position >= max_position``, no asks at ``position <= -max_position``.
    """

    bid_top: Any
    ask_top: Any
    step: Any
    bid_levels: Any
    ask_levels: Any
    qty: Any
    bid_qty: Any = None
    ask_qty: Any = None
    max_position: Any = float("inf")

    def sizes(self):
        """``(bid size, ask size)`` per order, instrument qty units."""
        return (self.qty if self.bid_qty is None else self.bid_qty,
                self.qty if self.ask_qty is None else self.ask_qty)


Params = Mapping[str, Any]


class Param(NamedTuple):
    """A numeric (sweepable, traced) policy parameter, declared once in its policy's module and
    read by the experiment config, the CLI and the exports.

    Attributes:
        default: the value when unset; ``None`` = required; ``math.inf`` = no limit.
        unit: its unit (ticks, bps of mid, qty units, quote currency, ...).
        doc: what it does.
        low, high, open_low: the allowed range (``open_low``: strictly above ``low``).
        integer: whole numbers only.
        allow_inf: ``.inf`` allowed ("no limit").
        slot: ``(static option, j)``: only meaningful when that static feature list has more
            than ``j`` entries (e.g. ``beta_1`` weighs ``signals[1]``); otherwise it stays 0.
    """

    default: float | None
    unit: str
    doc: str
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    integer: bool = False
    allow_inf: bool = False
    slot: tuple[str, int] | None = None

    def allowed(self) -> str:
        """The allowed range, in words (for error messages)."""
        parts = []
        if self.low > -math.inf:
            parts.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high < math.inf:
            parts.append(f"<= {self.high:g}")
        text = f"{'a whole number' if self.integer else 'a number'} {' and '.join(parts)}".strip()
        return text + (" (or .inf: no limit)" if self.allow_inf else "")

    def first_bad(self, values) -> tuple[float, str] | None:
        """The first disallowed value and why (vectorised: an axis may hold a million values)."""
        values = np.asarray(values, np.float64)
        finite = np.isfinite(values)
        checks = [
            (np.isnan(values) | (~finite & (not self.allow_inf)), "must be finite"),
            (self.integer and finite & (values != np.round(values)), "must be a whole number"),
            ((values <= self.low) if self.open_low else (values < self.low), "out of range"),
            (values > self.high, "out of range"),
        ]
        for mask, why in checks:
            hits = np.flatnonzero(mask)
            if hits.size:
                return float(values[hits[0]]), why
        return None


class Static(NamedTuple):
    """A static (per-experiment, never swept or traced) policy option.

    ``kind``: ``features`` (a list of feature names, at most ``max_len``), ``feature`` (one
    feature name, or null if ``nullable``), ``instrument`` (an instrument name; "" = the quoted
    one) or ``count`` (a whole number >= 1).
    """

    default: Any
    doc: str
    kind: str
    max_len: int = 0
    nullable: bool = False


class Invariants(NamedTuple):
    """What stays the same at every decision of every lane of a sweep (a policy's
    ``invariants(params)`` decides it from the concrete swept values); the kernel then takes
    shortcuts that give identical results.

    constant_size: each side's order size (lots) never changes.
    constant_step: the grid step (ticks) never changes.
    """

    constant_size: bool = False
    constant_step: bool = False
