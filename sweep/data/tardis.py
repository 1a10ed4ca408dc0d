"""Reader for Tardis.dev normalized CSV files (DESIGN §2.1).

Supported data types (detected from the header line, never from the file name):

* ``trades`` -- ``exchange,symbol,timestamp,local_timestamp,id,side,price,amount``.
  One TRADE row per line; ``side`` is the aggressor: ``buy`` -> +1, ``sell`` -> -1,
  ``unknown`` or empty -> 0.  Any other value is an error (it usually means shifted columns).
* ``incremental_book_L2`` -- ``...,is_snapshot,side,price,amount``.  ``amount`` is the absolute
  level size (0 deletes).  A run of consecutive ``is_snapshot=true`` rows is one full-book
  snapshot: it becomes ``CLEAR`` bid + ``CLEAR`` ask (NaN price = wipe the side) stamped with the
  run's first row, then one SNAPSHOT row per CSV row.  Every snapshot is kept whole, whatever its
  length (hftbacktest 2.4.4 truncates later snapshots to the first one's length; we do not), and a
  snapshot at the end of a file is kept too.  Two snapshots written back to back with no update
  between them are told apart by a repeated (side, price) pair, which cannot occur inside one
  snapshot.
* ``quotes`` / ``book_ticker`` -- ``...,ask_amount,ask_price,bid_price,bid_amount``.  Two BBO rows
  per line (bid first, then ask).  An *empty side* (price and amount both empty, or a zero
  amount or price) has no level to show: in a quotes-only read it becomes a CLEAR row for that side
  (the quote book is then empty on that side); when depth files are read alongside, BBO rows are
  only cross-checks, so an empty side is dropped rather than wiping the depth book.  Both cases are
  counted in ``meta["empty_quote_sides"]``.  A side with exactly one of price/amount empty is an
  error (a cut line, not an empty book).
* ``book_snapshot_N`` -- wide columns ``asks[i].price, asks[i].amount, bids[i].price,
  bids[i].amount`` for i < N.  Each line is a snapshot of the top N levels only: CLEAR bid + CLEAR
  ask (wipe) then SNAPSHOT rows for the non-empty levels, bids then asks, best first.  Levels
  beyond N are *unknown*, not empty: the rebuilt book shows N levels a side at most, and any
  depth feature deeper than N is meaningless (``meta["book_depth_levels"] = N``).

Units: Tardis timestamps are microseconds since the epoch; the event table holds nanoseconds
(x1000).  Prices are quote currency per unit as written; quantities are in the venue's amount
unit (base currency, or contracts for inverse venues, e.g. USD on Deribit / BitMEX).

Decisions that change results:

* Rows are ordered by ``local_ts`` (Tardis' arrival time, the chronological order).  On equal
  ``local_ts``, trades come before book rows (a trade is printed before the depth change it
  causes; queue models rely on it), then files in the order given, then lines in file order.
  Rows of one file are never reordered (``exch_ts`` is not a sort key).
* Within one file ``local_timestamp`` must be non-decreasing (Tardis writes files in arrival
  order); a decrease is an error naming the file and line, since it means concatenated or
  corrupted files, and resorting an L2 update stream silently could change the book.
* ``local_ts < exch_ts`` (exchange clock ahead of Tardis' clock): ``exch_ts`` is clamped down to
  ``local_ts`` (zero feed latency for those rows) with a warning naming the count; counts and
  the largest excess (ns) are in ``meta``.  Clamping ``exch_ts`` keeps the arrival order intact.
* Tick and lot, when not given, are inferred from the data (the coarsest decimal grid the
  prices/amounts sit on; few distinct prices can give a coarser or finer grid than the
  venue's).  A given ``tick_size`` is checked: a price off the grid is an error naming the line.
"""
from __future__ import annotations

import gzip
import io
import os
import re
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import InputError
from .screen import STALE_AFTER_NS, describe_timestamp, drop_or_stop, tick_and_strays, timestamp_outliers
from .events import (
    ASK, BBO, BID, CLEAR, EVENT_DTYPE, KIND_NAMES, SNAPSHOT, TRADE, DEPTH, Events, Instrument,
    check_tick_alignment, infer_lot_size, validate_events,
)

__all__ = ["read_tardis", "detect_tardis_type"]

TRADES = "trades"
L2 = "incremental_book_L2"
QUOTES = "quotes"
SNAPSHOT_N = "book_snapshot"

_BASE_COLUMNS = ["exchange", "symbol", "timestamp", "local_timestamp"]
_REQUIRED = {
    TRADES: _BASE_COLUMNS + ["side", "price", "amount"],
    L2: _BASE_COLUMNS + ["is_snapshot", "side", "price", "amount"],
    QUOTES: _BASE_COLUMNS + ["ask_amount", "ask_price", "bid_price", "bid_amount"],
}
_FLOAT_COLUMNS = {"price", "amount", "ask_amount", "ask_price", "bid_price", "bid_amount"}
_INT_COLUMNS = {"timestamp", "local_timestamp"}
_SNAP_RE = re.compile(r"^(asks|bids)\[(\d+)\]\.(price|amount)$")

# Plausible microsecond timestamps: 2000-01-01 .. 2100-01-01.  Milliseconds or nanoseconds fall
# outside, which catches a unit mix-up instead of silently scaling it by 1000 (and x1000 stays
# inside int64, which wraps around silently past year 2262).
_US_MIN, _US_MAX = 946_684_800_000_000, 4_102_444_800_000_000


@dataclass
class _FileRows:
    """Events of one file, in file order, with where each row came from."""

    path: str
    dtype: str
    table: np.ndarray
    line: np.ndarray  # 1-based line of the CSV row behind each event
    symbol: str
    exchange: str
    rows: int
    extra: dict = field(default_factory=dict)


def _read_bytes(path: str) -> bytes:
    """Whole file contents, gunzipped if it starts with the gzip magic bytes.

    zlib is driven directly (not ``gzip.open``) so that a truncated or corrupt stream still
    yields the text decoded before the damage, and the error can name the line it stops in.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError as exc:
        raise InputError("file not found", source=path) from exc
    except IsADirectoryError as exc:
        raise InputError("is a directory, expected a CSV file", source=path) from exc
    if raw[:2] != b"\x1f\x8b":
        return raw
    out: list[bytes] = []
    rest = raw
    while rest[:2] == b"\x1f\x8b":  # one gzip member after another
        dec = zlib.decompressobj(wbits=31)
        problem = None
        try:
            out.append(dec.decompress(rest))
            out.append(dec.flush())
        except zlib.error as exc:
            problem = f"corrupt gzip stream ({exc})"
        if problem is None and not dec.eof:
            problem = "truncated gzip stream (the file ends before the gzip end-of-stream marker)"
        if problem:
            line = sum(chunk.count(b"\n") for chunk in out) + 1
            raise InputError(f"{problem}; the data stop inside line {line}", source=path, line=line)
        rest = dec.unused_data
    if rest.strip(b"\x00"):
        raise InputError("trailing garbage after the gzip stream", source=path)
    return b"".join(out)


def detect_tardis_type(header: list[str]) -> str:
    """Data type of a Tardis CSV from its column names (``trades``, ``incremental_book_L2``,
    ``quotes`` -- also book_ticker -- or ``book_snapshot``); raises on anything else."""
    cols = set(header)
    if "strike_price" in cols:  # options_chain also has bid_price/ask_price columns
        raise InputError("options_chain files are not supported")
    if any(_SNAP_RE.match(c) for c in cols):
        return SNAPSHOT_N
    if "is_snapshot" in cols:
        return L2
    if cols & {"ask_price", "bid_price", "ask_amount", "bid_amount"}:
        return QUOTES
    if cols & {"id", "side", "price", "amount"}:
        return TRADES
    raise InputError(
        f"unrecognized Tardis CSV header {header!r}; supported: trades, incremental_book_L2, "
        "quotes/book_ticker, book_snapshot_N",
    )


def _field_counts_plausible(data: bytes, n_fields: int) -> bool:
    """Cheap test: as many commas as (lines x separators).  Together with polars refusing lines
    with *more* fields than the header, it rules out short lines too (a short line would need a
    long one to balance the count)."""
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    return data.count(b",") == n_lines * (n_fields - 1)


def _check_field_counts(data: bytes, n_fields: int, path: str) -> None:
    """Every line must have the header's number of fields (vectorised; Tardis never quotes)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    if len(buf) and buf[-1] != 10:  # last line without a trailing newline
        newlines = np.append(newlines, len(buf))
    commas = np.flatnonzero(buf == 44)
    per_line = np.diff(np.searchsorted(commas, newlines), prepend=0)
    bad = np.flatnonzero(per_line != n_fields - 1)
    if len(bad):
        i = int(bad[0])
        start = int(newlines[i - 1]) + 1 if i else 0
        text = data[start:int(newlines[i])].decode("utf-8", "replace").rstrip("\r")
        what = "is empty" if not text else f"has {per_line[i] + 1} fields, the header has {n_fields}"
        if i == len(newlines) - 1 and len(buf) and buf[-1] != 10:
            what += " (file cut short?)"
        raise InputError(f"line {what}: {text[:120]!r}", source=path, line=i + 1)


def _parse(data: bytes, header: list[str], columns: list[str], path: str) -> pl.DataFrame:
    """Typed polars parse of ``columns``; on failure, find and name the bad line."""
    schema = {c: (pl.Int64 if c in _INT_COLUMNS else pl.Float64 if c in _FLOAT_COLUMNS or _SNAP_RE.match(c)
                  else pl.String) for c in columns}
    try:
        return pl.read_csv(io.BytesIO(data), columns=columns, schema_overrides=schema, has_header=True)
    except Exception as exc:  # polars reports byte offsets, not lines: find the line ourselves
        _check_field_counts(data, len(header), path)
        try:
            raw = pl.read_csv(io.BytesIO(data), columns=columns, infer_schema=False, has_header=True)
        except Exception:
            raise InputError(f"cannot parse CSV ({exc})", source=path) from exc
        for c, dt in schema.items():
            if dt == pl.String:
                continue
            s = raw[c]
            cast = s.str.strip_chars().cast(dt, strict=False)
            bad = (s.is_not_null() & (s.str.strip_chars() != "") & cast.is_null()).arg_true()
            if len(bad):
                r = int(bad[0])
                raise InputError(f"bad number {s[r]!r} in column {c!r}", source=path, line=r + 2) from exc
        raise InputError(f"cannot parse CSV ({exc})", source=path) from exc


def _first_true(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def _fail_rows(mask: np.ndarray, message: str, path: str, values=None) -> None:
    r = _first_true(mask)
    if r is not None:
        shown = f": {values[r]!r}" if values is not None else ""
        raise InputError(message + shown, source=path, line=r + 2)


def _check_local_sorted(local: np.ndarray, path: str) -> None:
    drop = np.flatnonzero(np.diff(local) < 0)
    if len(drop):
        r = int(drop[0]) + 1
        raise InputError(
            f"local_timestamp goes backwards ({local[r - 1] // 1000} -> {local[r] // 1000} µs); Tardis files are "
            "written in arrival order, so this file looks concatenated or corrupted (sort it yourself if intended)",
            source=path, line=r + 2,
        )


def _checked_price(v: np.ndarray, col: str, path: str, allow_null: np.ndarray | None = None) -> None:
    bad = ~np.isfinite(v) | (v <= 0)
    if allow_null is not None:
        bad &= ~allow_null
    _fail_rows(bad, f"{col} must be a finite positive number", path, v)


def _checked_amount(v: np.ndarray, col: str, path: str, allow_null: np.ndarray | None = None) -> None:
    bad = ~np.isfinite(v) | (v < 0)
    if allow_null is not None:
        bad &= ~allow_null
    _fail_rows(bad, f"{col} must be a finite non-negative number", path, v)


def _floats(df: pl.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    """Column as float64 with nulls as NaN, plus the null mask."""
    s = df[col]
    if s.null_count() == 0:  # the common case: zero-copy, no mask to build
        return s.to_numpy().astype(np.float64, copy=False), np.zeros(len(s), bool)
    null = s.is_null().to_numpy()
    return s.fill_null(float("nan")).to_numpy().astype(np.float64, copy=False), null


def _codes(df: pl.DataFrame, col: str, mapping: dict[str, int], message: str, path: str) -> np.ndarray:
    """Map a text column to int8 codes (case and spaces ignored); unknown text is an error.

    Done in polars: turning a string column into a numpy object array is the slowest step
    otherwise."""
    raw = df[col].cast(pl.String)
    codes = raw.replace_strict(mapping, default=None, return_dtype=pl.Int8)
    if codes.null_count():  # only then pay for normalising case, spaces and nulls
        norm = raw.fill_null("").str.strip_chars().str.to_lowercase()
        codes = norm.replace_strict(mapping, default=None, return_dtype=pl.Int8)
        bad = codes.is_null().to_numpy()
        if bad.any():
            _fail_rows(bad, message, path, df[col].to_numpy())
    return codes.to_numpy()


def _trades(df: pl.DataFrame, exch, local, path: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(df)
    side = _codes(df, "side", {"buy": 1, "sell": -1, "unknown": 0, "": 0},
                  "trade side must be buy, sell or unknown", path)
    price, amount = _price_amount(df, path)
    return _table(exch, local, TRADE, side, price, amount), np.arange(n, dtype=np.int64) + 2


def _price_amount(df: pl.DataFrame, path: str) -> tuple[np.ndarray, np.ndarray]:
    """The required ``price`` and ``amount`` columns, parsed and checked (errors name the line)."""
    price, pnull = _floats(df, "price")
    amount, anull = _floats(df, "amount")
    _fail_rows(pnull, "empty price", path)
    _fail_rows(anull, "empty amount", path)
    _checked_price(price, "price", path)
    _checked_amount(amount, "amount", path)
    return price, amount


def _snapshot_groups(is_snap: np.ndarray, side: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Bool mask of rows that start a new snapshot: the first row of each run of snapshot rows,
    and a row whose (side, price) already occurred in the current snapshot (back-to-back
    snapshots)."""
    starts = is_snap & ~np.concatenate(([False], is_snap[:-1]))
    seen: set = set()
    for r in np.flatnonzero(is_snap).tolist():
        key = (int(side[r]), float(price[r]))
        if starts[r] or key in seen:
            starts[r] = True
            seen = set()
        seen.add(key)
    return starts


def _l2(df: pl.DataFrame, exch, local, path: str) -> tuple[np.ndarray, np.ndarray, int]:
    n = len(df)
    is_snap = _codes(df, "is_snapshot", {"true": 1, "false": 0, "1": 1, "0": 0},
                     "is_snapshot must be true or false", path).astype(bool)
    side = _codes(df, "side", {"bid": BID, "buy": BID, "ask": ASK, "sell": ASK}, "book side must be bid or ask", path)
    price, amount = _price_amount(df, path)

    starts = _snapshot_groups(is_snap, side, price)
    s_rows = np.flatnonzero(starts)
    if len(s_rows) == 0:
        kind = np.where(is_snap, SNAPSHOT, DEPTH)
        return _table(exch, local, kind, side, price, amount), np.arange(n, dtype=np.int64) + 2, 0
    # Two CLEAR rows (bid, ask) go in front of each snapshot start.  ``src`` is the input row
    # behind each output row; whole columns are then gathered (fast) rather than scattered into
    # the structured table (slow, strided).
    m = n + 2 * len(s_rows)
    pos = np.arange(n) + 2 * np.cumsum(starts)
    src = np.empty(m, np.int64)
    src[pos] = np.arange(n)
    clear_bid, clear_ask = pos[s_rows] - 2, pos[s_rows] - 1
    src[clear_bid] = s_rows
    src[clear_ask] = s_rows
    is_clear = np.zeros(m, bool)
    is_clear[clear_bid] = is_clear[clear_ask] = True
    kind = np.where(is_clear, CLEAR, np.where(is_snap[src], SNAPSHOT, DEPTH))
    out_side = side[src]
    out_side[clear_bid], out_side[clear_ask] = BID, ASK
    out_price = np.where(is_clear, np.nan, price[src])
    out_qty = np.where(is_clear, 0.0, amount[src])
    return _table(exch[src], local[src], kind, out_side, out_price, out_qty), src + 2, len(s_rows)


def _table(exch, local, kind, side, price, qty) -> np.ndarray:
    """Event table from whole columns (order_id 0)."""
    t = np.empty(len(exch), EVENT_DTYPE)
    t["exch_ts"], t["local_ts"], t["kind"], t["side"] = exch, local, kind, side
    t["price"], t["qty"], t["order_id"] = price, qty, 0
    return t


def _quote_sides(df: pl.DataFrame, path: str):
    """Per side: price, amount, and the 'empty side' mask (both empty, or a zero price/amount)."""
    out = {}
    for s in ("bid", "ask"):
        price, pnull = _floats(df, f"{s}_price")
        amount, anull = _floats(df, f"{s}_amount")
        _fail_rows(pnull ^ anull, f"{s}_price and {s}_amount must be both given or both empty", path)
        empty = pnull | (price == 0) | (amount == 0)
        _checked_price(price, f"{s}_price", path, allow_null=empty)
        _checked_amount(amount, f"{s}_amount", path, allow_null=empty)
        out[s] = (price, amount, empty)
    return out


def _quotes(df: pl.DataFrame, exch, local, path: str, quotes_only: bool) -> tuple[np.ndarray, np.ndarray, int]:
    n = len(df)
    sides = _quote_sides(df, path)
    t = np.zeros(2 * n, EVENT_DTYPE)
    line = np.repeat(np.arange(n, dtype=np.int64) + 2, 2)
    keep = np.ones(2 * n, bool)
    n_empty = 0
    for j, (name, sgn) in enumerate((("bid", BID), ("ask", ASK))):
        price, amount, empty = sides[name]
        sl = slice(j, None, 2)
        t["exch_ts"][sl], t["local_ts"][sl], t["side"][sl] = exch, local, sgn
        t["kind"][sl] = np.where(empty, CLEAR, BBO)
        t["price"][sl] = np.where(empty, np.nan, price)
        t["qty"][sl] = np.where(empty, 0.0, amount)
        n_empty += int(empty.sum())
        if not quotes_only:
            keep[sl] = ~empty
    return t[keep], line[keep], n_empty


def _snapshot_columns(header: list[str], path: str) -> int:
    levels = {}
    for c in header:
        m = _SNAP_RE.match(c)
        if m:
            levels.setdefault(int(m.group(2)), set()).add((m.group(1), m.group(3)))
    n = len(levels)
    want = {(a, b) for a in ("asks", "bids") for b in ("price", "amount")}
    for i in range(n):
        if levels.get(i) != want:
            missing = sorted(f"{a}[{i}].{b}" for a, b in want - levels.get(i, set()))
            raise InputError(f"book_snapshot header lacks column(s) {missing}", source=path, line=1)
    return n


def _book_snapshot(df: pl.DataFrame, exch, local, path: str, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(df)
    width = 2 + 2 * n_levels  # CLEAR bid, CLEAR ask, then bids 0..N-1, asks 0..N-1
    t = np.zeros((n, width), EVENT_DTYPE)
    keep = np.ones((n, width), bool)
    t["exch_ts"] = exch[:, None]
    t["local_ts"] = local[:, None]
    t["kind"][:, :2] = CLEAR
    t["side"][:, 0], t["side"][:, 1] = BID, ASK
    t["price"][:, :2] = np.nan
    for j, (name, sgn) in enumerate((("bids", BID), ("asks", ASK))):
        for i in range(n_levels):
            col = 2 + j * n_levels + i
            price, pnull = _floats(df, f"{name}[{i}].price")
            amount, anull = _floats(df, f"{name}[{i}].amount")
            _fail_rows(pnull ^ anull, f"{name}[{i}].price and .amount must be both given or both empty", path)
            _checked_price(price, f"{name}[{i}].price", path, allow_null=pnull)
            _checked_amount(amount, f"{name}[{i}].amount", path, allow_null=anull)
            t["kind"][:, col], t["side"][:, col] = SNAPSHOT, sgn
            t["price"][:, col], t["qty"][:, col] = price, amount
            keep[:, col] = ~pnull
    line = np.repeat(np.arange(n, dtype=np.int64) + 2, width).reshape(n, width)
    return t[keep], line[keep]


def _one_symbol(df: pl.DataFrame, symbol: str | None, path: str) -> tuple[pl.DataFrame, str]:
    syms = df["symbol"].drop_nulls().unique().to_list()
    if symbol is None:
        if len(syms) > 1:
            raise InputError(
                f"file holds {len(syms)} symbols ({', '.join(sorted(map(str, syms))[:10])}); pass symbol= to pick one",
                source=path, line=2,
            )
        return df, (syms[0] if syms else "")
    want = symbol.upper()
    return df.filter(df["symbol"].str.to_uppercase() == want), symbol


def _read_file(path: str, symbol: str | None, quotes_only: bool | None) -> _FileRows:
    data = _read_bytes(path)
    if re.search(rb"\S", data) is None:
        raise InputError("empty file (no header)", source=path, line=1)
    first = data[: data.find(b"\n")] if b"\n" in data else data
    header = [h.strip() for h in first.decode("utf-8", "replace").rstrip("\r").split(",")]
    try:
        dtype = detect_tardis_type(header)
    except InputError as exc:
        raise InputError(exc.message, source=path, line=1) from None
    if "liquidation" in Path(path).name.lower() and dtype == TRADES:
        raise InputError("liquidations files are not supported (same columns as trades, different meaning)",
                         source=path, line=1)
    n_levels = _snapshot_columns(header, path) if dtype == SNAPSHOT_N else 0
    if dtype == SNAPSHOT_N:
        needed = _BASE_COLUMNS + [f"{a}[{i}].{b}" for i in range(n_levels) for a in ("asks", "bids")
                                  for b in ("price", "amount")]
    else:
        needed = _REQUIRED[dtype]
    missing = [c for c in needed if c not in header]
    if missing:
        raise InputError(f"{dtype} file lacks column(s) {missing}; header is {header}", source=path, line=1)
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise InputError(f"duplicate column(s) {dup}", source=path, line=1)
    if data.endswith((b"\n\n", b"\n\r\n")):  # tolerate blank lines at the very end only
        data = data.rstrip(b"\r\n") + b"\n"
    if not _field_counts_plausible(data, len(header)):
        _check_field_counts(data, len(header), path)  # names the first bad line
    df = _parse(data, header, needed, path)
    rows_in_file = len(df)
    df = df.with_row_index("_row")
    exchanges = df["exchange"].drop_nulls().unique().to_list()
    df, sym = _one_symbol(df, symbol, path)
    row = df["_row"].to_numpy().astype(np.int64)
    # Validation below names lines through the index of the row in ``df``; map them back to
    # file lines when a symbol filter removed rows.
    try:
        exch_ts, local_ts = _timestamps(df, path)
    except InputError as exc:
        raise _at_file_line(exc, row, path) from None
    keep = _screen_timestamps(exch_ts, local_ts, row, path)
    if not keep.all():
        df, row, exch_ts, local_ts = df.filter(pl.Series(keep)), row[keep], exch_ts[keep], local_ts[keep]
    try:
        _check_local_sorted(local_ts, path)
        if dtype == TRADES:
            table, line = _trades(df, exch_ts, local_ts, path)
            extra = {}
        elif dtype == L2:
            table, line, n_snap = _l2(df, exch_ts, local_ts, path)
            extra = {"snapshots": n_snap}
        elif dtype == QUOTES:
            table, line, n_empty = _quotes(df, exch_ts, local_ts, path, bool(quotes_only))
            extra = {"empty_quote_sides": n_empty}
        else:
            table, line = _book_snapshot(df, exch_ts, local_ts, path, n_levels)
            extra = {"book_depth_levels": n_levels}
    except InputError as exc:
        raise _at_file_line(exc, row, path) from None
    if len(row):
        line = row[line - 2] + 2
    return _FileRows(path, dtype, table, line, sym, str(exchanges[0]) if len(exchanges) == 1 else "",
                     rows_in_file, extra)


def _at_file_line(exc: InputError, row: np.ndarray, path: str) -> InputError:
    """``exc`` with its line (``r + 2`` for row ``r`` of the filtered frame) mapped back to the
    file's line (a symbol filter or dropped rows remove rows)."""
    if exc.line is not None and len(row) and 2 <= exc.line < len(row) + 2:
        return InputError(exc.message, source=path, line=int(row[exc.line - 2]) + 2)
    return exc


def _timestamps(df: pl.DataFrame, path: str) -> tuple[np.ndarray, np.ndarray]:
    """``timestamp`` and ``local_timestamp`` as int64 ns; empty cells are errors, values outside
    the plausible range become -1 (judged by :func:`_screen_timestamps`)."""
    out = []
    for c in ("timestamp", "local_timestamp"):
        s = df[c]
        _fail_rows(s.is_null().to_numpy(), f"empty {c}", path)
        v = s.to_numpy().astype(np.int64, copy=False)
        out.append(np.where((v < _US_MIN) | (v >= _US_MAX), -1, v * 1000))
    return out[0], out[1]


def _screen_timestamps(exch: np.ndarray, local: np.ndarray, row: np.ndarray, path: str) -> np.ndarray:
    """Rows to keep: a row whose timestamps are out of the µs range, off the local timeline, or
    whose feed latency is out of line (:mod:`mmsweep.sweep.data.screen`) is dropped with a
    warning, or stops the read when such rows are many.  Lines named are the file's."""
    unit = (exch < 0) | (local < 0)
    bad, why = unit.copy(), np.zeros(len(exch), np.int8)
    ok = ~unit  # the others are judged without the unreadable ones
    bad[ok], why[ok] = timestamp_outliers(exch[ok], local[ok])
    if not bad.any():
        return np.ones(len(exch), bool)
    median = int(np.median((local - exch)[~bad])) if (~bad).any() else 0

    def reason(i: int) -> str:
        if unit[i]:
            col = "timestamp" if exch[i] < 0 else "local_timestamp"
            return f"{col} is not in microseconds since the epoch (2000..2100)"
        return describe_timestamp(int(why[i]), int(exch[i]), int(local[i]), median)

    drop_or_stop(bad, len(exch), lambda i: {"line": int(row[i]) + 2}, "an implausible timestamp", path, reason,
                 unit="line")
    return ~bad


def _coverage(parts: list[_FileRows]) -> list[dict]:
    """First and last local time (ns) of each file; warns when files merged into one source do
    not cover the same span: where one ends early (or starts late) its data are stale, e.g.
    quotes of 4 minutes merged with trades of 2 hours leave the book frozen for the rest."""
    spans = [(p, int(p.table["local_ts"].min()), int(p.table["local_ts"].max())) for p in parts if len(p.table)]
    out = [{"path": p.path, "type": p.dtype, "first_local_ns": lo, "last_local_ns": hi} for p, lo, hi in spans]
    if len(spans) < 2:
        return out
    lo_all, hi_all = min(lo for _, lo, _ in spans), max(hi for _, _, hi in spans)
    total = max(hi_all - lo_all, 1)
    for p, lo, hi in spans:
        missing = (lo - lo_all) + (hi_all - hi)
        if missing > STALE_AFTER_NS:
            warnings.warn(f"{p.path}: its {p.dtype} rows cover {(hi - lo) / 1e9:,.1f} s of the merged "
                          f"{total / 1e9:,.1f} s ({100 * (hi - lo) / total:.1f} %); for the rest of the span this "
                          "source is stale (frames flag the rows whose book has not changed for "
                          f"{STALE_AFTER_NS / 1e9:g} s)", UserWarning, stacklevel=3)
    return out


def _as_paths(paths) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    if isinstance(paths, Iterable):
        out = [os.fspath(p) for p in paths]
        if not out:
            raise InputError("no files given")
        return out
    raise TypeError(f"paths must be a path or a list of paths, got {type(paths).__name__}")


def _peek_type(path: str) -> str | None:
    """Data type from the header alone (to know whether depth is present before parsing)."""
    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        with (gzip.open if gz else open)(path, "rb") as fh:
            first = fh.readline()
        return detect_tardis_type([h.strip() for h in first.decode("utf-8", "replace").rstrip("\r\n").split(",")])
    except Exception:
        return None  # the full read reports the problem with file and line


def read_tardis(paths, *, symbol: str | None = None, tick_size: float | None = None, lot_size: float | None = None,
                venue: str | None = None) -> Events:
    """Read one or several Tardis.dev normalized CSV files (plain or gzip) of one symbol.

    Args:
        paths: a path or a list of paths; any mix of trades, incremental_book_L2,
            quotes/book_ticker and book_snapshot_N files, merged into one table.
        symbol: required when a file holds several symbols (rows of other symbols are dropped;
            matched case-insensitively).  Without it, all files must hold the same one symbol.
        tick_size: price increment (quote currency); inferred from the prices if None, checked
            against every price if given.
        lot_size: quantity increment (the file's amount unit); inferred if None.
        venue: free text for :class:`Instrument`; default the files' ``exchange`` column.

    Returns:
        :class:`Events` sorted by ``local_ts`` (ns).  ``meta`` holds per-file types and row counts,
        event counts per kind, the number of snapshots, clamped ``exch_ts`` rows and empty quote
        sides.  The module docstring lists the conversion rules.

    Raises:
        InputError: naming the file and the 1-based line (line 1 is the header) at fault.
    """
    files = _as_paths(paths)
    types = [_peek_type(p) for p in files]
    quotes_only = not any(t in (L2, SNAPSHOT_N) for t in types)
    parts = [_read_file(p, symbol, quotes_only) for p in files]

    syms = {p.symbol.upper() for p in parts if p.symbol}
    if symbol is None and len(syms) > 1:
        raise InputError(
            "files hold different symbols: " + ", ".join(f"{p.path}: {p.symbol}" for p in parts)
            + "; read one symbol at a time (symbol=...)",
            source=parts[0].path,
        )
    if symbol is not None and not any(len(p.table) for p in parts):
        raise InputError(f"no rows for symbol {symbol!r}", source=files[0], line=2)
    sym = symbol if symbol is not None else (next(iter(syms)) if syms else "")
    sym = next((p.symbol for p in parts if p.symbol and p.symbol.upper() == sym.upper()), sym)

    # Tick alignment is checked per file so that the error can name the line.
    if tick_size is not None:
        for p in parts:
            try:
                check_tick_alignment(p.table, tick_size, source=p.path)
            except InputError as exc:
                raise InputError(exc.message, source=p.path, line=int(p.line[exc.row])) from None

    table = np.concatenate([p.table for p in parts]) if parts else np.zeros(0, EVENT_DTYPE)
    if len(table) == 0:
        raise InputError("no data rows in " + ", ".join(files), source=files[0], line=2)
    file_idx = np.concatenate([np.full(len(p.table), i, np.int32) for i, p in enumerate(parts)])
    line = np.concatenate([p.line for p in parts])
    if len(parts) > 1:
        # Each file is already in local_ts order; a stable sort on (local_ts, trades first)
        # keeps path order and then line order inside ties.
        type_rank = (table["kind"] != TRADE).astype(np.int8)
        order = np.lexsort((np.arange(len(table)), type_rank, table["local_ts"]))
        table, file_idx, line = table[order], file_idx[order], line[order]

    early = table["local_ts"] < table["exch_ts"]
    n_early = int(early.sum())
    max_early = int((table["exch_ts"] - table["local_ts"])[early].max()) if n_early else 0
    if n_early:
        table["exch_ts"][early] = table["local_ts"][early]
        warnings.warn(
            f"{n_early} row(s) had local_timestamp < timestamp (by up to {max_early / 1e6:.3f} ms); "
            "exch_ts clamped to local_ts for them", UserWarning, stacklevel=2,
        )

    try:
        validate_events(table, source=", ".join(files))
    except InputError as exc:  # should not happen after the per-file checks; still name the line
        r = exc.row if exc.row is not None else 0
        raise InputError(exc.message, source=parts[int(file_idx[r])].path, line=int(line[r])) from None

    priced = table["kind"] != CLEAR
    tick_inferred = tick_size is None
    lot_inferred = lot_size is None
    strays = 0
    if tick_inferred:
        tick_size, stray = tick_and_strays(table["price"], priced)
        if stray.any():
            strays = int(stray.sum())
            first = int(np.argmax(stray))
            drop_or_stop(stray, int(priced.sum()), lambda i: {"line": int(line[i])},
                         f"a price off the {tick_size:g} tick grid of every other price",
                         parts[int(file_idx[first])].path, lambda i: f"price {float(table['price'][i])!r}")
            table, file_idx, line, priced = table[~stray], file_idx[~stray], line[~stray], priced[~stray]
    coverage = _coverage(parts)
    if lot_inferred:
        lot_size = infer_lot_size(table["qty"][priced])
    exchanges = {p.exchange for p in parts if p.exchange}
    if venue is None:
        venue = exchanges.pop() if len(exchanges) == 1 else ""
    instrument = Instrument(symbol=sym, tick_size=float(tick_size), lot_size=float(lot_size), venue=venue)

    kinds, counts = np.unique(table["kind"], return_counts=True)
    snap_levels = [p.extra["book_depth_levels"] for p in parts if "book_depth_levels" in p.extra]
    meta = {
        "format": "tardis-csv",
        "files": [{"path": p.path, "type": p.dtype, "rows": p.rows, "events": int(len(p.table))} for p in parts],
        "counts": {KIND_NAMES[int(k)]: int(c) for k, c in zip(kinds, counts)},
        "snapshots": sum(p.extra.get("snapshots", 0) for p in parts) + sum(
            int(np.count_nonzero((p.table["kind"] == CLEAR) & (p.table["side"] == BID)))
            for p in parts if p.dtype == SNAPSHOT_N),
        "book_depth_levels": min(snap_levels) if snap_levels else None,
        "empty_quote_sides": sum(p.extra.get("empty_quote_sides", 0) for p in parts),
        "has_depth_files": not quotes_only,
        "exch_ts_clamped": n_early,
        "exch_ts_clamped_max_ns": max_early,
        "tick_size_inferred": tick_inferred,
        "lot_size_inferred": lot_inferred,
        "off_grid_prices_dropped": strays,
        "coverage": coverage,
        "time_unit": "ns",
    }
    return Events(table, instrument, source=", ".join(files), meta=meta)
