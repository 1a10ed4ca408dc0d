"""``mmsweep verify``: replay a run's best lanes and a random sample on the exact engine, and
measure how far the fast kernel's ranking can be trusted.

Reads ``RUN_DIR/config.json`` and ``results.parquet`` (written by ``mmsweep run``), picks the
top K feasible lanes by rank plus M random other lanes, replays them on the exact event engine
(:func:`mmsweep.sweep.exact.replay_lanes`, assumptions from the experiment's ``verify`` section)
and recomputes them on the fast kernel with per-row records.  Writes, only at the end and each
atomically (a failure leaves earlier outputs as they were), with the run folder locked::

    RUN_DIR/verify.parquet          one row per verified lane: lane, parameters, selected
                                    (top/sample), rank, fast_<M> and exact_<M> for every metric,
                                    fast_/exact_rank_in_verified, exact_failure (why the exact
                                    engine could not replay the lane; null if it did)
    RUN_DIR/verify.json             agreement numbers, engine config and stats, failed lanes, timings
    RUN_DIR/plots/verify_scatter.png    fast vs exact objective and PnL
    RUN_DIR/plots/verify_curves.png     equity and inventory of the top lanes, both engines

for the train part; ``--part test`` writes the same files named ``verify_test*``
(``verify_test.parquet``, ``plots/verify_test_scatter.png`` ...), so that neither part's
outputs replace the other's.  A lane the exact engine cannot replay (it would need more order
slots than the engine allows) is reported failed, its exact metrics NaN, and the others complete.

Agreement (all within the verified lanes):

* Spearman rank correlation, fast vs exact, of the objective, of PnL and of NumberOfTrades;
  lanes where either side is NaN are dropped (and counted).
* top-k overlap: k = min(K, lanes ranked by the fast side); the share of the fast side's k best
  lanes that are also among the exact side's k best.  Each side ranks its own metrics of the
  part, with the experiment's constraints applied to them (as ``rank`` does on train); these
  ranks are the ``*_rank_in_verified`` columns (null: the side finds the lane infeasible).
* relative difference ``(exact - fast) / |fast|`` of PnL and of NumberOfTrades: mean, median
  and median of its absolute value, over lanes where both are finite and fast is not 0.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError

#: per-lane comparison columns of the printed table (besides the objective)
_TABLE_METRICS = ("PnL", "NumberOfTrades")


def _partial(path: Path) -> Path:
    from .runfolder import partial_path

    return partial_path(path)


def output_paths(run_dir: Path, part: str) -> dict[str, Path]:
    """Where verify writes for ``part``: ``verify.*`` for train, ``verify_test.*`` for test."""
    stem = "verify" if part == "train" else f"verify_{part}"
    plots = run_dir / "plots"
    return {"parquet": run_dir / f"{stem}.parquet", "json": run_dir / f"{stem}.json",
            "scatter": plots / f"{stem}_scatter.png", "curves": plots / f"{stem}_curves.png"}


def _jsonable(obj: Any) -> Any:
    """Plain JSON types; NaN and infinities become null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _count(value: Any, name: str, default: int) -> int:
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{name} must be a whole number >= 0, got {value!r}", key=name)
    return int(value)


def _feasible(metrics: dict[str, np.ndarray], exp) -> np.ndarray:
    """The experiment's constraints applied to one side's metrics (as :func:`run.rank` does)."""
    obj = np.asarray(metrics[exp.objective.metric], np.float64)
    ok = np.isfinite(obj)
    if exp.constraints.min_trades is not None:
        ok &= np.asarray(metrics["NumberOfTrades"], np.float64) >= exp.constraints.min_trades
    if exp.constraints.max_drawdown is not None:
        ok &= np.asarray(metrics["MaxDrawdown"], np.float64) <= exp.constraints.max_drawdown
    return ok


def _ranks(values: np.ndarray, ok: np.ndarray, maximize: bool) -> np.ndarray:
    """1 = best among ``ok`` lanes (ties: the earlier lane first), 0 where not ``ok``."""
    key = np.where(ok, -values if maximize else values, np.inf)
    order = np.argsort(key, kind="stable")
    ranks = np.zeros(len(values), np.int64)
    ranks[order] = np.arange(1, len(values) + 1)
    return np.where(ok, ranks, 0)


def _spearman(fast: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    from scipy.stats import spearmanr

    ok = np.isfinite(fast) & np.isfinite(exact)
    n, dropped = int(ok.sum()), int((~ok).sum())
    rho = pvalue = float("nan")
    if n >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant input: rho is NaN, said so in the table
            res = spearmanr(fast[ok], exact[ok])
        rho, pvalue = float(res.statistic), float(res.pvalue)
    return {"rho": rho, "pvalue": pvalue, "n": n, "dropped": dropped}


def _relative_difference(fast: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(fast) & np.isfinite(exact) & (fast != 0)
    rel = (exact[ok] - fast[ok]) / np.abs(fast[ok])
    n = int(ok.sum())
    stat = (lambda f, x: float(f(x)) if n else float("nan"))  # noqa: E731
    return {"mean": stat(np.mean, rel), "median": stat(np.median, rel), "median_abs": stat(np.median, np.abs(rel)),
            "n": n, "dropped": int((~ok).sum())}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    value = float(value)
    if not math.isfinite(value):
        return "NaN"
    return f"{value:.{digits}g}" if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3) else f"{value:.{digits}f}"


def _aligned(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def format_agreement(summary: dict[str, Any], per_lane: Any = None, max_lanes: int = 10) -> str:
    """The agreement table of a :func:`verify_run` summary, fixed width; with ``per_lane``
    (verify.parquet as a polars DataFrame) also the best ``max_lanes`` top lanes side by side."""
    a = summary["agreement"]
    metric = summary["objective"]["metric"]
    sel = summary["lanes"]
    cfg = summary["engine"]["config"]
    latency = (f"entry {cfg['entry_ns'] / 1e6:g} ms, response {cfg['response_ns'] / 1e6:g} ms"
               if cfg.get("latency") == "constant" else "from the latency file")
    lines = [f"fast kernel vs exact engine, {summary['part']} part: {sel['verified']} lanes "
             f"({sel['top']} top + {sel['sample']} random, seed {sel['seed']}) of {sel['total']:,}",
             f"exact engine: queue {cfg['queue']}"
             + (f" (n={cfg['queue_n']:g})" if cfg['queue'].startswith("power") else "")
             + f", {'partial' if cfg['partial_fills'] else 'whole'} fills, latency {latency}, "
             f"crosses per {'message' if cfg['cross_per_message'] else 'row'}", ""]
    rows = [["measure", "value", "lanes", "NaN dropped"]]
    sp = a["spearman"]
    rows.append([f"Spearman {metric} (objective)", _fmt(sp["objective"]["rho"]), _fmt(sp["objective"]["n"]),
                 _fmt(sp["objective"]["dropped"])])
    for m in _TABLE_METRICS:
        rows.append([f"Spearman {m}", _fmt(sp[m]["rho"]), _fmt(sp[m]["n"]), _fmt(sp[m]["dropped"])])
    ov = a["top_k_overlap"]
    rows.append([f"top-{ov['k']} overlap ({ov['common']} common)" if ov["k"] else "top-K overlap",
                 _fmt(ov["overlap"]) if ov["k"] else "n/a", _fmt(ov["k"]), "-"])
    for m in _TABLE_METRICS:
        rd = a["relative_difference"][m]
        for stat in ("mean", "median", "median_abs"):
            label = {"mean": "mean", "median": "median", "median_abs": "median |.|"}[stat]
            rows.append([f"{m} rel. diff, {label}", _fmt(rd[stat]), _fmt(rd["n"]), _fmt(rd["dropped"])])
    lines += _aligned(rows, {1, 2, 3})
    lines.append("rel. diff = (exact - fast) / |fast|, lanes with fast = 0 dropped; ranks and the overlap "
                 "apply the experiment's constraints to each side")
    failed = summary.get("failed_lanes") or []
    if failed:
        lines.append(f"WARNING: the exact engine could not replay {len(failed)} lane(s) (their exact side is NaN); "
                     f"lane {failed[0]['lane']}: {failed[0]['reason']}")
    fr = a["fast_vs_results"]
    if not fr["ok"]:
        lines.append(f"WARNING: the recomputed fast metrics differ from results.parquet on {fr['mismatched_lanes']} "
                     f"lane(s) (max rel. diff {_fmt(fr['max_rel_diff'])})")
    if per_lane is not None:
        import polars as pl

        top = per_lane.filter(pl.col("selected") == "top").sort("rank").head(max_lanes)
        if top.height:
            cols = [("lane", "lane"), ("rank", "rank"), (f"fast_{metric}", f"fast {metric}"),
                    (f"exact_{metric}", f"exact {metric}")]
            cols += [(f"{side}_{m}", f"{side} {m}") for m in _TABLE_METRICS if m != metric  # shown once
                     for side in ("fast", "exact")]
            cols += [("exact_rank_in_verified", "exact rank")]
            prow = [[label for _, label in cols]]
            for row in top.select([c for c, _ in cols]).iter_rows():
                prow.append(["-" if v is None else _fmt(v) if isinstance(v, float) and not float(v).is_integer()
                             else f"{int(v)}" if isinstance(v, float) else f"{v}" for v in row])
            lines += ["", f"top {top.height} lanes by the sweep's rank:"] + _aligned(prow, set(range(len(cols))))
    e = summary["engine"]["stats"]
    t = summary["timing"]
    lines += ["", f"exact replay {t['exact_s']:.1f} s ({e['candidates']:,} candidates x {e['events']:,} events, "
                  f"{e['passes']} pass(es)); fast kernel {t['fast_s']:.1f} s; total {t['total_s']:.1f} s"]
    return "\n".join(lines)


def _wrap(items: list[str], width: int) -> str:
    """``items`` joined by ", ", a new line before any item that would pass ``width``."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += ", " + item
        else:
            lines.append(item)
    return "\n".join(lines)


def _select(results, exp, top_k: int, sample: int, seed: int, log) -> tuple[np.ndarray, np.ndarray]:
    """Top ``top_k`` feasible lanes by rank, then ``sample`` random others (sorted)."""
    import polars as pl

    feasible = results.filter(pl.col("feasible")).sort("rank")
    if feasible.height == 0:
        raise InputError("no lane of the run meets the constraints: nothing to verify (relax 'constraints' "
                         "and rerun)", source=str(exp.source or "results.parquet"))
    top = feasible["lane"].to_numpy()[:top_k].astype(np.int64)
    if len(top) < top_k:
        log(f"verify: only {len(top)} feasible lane(s); verifying all of them as the top")
    others = np.setdiff1d(results["lane"].to_numpy().astype(np.int64), top)
    m = min(sample, len(others))
    if m < sample:
        log(f"verify: only {len(others)} lane(s) outside the top; sampling {m}")
    picked = np.sort(np.random.default_rng(seed).choice(others, size=m, replace=False)) if m else \
        np.zeros(0, np.int64)
    return top, picked.astype(np.int64)


def verify_run(run_dir: str | os.PathLike, top_k: int | None = None, sample: int | None = None,
               seed: int | None = None, part: str = "train", log: Callable[[str], None] = print,
               processes: int | None = None, *, report: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Verify a run folder's top lanes and a random sample on the exact engine.

    Args:
        run_dir: the run folder (``config.json`` and ``results.parquet``).
        top_k, sample, seed: lanes to verify; default: the experiment's ``verify`` section.
        part: ``train`` or ``test``.
        log: progress messages.
        processes: exact-engine worker processes (0: one per CPU); default: the experiment's.
        report: where the agreement table goes (default: ``log``).

    Returns:
        the summary written to ``verify.json`` (``verify_test.json`` for the test part) plus
        ``table`` (the printed text) and ``files``.
    """
    from .runfolder import FolderLock

    started = time.perf_counter()
    report = report or log
    run_dir = Path(run_dir)
    results_path, config_path = run_dir / "results.parquet", run_dir / "config.json"
    if not run_dir.is_dir():
        raise InputError("no such run folder", source=str(run_dir))
    if not results_path.exists():
        raise InputError("no results.parquet: the run has not finished (mmsweep run --resume completes it)",
                         source=str(run_dir))
    if not config_path.exists():
        raise InputError("no config.json: not a run folder of mmsweep run", source=str(run_dir))
    if part not in ("train", "test"):
        raise InputError(f"part must be 'train' or 'test', got {part!r}", key="part")
    with FolderLock(run_dir, f"mmsweep verify --part {part}"):
        return _verify_locked(run_dir, top_k, sample, seed, part, log, processes, report, started)


def _verify_locked(run_dir: Path, top_k, sample, seed, part: str, log, processes, report, started: float
                   ) -> dict[str, Any]:
    import polars as pl

    from ..kernels.scan import run_lanes
    from . import report as figures
    from .config import parse_experiment
    from .exact import part_window, replay_config, replay_lanes
    from .run import METRIC_COLUMNS, experiment_hash, prepare
    from .runfolder import check_same_inputs, fingerprint_inputs, make_folder, read_json, remove_partials

    results_path, config_path = run_dir / "results.parquet", run_dir / "config.json"
    remove_partials(run_dir)
    stored = read_json(config_path, "run's config.json")
    if not isinstance(stored.get("experiment"), dict):
        raise InputError("config.json holds no experiment; not a run folder of mmsweep run", source=str(config_path))
    exp = parse_experiment(stored["experiment"], str(config_path))
    if "inputs" in stored:  # the fast side is the run's; the exact side must replay the same data
        check_same_inputs(stored["inputs"], fingerprint_inputs(exp), config_path)
    if stored.get("hash") != experiment_hash(exp):
        warnings.warn(f"{config_path}: the experiment reads differently with this version of mmsweep (hash "
                      f"{experiment_hash(exp)} vs the run's {stored.get('hash')}); fast metrics may differ")
    v = exp.verify
    top_k = _count(top_k, "top_k", v.top_k)
    sample = _count(sample, "sample", v.sample)
    seed = _count(seed, "seed", v.seed)
    if processes is not None:
        processes = _count(processes, "processes", 0)
    if top_k + sample == 0:
        raise InputError("nothing to verify: top_k and sample are both 0", key="top_k")

    results = pl.read_parquet(results_path).sort("lane")
    n_total = results.height
    if not np.array_equal(results["lane"].to_numpy(), np.arange(n_total)):
        raise InputError("results.parquet does not hold lanes 0..n-1 exactly once", source=str(results_path))
    if f"{part}_PnL" not in results.columns:
        raise InputError(f"the run has no {part} part (see 'split')", source=str(results_path), key="part")
    top, picked = _select(results, exp, top_k, sample, seed, log)
    lanes = np.concatenate([top, picked])
    selected = np.array(["top"] * len(top) + ["sample"] * len(picked))
    log(f"verify {run_dir}: {len(top)} top + {len(picked)} random lane(s) of {n_total:,} on the {part} part")

    prep = prepare(exp, log=log)
    if part not in prep.parts:
        raise InputError(f"the run has no {part} part (see 'split')", key="part")
    n_lanes = len(next(iter(prep.lanes.values())))
    if n_lanes != n_total or any(
            not np.array_equal(np.asarray(prep.lanes[k])[lanes], results[k].to_numpy()[lanes], equal_nan=True)
            for k in prep.lanes if k in results.columns):
        raise InputError("the lanes this version of mmsweep builds differ from the run's; rerun the sweep",
                         source=str(results_path))

    # Exact engine first: it forks its workers before the kernel starts more threads.
    config = replay_config(exp, **({"processes": processes or max(1, os.cpu_count() or 1)}
                                   if processes is not None else {}))
    t0 = time.perf_counter()
    log(f"exact engine: {len(lanes)} candidate(s), queue {config.queue}, {config.processes} process(es)")
    with warnings.catch_warnings():
        # The forked workers run only the engine's numba code, never JAX.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
        record, exact = replay_lanes(prep, lanes, part=part, config=config, progress=log)
    exact_s = time.perf_counter() - t0
    failure = np.array([str(f) for f in record.final.get("Failure", [""] * len(lanes))], dtype=object)
    exact = {m: np.asarray(exact[m], np.float64) if m in exact else np.full(len(lanes), np.nan)
             for m in METRIC_COLUMNS}
    failed = [{"lane": int(lane), "reason": why} for lane, why in zip(lanes, failure) if why]
    if failed:
        warnings.warn(f"the exact engine could not replay {len(failed)} of {len(lanes)} lane(s) (lanes "
                      f"{[f['lane'] for f in failed][:5]}): {failed[0]['reason']}; they are reported failed in "
                      "exact_failure, their exact metrics NaN")

    t0 = time.perf_counter()
    kernel_dtype = np.float32 if prep.config.dtype.__name__ == "float32" else np.float64
    params = {k: np.asarray(np.asarray(v, np.float64)[lanes], kernel_dtype) for k, v in prep.lanes.items()}
    out = run_lanes(params, prep.parts[part], prep.configs[part], record=True)
    fast = {m: np.asarray(out[m], np.float64) for m in METRIC_COLUMNS}
    fast_equity, fast_position = np.asarray(out["equity"], np.float64), np.asarray(out["position"], np.float64)
    fast_s = time.perf_counter() - t0
    log(f"fast kernel: {len(lanes)} lane(s) recomputed with records [{fast_s:.1f} s]")

    # The recomputed fast metrics must be the sweep's.
    rtol = 1e-5 if kernel_dtype is np.float32 else 1e-9
    worst, bad = 0.0, np.zeros(len(lanes), bool)
    for m in METRIC_COLUMNS:
        stored_m = results[f"{part}_{m}"].to_numpy().astype(np.float64)[lanes]
        same = (stored_m == fast[m]) | (np.isnan(stored_m) & np.isnan(fast[m]))
        close = same | np.isclose(fast[m], stored_m, rtol=rtol, atol=rtol * 1e-3)
        bad |= ~close
        diff = np.abs(fast[m] - stored_m)[~same] / np.maximum(np.abs(stored_m[~same]), 1e-12)
        if diff.size:
            worst = max(worst, float(np.nanmax(diff)) if np.isfinite(diff).any() else math.inf)
    if bad.any():
        warnings.warn(f"the recomputed fast metrics differ from results.parquet on {int(bad.sum())} lane(s) "
                      f"(lanes {lanes[bad][:5].tolist()}...; max rel. diff {worst:.3g})")

    T = fast_equity.shape[1]
    decision_ts = part_window(prep, part)[0]
    if record.equity.shape[1] != T or not np.array_equal(record.timestamp, decision_ts):
        raise RuntimeError(f"the exact record has {record.equity.shape[1]} decisions; the kernel {T}")

    # Agreement.
    metric, maximize = exp.objective.metric, exp.objective.maximize
    fast_ok, exact_ok = _feasible(fast, exp), _feasible(exact, exp)
    fast_rank = _ranks(fast[metric], fast_ok, maximize)
    exact_rank = _ranks(exact[metric], exact_ok, maximize)
    k = min(top_k, int(fast_ok.sum()))
    fast_top = lanes[(fast_rank >= 1) & (fast_rank <= k)]
    exact_top = lanes[(exact_rank >= 1) & (exact_rank <= k)]
    common = len(np.intersect1d(fast_top, exact_top))
    spearman = {"objective": {"metric": metric, **_spearman(fast[metric], exact[metric])}}
    for m in _TABLE_METRICS:
        spearman[m] = _spearman(fast[m], exact[m])
    agreement = {
        "spearman": spearman,
        "top_k_overlap": {"k": k, "common": common, "overlap": common / k if k else float("nan"),
                          "fast_top": sorted(fast_top.tolist()), "exact_top": sorted(exact_top.tolist())},
        "relative_difference": {m: _relative_difference(fast[m], exact[m]) for m in _TABLE_METRICS},
        "feasible": {"fast": int(fast_ok.sum()), "exact": int(exact_ok.sum())},
        "fast_vs_results": {"ok": not bad.any(), "mismatched_lanes": int(bad.sum()), "max_rel_diff": worst,
                            "rtol": rtol},
    }

    # verify.parquet
    ranks_col = results["rank"].to_numpy()  # float with NaN where null (polars -> numpy)
    table: dict[str, Any] = {"lane": lanes, **{k_: np.asarray(prep.lanes[k_])[lanes] for k_ in prep.lanes},
                             "selected": selected}
    frame = pl.DataFrame(table).with_columns(
        pl.Series("rank", [None if not np.isfinite(r) else int(r) for r in ranks_col[lanes].astype(np.float64)],
                  dtype=pl.Int64),
        pl.Series("feasible", results["feasible"].to_numpy()[lanes]))
    frame = frame.with_columns([pl.Series(f"fast_{m}", fast[m]) for m in METRIC_COLUMNS]
                               + [pl.Series(f"exact_{m}", np.asarray(exact[m], np.float64)) for m in METRIC_COLUMNS])
    frame = frame.with_columns(
        pl.Series("fast_rank_in_verified", [int(r) if r else None for r in fast_rank], dtype=pl.Int64),
        pl.Series("exact_rank_in_verified", [int(r) if r else None for r in exact_rank], dtype=pl.Int64),
        pl.Series("exact_CancelsLost", np.asarray(record.final["CancelsLost"], np.float64)),
        pl.Series("exact_failure", [why or None for why in failure], dtype=pl.String))

    stats = {k_: v_ for k_, v_ in record.stats.items() if k_ != "config"}
    summary: dict[str, Any] = {
        "run_dir": str(run_dir.resolve()), "experiment": exp.name, "experiment_hash": stored.get("hash"),
        "part": part, "objective": {"metric": metric, "maximize": maximize},
        "lanes": {"total": n_total, "verified": int(len(lanes)), "top": int(len(top)), "sample": int(len(picked)),
                  "top_k": top_k, "requested_sample": sample, "seed": seed, "top_lanes": top.tolist(),
                  "sample_lanes": picked.tolist()},
        "agreement": agreement,
        "failed_lanes": failed,
        "engine": {"config": config.describe(), "stats": stats},
        "timing": {"exact_s": exact_s, "fast_s": fast_s, "total_s": 0.0},
    }

    # Figures, then every output moved into place at the end.
    inst = prep.quoted.instrument
    quote, qty_unit = figures.currency_units(inst.symbol)
    final = output_paths(run_dir, part)
    make_folder(final["scatter"].parent, "plots")
    temps = {key: _partial(path) for key, path in final.items()}
    try:
        is_top = selected == "top"
        sp = agreement["spearman"]
        unit = {"SR": "annualised Sharpe ratio", "Sortino": "annualised Sortino ratio", "PnL": quote,
                "Fees": quote, "Return": "fraction of book size", "MaxDrawdown": "fraction of book size",
                "NumberOfTrades": "fills"}.get(metric, "")
        figures.verify_scatter(temps["scatter"], [
            {"fast": fast[metric], "exact": exact[metric], "label": f"{metric}" + (f" ({unit})" if unit else ""),
             "title": f"objective {metric}: Spearman {_fmt(sp['objective']['rho'], 3)}"},
            {"fast": fast["PnL"], "exact": exact["PnL"], "label": f"PnL ({quote}, after fees)",
             "title": f"PnL: Spearman {_fmt(sp['PnL']['rho'], 3)}"},
        ], top=is_top, title=f"{exp.name}, {part} part: fast kernel vs exact engine (queue {config.queue}), "
                             f"{len(lanes)} lanes")
        show = np.flatnonzero(is_top)[:4] if is_top.any() else np.arange(min(4, len(lanes)))
        swept = list(exp.sweep.names) + [t.target for t in exp.sweep.derived]
        titles = []
        for i in show:
            ps = _wrap([f"{p}={float(prep.lanes[p][lanes[i]]):.4g}" for p in swept[:4]], 40)
            head = f"lane {lanes[i]}" + (f" (rank {int(ranks_col[lanes[i]])})" if np.isfinite(ranks_col[lanes[i]])
                                         else "")
            titles.append(f"{head}\n{ps}\nPnL fast {fast['PnL'][i]:.4g} / exact {exact['PnL'][i]:.4g} {quote}")
        minutes = (decision_ts - decision_ts[0]) / 6e10
        figures.verify_curves(temps["curves"], minutes, fast_equity=fast_equity[show],
                              exact_equity=np.asarray(record.equity)[show], fast_position=fast_position[show],
                              exact_position=np.asarray(record.position)[show], titles=titles, quote=quote,
                              qty_unit=qty_unit, part=part,
                              title=f"{exp.name}: {'top' if is_top.any() else 'verified'} lanes, fast kernel "
                                    f"(solid) vs exact engine (dashed, queue {config.queue})")
        frame.write_parquet(temps["parquet"])
        summary["timing"]["total_s"] = time.perf_counter() - started
        summary["files"] = {key: str(path) for key, path in final.items()}
        temps["json"].write_text(json.dumps(_jsonable(summary), indent=2))
        for key, path in final.items():
            os.replace(temps[key], path)
    finally:
        for path in temps.values():
            path.unlink(missing_ok=True)
    summary["table"] = format_agreement(summary, frame)
    report(summary["table"])
    return summary
