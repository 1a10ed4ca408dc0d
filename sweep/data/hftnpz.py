"""Reader for hftbacktest's event files (``.npz`` with one array ``data``, or a plain ``.npy``).

hftbacktest record (64 bytes): ``ev`` u64, ``exch_ts`` i64, ``local_ts`` i64, ``px`` f64, ``qty`` f64,
``order_id`` u64, ``ival`` i64, ``fval`` f64.  The low byte of ``ev`` is the kind, bits 31/30 flag
the row for the exchange / local processor, bits 29/28 are BUY / SELL.  hftbacktest's converters
write nanoseconds; this reader assumes so.

Mapping to the event table (one row per market event):

* kinds 1 depth, 2 trade, 3 clear, 4 snapshot, 5 BBO keep their meaning; BUY -> side +1,
  SELL -> -1 (both set: +1, as hftbacktest tests bids first; counted in ``meta``).
* Kinds 10-13 (L3 add/cancel/modify/fill) are rejected: no L3 support yet.  Kinds >= 100 (user
  kinds, e.g. mark price) are skipped with a counted warning; other unknown kinds are errors.
* CLEAR keeps its finite "clear up to" price (our book honours it).  A CLEAR with no side flag
  wipes both sides in hftbacktest whatever its price, so its price becomes NaN (side 0).
* Depth/snapshot/BBO rows with no side flag and rows flagged neither EXCH nor LOCAL are ignored by
  hftbacktest's processors; they are skipped here too, with a counted warning.
* ``correct_event_order`` splits an event whose exchange order and arrival order disagree into
  an EXCH-only and a LOCAL-only copy, both carrying both timestamps.  We keep one copy per event:
  every EXCH-flagged row.  Each LOCAL-only row must have an identical EXCH-only twin (checked; a
  LOCAL-only row without one is an error), so nothing is lost or doubled.
* Row order: the order hftbacktest's *local* processor applies the events in (the position of
  each event's LOCAL-flagged copy), then stably sorted by ``local_ts``; for files written by
  hftbacktest's converters the sort changes nothing.
* ``local_ts < exch_ts`` is an error (hftbacktest's converters already shift local time with
  ``correct_local_timestamp``; a file without that correction is better fixed at the source).
"""
from __future__ import annotations

import os
import warnings
import zipfile

import numpy as np

from ..errors import InputError
from .screen import describe_timestamp, drop_or_stop, tick_and_strays, timestamp_outliers
from .events import (
    BBO, CLEAR, DEPTH, EVENT_DTYPE, KIND_NAMES, SNAPSHOT, Events, Instrument, check_tick_alignment,
    infer_lot_size, validate_events,
)

__all__ = ["read_hftbacktest_npz", "read_order_latency", "HFT_EVENT_DTYPE", "ORDER_LATENCY_DTYPE"]

EXCH_EVENT = 1 << 31
LOCAL_EVENT = 1 << 30
BUY_EVENT = 1 << 29
SELL_EVENT = 1 << 28
_L3_KINDS = (10, 11, 12, 13)
_USER_KIND_MIN = 100

HFT_EVENT_DTYPE = np.dtype(
    [("ev", "<u8"), ("exch_ts", "<i8"), ("local_ts", "<i8"), ("px", "<f8"), ("qty", "<f8"),
     ("order_id", "<u8"), ("ival", "<i8"), ("fval", "<f8")],
    align=True,
)
ORDER_LATENCY_DTYPE = np.dtype([("req_ts", "<i8"), ("exch_ts", "<i8"), ("resp_ts", "<i8")])


def _load_array(path: str) -> np.ndarray:
    """The ``data`` array of an ``.npz``, or the array of an ``.npy``."""
    try:
        obj = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise InputError("file not found", source=path) from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"not a readable .npz/.npy file ({exc})", source=path) from exc
    if isinstance(obj, np.ndarray):
        return obj
    with obj:
        if "data" not in obj.files:
            raise InputError(f"no array named 'data' (arrays: {obj.files})", source=path, key="data")
        try:
            return obj["data"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"array 'data' is unreadable ({exc})", source=path, key="data") from exc


def _check_fields(arr: np.ndarray, want: np.dtype, path: str, what: str) -> None:
    if arr.dtype.names is None or arr.ndim != 1:
        raise InputError(f"{what} must be a 1-d structured array with fields {list(want.names)}, "
                         f"got dtype {arr.dtype} shape {arr.shape}", source=path, key="data")
    bad = []
    for name in want.names:
        if name not in arr.dtype.names:
            bad.append(f"missing field {name!r}")
        elif arr.dtype[name] != want[name]:
            bad.append(f"field {name!r} is {arr.dtype[name]}, expected {want[name]}")
    if bad:
        raise InputError(f"{what} has the wrong dtype: " + "; ".join(bad), source=path, key="data")


def _fail(mask: np.ndarray, rows: np.ndarray, message: str, path: str, data: np.ndarray) -> None:
    """Raise naming the file row (0-based index into the file's array) of the first hit."""
    hits = np.flatnonzero(mask)
    if len(hits):
        r = int(rows[hits[0]])
        raise InputError(f"{message}: {data[r]}", source=path, row=r)


def _twin_keys(data: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Sortable identity of rows ignoring the EXCH/LOCAL bits (floats compared bitwise)."""
    d = data[idx]
    keys = np.empty((len(idx), 6), np.uint64)
    keys[:, 0] = d["ev"] & ~np.uint64(EXCH_EVENT | LOCAL_EVENT)
    keys[:, 1] = d["exch_ts"].view(np.uint64)
    keys[:, 2] = d["local_ts"].view(np.uint64)
    keys[:, 3] = np.ascontiguousarray(d["px"]).view(np.uint64)
    keys[:, 4] = np.ascontiguousarray(d["qty"]).view(np.uint64)
    keys[:, 5] = d["order_id"]
    return keys


def _pair_twins(data: np.ndarray, exch_only: np.ndarray, local_only: np.ndarray, path: str) -> np.ndarray:
    """For each EXCH-only row (by index), the index of its LOCAL-only twin."""
    ke, kl = _twin_keys(data, exch_only), _twin_keys(data, local_only)
    oe = np.lexsort(ke.T[::-1])
    ol = np.lexsort(kl.T[::-1])
    n = min(len(oe), len(ol))
    mismatch = np.flatnonzero(np.any(ke[oe[:n]] != kl[ol[:n]], axis=1))
    if len(mismatch) or len(oe) != len(ol):
        i = int(mismatch[0]) if len(mismatch) else n
        if i < len(ol):
            r, what = int(local_only[ol[i]]), "LOCAL-only row"
        else:
            r, what = int(exch_only[oe[i]]), "EXCH-only row"
        raise InputError(
            f"{what} has no identical twin with the other flag ({len(exch_only)} EXCH-only vs {len(local_only)} "
            f"LOCAL-only rows); this reader keeps one copy per event and expects correct_event_order's "
            f"EXCH/LOCAL split: {data[r]}", source=path, row=r,
        )
    twin = np.empty(len(exch_only), np.int64)
    twin[oe] = local_only[ol]
    return twin


def read_hftbacktest_npz(path, *, tick_size: float | None, lot_size: float | None, symbol: str = "",
                         contract_multiplier: float = 1.0) -> Events:
    """Read an hftbacktest event file into an :class:`Events` table.

    Args:
        path: ``.npz`` holding an array ``data`` (or a ``.npy``) of hftbacktest's 64-byte records,
            timestamps in ns.
        tick_size: price increment (quote currency); every price is checked against it.  None:
            inferred from the prices.
        lot_size: quantity increment (base units / contracts).  None: inferred.
        symbol, contract_multiplier: stored in the :class:`Instrument`.

    Returns:
        Events sorted by ``local_ts``; ``meta`` has the file's row counts by flag, event counts per
        kind and the skipped rows.  See the module docstring for the mapping rules.

    Raises:
        InputError: naming the file and the 0-based row of the file's array at fault (or the key
            for a missing ``data`` array / wrong dtype).
    """
    path = os.fspath(path)
    data = _load_array(path)
    _check_fields(data, HFT_EVENT_DTYPE, path, "event array")
    if len(data) == 0:
        raise InputError("no events", source=path, key="data")

    ev = data["ev"]
    kind = (ev & np.uint64(0xFF)).astype(np.uint8)
    lut = np.zeros((3, 256), bool)  # table lookups: much faster than np.isin on large files
    lut[0, list(_L3_KINDS)] = True
    lut[1, list(KIND_NAMES)] = True
    lut[2, [DEPTH, SNAPSHOT, BBO]] = True
    is_exch = (ev & np.uint64(EXCH_EVENT)) != 0
    is_local = (ev & np.uint64(LOCAL_EVENT)) != 0
    buy = (ev & np.uint64(BUY_EVENT)) != 0
    sell = (ev & np.uint64(SELL_EVENT)) != 0
    every = np.arange(len(data))

    _fail(lut[0][kind], every, "L3 (order-by-order) events are not supported yet", path, data)
    known = lut[1][kind]
    user = kind >= _USER_KIND_MIN
    _fail(~known & ~user, every, "unknown event kind (low byte of ev)", path, data)

    skipped: dict[str, int] = {}
    unflagged = ~is_exch & ~is_local
    book = lut[2][kind]
    sideless_book = book & ~buy & ~sell
    for name, mask in (("user_kind_rows", user), ("rows_without_exch_or_local_flag", unflagged & ~user),
                       ("book_rows_without_side", sideless_book & ~user & ~unflagged)):
        if mask.any():
            skipped[name] = int(mask.sum())
    usable = known & ~unflagged & ~sideless_book

    exch_only = np.flatnonzero(usable & is_exch & ~is_local)
    local_only = np.flatnonzero(usable & is_local & ~is_exch)
    twin = _pair_twins(data, exch_only, local_only, path)

    keep = np.flatnonzero(usable & is_exch)  # file rows, in file (= exchange) order
    # Position of each kept event's LOCAL copy: the order hftbacktest's local processor sees.
    local_pos = keep.copy()
    local_pos[np.searchsorted(keep, exch_only)] = twin
    # local_pos holds distinct file rows, so a scatter orders by it without a sort.
    slot = np.full(len(data), -1, np.int64)
    slot[local_pos] = np.arange(len(keep))
    file_row = keep[slot[slot >= 0]]  # kept file rows, in local-processor order
    local_ts = data["local_ts"][file_row]
    file_row, local_ts = _screen_timestamps(data, file_row, local_ts, path)
    if np.any(np.diff(local_ts) < 0):  # not written by correct_event_order: sort stably
        by_ts = np.argsort(local_ts, kind="stable")
        file_row, local_ts = file_row[by_ts], local_ts[by_ts]
    # Columns are gathered one by one: fancy-indexing the 64-byte records is ~20x slower.
    exch_ts = data["exch_ts"][file_row]
    k = kind[file_row]
    side = np.where(buy[file_row], 1, np.where(sell[file_row], -1, 0)).astype(np.int8)
    price = data["px"][file_row]
    qty = data["qty"][file_row]
    clear = k == CLEAR
    price[clear & ((side == 0) | ~np.isfinite(price))] = np.nan

    # Name the first bad row in *file* order (the table is in local order).
    for bad, message in (
        (~clear & ~(np.isfinite(price) & (price > 0)), "price must be finite and positive"),
        (~np.isfinite(qty) | (qty < 0), "quantity must be finite and non-negative"),
        (local_ts < exch_ts, "local_ts earlier than exch_ts (apply hftbacktest's correct_local_timestamp first)"),
    ):
        if bad.any():
            r = int(file_row[bad].min())
            raise InputError(f"{message}: {data[r]}", source=path, row=r)

    table = np.zeros(len(file_row), EVENT_DTYPE)
    table["exch_ts"], table["local_ts"] = exch_ts, local_ts
    table["kind"], table["side"], table["price"], table["qty"] = k, side, price, qty
    table["order_id"] = data["order_id"][file_row]

    if tick_size is not None:
        try:
            check_tick_alignment(table, tick_size, source=path)
        except InputError:
            by_file = np.argsort(file_row)  # slow path: find the first off-grid row in file order
            try:
                check_tick_alignment(table[by_file], tick_size, source=path)
            except InputError as exc:
                raise InputError(exc.message, source=path, row=int(file_row[by_file][exc.row])) from None

    try:
        validate_events(table, source=path)
    except InputError as exc:
        r = exc.row if exc.row is not None else 0
        raise InputError(exc.message, source=path, row=int(file_row[r])) from None

    priced = table["kind"] != CLEAR
    inferred = {"tick_size": tick_size is None, "lot_size": lot_size is None}
    strays = 0
    if tick_size is None:
        tick_size, stray = tick_and_strays(table["price"], priced)
        if stray.any():
            strays = int(stray.sum())
            by_file = np.flatnonzero(stray)[np.argsort(file_row[stray])]  # name the first in file order
            drop_or_stop(stray[by_file], int(priced.sum()), lambda i: {"row": int(file_row[by_file[i]])},
                         f"a price off the {tick_size:g} tick grid of every other price", path,
                         lambda i: f"price {float(table['price'][by_file[i]])!r}")
            table, file_row, priced = table[~stray], file_row[~stray], priced[~stray]
    if lot_size is None:
        lot_size = infer_lot_size(table["qty"][priced])
    instrument = Instrument(symbol=symbol, tick_size=float(tick_size), lot_size=float(lot_size),
                            contract_multiplier=float(contract_multiplier), venue="")

    if skipped:
        warnings.warn(f"{path}: skipped rows hftbacktest ignores too: {skipped}", UserWarning, stacklevel=2)
    both = int((buy[keep] & sell[keep]).sum())
    if both:
        warnings.warn(f"{path}: {both} row(s) flagged both BUY and SELL, read as bids (as hftbacktest does)",
                      UserWarning, stacklevel=2)
    kinds, counts = np.unique(table["kind"], return_counts=True)
    meta = {
        "format": "hftbacktest-npz",
        "file_rows": int(len(data)),
        "rows_exch_and_local": int(np.count_nonzero(usable & is_exch & is_local)),
        "rows_exch_only": int(len(exch_only)),
        "rows_local_only": int(len(local_only)),
        "counts": {KIND_NAMES[int(kk)]: int(c) for kk, c in zip(kinds, counts)},
        "skipped": skipped,
        "both_sides_rows": both,
        "tick_size_inferred": inferred["tick_size"],
        "lot_size_inferred": inferred["lot_size"],
        "off_grid_prices_dropped": strays,
        "implausible_timestamps_dropped": int(len(keep) - len(file_row) - strays),
        "time_unit": "ns",
    }
    return Events(table, instrument, source=path, meta=meta)


def _screen_timestamps(data: np.ndarray, file_row: np.ndarray, local_ts: np.ndarray, path: str
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Kept rows (in local-processor order) minus those with implausible timestamps
    (:mod:`mmsweep.sweep.data.screen`), with a warning; an error when they are many, or when no
    row carries an exchange time at all (``exch_ts`` 0 everywhere)."""
    exch_ts = data["exch_ts"][file_row]
    if len(exch_ts) and np.all(exch_ts == 0) and np.any(local_ts != 0):
        raise InputError("exch_ts is 0 on every row: the file carries no exchange times, so neither fills nor "
                         "feed latency can be replayed (convert it again with the exchange timestamps)",
                         source=path, row=int(file_row.min()))
    bad, why = timestamp_outliers(exch_ts, local_ts)
    if not bad.any():
        return file_row, local_ts
    median = int(np.median((local_ts - exch_ts)[~bad]))
    by_file = np.flatnonzero(bad)[np.argsort(file_row[bad])]  # errors and warnings name file rows in order
    drop_or_stop(np.ones(len(by_file), bool), len(file_row), lambda i: {"row": int(file_row[by_file[i]])},
                 "an implausible timestamp", path,
                 lambda i: describe_timestamp(int(why[by_file[i]]), int(exch_ts[by_file[i]]),
                                              int(local_ts[by_file[i]]), median))
    return file_row[~bad], local_ts[~bad]


def read_order_latency(path) -> np.ndarray:
    """Read hftbacktest order-latency rows ``(req_ts, exch_ts, resp_ts, _padding)``.

    Returns:
        structured array of ``ORDER_LATENCY_DTYPE``: ``req_ts`` (local send time), ``exch_ts``
        (exchange receive time; ``<= 0`` records an exchange-side rejection) and ``resp_ts``
        (local receive time of the response), all int64 ns.

    Raises:
        InputError naming the file and row if a field is missing or not int64, ``req_ts`` is not
        sorted, ``exch_ts < req_ts`` on an accepted row, or the response comes before the
        exchange time (before ``req_ts`` on a rejection).
    """
    path = os.fspath(path)
    data = _load_array(path)
    _check_fields(data, ORDER_LATENCY_DTYPE, path, "order-latency array")
    if len(data) == 0:
        raise InputError("no order-latency rows", source=path, key="data")
    out = np.empty(len(data), ORDER_LATENCY_DTYPE)
    for name in ORDER_LATENCY_DTYPE.names:
        out[name] = data[name]
    rows = np.arange(len(out))
    req, exch, resp = out["req_ts"], out["exch_ts"], out["resp_ts"]
    _fail(np.concatenate(([False], np.diff(req) < 0)), rows, "req_ts not sorted (row shown is the later one)",
          path, data)
    rejected = exch <= 0
    _fail(~rejected & (exch < req), rows, "exch_ts earlier than req_ts", path, data)
    _fail(~rejected & (resp < exch), rows, "resp_ts earlier than exch_ts", path, data)
    _fail(rejected & (resp < req), rows, "rejection row with resp_ts earlier than req_ts", path, data)
    return out
