"""How well each fast fill model ranks a sweep, against an exhaustive exact replay, in one run.

Run: ``python bench/agreement.py [CASE_OR_YAML ...] [--fill-models cross,touch,queue] [--out DIR]
[--processes 2] [--repeat 5] [--max-exact-minutes 60]``; ``python bench/agreement.py --print
DIR/agreement.json`` prints the tables of an earlier run again.

For each case (an experiment YAML, or one of the built-in cases below) and each fill model:

1. the sweep: ``mmsweep run`` of the experiment under ``cross``, then ``mmsweep verify
   --exhaustive --fill-models ...``: every lane replayed on the exact engine (the experiment's
   ``verify`` queue model, power n = 2 by default, the same replay for every fill model), every
   other fill model swept on the fast kernel; the fast ``queue`` model runs the same queue model
   and exponent (``verify.queue``, ``verify.queue_n``) on frames with ``queue_levels`` ticks a
   side, which the bench checks (and records) before it times anything;
2. the table: whole-sweep Spearman of the objective and of PnL, top-10 and top-20 overlap,
   median PnL gap ``(exact - fast) / |fast|`` and median ``exact - fast`` (in the instrument's
   PnL currency) with the shares of lanes where the exact PnL is above / below the fast one (these
   over the lanes that meet the constraints on both sides), the exact rank of the fast #1 and
   the regret (the best exact objective minus the fast #1's, beside the best);
3. the cost: each fill model's fast sweep timed in this process (the sweep's lanes repeated to
   ``--timing-lanes`` lanes), after a warm-up call, best of ``--repeat`` with the models
   alternated; lane-steps/s and the time against ``cross`` (which is always timed).

Built-in cases (no file needed):

* ``real_grid5``: a 5-level skewed grid (bps of mid) on the real Binance USD-M BTCUSDT capture
  (``../shared/data/binance/usdm/btcusdt_20240808.gz``, 345 s, 100 ms decisions, 10 ms each
  way), 8 x 8 x 8 = 512 lanes;
* ``real_apt``: ``experiments/real_btcusdt_apt.yaml`` (fair value with a spot signal, the
  order-latency file), 5,120 lanes, ranked on its train part;
* ``real_coinm_grid5``: the same 5-level grid on the real Binance COIN-M ETHUSD_PERP capture and
  its continuation file as one instrument (``../shared/data/binance/cm/``, as
  ``experiments/real_ethusd_perp_inverse.yaml`` reads them): an inverse contract of 10 USD,
  orders of 5 contracts, at most 100, PnL and fees in ETH, 8 x 8 x 8 = 512 lanes;
* ``large_tick``: a synthetic large-tick market, generated into ``--out``: one instrument,
  tick 5 bp of the price (so the spread is one tick nearly always), 40 lots resting at the
  touch against trades of 0.05 lots and up (deep queues), one hour; a 5-level grid in ticks,
  8 x 8 x 4 = 256 lanes.

Fill models the kernel does not know stop the run at once with a one-line error naming them.
Prints markdown tables and writes ``<out>/agreement.json`` (after every case).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
sys.path.insert(0, str(ROOT))

import common  # noqa: E402

from mmsweep.sweep.config import load_experiment, parse_experiment  # noqa: E402
from mmsweep.sweep.errors import InputError  # noqa: E402

CASES = ("real_grid5", "real_apt", "real_coinm_grid5", "large_tick")


def shared_data() -> Path:
    path = Path(os.environ.get("MMSWEEP_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        raise SystemExit(f"error: real sample data not found at {path}; set MMSWEEP_SHARED_DATA")
    return path


def large_tick_market(out: Path, hours: float = 1.0, seed: int = 0) -> Path:
    """The synthetic large-tick market as ``<out>/large_tick/market.npz`` (generated once)."""
    from mmsweep.sweep.data.synthetic import SynthConfig, SynthInstrument, write_synthetic

    folder = out / "large_tick"
    path = folder / "market.npz"
    if path.exists():
        return path
    inst = SynthInstrument(
        name="market", symbol="LTKUSDT", venue="synthetic-large-tick", tick_size=1.0, lot_size=0.01,
        lagged=False, depth_levels=10, touch_qty=40.0, depth_growth=0.5, depth_qty_sigma=0.5,
        trades_per_s=20.0, trade_size_min=0.05, trade_size_alpha=1.5, informed_share=0.5,
        informed_horizon_ms=1000.0, requote_per_s=5.0, requote_threshold_bp=2.5, refill_ms=50.0,
        touch_noise_per_s=20.0, depth_noise_per_s=40.0, depth_noise_rows_per_msg=2.0)
    config = SynthConfig(seed=seed, hours=hours, instruments=(inst,), base_price=2000.0, lead_lag_ms=0.0,
                         volatility_annual=0.6)
    write_synthetic(config, folder)
    return path


def case_experiment(case: str, out: Path):
    """The experiment of a built-in case or a YAML file."""
    if case not in CASES:
        return load_experiment(case)
    if case == "real_apt":
        os.environ.setdefault("MMSWEEP_SHARED_DATA", str(shared_data()))
        return load_experiment(REPO / "experiments" / "real_btcusdt_apt.yaml")
    spec = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    spec["name"] = f"agreement_{case}"
    spec["verify"] = {"top_k": 20, "sample": 50, "seed": 0, "queue": "power", "queue_n": 2}
    spec["run"] = {"chunk_lanes": 8192, "dtype": "float32"}
    spec["split"] = {"train_fraction": 1.0}
    if case == "real_grid5":
        usdm = shared_data() / "binance" / "usdm" / "btcusdt_20240808.gz"
        spec["description"] = "5-level skewed grid on the real Binance USD-M BTCUSDT capture"
        spec["data"] = {"source": "files", "files": {"futures": {"path": str(usdm), "format": "binance",
                                                                "tick_size": 0.1, "lot_size": 0.001}},
                        "quoted": "futures"}
        spec["sweep"] = {"half_spread": {"linspace": [0.1, 4.0, 8]}, "skew": {"logspace": [-2, 0, 8]},
                         "grid_interval": {"linspace": [0.25, 3.0, 8]}}
        spec["constraints"] = {"min_trades": 10}
        return parse_experiment(spec, "real_grid5")
    if case == "real_coinm_grid5":
        # the COIN-M experiment's data, fees, latency and contract sizes; the grid of real_grid5
        spec = yaml.safe_load((REPO / "experiments" / "real_ethusd_perp_inverse.yaml").read_text())
        spec["name"] = f"agreement_{case}"
        spec["description"] = ("5-level skewed grid on the real Binance COIN-M ETHUSD_PERP capture and its "
                               "continuation (inverse, 10 USD contracts, PnL in ETH)")
        cm = shared_data() / "binance" / "cm" / "ethusd_perp_2024080*.gz"
        spec["data"]["files"]["ethusd_perp"]["path"] = str(cm)
        spec["strategy"]["params"].update({"n_levels": 5})
        spec["sweep"] = {"half_spread": {"linspace": [0.1, 4.0, 8]}, "skew": {"logspace": [-2, 0, 8]},
                         "grid_interval": {"linspace": [0.25, 3.0, 8]}}
        spec["strategy"]["params"].pop("grid_interval", None)
        spec["objective"] = {"metric": "SR", "maximize": True}
        spec["constraints"] = {"min_trades": 10}
        spec["split"] = {"train_fraction": 1.0}
        spec["verify"] = {"top_k": 20, "sample": 50, "seed": 0, "queue": "power", "queue_n": 2}
        return parse_experiment(spec, "real_coinm_grid5")
    path = large_tick_market(out)
    spec["description"] = "5-level skewed grid in ticks on a synthetic large-tick market (one-tick spread)"
    spec["data"] = {"source": "files", "files": {"market": {"path": str(path)}}, "quoted": "market"}
    spec["strategy"] = {"policy": "grid", "params": {"order_qty": 0.5, "n_levels": 5, "max_position": 5.0,
                                                     "relative": 0}}
    spec["sweep"] = {"half_spread": {"linspace": [0.5, 4.0, 8]}, "skew": {"logspace": [-1, 0.5, 8]},
                     "grid_interval": {"list": [1, 2, 3, 4]}}
    spec["constraints"] = {"min_trades": 10}
    return parse_experiment(spec, "large_tick")


def time_sweeps(exp, models: list[str], repeat: int, lanes: int, engine: dict | None = None) -> dict[str, dict]:
    """Each model's fast sweep: the sweep's lanes repeated to at least ``lanes`` lanes (a sweep of
    a few hundred lanes takes milliseconds, too short to time on a shared machine), best of
    ``repeat`` (models alternated, after a warm-up call each), lane-steps/s."""
    from mmsweep.sweep.run import prepare, run_chunk

    preps = {m: prepare(dataclasses.replace(exp, fill_model=m), log=lambda s: None) for m in models}
    setup = {m: queue_setup(p) for m, p in preps.items()}
    if "queue" in setup and engine is not None:  # before anything is timed
        check_queue(exp, engine, setup["queue"])
    swept = len(next(iter(preps[models[0]].lanes.values())))
    n = max(swept, int(lanes))
    for m, prep in preps.items():
        preps[m] = dataclasses.replace(prep, lanes={k: np.resize(np.asarray(v), n) for k, v in prep.lanes.items()})
    chunk = int(exp.run.chunk_lanes)

    def sweep(prep) -> None:
        for lo in range(0, n, chunk):
            run_chunk(prep, lo, min(n, lo + chunk))

    for m in models:
        sweep(preps[m])  # compile
    best = {m: float("inf") for m in models}
    for _ in range(repeat):
        for m in models:
            t = time.perf_counter()
            sweep(preps[m])
            best[m] = min(best[m], time.perf_counter() - t)
    steps = n * sum(len(p["index"]) for p in preps[models[0]].parts.values())
    return {m: {"seconds": best[m], "lanes": n, "lane_steps": steps, "lane_steps_per_s": steps / best[m],
                "backend": preps[m].backend, "vs_cross": best[m] / best["cross"], **setup[m]} for m in models}


def queue_setup(prep) -> dict:
    """What a prepared sweep's kernel knows of queues: its queue model and exponent, the frames'
    queue levels, and how many per-tick queue columns the frames carry."""
    cfg = prep.config
    levels = int(getattr(cfg, "queue_levels", 0))
    names = [f"queue_{s}_{q}_{k}_{w}" for s in ("bid", "ask") for q in ("trades", "depth_start", "depth_end")
             for k in range(levels) for w in ("a", "b")]
    present = 0
    for name in names:
        try:
            prep.frames[name]
            present += 1
        except KeyError:
            pass
    return {"queue_model": str(cfg.queue_model), "queue_n": float(cfg.queue_n), "queue_levels": levels,
            "queue_columns": present, "queue_columns_expected": len(names)}


def check_queue(exp, engine: dict, setup: dict) -> None:
    """The fast ``queue`` model must run the exact engine's queue model on frames with queue columns."""
    problems = []
    if setup["queue_model"] != engine["queue"] or setup["queue_model"] != exp.verify.queue:
        problems.append(f"queue model {setup['queue_model']!r} vs the exact engine's {engine['queue']!r}")
    if abs(setup["queue_n"] - float(engine["queue_n"])) > 1e-12:
        problems.append(f"exponent {setup['queue_n']:g} vs the exact engine's {float(engine['queue_n']):g}")
    if setup["queue_levels"] < 1 or setup["queue_levels"] != exp.queue_levels:
        problems.append(f"frames built with {setup['queue_levels']} queue levels (experiment: {exp.queue_levels})")
    if setup["queue_columns"] != setup["queue_columns_expected"]:
        problems.append(f"frames carry {setup['queue_columns']} of {setup['queue_columns_expected']} queue columns")
    if problems:
        raise SystemExit(f"error: {exp.name}: the fast queue model does not match the exact engine: "
                         + "; ".join(problems))


def run_case(case: str, models: list[str], args) -> dict:
    from mmsweep.sweep.run import run_experiment
    from mmsweep.sweep.verify import verify_run

    out = Path(args.out)
    exp = case_experiment(case, out)
    exp = dataclasses.replace(exp, fill_model="cross")
    log = (lambda m: print(m, file=sys.stderr)) if args.verbose else (lambda m: None)
    print(f"[{case}] {exp.name}: sweep ...", file=sys.stderr)
    run_root = out / "runs"
    run_dir = run_root / exp.name
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    t = time.perf_counter()
    run_dir = run_experiment(exp, out_root=run_root, log=log)
    run_s = time.perf_counter() - t
    print(f"[{case}] exhaustive verify of {', '.join(models)} ...", file=sys.stderr)
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    summary = verify_run(run_dir, exhaustive=True, fill_models=models, processes=args.processes,
                         max_exact_minutes=args.max_exact_minutes, log=log, report=lambda m: None)
    verify_s = time.perf_counter() - t
    print(f"[{case}] timing the fast sweeps ...", file=sys.stderr)
    timed = time_sweeps(exp, ["cross"] + [m for m in models if m != "cross"], args.repeat, args.timing_lanes,
                        engine=summary["engine"]["config"])
    rows = []
    for model in models:
        d = summary["fill_models"][model]
        ex = d["exhaustive"]
        rows.append({
            "fill_model": model, "lanes": ex["lanes"],
            "spearman_objective": ex["spearman"]["objective"]["rho"], "spearman_pnl": ex["spearman"]["PnL"]["rho"],
            "top10": f"{ex['top_overlap']['10']['common']}/{ex['top_overlap']['10']['k']}",
            "top20": f"{ex['top_overlap']['20']['common']}/{ex['top_overlap']['20']['k']}",
            "median_pnl_gap": ex["pnl_gap"]["median"], "median_pnl_diff": ex["pnl_gap"]["median_gap"],
            "gap_lanes": ex["pnl_gap"]["lanes"], "exact_above": ex["pnl_gap"]["exact_above"],
            "exact_below": ex["pnl_gap"].get("exact_below"),
            "fast_best_exact_rank": ex["fast_best"]["exact_rank"], "exact_ranked": ex["fast_best"]["exact_ranked"],
            "regret": ex["fast_best"]["regret"], "best_exact_objective": ex["fast_best"]["best_exact_objective"],
            "frontier_overlap": f"{d['top_k_overlap']['common']}/{d['top_k_overlap']['k']}",
            "checks": ex.get("checks"), **{f"sweep_{k}": v for k, v in timed[model].items()},
        })
    return {"case": case, "experiment": exp.name, "description": exp.description, "objective": exp.objective.metric,
            "part": summary["part"], "pnl_unit": summary.get("units", {}).get("PnL"),
            "exact_engine": summary["engine"]["config"], "events": summary["engine"]["stats"]["events"],
            "run_s": run_s, "verify_s": verify_s, "exact_s": summary["timing"]["exact_s"],
            "load_average": [load_before, os.getloadavg()[0]], "rows": rows}


def _f(x, digits=3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def print_tables(results: list[dict], machine: str) -> None:
    print(f"\nMeasured on: {machine}\n")
    print("| data | fill model | lanes | Spearman objective | Spearman PnL | top-10 | top-20 | median PnL gap "
          "(exact - fast) / \\|fast\\| | median PnL exact - fast (PnL currency) | exact PnL above / below fast | exact rank of the fast #1 | "
          "regret (of the best) | fast sweep | lane-steps/s | time vs cross |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for row in r["rows"]:
            rank = (f"{row['fast_best_exact_rank']} of {row['exact_ranked']:,}" if row["fast_best_exact_rank"]
                    else "infeasible")
            gap = "n/a" if row["median_pnl_gap"] is None else f"{100 * row['median_pnl_gap']:+.0f} %"
            print(f"| {r['case']} ({r['objective']}) | {row['fill_model']} | {row['lanes']:,} | "
                  f"{_f(row['spearman_objective'])} | {_f(row['spearman_pnl'])} | {row['top10']} | {row['top20']} | "
                  f"{gap} | {row['median_pnl_diff']:+.3g} {r['pnl_unit']} | "
                  f"{_f(100 * row['exact_above'], 0)} / {_f(100 * (row.get('exact_below') or np.nan), 0)} % of "
                  f"{row['gap_lanes']:,} | {rank} | "
                  f"{_f(row['regret'], 1)} ({_f(row['best_exact_objective'], 0)}) | "
                  f"{row['sweep_lanes']:,} lanes {row['sweep_seconds']:.2f} s | "
                  f"{row['sweep_lane_steps_per_s'] / 1e6:.1f} M | {row['sweep_vs_cross']:.2f}x |")
    print()
    for r in results:
        cfg = r["exact_engine"]
        print(f"{r['case']}: {r['description']}; objective {r['objective']} on the {r['part']} part; exact engine "
              f"queue {cfg['queue']} (n={cfg['queue_n']:g}), {r['events']:,} events; run {r['run_s']:.0f} s, "
              f"exhaustive verify {r['verify_s']:.0f} s (exact replay {r['exact_s']:.0f} s); load average "
              f"{r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f}")
        for row in r["rows"]:
            if row.get("sweep_queue_levels"):
                print(f"  {row['fill_model']}: fast queue model {row['sweep_queue_model']} "
                      f"(n={row['sweep_queue_n']:g}), {row['sweep_queue_levels']} ticks a side, "
                      f"{row['sweep_queue_columns']} queue columns in the frames")
            c = row.get("checks") or {}
            if c:
                print(f"  {row['fill_model']}: frontier overlap {row['frontier_overlap']}; sample's Spearman interval "
                      f"[{_f(c['spearman_interval'][0])}, {_f(c['spearman_interval'][1])}] vs "
                      f"{_f(c['spearman_outside_frontier'])} outside the frontier; lanes beating the fast #1: "
                      f"{c['sweep_beating']} (estimate {_f(c['sweep_beating_estimate'], 0)}, "
                      f"[{_f(c['sweep_beating_interval'][0], 0)}, {_f(c['sweep_beating_interval'][1], 0)}])")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", default=["real_grid5", "large_tick"],
                    help=f"experiment YAML files or built-in cases ({', '.join(CASES)})")
    ap.add_argument("--fill-models", default="cross,touch",
                    help="fill models to compare; cross is always one (the sweep that verify checks, and the cost "
                         "baseline)")
    ap.add_argument("--out", default="/tmp/mmsweep-agreement", help="run folders, generated data, agreement.json")
    ap.add_argument("--processes", type=int, default=0, help="exact-engine processes (0: one per CPU)")
    ap.add_argument("--repeat", type=int, default=5, help="timed fast sweeps per fill model (best kept)")
    ap.add_argument("--timing-lanes", type=int, default=16384, help="lanes of each timed fast sweep (the sweep's "
                    "lanes repeated)")
    ap.add_argument("--max-exact-minutes", type=float, default=60.0, help="refuse longer exhaustive replays")
    ap.add_argument("--verbose", action="store_true", help="progress of every step")
    ap.add_argument("--print", dest="print_json", metavar="JSON", help="print the tables of an agreement.json "
                    "written earlier, and stop")
    args = ap.parse_args(argv)
    if args.print_json:
        data = json.loads(Path(args.print_json).read_text())
        print_tables(data["cases"], data["machine"])
        return 0
    from mmsweep.sweep.verify import parse_fill_models

    try:  # unknown fill models (queue, until the kernel has it) stop here, before any work
        models = list(parse_fill_models(args.fill_models, "cross"))
    except InputError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    for case in args.cases:
        if case not in CASES and not Path(case).is_file():
            print(f"error: {case!r} is neither a built-in case ({', '.join(CASES)}) nor an experiment file",
                  file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = common.machine()
    results = []
    try:
        for case in args.cases:
            results.append(run_case(case, models, args))
            # written after every case, so that a later case's failure keeps the earlier ones
            (out / "agreement.json").write_text(json.dumps({"machine": machine, "fill_models": models,
                                                            "cases": results}, indent=2, default=str))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_tables(results, machine)
    print(f"\n{out / 'agreement.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
