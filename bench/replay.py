"""Exact engine throughput beside hftbacktest 2.4.4, same data, same strategy, same run.

Run: ``python bench/replay.py [--candidates 1,8,32] [--queue power] [--repeat 3]``.
Data: the real usdm capture ``../shared/data/hftbacktest/usdm/btcusdt_20240808.npz`` (491,973
rows; 466,836 events after merging its EXCH/LOCAL duplicates).  Strategy: the data README's
reference grid (5 levels of 0.01 BTC, 1 bp grid interval, 2 bp half-spread, 0.1 bp skew, max
position 0.05 BTC, 100 ms decisions, 10 ms latency each way, power-2 queue, no partial fills,
-0.5 bp / 7 bp fees), run by hftbacktest through the test oracle ``tests/hbt_oracle.py``
(hftbacktest is a dev dependency).  Candidates differ in half-spread (1..3 bp) and replay in
lock-step over one pass of the events (``ReplayConfig.lockstep``), in this process.

Timings exclude compilation (a warm-up run first); the best of ``--repeat`` runs is printed, as
one markdown table, so that the ratios come from the same run on the same machine.  hftbacktest
runs one parameter set per pass, so its per-candidate time is its run time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import hbt_oracle as H  # noqa: E402

from mmsweep.kernels.policies.base import Market  # noqa: E402
from mmsweep.replay import ReplayConfig, build_data, replay_policy  # noqa: E402
from mmsweep.sweep.data.hftnpz import read_hftbacktest_npz  # noqa: E402

TICK, LOT = 0.1, 0.001
MID0 = 61_800.25
BP = MID0 * 1e-4 / TICK  # ticks per basis point at the start of the capture


def params(n: int) -> dict[str, np.ndarray]:
    return {"half_spread": np.linspace(1.0, 3.0, n) * BP if n > 1 else np.array([2.0 * BP]),
            "skew": np.full(n, 0.1 * BP), "grid_interval": np.full(n, BP), "n_levels": np.full(n, 5.0),
            "order_qty": np.full(n, 0.01), "max_position": np.full(n, 0.05)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hftbacktest" / "usdm" /
                                          "btcusdt_20240808.npz"))
    ap.add_argument("--candidates", default="1,8,32")
    ap.add_argument("--queue", default="power")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    raw = H.load_npz(args.data)
    events = read_hftbacktest_npz(args.data, tick_size=TICK, lot_size=LOT)
    decisions = H.decision_grid(raw, TICK)
    t0 = time.perf_counter()
    data = build_data(events.table, TICK, LOT)
    prep_s = time.perf_counter() - t0
    n_events = len(data[0].x_ts)
    market = Market(TICK, LOT, int(round(MID0 / TICK)), (), 0.1, 5)
    p1 = {k: float(v[0]) for k, v in params(1).items()}

    hbt_runs = [H.run_hbt_grid(raw, decision_ts=decisions, tick_size=TICK, lot_size=LOT, queue=args.queue, **p1)
                for _ in range(args.repeat)]
    hbt_s = min(r["elapsed_s"] for r in hbt_runs)
    rows = [("hftbacktest 2.4.4", 1, hbt_s, len(raw) / hbt_s, hbt_s, 1.0, int(hbt_runs[0]["num_trades"][-1]))]

    for n in [int(x) for x in args.candidates.split(",")]:
        config = ReplayConfig(queue=args.queue, cross_per_message=False, lockstep=n, processes=1)
        run = lambda: replay_policy(events.table, tick_size=TICK, lot_size=LOT, decision_ts=decisions,  # noqa: E731
                                    end_ts=int(decisions[-1]), features=np.zeros((len(decisions), 0)), market=market,
                                    policy="grid", static=None, params=params(n), config=config, data=data)
        run()  # compile
        best = min(run().stats["seconds"] for _ in range(args.repeat))
        result = run()
        trades = int(result.num_trades[0, -1])
        rows.append((f"mmsweep replay, {n} in lock-step", n, best, n_events / best, best / n, hbt_s / (best / n), trades))

    print(f"data: {args.data} ({len(raw):,} rows; {n_events:,} events after merging duplicates); "
          f"{len(decisions):,} decisions of 100 ms; queue {args.queue}; build_data {prep_s:.2f} s (once per data)")
    print()
    print("| engine | candidates | seconds per pass | events/s per pass | seconds per candidate "
          "| hftbacktest time / ours, per candidate | trades (first candidate) |")
    print("|---|---|---|---|---|---|---|")
    for name, n, s, eps, per, ratio, trades in rows:
        print(f"| {name} | {n} | {s:.3f} | {eps / 1e6:.2f} M | {per:.4f} | {ratio:.2f} | {trades} |")


if __name__ == "__main__":
    main()
