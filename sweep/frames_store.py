"""Frames over long horizons: built piece by piece (one file, one day, one synthetic hour at a
time) into an on-disk store of time chunks, so that neither the events nor all the rows of a
horizon of months are ever in memory at once (DESIGN §6).

Building
--------
Each instrument's events arrive as a sequence of pieces (:mod:`mmsweep.sweep.data.sequence`,
:mod:`mmsweep.sweep.data.synthetic_stream`).  The builder keeps, per instrument, a buffer of the
events it still needs and turns it into frame rows one *segment* at a time with the in-memory
builder (:func:`mmsweep.sweep.frames.build_frames`' ``_build``), unchanged:

* a segment covers the decision rows ``[g0, g1)``; ``g1`` stays ``LOOKAHEAD_NS`` plus the largest
  feed latency seen behind the last event read, so that every event the exchange-clock windows of
  those rows need (``exch_ts <= g1``) has been read;
* it is built from ``lookback`` rows earlier (the longest feature window with its anchoring
  block, and the order latency), and only the rows from ``g0`` on are kept: a row's value depends
  on those rows alone (feature windows are anchored to absolute time blocks, see
  :mod:`mmsweep.sweep.features`);
* the book carries from one segment to the next: the buffer is cut before the next segment's
  look-back, at an event boundary where the exchange clock agrees (every event before the cut is
  older, on both clocks, than every event after it) and the local and exchange books are the
  same book, right after a book change; the book there replaces the events before the cut, as
  CLEAR + SNAPSHOT rows stamped at the cut (BBO rows for a quotes-only source).  A signal
  instrument only needs its local book.

So the store's rows equal the rows built from all the events at once, bit for bit
(``tests/test_frames_store.py``), while memory holds one piece, the look-back and one segment.

The store
---------
``<cache>/frames/<key>/``: ``header.json`` (instrument, spec, feature names, the chunk table with
row ranges and spans, build facts) and one ``chunk_<i>.npz`` per segment (the columns and
features, as :func:`mmsweep.sweep.frames.save_frames`).  It is built under a temporary name and
renamed when complete, so a store is whole or absent.  The key hashes the input (the files'
bytes, or the synthetic config), the reader options, the frame spec and the code of the readers
and of the frame builder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .data.book import NO_ASK, NO_BID, cut_candidates, has_depth, replay_book
from .data.events import BBO, CLEAR, DEPTH, EVENT_DTYPE, SNAPSHOT, Events, Instrument
from .errors import InputError
from .frames import ROW_COLUMNS, FrameSpec, Frames, _build, default_cache_dir

STORE_VERSION = 1
#: decision rows kept behind the newest read event: feed latencies above it are an error (ns)
LOOKAHEAD_NS = 120_000_000_000
#: rows per segment at most (a long file is cut into several chunks of the store)
SEGMENT_ROWS = 1 << 20
#: a segment is built once a new piece has been read and this many rows can be built
MIN_SEGMENT_ROWS = 600


# --------------------------------------------------------------------------------------------
# The store


class FramesStore:
    """An on-disk frame table in time chunks; reads one chunk at a time.

    Duck-types the parts of :class:`mmsweep.sweep.frames.Frames` a sweep needs (``len``,
    ``instrument``, ``feature_names``, ``meta``, ``spec``, ``frames["local_ts"]`` — a whole column,
    built on demand); rows are read with :meth:`frames_between` / :meth:`iter_frames`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.header = json.loads((self.path / "header.json").read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"not a readable frames store ({exc})", source=str(self.path)) from None
        if self.header.get("version") != STORE_VERSION:
            raise InputError(f"frames store version {self.header.get('version')} != {STORE_VERSION}",
                             source=str(self.path))
        self.instrument = Instrument(**self.header["instrument"])
        self.feature_names = list(self.header["feature_names"])
        self.spec = self.header["spec"]
        self.meta = dict(self.header["meta"])
        self.chunks = self.header["chunks"]
        self._columns: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.header["rows"])

    @property
    def interval_ns(self) -> int:
        return int(self.spec["interval_ns"])

    def local_ts_at(self, row: int) -> int:
        """Decision time (ns) of a row: the rows are one regular grid."""
        return int(self.header["first_ns"]) + int(row) * self.interval_ns

    def rows_before(self, t_ns: int) -> int:
        """How many rows have ``local_ts < t_ns`` (``np.searchsorted(local_ts, t, 'left')``)."""
        first = int(self.header["first_ns"])
        return int(min(len(self), max(0, -(-(int(t_ns) - first) // self.interval_ns))))

    def chunk(self, i: int) -> Frames:
        entry = self.chunks[i]
        path = self.path / entry["file"]
        try:
            with np.load(path, allow_pickle=False) as npz:
                columns = {k[4:]: npz[k] for k in npz.files if k.startswith("col_")}
                features = npz["features"]
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"damaged frames chunk ({exc}); remove the store to rebuild it",
                             source=str(path)) from None
        if len(columns.get("local_ts", ())) != entry["hi"] - entry["lo"]:
            raise InputError("frames chunk holds another number of rows than the store's header says; remove the "
                             "store to rebuild it", source=str(path))
        return Frames(columns, features, list(self.feature_names), self.instrument, self.spec,
                      {"chunk": i, **self.meta})

    def frames_between(self, lo: int, hi: int) -> Frames:
        """Rows ``[lo, hi)`` as one :class:`Frames` (reads only the chunks they lie in)."""
        parts = [f for _, f in self.iter_frames(lo, hi, max(hi - lo, 1))]
        if len(parts) == 1:
            return parts[0]
        return _concat(parts, self)

    def iter_frames(self, lo: int, hi: int, max_rows: int) -> Iterator[tuple[int, Frames]]:
        """``(first row, Frames)`` pieces of at most ``max_rows`` rows covering ``[lo, hi)``, in order."""
        lo, hi = max(0, int(lo)), min(len(self), int(hi))
        max_rows = max(1, int(max_rows))
        row = lo
        cached: tuple[int, Frames] | None = None
        while row < hi:
            i = self._chunk_of(row)
            if cached is None or cached[0] != i:
                cached = (i, self.chunk(i))
            c_lo, c_hi = self.chunks[i]["lo"], self.chunks[i]["hi"]
            end = min(hi, c_hi, row + max_rows)
            piece = _slice(cached[1], row - c_lo, end - c_lo)
            # a piece may span chunks: fill it up from the next ones
            extra = []
            while end < hi and end - row < max_rows:
                j = self._chunk_of(end)
                nxt = self.chunk(j)
                cached = (j, nxt)
                take = min(hi, self.chunks[j]["hi"], row + max_rows)
                extra.append(_slice(nxt, end - self.chunks[j]["lo"], take - self.chunks[j]["lo"]))
                end = take
            if extra:
                piece = _concat([piece] + extra, self)
            yield row, piece
            row = end

    def _chunk_of(self, row: int) -> int:
        his = [c["hi"] for c in self.chunks]
        return int(np.searchsorted(np.asarray(his), row, side="right"))

    def __getitem__(self, name: str) -> np.ndarray:
        """A whole column (kept once read); ``local_ts`` from the regular grid, without I/O."""
        if name == "local_ts":
            return self.header["first_ns"] + np.arange(len(self), dtype=np.int64) * self.interval_ns
        if name not in self._columns:
            parts = []
            for i in range(len(self.chunks)):
                parts.append(np.asarray(self.chunk(i)[name]))
            self._columns[name] = np.concatenate(parts) if parts else np.zeros(0)
        return self._columns[name]

    @property
    def features(self) -> np.ndarray:
        """All feature rows (memory: rows x features x 8 bytes)."""
        return np.concatenate([self.chunk(i).features for i in range(len(self.chunks))])

    def to_frames(self) -> Frames:
        """Every row in memory as one :class:`Frames` (for short horizons and tests)."""
        return self.frames_between(0, len(self))

    def median_bid(self) -> int:
        """``int(np.median(bid))`` over every row, exactly, from the stored bid histogram."""
        ticks = np.asarray(self.meta["bid_hist"]["ticks"], np.int64)
        counts = np.asarray(self.meta["bid_hist"]["counts"], np.int64)
        n = int(counts.sum())
        csum = np.cumsum(counts)

        def kth(k: int) -> int:  # 0-based order statistic
            return int(ticks[np.searchsorted(csum, k + 1)])

        if n % 2:
            return int(float(kth(n // 2)))
        return int((float(kth(n // 2 - 1)) + float(kth(n // 2))) / 2)


def _slice(frames: Frames, lo: int, hi: int) -> Frames:
    return Frames({k: v[lo:hi] for k, v in frames.columns.items()}, frames.features[lo:hi], frames.feature_names,
                  frames.instrument, frames.spec, frames.meta)


def _concat(parts: list[Frames], like) -> Frames:
    first = parts[0]
    columns = {k: np.concatenate([p.columns[k] for p in parts]) for k in first.columns}
    return Frames(columns, np.concatenate([p.features for p in parts]), first.feature_names, first.instrument,
                  first.spec, first.meta)


# --------------------------------------------------------------------------------------------
# Building


def store_key(source_key: str, spec: FrameSpec, quoted: str, names: Iterable[str]) -> str:
    """The store's cache key: the input, the spec, the instruments and the code (module docstring)."""
    from .codehash import FRAMES_CODE, READER_CODE, code_digest

    h = hashlib.sha256()
    h.update(f"frames-store-v{STORE_VERSION}".encode())
    h.update(code_digest(FRAMES_CODE).encode())
    h.update(code_digest(READER_CODE).encode())
    h.update(source_key.encode())
    h.update(json.dumps({"spec": spec.describe(), "quoted": quoted, "instruments": sorted(names)}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()[:32]


def lookback_rows(spec: FrameSpec, latency_ns: int) -> int:
    """Rows of context a segment is built with before its first kept row."""
    from .features import lookback_rows as feature_lookback

    rows = max([feature_lookback(f, spec.interval_ns) for f in spec.features] + [0])
    lat = -(-int(latency_ns) // int(spec.interval_ns)) + 2
    return rows + lat + 2


def _max_latency_ns(spec: FrameSpec) -> int:
    lat = spec.latency
    if lat.rows is None:
        return int(lat.entry_ns)
    req = np.asarray(lat.rows["req_ts"], np.int64)
    exch = np.asarray(lat.rows["exch_ts"], np.int64)
    ok = exch > 0
    return int((exch - req)[ok].max()) if ok.any() else 0


class _Buffer:
    """One instrument's events still needed, pulled piece by piece from its iterator."""

    def __init__(self, name: str, pieces: Iterator[Events], quoted: bool) -> None:
        self.name = name
        self.pieces = pieces
        self.quoted = quoted
        self.table = np.zeros(0, EVENT_DTYPE)
        self.instrument: Instrument | None = None
        self.source = ""
        self.meta: dict[str, Any] = {}
        self.has_depth: bool | None = None
        self.exhausted = False
        self.last_local = np.iinfo(np.int64).min
        self.max_feed_ns = 0
        self.read_pieces = 0
        self.events_read = 0
        self.committed_exch = np.iinfo(np.int64).min  # exchange times up to here are already in frames
        self.peak_rows = 0

    def pull(self) -> bool:
        """Read the next piece; False when there is none."""
        if self.exhausted:
            return False
        try:
            events = next(self.pieces)
        except StopIteration:
            self.exhausted = True
            return False
        t = events.table
        if len(t) == 0:
            return True
        if self.instrument is None:
            self.instrument, self.source, self.meta = events.instrument, events.source, dict(events.meta)
        depth = has_depth(t["kind"])
        if self.has_depth is None:
            self.has_depth = depth
        elif depth and not self.has_depth and len(self.table) == 0:
            self.has_depth = True
        first_local, first_exch = int(t["local_ts"][0]), int(t["exch_ts"].min())
        if first_local < self.last_local:
            raise InputError(f"{self.name}: a piece starting at local time {first_local} comes before the previous "
                             f"one ended ({self.last_local}): pieces out of order", source=events.source)
        if first_exch <= self.committed_exch:
            raise InputError(f"{self.name}: exchange times reach back to {first_exch} ns, into the frames already "
                             f"built up to {self.committed_exch} ns from the previous piece(s): a feed latency above "
                             f"the {LOOKAHEAD_NS / 1e9:g} s look-ahead, or overlapping files", source=events.source)
        self.max_feed_ns = max(self.max_feed_ns, int((t["local_ts"] - t["exch_ts"]).max()))
        self.table = np.concatenate([self.table, t]) if len(self.table) else t
        self.last_local = int(t["local_ts"][-1])
        self.read_pieces += 1
        self.events_read += len(t)
        self.peak_rows = max(self.peak_rows, len(self.table))
        return True

    def events(self) -> Events:
        return Events(self.table, self.instrument, self.source, self.meta)

    def trim(self, before_ns: int) -> None:
        """Replace the events up to a cut at or before ``before_ns`` (local clock) by the book there
        (module docstring); keeps everything when no valid cut exists."""
        t = self.table
        n = len(t)
        if n < 2:
            return
        local, exch = t["local_ts"], t["exch_ts"]
        hi = int(np.searchsorted(local, before_ns, side="right"))  # rows [:k] with k <= hi end at or before
        if hi < 2:
            return
        candidates = cut_candidates(local, exch, t["kind"], hi, bool(self.has_depth), self.quoted, 64)
        inst = self.instrument
        for cut in candidates:
            cut = int(cut)
            head = t[:cut]
            state = _book_state(head, inst, "local", int(local[cut - 1]), self.has_depth)
            if self.quoted:
                c_exch = int(exch[:cut].max())
                # in exchange order too (an in-order feed): both clocks applied the same rows in the
                # same order, so their books are the same; else compare them
                same_order = bool(np.all(exch[1:cut] >= exch[:cut - 1]))
                if not same_order and not _same_book(state, _book_state(head, inst, "exch", c_exch, self.has_depth)):
                    continue
            else:
                c_exch = int(local[cut - 1])
            rows = _state_rows(state, int(local[cut - 1]), min(c_exch, int(local[cut - 1])), self.has_depth,
                               inst.tick_size)
            self.table = np.concatenate([rows, t[cut:]])
            return
        # no usable cut: keep the events (memory grows by one piece; the next trim tries again)


def _book_state(table: np.ndarray, inst: Instrument, clock: str, at: int, has_depth: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every level of the book after ``table`` on ``clock``: bid ticks, bid qty, ask ticks, ask qty."""
    kinds = table["kind"]
    book = (kinds == DEPTH) | (kinds == SNAPSHOT) | ((kinds == BBO) & (not has_depth))
    prices = table["price"][book]
    # levels to sample: every tick the book can hold (or every book row, if fewer)
    span = int(round((prices.max() - prices.min()) / inst.tick_size)) + 1 if len(prices) else 1
    levels = max(1, min(span, len(prices)))
    rep = replay_book(table, inst.tick_size, inst.lot_size, clock=clock, sample_ts=np.array([at], np.int64),
                      n_levels=levels, use_bbo=not has_depth)
    bid = rep.bid_ticks[0] != NO_BID
    ask = rep.ask_ticks[0] != NO_ASK
    return rep.bid_ticks[0][bid], rep.bid_qty[0][bid], rep.ask_ticks[0][ask], rep.ask_qty[0][ask]


def _same_book(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _state_rows(state, local_ns: int, exch_ns: int, has_depth: bool, tick_size: float) -> np.ndarray:
    """CLEAR both sides, then the levels (bids first) as SNAPSHOT rows (BBO rows for a quotes-only
    source), every row stamped ``(exch_ns, local_ns)``."""
    from .data.book import price_to_ticks

    bid_t, bid_q, ask_t, ask_q = state
    ticks = np.concatenate([bid_t, ask_t]).astype(np.int64)
    out = np.zeros(2 + len(ticks), EVENT_DTYPE)
    out["local_ts"] = local_ns
    out["exch_ts"] = exch_ns
    out["kind"][:2] = CLEAR
    out["side"][:2] = (1, -1)
    out["price"][:2] = np.nan
    out["kind"][2:] = SNAPSHOT if has_depth else BBO
    out["side"][2:2 + len(bid_t)] = 1
    out["side"][2 + len(bid_t):] = -1
    price = _decimal_prices(ticks, tick_size)
    if not np.array_equal(price_to_ticks(price, tick_size), ticks):  # pragma: no cover - exotic tick sizes
        raise AssertionError("book state prices do not round-trip to their ticks")
    out["price"][2:] = price
    out["qty"][2:] = np.concatenate([bid_q, ask_q])
    return out


def _decimal_prices(ticks: np.ndarray, tick_size: float) -> np.ndarray:
    """Prices of ticks, written as the readers write decimal prices (``617003 / 10``, not ``* 0.1``)."""
    inverse = 1.0 / tick_size
    if tick_size < 1.0 and abs(inverse - round(inverse)) < 1e-9 * inverse:
        return ticks.astype(np.float64) / float(round(inverse))
    return ticks.astype(np.float64) * tick_size


class _Fanout:
    """Per-instrument iterators over a generator of ``{name: Events}`` pieces."""

    def __init__(self, pieces: Iterator[dict[str, Events]], names: Iterable[str]) -> None:
        self.pieces = pieces
        self.queues: dict[str, list[Events]] = {n: [] for n in names}

    def _fill(self) -> bool:
        try:
            piece = next(self.pieces)
        except StopIteration:
            return False
        for name, q in self.queues.items():
            if name in piece:
                q.append(piece[name])
        return True

    def iterator(self, name: str) -> Iterator[Events]:
        while True:
            while not self.queues[name]:
                if not self._fill():
                    return
            yield self.queues[name].pop(0)


def fanout(pieces: Iterator[dict[str, Events]], names: Iterable[str]) -> dict[str, Iterator[Events]]:
    """``{name: iterator of that instrument's pieces}`` from one iterator of piece dicts."""
    fan = _Fanout(pieces, names)
    return {n: fan.iterator(n) for n in fan.queues}


def build_store(sources: dict[str, Iterator[Events]], quoted: str, spec: FrameSpec, key: str, *,
                cache_dir: str | os.PathLike | None | bool = None, log: Callable[[str], None] = lambda _m: None,
                segment_rows: int | None = None) -> FramesStore:
    """Build (or open, when cached) the frames store of ``sources`` (each instrument's pieces in
    time order; ``quoted`` is the instrument quoted, the others are signal instruments).

    ``key`` identifies the input (see :func:`store_key`); ``cache_dir`` as for
    :func:`mmsweep.sweep.frames.build_frames` (``False``: a temporary folder, removed at exit).
    """
    for feat in spec.features:
        if feat.instrument and feat.instrument not in sources:
            raise InputError(f"feature {feat.name} needs instrument {feat.instrument!r}; available: "
                             f"{sorted(n for n in sources if n != quoted) or 'none'}", key="features")
    root = _store_root(cache_dir)
    final = root / key
    if (final / "header.json").exists():
        try:
            store = FramesStore(final)
            store.meta["cache_hit"] = True
            _report(store, spec.on_stale)
            return store
        except InputError as exc:
            warnings.warn(f"frames store {final} unreadable ({exc}); rebuilding", stacklevel=2)
            shutil.rmtree(final, ignore_errors=True)
    _remove_abandoned(root)
    work = root / f"{key}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        header = _build_into(work, sources, quoted, spec, log, segment_rows or SEGMENT_ROWS)
        header["meta"]["cache_key"] = key
        (work / "header.json").write_text(json.dumps(header, default=str))
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    store = FramesStore(final)
    store.meta["cache_hit"] = False
    _report(store, spec.on_stale)
    return store


def _remove_abandoned(root: Path, idle_s: float = 3600.0) -> None:
    """Remove the half-built stores of killed builds (``<key>.partial-<pid>``: gigabytes for a
    long horizon): their process is gone and nothing was written to them for ``idle_s`` (a
    cache folder shared by several machines: a pid of another machine is never trusted alone)."""
    for work in root.glob("*.partial-*"):
        try:
            pid = int(work.name.rsplit("-", 1)[1])
            if pid == os.getpid() or time.time() - work.stat().st_mtime < idle_s:
                continue
            try:
                os.kill(pid, 0)
                continue  # alive
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # alive, another user's
        except (ValueError, OSError):
            continue
        warnings.warn(f"removing {work}: the half-built frames store of a build that did not finish", stacklevel=3)
        shutil.rmtree(work, ignore_errors=True)


def _store_root(cache_dir) -> Path:
    if cache_dir is False:
        root = Path(tempfile.mkdtemp(prefix="mmsweep-frames-"))
        import atexit

        atexit.register(shutil.rmtree, root, True)
        return root
    root = Path(cache_dir if cache_dir not in (None, True) else default_cache_dir()) / "stores"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return root
    except OSError as exc:
        warnings.warn(f"frames cache {root} is not writable ({exc.strerror or exc}); the frames store is built in a "
                      "temporary folder and not kept", stacklevel=3)
        return _store_root(False)


def _report(store: FramesStore, on_stale: str) -> None:
    found = store.meta.get("stale_warnings") or []
    if found and on_stale == "error":
        raise InputError(found[0] + " (on_stale: error)", key="on_stale")
    for message in found[:20]:
        warnings.warn(message, UserWarning, stacklevel=3)
    if len(found) > 20:
        warnings.warn(f"... and {len(found) - 20} more stale-source warnings (the store's meta lists them)",
                      UserWarning, stacklevel=3)


def _build_into(work: Path, sources: dict[str, Iterator[Events]], quoted: str, spec: FrameSpec,
                log: Callable[[str], None], segment_rows: int) -> dict[str, Any]:
    interval = int(spec.interval_ns)
    names = [quoted] + sorted(n for n in sources if n != quoted)
    needed = {f.instrument for f in spec.features if f.instrument}
    buffers = {n: _Buffer(n, sources[n], n == quoted) for n in names if n == quoted or n in needed}
    q = buffers[quoted]
    lookback = lookback_rows(spec, _max_latency_ns(spec))
    chunks: list[dict[str, Any]] = []
    hist: dict[int, int] = {}
    first_ns = None
    rows_total = 0
    g0: int | None = None  # the first row of the next segment (None: the start)
    end_ns = spec.end_ns
    agg = {"stale_rows": 0, "entry_rejected_rows": 0, "max_lag": 0, "one_sided_rows": 0, "fifo_delayed_acks": 0,
           "superseded_arrivals": 0, "crossed_repairs_local": 0, "crossed_repairs_exch": 0}
    warmup: dict[str, int] = {}
    stale_warnings: list[str] = []
    started = time.perf_counter()
    if not q.pull():
        raise InputError(f"{quoted}: no events", key="data")
    start = spec.start_ns if spec.start_ns is not None else np.iinfo(np.int64).min
    if spec.start_ns is not None:  # skip the pieces before the start, keeping the book they leave
        while not q.exhausted and q.last_local - LOOKAHEAD_NS < spec.start_ns:
            for buf in buffers.values():
                buf.trim(spec.start_ns - lookback * interval - 1)
            if not q.pull():
                break
        for name, buf in buffers.items():
            if buf is not q:
                while buf.last_local < spec.start_ns and buf.pull():
                    buf.trim(spec.start_ns - lookback * interval - 1)
    while True:
        # read a new piece, and more until a segment beyond g0 can be built (or the end): one piece
        # of events in memory at a time, plus the look-back
        fresh = 0
        while not q.exhausted:
            horizon = q.last_local - LOOKAHEAD_NS - 2 * q.max_feed_ns
            base = g0 if g0 is not None else max(int(q.table["local_ts"][0]), start)
            if (fresh or g0 is None) and horizon - base >= min(segment_rows, MIN_SEGMENT_ROWS) * interval:
                break
            if not q.pull():
                break
            fresh += 1
        final = q.exhausted
        g1 = None
        if not final:
            g1 = (q.last_local - LOOKAHEAD_NS - 2 * q.max_feed_ns) // interval * interval
            base = g0 if g0 is not None else max(int(q.table["local_ts"][0]), start)
            g1 = min(g1, -(-base // interval) * interval + segment_rows * interval)
            if g1 <= base + 2 * interval:
                continue
        if end_ns is not None and (g1 is None or g1 >= end_ns):
            g1, final = None, True
        upto = g1 if g1 is not None else q.last_local
        for name, buf in buffers.items():
            if buf is q:
                continue
            while buf.last_local < upto + LOOKAHEAD_NS and buf.pull():
                pass
            if buf.instrument is None:
                raise InputError(f"signal instrument {name!r} has no events", key="data")
        seg_spec = dataclasses.replace(spec, start_ns=(spec.start_ns if g0 is None else g0 - lookback * interval),
                                       end_ns=(g1 if g1 is not None else end_ns))
        signals = {n: b.events() for n, b in buffers.items() if b is not q}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frames = _build(q.events(), seg_spec, signals)
        for w in caught:
            text = str(w.message)
            if "one-sided" in text or "stale" in text:
                continue
            warnings.warn(text, w.category, stacklevel=2)
        keep = slice(0, len(frames)) if g0 is None else slice(int(np.searchsorted(frames.columns["local_ts"], g0)),
                                                               len(frames))
        n_ctx = keep.start
        cols = {k: v[keep] for k, v in frames.columns.items()}
        feats = frames.features[keep]
        n = len(cols["local_ts"])
        if g0 is not None and n and int(cols["local_ts"][0]) != g0:
            raise AssertionError(f"segment starts at {int(cols['local_ts'][0])}, expected {g0}")
        if n:
            if first_ns is None:
                first_ns = int(cols["local_ts"][0])
            elif int(cols["local_ts"][0]) != first_ns + rows_total * interval:
                raise AssertionError("frames store rows are not one regular grid")
            i = len(chunks)
            file = f"chunk_{i:05d}.npz"
            with open(work / file, "wb") as fh:
                np.savez(fh, features=feats, **{f"col_{k}": v for k, v in cols.items()})
            chunks.append({"file": file, "lo": rows_total, "hi": rows_total + n, "first_ns": int(cols["local_ts"][0]),
                           "last_ns": int(cols["local_ts"][-1])})
            rows_total += n
            uniq, counts = np.unique(cols["bid"], return_counts=True)
            for tick, c in zip(uniq.tolist(), counts.tolist()):
                hist[tick] = hist.get(tick, 0) + c
            agg["stale_rows"] += int(cols["stale"].sum())
            agg["entry_rejected_rows"] += int(cols["entry_rejected"].sum())
            agg["max_lag"] = max(agg["max_lag"], int(max(cols["lag_a"].max(), cols["lag_b"].max())))
            for k in ("one_sided_rows", "fifo_delayed_acks", "superseded_arrivals", "crossed_repairs_local",
                      "crossed_repairs_exch"):
                agg[k] += int(frames.meta.get(k, 0))
            for name, count in frames.meta.get("warmup_rows", {}).items():
                warmup[name] = warmup.get(name, 0) + (count if g0 is None else max(0, count - n_ctx))
            stale_warnings += frames.meta.get("stale_warnings", [])
            log(f"  frames: {rows_total:,} rows to {_utc(int(cols['local_ts'][-1]))} UTC "
                f"[{time.perf_counter() - started:.0f} s]")
        feature_names = frames.feature_names
        if final:
            break
        # the book carries over: cut every buffer before the next segment's look-back
        g0 = g1
        q.committed_exch = g1
        for buf in buffers.values():
            buf.trim(g0 - lookback * interval - 1)
    if rows_total == 0:
        raise InputError("no decision rows", source=q.source)
    ticks = sorted(hist)
    meta = {
        "rows": rows_total, "source": q.source,
        "signals": {n: b.source for n, b in buffers.items() if b is not q},
        "warmup_rows": warmup, "stale_warnings": stale_warnings[:200], "chunks": len(chunks),
        "lookback_rows": lookback, "pieces_read": {n: b.read_pieces for n, b in buffers.items()},
        "events_read": {n: b.events_read for n, b in buffers.items()},
        "peak_buffer_events": {n: b.peak_rows for n, b in buffers.items()},
        "bid_hist": {"ticks": ticks, "counts": [hist[t] for t in ticks]},
        "build_s": time.perf_counter() - started, "streamed": True,
        **agg,
    }
    return {"version": STORE_VERSION, "instrument": dataclasses.asdict(q.instrument), "spec": spec.describe(),
            "feature_names": feature_names, "rows": rows_total, "first_ns": first_ns, "chunks": chunks,
            "meta": meta, "row_columns": list(ROW_COLUMNS)}


def _utc(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
