"""Kernel throughput per backend, beside scalar baselines and the exact engines, in one run.

Run: ``python bench/throughput.py [--lanes 1024,16384,65536,262144] [--levels 1,5,20]
[--fills cross,touch] [--rows 20000] [--budget 4e9] [--repeat 3]``.

Part 1, the synthetic market (1 h, 36k rows of 100 ms): lane-steps/s of the numba block backend
and of the JAX scan for each grid width, fill model and lane count (rows timed: a prefix of at
most ``--rows``, fewer for the largest lane counts so that each call stays near ``--budget``
lane-steps), best of ``--repeat`` with the backends alternated; compile time apart (the first
call, minus a timed run).  Beside them, on the 5-level cross grid: (a) a plain scalar numba loop
(:mod:`mmsweep.kernels.reference`) on one core, (b) the same loop over all cores.

Part 2, the real capture (``../shared/data/hftbacktest/usdm/btcusdt_20240808.npz``, 5-level
grid, 10 ms latency): (c) hftbacktest 2.4.4 per candidate, (d) the exact engine per candidate
with 8 candidates in lock-step (power-2 queue, 10 ms each way), the fast sweep (numba) per
lane, and the ratio *exhaustive exact replay / fast sweep* for the same lanes (the exact replay
fanned out over every core, as ``mmsweep verify --processes 0`` does).

Everything is printed as markdown tables, measured in this one process, so ratios compare
numbers taken minutes apart on the same machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))

import common  # noqa: E402

from mmsweep.kernels.backends import run_lanes  # noqa: E402
from mmsweep.kernels.reference import reference_lanes  # noqa: E402


def part1(args, frames) -> list[tuple]:
    table = []
    for levels in (int(x) for x in args.levels.split(",")):
        for fill in args.fills.split(","):
            strategy = f"grid{levels}"
            for n in (int(x) for x in args.lanes.split(",")):
                params = common.lanes(strategy, n)
                config = common.kernel_config(frames, strategy, params, fill)
                n_rows = int(max(500, min(args.rows, len(frames), args.budget // n)))
                rows_dev = common.rows_for(frames, config, n_rows)
                rows_host = {k: np.asarray(v) for k, v in rows_dev.items()}
                results = {}
                for backend in args.backends.split(","):
                    rows = rows_host if backend == "numba" else rows_dev
                    first, best = common.timed(lambda: run_lanes(params, rows, config, backend), args.repeat)
                    results[backend] = (n * n_rows / best, max(first - best, 0.0))
                    print(f"  {strategy} {fill} {n:>7,} lanes x {n_rows:,} rows  {backend:5s} "
                          f"{results[backend][0] / 1e6:8.1f} M lane-steps/s (compile {results[backend][1]:.1f} s)",
                          flush=True)
                table.append((strategy, fill, n, n_rows, results))
    return table


def baselines(args, frames) -> dict[str, float]:
    """(a) and (b): the same lane step one lane at a time, its state in locals (the numba
    backend's scalar kernel, no SIMD), on one core and on all; and the independent scalar
    reference loop (per-order arrays, all-pairs matching), on one core."""
    from mmsweep.kernels.numba_backend import run_lanes_numba

    params = common.lanes("grid5", 1024)
    config = common.kernel_config(frames, "grid5", params)
    n_rows = min(args.rows, len(frames))
    rows = common.rows_for(frames, config, n_rows, host=True)
    out = {}
    for name, threads in (("lane step, 1 lane at a time, 1 core", 1), ("lane step, 1 lane at a time, all cores", None)):
        _first, best = common.timed(lambda: run_lanes_numba(params, rows, config, block=0, threads=threads), 1)
        out[name] = 1024 * n_rows / best
    few = {k: v[:16] for k, v in params.items()}
    reference_lanes("grid", None, config.market, {k: v[:2] for k, v in few.items()}, rows, ring=config.ring,
                    parallel=False)  # compile
    t = time.perf_counter()
    reference_lanes("grid", None, config.market, few, rows, ring=config.ring, parallel=False)
    out["scalar reference loop (per-order arrays), 1 core"] = 16 * n_rows / (time.perf_counter() - t)
    return out


def part2(args) -> list[tuple]:
    import hbt_oracle as H

    from mmsweep.kernels.policies.base import Market
    from mmsweep.replay import ReplayConfig, build_data, replay_policy
    from mmsweep.sweep.data.hftnpz import read_hftbacktest_npz
    from mmsweep.sweep.frames import FrameSpec, LatencySpec, build_frames

    tick, lot = 0.1, 0.001
    raw = H.load_npz(args.real)
    events = read_hftbacktest_npz(args.real, tick_size=tick, lot_size=lot)
    frames = build_frames(events, FrameSpec(latency=LatencySpec(entry_ns=10_000_000)))
    n = args.exhaustive
    params = common.lanes("grid5", n, seed=1)
    params["half_spread"] = np.random.default_rng(1).uniform(2, 30, n).round()
    params["max_position"] = np.full(n, 0.05)
    config = common.kernel_config(frames, "grid5", params)
    rows = common.rows_for(frames, config, len(frames), host=True)
    _first, fast = common.timed(lambda: run_lanes(params, rows, config, "numba"), args.repeat)

    decisions = frames["local_ts"]
    one = {k: float(v[0]) for k, v in params.items() if k != "relative"}
    hbt = min(H.run_hbt_grid(raw, decision_ts=decisions, tick_size=tick, lot_size=lot, queue="power", **one)[
        "elapsed_s"] for _ in range(args.repeat))
    data = build_data(events.table, tick, lot)
    market = Market(tick, lot, config.market.base_tick, (), 0.1, 5)

    def exact(k: int, processes: int):
        cfg = ReplayConfig(queue="power", lockstep=8, processes=processes)
        sub = {key: v[:k] for key, v in params.items()}
        return replay_policy(events.table, tick_size=tick, lot_size=lot, decision_ts=decisions,
                             end_ts=int(decisions[-1]), features=np.zeros((len(decisions), 0)), market=market,
                             policy="grid", static=None, params=sub, config=cfg, data=data)

    exact(8, 1)  # compile
    lockstep = min(exact(8, 1).stats["seconds"] for _ in range(args.repeat)) / 8
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    t = time.perf_counter()
    exact(n, cores)
    exhaustive = time.perf_counter() - t
    steps = len(frames)
    return [("hftbacktest 2.4.4, 1 candidate per pass", hbt, steps / hbt),
            ("exact engine, 8 candidates in lock-step, per candidate", lockstep, steps / lockstep),
            (f"fast sweep (numba), {n:,} lanes, per lane", fast / n, n * steps / fast),
            ], exhaustive, fast, n, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--lanes", default="1024,16384,65536,262144")
    ap.add_argument("--levels", default="1,5,20")
    ap.add_argument("--fills", default="cross,touch")
    ap.add_argument("--backends", default="numba,jax")
    ap.add_argument("--rows", type=int, default=20_000, help="rows timed per call (a prefix)")
    ap.add_argument("--budget", type=float, default=4e9, help="lane-steps per call at most (fewer rows for many lanes)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--exhaustive", type=int, default=2048, help="lanes replayed exhaustively on the real sample")
    ap.add_argument("--real", default=str(ROOT.parent.parent / "shared" / "data" / "hftbacktest" / "usdm" /
                                          "btcusdt_20240808.npz"))
    args = ap.parse_args()

    frames, build_s = common.synthetic_frames(args.hours)
    print(f"synthetic market: {len(frames):,} rows in {build_s:.1f} s; {common.machine()}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; jax device {jax.devices()[0]}", flush=True)
    table = part1(args, frames)
    base = baselines(args, frames)
    real, exhaustive, fast, n_exh, steps = part2(args)

    print(f"\n## Kernel throughput (synthetic, 100 ms rows; {common.machine()})\n")
    backends = args.backends.split(",")
    print("| grid | fill | lanes | rows timed | " + " | ".join(f"{b} lane-steps/s" for b in backends)
          + " | " + " | ".join(f"{b} compile s" for b in backends) + " |")
    print("|---|---|---:|---:|" + "---:|" * (2 * len(backends)))
    for strategy, fill, n, n_rows, results in table:
        print(f"| {strategy[4:]} levels | {fill} | {n:,} | {n_rows:,} | "
              + " | ".join(f"{results[b][0] / 1e6:.1f} M" for b in backends) + " | "
              + " | ".join(f"{results[b][1]:.1f}" for b in backends) + " |")
    best5 = max((r[b][0] for s, f, n, _r, r in table for b in backends if s == "grid5" and f == "cross"
                 and n >= 16384 and b == "numba"), default=float("nan"))
    print("\n| baseline (5-level grid, cross) | lane-steps/s | numba backend (>= 16k lanes) / baseline |")
    print("|---|---:|---:|")
    for name, rate in base.items():
        print(f"| {name} | {rate / 1e6:.1f} M | {best5 / rate:.1f}x |")
    print(f"\n## Real capture ({steps:,} decisions of 100 ms, 5-level grid)\n")
    print("| engine | seconds per candidate | decisions (lane-steps) per second |")
    print("|---|---:|---:|")
    for name, sec, rate in real:
        print(f"| {name} | {sec:.5f} | {rate / 1e6:.3f} M |")
    print(f"\nExhaustive exact replay of all {n_exh:,} lanes: {exhaustive:.1f} s; the fast sweep of the same lanes: "
          f"{fast:.3f} s; exhaustive exact / fast = {exhaustive / fast:.0f}x")


if __name__ == "__main__":
    main()
