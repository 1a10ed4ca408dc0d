"""Reader for Binance's public daily CSV archives (data.binance.vision) -> :class:`Events`.

The archives are the free source most users have for months of data: one zipped CSV a day per
symbol and stream, e.g. ``BTCUSDT-bookTicker-2024-08-08.zip`` and ``BTCUSDT-trades-2024-08-08.zip``
(the CSV inside may be given unzipped too).  Layouts (a header line is optional: older archives
have none, and the columns are then identified by their count and the last column):

* ``bookTicker``: ``update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,
  transaction_time,event_time`` -> two BBO rows (bid, ask), ``exch_ts`` = transaction time;
* ``trades``: ``id,price,qty,quote_qty,time,is_buyer_maker`` -> one TRADE row;
* ``aggTrades``: ``agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,
  is_buyer_maker`` -> one TRADE row per aggregate (all its fills share price and aggressor).

``is_buyer_maker = true`` means the seller was the aggressor (side -1), else the buyer (+1).
Times are milliseconds since the epoch.

**No local receive time.**  The archives only carry exchange times, so the bot's clock is an
explicit assumption: ``local_ts = exch_ts + feed_latency_ns``, one constant the caller must give
(``data.files.<name>.feed_latency_ms`` in an experiment, ``--feed-latency-ms`` on the command
line).  There is no depth either: this is a top-of-book + trades source, like Tardis quotes, so
frames build without depth features and without queue state (the BBO rows are the book).

Rows of the same millisecond keep file order; trades come before book tickers of the same
millisecond (a trade moves the book, the ticker then shows the result).  Bad input (a missing
column, a non-numeric or non-positive price, a negative quantity, a time that is not ms since the
epoch, a repeated trade id, an empty file) is an error naming the file and the 1-based line
(line 1 is the header when there is one).
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import InputError
from .events import BBO, TRADE, Events, Instrument, make_table, validate_events
from .screen import drop_or_stop, tick_and_strays

LAYOUTS = {
    "bookTicker": ("update_id", "best_bid_price", "best_bid_qty", "best_ask_price", "best_ask_qty",
                   "transaction_time", "event_time"),
    "trades": ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker"),
    "aggTrades": ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
                  "is_buyer_maker"),
}
_NAME = re.compile(r"^(?P<symbol>[A-Z0-9_]+)-(?P<stream>bookTicker|trades|aggTrades)-(?P<date>\d{4}-\d{2}(-\d{2})?)"
                   r"\.(zip|csv)$")
_MS_LOW, _MS_HIGH = 946_684_800_000, 4_102_444_800_000  # 2000 .. 2100
_MS = 1_000_000


def is_archive_name(path: str | os.PathLike) -> bool:
    """Whether a file is named like a Binance archive CSV (``SYMBOL-stream-YYYY-MM-DD.zip``)."""
    return bool(_NAME.match(Path(path).name))


def archive_date(path: str | os.PathLike) -> str | None:
    m = _NAME.match(Path(path).name)
    return m.group("date") if m else None


def _text(path: str) -> bytes:
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
                if len(names) != 1:
                    raise InputError(f"expected one CSV inside the zip, found {len(names)}: {names[:4]}", source=path)
                return zf.read(names[0])
        with open(path, "rb") as fh:
            return fh.read()
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"cannot read ({exc})", source=path) from None


def _layout(first: bytes, path: str) -> tuple[str, bool]:
    """(stream type, has a header line) from the first line (and the file name)."""
    cells = first.decode("utf-8", "replace").strip().split(",")
    for name, cols in LAYOUTS.items():
        if tuple(c.strip() for c in cells) == cols:
            return name, True
    m = _NAME.match(Path(path).name)
    if cells and cells[0].strip().lstrip("-").isdigit():  # no header: by name, else by shape
        if m:
            stream = m.group("stream")
            if len(cells) != len(LAYOUTS[stream]):
                raise InputError(f"a {stream} archive has {len(LAYOUTS[stream])} columns, line 1 has {len(cells)}",
                                 source=path, line=1)
            return stream, False
        last = cells[-1].strip().lower()
        if len(cells) == 6 and last in ("true", "false"):
            return "trades", False
        if len(cells) == 7:
            return ("aggTrades" if last in ("true", "false") else "bookTicker"), False
    raise InputError("not a Binance archive CSV: expected a header " + " or ".join(
        ",".join(c) for c in LAYOUTS.values()) + f"; got {first[:80]!r}", source=path, line=1)


def _read_one(path: str) -> tuple[str, np.ndarray, np.ndarray, str]:
    """(stream, event rows, their 1-based lines, symbol from the file name)."""
    data = _text(path)
    if not data.strip():
        raise InputError("file is empty", source=path, line=1)
    first = data.split(b"\n", 1)[0]
    stream, header = _layout(first, path)
    cols = LAYOUTS[stream]
    try:
        df = pl.read_csv(io.BytesIO(data), has_header=header, new_columns=list(cols), infer_schema=False)
    except Exception as exc:  # polars' errors name no line: find it by field counts below
        raise InputError(f"malformed CSV ({str(exc).splitlines()[0][:160]})", source=path) from None
    if df.width != len(cols):
        raise InputError(f"expected {len(cols)} columns {','.join(cols)}, got {df.width}", source=path, line=1)
    n = df.height
    if n == 0:
        raise InputError("no data rows", source=path, line=2 if header else 1)
    line = np.arange(n, dtype=np.int64) + (2 if header else 1)

    def numbers(col: str, integer: bool = False) -> np.ndarray:
        s = df[col].str.strip_chars()
        v = s.cast(pl.Int64 if integer else pl.Float64, strict=False)
        bad = v.is_null() & s.is_not_null() | s.is_null()
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise InputError(f"{col} {df[col][i]!r} is not a number", source=path, line=int(line[i]))
        return v.to_numpy()

    def check_ms(ms: np.ndarray, col: str) -> None:
        bad = (ms < _MS_LOW) | (ms >= _MS_HIGH)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"{col} {int(ms[i])} is not milliseconds since the epoch (2000-2100)", source=path,
                             line=int(line[i]))

    def check_px(px: np.ndarray, col: str) -> None:
        bad = ~(np.isfinite(px) & (px > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"{col} must be finite and positive, got {px[i]!r}", source=path, line=int(line[i]))

    def check_qty(q: np.ndarray, col: str) -> None:
        bad = ~(np.isfinite(q) & (q >= 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"{col} must be finite and non-negative, got {q[i]!r}", source=path, line=int(line[i]))

    if stream == "bookTicker":
        ts = numbers("transaction_time", True)
        check_ms(ts, "transaction_time")
        bid, ask = numbers("best_bid_price"), numbers("best_ask_price")
        bq, aq = numbers("best_bid_qty"), numbers("best_ask_qty")
        for v, c in ((bid, "best_bid_price"), (ask, "best_ask_price")):
            check_px(v, c)
        for v, c in ((bq, "best_bid_qty"), (aq, "best_ask_qty")):
            check_qty(v, c)
        crossed = bid >= ask
        if crossed.any():
            i = int(np.argmax(crossed))
            raise InputError(f"crossed quote: best bid {bid[i]} >= best ask {ask[i]}", source=path, line=int(line[i]))
        exch = np.repeat(ts * _MS, 2)
        table = make_table(exch_ts=exch, local_ts=exch, kind=np.full(2 * n, BBO, np.uint8),
                           side=np.tile(np.array([1, -1], np.int8), n),
                           price=np.column_stack([bid, ask]).ravel(), qty=np.column_stack([bq, aq]).ravel())
        rows_line = np.repeat(line, 2)
    else:
        tcol, qcol, idcol = (("time", "qty", "id") if stream == "trades" else
                             ("transact_time", "quantity", "agg_trade_id"))
        ts = numbers(tcol, True)
        check_ms(ts, tcol)
        px, qty = numbers("price"), numbers(qcol)
        check_px(px, "price")
        check_qty(qty, qcol)
        ids = numbers(idcol, True)
        uniq, first_at, counts = np.unique(ids, return_index=True, return_counts=True)
        if (counts > 1).any():
            dup = int(uniq[np.argmax(counts > 1)])
            rows = np.flatnonzero(ids == dup)
            raise InputError(f"{idcol} {dup} appears twice (lines {int(line[rows[0]])} and {int(line[rows[1]])})",
                             source=path, line=int(line[rows[1]]))
        maker = df["is_buyer_maker"].str.strip_chars().str.to_lowercase()
        ok = maker.is_in(["true", "false"])
        if not ok.all():
            i = int(np.argmax(~ok.to_numpy()))
            raise InputError(f"is_buyer_maker must be true or false, got {df['is_buyer_maker'][i]!r}", source=path,
                             line=int(line[i]))
        side = np.where((maker == "true").to_numpy(), -1, 1).astype(np.int8)
        exch = ts * _MS
        table = make_table(exch_ts=exch, local_ts=exch, kind=np.full(n, TRADE, np.uint8), side=side, price=px,
                           qty=qty)
        rows_line = line
    m = _NAME.match(Path(path).name)
    return stream, table, rows_line, (m.group("symbol") if m else "")


def read_binance_archive(paths, *, feed_latency_ns: int | None = None, symbol: str | None = None,
                         tick_size: float | None = None, lot_size: float | None = None) -> Events:
    """Read one day (or any span) of Binance archive CSVs of one symbol: bookTicker plus trades
    or aggTrades files, merged by time.

    Args:
        paths: a path or a list of paths (``.zip`` or ``.csv``).
        feed_latency_ns: the assumed feed latency (ns, >= 0): ``local_ts = exch_ts + this``.
            Required: the archives have no receive times.
        symbol: the symbol (default: from the file names).
        tick_size, lot_size: given, or inferred from the prices and quantities.

    Returns:
        :class:`Events` (BBO and TRADE rows) whose ``meta`` says the feed latency is an
        assumption (``feed_latency_assumed_ns``), the files and their streams.
    """
    files = [os.fspath(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
    if feed_latency_ns is None:
        raise InputError("Binance archive files carry no local receive time: give the feed latency to assume "
                         "(feed_latency_ms in the experiment's file entry, --feed-latency-ms on the command line)",
                         source=files[0], key="feed_latency_ms")
    if isinstance(feed_latency_ns, bool) or not isinstance(feed_latency_ns, (int, np.integer)) or feed_latency_ns < 0:
        raise InputError(f"feed latency must be a non-negative number of ns, got {feed_latency_ns!r}",
                         key="feed_latency_ms")
    parts = [_read_one(p) for p in files]
    names = {sym for _, _, _, sym in parts if sym}
    if symbol is None and len(names) > 1:
        raise InputError("files of different symbols: " + ", ".join(f"{p}: {s}" for p, (_, _, _, s) in
                                                                    zip(files, parts)), source=files[0])
    sym = (symbol or (names.pop() if names else "")).upper()
    streams = [s for s, _, _, _ in parts]
    if "bookTicker" not in streams:
        raise InputError("no bookTicker file: the archive's trades alone make no book (add the day's "
                         "<SYMBOL>-bookTicker-<date>.zip)", source=files[0])
    table = np.concatenate([t for _, t, _, _ in parts])
    line = np.concatenate([ln for _, _, ln, _ in parts])
    file_idx = np.concatenate([np.full(len(t), i, np.int32) for i, (_, t, _, _) in enumerate(parts)])
    rank = (table["kind"] != TRADE).astype(np.int8)  # trades first within a millisecond
    order = np.lexsort((np.arange(len(table)), rank, table["exch_ts"]))
    table, line, file_idx = table[order], line[order], file_idx[order]
    table["local_ts"] = table["exch_ts"] + int(feed_latency_ns)

    tick_inferred, lot_inferred = tick_size is None, lot_size is None
    strays = 0
    if tick_inferred:
        tick_size, stray = tick_and_strays(table["price"], np.ones(len(table), bool))
        if stray.any():
            strays = int(stray.sum())
            first = int(np.argmax(stray))
            drop_or_stop(stray, len(table), lambda i: {"line": int(line[i])},
                         f"a price off the {tick_size:g} tick grid of every other price", files[int(file_idx[first])],
                         lambda i: f"price {float(table['price'][i])!r}")
            keep = ~stray
            table, line, file_idx = table[keep], line[keep], file_idx[keep]
    else:
        ticks = table["price"] / tick_size
        off = np.abs(ticks - np.round(ticks)) > np.maximum(1e-6, 1e-9 * np.abs(ticks))
        if off.any():
            i = int(np.argmax(off))
            raise InputError(f"price {table['price'][i]!r} is not a multiple of tick_size={tick_size}",
                             source=files[int(file_idx[i])], line=int(line[i]))
    if lot_inferred:
        from .events import infer_lot_size

        lot_size = infer_lot_size(table["qty"][table["qty"] > 0])
    validate_events(table, source=", ".join(files))
    from .instruments import infer_contract

    contract = infer_contract(sym, "binance")
    venue = "binance-coinm" if contract.inverse else "binance-usdm"
    instrument = Instrument(sym, float(tick_size), float(lot_size), contract.contract_size, venue, contract.inverse)
    kinds = table["kind"]
    meta = {
        "format": "binance-archive",
        "files": [{"path": p, "stream": s, "rows": int(len(t))} for p, (s, t, _, _) in zip(files, parts)],
        "feed_latency_assumed_ns": int(feed_latency_ns),
        "local_ts_unit": "ms (exchange times only; local = exchange + the assumed feed latency)",
        "counts": {"bbo": int((kinds == BBO).sum()), "trade": int((kinds == TRADE).sum())},
        "tick_size_inferred": tick_inferred,
        "lot_size_inferred": lot_inferred,
        "off_grid_prices_dropped": strays,
        "contract": {"inverse": contract.inverse, "contract_size": contract.contract_size,
                     "how": "inferred: " + contract.reason},
    }
    return Events(table, instrument, source=", ".join(files), meta=meta)
