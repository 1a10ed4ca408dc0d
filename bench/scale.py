"""Benchmark: memory and time over long horizons, 1 h / 1 day / 7 days of the synthetic market.

Usage:  python bench/scale.py [--hours 1 24 168] [--lanes 1024] [--chunk-rows N] [--out scale.json]

For each horizon, two fresh processes (so that each peak is its own):

1. **frames**: the synthetic two-instrument market (futures + spot) generated piece by piece
   (``data.synthetic.days``, one-hour pieces) and streamed into a frames store (100 ms rows,
   three spot return features, 10 ms entry latency): wall time and peak RSS.  The market and
   frames are those of ``experiments/apt_two_months.yaml`` (seed 0, spot leading by 200 ms), so a
   store built here with ``--cache`` serves that experiment run over the same days;
2. **sweep**: the APT fair-value strategy, ``--lanes`` lanes (half-spread x skew), over every row
   of the store, scanned in time chunks of 2^20 rows with the lane state carried: wall time,
   lane-steps/s and peak RSS.

Peak RSS is the kernel's high-water mark of the process (``VmHWM``).  Flat memory means: the
frames peak is one piece of events plus the look-back, the sweep peak one time chunk of rows plus
the lanes' state, whatever the horizon.  The store is built in a temporary cache folder
(``--cache``), removed at the end unless given.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def experiment(hours: float, lanes: int, chunk_rows: int | None = None) -> dict:
    side = int(round(lanes ** 0.5))
    return {
        "name": f"scale-{hours:g}h",
        "data": {"source": "synthetic", "quoted": "futures",
                 "synthetic": {"days": hours / 24, "piece_hours": min(1.0, hours), "seed": 0, "lead_lag_ms": 200}},
        "interval_ms": 100, "latency": {"entry_ms": 10}, "fees": {"maker_bps": -0.5, "taker_bps": 7.0},
        "features": [{"kind": "rolling_return", "instrument": "spot", "window_s": w} for w in (300, 60, 10)],
        "strategy": {"policy": "fair_value",
                     "static": {"signals": ["spot.rolling_return_300s", "spot.rolling_return_60s",
                                            "spot.rolling_return_10s"]},
                     "params": {"n_levels": 1, "order_notional": 1000, "max_notional": 20000, "beta": 0.3,
                                "beta_1": 0.3, "beta_2": 0.3}},
        "sweep": {"relative_half_spread_bps": {"linspace": [0.5, 5, side]},
                  "relative_skew_bps": {"logspace": [-1, 1, lanes // side]}},
        "split": {"train_fraction": 1.0},
        "run": {"chunk_lanes": lanes, "dtype": "float32", **({"time_chunk_rows": chunk_rows} if chunk_rows else {})},
    }


def _peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(stage: str, hours: float, lanes: int, chunk_rows: int | None = None) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    from mmsweep.sweep.config import parse_experiment
    from mmsweep.sweep.run import prepare, run_chunk

    exp = parse_experiment(experiment(hours, lanes, chunk_rows))
    t = time.perf_counter()
    prep = prepare(exp, log=lambda *_: None)
    prepared = time.perf_counter() - t
    out = {"stage": stage, "hours": hours, "rows": len(prep.frames), "chunks": len(prep.frames.chunks),
           "prepare_s": prepared, "cache_hit": bool(prep.frames.meta.get("cache_hit"))}
    if stage == "frames":
        out.update(peak_mb=_peak_mb(), events=prep.frames.meta.get("events_read"),
                   peak_buffer_events=prep.frames.meta.get("peak_buffer_events"))
        return out
    run_chunk(prep, 0, min(lanes, 8))  # compile (numba) outside the timing
    t = time.perf_counter()
    table = run_chunk(prep, 0, lanes)
    seconds = time.perf_counter() - t
    out.update(sweep_s=seconds, lane_steps_per_s=lanes * len(prep.frames) / seconds, peak_mb=_peak_mb(),
               trades=float(table["train_NumberOfTrades"].sum()), backend=prep.backend)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, nargs="+", default=[1, 24, 168])
    p.add_argument("--lanes", type=int, default=1024)
    p.add_argument("--chunk-rows", type=int, help="rows per time chunk of the sweep (run.time_chunk_rows; "
                   "default 2^20)")
    p.add_argument("--cache", help="frames cache folder (default: a temporary one, removed at the end)")
    p.add_argument("--out", help="also write the results as JSON")
    p.add_argument("--child", nargs=2, metavar=("STAGE", "HOURS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], float(args.child[1]), args.lanes, args.chunk_rows)))
        return
    sys.path.insert(0, str(HERE))
    from common import machine

    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="mmsweep-scale-"))
    env = dict(os.environ, MMSWEEP_CACHE=str(cache))
    results = []
    try:
        for hours in args.hours:
            for stage in ("frames", "sweep"):
                t = time.perf_counter()
                chunk_rows = ["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else []
                proc = subprocess.run([sys.executable, __file__, "--lanes", str(args.lanes), *chunk_rows, "--child",
                                       stage, str(hours)], env=env, capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(f"{stage} {hours:g} h failed:\n{proc.stderr[-3000:]}")
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row["process_s"] = time.perf_counter() - t
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
    finally:
        if not args.cache:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"\n{machine()}\n")
    print("| horizon | rows (100 ms) | store chunks | frames: wall | frames: peak RSS | sweep: lanes | sweep: wall | "
          "lane-steps/s | sweep: peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    by = {(r["hours"], r["stage"]): r for r in results}
    for hours in args.hours:
        f, s = by[(hours, "frames")], by[(hours, "sweep")]
        label = f"{hours:g} h" if hours < 24 else f"{hours / 24:g} day{'s' if hours > 24 else ''}"
        print(f"| {label} | {f['rows']:,} | {f['chunks']} | {f['prepare_s']:.0f} s | {f['peak_mb']:,.0f} MB | "
              f"{args.lanes:,} | {s['sweep_s']:.0f} s | {s['lane_steps_per_s'] / 1e6:.1f} M | {s['peak_mb']:,.0f} MB |")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
