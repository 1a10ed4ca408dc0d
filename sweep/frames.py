"""Events -> fixed-interval frames, the only input the sweep kernels see (DESIGN §2.2).

Built once per (data, interval, latency, features) and cached on disk by a content hash.

Clocks and windows.  Decision ``t`` happens at ``local_ts[t]`` (ns, the bot's clock) and sees
the book after every event with ``local_ts <= local_ts[t]``.  Orders it sends (and cancels)
reach the exchange at ``ack_ts[t] = local_ts[t] + entry_latency(local_ts[t])``; arrivals keep
their sending order (FIFO, as a network link does), so ``ack_ts`` is made non-decreasing.

Frame row ``r`` covers the exchange-clock interval ``(local_ts[r], local_ts[r+1]]`` split in two
windows at ``split_ts[r]``:

* window a = ``(local_ts[r], split_ts[r]]``: the orders of decision ``r - lag_a[r]`` are live;
* window b = ``(split_ts[r], local_ts[r+1]]``: the orders of decision ``r - lag_b[r]`` are live.

``split_ts[r]`` is the arrival time of the last decision that arrives inside the row (or
``local_ts[r+1]`` if none arrives, leaving window b empty).  With an entry latency shorter than
the interval this is exactly DESIGN's layout: ``split_ts[r] = ack_ts[r]``, ``lag_a = 1`` (orders
being cancelled are still exposed) and ``lag_b = 0`` (new and kept orders).  Longer latencies
give larger lags: orders stay pending across rows.  If several decisions arrive inside one row
(only with a latency that drops faster than time passes), the earlier ones are superseded
before they could rest; they are counted in ``meta['superseded_arrivals']``.

Fill thresholds, per window, in integer ticks (strict cross, hftbacktest's "accelerated"
contract): ``buy_fill = min(lowest exchange best ask in the window, lowest seller-aggressor
trade tick + 1)``; a resting buy at tick ``p`` fills iff ``p >= buy_fill``.  Symmetrically
``sell_fill = max(highest best bid, highest buyer-aggressor trade tick - 1)``; a sell at ``p``
fills iff ``p <= sell_fill``.  The best price in force at a window's start counts.  Best prices
are those after each whole message (all rows sharing an ``exch_ts``): the states between the rows
of one depth message are not real and would show phantom moves.  An empty
window gets ``NO_FILL_BUY`` / ``NO_FILL_SELL``.  Trades with unknown aggressor side fill nothing.

``bid_ack[r]``, ``ask_ack[r]``: the exchange best at ``split_ts[r]`` (every event with
``exch_ts <= split_ts[r]`` applied), for the post-only check of the arriving orders: a buy at
``p`` is rejected iff ``p >= ask_ack``, a sell iff ``p <= bid_ack``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numba
import numpy as np

from .data.book import NO_ASK, NO_BID, book_change_times, has_depth, price_to_ticks, replay_book
from .data.events import TRADE, Events, Instrument
from .data.screen import STALE_AFTER_NS
from .errors import InputError
from .features import FeatureSpec, compute_feature
from .limits import check_fits

FRAMES_VERSION = 3
NO_FILL_BUY = NO_ASK  # a buy fills iff tick >= buy_fill: never
NO_FILL_SELL = NO_BID  # a sell fills iff tick <= sell_fill: never


@dataclasses.dataclass(frozen=True)
class LatencySpec:
    """Order entry latency (local -> exchange).

    Attributes:
        entry_ns: constant entry latency in ns (used when ``rows`` is None).
        rows: order-latency rows (structured array with ``req_ts, exch_ts`` int64 ns, as in
            hftbacktest's order-latency files), linearly interpolated at each decision time; a
            row with ``exch_ts <= 0`` records a rejection: decisions between it and its
            neighbours are flagged in ``entry_rejected``.
        source: where ``rows`` came from (for the manifest and cache key).

    Response latency is not part of the frames: the kernel applies fills at once (DESIGN §3).
    """

    entry_ns: int = 10_000_000
    rows: Any = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.rows is None and not (isinstance(self.entry_ns, (int, np.integer)) and self.entry_ns >= 0):
            raise InputError(f"entry latency must be a non-negative integer of ns, got {self.entry_ns!r}",
                             key="latency.entry_ns")

    def describe(self) -> dict[str, Any]:
        if self.rows is None:
            return {"entry_ns": int(self.entry_ns)}
        digest = hashlib.sha256(np.ascontiguousarray(self.rows).tobytes()).hexdigest()[:16]
        return {"rows_sha256": digest, "rows": int(len(self.rows)), "source": self.source}

    def entry(self, local_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entry latency (ns, int64) at each time and a flag for rejected requests."""
        local_ts = np.asarray(local_ts, dtype=np.int64)
        if self.rows is None:
            return np.full(local_ts.shape, int(self.entry_ns), np.int64), np.zeros(local_ts.shape, bool)
        req = np.asarray(self.rows["req_ts"], dtype=np.int64)
        exch = np.asarray(self.rows["exch_ts"], dtype=np.int64)
        if len(req) == 0:
            raise InputError("order-latency table is empty", source=self.source)
        accepted = exch > 0
        if not np.any(accepted):
            raise InputError("every order-latency row is a rejection", source=self.source)
        self._check_covers(req, local_ts)
        lat = np.interp(local_ts, req[accepted], (exch - req)[accepted].astype(np.float64))
        # A request is rejected when the bracketing rows include a recorded rejection.
        idx = np.clip(np.searchsorted(req, local_ts, side="right") - 1, 0, len(req) - 1)
        nxt = np.minimum(idx + 1, len(req) - 1)
        rejected = (~accepted[idx] | ~accepted[nxt]) & (local_ts >= req[0]) & (local_ts <= req[-1])
        return np.maximum(np.trunc(lat), 0).astype(np.int64), rejected

    def _check_covers(self, req: np.ndarray, local_ts: np.ndarray) -> None:
        """The rows must span the decisions: beyond them the latency would be extrapolated (held
        flat) from another time -- a file of another day or session is an error, not a guess.
        Allowed slack: 10 row spacings, at least 1 s (a file sampled every second starts a
        moment after the data)."""
        if len(local_ts) == 0:
            return
        spacing = float(np.median(np.diff(req))) if len(req) > 1 else 0.0
        slack = max(1_000_000_000, int(10 * spacing))
        outside = (local_ts < req[0] - slack) | (local_ts > req[-1] + slack)
        if outside.any():
            raise InputError(
                f"the order-latency rows cover {_utc(int(req[0]))} to {_utc(int(req[-1]))} UTC but "
                f"{int(outside.sum()):,} of {len(local_ts):,} decisions ({_utc(int(local_ts[0]))} to "
                f"{_utc(int(local_ts[-1]))} UTC) lie more than {slack / 1e9:.1f} s outside them: a latency file of "
                "another day or session? (it would be extrapolated)", source=self.source)


@dataclasses.dataclass(frozen=True)
class FrameSpec:
    """How to build frames.

    Attributes:
        interval_ns: decision interval (ns); default 100 ms.
        latency: entry latency model.
        features: feature columns (see :mod:`mmsweep.sweep.features`).
        start_ns, end_ns: optional bounds of the decision grid (local clock, ns).
        stale_after_ns: a book (quoted or signal instrument) unchanged for longer than this at a
            decision is stale there: the quoted book's rows get ``stale = True``, and a warning
            says how many; a trade stream that starts or ends this much inside the grid too.
        on_stale: ``warn`` (default) or ``error`` (stop instead of warning).  Not part of the
            cache key: the frames are the same.
        queue_levels: ``K > 0`` adds the queue fill model's columns for the K ticks nearest the
            touch (:mod:`mmsweep.sweep.queue_frames`); 0 (default) adds none.
    """

    interval_ns: int = 100_000_000
    latency: LatencySpec = LatencySpec()
    features: tuple[FeatureSpec, ...] = ()
    start_ns: int | None = None
    end_ns: int | None = None
    stale_after_ns: int = STALE_AFTER_NS
    on_stale: str = "warn"
    queue_levels: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.interval_ns, (int, np.integer)) and self.interval_ns > 0):
            raise InputError(f"interval must be a positive number of ns, got {self.interval_ns!r}", key="interval")
        if not (isinstance(self.stale_after_ns, (int, np.integer)) and self.stale_after_ns > 0):
            raise InputError(f"stale_after must be a positive number of ns, got {self.stale_after_ns!r}",
                             key="stale_after")
        if self.on_stale not in ON_STALE:
            raise InputError(f"on_stale must be one of {', '.join(ON_STALE)}, got {self.on_stale!r}", key="on_stale")
        if self.start_ns is not None and self.end_ns is not None and self.end_ns <= self.start_ns:
            raise InputError(f"end ({self.end_ns}) must be after start ({self.start_ns})", key="end")

    def describe(self) -> dict[str, Any]:
        return {
            "interval_ns": int(self.interval_ns),
            "latency": self.latency.describe(),
            "features": [dataclasses.asdict(f) for f in self.features],
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "stale_after_ns": int(self.stale_after_ns),
            # only when set, so frames without queue columns keep their cache key
            **({"queue_levels": int(self.queue_levels)} if self.queue_levels else {}),
        }


ROW_COLUMNS = (
    "local_ts", "split_ts", "bid", "ask", "bid_ack", "ask_ack", "lag_a", "lag_b",
    "buy_fill_a", "sell_fill_a", "buy_fill_b", "sell_fill_b",
    "sell_trade_low_a", "sell_trade_low_qty_a", "buy_trade_high_a", "buy_trade_high_qty_a",
    "sell_trade_low_b", "sell_trade_low_qty_b", "buy_trade_high_b", "buy_trade_high_qty_b",
    "ack_ts", "entry_rejected", "stale",
)
ON_STALE = ("warn", "error")


@dataclasses.dataclass
class Frames:
    """The frame table: one row per decision time.

    ``columns`` holds the row columns (``ROW_COLUMNS``; ticks are int64, timestamps int64 ns,
    ``*_qty`` in instrument qty units), ``features`` is ``float64 [T, K]`` with
    ``feature_names``.  ``meta`` records the build (cache key, counts, warm-up rows).
    """

    columns: dict[str, np.ndarray]
    features: np.ndarray
    feature_names: list[str]
    instrument: Instrument
    spec: dict[str, Any]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.columns["local_ts"])

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.columns:
            return self.columns[name]
        if name in self.feature_names:
            return self.features[:, self.feature_names.index(name)]
        raise KeyError(name)

    def mid_price(self) -> np.ndarray:
        """Local mid at each decision (price units)."""
        return (self.columns["bid"] + self.columns["ask"]) * 0.5 * self.instrument.tick_size


@numba.njit(cache=True)
def _window_extremes(ev_ts, ev_best_bid, ev_best_ask, tr_ts, tr_tick, tr_side, tr_qty, bounds):
    """Per window ``(bounds[k], bounds[k+1]]`` on the exchange clock: lowest best ask, highest
    best bid (both including the value in force at the window start), lowest seller-aggressor
    and highest buyer-aggressor trade tick and the qty traded at that tick."""
    n_win = bounds.shape[0] - 1
    min_ask = np.full(n_win, NO_ASK, np.int64)
    max_bid = np.full(n_win, NO_BID, np.int64)
    sell_low = np.full(n_win, NO_ASK, np.int64)
    sell_low_qty = np.zeros(n_win, np.float64)
    buy_high = np.full(n_win, NO_BID, np.int64)
    buy_high_qty = np.zeros(n_win, np.float64)
    i = 0
    n_ev = ev_ts.shape[0]
    while i < n_ev and ev_ts[i] <= bounds[0]:
        i += 1
    j = 0
    n_tr = tr_ts.shape[0]
    while j < n_tr and tr_ts[j] <= bounds[0]:
        j += 1
    for k in range(n_win):
        lo = bounds[k]
        hi = bounds[k + 1]
        if hi <= lo:
            continue
        cur_ask = ev_best_ask[i - 1] if i > 0 else NO_ASK
        cur_bid = ev_best_bid[i - 1] if i > 0 else NO_BID
        a = cur_ask
        b = cur_bid
        while i < n_ev and ev_ts[i] <= hi:
            if ev_best_ask[i] < a:
                a = ev_best_ask[i]
            if ev_best_bid[i] > b:
                b = ev_best_bid[i]
            i += 1
        min_ask[k] = a
        max_bid[k] = b
        while j < n_tr and tr_ts[j] <= hi:
            p = tr_tick[j]
            if tr_side[j] < 0:
                if p < sell_low[k]:
                    sell_low[k] = p
                    sell_low_qty[k] = tr_qty[j]
                elif p == sell_low[k]:
                    sell_low_qty[k] += tr_qty[j]
            elif tr_side[j] > 0:
                if p > buy_high[k]:
                    buy_high[k] = p
                    buy_high_qty[k] = tr_qty[j]
                elif p == buy_high[k]:
                    buy_high_qty[k] += tr_qty[j]
            j += 1
    return min_ask, max_bid, sell_low, sell_low_qty, buy_high, buy_high_qty


def _value_at(ts: np.ndarray, values: np.ndarray, at: np.ndarray, empty: int) -> np.ndarray:
    """Step function: the value after every event with ts <= at."""
    idx = np.searchsorted(ts, at, side="right") - 1
    out = np.where(idx >= 0, values[np.maximum(idx, 0)], empty)
    return out.astype(np.int64)


def _arrivals(local_ts: np.ndarray, ack_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Split point and live-decision lags per row (see the module docstring)."""
    n_rows = len(local_ts) - 1
    # Decision d is live in row r's window a iff it is the last one with ack < local_ts[r]; one
    # arriving exactly at local_ts[r] (zero latency, or a latency a multiple of the interval)
    # arrives in row r, after an empty window a.
    live_a = np.searchsorted(ack_ts, local_ts[:-1], side="left") - 1
    # An arrival exactly at local_ts[r+1] belongs to the next row (its window a), not to an
    # empty window b here.
    live_end = np.searchsorted(ack_ts, local_ts[1:], side="left") - 1
    live_end = np.maximum(live_end, live_a)
    arrived = live_end > live_a
    split = np.where(arrived, ack_ts[np.maximum(live_end, 0)], local_ts[1:])
    rows = np.arange(n_rows)
    # -1 (nothing live yet) becomes a lag beyond the row index: the kernel treats it as "none".
    lag_a = rows - live_a
    lag_b = rows - np.where(arrived, live_end, live_a)
    # Decisions never live in any window: overtaken by a later one before they could rest.
    live = np.unique(np.concatenate([live_a[live_a >= 0], live_end[arrived]]))
    superseded = int(live[-1] - live[0] + 1 - len(live)) if len(live) else 0
    return split.astype(np.int64), lag_a.astype(np.int64), lag_b.astype(np.int64), superseded


def row_bytes(spec: FrameSpec, levels: int, n_views: int) -> int:
    """Bytes one decision row costs while frames are built (columns, both windows' extremes,
    the sampled books of every instrument, features), a generous estimate."""
    return 8 * (len(ROW_COLUMNS) + 24 + 4 * levels * n_views + 2 * len(spec.features))


def _decision_grid(events: Events, spec: FrameSpec, first_two_sided_ns: int, bytes_per_row: int) -> np.ndarray:
    local = events.table["local_ts"]
    start = max(first_two_sided_ns, spec.start_ns if spec.start_ns is not None else int(local[0]))
    end = min(int(local[-1]), spec.end_ns) if spec.end_ns is not None else int(local[-1])
    start = -(-start // spec.interval_ns) * spec.interval_ns  # align up to the interval
    if end - start < 2 * spec.interval_ns:
        raise InputError(
            f"data span after the book is first two-sided ({(end - start) / 1e9:.3f} s) is shorter than two "
            f"intervals of {spec.interval_ns / 1e9:g} s", source=events.source)
    n = (end - start) // spec.interval_ns + 1
    check_fits(float(n) * bytes_per_row,
               f"the decision grid ({n:,} rows of {spec.interval_ns / 1e6:g} ms over {(end - start) / 1e9:,.1f} s, "
               f"{_utc(start)} to {_utc(end)} UTC)",
               hint="Check the data's timestamps (data inspect), or use a longer interval", source=events.source)
    return start + np.arange(n, dtype=np.int64) * spec.interval_ns


def _utc(ns: int) -> str:
    import datetime as dt

    try:
        return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns"



def _local_view(events: Events, sample_ts: np.ndarray, levels: int) -> dict[str, np.ndarray]:
    inst = events.instrument
    rep = replay_book(events.table, inst.tick_size, inst.lot_size, clock="local", sample_ts=sample_ts,
                      n_levels=levels, source=events.source)
    bid = rep.bid_ticks[:, 0]
    ask = rep.ask_ticks[:, 0]
    two_sided = (bid != NO_BID) & (ask != NO_ASK)
    mid = np.where(two_sided, (bid + ask) * 0.5 * inst.tick_size, np.nan)
    trades = events.table[events.table["kind"] == TRADE]  # for trade-flow features, local clock
    trades = trades[np.argsort(trades["local_ts"], kind="stable")]
    return {"bid_ticks": rep.bid_ticks, "bid_qty": rep.bid_qty, "ask_ticks": rep.ask_ticks,
            "ask_qty": rep.ask_qty, "mid": mid, "two_sided": two_sided, "replay": rep, "sample_ts": sample_ts,
            "trade_ts": trades["local_ts"], "trade_side": trades["side"].astype(np.float64),
            "trade_qty": trades["qty"].astype(np.float64)}


def _forward_fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    idx = np.where(valid, np.arange(len(values)), 0)
    np.maximum.accumulate(idx, out=idx)
    return values[idx]


def cache_key(quoted: Events, spec: FrameSpec, signals: dict[str, Events]) -> str:
    """Content hash of everything that determines the frames."""
    from .codehash import code_digest

    h = hashlib.sha256()
    h.update(f"frames-v{FRAMES_VERSION}".encode())
    h.update(code_digest().encode())  # the builder's code: a change to it never serves stale frames
    for name, ev in [("", quoted)] + sorted(signals.items()):
        h.update(name.encode())
        h.update(json.dumps(dataclasses.asdict(ev.instrument), sort_keys=True).encode())
        h.update(np.ascontiguousarray(ev.table).tobytes())
    h.update(json.dumps(spec.describe(), sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    return Path(os.environ.get("MMSWEEP_CACHE", Path.home() / ".cache" / "mmsweep")) / "frames"


def build_frames(
    quoted: Events,
    spec: FrameSpec = FrameSpec(),
    signals: dict[str, Events] | None = None,
    *,
    cache_dir: str | os.PathLike | None | bool = None,
) -> Frames:
    """Build (or load from cache) the frames of ``quoted`` (the instrument the strategy quotes).

    Args:
        quoted: events of the quoted instrument.
        spec: interval, latency and features.
        signals: other instruments by name, for features with ``instrument: NAME``; their
            books are read on the same local clock at the same decision times.
        cache_dir: where to cache (default ``$MMSWEEP_CACHE/frames`` or ``~/.cache/mmsweep/frames``);
            ``False`` disables the cache.
    """
    signals = dict(signals or {})
    for feat in spec.features:
        if feat.instrument and feat.instrument not in signals:
            raise InputError(f"feature {feat.name} needs instrument {feat.instrument!r}; "
                             f"available: {sorted(signals) or 'none'}", key="features")
    key = cache_key(quoted, spec, signals)
    path = None
    if cache_dir is not False:
        path = Path(cache_dir if cache_dir not in (None, True) else default_cache_dir()) / f"{key}.npz"
        if path.exists():
            try:
                frames = load_frames(path)
                frames.meta["cache_hit"] = True
            except Exception as exc:  # a damaged cache entry is rebuilt, never trusted
                warnings.warn(f"frames cache {path} unreadable ({exc}); rebuilding", stacklevel=2)
            else:
                _report_staleness(frames, spec.on_stale)
                return frames
    frames = _build(quoted, spec, signals)
    frames.meta["cache_key"] = key
    frames.meta["cache_hit"] = False
    _report_staleness(frames, spec.on_stale)
    if path is not None:
        try:
            save_frames(frames, path)
            frames.meta["cache_path"] = str(path)
        except OSError as exc:  # the cache only saves time: the frames are good without it
            warnings.warn(f"frames cache {path.parent} is not writable ({exc.strerror or exc}); the frames are "
                          "not cached and will be built again next time", stacklevel=2)
    return frames


def _build(quoted: Events, spec: FrameSpec, signals: dict[str, Events]) -> Frames:
    inst = quoted.instrument
    table = quoted.table
    levels = max([f.depth_levels for f in spec.features if not f.instrument] + [1])

    # Local view once over every event time, to find when the book is first two-sided.
    probe = replay_book(table, inst.tick_size, inst.lot_size, clock="local", n_levels=1, source=quoted.source)
    local_sorted = probe.take(table["local_ts"])
    two_sided = (probe.best_bid != NO_BID) & (probe.best_ask != NO_ASK)
    if not np.any(two_sided):
        raise InputError("the book is never two-sided (no bid or no ask at any time)", source=quoted.source)
    n_views = 1 + len({f.instrument for f in spec.features if f.instrument})
    grid = _decision_grid(quoted, spec, int(local_sorted[np.argmax(two_sided)]), row_bytes(spec, levels, n_views))

    view = _local_view(quoted, grid, levels)
    bid = view["bid_ticks"][:, 0]
    ask = view["ask_ticks"][:, 0]
    gaps = ~view["two_sided"]
    if np.any(gaps):
        warnings.warn(f"{quoted.source}: local book one-sided at {int(gaps.sum())} decision times; "
                      "the last two-sided quote is carried forward", stacklevel=3)
        bid, ask = _forward_fill(bid, ~gaps), _forward_fill(ask, ~gaps)

    entry, rejected = spec.latency.entry(grid)
    ack = grid + entry
    fifo_delayed = int(np.sum(np.maximum.accumulate(ack) > ack))
    ack = np.maximum.accumulate(ack)
    split, lag_a, lag_b, superseded = _arrivals(grid, ack)

    # Exchange clock: best prices after every event, and trades.
    exch = replay_book(table, inst.tick_size, inst.lot_size, clock="exch", source=quoted.source)
    ev_ts = exch.take(table["exch_ts"])
    # Only the book after a whole message counts: rows sharing a timestamp are one atomic
    # update, and the states between its rows (bids are listed before asks) are not real.
    settled = np.append(ev_ts[1:] != ev_ts[:-1], True)
    ev_ts, ev_bid, ev_ask = ev_ts[settled], exch.best_bid[settled], exch.best_ask[settled]
    is_trade = table["kind"] == TRADE
    trades = table[is_trade]
    trades = trades[np.argsort(trades["exch_ts"], kind="stable")]
    bounds = np.empty(2 * (len(grid) - 1) + 1, np.int64)
    bounds[0::2] = grid
    bounds[1::2] = split
    ext = _window_extremes(ev_ts, ev_bid, ev_ask, trades["exch_ts"],
                           price_to_ticks(trades["price"], inst.tick_size), trades["side"].astype(np.int64),
                           trades["qty"].astype(np.float64), bounds)
    min_ask, max_bid, sell_low, sell_low_qty, buy_high, buy_high_qty = ext

    def thresholds(part: slice) -> tuple[np.ndarray, np.ndarray]:
        buy = np.minimum(min_ask[part], np.where(sell_low[part] == NO_ASK, NO_ASK, sell_low[part] + 1))
        sell = np.maximum(max_bid[part], np.where(buy_high[part] == NO_BID, NO_BID, buy_high[part] - 1))
        empty = bounds[1:][part] <= bounds[:-1][part]
        return np.where(empty, NO_FILL_BUY, buy), np.where(empty, NO_FILL_SELL, sell)

    a, b = slice(0, None, 2), slice(1, None, 2)
    buy_a, sell_a = thresholds(a)
    buy_b, sell_b = thresholds(b)
    n = len(grid) - 1
    columns = {
        "local_ts": grid[:-1],
        "split_ts": split,
        "bid": bid[:-1],
        "ask": ask[:-1],
        "bid_ack": _value_at(ev_ts, ev_bid, split, NO_BID),
        "ask_ack": _value_at(ev_ts, ev_ask, split, NO_ASK),
        "lag_a": lag_a,
        "lag_b": lag_b,
        "buy_fill_a": buy_a, "sell_fill_a": sell_a, "buy_fill_b": buy_b, "sell_fill_b": sell_b,
        "sell_trade_low_a": sell_low[a], "sell_trade_low_qty_a": sell_low_qty[a],
        "buy_trade_high_a": buy_high[a], "buy_trade_high_qty_a": buy_high_qty[a],
        "sell_trade_low_b": sell_low[b], "sell_trade_low_qty_b": sell_low_qty[b],
        "buy_trade_high_b": buy_high[b], "buy_trade_high_qty_b": buy_high_qty[b],
        "ack_ts": ack[:-1],
        "entry_rejected": rejected[:-1],
        "stale": _book_age(quoted, grid[:-1]) > spec.stale_after_ns,
    }
    if spec.queue_levels:
        from .queue_frames import build_queue_columns

        columns.update(build_queue_columns(table, inst, bounds, bid[:-1], ask[:-1], int(spec.queue_levels),
                                           source=quoted.source))
    assert all(len(v) == n for v in columns.values())

    names, cols, warmup = [], [], {}
    views = {None: view}
    for feat in spec.features:
        if feat.instrument not in views:
            other = signals[feat.instrument]
            need = max([f.depth_levels for f in spec.features if f.instrument == feat.instrument] + [1])
            views[feat.instrument] = _local_view(other, grid, need)
        src_view = views[feat.instrument]
        tick = (signals[feat.instrument].instrument.tick_size if feat.instrument else inst.tick_size)
        with np.errstate(invalid="ignore", divide="ignore"):
            col = compute_feature(feat, src_view, spec.interval_ns, tick)[:-1]
        bad = ~np.isfinite(col)
        warmup[feat.name] = int(bad.sum())
        names.append(feat.name)
        cols.append(np.where(bad, 0.0, col))
    features = np.stack(cols, axis=1) if cols else np.zeros((n, 0))

    meta = {
        "rows": n,
        "source": quoted.source,
        "signals": {k: v.source for k, v in signals.items()},
        "one_sided_rows": int(gaps[:-1].sum()),
        "fifo_delayed_acks": fifo_delayed,
        "superseded_arrivals": superseded,
        "entry_rejected_rows": int(rejected[:-1].sum()),
        "warmup_rows": warmup,
        "max_lag": int(max(lag_a.max(), lag_b.max())) if n else 0,
        "crossed_repairs_local": int(view["replay"].crossed_repairs),
        "crossed_repairs_exch": int(exch.crossed_repairs),
        "stale_rows": int(columns["stale"].sum()),
        "stale_warnings": _stale_warnings(quoted, signals, grid[:-1], columns["stale"], spec),
    }
    return Frames(columns, features, names, inst, spec.describe(), meta)


def _book_rows(events: Events) -> np.ndarray:
    """Local times (sorted) of the rows that change the book the frames see: depth, snapshot
    and clear rows, or the quotes of a quotes-only source."""
    kinds = events.table["kind"]
    return book_change_times(kinds, events.table["local_ts"], has_depth(kinds))


def _book_age(events: Events, at: np.ndarray) -> np.ndarray:
    """ns since the book last changed (local clock) at each time of ``at``."""
    ts = _book_rows(events)
    idx = np.searchsorted(ts, at, side="right") - 1
    return np.where(idx >= 0, at - ts[np.maximum(idx, 0)], np.iinfo(np.int64).max)


def _stale_warnings(quoted: Events, signals: dict[str, Events], grid: np.ndarray, stale: np.ndarray,
                    spec: FrameSpec) -> list[str]:
    """One line per stale source over the decision grid: the quoted book (rows flagged), each
    signal instrument's book, and a trade stream that starts late, ends early or is absent."""
    limit = spec.stale_after_ns
    n = len(grid)
    out = []

    def book(name: str, events: Events, mask: np.ndarray) -> None:
        if mask.any():
            first = int(grid[np.argmax(mask)])
            out.append(f"{events.source}: the {name} book has not changed for more than {limit / 1e9:g} s at "
                       f"{int(mask.sum()):,} of {n:,} decision rows ({100 * mask.mean():.1f} %, the first at "
                       f"{_utc(first)} UTC); its input is stale there")

    book("quoted", quoted, stale)
    for name, events in sorted(signals.items()):
        book(f"'{name}' signal", events, _book_age(events, grid) > limit)
    trades = quoted.table["local_ts"][quoted.table["kind"] == TRADE]
    if n and len(trades) == 0:
        out.append(f"{quoted.source}: no trades at all: fills can only come from the book crossing an order")
    elif n:
        late = int(trades.min()) - int(grid[0])
        early = int(grid[-1]) - int(trades.max())
        if late > limit or early > limit:
            out.append(f"{quoted.source}: trades cover {_utc(int(trades.min()))} to {_utc(int(trades.max()))} UTC, "
                       f"the decisions {_utc(int(grid[0]))} to {_utc(int(grid[-1]))} UTC: outside the trades, fills "
                       "can only come from the book crossing an order")
    return out


def _report_staleness(frames: Frames, on_stale: str) -> None:
    """Warn about (or, with ``on_stale='error'``, stop at) the stale sources found at build."""
    found = frames.meta.get("stale_warnings") or []
    if found and on_stale == "error":
        raise InputError(found[0] + " (on_stale: error)", key="on_stale")
    for message in found:
        warnings.warn(message, UserWarning, stacklevel=3)


def save_frames(frames: Frames, path: str | os.PathLike) -> Path:
    """Atomic write (temp file + rename): a crash never leaves a half-written cache entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.partial")
    header = {"instrument": dataclasses.asdict(frames.instrument), "spec": frames.spec,
              "meta": {k: v for k, v in frames.meta.items() if k != "cache_hit"},
              "feature_names": frames.feature_names, "version": FRAMES_VERSION}
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, header=np.array(json.dumps(header, default=str)), features=frames.features,
                     **{f"col_{k}": v for k, v in frames.columns.items()})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # nothing half-written is left behind (a full disk, a kill before the rename)
    return path


def load_frames(path: str | os.PathLike) -> Frames:
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(str(npz["header"]))
        if header.get("version") != FRAMES_VERSION:
            raise InputError(f"frames version {header.get('version')} != {FRAMES_VERSION}", source=str(path))
        columns = {k[4:]: npz[k] for k in npz.files if k.startswith("col_")}
        features = npz["features"]
    missing = set(ROW_COLUMNS) - set(columns)
    if missing:
        raise InputError(f"frames file lacks columns {sorted(missing)}", source=str(path))
    return Frames(columns, features, header["feature_names"], Instrument(**header["instrument"]),
                  header["spec"], header["meta"])
