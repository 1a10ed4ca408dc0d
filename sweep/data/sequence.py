"""Several files of one instrument, in time order, read as one continuous instrument.

A source's ``path`` may be one file, a list of files or a glob (``btcusdt_2024*.gz``); globs are
sorted by name and lists keep their order.  The files form *pieces* that are read one at a time
(``EventSequence.pieces``), so a horizon of months never has to be in memory at once:

* Binance captures: one piece per file.  The book carries over from one file to the next: a
  continuation file without a REST snapshot continues the previous file's book, its first depth
  diff checked against the previous file's last update id (a break is a gap naming the file
  and line, the book resynchronised at the next snapshot, as inside one file).  The capture
  clock's offset is estimated per file and reported per file.
* Tardis CSVs and Binance archive CSVs: the files of one day (the ``YYYY-MM-DD`` in their names:
  trades + quotes/book) are merged into one piece; days are pieces.
* hftbacktest ``.npz`` (and mmsweep's own): one piece per file; an optional initial snapshot
  (``snapshot:``, hftbacktest's ``initial_snapshot`` file of depth rows) is applied before the
  first file, as hftbacktest does.

Checks between consecutive pieces:

* the same instrument (symbol, venue, tick, lot, linear/inverse, contract size): an error naming
  both files otherwise;
* time order: a piece that starts (local clock) before the previous one ends is an error naming
  both files (overlapping or out-of-order files), except an overlap no larger than the change of
  the capture clock's estimated offset between the two files, which comes from the per-file
  correction and is repaired (the later file's first times are raised to the earlier file's
  last, with a warning);
* a gap of more than ``GAP_REPORT_NS`` between two pieces is allowed and reported (a warning and
  ``meta['file_gaps']``): the book carries across it and the frames flag the stale rows.

``load()`` concatenates the pieces into one :class:`Events` (for the exact engine and ``data
inspect``); ``pieces()`` streams them (for the frames store).
"""
from __future__ import annotations

import dataclasses
import glob as _glob
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import InputError
from .events import CLEAR, DEPTH, SNAPSHOT, Events, make_table

#: a pause between two files longer than this is reported (ns)
GAP_REPORT_NS = 60_000_000_000
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")
_GLOB_CHARS = re.compile(r"[*?\[]")


def expand_paths(spec: str | os.PathLike | list | tuple, key: str = "path") -> list[str]:
    """The files a ``path`` names: a file, a glob (sorted by name) or a list of either."""
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not items:
        raise InputError("the list of files is empty", key=key)
    out: list[str] = []
    for item in items:
        text = os.fspath(item)
        if _GLOB_CHARS.search(text) and not Path(text).exists():
            hits = sorted(p for p in _glob.glob(os.path.expanduser(text)) if Path(p).is_file())
            if not hits:
                raise InputError(f"the pattern {text!r} matches no file", key=key)
            out += hits
        else:
            if not Path(text).is_file():
                raise InputError("no such file", source=text, key=key)
            out.append(text)
    seen = set()
    for p in out:
        if p in seen:
            raise InputError("the same file is listed twice", source=p, key=key)
        seen.add(p)
    return out


def _file_date(path: str) -> str | None:
    m = _DATE.search(Path(path).name)
    return m.group(1) if m else None


def group_pieces(files: list[str], fmt: str) -> list[list[str]]:
    """Files per piece: merging formats group by the date in the file name, others one each."""
    if fmt not in ("tardis", "binance-archive") or len(files) == 1:
        return [[f] for f in files]
    dates = [_file_date(f) for f in files]
    if None in dates:
        return [files]  # no dates in the names: one merged source, as before
    groups: dict[str, list[str]] = {}
    for f, d in zip(files, dates):
        groups.setdefault(d, []).append(f)
    return [groups[d] for d in sorted(groups)]


def read_snapshot_npz(path: str, at_local: int, at_exch: int) -> np.ndarray:
    """hftbacktest's initial-snapshot file (depth rows of one book, timestamps unused) as
    CLEAR + SNAPSHOT rows stamped ``(at_exch, at_local)``: applied before everything else."""
    from .hftnpz import BUY_EVENT, SELL_EVENT, _load_array

    data = _load_array(path)
    if data.dtype.names is None or not {"ev", "px", "qty"} <= set(data.dtype.names):
        raise InputError("not an hftbacktest snapshot (fields ev, px, qty)", source=path)
    kind = (data["ev"] & np.uint64(0xFF)).astype(np.int64)
    keep = (kind == DEPTH) | (kind == SNAPSHOT)
    buy = (data["ev"] & np.uint64(BUY_EVENT)) != 0
    sell = (data["ev"] & np.uint64(SELL_EVENT)) != 0
    side = np.where(buy, 1, np.where(sell, -1, 0)).astype(np.int8)
    keep &= side != 0
    if not keep.any():
        raise InputError("the snapshot file holds no depth levels", source=path)
    px, qty = data["px"][keep], data["qty"][keep]
    bad = ~(np.isfinite(px) & (px > 0)) | ~(np.isfinite(qty) & (qty >= 0))
    if bad.any():
        row = int(np.flatnonzero(keep)[np.argmax(bad)])
        raise InputError(f"bad snapshot level (price {data['px'][row]!r}, qty {data['qty'][row]!r})", source=path,
                         row=row)
    clear = make_table(exch_ts=[at_exch, at_exch], local_ts=[at_local, at_local], kind=[CLEAR, CLEAR],
                       side=[1, -1], price=[np.nan, np.nan])
    levels = make_table(exch_ts=np.full(len(px), at_exch), local_ts=np.full(len(px), at_local),
                        kind=np.full(len(px), SNAPSHOT, np.uint8), side=side[keep], price=px, qty=qty)
    order = np.argsort(-levels["side"], kind="stable")  # bids first, as the readers do
    return np.concatenate([clear, levels[order]])


@dataclasses.dataclass
class FileFacts:
    """What ``data inspect`` and the manifest say about one piece of a sequence."""

    paths: list[str]
    first_local_ns: int
    last_local_ns: int
    events: int
    clock_offset_ns: int | None
    local_ts_unit: str | None
    gaps: int
    resumed: bool
    counts: dict
    feed_latency_p50_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class EventSequence:
    """One instrument from several files in time order (module docstring).

    Args:
        paths: a file, a glob or a list of files/globs.
        format: the source format (default: detected from the first file).
        options: reader options (``tick_size``, ``lot_size``, ``symbol``, ``base_latency_ns``,
            ``feed_latency_ns`` ...), the same for every file.
        snapshot: hftbacktest initial-snapshot ``.npz`` applied before the first file.
        instrument: an instrument override (``inverse``, ``contract_size``), see
            :mod:`mmsweep.sweep.data.instruments`.
    """

    def __init__(self, paths, *, format: str | None = None, options: dict[str, Any] | None = None,
                 snapshot: str | None = None, instrument: dict[str, Any] | None = None, key: str = "path") -> None:
        from .loader import detect_format

        self.files = expand_paths(paths, key)
        self.format = format or detect_format(self.files[0])
        self.options = dict(options or {})
        self.snapshot = snapshot
        self.instrument_override = dict(instrument or {})
        self.groups = group_pieces(self.files, self.format)
        self.facts: list[FileFacts] = []
        self.file_gaps: list[dict[str, Any]] = []
        if snapshot is not None and self.format not in ("hftbacktest", "mmsweep"):
            raise InputError(f"an initial snapshot file goes with hftbacktest .npz files, not {self.format} ones "
                             "(their captures carry their own snapshots)", source=snapshot, key="snapshot")

    @property
    def source(self) -> str:
        if len(self.files) == 1:
            return self.files[0]
        return f"{self.files[0]} .. {Path(self.files[-1]).name} ({len(self.files)} files)"

    def fingerprint(self) -> str:
        """sha256 over the files' bytes, the format, the options and the override (a cache key)."""
        h = hashlib.sha256(repr((self.format, sorted(self.options.items()), self.snapshot,
                                 sorted(self.instrument_override.items()))).encode())
        for path in self.files + ([self.snapshot] if self.snapshot else []):
            h.update(path.encode())
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
        return h.hexdigest()

    def _read(self, group: list[str], resume: dict | None) -> Events:
        from .instruments import apply_override, with_contract
        from .loader import load_events

        options = dict(self.options)
        if self.format == "binance" and resume is not None:
            options["resume"] = resume
        events = load_events(group if len(group) > 1 else group[0], format=self.format, _contract=False, **options)
        events = with_contract(events)
        return apply_override(events, self.instrument_override)

    def pieces(self) -> Iterator[Events]:
        """The pieces in time order, each checked against the one before (module docstring)."""
        self.facts, self.file_gaps = [], []
        prev: Events | None = None
        prev_name = ""
        resume = None
        for i, group in enumerate(self.groups):
            name = group[0] if len(group) == 1 else ", ".join(group)
            events = self._read(group, resume)
            if i == 0 and self.snapshot is not None:
                t = events.table
                snap = read_snapshot_npz(self.snapshot, int(t["local_ts"].min()), int(t["exch_ts"].min()))
                events.table = np.concatenate([snap, t])
                events.meta["initial_snapshot"] = {"path": self.snapshot, "levels": int(len(snap) - 2)}
            if prev is not None:
                self._check_pair(prev, prev_name, events, name)
            meta = events.meta
            t = events.table
            kinds, counts = np.unique(t["kind"], return_counts=True)
            from .events import KIND_NAMES

            lat = (t["local_ts"] - t["exch_ts"])[t["kind"] != CLEAR]
            self.facts.append(FileFacts(group, int(t["local_ts"][0]), int(t["local_ts"][-1]), int(len(events)),
                                        meta.get("clock_offset_ns"), meta.get("local_ts_unit"),
                                        len(meta.get("gaps") or []), bool(meta.get("resumed_from")),
                                        {KIND_NAMES.get(int(k), str(k)): int(c) for k, c in zip(kinds, counts)},
                                        float(np.median(lat)) / 1e6 if len(lat) else None))
            resume = meta.get("sync")
            prev, prev_name = _Tail(events), name
            yield events

    def _check_pair(self, prev: "_Tail", prev_name: str, cur: Events, name: str) -> None:
        a, b = prev.instrument, cur.instrument
        fields = ("symbol", "venue", "tick_size", "lot_size", "inverse", "contract_multiplier")
        diff = [f for f in fields if getattr(a, f) != getattr(b, f)]
        if diff:
            said = "; ".join(f"{f} {getattr(a, f)!r} vs {getattr(b, f)!r}" for f in diff)
            raise InputError(f"files of different instruments in one sequence: {prev_name} and {name} differ in {said}",
                             source=name)
        t = cur.table
        first, last = int(t["local_ts"][0]), prev.last_local
        if first < last:
            slack = abs((cur.meta.get("clock_offset_ns") or 0) - (prev.meta.get("clock_offset_ns") or 0))
            if last - first > slack:
                raise InputError(f"starts at {_utc(first)} UTC (local clock), before the previous file {prev_name} "
                                 f"ends at {_utc(last)} UTC: the files overlap or are out of order", source=name)
            low = t["local_ts"] < last
            n = int(low.sum())
            t["local_ts"][low] = last
            cur.meta["boundary_repair"] = {"rows": n, "by_ns": last - first, "previous": prev_name}
            warnings.warn(f"{name}: its first {n} row(s) are up to {(last - first) / 1e6:.3f} ms before the end of "
                          f"{prev_name}, within the change of the estimated clock offset between the two files "
                          f"({slack / 1e6:.3f} ms); raised to that time", UserWarning, stacklevel=3)
        gap = first - last
        if gap > GAP_REPORT_NS:
            self.file_gaps.append({"after": prev_name, "before": name, "gap_s": gap / 1e9})
            warnings.warn(f"{name}: a gap of {_span(gap)} after {prev_name} (no data from {_utc(last)} to "
                          f"{_utc(first)} UTC); the book carries over it, decisions there are flagged stale",
                          UserWarning, stacklevel=3)

    def load(self) -> Events:
        """All pieces concatenated into one table (the instrument of the first)."""
        tables, first = [], None
        metas = []
        for events in self.pieces():
            if first is None:
                first = events
            tables.append(events.table)
            metas.append(events.meta)
        assert first is not None
        table = np.concatenate(tables) if len(tables) > 1 else tables[0]
        if len(tables) == 1:
            return first
        meta = dict(first.meta)
        meta.update(self.describe())
        meta["gaps"] = [dict(g, file=f.paths[0]) for f, m in zip(self.facts, metas) for g in (m.get("gaps") or [])]
        meta["implausible_timestamps"] = [dict(x, file=f.paths[0]) for f, m in zip(self.facts, metas)
                                          for x in (m.get("implausible_timestamps") or [])]
        meta["clock_offset_ns"] = None  # one per file: meta['files']
        for k in ("duplicate_trades_dropped", "off_grid_prices_dropped"):
            meta[k] = sum(int(m.get(k) or 0) for m in metas)
        return Events(table, first.instrument, self.source, meta)

    def describe(self) -> dict[str, Any]:
        """Per-piece facts (after :meth:`pieces` ran) for manifests and ``data inspect``."""
        return {"sequence": [f.as_dict() for f in self.facts], "file_gaps": list(self.file_gaps),
                "files_total": len(self.files)}


class _Tail:
    """What the check of the next piece needs from the previous one (so it can be freed)."""

    def __init__(self, events: Events) -> None:
        self.instrument = events.instrument
        self.meta = {"clock_offset_ns": events.meta.get("clock_offset_ns")}
        self.last_local = int(events.table["local_ts"][-1])


def _utc(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _span(ns: int) -> str:
    s = ns / 1e9
    if s >= 86_400:
        return f"{s / 86_400:.1f} days"
    if s >= 3_600:
        return f"{s / 3_600:.1f} h"
    return f"{s:.0f} s"
