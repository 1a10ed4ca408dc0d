"""Gradient tuning against the grid it starts from and against brute force.

Run::

    python bench/tune.py synthetic [--hours 1] [--seed 0] [--steps 100] [--starts 8] [--brute 5,9,13,17,25]
                                   [--brute-all] [--set KEY=JSON ...] [--out DIR]
    python bench/tune.py real [--steps 100] [--starts 8] [--set KEY=JSON ...] [--out DIR]

``synthetic``: a market whose good region is known by construction (the *lead-lag market*).  Spot
leads futures by 500 ms; the futures' aggressive flow is uninformed, so the futures quoter's
adverse selection comes from the lead alone.  The strategy is the fair-value (APT) quoter with the
spot mid's return over the last 0.5 s as its signal: ``beta = 1`` prices the futures where they
will be once they catch up, so beta near 1 and above removes most adverse selection; with no
maker rebate (0 bp) the half-spread trades spread capture against fill rate, so it has an interior
optimum.  A coarse grid (3 x 3 x 3 over half-spread, beta and skew) is swept, its top lanes are
tuned (``mmsweep tune``), and brute-force grids of growing density over the same box are swept
until one reaches the tuned point's hard train objective (``--brute-all``: all of them); each
grid's best lane is replayed on the exact engine, train and test.

``real``: the APT study on the real Binance sample (``../shared/data``, 345 s), a coarse grid of
36 lanes, tuned the same way (there is no known optimum there; only train and test).

Every sweep runs afresh (its run folder under ``OUT/runs`` is replaced; the frames come from the
cache after the first), so its time is a whole sweep's.  Everything runs through the package's own code paths (``run_experiment``, ``tune_run``,
``replay_and_score``); the tables are printed as markdown with the machine's load.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]

#: the coarse grid and the brute-force box of the lead-lag market (half-spread bps, beta, skew bps)
BOX = {"relative_half_spread_bps": (0.0, 1.0), "beta": (0.0, 6.0), "relative_skew_bps": (0.0, 6.0)}


def leadlag_market(out: Path, hours: float, seed: int) -> dict[str, str]:
    """The lead-lag market's two instruments as event files (generated once)."""
    from mmsweep.sweep.data.synthetic import FUTURES, SPOT, SynthConfig, write_synthetic

    paths = {"futures": out / "futures.npz", "spot": out / "spot.npz"}
    if not all(p.is_file() for p in paths.values()):
        futures = dataclasses.replace(FUTURES, informed_share=0.0)  # adverse selection from the lead only
        write_synthetic(SynthConfig(hours=hours, seed=seed, lead_lag_ms=500.0, instruments=(futures, SPOT)), out)
    return {k: str(v) for k, v in paths.items()}


def leadlag_spec(paths: dict[str, str], sweep: dict, steps: int, starts: int) -> dict:
    return {
        "name": "leadlag",
        "description": "fair-value quoting on the lead-lag market (spot leads by 500 ms)",
        "data": {"source": "files", "quoted": "futures",
                 "files": {"futures": {"path": paths["futures"], "format": "mmsweep"},
                           "spot": {"path": paths["spot"], "format": "mmsweep"}}},
        "interval_ms": 100, "latency": {"entry_ms": 10},
        "fees": {"maker_bps": 0.0, "taker_bps": 7.0}, "fill_model": "cross",
        "features": [{"kind": "mid_return", "instrument": "spot", "lag_s": 0.5}],
        "strategy": {"policy": "fair_value", "static": {"signals": ["spot.mid_return_0.5s"]},
                     "params": {"n_levels": 1, "order_notional": 1000, "max_notional": 20000}},
        "sweep": sweep,
        "objective": {"metric": "PnL"}, "constraints": {"min_trades": 10},
        "split": {"train_fraction": 0.7}, "verify": {"top_k": 3, "sample": 0},
        "run": {"chunk_lanes": 8192},
        "tune": {"params": list(BOX), "bounds": {k: list(v) for k, v in BOX.items()},
                 "starts": {"top": starts}, "steps": steps, "exact": {"top": 3}},
    }


def grid_axes(k: int) -> dict:
    return {name: {"linspace": [lo, hi, k]} for name, (lo, hi) in BOX.items()}


def real_spec(steps: int, starts: int) -> dict:
    import yaml

    spec = yaml.safe_load((ROOT / "experiments" / "real_btcusdt_apt.yaml").read_text())
    spec["name"] = "real_apt_tune"
    spec["sweep"] = {"relative_half_spread_bps": {"list": [0.5, 2.0, 3.5, 5.0]},
                     "relative_skew_bps": {"list": [0.1, 1.0, 10.0]}, "beta": {"list": [0.0, 1.0, 2.0]}}
    spec["objective"] = {"metric": "PnL"}
    spec["verify"] = {"top_k": 3, "sample": 0}
    spec["tune"] = {"params": ["relative_half_spread_bps", "relative_skew_bps", "beta"],
                    "bounds": {"relative_half_spread_bps": [0, 8], "relative_skew_bps": [0, 20], "beta": [-2, 6]},
                    "starts": {"top": starts}, "steps": steps, "exact": {"top": 3}}
    return spec


def run(spec: dict, out: Path, log):
    """Sweep ``spec`` afresh (a run folder of the same name under ``out`` is replaced, so that the
    time is a whole sweep's, frames from the cache); returns the folder, the wall time and the
    experiment."""
    from mmsweep.sweep.config import parse_experiment
    from mmsweep.sweep.run import run_experiment

    exp = parse_experiment(spec, spec["name"], base_dir=ROOT / "experiments")
    if (out / spec["name"]).is_dir():
        shutil.rmtree(out / spec["name"])
    t = time.perf_counter()
    run_dir = run_experiment(exp, out_root=out, resume=False, log=log)
    return run_dir, time.perf_counter() - t, exp


def exact_of_lane(run_dir: Path, lane: int, metric: str) -> dict[str, float]:
    """The exact engine's objective of one lane of a run, train and test (verify's code path)."""
    from mmsweep.sweep.export import read_run
    from mmsweep.sweep.run import prepare
    from mmsweep.sweep.verify import replay_and_score

    run = read_run(run_dir)
    prep = prepare(run.experiment, log=lambda m: None)
    out = {}
    for part in ("train", "test"):
        scored = replay_and_score(prep, np.array([lane]), part=part)
        out[part] = float(scored.metrics[metric][0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=("synthetic", "real"))
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--brute", default="5,9,13,17,25", help="points per axis of the brute-force grids, in order")
    ap.add_argument("--brute-all", action="store_true",
                    help="sweep every brute-force grid, not only until one reaches the tuned objective")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmsweep-bench-tune"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override a key of the tune section, e.g. rounding=\"straight_through\"")
    args = ap.parse_args()
    os.environ.setdefault("MMSWEEP_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    from mmsweep.sweep.tune import tune_run

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    load = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.which == "synthetic":
        paths = leadlag_market(args.out / f"market_{args.hours:g}h_seed{args.seed}", args.hours, args.seed)
        spec = leadlag_spec(paths, grid_axes(3), args.steps, args.starts)
        spec["name"] += f"-{args.hours:g}h-seed{args.seed}"
    else:
        spec = real_spec(args.steps, args.starts)
    for item in args.set:
        key, _, value = item.partition("=")
        spec["tune"][key] = json.loads(value)
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "", "-".join(item.replace("=", "_").replace(":", "_").replace(",", "_")
                                                 for item in args.set))
    spec["name"] += f"-{tag}" if tag else ""
    run_dir, sweep_s, exp = run(spec, args.out / "runs", log)
    results = pl.read_parquet(run_dir / "results.parquet")
    best = results.filter(pl.col("rank") == 1).row(0, named=True)
    summary = tune_run(run_dir, log=log)
    tuned = pl.read_parquet(run_dir / "tune.parquet")
    top = tuned.row(0, named=True)
    metric = exp.tune.metric
    grid_exact = exact_of_lane(run_dir, int(best["lane"]), metric)
    timing = summary["timings"]
    lanes = results.height

    print(f"\n### {spec['name']} ({os.cpu_count()} CPU cores, load average {load:.1f} at start, "
          f"{timing['train_rows']:,} train rows)\n")
    print(f"tuned: {', '.join(exp.tune.params)}; {timing['starts']} starts x {exp.tune.steps} steps, "
          f"{summary['tune']['rounding']} rounding, {summary['gradient_mode']} mode, {summary['tune']['dtype']}\n")
    print("| point | " + " | ".join(exp.tune.params) + f" | hard train {metric} | hard test | exact train | exact test |")
    print("|---|" + "---:|" * (len(exp.tune.params) + 4))
    print(f"| best of the {lanes}-lane grid (lane {best['lane']}) | "
          + " | ".join(f"{best[p]:.4g}" for p in exp.tune.params)
          + f" | {best[f'train_{metric}']:.2f} | {best[f'test_{metric}']:.2f} | {grid_exact['train']:.2f} | "
          f"{grid_exact['test']:.2f} |")
    for row in tuned.head(3).iter_rows(named=True):
        print(f"| tuned #{row['tuned']} (from {row['start_label']}) | "
              + " | ".join(f"{row[p]:.4g}" for p in exp.tune.params)
              + f" | {row['hard_tuned_train']:.2f} | {row['hard_tuned_test']:.2f} | {row['exact_tuned_train']:.2f} | "
              f"{row['exact_tuned_test']:.2f} |")
    print(f"\ncost: sweep of the grid {sweep_s:.1f} s; tuning {timing['total_s']:.1f} s in all (compilation "
          f"{timing['compile_s']:.1f} s, {timing['steps_per_s']:.2f} steps/s = "
          f"{timing['smooth_lane_steps_per_s'] / 1e6:.3f} M smooth lane-steps/s, hard re-scoring "
          f"{timing['hard_s']:.1f} s, smooth re-scoring {timing['smooth_scores_s']:.1f} s, exact engine "
          f"{timing['exact_s']:.1f} s)")

    if args.which == "synthetic":
        target = top["hard_tuned_train"]
        print(f"\nbrute force over the same box ({', '.join(f'{k} {v[0]:g}..{v[1]:g}' for k, v in BOX.items())}), "
              f"until a lane reaches the tuned hard train {metric} {target:.2f}:\n")
        print(f"| grid | lanes | sweep time | best hard train {metric} | its " + " | its ".join(BOX)
              + " | its hard test | its exact train | its exact test |")
        print("|---|---:|---:|---:|" + "---:|" * (len(BOX) + 3))
        for k in [int(x) for x in args.brute.split(",") if x]:
            brute = leadlag_spec(paths, grid_axes(k), args.steps, args.starts)
            brute["name"] = f"leadlag-{args.hours:g}h-seed{args.seed}-brute{k}"
            brute_dir, seconds, _exp = run(brute, args.out / "runs", log)
            table = pl.read_parquet(brute_dir / "results.parquet")
            b = table.filter(pl.col("rank") == 1).row(0, named=True)
            b_exact = exact_of_lane(brute_dir, int(b["lane"]), metric)
            print(f"| {k}^3 | {table.height:,} | {seconds:.1f} s | {b[f'train_{metric}']:.2f} | "
                  + " | ".join(f"{b[p]:.4g}" for p in BOX)
                  + f" | {b[f'test_{metric}']:.2f} | {b_exact['train']:.2f} | {b_exact['test']:.2f} |", flush=True)
            if b[f"train_{metric}"] >= target and not args.brute_all:
                break


if __name__ == "__main__":
    main()
