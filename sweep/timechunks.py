"""A sweep's parts scanned in time chunks, the lanes' state carried from one chunk to the next
(``run_lanes(..., state=) -> state``: the metrics after the last chunk are those of the whole part,
bit for bit).  Streamed sources (a frames store) always run this way, one store chunk at a time;
in-memory frames do when ``run.time_chunk_rows`` is set."""
from __future__ import annotations

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
        size = max_rows or DEFAULT_STORE_CHUNK_ROWS
        for row, frames in self.store.iter_frames(self.lo, self.hi, size):
            yield row - self.lo, frames


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
            yield {k: np.asarray(v) for k, v in out.items()} if host else out
        return
    n = len(rows["index"])
    for lo in range(0, n, size):
        piece = {k: v[lo:lo + size] for k, v in rows.items()}  # index keeps counting within the part
        yield {k: np.asarray(v) for k, v in piece.items()} if host else piece


def run_part_chunked(prep, part: str, params: dict, run: Callable, host: bool) -> dict:
    """One part's metrics for ``params``, scanning its time chunks with the state carried.  With
    JAX the next chunk is prepared (and its transfer dispatched) while the current one runs."""
    config = prep.configs[part]
    state = None
    out = None
    if host:
        for rows in _chunks(prep, part, True):
            out, state = run(params, rows, config, state=state, return_state=True)
        return out
    import jax

    it = _chunks(prep, part, False)
    nxt = next(it, None)
    while nxt is not None:
        rows = jax.device_put(nxt)
        out, state = run(params, rows, config, state=state, return_state=True)  # dispatched, not awaited
        nxt = next(it, None)  # built (and uploaded) while the scan runs
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
