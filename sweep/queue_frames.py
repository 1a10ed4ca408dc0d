"""Frame columns for the kernel's queue fill model (``fill_model: queue``).

A resting order's queue position moves with what happens *at its own price*: trades at the
price consume the queue ahead, and size decreases at the price may advance it (the exact
engine's queue models, :mod:`mmsweep.replay.queue`).  The kernel never sees events, so the
frames carry, for each exposure window (a and b) and each side, the ``K`` ticks nearest the
decision's own touch (bids at ``bid - k``, asks at ``ask + k``, ``k = 0..K-1``, the local best
at the row's decision time):

* ``queue_<side>_trades_<k>_<w>``: qty traded at that tick in the window by aggressors of the
  other side (seller-aggressor trades for bids);
* ``queue_<side>_depth_start_<k>_<w>`` / ``..._depth_end_<k>_<w>``: the exchange's displayed
  size at that tick at the window's start and end (whole messages only, as everywhere).  The
  start of window b is the decision's arrival, so it is also the queue an arriving order joins.

Quantities are in the instrument's qty units.  Memory: ``12 K`` floats per row (K = 4: 192
bytes as float32).  With at most one event per window the aggregation loses nothing, and the
kernel's queue fills then equal the exact engine's (tests/test_queue.py).
"""
from __future__ import annotations

import numpy as np

from .data.book import price_to_ticks, replay_book
from .data.events import TRADE

SIDES = ("bid", "ask")
WINDOWS = ("a", "b")
QUANTITIES = ("trades", "depth_start", "depth_end")


def queue_column(side: str, quantity: str, k: int, window: str) -> str:
    """The frame column of one quantity at offset ``k`` from the touch in one window."""
    return f"queue_{side}_{quantity}_{k}_{window}"


def queue_columns(levels: int) -> tuple[str, ...]:
    return tuple(queue_column(s, q, k, w) for w in WINDOWS for s in SIDES for q in QUANTITIES for k in range(levels))


def _depth_at(replay, rows: np.ndarray, anchor: np.ndarray, levels: int, side: int) -> np.ndarray:
    """``[len(rows), levels]`` displayed size at ``anchor - side*k`` in the sampled books."""
    ticks = replay.bid_ticks if side > 0 else replay.ask_ticks
    qty = replay.bid_qty if side > 0 else replay.ask_qty
    ticks, qty = ticks[rows], qty[rows]
    want = anchor[:, None] - side * np.arange(levels)[None, :]
    out = np.zeros((len(rows), levels))
    for j in range(ticks.shape[1]):  # the sampled levels are few (levels + a margin)
        hit = ticks[:, j, None] == want
        out += np.where(hit, qty[:, j, None], 0.0)
    return out


def build_queue_columns(table: np.ndarray, instrument, bounds: np.ndarray, bid: np.ndarray, ask: np.ndarray,
                        levels: int, source: str = "") -> dict[str, np.ndarray]:
    """The queue columns of ``n = len(bid)`` rows whose windows are ``(bounds[m], bounds[m+1]]``
    (``m = 2r`` window a of row r, ``2r + 1`` window b); ``bid``/``ask`` the rows' local best
    ticks (absolute)."""
    n = len(bid)
    n_win = 2 * n
    assert len(bounds) == n_win + 1
    anchor_bid = np.repeat(bid.astype(np.int64), 2)
    anchor_ask = np.repeat(ask.astype(np.int64), 2)
    # levels deeper than the K nearest ticks cannot matter; a margin covers empty ticks between
    replay = replay_book(table, instrument.tick_size, instrument.lot_size, clock="exch", sample_ts=bounds,
                         n_levels=2 * levels + 4, source=source)
    starts, ends = np.arange(n_win), np.arange(1, n_win + 1)
    out: dict[str, np.ndarray] = {}
    trades = table[table["kind"] == TRADE]
    ts = trades["exch_ts"]
    window = np.searchsorted(bounds, ts, side="left") - 1
    inside = (window >= 0) & (window < n_win)
    tick = price_to_ticks(trades["price"], instrument.tick_size)
    for side_name, side, anchor, aggressor in (("bid", +1, anchor_bid, -1), ("ask", -1, anchor_ask, +1)):
        depth_start = _depth_at(replay, starts, anchor, levels, side)
        depth_end = _depth_at(replay, ends, anchor, levels, side)
        traded = np.zeros((n_win, levels))
        mine = inside & (trades["side"] == aggressor)
        w = window[mine]
        k = side * (anchor[w] - tick[mine])
        ok = (k >= 0) & (k < levels)
        np.add.at(traded, (w[ok], k[ok]), trades["qty"][mine][ok].astype(np.float64))
        for which, sl in (("a", slice(0, None, 2)), ("b", slice(1, None, 2))):
            for j in range(levels):
                out[queue_column(side_name, "trades", j, which)] = traded[sl, j]
                out[queue_column(side_name, "depth_start", j, which)] = depth_start[sl, j]
                out[queue_column(side_name, "depth_end", j, which)] = depth_end[sl, j]
    return out
