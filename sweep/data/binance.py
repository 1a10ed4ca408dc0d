"""Reader for Binance raw websocket captures (USD-M futures and spot) -> :class:`Events`.

Input format
------------
Plain or gzip text, one message a line: ``<local receive time: 19-digit ns since epoch> <json>``.
The JSON is a combined-stream message ``{"stream": ..., "data": {...}}`` (a bare stream payload
``{"e": ...}`` is accepted too) or a raw REST depth snapshot ``{"lastUpdateId": ..., "bids": [...],
"asks": [...]}`` (futures snapshots also carry ``E``/``T``, spot ones no time at all).

Stream payloads used:

* ``depthUpdate`` (diff depth): futures ``<sym>@depth@0ms`` carries ``U``/``u``/``pu`` and the
  transaction time ``T``; spot ``<sym>@depth@100ms`` carries ``U``/``u`` and the event time ``E``.
  Partial-depth streams (``@depth5`` ...) are not diffs and are skipped (counted).
* ``trade``: ``p``, ``q``, transaction time ``T``, ``m`` (buyer is maker).  Futures trades whose
  ``X`` is not ``"MARKET"`` (insurance-fund / ADL fills) never touched the book and are skipped
  (counted in ``meta["trades_not_market"]``).
* ``bookTicker``: best bid/ask (``b``/``B``/``a``/``A``) and its update id ``u``; futures also
  ``T``/``E``, spot no timestamps.
* Anything else (``aggTrade``, ``markPriceUpdate``, subscription replies ...) is skipped, counted
  in ``meta["skipped"]`` and warned about once.

Output rows (``EVENT_DTYPE``; ns timestamps, prices in quote currency per base unit, quantities in
base units)
------------------------------------------------------------------------------------------------
* TRADE: ``side`` = aggressor (+1 buyer when ``m`` is false, -1 seller when ``m`` is true),
  ``exch_ts`` = ``T``.
* DEPTH: one row per ``b`` level (side +1) then per ``a`` level (side -1), the absolute level size
  (0 deletes); ``exch_ts`` = ``T`` (futures) or ``E`` (spot, which has no ``T``).
* CLEAR + SNAPSHOT on a REST snapshot: a CLEAR row per side with a NaN price (wipe the whole side:
  Binance's procedure replaces the local book by the snapshot), then one SNAPSHOT row per level,
  bids first.  ``exch_ts`` = the snapshot's ``T`` (futures) or an estimate (spot, below).
* BBO (``include_bbo``): two rows per bookTicker (bid then ask), kept for cross-checks only.

Book synchronisation (Binance's documented procedure, applied offline)
--------------------------------------------------------------------
Diffs are checked in file order, which is receive order.

* Before the first snapshot there is no book, so diffs are only buffered.  When the snapshot
  (``lastUpdateId`` = L) arrives, buffered diffs that end before it (futures ``u < L``, spot
  ``u <= L``) are dropped (``meta["dropped_before_snapshot"]``); the remaining ones -- they were
  received *before* the REST reply but hold updates *after* L -- are applied right after the
  snapshot rows, stamped with the snapshot's local receive time (the moment a live bot could
  have applied them) and their own exchange time.  hftbacktest's converter instead applies them
  at their own receive time, before the snapshot wipes them, so its local book misses them until
  the levels change again (see tests/test_binance.py).
* The first applied diff must straddle the snapshot (futures ``U <= L <= u``, spot
  ``U <= L+1 <= u``); later diffs that are already in the snapshot are dropped
  (``meta["stale_diffs_dropped"]``).  Afterwards every diff must continue the chain: futures
  ``pu == previous u``, spot ``U == previous u + 1``.
* A break is a *gap*.  ``on_gap="error"`` raises :class:`InputError` naming the file and line.
  ``on_gap="resync"`` records it in ``meta["gaps"]`` (line, local/exchange ns, reason, the line of
  the snapshot that later re-synchronised the book or None) and keeps applying diffs: each diff
  carries absolute level sizes, so every level it touches is right again and only levels changed
  solely by the lost messages stay stale, whereas dropping diffs until the next snapshot would
  freeze the whole book.  The next snapshot re-synchronises exactly as at the start (diffs already
  received with ids past it are re-applied on top of it).
* Later snapshots while in sync are handled the same way (wipe, levels, re-apply newer diffs).
* The CLEAR rows wipe whole sides, levels deeper than the snapshot's 1000 included: Binance's
  procedure replaces the book.  (hftbacktest clears only down to the deepest snapshot level and
  keeps deeper levels left by the unsynchronised diffs before it; the top 20 levels never differed
  on the sample files.)
* Within one diff the bid rows come before the ask rows (Binance's order, as hftbacktest).  A book
  replay that applies the rows one by one therefore sees transient crossings when the price moves
  up through old asks that the same message deletes a few rows later (replay_book counts 1112 such
  "crossed repairs" on the usdm sample, 129 on spot); after every complete message the book built
  from these captures is never crossed.
* A crossed REST snapshot (best bid >= best ask) is an error: a consistent book cannot be crossed.
* Depth diffs but no snapshot at all: the book cannot be synchronised; all diffs are dropped and a
  warning says so (trades and BBO rows remain, which is a valid quotes-only source).

Clocks
------
The capture machine's clock is not Binance's (on the sample files it is ~1.27 s behind, so raw
``local - exch`` is negative).  Every ``local_ts`` is shifted by one constant so that the smallest
feed latency over the depth diffs, market trades and snapshots (including diffs later dropped;
the messages hftbacktest's converter measures: bookTickers are left out unless there is nothing
else) equals ``base_latency_ns``; with ``base_latency_ns=0`` the local clock is the converter's,
to the ns.  A bookTicker that then arrives "before" its exchange time (its stream can be a
fraction of a millisecond faster) gets ``exch_ts = local_ts`` (``meta["bbo_exch_ts_capped"]``;
with depth in the capture, BBO rows are only cross-checks).  The shift is
``meta["clock_offset_ns"]`` (added to the raw receive times); a shift above 100 ms is warned about.
The default base latency is 1 ms: a collector that is not co-located never sees a message at the
instant it was stamped, and a zero floor would let a simulated bot react to some events with no
delay at all.  Pass ``base_latency_ns=0`` to reproduce hftbacktest's correction (``base_latency=0``).

Spot bookTicker and spot snapshots carry no exchange time; they get ``exch_ts = local_ts -
base_latency_ns`` (i.e. they are assumed to have travelled with the minimum latency), and a
snapshot's ``exch_ts`` is further capped at the exchange time of the first diff applied on top of it
so that on the exchange clock the snapshot is never applied after a diff that is newer than it.
``meta["exch_ts_estimated"]`` counts such rows.

Local receive times that go backwards (a collector writing lines from several threads) are
clamped to the previous line's time with a warning (``meta["local_ts_repairs"]``), which keeps the
receive order that the sequence checks used; a step back of more than 1 s is an error (lines out of
order or files concatenated).

Instrument: ``tick_size`` is the coarsest decimal step all prices fit (strict).  ``lot_size``
(inferred or given) tolerates one distinct quantity in 10,000 off the step (``meta["qty_off_lot"]``): Binance spot
BTCUSDT still lists three deep levels with 1e-6 BTC granularity (orders resting since the step was
1e-6), although its lot is 1e-5.

Speed and memory: lines are parsed with orjson when it is installed (else the standard json
module), 16 MiB of text at a time; each chunk's levels become float arrays at once (~16 bytes
per level kept), and the rows are expanded, sorted and validated with numpy at the end.

Bad input (bad JSON, a missing or non-ns timestamp, missing fields, non-numeric / NaN / non-positive
prices, negative quantities, a truncated or corrupt gzip stream, an empty file, several symbols
without ``symbol=``) raises :class:`InputError` naming the file and the 1-based line.
"""
from __future__ import annotations

import collections
import gc
import gzip
import itertools
import os
import warnings
import zlib
from typing import Any, Iterator

import numpy as np
import polars as pl

from ..errors import InputError
from .screen import END_GAP_NS, drop_or_stop, feed_latency_outliers, tick_and_strays
from .events import (
    BBO,
    CLEAR,
    DEPTH,
    KIND_NAMES,
    SNAPSHOT,
    TRADE,
    Events,
    Instrument,
    infer_lot_size,
    make_table,
    sort_events,
    validate_events,
)

try:  # orjson is ~2x faster on these files; the standard library is the fallback, not a dependency.
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - depends on the environment
    from json import loads as _loads

__all__ = ["read_binance", "DEFAULT_BASE_LATENCY_NS", "CLOCK_OFFSET_WARN_NS"]

DEFAULT_BASE_LATENCY_NS = 1_000_000
CLOCK_OFFSET_WARN_NS = 100_000_000
MAX_BACKWARD_STEP_NS = 1_000_000_000
_TS_DIGITS = 19  # ns since epoch, years 2001..2286
_MS = 1_000_000
_EST = -1  # "no exchange time in the message": estimated from the local time at the end
# Decompressed text handled per step.  Parsed JSON costs ~10x the text in Python objects, so this
# bounds the reader's transient memory; what is kept is ~16 bytes per price level.
_CHUNK_BYTES = 1 << 24
# Recent diffs kept for re-applying on top of a later snapshot (~1.5 h of the usdm stream).
_MAX_BUFFERED_DIFFS = 100_000

# Share of distinct non-zero quantities allowed off the lot (inferred or given), see _infer_lot.
_MAX_OFF_LOT = 1e-4

_MARKETS = ("usdm", "coinm", "spot")
#: local receive timestamps by digit count: (unit name, ns per unit); the unit is detected from
#: the first timestamped line and every other line must use it
_TS_UNITS = {19: ("ns", 1), 16: ("us", 1_000), 13: ("ms", 1_000_000)}
_UNIT_WORDS = {"ns": "ns", "us": "µs", "ms": "ms"}
_GAP_MODES = ("resync", "error")


def read_binance(
    path: str | os.PathLike,
    *,
    symbol: str | None = None,
    market: str | None = None,
    tick_size: float | None = None,
    lot_size: float | None = None,
    include_bbo: bool = True,
    base_latency_ns: int = DEFAULT_BASE_LATENCY_NS,
    on_gap: str = "resync",
    resume: dict | None = None,
) -> Events:
    """Read a Binance raw stream capture into a validated, ``local_ts``-sorted event table.

    Args:
        path: ``.gz`` or plain text capture (``<local ns> <json>`` lines).
        symbol: keep only this symbol (e.g. ``"BTCUSDT"``, case-insensitive); required when the
            file holds several.  None: the file's only symbol.
        market: ``"usdm"`` (USD-M futures), ``"coinm"`` (COIN-M futures, inverse) or ``"spot"``;
            None: inferred from the messages (``pu`` in depth diffs, ``T`` in snapshots: futures;
            a COIN-M symbol such as ``ETHUSD_PERP`` or the ``ps`` pair field: COIN-M).  A message
            of the other market is an error.
        tick_size: price increment (quote currency); None: inferred from all prices
            (``meta["tick_size_inferred"]``).  Given: every price must be a multiple of it.
        lot_size: quantity increment (base units); None: inferred likewise.  Given or inferred, at
            most one distinct quantity in 10,000 may be off it (``meta["qty_off_lot"]``).
        include_bbo: emit BBO rows from bookTicker messages (two per message).
        base_latency_ns: the smallest feed latency after the clock correction (ns, >= 0).
        on_gap: ``"resync"`` (record gaps in ``meta["gaps"]``, keep applying, re-sync at the next
            snapshot) or ``"error"`` (raise :class:`InputError` at the first gap).
        resume: the ``meta["sync"]`` of the previous file of a sequence (a continuation file): the
            book is taken to continue from that file's, so depth diffs are applied from the first
            line, the first one checked against the previous file's last update id (a break is a
            gap naming both files, resynchronised at the next snapshot).

    Local receive times may be in ns (19 digits), µs (16, older collectors) or ms (13): the unit
    is detected from the first line (``meta["local_ts_unit"]``) and converted to ns.

    Returns:
        :class:`Events` (timestamps int64 ns since the epoch, prices in quote currency, quantities
        in base units) whose ``meta`` holds: ``market``, ``symbol``, ``tick_size``/``lot_size``
        and whether inferred, ``qty_off_lot`` (distinct quantities that are not multiples of the
        inferred lot, see :func:`_infer_lot`), ``messages`` (counts by type), ``rows`` (by kind),
        ``skipped``, ``other_symbol_messages``, ``trades_not_market``, ``clock_offset_ns`` (added to
        every raw receive time), ``base_latency_ns``, ``feed_latency_ns`` (min/p50/p99/max after
        the correction, over messages with an exchange time), ``exch_ts_estimated``, ``snapshots``,
        ``dropped_before_snapshot``, ``replayed_buffered_diffs``, ``stale_diffs_dropped``,
        ``gaps``, ``local_ts_repairs``.

    Raises:
        InputError: malformed input, naming the file and 1-based line (module docstring).
    """
    source = os.fspath(path)
    if market is not None and market not in _MARKETS:
        raise InputError(f"market must be one of {_MARKETS} or None, got {market!r}", key="market")
    if on_gap not in _GAP_MODES:
        raise InputError(f"on_gap must be one of {_GAP_MODES}, got {on_gap!r}", key="on_gap")
    if isinstance(base_latency_ns, bool) or not isinstance(base_latency_ns, (int, np.integer)) or base_latency_ns < 0:
        raise InputError(f"base_latency_ns must be a non-negative integer (ns), got {base_latency_ns!r}",
                         key="base_latency_ns")
    for name, value in (("tick_size", tick_size), ("lot_size", lot_size)):
        if value is not None and not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a positive number or None, got {value!r}", key=name)
    # The parse keeps many small lists alive (one per price level of a chunk); CPython's cyclic
    # collector would traverse all of them on every full collection (~40 % of the run time here).
    # Nothing built here forms reference cycles, so the collector is paused and then restored.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        reader = _Reader(source, symbol=symbol, market=market, include_bbo=include_bbo, on_gap=on_gap,
                         resume=resume)
        for first_line, lines in _iter_lines(source):
            reader.parse(lines, first_line)
        return reader.finish(tick_size=tick_size, lot_size=lot_size, base_latency_ns=int(base_latency_ns))
    finally:
        if gc_was_enabled:
            gc.enable()


# --------------------------------------------------------------------------------------------
# File access


def _iter_lines(source: str) -> Iterator[tuple[int, list[bytes]]]:
    """Yield ``(number of the first line, lines)`` in chunks, gunzipping on the fly (gzip magic)."""
    try:
        with open(source, "rb") as fh:
            is_gzip = fh.read(2) == b"\x1f\x8b"
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", source=source) from None
    first = 1
    try:
        with (gzip.open(source, "rb") if is_gzip else open(source, "rb")) as fh:
            rest = b""
            while True:
                block = fh.read(_CHUNK_BYTES)
                if not block:
                    break
                block = rest + block
                cut = block.rfind(b"\n")
                if cut < 0:
                    rest = block
                    continue
                lines = block[:cut].split(b"\n")
                rest = block[cut + 1:]
                yield first, lines
                first += len(lines)
            if rest:
                yield first, [rest]
    except (EOFError, OSError, zlib.error) as exc:
        if not is_gzip:
            raise InputError(f"cannot read file: {exc}", source=source) from None
        line, truncated = _gzip_fault_line(source)
        if truncated:
            raise InputError("gzip stream is truncated (the file ends before the gzip end marker: an "
                             "interrupted download or capture?); the text stops inside this line",
                             source=source, line=line) from None
        raise InputError(f"corrupt gzip data ({exc})", source=source, line=line) from None


def _gzip_fault_line(source: str) -> tuple[int, bool]:
    """Where a faulty gzip file goes wrong: (1-based line of the text, truncated rather than corrupt).

    Decompresses again member by member, counting newlines, since the gzip module loses the text
    decoded in the read call that failed.
    """
    with open(source, "rb") as fh:
        raw = fh.read()
    newlines = 0
    rest = raw
    while rest:
        dec = zlib.decompressobj(wbits=31)
        pos = 0
        try:
            while pos < len(rest) and not dec.eof:
                newlines += dec.decompress(rest[pos:pos + (1 << 20)]).count(b"\n")
                pos += 1 << 20
        except zlib.error:
            return newlines + 1, False
        if not dec.eof:
            return newlines + 1 + dec.flush().count(b"\n"), True
        rest = dec.unused_data
        if rest[:2] != b"\x1f\x8b":
            return newlines + 1, False  # trailing bytes that are not another gzip member
    return newlines + 1, False


# --------------------------------------------------------------------------------------------
# Parsing


class _Reader:
    """Messages -> per-message records (one pass over the lines); rows are expanded vectorised.

    Each chunk of lines leaves its price levels as float arrays and its message records as int
    arrays; records point at levels by a global index, so a diff can be re-applied after a later
    snapshot in another chunk.
    """

    def __init__(self, source: str, *, symbol: str | None, market: str | None, include_bbo: bool,
                 on_gap: str, resume: dict | None = None) -> None:
        self.source = source
        self.ts_digits = 0  # digits of the local timestamps (detected from the first line)
        self.ts_scale = 1  # ns per unit of the local timestamps
        self.ts_unit = ""
        self.saw_pair = False  # a stream message carried COIN-M's "ps" (pair) field
        self.want = symbol.upper() if symbol else None
        self.market = market
        self.market_inferred = market is None
        self.include_bbo = bool(include_bbo)
        self.on_gap = on_gap
        self.symbol: str | None = None
        # Level strings of the current chunk's book/trade messages, [price, qty] each, file order.
        self.pairs: list = []
        self.pair_base = 0  # global index of pairs[0]
        self.price_chunks: list[np.ndarray] = []
        self.qty_chunks: list[np.ndarray] = []
        # Where each message's pairs start (global index) and its line: a bad value -> its line.
        self.blk_start: list[int] = []
        self.blk_line: list[int] = []
        # Emitted messages of the current chunk: kind, first pair (global), bid rows, ask rows,
        # exchange ms (or _EST), raw local ns, line.
        self.m_kind: list[int] = []
        self.m_start: list[int] = []
        self.m_nb: list[int] = []
        self.m_na: list[int] = []
        self.m_exch: list[int] = []
        self.m_local: list[int] = []
        self.m_line: list[int] = []
        self.msg_base = 0  # global index of m_kind[0]
        self.msg_chunks: list[tuple[np.ndarray, ...]] = []
        # Sequence state.
        self.diffs: collections.deque = collections.deque(maxlen=_MAX_BUFFERED_DIFFS)
        self.n_diffs = 0
        self.have_snapshot = False
        self.snap_thr: int | None = None  # first update id the next applied diff must reach
        self.snap_line = 0
        self.snap_last_id = 0
        self.last_u: int | None = None
        self.pending_fix: tuple[int, int] | None = None  # CLEAR/SNAPSHOT messages awaiting a cap
        self.snap_fixes: list[tuple[int, int, int]] = []
        self.gaps: list[dict[str, Any]] = []
        self.snapshots: list[dict[str, Any]] = []
        self.dropped_before_snapshot = 0
        self.replayed = 0
        self.reapplied_msgs: list[int] = []
        self.stale = 0
        # Raw feed latency (local ns - exchange ns) of every message with an exchange time, and
        # its line: the clock offset comes from them once implausible ones are screened out.
        self.lat_val: list[int] = []
        self.lat_line: list[int] = []
        # Lines whose latency is screened but does not set the clock offset: bookTicker and
        # non-market trades (hftbacktest's converter leaves them out, so with base latency 0 the
        # two clocks are the same).
        self.no_clock: list[int] = []
        # Lines whose timestamps are implausible (dropped at the end), line -> reason.
        self.bad_lines: dict[int, str] = {}
        self.jump: tuple[int, int] | None = None  # last forward jump > 1 s: (line, time before it)
        self.first_ts: tuple[int, int] | None = None  # the first timestamped line and its time
        self.end_jump: tuple[int, int, int] | None = None  # last jump > END_GAP_NS: (line, before, after)
        self.last_ts_line = 0
        self.dip: tuple[int, int] | None = None  # last line far behind its predecessor: (line, time)
        self.trade_ids: list[int] = []  # Binance trade id 't' of every emitted trade, in order
        self.counts = {"depthUpdate": 0, "trade": 0, "bookTicker": 0, "snapshot": 0}
        self.skipped: dict[str, int] = {}
        self.skipped_first_line: dict[str, int] = {}
        self.trades_not_market = 0
        self.other_symbol = 0
        self.blank_lines = 0
        self.n_lines = 0
        self.prev_ts = 0
        self.repairs = {"count": 0, "first_line": None, "max_step_ns": 0}
        self.resume = resume
        self.applied_here = 0  # diffs applied from this file's own lines
        if resume:
            if resume.get("market") is not None and market is not None and resume["market"] != market:
                raise InputError(f"market={market} given, but the previous file {resume.get('source')} is a "
                                 f"{resume['market']} capture", source=source, key="market")
            if self.market is None and resume.get("market") not in (None, "unknown"):
                self.market = resume["market"]
            if resume.get("in_sync"):
                # The book continues the previous file's: diffs apply from the first line.
                self.have_snapshot = True
                self.last_u = resume.get("last_u")
                if resume.get("snap_thr") is not None:
                    self.snap_thr = resume["snap_thr"]
                    self.snap_line = 0
                    self.snap_last_id = resume.get("snap_last_id", 0)

    # ---------------------------------------------------------------------------------------
    def _err(self, message: str, line: int | None) -> InputError:
        # A bad level on an earlier line is only found when the chunk's levels are converted;
        # report that one first, so that the error always names the first bad line.
        if line is not None and self.pairs:
            try:
                self._convert_pending()
            except InputError as earlier:
                if earlier.line is not None and earlier.line < line:
                    return earlier
        return InputError(message, source=self.source, line=line)

    def parse(self, lines: list[bytes], first_line: int) -> None:
        """Parse one chunk of lines; ``first_line`` is the 1-based number of ``lines[0]``."""
        self.n_lines = first_line + len(lines) - 1
        loads = _loads
        pairs = self.pairs
        pair_base = self.pair_base
        blk_start, blk_line = self.blk_start, self.blk_line
        m_kind, m_start, m_nb, m_na = self.m_kind, self.m_start, self.m_nb, self.m_na
        m_exch, m_local, m_line = self.m_exch, self.m_local, self.m_line
        counts = self.counts
        include_bbo = self.include_bbo
        want = self.want
        prev_ts = self.prev_ts
        lat_val, lat_line = self.lat_val, self.lat_line
        no_clock = self.no_clock
        trade_ids = self.trade_ids
        lineno = first_line - 1
        digits, scale = self.ts_digits, self.ts_scale
        try:
            for lineno, line in enumerate(lines, first_line):
                if line[digits:digits + 1] != b" " or not line[:digits].isdigit():
                    if not line.strip():
                        self.blank_lines += 1
                        continue
                    if not digits:
                        digits, scale = self._detect_unit(line, lineno)
                    else:
                        unit = _UNIT_WORDS[self.ts_unit]
                        raise self._err(f"line does not start with a {digits}-digit local receive timestamp ({unit} "
                                        f"since epoch, the unit of line {self.unit_line}) and a space: "
                                        f"{line[:60]!r}", lineno)
                ts = int(line[:digits]) * scale
                if ts < prev_ts:
                    ts = self._repair_ts(prev_ts, ts, lineno)
                elif ts - prev_ts > MAX_BACKWARD_STEP_NS:
                    self._jump(lineno, prev_ts, ts)
                prev_ts = ts
                try:
                    msg = loads(line[digits + 1:])
                except ValueError as exc:
                    raise self._err(f"bad JSON ({exc})", lineno) from None
                if type(msg) is not dict:
                    raise self._err(f"expected a JSON object, got {type(msg).__name__}", lineno)
                data = msg.get("data")
                stream = ""
                if data is None:
                    if "lastUpdateId" in msg:
                        self._snapshot(msg, ts, lineno)
                        continue
                    data = msg
                else:
                    stream = msg.get("stream") or ""
                    if type(data) is not dict:
                        raise self._err(f"'data' must be an object, got {type(data).__name__}", lineno)
                e = data.get("e")
                if e == "bookTicker" or (e is None and "B" in data and "A" in data):
                    if want is not None and data["s"] != want:
                        self.other_symbol += 1
                        continue
                    counts["bookTicker"] += 1
                    if data["s"] != self.symbol:
                        self._check_symbol(data["s"], lineno)
                    exch = data.get("T")
                    if exch is None:
                        exch = _EST
                    else:
                        if type(exch) is not int:
                            raise self._err(f"bookTicker 'T' must be an integer (ms), got {exch!r}", lineno)
                        lat_val.append(ts - exch * _MS)
                        lat_line.append(lineno)
                        no_clock.append(lineno)  # screened, but not a clock sample (as hftbacktest)
                    if include_bbo:
                        start = pair_base + len(pairs)
                        blk_start.append(start)
                        blk_line.append(lineno)
                        pairs.append((data["b"], data["B"]))
                        pairs.append((data["a"], data["A"]))
                        # _emit inlined on the two hottest paths (one call per line otherwise)
                        m_kind.append(BBO); m_start.append(start); m_nb.append(1); m_na.append(1)  # noqa: E702
                        m_exch.append(exch); m_local.append(ts); m_line.append(lineno)  # noqa: E702
                elif e == "trade":
                    if want is not None and data["s"] != want:
                        self.other_symbol += 1
                        continue
                    if data["s"] != self.symbol:
                        self._check_symbol(data["s"], lineno)
                    counts["trade"] += 1
                    exch = data["T"]
                    if type(exch) is not int:
                        raise self._err(f"trade 'T' must be an integer (ms), got {exch!r}", lineno)
                    lat_val.append(ts - exch * _MS)
                    lat_line.append(lineno)
                    x = data.get("X")
                    if x is not None and x != "MARKET":
                        self.trades_not_market += 1
                        no_clock.append(lineno)
                        continue
                    m = data["m"]
                    if m is False:  # the buyer is not the maker: the buyer is the aggressor
                        nb, na = 1, 0
                    elif m is True:
                        nb, na = 0, 1
                    else:
                        raise self._err(f"trade 'm' must be true or false, got {m!r}", lineno)
                    start = pair_base + len(pairs)
                    blk_start.append(start)
                    blk_line.append(lineno)
                    pairs.append((data["p"], data["q"]))
                    tid = data.get("t")
                    trade_ids.append(tid if type(tid) is int else -1)
                    m_kind.append(TRADE); m_start.append(start); m_nb.append(nb); m_na.append(na)  # noqa: E702
                    m_exch.append(exch); m_local.append(ts); m_line.append(lineno)  # noqa: E702
                elif e == "depthUpdate":
                    at = stream.find("@depth")
                    if at >= 0 and stream[at + 6:at + 7].isdigit():
                        self._skip("partial depth (" + stream[at + 1:] + ")", lineno)
                        continue
                    if want is not None and data["s"] != want:
                        self.other_symbol += 1
                        continue
                    if data["s"] != self.symbol:
                        self._check_symbol(data["s"], lineno)
                        self.saw_pair = self.saw_pair or "ps" in data
                    counts["depthUpdate"] += 1
                    lat_val.append(self._depth(data, ts, lineno))
                    lat_line.append(lineno)
                else:
                    self._skip(str(e) if e is not None else (stream.rpartition("@")[2] or "unknown"), lineno)
        except InputError:
            raise
        except (KeyError, TypeError, AttributeError, IndexError, ValueError, OverflowError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise self._err(f"malformed message ({what}): {lines[lineno - first_line][:160]!r}", lineno) from None
        self.prev_ts = prev_ts
        for back, line in enumerate(reversed(lines)):  # the last line with a timestamp, for _lone_last_line
            if line.strip():
                self.last_ts_line = first_line + len(lines) - 1 - back
                break
        self._flush()

    def _detect_unit(self, line: bytes, lineno: int) -> tuple[int, int]:
        """The unit of the local timestamps, from the digit count of the first timestamped line."""
        head = line.split(b" ", 1)[0]
        if head.isdigit() and len(head) in _TS_UNITS and line[len(head):len(head) + 1] == b" ":
            self.ts_unit, self.ts_scale = _TS_UNITS[len(head)]
            self.ts_digits = len(head)
            self.unit_line = lineno
            return self.ts_digits, self.ts_scale
        what = f"{len(head)} digits" if head.isdigit() else repr(line[:40])
        raise self._err(f"line does not start with a local receive timestamp and a space: expected ns since the epoch "
                        f"(19 digits), µs (16) or ms (13), got {what}: {line[:60]!r}", lineno)

    def _emit(self, kind: int, start: int, nb: int, na: int, exch: int, local: int, line: int) -> int:
        """Record one message's rows; returns its global message index."""
        self.m_kind.append(kind)
        self.m_start.append(start)
        self.m_nb.append(nb)
        self.m_na.append(na)
        self.m_exch.append(exch)
        self.m_local.append(local)
        self.m_line.append(line)
        return self.msg_base + len(self.m_kind) - 1

    def _jump(self, lineno: int, prev_ts: int, ts: int) -> None:
        """A forward step of more than 1 s (rare): remembered to judge spikes and lone end lines."""
        if self.first_ts is None:
            self.first_ts = (lineno, ts)
            return
        self.jump = (lineno, prev_ts)
        if ts - prev_ts > END_GAP_NS:
            if prev_ts == self.first_ts[1]:  # the first line(s) sit alone, long before the rest
                for ln in range(self.first_ts[0], lineno):
                    self.bad_lines[ln] = (f"local receive time {prev_ts} ns is {(ts - prev_ts) / 3.6e12:,.1f} h "
                                          "before the rest of the capture")
            self.end_jump = (lineno, prev_ts, ts)

    def _lone_last_line(self) -> None:
        """The last line(s) more than END_GAP_NS after the rest: implausible (they alone would set
        the span of everything built from the capture)."""
        jump = self.end_jump
        if jump is not None and jump[0] == self.last_ts_line and self.prev_ts == jump[2]:
            self.bad_lines[jump[0]] = (f"local receive time {jump[2]} ns is {(jump[2] - jump[1]) / 3.6e12:,.1f} h "
                                       "after the rest of the capture")

    def _repair_ts(self, prev_ts: int, ts: int, lineno: int) -> int:
        """The receive time to use for a line stamped before its predecessor (``prev_ts``)."""
        step = prev_ts - ts
        if step > MAX_BACKWARD_STEP_NS:
            jump, dip = self.jump, self.dip
            if jump is not None and jump[0] == lineno - 1 and ts >= jump[1] - MAX_BACKWARD_STEP_NS:
                # The line before jumped ahead and this one is back on the timeline: that line's
                # time is the bad one (it is dropped at the end); carry on from before it.
                self.bad_lines[lineno - 1] = (f"local receive time {prev_ts} ns is {(prev_ts - jump[1]) / 1e9:.3f} s "
                                              "ahead of the lines around it")
                self.jump = None
                return max(ts, jump[1])
            if dip is not None and dip[0] == lineno - 1:
                # The line before went back too, and this one stays back: the timeline really goes back.
                del self.bad_lines[dip[0]]
                raise self._err(f"local timestamp goes back by {(dip[1] - ts) / 1e9:.3f} s (lines out of order "
                                "or files concatenated?)", dip[0])
            # This line alone is far behind: dropped at the end, unless the next one stays back too.
            self.dip = (lineno, prev_ts)
            self.bad_lines[lineno] = f"local receive time {ts} ns goes back by {step / 1e9:.3f} s from the line before"
            return prev_ts
        rep = self.repairs
        rep["count"] += 1
        if rep["first_line"] is None:
            rep["first_line"] = lineno
        rep["max_step_ns"] = max(rep["max_step_ns"], step)
        return prev_ts

    def _skip(self, what: str, lineno: int) -> None:
        self.skipped[what] = self.skipped.get(what, 0) + 1
        self.skipped_first_line.setdefault(what, lineno)

    def _check_symbol(self, s: Any, lineno: int) -> None:
        if type(s) is not str:
            raise self._err(f"symbol 's' must be a string, got {s!r}", lineno)
        if self.symbol is None:
            self.symbol = s
        elif s != self.symbol:
            raise self._err(f"the file holds more than one symbol ({self.symbol}, {s}); pass symbol=", lineno)

    def _set_market(self, futures: bool, what: str, lineno: int) -> None:
        mkt = "usdm" if futures else "spot"
        if self.market is None:
            self.market = mkt
        elif (self.market != "spot") != futures:
            how = "inferred from earlier lines" if self.market_inferred else "given as market="
            raise self._err(f"{what} is a {mkt} message but the capture is {self.market} ({how})", lineno)

    def _ints(self, lineno: int, what: str, **values: Any) -> None:
        for name, v in values.items():
            if type(v) is not int:
                raise self._err(f"{what} '{name}' must be an integer, got {v!r}", lineno)

    # ---------------------------------------------------------------------------------------
    def _depth(self, data: dict, ts: int, lineno: int) -> int:
        """Parse one diff, apply or buffer it; returns its raw feed latency (ns)."""
        futures = "pu" in data
        self._set_market(futures, "depthUpdate" + (" with 'pu'" if futures else " without 'pu'"), lineno)
        exch = data["T"] if futures else data["E"]
        U, u = data["U"], data["u"]
        pu = data["pu"] if futures else None
        self._ints(lineno, "depthUpdate", **({"T": exch, "U": U, "u": u, "pu": pu} if futures
                                            else {"E": exch, "U": U, "u": u}))
        if U > u:
            raise self._err(f"depthUpdate has U={U} > u={u}", lineno)
        b, a = data["b"], data["a"]
        if type(b) is not list or type(a) is not list:
            raise self._err("depthUpdate 'b' and 'a' must be lists of [price, qty]", lineno)
        start = self.pair_base + len(self.pairs)
        self.blk_start.append(start)
        self.blk_line.append(lineno)
        self.pairs += b
        self.pairs += a
        rec = (start, len(b), len(a), exch, ts, lineno, U, u, pu)
        self.diffs.append(rec)
        self.n_diffs += 1
        if self.have_snapshot:
            self._apply(rec, ts)
        return ts - exch * _MS

    def _apply(self, rec: tuple, local: int) -> None:
        """Apply one diff at raw local time ``local`` if the update-id chain allows it."""
        start, nb, na, exch, _, line, U, u, pu = rec
        if self.snap_thr is not None:
            # First diff after a snapshot: drop those already inside it, then it must straddle it.
            if u < self.snap_thr:
                self.stale += 1
                return
            if U > self.snap_thr:
                self._gap(rec, f"first diff after the snapshot at line {self.snap_line} starts at U={U}, "
                               f"but the snapshot ends at lastUpdateId={self.snap_last_id}: updates "
                               f"{self.snap_thr}..{U - 1} are missing")
            self.snap_thr = None
        elif self.last_u is not None:
            ok = (pu == self.last_u) if pu is not None else (U == self.last_u + 1)
            if not ok:
                if u <= self.last_u:  # a repeated / older diff: everything in it is applied already
                    self.stale += 1
                    return
                if pu is not None:
                    why = f"pu={pu} but the previous diff ended at u={self.last_u}"
                else:
                    why = f"U={U} but the previous diff ended at u={self.last_u} (expected U={self.last_u + 1})"
                self._gap(rec, why)
        index = self._emit(DEPTH, start, nb, na, exch, local, line)
        if local != rec[4]:
            self.reapplied_msgs.append(index)
        if self.pending_fix is not None:
            self.snap_fixes.append((*self.pending_fix, exch))
            self.pending_fix = None
        self.last_u = u
        self.applied_here += 1

    def _gap(self, rec: tuple, why: str) -> None:
        _, _, _, exch, local, line, U, u, pu = rec
        if self.resume and not self.applied_here and not self.snapshots:
            why = (f"{why}, across the file boundary: the previous file {self.resume.get('source')} ended at "
                   f"u={self.resume.get('last_u')}")
        if self.on_gap == "error":
            raise self._err(f"depth update-id gap: {why}; the local book would be wrong from here "
                            "(on_gap='resync' records gaps and keeps going)", line)
        self.gaps.append({"line": line, "local_ts": local, "exch_ts": exch, "U": U, "u": u, "pu": pu,
                          "reason": why, "resynced_at_line": None})

    def _snapshot(self, msg: dict, ts: int, lineno: int) -> None:
        self.counts["snapshot"] += 1
        if self.want is not None and self.other_symbol:
            raise self._err("snapshot lines carry no symbol and the file holds other symbols too; "
                            "cannot attribute this snapshot", lineno)
        last_id = msg["lastUpdateId"]
        self._ints(lineno, "snapshot", lastUpdateId=last_id)
        futures = "T" in msg or "E" in msg
        self._set_market(futures, "depth snapshot " + ("with" if futures else "without") + " 'T'/'E'", lineno)
        exch = msg.get("T", msg.get("E")) if futures else _EST
        if futures:
            self._ints(lineno, "snapshot", T=exch)
            # A REST reply is never faster than the stream, but it is a valid latency sample.
            self.lat_val.append(ts - exch * _MS)
            self.lat_line.append(lineno)
        bids, asks = msg["bids"], msg["asks"]
        if type(bids) is not list or type(asks) is not list:
            raise self._err("snapshot 'bids' and 'asks' must be lists of [price, qty]", lineno)
        try:
            best_bid = max((float(p) for p, q in bids if float(q) > 0), default=None)
            best_ask = min((float(p) for p, q in asks if float(q) > 0), default=None)
        except (TypeError, ValueError) as exc:
            raise self._err(f"snapshot level is not [price, qty] numbers ({exc})", lineno) from None
        if best_bid is not None and best_ask is not None and not best_bid < best_ask:
            raise self._err(f"crossed snapshot: best bid {best_bid} >= best ask {best_ask}", lineno)
        start = self.pair_base + len(self.pairs)
        self.blk_start.append(start)
        self.blk_line.append(lineno)
        self.pairs += bids
        self.pairs += asks
        # CLEAR rows point at two NaN pairs appended at the very end (index -2, -1).
        clear = self._emit(CLEAR, -2, 1, 1, exch, ts, lineno)
        snap = self._emit(SNAPSHOT, start, len(bids), len(asks), exch, ts, lineno)
        self.pending_fix = (clear, snap)
        thr = last_id if self.market != "spot" else last_id + 1
        # Diffs received before this reply that reach past it (they were buffered, or applied and
        # now wiped) go on top of it; u increases along the stream, so walk back from the end.
        tail: list[tuple] = []
        for rec in reversed(self.diffs):
            if rec[7] < thr:
                break
            tail.append(rec)
        tail.reverse()
        if not self.have_snapshot:
            self.dropped_before_snapshot = self.n_diffs - len(tail)
        self.have_snapshot = True
        for gap in self.gaps:
            if gap["resynced_at_line"] is None:
                gap["resynced_at_line"] = lineno
        self.snap_thr, self.snap_line, self.snap_last_id, self.last_u = thr, lineno, last_id, None
        for rec in tail:
            self._apply(rec, ts)
        self.replayed += len(tail)
        self.snapshots.append({"line": lineno, "last_update_id": last_id, "bids": len(bids), "asks": len(asks),
                               "local_ts": ts, "exch_ts": exch, "replayed_diffs": len(tail)})

    # ---------------------------------------------------------------------------------------
    def _line_of_pair(self, index: int) -> int:
        """Line of the pending pair at global ``index``."""
        blk = int(np.searchsorted(np.asarray(self.blk_start), index, side="right")) - 1
        return self.blk_line[max(blk, 0)]

    def _convert_pending(self) -> tuple[np.ndarray, np.ndarray]:
        """Prices and quantities of the current chunk's pairs; InputError at the first bad one."""
        pairs = self.pairs
        n = len(pairs)
        flat = None
        # Every level must be a [price, qty] pair before it is flattened, or values would shift.
        shapes_ok = set(map(type, pairs)) <= {list, tuple} and set(map(len, pairs)) <= {2}
        if shapes_ok:
            try:  # polars parses decimal strings ~3x faster than float() in a loop
                flat = (pl.Series(list(itertools.chain.from_iterable(pairs)), dtype=pl.String)
                        .cast(pl.Float64, strict=True).to_numpy())
            except Exception:  # numbers instead of strings, bad text ...: the exact path decides
                flat = None
            if flat is None:
                try:
                    flat = np.fromiter(map(float, itertools.chain.from_iterable(pairs)), dtype=np.float64,
                                       count=2 * n)
                except (TypeError, ValueError):
                    flat = None
        if flat is None:
            for i, pair in enumerate(pairs):
                try:
                    if type(pair) not in (list, tuple) or len(pair) != 2:
                        raise ValueError("not a [price, qty] pair")
                    float(pair[0]), float(pair[1])
                except (TypeError, ValueError):
                    raise InputError(f"bad price level {pair!r}: expected [price, qty] with numbers (as strings)",
                                     source=self.source, line=self._line_of_pair(self.pair_base + i)) from None
            raise AssertionError("no bad level found")  # pragma: no cover
        flat = np.asarray(flat, dtype=np.float64).reshape(n, 2)
        price, qty = flat[:, 0], flat[:, 1]
        bad_p = ~(np.isfinite(price) & (price > 0))
        bad_q = ~(np.isfinite(qty) & (qty >= 0))
        if bad_p.any() or bad_q.any():
            i = int(np.argmax(bad_p | bad_q))
            what = "price must be finite and positive" if bad_p[i] else "quantity must be finite and non-negative"
            raise InputError(f"{what}: {pairs[i]!r}", source=self.source, line=self._line_of_pair(self.pair_base + i))
        return price, qty

    def _flush(self) -> None:
        """End of a chunk: keep its levels and messages as arrays, drop the Python objects."""
        price, qty = self._convert_pending()
        self.price_chunks.append(price)
        self.qty_chunks.append(qty)
        self.pair_base += len(self.pairs)
        self.pairs.clear()
        self.blk_start.clear()
        self.blk_line.clear()
        if self.m_kind:
            self.msg_chunks.append((
                np.asarray(self.m_kind, np.uint8), np.asarray(self.m_start, np.int64),
                np.asarray(self.m_nb, np.int64), np.asarray(self.m_na, np.int64),
                np.asarray(self.m_exch, np.int64), np.asarray(self.m_local, np.int64),
                np.asarray(self.m_line, np.int64)))
            self.msg_base += len(self.m_kind)
            for column in (self.m_kind, self.m_start, self.m_nb, self.m_na, self.m_exch, self.m_local, self.m_line):
                column.clear()

    def finish(self, *, tick_size: float | None, lot_size: float | None, base_latency_ns: int) -> Events:
        src = self.source
        if self.n_lines == self.blank_lines:
            raise self._err("file is empty: expected '<local ns timestamp> <json>' lines", 1)
        counts = self.counts
        if counts["depthUpdate"] and not self.have_snapshot and not self.resume:
            warnings.warn(f"{src}: {counts['depthUpdate']} depth updates but no REST snapshot line: the book "
                          "cannot be synchronised, so no depth rows were emitted (trades and BBO only)",
                          stacklevel=3)
            self.dropped_before_snapshot = self.n_diffs
        if not self.msg_base:
            raise self._err("no usable messages (no trades, depth or bookTicker for "
                            f"{self.want or 'the symbol'})", self.n_lines)

        kind, start, nb, na, exch_ms, local, line = (np.concatenate(c) for c in zip(*self.msg_chunks))
        self.msg_chunks.clear()
        min_lat = self._screen_timestamps(kind, nb, na, exch_ms, local, line)
        dup_trades = self._drop_duplicate_trades(kind, nb, na, line)

        # Clock: one shift so that the smallest observed feed latency becomes the base latency.
        if min_lat is None:
            shift = 0
            warnings.warn(f"{src}: no message carries an exchange time; local times are left as they are and "
                          "exchange times are estimated as local - base latency", stacklevel=3)
        else:
            shift = base_latency_ns - min_lat
        if abs(shift) > CLOCK_OFFSET_WARN_NS:
            warnings.warn(f"{src}: the capture clock is off Binance's by {shift / 1e9:+.3f} s; local_ts shifted "
                          f"by that so that the minimum feed latency is {base_latency_ns / 1e6:g} ms", stacklevel=3)
        if self.repairs["count"]:
            warnings.warn(f"{src} (line {self.repairs['first_line']}): local timestamps went backwards "
                          f"{self.repairs['count']} times (at most {self.repairs['max_step_ns'] / 1e6:.3f} ms); "
                          "clamped to the previous line's time", stacklevel=3)
        if self.skipped:
            desc = ", ".join(f"{k}: {v} (first line {self.skipped_first_line[k]})" for k, v in self.skipped.items())
            warnings.warn(f"{src}: skipped messages of unsupported types: {desc}", stacklevel=3)
        if self.gaps:
            warnings.warn(f"{src} (line {self.gaps[0]['line']}): {len(self.gaps)} depth update-id gap(s); the book "
                          "may be stale until the next snapshot (meta['gaps'])", stacklevel=3)

        local = local + shift
        est = exch_ms == _EST
        real = ~est
        bad = real & ((exch_ms < 10**12) | (exch_ms >= 10**13)) & (nb + na > 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"exchange time {exch_ms[i]} is not milliseconds since the epoch", source=src,
                             line=int(line[i]))
        exch = np.where(est, local - base_latency_ns, exch_ms * _MS)
        for clear_i, snap_i, diff_ms in self.snap_fixes:
            cap = diff_ms * _MS
            exch[clear_i] = min(exch[clear_i], cap)
            exch[snap_i] = min(exch[snap_i], cap)
        # The bookTicker stream can be a fraction of a ms faster than the depth and trade streams
        # the clock is set from: its exchange times are capped at the receive time (never later).
        early_bbo = (kind == BBO) & (exch > local)
        bbo_capped = int(early_bbo.sum())
        bbo_capped_ns = int((exch - local)[early_bbo].max()) if bbo_capped else 0
        exch[early_bbo] = local[early_bbo]
        price_all = np.concatenate(self.price_chunks + [np.array([np.nan, np.nan])])
        qty_all = np.concatenate(self.qty_chunks + [np.zeros(2)])
        self.price_chunks.clear()
        self.qty_chunks.clear()

        # Expand messages to rows: message i owns pairs start[i] .. start[i]+nb[i]+na[i]-1, bids first.
        n_rows = nb + na
        total = int(n_rows.sum())
        first_row = np.cumsum(n_rows) - n_rows
        within = np.arange(total, dtype=np.int64) - np.repeat(first_row, n_rows)
        pair_idx = np.repeat(start, n_rows) + within
        table = make_table(
            exch_ts=np.repeat(exch, n_rows),
            local_ts=np.repeat(local, n_rows),
            kind=np.repeat(kind, n_rows),
            side=np.where(within < np.repeat(nb, n_rows), 1, -1).astype(np.int8),
            price=price_all[pair_idx],
            qty=qty_all[pair_idx],
        )
        del pair_idx, within, price_all, qty_all
        row_line = np.repeat(line, n_rows)

        priced = table["kind"] != CLEAR
        tick_inferred = tick_size is None
        lot_inferred = lot_size is None
        lot_off = 0
        stray_prices = 0
        try:
            if tick_inferred:
                tick_size, stray = tick_and_strays(table["price"], priced)
                if stray.any():
                    stray_prices = int(stray.sum())
                    drop_or_stop(stray, int(priced.sum()), lambda i: {"line": int(row_line[i])},
                                 f"a price off the {tick_size:g} tick grid of every other price", src,
                                 lambda i: f"price {float(table['price'][i])!r}", unit="row")
                    keep = ~stray
                    table, row_line, priced = table[keep], row_line[keep], priced[keep]
            if lot_inferred:
                lot_size, lot_off = _infer_lot(table["qty"][priced])
        except InputError as exc:
            raise InputError(exc.message, source=src) from None
        if not tick_inferred:
            self._check_multiple(table["price"], priced, float(tick_size), "price", "tick_size", row_line)
        if not lot_inferred:
            # As in the inference, a few legacy sizes off the lot are real (spot BTCUSDT has three).
            lot_off = self._check_multiple(table["qty"], priced & (table["qty"] > 0), float(lot_size), "quantity",
                                           "lot_size", row_line, max_off=_MAX_OFF_LOT)
        del row_line

        table = sort_events(table)
        validate_events(table, src)

        # Stream messages as received: REST snapshots (a request round trip) and diffs re-applied
        # at a snapshot's time are not feed latency.
        as_received = real & (kind != CLEAR) & (kind != SNAPSHOT) & (nb + na > 0)
        as_received[self.reapplied_msgs] = False
        lat = (local - exch)[as_received]
        feed = ({q: int(v) for q, v in zip(("min", "p50", "p99", "max"),
                                          np.percentile(lat, [0, 50, 99, 100], method="lower"))}
                if len(lat) else {})
        kinds_count = np.bincount(table["kind"], minlength=max(KIND_NAMES) + 1)
        market = self.market or "unknown"
        if market == "usdm" and self.market_inferred and (self.saw_pair or _is_coinm(self.symbol or self.want or "")):
            market = "coinm"  # COIN-M streams look like USD-M ones but for the symbol and the pair field
        for gap in self.gaps:
            gap["local_ts"] = int(gap["local_ts"] + shift)
            gap["exch_ts"] = int(gap["exch_ts"] * _MS)
        for snap in self.snapshots:
            snap["local_ts"] = int(snap["local_ts"] + shift)
            snap["exch_ts"] = None if snap["exch_ts"] == _EST else int(snap["exch_ts"] * _MS)
        meta: dict[str, Any] = {
            "format": "binance-raw",
            "market": market,
            "market_inferred": self.market_inferred,
            "symbol": self.symbol or self.want,
            "tick_size": float(tick_size),
            "tick_size_inferred": tick_inferred,
            "lot_size": float(lot_size),
            "lot_size_inferred": lot_inferred,
            "qty_off_lot": lot_off,
            "lines": self.n_lines,
            "blank_lines": self.blank_lines,
            "messages": dict(counts),
            "rows": {KIND_NAMES[k]: int(kinds_count[k]) for k in KIND_NAMES},
            "skipped": dict(self.skipped),
            "other_symbol_messages": self.other_symbol,
            "trades_not_market": self.trades_not_market,
            "clock_offset_ns": int(shift),
            "base_latency_ns": base_latency_ns,
            "feed_latency_ns": feed,
            "exch_ts_estimated": {KIND_NAMES[k]: int(n_rows[est & (kind == k)].sum())
                                  for k in (BBO, CLEAR, SNAPSHOT) if (est & (kind == k)).any()},
            "snapshots": self.snapshots,
            "dropped_before_snapshot": self.dropped_before_snapshot,
            "replayed_buffered_diffs": self.replayed,
            "stale_diffs_dropped": self.stale,
            "gaps": self.gaps,
            "local_ts_repairs": dict(self.repairs),
            "implausible_timestamps": self.implausible,
            "duplicate_trades_dropped": dup_trades,
            "off_grid_prices_dropped": stray_prices,
            "local_ts_unit": self.ts_unit,
            "bbo_exch_ts_capped": {"messages": bbo_capped, "max_ns": bbo_capped_ns},
            "resumed_from": (self.resume or {}).get("source"),
            # what the next file of a sequence continues from (read_binance's resume=)
            "sync": {"source": src, "market": market, "symbol": self.symbol or self.want,
                     "in_sync": bool(self.have_snapshot), "last_u": self.last_u,
                     "snap_thr": self.snap_thr, "snap_last_id": self.snap_last_id},
        }
        venue = {"usdm": "binance-usdm", "coinm": "binance-coinm", "spot": "binance-spot"}.get(market, "binance")
        symbol = self.symbol or self.want or ""
        inverse, size = False, 1.0
        if market == "coinm":
            from .instruments import infer_contract

            contract = infer_contract(symbol, "binance")
            inverse, size = True, (contract.contract_size if contract.inverse else 10.0)
            meta["contract"] = {"inverse": True, "contract_size": size, "how": "inferred: " + (
                contract.reason if contract.inverse else f"COIN-M market: inverse, {size:g} USD contracts")}
        instrument = Instrument(symbol, float(tick_size), float(lot_size), size, venue, inverse)
        return Events(table, instrument, src, meta)

    def _screen_timestamps(self, kind: np.ndarray, nb: np.ndarray, na: np.ndarray, exch_ms: np.ndarray,
                           local: np.ndarray, line: np.ndarray) -> int | None:
        """Drop the messages of lines with implausible timestamps (module docstring); returns the
        smallest plausible raw feed latency (ns), None without exchange times.  Dropped messages
        keep their place with no rows (``nb = na = 0``), so message indices stay valid."""
        src = self.source
        self._lone_last_line()
        lat = np.asarray(self.lat_val, np.int64)
        lat_line = np.asarray(self.lat_line, np.int64)
        self.lat_val, self.lat_line = [], []
        # Exchange times that are not ms since the epoch at all (0, or seconds) come first: that
        # is the more precise reason when they are too many to drop.
        real = (exch_ms != _EST) & (nb + na > 0)
        for i in np.flatnonzero(real & ((exch_ms < 10**12) | (exch_ms >= 10**13))):
            self.bad_lines.setdefault(int(line[i]), f"exchange time {int(exch_ms[i])} is not milliseconds since "
                                                    "the epoch")
        clock_bad = np.isin(lat_line, np.fromiter(self.bad_lines, np.int64, len(self.bad_lines)))
        judged = ~clock_bad
        late = np.zeros(len(lat), bool)
        late[judged] = feed_latency_outliers(lat[judged])
        median = int(np.median(lat[judged])) if judged.any() else 0
        for i in np.flatnonzero(late):
            self.bad_lines.setdefault(int(lat_line[i]), f"receive time - exchange time is {lat[i] / 1e9:+.3f} s, "
                                                        f"the capture's typical {median / 1e9:+.3f} s")
        self.implausible = [{"line": ln, "reason": why} for ln, why in sorted(self.bad_lines.items())]
        if self.bad_lines:
            lines_bad = np.array(sorted(self.bad_lines), np.int64)
            n_ts_lines = self.n_lines - self.blank_lines
            drop_or_stop(np.ones(len(lines_bad), bool), n_ts_lines, lambda i: {"line": int(lines_bad[i])},
                         "an implausible timestamp", src, lambda i: self.bad_lines[int(lines_bad[i])], unit="line")
            dropped = np.isin(line, lines_bad) & (nb + na > 0)
            snap = dropped & ((kind == SNAPSHOT) | (kind == CLEAR))
            if snap.any():
                ln = int(line[np.argmax(snap)])
                raise InputError(f"the REST snapshot has an implausible timestamp ({self.bad_lines[ln]}); the book "
                                 "cannot be built without it: fix or remove that line", source=src, line=ln)
            for i in np.flatnonzero(dropped & (kind == DEPTH)):
                # its levels are missing from the book until they change again, as after a gap
                self.gaps.append({"line": int(line[i]), "local_ts": int(local[i]), "exch_ts": int(exch_ms[i]),
                                  "U": None, "u": None, "pu": None,
                                  "reason": "depth update dropped for an implausible timestamp",
                                  "resynced_at_line": next((sn["line"] for sn in self.snapshots
                                                            if sn["line"] > int(line[i])), None)})
            nb[dropped] = 0
            na[dropped] = 0
        ok = ~clock_bad & ~late & ~np.isin(lat_line, np.asarray(self.no_clock, np.int64))
        if not ok.any():  # only bookTicker times (a ticker-only capture): they set the clock then
            ok = ~clock_bad & ~late
        return int(lat[ok].min()) if ok.any() else None

    def _drop_duplicate_trades(self, kind: np.ndarray, nb: np.ndarray, na: np.ndarray, line: np.ndarray) -> int:
        """Binance trade ids are unique: a trade whose id was seen before is a duplicated line.
        Drops the copies (keeping the first), warns, and returns how many."""
        ids = np.asarray(self.trade_ids, np.int64)
        self.trade_ids = []
        trade_msgs = np.flatnonzero(kind == TRADE)
        if len(ids) != len(trade_msgs):  # pragma: no cover - the parse keeps them aligned
            raise AssertionError("trade ids out of step with trade messages")
        live = np.flatnonzero((ids >= 0) & (nb[trade_msgs] + na[trade_msgs] > 0))
        uniq, first = np.unique(ids[live], return_index=True)
        if len(uniq) == len(live):
            return 0
        copy = np.ones(len(live), bool)
        copy[first] = False
        dup = live[copy]
        msgs = trade_msgs[dup]
        original = trade_msgs[live[first[np.searchsorted(uniq, ids[dup[0]])]]]
        warnings.warn(f"{self.source} (line {int(line[msgs[0]])}): dropped {len(dup)} duplicated trade line(s) "
                      f"(trade id {int(ids[dup[0]])} first seen at line {int(line[original])}); a trade counts once",
                      UserWarning, stacklevel=4)
        nb[msgs] = 0
        na[msgs] = 0
        return len(dup)

    def _check_multiple(self, values: np.ndarray, mask: np.ndarray, step: float, what: str, name: str,
                        row_line: np.ndarray, max_off: float = 0.0) -> int:
        """Raise naming the first line whose value is not a multiple of ``step``, unless at most a
        fraction ``max_off`` of the distinct values are off; returns how many distinct values are."""
        scaled = values / step
        # Relative slack: float division of a decimal price by a decimal tick is off by ~1e-16 relative.
        off = mask & (np.abs(scaled - np.round(scaled)) > np.maximum(1e-6, 1e-9 * np.abs(scaled)))
        if not off.any():
            return 0
        n_off = len(np.unique(values[off]))
        if n_off > max_off * len(np.unique(values[mask])):
            i = int(np.argmax(off))
            raise InputError(f"{what} {float(values[i])!r} is not a multiple of {name}={step}", source=self.source,
                             line=int(row_line[i]))
        return n_off


def _is_coinm(symbol: str) -> bool:
    """A Binance COIN-M symbol: ``<COIN>USD_PERP`` or ``<COIN>USD_<YYMMDD>``."""
    from .instruments import _BINANCE_COINM

    return bool(_BINANCE_COINM.match(symbol.upper()))


def _infer_lot(qtys: np.ndarray, max_decimals: int = 10, max_off: float = _MAX_OFF_LOT) -> tuple[float, int]:
    """Lot size (base units) that all but a fraction ``max_off`` of the distinct non-zero quantities
    are multiples of, and how many distinct quantities are not.

    Strict inference (:func:`infer_lot_size`) fails on real books: Binance spot BTCUSDT still shows
    a few deep levels with 1e-6 BTC granularity (orders resting since the step size was 1e-6),
    although the lot has been 1e-5 for years.  Tolerating one quantity in 10,000 keeps such legacy
    levels from refining the lot, while a small hand-made file still needs every quantity to fit.
    """
    q = np.asarray(qtys, np.float64)
    q = np.unique(q[np.isfinite(q) & (q > 0)])
    if len(q) == 0:
        return infer_lot_size(q), 0  # raises the standard "no quantities" error
    for decimals in range(max_decimals + 1):
        scaled = q * 10.0**decimals
        on = np.abs(scaled - np.round(scaled)) < np.maximum(1e-6, 1e-9 * scaled)
        n_off = int((~on).sum())
        if n_off <= max_off * len(q):
            step = int(np.gcd.reduce(np.round(scaled[on]).astype(np.int64)))
            return float(step or 1) / 10.0**decimals, n_off
    return infer_lot_size(q), 0  # raises: too many decimals
