"""L2 order-book replay over an event table, on either clock.

The book is held as two dense quantity arrays indexed by integer tick (``tick - base_tick``),
which is fast in numba and exact for the price ranges a day of one instrument covers.

Semantics (the same as the exchange model of DESIGN §4, where they are sound):

* DEPTH / SNAPSHOT set the absolute size at a tick; a size below half a lot deletes it.
* CLEAR with a NaN price wipes the side (side 0: both); with a finite price it deletes from the
  best level through that price (hftbacktest's "clear up to").
* A level that would cross the opposite best deletes the crossed opposite levels (they are
  stale: a consistent exchange book cannot be crossed).  Each such repair is counted.
* BBO rows are ignored when ``use_bbo`` is False (sources with depth keep them for checks);
  when True (quotes-only sources) a BBO row replaces its whole side by that one level.
* TRADE rows do not touch the book.

Outputs are integer ticks; an empty side is ``NO_BID`` / ``NO_ASK``.
"""
from __future__ import annotations

import dataclasses

import numba
import numpy as np

from ..errors import InputError
from ...replay.book import BEST_ASK, BEST_BID, REPAIRS, clear_side, new_best, price_to_ticks, set_level, tick_of  # noqa: F401
from .events import BBO, CLEAR, DEPTH, SNAPSHOT

NO_BID = np.iinfo(np.int64).min // 4
NO_ASK = np.iinfo(np.int64).max // 4
MAX_BOOK_TICKS = 50_000_000


@dataclasses.dataclass
class BookReplay:
    """Result of :func:`replay_book`.

    Attributes:
        order: indices into the input table, in the order the events were applied (built on
            first use when that is the table's own order; :meth:`take` avoids it).
        best_bid, best_ask: best ticks after each applied event (aligned with ``order``).
        sample_ts: the sample times (ns) on the chosen clock.
        bid_ticks, bid_qty, ask_ticks, ask_qty: ``[samples, levels]`` book tops after every event
            stamped ``<= sample_ts`` (ticks; qty in instrument units; missing levels have tick
            NO_BID/NO_ASK and qty 0).
        crossed_repairs: how many times a crossing update deleted stale opposite levels.
    """

    sort_order: np.ndarray | None  # None: the table's own order
    best_bid: np.ndarray
    best_ask: np.ndarray
    sample_ts: np.ndarray
    bid_ticks: np.ndarray
    bid_qty: np.ndarray
    ask_ticks: np.ndarray
    ask_qty: np.ndarray
    crossed_repairs: int
    n_events: int

    @property
    def order(self) -> np.ndarray:
        return np.arange(self.n_events) if self.sort_order is None else self.sort_order

    def take(self, column: np.ndarray) -> np.ndarray:
        """``column`` (of the input table) in the order the events were applied."""
        return column if self.sort_order is None else column[self.sort_order]


@numba.njit(cache=True, nogil=True)  # nogil: a synthetic piece can be generated meanwhile
def _replay(kinds, sides, ticks, qtys, ts, base_tick, n_ticks, half_lot, use_bbo, sample_ts, n_levels):
    bid_q = np.zeros(n_ticks, np.float64)
    ask_q = np.zeros(n_ticks, np.float64)
    best = new_best(n_ticks)  # indices into the arrays; -1 / n_ticks = empty
    best_bid = -1
    best_ask = n_ticks
    n = kinds.shape[0]
    out_bid = np.empty(n, np.int64)
    out_ask = np.empty(n, np.int64)
    n_samples = sample_ts.shape[0]
    s_bid_t = np.full((n_samples, n_levels), NO_BID, np.int64)
    s_ask_t = np.full((n_samples, n_levels), NO_ASK, np.int64)
    s_bid_q = np.zeros((n_samples, n_levels), np.float64)
    s_ask_q = np.zeros((n_samples, n_levels), np.float64)
    sample = 0
    for i in range(n + 1):
        # Record samples whose time is before this event (events stamped <= sample are applied).
        while sample < n_samples and (i == n or ts[i] > sample_ts[sample]):
            k = 0
            j = best_bid
            while k < n_levels and j >= 0:
                if bid_q[j] > 0.0:
                    s_bid_t[sample, k] = j + base_tick
                    s_bid_q[sample, k] = bid_q[j]
                    k += 1
                j -= 1
            k = 0
            j = best_ask
            while k < n_levels and j < n_ticks:
                if ask_q[j] > 0.0:
                    s_ask_t[sample, k] = j + base_tick
                    s_ask_q[sample, k] = ask_q[j]
                    k += 1
                j += 1
            sample += 1
        if i == n:
            break
        kind = kinds[i]
        side = sides[i]
        if kind == DEPTH or kind == SNAPSHOT or (kind == BBO and use_bbo):
            if kind == BBO:
                # A quote replaces its whole side by one level.
                clear_side(bid_q, ask_q, best, side, 0, True)
            set_level(bid_q, ask_q, best, side, ticks[i] - base_tick, qtys[i], half_lot)
        elif kind == CLEAR:
            clear_side(bid_q, ask_q, best, side, ticks[i] - base_tick, ticks[i] == NO_BID)
        best_bid = best[BEST_BID]
        best_ask = best[BEST_ASK]
        out_bid[i] = best_bid + base_tick if best_bid >= 0 else NO_BID
        out_ask[i] = best_ask + base_tick if best_ask < n_ticks else NO_ASK
    return out_bid, out_ask, s_bid_t, s_bid_q, s_ask_t, s_ask_q, best[REPAIRS]


@numba.njit(cache=True, nogil=True)
def _is_sorted(ts):
    for i in range(1, ts.shape[0]):
        if ts[i] < ts[i - 1]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def has_depth(kinds):
    """True if any row is a DEPTH or SNAPSHOT row."""
    for i in range(kinds.shape[0]):
        if kinds[i] == DEPTH or kinds[i] == SNAPSHOT:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _book_ticks(kinds, prices, tick_size, use_bbo):
    """Ticks of the rows that carry one (book rows and CLEAR up to a finite price; NO_BID for
    the others), and the lowest and highest tick of the book rows (``hi < lo``: none)."""
    n = kinds.shape[0]
    ticks = np.empty(n, np.int64)
    lo = NO_ASK
    hi = NO_BID
    for i in range(n):
        kind = kinds[i]
        book = kind == DEPTH or kind == SNAPSHOT or (kind == BBO and use_bbo)
        p = prices[i]
        if (book or kind == CLEAR) and np.isfinite(p):
            t = tick_of(p, tick_size)
            ticks[i] = t
            if book:
                lo = min(lo, t)
                hi = max(hi, t)
        else:
            ticks[i] = NO_BID
            if book:  # unvalidated input: the span check refuses the book
                lo = NO_BID
                hi = NO_ASK
    return ticks, lo, hi


@numba.njit(cache=True, nogil=True, inline="always")
def _changes_book(kind, has_depth):
    # the rows that change the book: depth, snapshot and clear rows, or the quotes of a
    # quotes-only source
    if has_depth:
        return kind == DEPTH or kind == SNAPSHOT or kind == CLEAR
    return kind == BBO or kind == CLEAR


@numba.njit(cache=True, nogil=True)
def book_change_times(kinds, ts, has_depth):
    """Times (sorted) of the rows that change the book: DEPTH, SNAPSHOT and CLEAR rows, or BBO
    and CLEAR rows for a quotes-only source (``has_depth`` False)."""
    out = np.empty(kinds.shape[0], np.int64)
    n = 0
    ordered = True
    for i in range(kinds.shape[0]):
        if _changes_book(kinds[i], has_depth):
            out[n] = ts[i]
            if n and out[n] < out[n - 1]:
                ordered = False
            n += 1
    out = out[:n].copy()
    if not ordered:
        out.sort()
    return out


@numba.njit(cache=True, nogil=True)
def cut_candidates(local_ts, exch_ts, kinds, hi, has_depth, exch_too, limit):
    """Up to ``limit`` places ``k`` (latest first, ``1 <= k <= min(hi, n - 1)``) where an event
    table can be cut between rows ``k - 1`` and ``k``: the local time steps there, row ``k - 1``
    changes the book, and (``exch_too``) every row before the cut is also before every row after
    it on the exchange clock."""
    n = local_ts.shape[0]
    k_max = min(hi, n - 1)
    out = np.empty(max(0, min(limit, k_max)), np.int64)
    if k_max < 1:
        return out[:0]
    before_max = np.empty(k_max, np.int64)  # max(exch_ts[:k]) at k - 1
    running = exch_ts[0]
    for i in range(k_max):
        running = max(running, exch_ts[i])
        before_max[i] = running
    after_min = exch_ts[n - 1]
    for k in range(n - 1, k_max, -1):
        after_min = min(after_min, exch_ts[k])
    found = 0
    for k in range(k_max, 0, -1):
        after_min = min(after_min, exch_ts[k])
        if found >= limit:
            break
        if local_ts[k] <= local_ts[k - 1] or not _changes_book(kinds[k - 1], has_depth):
            continue
        if exch_too and before_max[k - 1] >= after_min:
            continue
        out[found] = k
        found += 1
    return out[:found]


def replay_book(
    table: np.ndarray,
    tick_size: float,
    lot_size: float,
    *,
    clock: str = "local",
    sample_ts: np.ndarray | None = None,
    n_levels: int = 20,
    use_bbo: bool | None = None,
    source: str = "",
) -> BookReplay:
    """Replay the book of an event table on the ``"local"`` or ``"exch"`` clock.

    Args:
        table: event table (``EVENT_DTYPE``); any order, it is stably sorted by the clock.
        tick_size, lot_size: instrument tick (price units) and lot (qty units).
        clock: ``"local"`` (what the bot sees, by ``local_ts``) or ``"exch"`` (the exchange's
            book, by ``exch_ts``).
        sample_ts: sorted times (ns, same clock) at which to record the top ``n_levels``.
        use_bbo: apply BBO rows as the book; default: only when the table has no depth rows.
    """
    if clock not in ("local", "exch"):
        raise ValueError(f"clock must be 'local' or 'exch', got {clock!r}")
    ts_name = "local_ts" if clock == "local" else "exch_ts"
    # Tables are usually sorted on the clock already (local_ts always; exch_ts for in-order
    # feeds): then the stable sort is the identity and nothing is gathered.  The columns go to
    # numba as strided views of the table, without copies.
    order = None
    if not _is_sorted(table[ts_name]):
        order = np.argsort(table[ts_name], kind="stable")
        table = table[order]
    kinds, prices = table["kind"], table["price"]
    if use_bbo is None:
        use_bbo = not has_depth(kinds)
    ticks, lo, hi = _book_ticks(kinds, prices, float(tick_size), bool(use_bbo))
    if hi >= lo:
        base_tick, n_ticks = int(lo), int(hi - lo + 1)
    else:
        base_tick, n_ticks = 0, 1
    if n_ticks > MAX_BOOK_TICKS:
        raise InputError(
            f"book spans {n_ticks:,} ticks (prices {lo * tick_size} .. {hi * tick_size}); "
            "tick_size too small or stray prices in the data",
            source=source,
        )
    samples = np.asarray(sample_ts if sample_ts is not None else np.empty(0, np.int64), dtype=np.int64)
    if len(samples) > 1 and np.any(np.diff(samples) < 0):
        raise ValueError("sample_ts must be sorted")
    out = _replay(kinds, table["side"], ticks, table["qty"], table[ts_name], base_tick, n_ticks, 0.5 * lot_size,
                  bool(use_bbo), samples, int(n_levels))
    best_bid, best_ask, bid_t, bid_q, ask_t, ask_q, repairs = out
    return BookReplay(order, best_bid, best_ask, samples, bid_t, bid_q, ask_t, ask_q, int(repairs), len(ticks))
