"""Benchmark: generate a full day of the synthetic market and compare its density to the real capture.

Usage:  python bench/synth.py [--hours 24] [--only futures] [--no-validate] [--seed 0]

Prints the generation wall time (compilation excluded and shown apart), rows and the event
densities of each instrument next to the real Binance BTCUSDT sample of ../shared/data:

* trade rows/s and depth rows/s of the real sample come from hftbacktest/summary.json (the
  hftbacktest conversion: trade_rows and depth_rows over span_s_local);
* top-of-book updates/s of the real sample are its bookTicker messages per second (the README's
  table: 66,089 in 344.8 s for futures, 28,040 in 346.1 s for spot; Binance sends one whenever
  the best price or size of a side changes).  The synthetic side counts the same thing: messages
  that change a best price or best size;
* "near-touch rows/s" counts depth rows at most 5 (and 20) ticks from their side's best, on the
  real files (read with the project's hftbacktest reader) and on the first hour of the synthetic
  day, so that the comparison does not hinge on the real stream's deep-book churn.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from mmsweep.sweep.data.book import NO_ASK, NO_BID, price_to_ticks, replay_book
from mmsweep.sweep.data.events import DEPTH, Events
from mmsweep.sweep.data.synthetic import SynthConfig, synthetic_market

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# bookTicker message counts and spans of the raw captures (shared/data/README.md).
REAL_BOOK_TICKER = {"futures": (66_089, 344.8), "spot": (28_040, 346.1)}
REAL_FILES = {"futures": ("usdm/btcusdt_20240808", 0.1, 0.001), "spot": ("spot/btcusdt_20240808", 0.01, 0.00001)}


def real_density() -> dict[str, dict[str, float]]:
    """Per-second densities of the real sample, from summary.json and the README's counts."""
    summary = json.loads((SHARED / "hftbacktest" / "summary.json").read_text())
    out = {}
    for name, (key, _, _) in REAL_FILES.items():
        s = summary[key]
        span = s["span_s_local"]
        msgs, msg_span = REAL_BOOK_TICKER[name]
        out[name] = {"span_s": span, "rows": s["rows"] / span, "trade_rows": s["trade_rows"] / span,
                     "book_rows": s["depth_rows"] / span, "top_of_book_updates": msgs / msg_span}
    return out


def near_touch_rows(events: Events, max_ticks: tuple[int, ...] = (5, 20)) -> dict[int, float]:
    """Depth rows per second whose tick is at most k ticks behind their side's best before the row."""
    table = events.table
    replay = replay_book(table, events.instrument.tick_size, events.instrument.lot_size, clock="local")
    rows = table[replay.order]
    best_bid = np.concatenate([[NO_BID], replay.best_bid[:-1]])  # the book before each row
    best_ask = np.concatenate([[NO_ASK], replay.best_ask[:-1]])
    depth = rows["kind"] == DEPTH
    ticks = price_to_ticks(np.where(depth, rows["price"], 0.0), events.instrument.tick_size)
    behind = np.where(rows["side"] > 0, best_bid - ticks, ticks - best_ask)
    has_best = np.where(rows["side"] > 0, best_bid != NO_BID, best_ask != NO_ASK)
    span = (table["local_ts"][-1] - table["local_ts"][0]) / 1e9
    return {k: float(np.sum(depth & has_best & (behind <= k)) / span) for k in max_ticks}


def real_near_touch() -> dict[str, dict[int, float]]:
    try:
        from mmsweep.sweep.data.hftnpz import read_hftbacktest_npz
    except ImportError:
        return {}
    out = {}
    for name, (key, tick, lot) in REAL_FILES.items():
        try:
            events = read_hftbacktest_npz(SHARED / "hftbacktest" / f"{key}.npz", tick_size=tick, lot_size=lot)
        except Exception as exc:  # the reader is optional here; say why the column is empty
            print(f"(real {name} near-touch density unavailable: {exc})")
            continue
        out[name] = near_touch_rows(events)
    return out


def first_hour(events: Events) -> Events:
    table = events.table
    end = table["exch_ts"][0] + 3600 * 10**9
    return Events(table[table["exch_ts"] < end], events.instrument, events.source)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="generate only this instrument (e.g. futures)")
    ap.add_argument("--no-validate", action="store_true", help="skip validate_events (measure generation only)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="generate this many times in one process and report each (a VM backs fresh memory "
                         "slowly the first time; later runs reuse it)")
    args = ap.parse_args(argv)

    base = SynthConfig(seed=args.seed, hours=args.hours)
    instruments = tuple(i for i in base.instruments if args.only in (None, i.name))
    if not instruments:
        ap.error(f"no instrument named {args.only!r}")
    config = SynthConfig(seed=args.seed, hours=args.hours, instruments=instruments)

    t0 = time.perf_counter()
    synthetic_market(SynthConfig(hours=0.001, instruments=instruments))  # compile / load the numba cache
    compile_s = time.perf_counter() - t0
    print(f"synthetic market: {args.hours:g} h, {len(instruments)} instrument(s), seed {args.seed}, "
          f"{'with' if not args.no_validate else 'without'} validation; {os.cpu_count()} CPUs; "
          f"compile/cache load {compile_s:.1f} s")
    market = None
    for run in range(1, max(args.repeat, 1) + 1):
        market = None  # free the previous run's tables first
        load_before = os.getloadavg()[0]
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        market = synthetic_market(config, validate=not args.no_validate)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        total_rows = sum(len(e) for e in market.values())
        total_gb = sum(e.table.nbytes for e in market.values()) / 1e9
        print(f"  run {run}: wall {wall:.1f} s, {total_rows:,} rows ({total_gb:.2f} GB), "
              f"{total_rows / wall / 1e6:.1f} M rows/s; CPU user {user:.1f} s + system {system:.1f} s "
              f"(all threads); load average {load_before:.1f} before the run")
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"  peak RSS {rss_gb:.1f} GB.  System time is mostly page faults on fresh memory; other processes "
          f"competing for the cores stretch the wall time.")

    real = real_density()
    real_touch = real_near_touch()
    header = f"  {'per second':<34}{'synthetic':>12}{'real':>12}{'ratio':>8}"
    for name, events in market.items():
        ps = events.meta["per_second"]
        counts = events.meta["counts"]
        hours = events.meta["config"]["hours"]
        r = real.get(name, {})
        print(f"\n{name}: {len(events):,} rows, {counts['trade_rows']:,} trade rows, "
              f"{counts['aggressive_orders']:,} aggressive orders, {counts['depth_rows']:,} book rows")
        print(header)
        lines = [("rows (all kinds)", ps["rows"], r.get("rows")),
                 ("trade rows", ps["trade_rows"], r.get("trade_rows")),
                 ("aggressive orders", counts["aggressive_orders"] / (hours * 3600), None),
                 ("book (depth) rows", ps["book_rows"], r.get("book_rows")),
                 ("top-of-book updates", ps["top_of_book_updates"], r.get("top_of_book_updates")),
                 ("best price changes", ps["best_price_changes"], None)]
        if name in real_touch and args.hours >= 1:
            synth_touch = near_touch_rows(first_hour(events))
            for k in (5, 20):
                lines.append((f"book rows <= {k} ticks from best (1st h)", synth_touch[k], real_touch[name][k]))
        for label, value, ref in lines:
            ratio = f"{value / ref:7.2f}x" if ref else ""
            print(f"  {label:<34}{value:>12,.1f}{(f'{ref:,.1f}' if ref else '-'):>12}{ratio:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
