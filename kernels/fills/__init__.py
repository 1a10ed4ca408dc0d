"""Fill models: when does a resting order fill inside one exposure window (DESIGN §3)?

Every model is a module exposing one :class:`FillModel`, the small interface the kernel steps
call:

* ``columns``: the frame columns it reads per window, named without their ``_a`` / ``_b``
  suffix (``buy_fill`` stands for ``buy_fill_a`` in window a and ``buy_fill_b`` in window b);
* ``order_state``: the names of the per-order state it keeps (``()`` for stateless models); the
  kernel holds one value per name, level and side, and carries it with the order;
* ``init_order(window, tick, side, dtype)``: that state for an order arriving in ``window`` at
  ``tick`` (a tuple matching ``order_state``);
* ``on_window(window, side, orders, dtype)``: ``orders`` is a list over levels of ``(tick,
  live, state)``; returns a list of ``(filled, state)`` — ``filled`` a bool, the order filling in
  full as a maker at its own tick;
* ``thresholds(window) -> (buy, sell)`` or ``None``: a stateless model given by fill thresholds
  (a buy at ``p`` fills iff ``p >= buy``, a sell iff ``p <= sell``) says so, and the kernel then
  finds a side's filled levels as a prefix of its grid (one compare per level, no per-order
  work); ``on_window`` gives the same answer order by order;
* ``qty_columns``: those of ``columns`` that hold quantities (floats, qty units) rather than
  ticks.

Every window dict also holds the row's local best ``bid`` and ``ask`` (relative ticks), the
touch that per-tick frame columns are measured from.

Ticks are relative int32 ticks (the frames' sentinels clipped to ``NO_FILL``); ``side`` is +1
for bids and -1 for asks.  Models are pure functions of scalars of one lane, so every backend
(XLA scan, numba, Pallas) runs them unchanged.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from . import cross, touch


class FillModel(NamedTuple):
    name: str
    columns: tuple[str, ...]
    order_state: tuple[str, ...]
    init_order: Callable
    on_window: Callable
    thresholds: Callable | None = None
    qty_columns: tuple[str, ...] = ()


def threshold_model(name: str, columns: tuple[str, ...], thresholds: Callable) -> FillModel:
    """A stateless model given by per-window fill thresholds: a resting buy at tick ``p`` fills
    iff ``p >= buy_threshold``, a sell iff ``p <= sell_threshold``."""

    def on_window(window, side, orders, dtype):
        buy, sell = thresholds(window)
        if side > 0:
            return [(live & (tick >= buy), state) for tick, live, state in orders]
        return [(live & (tick <= sell), state) for tick, live, state in orders]

    return FillModel(name, columns, (), lambda window, tick, side, dtype: (), on_window, thresholds)


FILL_MODELS: dict[str, FillModel] = {
    "cross": threshold_model("cross", cross.COLUMNS, cross.thresholds),
    "touch": threshold_model("touch", touch.COLUMNS, touch.thresholds),
}


#: Every fill model an experiment may name (``queue`` is built per queue model and depth).
NAMES = tuple(FILL_MODELS) + ("queue",)


def get_fill_model(name: str, *, queue_model: str = "power", queue_n: float = 2.0, queue_levels: int = 0,
                   lot_size: float = 1.0) -> FillModel:
    """The fill model ``name``; ``queue`` takes the queue model, its exponent, the frames' queue
    levels and the instrument's lot (its fill threshold is half a lot)."""
    if name == "queue":
        from . import queue

        return queue.make(queue_model, queue_n, queue_levels, lot_size)
    try:
        return FILL_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown fill model {name!r}; known: {sorted(NAMES)}") from None
