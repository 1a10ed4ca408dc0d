"""Open any supported source by looking at it: one entry point for the CLI and experiments."""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .events import Events

FORMATS = ("binance", "tardis", "hftbacktest", "mmsweep")


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
    line = _first_line(path)
    if not line.strip():
        raise InputError("file is empty", source=str(path), line=1)
    head, _, rest = line.partition(" ")
    if head.isdigit() and rest.lstrip().startswith("{"):
        return "binance"
    if line.startswith("exchange,symbol,timestamp"):
        return "tardis"
    raise InputError("unrecognised format: expected a Binance capture ('<ts_ns> <json>' lines), a Tardis CSV "
                     "('exchange,symbol,timestamp,...' header) or an .npz event file", source=str(path), line=1)


#: prices are held as integer ticks (int64, and float64 without rounding): the largest tick count
MAX_TICKS = 1 << 40


def load_events(paths: str | os.PathLike | list, *, format: str | None = None, **options: Any) -> Events:
    """Read one source into an :class:`Events` table.

    ``paths`` is one file, or for Tardis several files of one symbol (trades + book/quotes) that
    are merged.  ``options`` go to the reader (``tick_size``, ``lot_size``, ``symbol`` ...).
    """
    events = _read(paths, format, options)
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
    if len(files) > 1 and fmt != "tardis":
        raise InputError(f"only Tardis sources merge several files; got {len(files)} {fmt} files",
                         source=str(files[0]))
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
        return read_hftbacktest_npz(files[0], **options)
    from .store import load_native

    if options:
        raise InputError(f"options {sorted(options)} do not apply to mmsweep event files", source=str(files[0]))
    return load_native(files[0])
