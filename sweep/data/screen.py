"""Screening a reader's rows for the damage real files get: one implausible timestamp, one price
off the tick grid.  Shared by every reader, so that each class of damage gets the same answer.

An *isolated* bad row is dropped with a warning naming its line (or row) -- a documented
repair: one bad timestamp must not shift the clock correction by years or stretch the decision
grid over them, and one stray price must not halve the inferred tick.  Damage on more than
``MAX_BAD_SHARE`` of the rows is not a stray row but a wrong unit, clock or file: the reader
stops with an error instead.

Timestamps (ns):

* **Feed latency** ``local_ts - exch_ts``: a row more than ``EARLY_LIMIT_NS`` below the median
  (it arrived before it happened, by seconds) or more than ``LATE_LIMIT_NS`` above it is
  implausible against the others.  Real captures stay far inside (the samples: at most 0.2 s
  above the median on the Binance captures, 2.3 s on the Tardis quotes); the clock offset
  between the machines is one constant and is removed separately.
* **Local clock** (file order): a value more than ``JUMP_NS`` ahead of (or behind) both its
  neighbouring values leaves the timeline and comes back: implausible.  The first or last value
  more than ``END_GAP_NS`` away from the rest of the file is too (it alone would set the span).
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from ..errors import InputError

EARLY_LIMIT_NS = 5_000_000_000
LATE_LIMIT_NS = 60_000_000_000
JUMP_NS = 1_000_000_000
END_GAP_NS = 3_600_000_000_000
#: more bad rows than this share is not one bad row but a broken file: stop
MAX_BAD_SHARE = 0.01
#: share of distinct prices allowed off the inferred tick grid; with at least
#: ``TICK_MIN_PRICES_FOR_ONE`` distinct prices one is always allowed (one stray price among a
#: hundred on a coarser grid is no evidence of a finer tick: a finer tick shows in most prices)
TICK_OUTLIER_SHARE = 1e-3
TICK_MIN_PRICES_FOR_ONE = 100
#: a source (a merged file, the book) with no update for this long is stale (ns)
STALE_AFTER_NS = 60_000_000_000


def feed_latency_outliers(latency_ns: np.ndarray) -> np.ndarray:
    """Bool mask: feed latency (ns) implausible against the median of all of them."""
    latency_ns = np.asarray(latency_ns, np.int64)
    if len(latency_ns) == 0:
        return np.zeros(0, bool)
    center = int(np.median(latency_ns))
    return (latency_ns < center - EARLY_LIMIT_NS) | (latency_ns > center + LATE_LIMIT_NS)


def clock_spikes(ts: np.ndarray) -> np.ndarray:
    """Bool mask (file order) of timestamps that leave the timeline and come back, or that sit
    alone more than ``END_GAP_NS`` before/after the rest.  Runs of equal values are judged as
    one (a multi-row message shares its timestamp)."""
    ts = np.asarray(ts, np.int64)
    n = len(ts)
    if n < 3:
        return np.zeros(n, bool)
    starts = np.concatenate(([0], np.flatnonzero(ts[1:] != ts[:-1]) + 1))
    vals = ts[starts]
    bad_group = np.zeros(len(vals), bool)
    if len(vals) >= 3:
        prev, cur, nxt = vals[:-2], vals[1:-1], vals[2:]
        bad_group[1:-1] = (((cur - prev > JUMP_NS) & (cur - nxt > JUMP_NS))
                           | ((prev - cur > JUMP_NS) & (nxt - cur > JUMP_NS)))
    if len(vals) >= 2:
        bad_group[0] |= abs(int(vals[1]) - int(vals[0])) > END_GAP_NS
        bad_group[-1] |= abs(int(vals[-1]) - int(vals[-2])) > END_GAP_NS
    lengths = np.diff(np.concatenate((starts, [n])))
    return np.repeat(bad_group, lengths)


def timestamp_outliers(exch_ts: np.ndarray, local_ts: np.ndarray, has_exch: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(bad, why)`` for rows in file order: ``why`` 1 = local clock spike, 2 = feed latency
    out of line.  ``has_exch``: rows whose ``exch_ts`` is real (default all)."""
    local_ts = np.asarray(local_ts, np.int64)
    spike = clock_spikes(local_ts)
    real = np.ones(len(local_ts), bool) if has_exch is None else np.asarray(has_exch, bool)
    judged = real & ~spike
    late = np.zeros(len(local_ts), bool)
    late[judged] = feed_latency_outliers(local_ts[judged] - np.asarray(exch_ts, np.int64)[judged])
    why = np.where(spike, 1, np.where(late, 2, 0)).astype(np.int8)
    return why > 0, why


def describe_timestamp(why: int, exch_ts: int, local_ts: int, median_latency_ns: int | None) -> str:
    """What is wrong with one row's timestamps, in words."""
    if why == 1:
        return f"local time {local_ts} ns is off the timeline of the rows around it"
    lat = local_ts - exch_ts
    off = (lat - (median_latency_ns or 0)) / 1e9
    return (f"exchange time {exch_ts} ns and local time {local_ts} ns are {lat / 1e9:+.3f} s apart, "
            f"{off:+.3f} s from the file's typical feed latency")


def drop_or_stop(bad: np.ndarray, n_total: int, where: Callable[[int], dict], what: str, source: str,
                 reason: Callable[[int], str], unit: str = "row") -> None:
    """Warn about the ``unit``s (rows, lines) of ``bad`` that a reader drops, or raise when they
    are more than ``MAX_BAD_SHARE`` of ``n_total``.

    ``where(i)`` gives the ``line=``/``row=`` of index ``i`` for :class:`InputError`;
    ``reason(i)`` says what is wrong with it; ``what`` names the damage ("an implausible
    timestamp").
    """
    hits = np.flatnonzero(bad)
    if not len(hits):
        return
    first = int(hits[0])
    share = len(hits) / max(n_total, 1)
    if share > MAX_BAD_SHARE:
        raise InputError(f"{len(hits):,} of {n_total:,} {unit}s have {what} ({100 * share:.1f} %): not a stray "
                         f"{unit} but a wrong unit, clock or file; the first: {reason(first)}",
                         source=source, **where(first))
    at = ", ".join(f"{k} {v}" for k, v in where(first).items())
    more = f"; {len(hits) - 1} more {unit}(s) like it dropped too" if len(hits) > 1 else ""
    warnings.warn(f"{source} ({at}): {unit} dropped, {what}: {reason(first)}{more}", UserWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# Tick grid


def _on_decimals(values: np.ndarray, decimals: int) -> np.ndarray:
    scaled = values * 10.0**decimals
    return np.abs(scaled - np.round(scaled)) < 1e-9 * np.maximum(1.0, np.abs(scaled)) + 1e-6


def infer_tick(prices: np.ndarray, max_decimals: int = 10, outlier_share: float = TICK_OUTLIER_SHARE
               ) -> tuple[float, float]:
    """``(tick, anchor)``: the coarsest decimal price grid ``anchor + k * tick`` (price units) that
    all but a share ``outlier_share`` of the distinct prices sit on.  With ``outlier_share=0``
    every price must fit: the strict rule of :func:`mmsweep.sweep.data.events.infer_tick_size`.

    The strict step is the gcd of the price differences, which one stray price can halve (or cut
    to a tenth); so the step is then widened by 2, 3, 4, 5, 10, 20, 25, 50 or 100 as far as the
    allowed outliers permit."""
    p = np.unique(np.asarray(prices, np.float64))
    p = p[np.isfinite(p) & (p > 0)]
    if len(p) == 0:
        raise InputError("cannot infer a tick size from no prices")
    allowed = int(outlier_share * len(p))
    if outlier_share > 0 and len(p) >= TICK_MIN_PRICES_FOR_ONE:
        allowed = max(allowed, 1)
    for decimals in range(max_decimals + 1):
        on = _on_decimals(p, decimals)
        budget = allowed - int((~on).sum())
        if budget < 0:
            continue
        ints = np.round(p[on] * 10.0**decimals).astype(np.int64)
        scale = 10.0**decimals
        if len(ints) < 2:
            return 1.0 / scale, float(p[on][0]) if len(ints) else float(p[0])
        rel = ints - ints[0]
        step = int(np.gcd.reduce(rel)) or 1
        best, anchor = step, int(ints[0])
        for factor in (2, 3, 4, 5, 10, 20, 25, 50, 100):
            off, residue = _off_step(rel, step * factor)
            if off <= budget and step * factor > best:
                best, anchor = step * factor, int(ints[0]) + residue
        return float(best) / scale, float(anchor) / scale
    raise InputError(f"prices have more than {max_decimals} decimals; give tick_size explicitly")


def _off_step(rel: np.ndarray, step: int) -> tuple[int, int]:
    """How many values lie off the most common residue class of ``step``, and that residue."""
    residues, counts = np.unique(rel % step, return_counts=True)
    top = int(np.argmax(counts))
    return int(len(rel) - counts[top]), int(residues[top])


def off_grid(prices: np.ndarray, tick: float, anchor: float) -> np.ndarray:
    """Bool mask: finite prices not on the grid ``anchor + k * tick``."""
    k = (np.asarray(prices, np.float64) - anchor) / tick
    return np.isfinite(k) & (np.abs(k - np.round(k)) > 1e-6 + 1e-9 * np.abs(k))


def tick_and_strays(prices: np.ndarray, priced: np.ndarray) -> tuple[float, np.ndarray]:
    """The inferred tick (:func:`infer_tick`) of ``prices[priced]`` and the bool mask of the
    priced rows whose price is off it (the readers drop them, see :func:`drop_or_stop`)."""
    tick, anchor = infer_tick(prices[priced])
    return tick, priced & off_grid(prices, tick, anchor)
