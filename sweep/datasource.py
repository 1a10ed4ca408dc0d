"""An experiment's market data: read at once, or streamed piece by piece into a frames store.

A source is *streamed* when it is a sequence of pieces (:mod:`mmsweep.sweep.data.sequence`): an
instrument given as several files (a list or a glob of days), or the synthetic market over
``days`` (:mod:`mmsweep.sweep.data.synthetic_stream`).  Its frames are then built one piece at a
time into an on-disk store (:mod:`mmsweep.sweep.frames_store`) and the sweep scans them in time
chunks; the events themselves are only read again, whole, if the exact engine asks for them.
Single files and the synthetic market over ``hours`` are read at once.  Their frames are cached by
the events' content; :func:`cached_frames` finds them again from the source's own key (the
synthetic settings, or the files' bytes, with the readers' code), so a warm run neither generates
nor parses the events until the exact engine asks for them.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Iterator



def file_sequence(name: str, f, quoted: bool, override: dict | None):
    """The :class:`EventSequence` of one instrument of ``data.files``."""
    from .data.sequence import EventSequence

    given = dict(f.instrument or {})
    if quoted and override:
        given.update(override)
    return EventSequence(list(f.paths), format=f.format, options=f.options(), snapshot=f.snapshot,
                         instrument=given or None, key=f"data.files.{name}.path")


def is_streamed(data) -> bool:
    """Whether ``data`` is a sequence of pieces (module docstring)."""
    if data.files is None:
        return bool((data.synthetic or {}).get("days"))
    for name, f in data.files.items():
        seq = file_sequence(name, f, name == data.quoted, None)
        if len(seq.groups) > 1:
            return True
    return False


def _synth_config(data):
    from .data.synthetic import SynthConfig

    fields = {k: v for k, v in (data.synthetic or {}).items() if k not in ("days", "piece_hours")}
    return SynthConfig(**fields)


def _override(events, data, name: str):
    from .data.instruments import apply_override

    if name == data.quoted and getattr(data, "instrument", None):
        return apply_override(events, data.instrument, "data.instrument")
    return events


def load(data) -> tuple[Any, dict[str, Any]]:
    """``(quoted events, {signal name: events})`` in memory (every piece of a sequence joined)."""
    if data.files is None:
        syn = data.synthetic or {}
        if syn.get("days"):
            market = _join_synthetic(data)
        else:
            from .data.synthetic import synthetic_market

            market = synthetic_market(_synth_config(data))
        market = {n: _override(ev, data, n) for n, ev in market.items()}
    else:
        market = {}
        for name, f in data.files.items():
            seq = file_sequence(name, f, name == data.quoted, getattr(data, "instrument", None))
            market[name] = seq.load()
    return market[data.quoted], {n: market[n] for n in data.signals}


def _join_synthetic(data) -> dict[str, Any]:
    import numpy as np

    from .data.events import Events
    from .data.synthetic_stream import synthetic_pieces

    syn = data.synthetic
    tables: dict[str, list] = {}
    first: dict[str, Any] = {}
    pieces = synthetic_pieces(_synth_config(data), float(syn["days"]), piece_hours=float(syn.get("piece_hours", 1.0)))
    for piece in pieces:
        for name, ev in piece.items():
            tables.setdefault(name, []).append(ev.table)
            first.setdefault(name, ev)
    return {n: Events(np.concatenate(t), first[n].instrument, first[n].source, dict(first[n].meta, pieces=len(t)))
            for n, t in tables.items()}


def stream(data) -> tuple[dict[str, Iterator[Any]], str, Callable[[], dict]]:
    """``(pieces per instrument, a content key of the input, a function describing what was read)``."""
    from .codehash import READER_CODE, code_digest

    override = getattr(data, "instrument", None)
    if data.files is None:
        from .data.synthetic_stream import STREAM_VERSION, synthetic_pieces
        from .frames_store import fanout

        syn = dict(data.synthetic)
        config = _synth_config(data)
        pieces = prefetch(synthetic_pieces(config, float(syn["days"]), piece_hours=float(syn.get("piece_hours", 1.0))))
        names = [i.name for i in config.instruments]
        fans = fanout(pieces, names)
        sources = {n: (_override(ev, data, n) for ev in fans[n]) for n in names}
        key = hashlib.sha256(json.dumps({"synthetic": syn, "stream": STREAM_VERSION, "override": override,
                                         "code": code_digest(READER_CODE)}, sort_keys=True, default=str).encode())
        return sources, key.hexdigest(), lambda: {"synthetic": syn}
    seqs = {n: file_sequence(n, f, n == data.quoted, override) for n, f in data.files.items()}
    key = hashlib.sha256()
    for n in sorted(seqs):
        key.update(n.encode())
        key.update(_fingerprint(seqs[n]).encode())
    return ({n: s.pieces() for n, s in seqs.items()}, key.hexdigest(),
            lambda: {n: s.describe() for n, s in seqs.items()})


def prefetch(pieces: Iterator[Any]) -> Iterator[Any]:
    """``pieces`` with the next one produced in a thread while the caller works on the current one
    (the synthetic event loop releases the GIL); one extra piece in memory."""
    import queue
    import threading

    box: queue.Queue = queue.Queue(maxsize=1)
    done = object()

    def work() -> None:
        try:
            for piece in pieces:
                box.put((piece, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            box.put((None, exc))
            return
        box.put((done, None))

    threading.Thread(target=work, daemon=True, name="mmsweep-prefetch").start()
    while True:
        piece, exc = box.get()
        if exc is not None:
            raise exc
        if piece is done:
            return
        yield piece


_FINGERPRINTS: dict[tuple, str] = {}


def _fingerprint(seq) -> str:
    """The sequence's content hash, memoised per (file, size, mtime) in this process."""
    import os

    stat = tuple((p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in seq.files)
    token = (stat, seq.format, tuple(sorted(seq.options.items())), seq.snapshot,
             tuple(sorted(seq.instrument_override.items())))
    if token not in _FINGERPRINTS:
        _FINGERPRINTS[token] = seq.fingerprint()
    return _FINGERPRINTS[token]


class LazyEvents:
    """The quoted instrument's events of a streamed source (or of cached frames), read (all pieces
    joined) only when the exact engine needs the table; ``instrument``, ``source`` and ``meta``
    come from the store (the cache)."""

    def __init__(self, data, instrument, source: str, meta: dict, events_total: int | None) -> None:
        self._data = data
        self.instrument = instrument
        self.source = source
        self.meta = meta
        self.events_total = events_total
        self._table = None

    @property
    def table(self):
        if self._table is None:
            from .limits import check_fits

            if self.events_total:
                check_fits(float(self.events_total) * 40 * 3, f"the {self.events_total:,} events of {self.source}",
                           hint="The exact engine replays the whole event table in memory: verify a shorter span "
                                "(fewer files or days)", source=self.source)
            events, _ = load(self._data)
            self._table = events.table
        return self._table

    def __len__(self) -> int:
        return int(self.events_total or 0)


def stream_frames(exp, *, log: Callable[[str], None] = print):
    """Build (or open) the frames store of a streamed experiment; ``(store, lazy quoted events)``."""
    import time

    from .frames_store import build_store, store_key

    data = exp.data
    t0 = time.perf_counter()
    sources, source_key, describe = stream(data)
    spec = exp.frame_spec()
    key = store_key(source_key, spec, data.quoted, sources)
    log(f"data: streamed {'synthetic market' if data.files is None else 'file sequence'} "
        f"({', '.join(sources)}); frames store {key}")
    store = build_store(sources, data.quoted, spec, key, log=log)
    if not store.meta.get("cache_hit"):
        store.meta["input"] = describe()
    log(f"frames: {len(store):,} rows in {len(store.chunks)} chunk(s) "
        f"({'cache hit' if store.meta.get('cache_hit') else 'built'}) [{time.perf_counter() - t0:.1f} s]")
    total = (store.meta.get("events_read") or {}).get(data.quoted)
    quoted = LazyEvents(data, store.instrument, store.meta.get("source", ""), {"streamed": True}, total)
    return store, quoted


def _source_key(data) -> str:
    """A content key of a read-at-once source, computed without reading its events: the synthetic
    settings or every file's bytes and settings, the instruments, the override and the readers'
    code (numpy's version too: the synthetic market is drawn from its random generators)."""
    import dataclasses

    import numpy as np

    from .codehash import READER_CODE, code_digest

    override = getattr(data, "instrument", None)
    h = hashlib.sha256(json.dumps({"reader": code_digest(READER_CODE), "numpy": np.__version__,
                                   "quoted": data.quoted, "signals": sorted(data.signals), "override": override,
                                   "synthetic": data.synthetic if data.files is None else None},
                                  sort_keys=True, default=str).encode())
    for name in sorted(data.files or {}):
        f = data.files[name]
        h.update(json.dumps({name: dataclasses.asdict(f)}, sort_keys=True, default=str).encode())
        h.update(_fingerprint(file_sequence(name, f, name == data.quoted, override)).encode())
    return h.hexdigest()


def _alias_path(data, spec):
    """Where the source key of ``data`` under ``spec`` points at its frames in the frames cache."""
    from .codehash import code_digest
    from .frames import FRAMES_VERSION, default_cache_dir

    h = hashlib.sha256(json.dumps({"source": _source_key(data), "frames": FRAMES_VERSION, "code": code_digest(),
                                   "spec": spec.describe()}, sort_keys=True, default=str).encode())
    return default_cache_dir() / f"source-{h.hexdigest()[:32]}.json"


def cached_frames(data, spec):
    """``(frames, lazy quoted events, {signal: source name}, the readers' warnings)`` of a
    read-at-once source whose frames were built before (by :func:`frames_at_once`), without
    reading the events; None otherwise."""
    import warnings

    from .frames import _report_staleness, default_cache_dir, load_frames

    try:
        alias = _alias_path(data, spec)
        if not alias.exists():
            return None
        facts = json.loads(alias.read_text())
        frames = load_frames(default_cache_dir() / f"{facts['frames_key']}.npz")
    except (OSError, ValueError, KeyError) as exc:  # gone or damaged: the events are read as without it
        if not isinstance(exc, FileNotFoundError):
            warnings.warn(f"frames cache: {exc}; reading the events", stacklevel=2)
        return None
    if frames.meta.get("cache_key") != facts["frames_key"]:
        return None
    frames.meta["cache_hit"] = True
    _report_staleness(frames, spec.on_stale)
    quoted = LazyEvents(data, frames.instrument, facts["quoted"]["source"], facts["quoted"]["meta"],
                        facts["quoted"]["events"])
    return frames, quoted, dict(facts["signals"]), list(facts["warnings"])


def frames_at_once(data, spec, *, log: Callable[[str], None] = lambda _m: None):
    """``(frames, quoted events, {signal instrument: source name})`` of a read-at-once source: the
    cached frames when :func:`cached_frames` finds them (the events then lazy; the readers'
    warnings of the cold run said again), else the events read and their frames built (and
    cached) by :func:`mmsweep.sweep.frames.build_frames`."""
    import time
    import warnings

    from .frames import build_frames

    t0 = time.perf_counter()
    found = cached_frames(data, spec)
    if found is not None:
        frames, quoted, sources, said = found
        for message in said:
            warnings.warn(f"{message} (said when the events were read; their frames are cached)", UserWarning,
                          stacklevel=3)
        log(f"data: {quoted.source or 'synthetic'} ({len(quoted):,} events, not read: their frames are cached) "
            f"+ {len(sources)} signal instrument(s)")
        log(f"frames: {len(frames):,} rows (cache hit) [{time.perf_counter() - t0:.1f} s]")
        return frames, quoted, sources
    with warnings.catch_warnings(record=True) as said:  # the readers' repairs, said again on a warm run
        warnings.simplefilter("always")
        quoted, signals = load(data)
    for w in said:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    log(f"data: {quoted.source or 'synthetic'} ({len(quoted):,} events) + {len(signals)} signal instrument(s) "
        f"[{time.perf_counter() - t0:.1f} s]")
    t1 = time.perf_counter()
    frames = build_frames(quoted, spec, signals=signals)
    log(f"frames: {len(frames):,} rows ({'cache hit' if frames.meta['cache_hit'] else 'built'}) "
        f"[{time.perf_counter() - t1:.1f} s]")
    _remember_frames(data, spec, frames, quoted, signals,
                     [str(w.message) for w in said if issubclass(w.category, UserWarning)])
    return frames, quoted, {n: ev.source for n, ev in signals.items()}


def _remember_frames(data, spec, frames, quoted, signals, said: list[str]) -> None:
    """Note, beside the cached frames, which source they came from (see :func:`cached_frames`)."""
    import os

    key = frames.meta.get("cache_key")
    if not key or not frames.meta.get("cache_path") and not frames.meta.get("cache_hit"):
        return  # not in the cache (not writable): nothing to point at
    facts = {"frames_key": key, "signals": {n: ev.source for n, ev in signals.items()}, "warnings": said,
             "quoted": {"source": quoted.source, "events": len(quoted),
                        "meta": json.loads(json.dumps(quoted.meta, default=str))}}
    try:
        alias = _alias_path(data, spec)
        tmp = alias.with_name(f"{alias.name}.{os.getpid()}.partial")
        tmp.write_text(json.dumps(facts, sort_keys=True))
        tmp.replace(alias)
    except OSError:
        pass  # the shortcut only saves time
