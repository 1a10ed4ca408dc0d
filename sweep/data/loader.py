"""Open any supported source by looking at it: one entry point for the CLI and experiments."""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .events import Events

FORMATS = ("binance", "tardis", "hftbacktest", "mmsweep", "binance-archive")
#: reader options each format takes (anything else is an error naming the option)
READER_OPTIONS = {
    "binance": ("symbol", "market", "tick_size", "lot_size", "include_bbo", "base_latency_ns", "on_gap", "resume"),
    "tardis": ("symbol", "tick_size", "lot_size", "venue"),
    "hftbacktest": ("symbol", "tick_size", "lot_size", "contract_multiplier"),
    "mmsweep": (),
    "binance-archive": ("symbol", "tick_size", "lot_size", "feed_latency_ns"),
}


def _first_line(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            return fh.readline()
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read ({exc})", source=str(path)) from exc


def detect_format(path: str | os.PathLike) -> str:
    """One of ``FORMATS``, from the file's extension and first line."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", source=str(path))
    if path.suffix in (".npz", ".npy"):
        from .store import is_native

        return "mmsweep" if is_native(path) else "hftbacktest"
    from .binance_archive import LAYOUTS, is_archive_name

    if path.suffix == ".zip" or is_archive_name(path):
        return "binance-archive"
    line = _first_line(path)
    if not line.strip():
        raise InputError("file is empty", source=str(path), line=1)
    head, _, rest = line.partition(" ")
    if head.isdigit() and rest.lstrip().startswith("{"):
        return "binance"
    if line.startswith("exchange,symbol,timestamp"):
        return "tardis"
    if tuple(line.strip().split(",")) in LAYOUTS.values():
        return "binance-archive"
    raise InputError("unrecognised format: expected a Binance capture ('<local ts> <json>' lines, ns/µs/ms), a "
                     "Tardis CSV ('exchange,symbol,timestamp,...' header), a Binance archive CSV/zip or an .npz "
                     "event file", source=str(path), line=1)


#: prices are held as integer ticks (int64, and float64 without rounding): the largest tick count
MAX_TICKS = 1 << 40


def load_events(paths: str | os.PathLike | list, *, format: str | None = None, _contract: bool = True,
                **options: Any) -> Events:
    """Read one source into an :class:`Events` table.

    ``paths`` is one file, a glob or a list.  Several Tardis (or Binance archive) files of one day
    (trades + book/quotes) are merged; files of several days, or several Binance captures or
    ``.npz`` files, are a *sequence* of one instrument in time order
    (:mod:`mmsweep.sweep.data.sequence`), read here into one table.  ``options`` go to the reader
    (``tick_size``, ``lot_size``, ``symbol`` ...).  The instrument's linear/inverse accounting is
    inferred from the symbol and venue (:mod:`mmsweep.sweep.data.instruments`).
    """
    from .sequence import _GLOB_CHARS, expand_paths, group_pieces

    listed = list(paths) if isinstance(paths, (list, tuple)) else [paths]
    if len(listed) > 1 or any(_GLOB_CHARS.search(os.fspath(p)) and not Path(p).exists() for p in listed):
        files = expand_paths(paths)
        fmt = format or (detect_format(files[0]) if files else None)
        if len(group_pieces(files, fmt or "")) > 1:
            from .sequence import EventSequence

            return EventSequence(files, format=fmt, options=options).load()
        paths = files if len(files) > 1 else files[0]
    events = _read(paths, format, options)
    if _contract:
        from .instruments import with_contract

        events = with_contract(events)
    prices = events.table["price"]
    top = float(np.nanmax(prices)) if np.isfinite(prices).any() else 0.0
    if top / events.instrument.tick_size > MAX_TICKS:
        raise InputError(f"the price {top:g} is {top / events.instrument.tick_size:.3g} ticks of "
                         f"{events.instrument.tick_size:g}; at most {MAX_TICKS:.3g} ticks fit (a tick_size in the "
                         "wrong unit?)", source=events.source, key="tick_size")
    return events


def _read(paths: str | os.PathLike | list, format: str | None, options: dict[str, Any]) -> Events:
    files = [Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
    if not files:
        raise InputError("no input files given")
    fmt = format or detect_format(files[0])
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}", key="format")
    if len(files) > 1 and fmt not in ("tardis", "binance-archive"):
        raise InputError(f"only Tardis and Binance archive sources merge several files; got {len(files)} {fmt} files",
                         source=str(files[0]))
    unknown = sorted(set(options) - set(READER_OPTIONS[fmt]))
    if unknown:
        raise InputError(f"option(s) {', '.join(unknown)} do not apply to {fmt} files", source=str(files[0]),
                         key=unknown[0])
    if fmt == "binance-archive":
        from .binance_archive import read_binance_archive

        return read_binance_archive(files, **options)
    if fmt == "binance":
        from .binance import read_binance

        return read_binance(files[0], **options)
    if fmt == "tardis":
        from .tardis import read_tardis

        return read_tardis(files, **options)
    if fmt == "hftbacktest":
        from .hftnpz import read_hftbacktest_npz

        options.setdefault("tick_size", None)
        options.setdefault("lot_size", None)
        named = "symbol" not in options
        if named:  # hftbacktest files carry no symbol: users name them by it (ethusd_perp_20240808.npz)
            options["symbol"] = _symbol_from_name(files[0])
        events = read_hftbacktest_npz(files[0], **options)
        if named and events.instrument.symbol:
            events.meta["symbol_from_file_name"] = True
        return events
    from .store import load_native

    return load_native(files[0])


def _symbol_from_name(path: Path) -> str:
    """``ethusd_perp_20240808.npz`` -> ``ETHUSD_PERP``; ``""`` when the name holds no symbol-like
    stem (letters and digits, optionally ``_PERP`` / ``_YYMMDD``, before a date)."""
    import re

    m = re.match(r"^([A-Za-z0-9]+(?:_(?:perp|PERP|\d{6}))?)(?:[_-]\d{8}|[_-]\d{4}-\d{2}-\d{2})", path.stem)
    return m.group(1).upper() if m else ""
