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

from typing import Any, Mapping, NamedTuple


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
