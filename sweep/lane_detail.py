"""A few lanes of a run in full: per-row curves on the fast kernel, the exact engine's record and
fills, PnL decompositions and fill markouts, for every part.  The report and ``mmsweep show``
read this; it recomputes what the sweep does not keep (the sweep stores one row of metrics per
lane).  Units as in :mod:`mmsweep.sweep.pnl`.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from . import pnl


@dataclasses.dataclass
class PartDetail:
    """One part (``train``/``test``) of the lanes ``lanes`` (sweep lane ids, in this order).

    Attributes:
        ts: [T] decision times (local clock, ns).
        mid: [T] the local mid at each decision (price units).
        fast_equity, fast_position: [n, T] the fast kernel's record (PnL currency; qty units).
        fast_metrics: metric name -> [n] (the sweep's metric names).
        fast_decomposition: [n] dicts of :func:`pnl.decompose_record` (per decision row).
        exact_*: the same from the exact engine (None when not replayed):
            ``exact_row_decomposition`` is :func:`pnl.decompose_record` on its record (the fast
            side's definition, for a like-for-like comparison) and ``exact_decomposition`` is
            :func:`pnl.decompose_fills` (per fill, vs the exchange mid just before each fill).
        fills: the exact engine's fills (``lane`` = index into ``lanes``), those known to the bot
            by the last decision.
        markouts: [n] lists of :func:`pnl.summarize_markouts` rows (exact fills).
    """

    ts: np.ndarray
    mid: np.ndarray
    fast_equity: np.ndarray
    fast_position: np.ndarray
    fast_metrics: dict[str, np.ndarray]
    fast_decomposition: list[dict[str, float]]
    exact_equity: np.ndarray | None = None
    exact_position: np.ndarray | None = None
    exact_metrics: dict[str, np.ndarray] | None = None
    exact_decomposition: list[dict[str, float]] | None = None
    exact_row_decomposition: list[dict[str, float]] | None = None
    fills: np.ndarray | None = None
    markouts: list[list[dict[str, Any]]] | None = None
    reference: dict[int, float] | None = None  # horizon ns -> the market's touch markout (bps) in this part


@dataclasses.dataclass
class LaneDetails:
    lanes: np.ndarray
    parts: dict[str, PartDetail]
    horizons_ns: tuple[int, ...]
    queue: str | None  # the exact engine's queue model (None: not replayed)


def analyse_lanes(prep, lanes: Sequence[int], *, exact: bool = True, processes: int = 1,
                  horizons_ns: Sequence[int] = pnl.DEFAULT_HORIZONS_NS,
                  log: Callable[[str], None] = lambda m: None) -> LaneDetails:
    """Recompute ``lanes`` (sweep lane ids) on every part of a prepared experiment.

    ``exact``: also replay them on the exact engine (the experiment's ``verify`` assumptions)
    and derive the per-fill decomposition and markouts.
    """
    from ..kernels.scan import run_lanes
    from ..replay import build_data
    from .exact import replay_config, replay_lanes, with_instrument
    from .run import METRIC_COLUMNS, part_bounds

    lanes = np.asarray(lanes, np.int64)
    frames, exp = prep.frames, prep.experiment
    inst = prep.quoted.instrument
    tick = inst.tick_size
    cm = inst.contract_multiplier
    config = with_instrument(replay_config(exp, processes=processes or 1), prep.quoted.instrument) if exact else None
    data = build_data(prep.quoted.table, tick, inst.lot_size) if exact else None
    mids = pnl.exchange_mids(prep.quoted) if exact else None
    kernel_dtype = np.float32 if prep.config.dtype.__name__ == "float32" else np.float64
    params = {k: np.asarray(np.asarray(v, np.float64)[lanes], kernel_dtype) for k, v in prep.lanes.items()}
    parts: dict[str, PartDetail] = {}
    for part, (lo, hi) in part_bounds(frames, exp.split).items():
        if part not in prep.parts or part not in ("train", "test"):  # blocks of folds: not detailed
            continue
        ts = np.asarray(frames["local_ts"][lo:hi], np.int64)
        mid = (np.asarray(frames["bid"][lo:hi], np.float64) + np.asarray(frames["ask"][lo:hi], np.float64)) * 0.5 * tick
        out = run_lanes(params, prep.parts[part], prep.configs[part], record=True)
        fm = {m: np.asarray(out[m], np.float64) for m in METRIC_COLUMNS}
        eq, pos = np.asarray(out["equity"], np.float64), np.asarray(out["position"], np.float64)
        detail = PartDetail(ts, mid, eq, pos, fm, [
            pnl.decompose_record(eq[i], pos[i], mid, fm["Fees"][i], contract_multiplier=cm, inverse=inst.inverse)
            for i in range(len(lanes))])
        if exact:
            log(f"exact engine: {len(lanes)} lane(s), {part} part")
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
                record, em = replay_lanes(prep, lanes, part=part, config=config, data=data)
            known = record.fills[record.fills["local_ts"] <= record.timestamp[-1]]
            detail.exact_equity = np.asarray(record.equity, np.float64)
            detail.exact_position = np.asarray(record.position, np.float64)
            detail.exact_metrics = {m: np.asarray(v, np.float64) for m, v in em.items()}
            detail.fills = known
            detail.exact_decomposition, detail.markouts = [], []
            detail.exact_row_decomposition = [pnl.decompose_record(
                record.equity[i], record.position[i], record.mid, em["Fees"][i],
                contract_multiplier=config.contract_size, inverse=config.inverse) for i in range(len(lanes))]
            for i in range(len(lanes)):
                f = known[known["lane"] == i]
                detail.exact_decomposition.append(pnl.decompose_fills(
                    f, mids, end_mid=float(record.mid[-1]), maker_fee=config.maker_fee, taker_fee=config.taker_fee,
                    contract_multiplier=config.contract_size, inverse=config.inverse))
                per = pnl.markouts(f["exch_ts"], f["side"], f["price"], mids, horizons_ns)
                detail.markouts.append(pnl.summarize_markouts(per, f["side"], horizons_ns))
            detail.reference = _market_reference(prep.quoted, ts, horizons_ns)
        parts[part] = detail
    return LaneDetails(lanes, parts, tuple(int(h) for h in horizons_ns), config.queue if config else None)


def _market_reference(quoted, ts: np.ndarray, horizons_ns: Sequence[int]) -> dict[int, float]:
    """The touch markout of every trade in the part's span (:func:`pnl.touch_markouts`)."""
    table = quoted.table
    span = (table["exch_ts"] >= ts[0]) & (table["exch_ts"] <= ts[-1])
    # the book must be built before the span: keep everything before it, drop what follows
    from .data.events import Events

    # (a plain Events: a streamed source's quoted events are read on demand, see datasource.LazyEvents)
    events = Events(table[table["exch_ts"] <= ts[-1] + max(horizons_ns)], quoted.instrument, quoted.source,
                    dict(quoted.meta))
    if not span.any():
        return {}
    ref = pnl.touch_markouts(events, horizons_ns, since_ns=int(ts[0]))
    return {int(h): ref[f"{h / 1e9:g}s"]["mean_bps"] for h in horizons_ns}
