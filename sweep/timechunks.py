"""A sweep's parts scanned in time chunks, the lanes' state carried from one chunk to the next
(``run_lanes(..., state=) -> state``: the metrics after the last chunk are those of the whole part,
bit for bit).  Streamed sources (a frames store) always run this way, one store chunk at a time;
in-memory frames do when ``run.time_chunk_rows`` is set."""
from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import numpy as np


#: rows per kernel call over a frames store when ``run.time_chunk_rows`` is not set (~100 MB of rows)
DEFAULT_STORE_CHUNK_ROWS = 1 << 20


class StoreRows(Mapping):
    """The kernel rows of a part ``[lo, hi)`` of a frames store, read chunk by chunk.

    As a mapping (what ``run_lanes`` takes) it reads the whole part into memory on first use:
    fine for the short horizons the exact engine's checks and the report replay; the sweep
    itself goes through :func:`run_part_chunked`."""

    def __init__(self, store, lo: int, hi: int, base_tick: int, dtype) -> None:
        self.store, self.lo, self.hi, self.base_tick, self.dtype = store, int(lo), int(hi), int(base_tick), dtype
        self._rows: dict | None = None

    def __len__(self) -> int:
        return self.hi - self.lo

    def _all(self) -> dict:
        if self._rows is None:
            self._rows = _rows_of(self.store.frames_between(self.lo, self.hi), self.base_tick, self.dtype, 0)
        return self._rows

    def __getitem__(self, key: str):
        return self._all()[key]

    def __iter__(self):
        return iter(self._all())

    def chunks(self, max_rows: int | None) -> Iterator[tuple[int, Any]]:
        """``(first row within the part, Frames)`` of at most ``max_rows`` rows (default: the
        store's chunks)."""
        yield from _pieces(self.store, self.lo, self.hi, max_rows or DEFAULT_STORE_CHUNK_ROWS)


def _pieces(store, lo: int, hi: int, size: int) -> Iterator[tuple[int, Any]]:
    """Rows ``[lo, hi)`` of a frames store as ``(row - lo, Frames)`` of at most ``size`` rows.  A
    piece spanning stored chunks is filled column by column as they are read, and is dropped before
    the next is read: memory is one piece and one stored chunk, whatever the horizon."""
    from .frames import Frames
    from .frames_store import _slice

    row = lo
    while row < hi:
        end = min(hi, row + size)
        i = store._chunk_of(row)
        first = store.chunk(i)
        c_lo, c_hi = store.chunks[i]["lo"], store.chunks[i]["hi"]
        if end <= c_hi:  # within one stored chunk: a slice of it
            piece = _slice(first, row - c_lo, end - c_lo)
        else:
            columns = {k: np.empty((end - row,) + v.shape[1:], v.dtype) for k, v in first.columns.items()}
            features = np.empty((end - row,) + first.features.shape[1:], first.features.dtype)
            names, inst, spec, meta = first.feature_names, first.instrument, first.spec, first.meta
            at, chunk = row, first
            del first
            while True:
                take = min(end, c_hi)
                a, b = at - c_lo, take - c_lo
                for k, v in chunk.columns.items():
                    columns[k][at - row:take - row] = v[a:b]
                features[at - row:take - row] = chunk.features[a:b]
                at = take
                if at >= end:
                    break
                i = store._chunk_of(at)
                chunk = store.chunk(i)
                c_lo, c_hi = store.chunks[i]["lo"], store.chunks[i]["hi"]
            del chunk
            piece = Frames(columns, features, names, inst, spec, meta)
        yield row - lo, piece
        del piece  # not held while the next piece is read
        row = end


def _flatten(rows: StoreRows):
    keys = tuple(sorted(rows._all()))
    return [rows._all()[k] for k in keys], keys


def _register() -> None:
    """JAX sees a StoreRows as the dict of its rows (read in full on first use)."""
    import jax

    try:
        jax.tree_util.register_pytree_node(StoreRows, _flatten, lambda keys, values: dict(zip(keys, values)))
    except ValueError:  # already registered (module reloaded)
        pass


_register()


def _rows_of(frames, base_tick: int, dtype, offset: int) -> dict:
    import jax.numpy as jnp

    from ..kernels.scan import rebase_frames

    rows = rebase_frames(frames, base_tick, dtype)
    rows["index"] = jnp.arange(offset, offset + len(frames), dtype=jnp.int32)  # the part's row clock
    return rows


def chunked(prep, part: str) -> bool:
    rows = prep.parts[part]
    if isinstance(rows, StoreRows):
        return True
    size = getattr(prep.experiment.run, "time_chunk_rows", None)
    return size is not None and len(rows["index"]) > size


def _chunks(prep, part: str, host: bool) -> Iterator[dict]:
    rows = prep.parts[part]
    size = getattr(prep.experiment.run, "time_chunk_rows", None)
    if isinstance(rows, StoreRows):
        base, dtype = rows.base_tick, rows.dtype
        for offset, frames in rows.chunks(size):
            out = _rows_of(frames, base, dtype, offset)
            del frames
            if host:
                out = {k: np.asarray(v) for k, v in out.items()}
            yield out
            del out  # the caller drops its reference too (run_part_chunked): one chunk alive at a time
        return
    n = len(rows["index"])
    for lo in range(0, n, size):
        piece = {k: v[lo:lo + size] for k, v in rows.items()}  # index keeps counting within the part
        yield {k: np.asarray(v) for k, v in piece.items()} if host else piece


#: seconds between two progress lines of a part scanned in time chunks
PROGRESS_EVERY_S = 15.0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Progress:
    """A line every :data:`PROGRESS_EVERY_S` seconds while a part's time chunks are scanned (rows
    done, lane-steps/s, ETA): a sweep over months is one lane chunk of many minutes.  Written with
    ``prep.progress`` when set, else to stderr; nothing for a part that finishes sooner."""

    def __init__(self, prep, part: str, lanes: int) -> None:
        self.say = prep.__dict__.get("progress") or _stderr
        self.part, self.lanes, self.total = part, lanes, len(prep.parts[part]) if isinstance(
            prep.parts[part], StoreRows) else len(prep.parts[part]["index"])
        self.start = self.last = time.perf_counter()
        self.done = 0

    def step(self, rows: int, wait: Callable[[], Any] | None = None) -> None:
        self.done += rows
        now = time.perf_counter()
        if now - self.last < PROGRESS_EVERY_S or self.done >= self.total:
            return
        if wait is not None:  # JAX: the scan is dispatched, not done; wait for it to time it
            wait()
            now = time.perf_counter()
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        self.say(f"  {self.part}: {self.done:,}/{self.total:,} rows x {self.lanes:,} lanes, "
                 f"{rate * self.lanes / 1e6:,.1f} M lane-steps/s, ETA {(self.total - self.done) / rate:,.0f} s")


def run_part_chunked(prep, part: str, params: dict, run: Callable, host: bool) -> dict:
    """One part's metrics for ``params``, scanning its time chunks with the state carried.  With
    JAX the next chunk is prepared (and its transfer dispatched) while the current one runs."""
    config = prep.configs[part]
    state = None
    out = None
    lanes = int(np.shape(next(iter(params.values())))[0]) if params else 1
    progress = _Progress(prep, part, lanes)
    if host:
        for rows in _chunks(prep, part, True):
            out, state = run(params, rows, config, state=state, return_state=True)
            progress.step(len(rows["index"]))
            del rows  # freed before the next chunk is read
        return out
    import jax

    it = _chunks(prep, part, False)
    nxt = next(it, None)
    while nxt is not None:
        rows = jax.device_put(nxt)
        out, state = run(params, rows, config, state=state, return_state=True)  # dispatched, not awaited
        nxt = next(it, None)  # built (and uploaded) while the scan runs
        progress.step(len(rows["index"]), wait=lambda: jax.block_until_ready(state))
    return out


def describe_run(exp, frames, streamed: bool) -> dict[str, Any]:
    """Manifest facts: the units of every figure and, for a store, where and how it was built."""
    from .data.instruments import units

    out: dict[str, Any] = {"units": units(frames.instrument)}
    if streamed:
        out["frames_store"] = {"path": str(frames.path), "chunks": len(frames.chunks),
                               "rows": len(frames), "time_chunk_rows": getattr(exp.run, "time_chunk_rows", None)}
    return out


def warn_zero_size(exp, config, lanes: dict, frames, train_rows, base_tick: int) -> dict | None:
    """Warn naming the lanes whose orders round to 0 lots (:mod:`mmsweep.sweep.sizing`)."""
    from .config import POLICIES
    from .data.instruments import units
    from .sizing import describe_zero_lanes, zero_size_lanes

    if isinstance(train_rows, StoreRows):
        sample = _store_sample(train_rows)
    else:
        n = len(train_rows["index"])
        idx = np.unique(np.linspace(0, n - 1, min(n, 8)).astype(np.int64))
        sample = (np.asarray(train_rows["bid"])[idx], np.asarray(train_rows["ask"])[idx],
                  np.asarray(train_rows["features"], np.float64)[idx])
    try:
        idx = zero_size_lanes(config.policy, config.market, {k: np.asarray(v) for k, v in lanes.items()}, *sample)
    except Exception as exc:  # noqa: BLE001 - a check must never stop a sweep
        warnings.warn(f"could not check the lanes' order sizes ({type(exc).__name__}: {exc})", stacklevel=3)
        return None
    inst = frames.instrument
    _warn_notional_on_inverse(exp, inst)
    if inst.inverse and exp.metrics.book_size == 100_000.0:
        from .data.instruments import units as _units

        coin = _units(inst)["pnl"]
        warnings.warn(f"metrics.book_size is 100,000 {coin} (the default, sized for a quote currency): on inverse "
                      f"{inst.symbol} Return, MaxDrawdown and DailyTurnover are fractions of it; set it in {coin}",
                      UserWarning, stacklevel=3)
    if not len(idx):
        return None
    message = describe_zero_lanes(idx, lanes, POLICIES[exp.strategy.policy].params, inst.lot_size,
                                  units(inst)["qty_short"])
    warnings.warn(message, UserWarning, stacklevel=3)
    return {"lanes": [int(i) for i in idx[:1000]], "count": int(len(idx)), "message": message}


def _warn_notional_on_inverse(exp, inst) -> None:
    """A policy sized by a quote-currency notional (qty = notional / mid, in coins) on an inverse
    instrument, whose qty is contracts: say so, rather than let the sizes be silently off."""
    if not inst.inverse:
        return
    from .config import POLICIES

    params = POLICIES[exp.strategy.policy].params
    notional = [k for k, p in params.items() if "notional" in k and p.unit == "quote currency"]
    if not notional:
        return
    warnings.warn(f"{exp.strategy.policy} sizes orders from {', '.join(notional)} (quote currency) as notional / "
                  f"mid, a number of coins; {inst.symbol} is inverse, its qty is contracts of "
                  f"{inst.contract_multiplier:g} USD, so an order of N USD is N / {inst.contract_multiplier:g} "
                  f"contracts, not N / mid: size orders in contracts (e.g. grid's order_qty) on inverse instruments",
                  UserWarning, stacklevel=4)


def _store_sample(rows: StoreRows):
    """A few rows from the first and the last chunk of a store part (relative ticks, features)."""
    store = rows.store
    picks = sorted({rows.lo, rows.lo + (rows.hi - rows.lo) // 2, rows.hi - 1})
    bid, ask, feats = [], [], []
    for r in picks:
        f = store.frames_between(r, r + 1)
        bid.append(int(f["bid"][0]) - rows.base_tick)
        ask.append(int(f["ask"][0]) - rows.base_tick)
        feats.append(f.features[0])
    return np.asarray(bid), np.asarray(ask), np.asarray(feats, np.float64)
