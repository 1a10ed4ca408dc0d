"""``mmsweep data inspect``: what is in an event table, and what is wrong with it."""
from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from .book import NO_ASK, NO_BID, replay_book
from .events import KIND_NAMES, Events


def _utc(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def summarize(events: Events) -> dict[str, Any]:
    """Facts about ``events``: span, counts by kind, tick/lot, feed latency, gaps, crossings."""
    table = events.table
    inst = events.instrument
    local, exch = table["local_ts"], table["exch_ts"]
    feed_ms = (local - exch) / 1e6
    kinds, counts = np.unique(table["kind"], return_counts=True)
    local_book = replay_book(table, inst.tick_size, inst.lot_size, clock="local", n_levels=1, source=events.source)
    exch_book = replay_book(table, inst.tick_size, inst.lot_size, clock="exch", n_levels=1, source=events.source)
    two_sided = (local_book.best_bid != NO_BID) & (local_book.best_ask != NO_ASK)
    spread = (local_book.best_ask - local_book.best_bid)[two_sided]
    meta = events.meta
    from .instruments import units

    u = units(inst)
    contract = meta.get("contract") or {}
    return {
        "source": events.source,
        "symbol": inst.symbol,
        "venue": inst.venue,
        "accounting": {"inverse": inst.inverse, "contract_size": inst.contract_multiplier, "pnl_currency": u["pnl"],
                       "qty_unit": u["qty"], "how": contract.get("how", "default (linear)")},
        "local_ts_unit": meta.get("local_ts_unit"),
        "base_latency_ns": meta.get("base_latency_ns"),
        "feed_latency_assumed_ns": meta.get("feed_latency_assumed_ns"),
        "sequence": meta.get("sequence"),
        "file_gaps": meta.get("file_gaps"),
        "events": int(len(table)),
        "first_local": _utc(int(local.min())),
        "last_local": _utc(int(local.max())),
        "span_s": float((local.max() - local.min()) / 1e9),
        "counts": {KIND_NAMES.get(int(k), str(k)): int(c) for k, c in zip(kinds, counts)},
        "tick_size": inst.tick_size,
        "tick_size_inferred": bool(meta.get("tick_size_inferred", False)),
        "lot_size": inst.lot_size,
        "lot_size_inferred": bool(meta.get("lot_size_inferred", False)),
        "feed_latency_ms": {p: float(np.percentile(feed_ms, q)) for p, q in
                            (("min", 0), ("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "clock_offset_ns": meta.get("clock_offset_ns"),
        "sequence_gaps": len(meta.get("gaps", [])),
        "gaps": meta.get("gaps", [])[:10],
        "crossed_repairs_local": local_book.crossed_repairs,
        "crossed_repairs_exch": exch_book.crossed_repairs,
        "one_tick_spread_share": float(np.mean(spread == 1)) if len(spread) else float("nan"),
        "median_spread_ticks": float(np.median(spread)) if len(spread) else float("nan"),
        "dropped": _dropped(meta),
        "coverage": meta.get("coverage"),
    }


def _dropped(meta: dict[str, Any]) -> dict[str, int]:
    """Rows the reader dropped as documented repairs (sweep/data/screen.py), by reason."""
    timestamps = meta.get("implausible_timestamps")
    counts = {
        "implausible timestamps": len(timestamps) if isinstance(timestamps, list) else
        int(meta.get("implausible_timestamps_dropped") or 0),
        "duplicated trades": int(meta.get("duplicate_trades_dropped") or 0),
        "prices off the tick grid": int(meta.get("off_grid_prices_dropped") or 0),
    }
    return {k: v for k, v in counts.items() if v}


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable multi-line text of :func:`summarize`'s output."""
    s = summary
    acc = s.get("accounting") or {}
    unit_names = {"ns": "ns (19 digits)", "us": "µs (16 digits, converted to ns)", "ms": "ms (13 digits, converted to ns)"}
    lines = [
        f"{s['source']}",
        f"  instrument     {s['symbol']} {('(' + s['venue'] + ')') if s['venue'] else ''}".rstrip(),
        (f"  accounting     inverse: {acc.get('contract_size', 1):g} USD contracts, PnL and fees in "
         f"{acc.get('pnl_currency')} ({acc.get('how')})" if acc.get("inverse") else
         f"  accounting     linear: qty in {acc.get('qty_unit')}, PnL in {acc.get('pnl_currency')}"
         + (f", contract multiplier {acc.get('contract_size'):g}" if acc.get("contract_size", 1) != 1 else "")),
        f"  span           {s['first_local']} -> {s['last_local']} UTC  ({s['span_s']:.1f} s, local clock)",
        f"  events         {s['events']:,}  " + ", ".join(f"{k} {v:,}" for k, v in s["counts"].items()),
        f"  tick / lot     {s['tick_size']:g}{' (inferred)' if s['tick_size_inferred'] else ''} / "
        f"{s['lot_size']:g}{' (inferred)' if s['lot_size_inferred'] else ''}",
        "  feed latency   " + "  ".join(f"{k} {v:.3f} ms" for k, v in s["feed_latency_ms"].items()),
    ]
    if s.get("local_ts_unit") in unit_names:
        lines.append(f"  local clock    receive timestamps in {unit_names[s['local_ts_unit']]}")
    if s.get("feed_latency_assumed_ns") is not None:
        lines.append(f"  local clock    none in the data: local = exchange time + {s['feed_latency_assumed_ns'] / 1e6:g} ms "
                     "(the assumed feed latency)")
    if s["clock_offset_ns"] is not None:
        base = s.get("base_latency_ns")
        lines.append(f"  clock offset   local clock shifted by {s['clock_offset_ns'] / 1e9:+.6f} s"
                     + (f" (minimum feed latency of depth, trades and snapshots set to {base / 1e6:g} ms; "
                        "bookTickers can arrive faster)" if base is not None else ""))
    lines.append(f"  sequence gaps  {s['sequence_gaps']}")
    for gap in s["gaps"]:
        lines.append(f"                 {gap}")
    lines.append(f"  crossed book   {s['crossed_repairs_local']} crossing update(s) on the local clock, "
                 f"{s['crossed_repairs_exch']} on the exchange clock (stale opposite levels removed)")
    lines.append(f"  spread         one tick {100 * s['one_tick_spread_share']:.1f} % of updates, "
                 f"median {s['median_spread_ticks']:g} ticks")
    if s.get("dropped"):
        lines.append("  dropped        " + ", ".join(f"{v:,} {k}" for k, v in s["dropped"].items()))
    for i, f in enumerate(s.get("sequence") or []):
        off = f.get("clock_offset_ns")
        lines.append(f"  file {i + 1:<9} {_utc(f['first_local_ns'])} -> {_utc(f['last_local_ns'])} UTC  "
                     f"{f['events']:,} events (" + ", ".join(f"{k} {v:,}" for k, v in (f.get("counts") or {}).items())
                     + ")" + (f", clock offset {off / 1e9:+.6f} s" if off is not None else "")
                     + (f", feed latency p50 {f['feed_latency_p50_ms']:.3f} ms"
                        if f.get("feed_latency_p50_ms") is not None else "")
                     + (f", {f['local_ts_unit']}" if f.get("local_ts_unit") not in (None, "ns") else "")
                     + (", book continued from the file before" if f.get("resumed") else "")
                     + (f", {f['gaps']} gap(s)" if f.get("gaps") else "") + f": {', '.join(f['paths'])}")
    for g in s.get("file_gaps") or []:
        lines.append(f"  file gap       {g['gap_s']:,.0f} s without data between {g['after']} and {g['before']}")
    for cov in s.get("coverage") or []:
        lines.append(f"  coverage       {_utc(cov['first_local_ns'])} -> {_utc(cov['last_local_ns'])} UTC  "
                     f"{cov['type']}: {cov['path']}")
    return "\n".join(lines)
