"""``mmsweep verify``: replay a run's fast frontier and a random sample on the exact engine, and
measure how far the fast kernel's ranking can be trusted.

Reads ``RUN_DIR/config.json`` and ``results.parquet`` (written by ``mmsweep run``).  Picks the
*frontier*, the top ``K x m`` feasible lanes by the sweep's rank (``K`` = ``top_k``, ``m`` =
``frontier``, default 4), plus ``M`` random lanes from outside it; replays them on the exact
event engine (:func:`replay_and_score`, assumptions from the experiment's ``verify`` section)
and recomputes them on the fast kernel with per-row records.  Replaying ``m`` times more lanes
than the ``K`` that matter is what lets the exact engine's own top K be found: a lane the fast
kernel ranks 43rd can be the exact engine's 5th, and ranking only the fast top K would never
see it.

``fill_models`` (``--fill-models cross,touch``) also sweeps every lane under the other fill
models on the fast kernel; the frontier is then the union of every model's top ``K x m``, and
each model is compared with the same exact replay (the exact engine does not depend on the
fast side's fill model).  ``exhaustive`` (``--exhaustive``) replays every lane of the sweep,
in parallel processes, so that the frontier's and the sample's estimates can be checked; it is
refused, naming the estimated time, when a timed probe replay puts it above
``max_exact_minutes``.

Writes, only at the end and each atomically (a failure leaves earlier outputs as they were),
with the run folder locked::

    RUN_DIR/verify.parquet          one row per replayed lane: lane, parameters, selected
                                    (top / frontier / sample, and rest when exhaustive), rank,
                                    fast_<M> and exact_<M> for every metric, fast_/
                                    exact_rank_in_verified, exact_failure (why the exact engine
                                    could not replay the lane; null if it did); per other fill
                                    model F: fast_F_<objective>, fast_F_PnL,
                                    fast_F_NumberOfTrades, fast_F_rank (its sweep rank)
    RUN_DIR/verify.json             agreement numbers (per fill model too), engine config and
                                    stats, failed lanes, timings
    RUN_DIR/plots/verify_scatter.png      fast vs exact objective and PnL
    RUN_DIR/plots/verify_curves.png       equity and inventory of the top lanes, both engines
    RUN_DIR/plots/verify_fill_models.png  fast vs exact per fill model (several models only)

for the train part; ``--part test`` writes the same files named ``verify_test*``
(``verify_test.parquet``, ``plots/verify_test_scatter.png`` ...), so that neither part's
outputs replace the other's.  A lane the exact engine cannot replay (it would need more order
slots than the engine allows) is reported failed, its exact metrics NaN, and the others complete.

Agreement (definitions in :mod:`mmsweep.sweep.agreement`).  Each side ranks its own metrics of
the part, with the experiment's constraints applied to them (as ``rank`` does on train); these
ranks are the ``*_rank_in_verified`` columns (null: the side finds the lane infeasible).

* Over the verified lanes (frontier + sample): Spearman rank correlation, fast vs exact, of the
  objective, of PnL and of NumberOfTrades (lanes NaN on either side dropped and counted); the
  top-k overlap, k = min(K, lanes the fast side ranks): the share of the fast top k that are
  among the exact top k *over the frontier*; the exact rank of the fast #1 among the verified
  lanes; the regret, how much better the exact objective of the best lane found is than the
  fast #1's (objective units, >= 0).
* From the random sample (lanes outside the frontier): a bootstrap interval (fixed seed) of
  Spearman's rho of the objective, and the share of the sample whose exact objective beats the
  fast #1's (Clopper-Pearson interval), hence the number of lanes of the whole sweep that beat
  it and the fast #1's estimated exact rank in the whole sweep.
* Exhaustive: over every lane, Spearman of the objective and of PnL, top-10 and top-20 overlap,
  the PnL gap, where the fast #1 lands; and whether the sample's intervals held the truth.
* relative difference ``(exact - fast) / |fast|`` of PnL and of NumberOfTrades: mean, median
  and median of its absolute value, over lanes where both are finite and fast is not 0; and the
  median of ``exact - fast`` in the metric's unit (PnL: the quote currency, or the coin of an
  inverse contract).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from . import agreement as stats
from .agreement import BOOTSTRAP
from .errors import InputError

#: per-lane comparison columns of the printed table (besides the objective)
_TABLE_METRICS = ("PnL", "NumberOfTrades")


def _partial(path: Path) -> Path:
    from .runfolder import partial_path

    return partial_path(path)

def output_paths(run_dir: Path, part: str) -> dict[str, Path]:
    """Where verify writes for ``part``: ``verify.*`` for train, ``verify_test.*`` for test
    (``fill_models`` only when several fill models are compared)."""
    stem = "verify" if part == "train" else f"verify_{part}"
    plots = run_dir / "plots"
    return {"parquet": run_dir / f"{stem}.parquet", "json": run_dir / f"{stem}.json",
            "scatter": plots / f"{stem}_scatter.png", "curves": plots / f"{stem}_curves.png",
            "fill_models": plots / f"{stem}_fill_models.png"}

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

def _pct(x: Any) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{100 * float(x):.1f} %"


def _interval(point: Any, lo: Any, hi: Any, fmt: Callable[[Any], str]) -> str:
    if point is None or not math.isfinite(float(point)):
        return "n/a"
    if lo is None or hi is None or not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        return fmt(point)
    return f"{fmt(point)} [{fmt(lo)}, {fmt(hi)}]"


def regret_cell(best: dict[str, Any]) -> str:
    """The regret of an agreement's ``fast_best`` as printed: value, best lane and its fast rank;
    ``n/a`` only when there is none (0.0, the fast #1 being the best found, is printed)."""
    value = best.get("regret")
    if best.get("best_lane") is None or value is None or not math.isfinite(float(value)):
        return "n/a"
    fr = best.get("best_fast_rank")
    return f"{_fmt(value, 3)} (lane {best['best_lane']}, fast rank {fr if fr else 'n/a'})"


def agreement_tables(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The frontier, the sample's estimates and (exhaustive) the whole sweep as tables with one
    column per fill model: dicts with ``title``, ``header``, ``rows`` (text cells) and ``note``
    (shared by the printed summary and the report page; empty for a verify.json without them)."""
    models = summary.get("fill_models") or {}
    if not models:
        return []
    metric = summary["objective"]["metric"]
    sel = summary["lanes"]
    k = sel["top_k"]
    unit = (summary.get("units") or {}).get("PnL", "quote ccy")
    names = list(models)
    f3 = lambda x: _fmt(x, 3)  # noqa: E731
    rows = [["", *names]]

    def row(label: str, get: Callable[[dict], str]) -> None:
        rows.append([label] + [get(models[n]) for n in names])

    def rank_of(best: dict) -> str:
        if best.get("lane") is None:
            return "n/a"
        where = f"{best['exact_rank']} of {best['exact_ranked']}" if best.get("exact_rank") else "exact-infeasible"
        return f"{where} (lane {best['lane']})"

    def est(d: dict, key: str) -> dict:
        return (d.get("sample_estimates") or {}).get(key) or {}

    tables: list[dict[str, Any]] = []
    title = (f"frontier: the fast top {k} x {sel.get('frontier', 1)} of each fill model "
             f"({sel.get('frontier_lanes', sel['top'])} lanes) + {sel['sample']} random lanes outside it; "
             f"the exact top {k} is searched among these {sel['verified']}")
    row(f"top-{k} overlap over the frontier",
        lambda d: f"{d['top_k_overlap']['common']}/{d['top_k_overlap']['k']}" if d["top_k_overlap"]["k"] else "n/a")
    row("exact rank of the fast #1", lambda d: rank_of(d["fast_best"]))
    row(f"regret: best exact {metric} found - fast #1's", lambda d: regret_cell(d["fast_best"]))
    row(f"Spearman {metric}, random sample [95 % bootstrap]",
        lambda d: _interval(est(d, "spearman").get("rho"), est(d, "spearman").get("lo"), est(d, "spearman").get("hi"),
                            f3))
    row(f"random lanes beating the fast #1 on exact {metric}",
        lambda d: (f"{est(d, 'beat_fast_best')['sample_beating']}/{est(d, 'beat_fast_best')['sample']} = "
                   + _interval(est(d, "beat_fast_best")["share"], est(d, "beat_fast_best")["lo"],
                               est(d, "beat_fast_best")["hi"], _pct)) if est(d, "beat_fast_best").get("sample")
        else "n/a")

    def sweep_rank(d: dict) -> str:
        r = est(d, "beat_fast_best").get("sweep_exact_rank")
        return _interval(r["estimate"], r["lo"], r["hi"], lambda x: f"{float(x):,.0f}") if r else "n/a"

    row(f"=> the fast #1's exact rank in the sweep (of {sel['total']:,})", sweep_rank)
    row("median PnL (exact - fast) / |fast|", lambda d: _pct(d["relative_difference"]["PnL"]["median"]))
    seed = next((est(models[n], "spearman").get("seed") for n in names if est(models[n], "spearman")), None)
    note = (f"intervals 95 %: Spearman by a percentile bootstrap of the sample ({_fmt(BOOTSTRAP)} resamples, "
            f"seed {seed}), shares Clopper-Pearson; a lane beats the fast #1 if its exact {metric} is "
            "better (or only it meets the constraints on the exact side)") if seed is not None else ""
    tables.append({"title": title, "header": rows[0], "rows": rows[1:], "note": note})

    if any("exhaustive" in models[n] for n in names):
        rows = [["", *names]]
        ex = lambda d: d.get("exhaustive") or {}  # noqa: E731
        row(f"Spearman {metric} (objective)", lambda d: f3(ex(d)["spearman"]["objective"]["rho"]))
        row("Spearman PnL", lambda d: f3(ex(d)["spearman"]["PnL"]["rho"]))
        for kk in ("10", "20"):
            row(f"top-{kk} overlap",
                lambda d, kk=kk: f"{ex(d)['top_overlap'][kk]['common']}/{ex(d)['top_overlap'][kk]['k']}")
        row("feasible on both sides (PnL rows below)", lambda d: f"{ex(d)['pnl_gap'].get('lanes', 0):,}")
        row("median PnL (exact - fast) / |fast|", lambda d: _pct(ex(d)["pnl_gap"]["median"]))
        row(f"median PnL exact - fast ({unit})", lambda d: _fmt(ex(d)["pnl_gap"]["median_gap"], 3))
        row("exact PnL above / below the fast", lambda d: f"{_pct(ex(d)['pnl_gap'].get('exact_above'))} / "
                                                          f"{_pct(ex(d)['pnl_gap'].get('exact_below'))}")
        row("exact rank of the fast #1",
            lambda d: (f"{ex(d)['fast_best']['exact_rank']} of {ex(d)['fast_best']['exact_ranked']:,}"
                       if ex(d)["fast_best"].get("exact_rank") else "n/a"))

        def check(d: dict, what: str) -> str:
            c = ex(d).get("checks") or {}
            if not c:
                return "n/a"
            if what == "rho":
                lo, hi = c["spearman_interval"]
                ok = c["spearman_covered"]
                return f"{'yes' if ok else 'no' if ok is not None else 'n/a'} ({f3(c['spearman_outside_frontier'])})"
            ok = c["sweep_beating_covered"]
            return f"{'yes' if ok else 'no' if ok is not None else 'n/a'} ({c['sweep_beating']:,})"

        row("sample's Spearman interval holds the truth", lambda d: check(d, "rho"))
        row("lanes beating the fast #1 within the estimate", lambda d: check(d, "beat"))
        failed = len(summary.get("failed_lanes") or [])
        tables.append({"title": f"exhaustive: every lane of the sweep replayed ({sel.get('replayed', sel['total']):,}"
                                + (f", {failed} failed" if failed else "") + ")",
                       "header": rows[0], "rows": rows[1:],
                       "note": "the interval check compares the sample's Spearman with the exhaustive Spearman of "
                               "the lanes outside the frontier"})
    return tables


def _frontier_lines(summary: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for table in agreement_tables(summary):
        lines += ["", table["title"] + ":"]
        lines += _aligned([table["header"], *table["rows"]], set(range(1, len(table["header"]))))
        if table["note"]:
            lines.append(table["note"])
    return lines


def format_agreement(summary: dict[str, Any], per_lane: Any = None, max_lanes: int = 10) -> str:
    """The agreement table of a :func:`verify_run` summary, fixed width; with ``per_lane``
    (verify.parquet as a polars DataFrame) also the best ``max_lanes`` top lanes side by side."""
    a = summary["agreement"]
    metric = summary["objective"]["metric"]
    sel = summary["lanes"]
    cfg = summary["engine"]["config"]
    latency = (f"entry {cfg['entry_ns'] / 1e6:g} ms, response {cfg['response_ns'] / 1e6:g} ms"
               if cfg.get("latency") == "constant" else "from the latency file")
    extra = sel.get("frontier_lanes", sel["top"]) - sel["top"]
    lines = [f"fast kernel ({summary.get('fill_model', 'run')}) vs exact engine, {summary['part']} part: "
             f"{sel['verified']} lanes ({sel['top']} top + {extra} more of the frontier + {sel['sample']} random, "
             f"seed {sel['seed']}) of {sel['total']:,}",
             f"exact engine: queue {cfg['queue']}"
             + (f" (n={cfg['queue_n']:g})" if cfg['queue'].startswith("power") else "")
             + f", {'partial' if cfg['partial_fills'] else 'whole'} fills, latency {latency}, "
             f"crosses per {'message' if cfg['cross_per_message'] else 'row'}", ""]
    rows = [["measure (verified lanes)", "value", "lanes", "NaN dropped"]]
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
    lines += _frontier_lines(summary)
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
                  f"{e['passes']} pass(es)"
                  + (f", then {e['exhaustive']['candidates']:,} more" if "exhaustive" in e else "")
                  + f"); fast kernel {t['fast_s']:.1f} s"
                  + "".join(f"; fill model {m} sweep {s:.1f} s" for m, s in (t.get("fill_model_sweeps_s") or {}).items())
                  + f"; total {t['total_s']:.1f} s"]
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

#: the limit of an exhaustive replay's estimated time (minutes) unless the caller raises it
MAX_EXACT_MINUTES = 30.0


def parse_fill_models(value: Any, run_model: str) -> tuple[str, ...]:
    """The fill models to compare: the run's own first, then the others named in ``value``
    (``"cross,touch"`` or a list).  A name the kernel does not know is a one-line error naming it."""
    from ..kernels import fills

    known = tuple(getattr(fills, "NAMES", fills.FILL_MODELS))  # the models an experiment may name
    if value is None:
        return (run_model,)
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(s).strip() for s in items if str(s).strip()]
    if not names:
        raise InputError("no fill model named; give names such as cross,touch", key="fill_models")
    for name in names:
        if name not in known:
            raise InputError(f"fill model {name!r} is not available in this version of mmsweep (available: "
                             f"{', '.join(sorted(known))})", key="fill_models")
    out = [run_model]
    for name in names:
        if name not in out:
            out.append(name)
    return tuple(out)


class ExactScores(NamedTuple):
    """Lanes replayed on the exact engine and scored as the sweep scores them.

    Attributes:
        lanes: [n] the lanes (indices into the sweep's lane table; ``arange(n)`` for ``params``).
        metrics: the sweep's metrics (:data:`mmsweep.sweep.run.METRIC_COLUMNS`), [n] each, NaN
            for a lane the engine could not replay.
        objective: [n] the experiment's objective metric.
        feasible: [n] the experiment's constraints met by the exact metrics (and objective finite).
        failure: [n] why a lane could not be replayed ("" when it was).
        final: the engine's end-of-replay counters ([n] each: Rejections, CancelsLost, ...).
        record: the per-decision :class:`mmsweep.replay.ReplayResult`, or None (``block`` set).
        stats: engine facts (events, candidates, passes, seconds, failed, ...).
        seconds: wall time of the replay.
    """

    lanes: np.ndarray
    metrics: dict[str, np.ndarray]
    objective: np.ndarray
    feasible: np.ndarray
    failure: np.ndarray
    final: dict[str, np.ndarray]
    record: Any
    stats: dict[str, Any]
    seconds: float


def replay_and_score(prep, lanes: np.ndarray | None = None, *, params: dict[str, np.ndarray] | None = None,
                     part: str = "train", config=None, progress: Callable[[str], None] | None = None,
                     block: int | None = None) -> ExactScores:
    """Replay lanes on the exact engine and score them with the experiment's objective and
    constraints: the path ``mmsweep verify`` (and anything else that re-checks candidates)
    takes.

    Args:
        prep: :func:`mmsweep.sweep.run.prepare`'s result.
        lanes: indices into ``prep.lanes``; or ``params``: parameter values of candidates that
            need not be lanes of the sweep (every lane parameter, [n] each).
        part: ``train`` or ``test``.
        config: :class:`mmsweep.replay.ReplayConfig` (default: the experiment's ``verify``
            section, :func:`mmsweep.sweep.exact.replay_config`).
        progress: replay progress messages.
        block: replay ``block`` lanes at a time and keep only their metrics (no per-decision
            record): bounded memory for many lanes.
    """
    import dataclasses

    from .exact import replay_config, replay_lanes
    from .run import METRIC_COLUMNS

    exp = prep.experiment
    config = config or replay_config(exp)
    if (lanes is None) == (params is None):
        raise ValueError("give lanes or params")
    if params is not None:
        n = len(np.asarray(next(iter(params.values()))))
        cached = prep.__dict__.get("_exact_data")
        prep = dataclasses.replace(prep, lanes={k: np.asarray(v, np.float64) for k, v in params.items()})
        if cached is not None:
            prep.__dict__["_exact_data"] = cached
        lanes = np.arange(n, dtype=np.int64)
    lanes = np.asarray(lanes, np.int64)
    data = prep.__dict__.get("_exact_data")  # the engine's view of the events, built once per prep
    if data is None:
        from ..replay import build_data

        inst = prep.quoted.instrument
        data = prep.__dict__["_exact_data"] = build_data(prep.quoted.table, inst.tick_size, inst.lot_size)
    started = time.perf_counter()
    step = len(lanes) if not block else max(int(block), 1)
    metrics_parts, finals, failures, stats_parts, record = [], [], [], [], None
    for lo in range(0, max(len(lanes), 1), step):
        chunk = lanes[lo:lo + step]
        if len(chunk) == 0:
            break
        rec, metrics = replay_lanes(prep, chunk, part=part, config=config, data=data,
                                    progress=None if block else progress)
        if block and progress:
            progress(f"  exact replay: {lo + len(chunk):,}/{len(lanes):,} candidates "
                     f"[{time.perf_counter() - started:.0f} s]")
        metrics_parts.append({m: np.asarray(metrics[m], np.float64) if m in metrics else np.full(len(chunk), np.nan)
                              for m in METRIC_COLUMNS})
        finals.append(rec.final)
        failures.append(np.array([str(f) for f in rec.final.get("Failure", [""] * len(chunk))], dtype=object))
        stats_parts.append({k: v for k, v in rec.stats.items() if k != "config"})
        record = rec if not block else None
    cat = lambda parts, key: np.concatenate([p[key] for p in parts]) if parts else np.zeros(0)  # noqa: E731
    metrics = {m: cat(metrics_parts, m) for m in METRIC_COLUMNS}
    final = {k: cat(finals, k) for k in (finals[0] if finals else {})}
    failure = np.concatenate(failures) if failures else np.zeros(0, dtype=object)
    stats: dict[str, Any] = dict(stats_parts[0]) if stats_parts else {}
    for key in ("candidates", "passes", "seconds", "fills_dropped", "failed"):
        if stats_parts:
            stats[key] = sum(s[key] for s in stats_parts)
    if stats_parts:
        stats["order_slots_used"] = max(s["order_slots_used"] for s in stats_parts)
    objective = metrics[exp.objective.metric]
    return ExactScores(lanes, metrics, objective, _feasible(metrics, exp), failure, final, record, stats,
                       time.perf_counter() - started)


def estimate_exact_seconds(prep, n_lanes: int, *, part: str, config) -> dict[str, Any]:
    """How long replaying ``n_lanes`` lanes would take, from a timed probe: one lane to warm up,
    then one lock-step group of lanes spread over the sweep, in one process; the groups of the
    full replay are then shared by ``processes`` workers (at most one per CPU)."""
    import dataclasses

    total = len(np.asarray(next(iter(prep.lanes.values()))))
    group = max(1, min(int(config.lockstep), total))
    probe = np.unique(np.linspace(0, total - 1, group).round().astype(np.int64))
    one = dataclasses.replace(config, processes=1)
    replay_and_score(prep, probe[:1], part=part, config=one)  # compile / warm
    t = time.perf_counter()
    replay_and_score(prep, probe, part=part, config=one)
    per_group = time.perf_counter() - t
    groups = -(-int(n_lanes) // group)
    workers = max(1, min(int(config.processes), os.cpu_count() or 1, groups))
    return {"seconds": per_group * groups / workers, "per_candidate_s": per_group / len(probe),
            "probe_lanes": int(len(probe)), "processes": workers, "lanes": int(n_lanes)}


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _sweep_fill_model(exp, model: str, part: str, log) -> tuple[Any, float]:
    """Every lane of ``exp`` on the fast kernel under fill model ``model``: a table (lane,
    feasible, rank, ``<part>_<metric>``) ranked as ``mmsweep run`` ranks, and its seconds."""
    import dataclasses

    import polars as pl

    from .run import prepare, rank, run_chunk

    other = dataclasses.replace(exp, fill_model=model)
    prep = prepare(other, log=lambda m: None)
    total = len(np.asarray(next(iter(prep.lanes.values()))))
    chunk = int(exp.run.chunk_lanes)
    t = time.perf_counter()
    table = pl.concat([run_chunk(prep, lo, min(total, lo + chunk)) for lo in range(0, total, chunk)])
    seconds = time.perf_counter() - t
    log(f"fast kernel, fill model {model}: {total:,} lanes [{seconds:.1f} s]")
    return rank(table.sort("lane"), other).sort("lane"), seconds

def _select(rankings: dict[str, Any], exp, top_k: int, frontier: int, sample: int, seed: int, log
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(top, frontier, sample)`` lanes: the run's top ``top_k`` feasible lanes by rank; the
    rest of the frontier, every model's top ``top_k x frontier`` (run model first, by rank, then
    the others' not yet in); ``sample`` random lanes from outside the frontier (sorted)."""
    import polars as pl

    run_model = exp.fill_model
    results = rankings[run_model]
    feasible = results.filter(pl.col("feasible")).sort("rank")
    if feasible.height == 0:
        raise InputError("no lane of the run meets the constraints: nothing to verify (relax 'constraints' "
                         "and rerun)", source=str(exp.source or "results.parquet"))
    width = top_k * frontier
    ordered = feasible["lane"].to_numpy()[:width].astype(np.int64)
    top = ordered[:top_k]
    if len(top) < top_k:
        log(f"verify: only {len(top)} feasible lane(s); verifying all of them as the top")
    chosen = list(ordered[top_k:])
    seen = set(int(x) for x in ordered)
    for model, table in rankings.items():
        if model == run_model:
            continue
        for lane in table.filter(pl.col("feasible")).sort("rank")["lane"].to_numpy()[:width].astype(np.int64):
            if int(lane) not in seen:
                seen.add(int(lane))
                chosen.append(int(lane))
    rest = np.asarray(chosen, np.int64)
    others = np.setdiff1d(results["lane"].to_numpy().astype(np.int64), np.concatenate([top, rest]))
    m = min(sample, len(others))
    if m < sample:
        log(f"verify: only {len(others)} lane(s) outside the frontier; sampling {m}")
    picked = np.sort(np.random.default_rng(seed).choice(others, size=m, replace=False)) if m else \
        np.zeros(0, np.int64)
    return top, rest, picked.astype(np.int64)


def _model_agreement(*, lanes: np.ndarray, fast: dict[str, np.ndarray], exact: dict[str, np.ndarray],
                     exact_ok: np.ndarray, exact_rank: np.ndarray, exp, top_k: int, sample: np.ndarray,
                     enumerated: np.ndarray, n_total: int, seed: int) -> dict[str, Any]:
    """One fill model's agreement with the exact engine over the verified lanes."""
    metric, maximize = exp.objective.metric, exp.objective.maximize
    fast_ok = _feasible(fast, exp)
    fast_rank = stats.ranks(fast[metric], fast_ok, maximize)
    spearman = {"objective": {"metric": metric, **stats.spearman(fast[metric], exact[metric])}}
    for m in _TABLE_METRICS:
        spearman[m] = stats.spearman(fast[m], exact[m])
    out: dict[str, Any] = {
        "spearman": spearman,
        "top_k_overlap": stats.overlap(fast_rank, exact_rank, lanes, top_k),
        "relative_difference": {m: stats.relative_difference(fast[m], exact[m]) for m in _TABLE_METRICS},
        "feasible": {"fast": int(fast_ok.sum()), "exact": int(exact_ok.sum())},
        "fast_best": stats.fast_best(lanes, fast_rank, exact[metric], exact_ok, maximize),
        "fast_rank": fast_rank,
    }
    if (fast_rank == 1).any():
        best = int(np.flatnonzero(fast_rank == 1)[0])
        out["sample_estimates"] = stats.sample_estimates(
            sample=sample, enumerated=enumerated, n_total=n_total, fast=fast[metric], exact=exact[metric],
            exact_ok=exact_ok, best=best, maximize=maximize, seed=seed)
    return out


def _exhaustive_agreement(fast_all: dict[str, np.ndarray], exact_all: dict[str, np.ndarray], exp,
                          model: dict[str, Any], enumerated_lanes: np.ndarray) -> dict[str, Any]:
    """Whole-sweep agreement of one fill model (``model``: its :func:`_model_agreement`), and
    whether the frontier's and the sample's estimates held the truth."""
    metric, maximize = exp.objective.metric, exp.objective.maximize
    fast_ok, exact_ok = _feasible(fast_all, exp), _feasible(exact_all, exp)
    out = stats.whole_sweep(fast=fast_all, exact=exact_all, fast_ok=fast_ok, exact_ok=exact_ok, metric=metric,
                            maximize=maximize)
    outside = np.ones(len(fast_all[metric]), bool)
    outside[enumerated_lanes] = False
    lane = model["fast_best"]["lane"]
    if "sample_estimates" in model and lane is not None:
        rho = stats.spearman(fast_all[metric][outside], exact_all[metric][outside])["rho"]
        count = int(stats.beats(exact_all[metric], exact_ok, int(lane), maximize).sum())
        out["checks"] = stats.check_estimates(model["sample_estimates"], sweep_beating=count, outside_rho=rho)
    return out

def verify_run(run_dir: str | os.PathLike, top_k: int | None = None, sample: int | None = None,
               seed: int | None = None, part: str = "train", log: Callable[[str], None] = print,
               processes: int | None = None, *, report: Callable[[str], None] | None = None,
               frontier: int | None = None, fill_models: Any = None, exhaustive: bool = False,
               max_exact_minutes: float | None = None) -> dict[str, Any]:
    """Verify a run folder's frontier and a random sample on the exact engine.

    Args:
        run_dir: the run folder (``config.json`` and ``results.parquet``).
        top_k, sample, seed: lanes to verify; default: the experiment's ``verify`` section.
        part: ``train`` or ``test``.
        log: progress messages.
        processes: exact-engine worker processes (0: one per CPU); default: the experiment's.
        report: where the agreement table goes (default: ``log``).
        frontier: ``m``, the fast top ``top_k x m`` lanes are replayed (>= 1; default: the
            experiment's ``verify.frontier``, 4).
        fill_models: other fill models to compare (``"cross,touch"`` or a list); the run's own
            is always first.
        exhaustive: replay every lane of the sweep.
        max_exact_minutes: refuse an exhaustive replay estimated to take longer (default
            :data:`MAX_EXACT_MINUTES`).

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
    limit = MAX_EXACT_MINUTES if max_exact_minutes is None else max_exact_minutes
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit) or limit <= 0:
        raise InputError(f"max_exact_minutes must be a number of minutes > 0, got {max_exact_minutes!r}",
                         key="max_exact_minutes")
    opts = {"frontier": frontier, "fill_models": fill_models, "exhaustive": bool(exhaustive),
            "max_exact_minutes": float(limit)}
    with FolderLock(run_dir, f"mmsweep verify --part {part}"):
        return _verify_locked(run_dir, top_k, sample, seed, part, log, processes, report, started, opts)


def _verify_locked(run_dir: Path, top_k, sample, seed, part: str, log, processes, report, started: float,
                   opts: dict[str, Any]) -> dict[str, Any]:
    import dataclasses

    import polars as pl

    from ..kernels.scan import run_lanes
    from . import report as figures
    from .config import parse_experiment
    from .exact import part_window, replay_config, with_instrument
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
    m_frontier = opts["frontier"] if opts["frontier"] is not None else v.frontier
    if isinstance(m_frontier, bool) or not isinstance(m_frontier, (int, np.integer)) or m_frontier < 1:
        raise InputError(f"frontier must be a whole number >= 1 (the fast top K x frontier lanes are replayed), "
                         f"got {m_frontier!r}", key="frontier")
    m_frontier = int(m_frontier)
    if processes is not None:
        processes = _count(processes, "processes", 0)
    if top_k + sample == 0:
        raise InputError("nothing to verify: top_k and sample are both 0", key="top_k")
    models = parse_fill_models(opts["fill_models"], exp.fill_model)
    exhaustive = opts["exhaustive"]

    results = pl.read_parquet(results_path).sort("lane")
    n_total = results.height
    if not np.array_equal(results["lane"].to_numpy(), np.arange(n_total)):
        raise InputError("results.parquet does not hold lanes 0..n-1 exactly once", source=str(results_path))
    if f"{part}_PnL" not in results.columns:
        raise InputError(f"the run has no {part} part (see 'split')", source=str(results_path), key="part")

    prep = prepare(exp, log=log)
    if part not in prep.parts:
        raise InputError(f"the run has no {part} part (see 'split')", key="part")
    n_lanes = len(next(iter(prep.lanes.values())))
    if n_lanes != n_total or any(
            not np.array_equal(np.asarray(prep.lanes[k]), results[k].to_numpy(), equal_nan=True)
            for k in prep.lanes if k in results.columns):
        raise InputError("the lanes this version of mmsweep builds differ from the run's; rerun the sweep",
                         source=str(results_path))
    # accounted as the instrument is (inverse: in the coin), so that verify.json records the
    # configuration the replay actually runs with
    config = with_instrument(replay_config(exp, **({"processes": processes or max(1, os.cpu_count() or 1)}
                                                   if processes is not None else {})), prep.quoted.instrument)

    # An exhaustive replay too long for the limit is refused before anything is replayed.
    estimate = None
    if exhaustive:
        estimate = estimate_exact_seconds(prep, n_total, part=part, config=config)
        if estimate["seconds"] > 60 * opts["max_exact_minutes"]:
            raise InputError(
                f"an exhaustive replay of {n_total:,} lanes would take about {_duration(estimate['seconds'])} "
                f"({estimate['per_candidate_s']:.3g} s per lane measured, {estimate['processes']} process(es)), over "
                f"the limit of {opts['max_exact_minutes']:g} min; raise --max-exact-minutes or verify the frontier "
                "without --exhaustive", key="exhaustive")
        log(f"exhaustive: {n_total:,} lanes, about {_duration(estimate['seconds'])} on the exact engine "
            f"({estimate['per_candidate_s']:.3g} s per lane, {estimate['processes']} process(es))")

    # Every other fill model's sweep of every lane (fast), so that its own frontier is replayed.
    sweeps: dict[str, Any] = {exp.fill_model: results}
    sweep_s: dict[str, float] = {}
    for model in models[1:]:
        sweeps[model], sweep_s[model] = _sweep_fill_model(exp, model, part, log)

    top, rest, picked = _select(sweeps, exp, top_k, m_frontier, sample, seed, log)
    lanes = np.concatenate([top, rest, picked])
    selected = np.array(["top"] * len(top) + ["frontier"] * len(rest) + ["sample"] * len(picked))
    log(f"verify {run_dir}: {len(top)} top + {len(rest)} more of the frontier (top {top_k} x {m_frontier}"
        + (f", {len(models)} fill models" if len(models) > 1 else "") + f") + {len(picked)} random lane(s) of "
        f"{n_total:,} on the {part} part" + ("; then every other lane (exhaustive)" if exhaustive else ""))

    # Exact engine first: it forks its workers before the kernel starts more threads.
    log(f"exact engine: {len(lanes)} candidate(s), queue {config.queue}, {config.processes} process(es)")
    with warnings.catch_warnings():
        # The forked workers run only the engine's numba code, never JAX.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
        scored = replay_and_score(prep, lanes, part=part, config=config, progress=log)
        others = np.setdiff1d(np.arange(n_total), lanes) if exhaustive else np.zeros(0, np.int64)
        rest_scored = None
        if len(others):
            log(f"exact engine, exhaustive: {len(others):,} more lane(s)")
            # blocks whose per-decision records (5 float64 per lane and decision) stay near 256 MB
            decisions = max(len(part_window(prep, part)[0]), 1)
            block = max(config.lockstep * config.processes, min(4096, int(256e6 // (40 * decisions))))
            rest_scored = replay_and_score(prep, others, part=part, config=config, progress=log, block=block)
    exact_s = scored.seconds + (rest_scored.seconds if rest_scored is not None else 0.0)
    record, exact, failure = scored.record, scored.metrics, scored.failure
    failed = [{"lane": int(lane), "reason": why} for lane, why in zip(lanes, failure) if why]
    if rest_scored is not None:
        failed += [{"lane": int(lane), "reason": why} for lane, why in zip(others, rest_scored.failure) if why]
    if failed:
        warnings.warn(f"the exact engine could not replay {len(failed)} of {len(lanes) + len(others)} lane(s) "
                      f"(lanes {[f['lane'] for f in failed][:5]}): {failed[0]['reason']}; they are reported failed "
                      "in exact_failure, their exact metrics NaN")

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
        with np.errstate(invalid="ignore"):  # inf - inf where one side is inf: counted as different
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

    # Agreement, per fill model, over the verified lanes (the frontier and the sample).
    metric, maximize = exp.objective.metric, exp.objective.maximize
    exact_ok = scored.feasible
    exact_rank = stats.ranks(exact[metric], exact_ok, maximize)
    is_sample = selected == "sample"
    enumerated = ~is_sample
    per_model: dict[str, dict[str, Any]] = {}
    fast_of: dict[str, dict[str, np.ndarray]] = {exp.fill_model: fast}
    for model in models[1:]:
        table = sweeps[model]
        fast_of[model] = {m: table[f"{part}_{m}"].to_numpy().astype(np.float64)[lanes] for m in METRIC_COLUMNS}
    for model in models:
        per_model[model] = _model_agreement(lanes=lanes, fast=fast_of[model], exact=exact, exact_ok=exact_ok,
                                            exact_rank=exact_rank, exp=exp, top_k=top_k, sample=is_sample,
                                            enumerated=enumerated, n_total=n_total, seed=seed)
    fast_rank = per_model[exp.fill_model]["fast_rank"]

    # Exhaustive: every lane, both sides, per model.
    exact_all = None
    if exhaustive:
        exact_all = {m: np.full(n_total, np.nan) for m in METRIC_COLUMNS}
        for m in METRIC_COLUMNS:
            exact_all[m][lanes] = exact[m]
            if rest_scored is not None:
                exact_all[m][others] = rest_scored.metrics[m]
        for model in models:
            table = results if model == exp.fill_model else sweeps[model]
            fast_all = {m: table[f"{part}_{m}"].to_numpy().astype(np.float64) for m in METRIC_COLUMNS}
            per_model[model]["exhaustive"] = _exhaustive_agreement(fast_all, exact_all, exp, per_model[model],
                                                                   lanes[enumerated])

    agreement = {k: val for k, val in per_model[exp.fill_model].items() if k != "fast_rank"}
    agreement["fast_vs_results"] = {"ok": not bad.any(), "mismatched_lanes": int(bad.sum()), "max_rel_diff": worst,
                                    "rtol": rtol}

    # verify.parquet
    ranks_col = results["rank"].to_numpy()  # float with NaN where null (polars -> numpy)

    def lane_table(ids: np.ndarray, sel: np.ndarray, fast_m: dict, exact_m: dict, final: dict, why: np.ndarray,
                   fr: np.ndarray | None, er: np.ndarray | None):
        frame = pl.DataFrame({"lane": ids, **{k_: np.asarray(prep.lanes[k_])[ids] for k_ in prep.lanes},
                              "selected": sel}).with_columns(
            pl.Series("rank", [None if not np.isfinite(r) else int(r) for r in ranks_col[ids].astype(np.float64)],
                      dtype=pl.Int64),
            pl.Series("feasible", results["feasible"].to_numpy()[ids]))
        frame = frame.with_columns([pl.Series(f"fast_{m}", fast_m[m]) for m in METRIC_COLUMNS]
                                   + [pl.Series(f"exact_{m}", np.asarray(exact_m[m], np.float64))
                                      for m in METRIC_COLUMNS])
        none = [None] * len(ids)
        frame = frame.with_columns(
            pl.Series("fast_rank_in_verified", none if fr is None else [int(r) if r else None for r in fr],
                      dtype=pl.Int64),
            pl.Series("exact_rank_in_verified", none if er is None else [int(r) if r else None for r in er],
                      dtype=pl.Int64),
            pl.Series("exact_CancelsLost", np.asarray(final["CancelsLost"], np.float64)),
            pl.Series("exact_failure", [w or None for w in why], dtype=pl.String))
        for model in models[1:]:
            table = sweeps[model]
            cols = [metric] + [m for m in _TABLE_METRICS if m != metric]
            frame = frame.with_columns(
                [pl.Series(f"fast_{model}_{m}", table[f"{part}_{m}"].to_numpy().astype(np.float64)[ids])
                 for m in cols]
                + [table["rank"].gather(ids).cast(pl.Int64).alias(f"fast_{model}_rank")])
        return frame

    frame = lane_table(lanes, selected, fast, exact, record.final, failure, fast_rank, exact_rank)
    if rest_scored is not None:
        fast_rest = {m: results[f"{part}_{m}"].to_numpy().astype(np.float64)[others] for m in METRIC_COLUMNS}
        frame = pl.concat([frame, lane_table(others, np.array(["rest"] * len(others)), fast_rest,
                                             rest_scored.metrics, rest_scored.final, rest_scored.failure, None,
                                             None)], how="vertical_relaxed")

    engine_stats = {k_: v_ for k_, v_ in record.stats.items() if k_ != "config"}
    if rest_scored is not None:
        engine_stats["exhaustive"] = rest_scored.stats
    summary: dict[str, Any] = {
        "run_dir": str(run_dir.resolve()), "experiment": exp.name, "experiment_hash": stored.get("hash"),
        "part": part, "objective": {"metric": metric, "maximize": maximize},
        "lanes": {"total": n_total, "verified": int(len(lanes)), "top": int(len(top)), "sample": int(len(picked)),
                  "top_k": top_k, "requested_sample": sample, "seed": seed, "top_lanes": top.tolist(),
                  "sample_lanes": picked.tolist(), "frontier": m_frontier, "frontier_lanes": int(len(top) + len(rest)),
                  "frontier_extra_lanes": rest.tolist(), "exhaustive": bool(exhaustive),
                  "replayed": int(len(lanes) + len(others))},
        "fill_model": exp.fill_model,
        "agreement": agreement,
        "fill_models": {model: {k: val for k, val in d.items() if k != "fast_rank"} for model, d in per_model.items()},
        "failed_lanes": failed,
        "engine": {"config": config.describe(), "stats": engine_stats},
        "timing": {"exact_s": exact_s, "fast_s": fast_s, "fill_model_sweeps_s": sweep_s, "total_s": 0.0},
        **({"exhaustive_estimate": estimate} if estimate is not None else {}),
    }

    # Figures, then every output moved into place at the end.
    inst = prep.quoted.instrument
    quote, qty_unit = figures.currency_units(inst.symbol)
    if getattr(inst, "inverse", False):  # coin-margined: money is counted in the coin
        quote, qty_unit = qty_unit, "contracts"
    final = output_paths(run_dir, part)
    if len(models) < 2:
        final.pop("fill_models")
    make_folder(final["scatter"].parent, "plots")
    temps = {key: _partial(path) for key, path in final.items()}
    try:
        is_top = selected == "top"
        sp = agreement["spearman"]
        unit = {"SR": "annualised Sharpe ratio", "Sortino": "annualised Sortino ratio", "PnL": quote,
                "Fees": quote, "Return": "fraction of book size", "MaxDrawdown": "fraction of book size",
                "NumberOfTrades": "fills"}.get(metric, "")
        obj_label = f"{metric}" + (f" ({unit})" if unit else "")
        pnl_label = f"PnL ({quote}, after fees)"
        if exhaustive:
            ex = agreement["exhaustive"]["spearman"]
            fs, es = frame[f"fast_{metric}"].to_numpy(), frame[f"exact_{metric}"].to_numpy()
            fp, ep = frame["fast_PnL"].to_numpy(), frame["exact_PnL"].to_numpy()
            groups = frame["selected"].to_numpy()
            panels = [{"fast": fs, "exact": es, "label": obj_label,
                       "title": f"objective {metric}, every lane: Spearman {_fmt(ex['objective']['rho'], 3)}"},
                      {"fast": fp, "exact": ep, "label": pnl_label,
                       "title": f"PnL, every lane: Spearman {_fmt(ex['PnL']['rho'], 3)}"}]
        else:
            groups = selected
            panels = [{"fast": fast[metric], "exact": exact[metric], "label": obj_label,
                       "title": f"objective {metric}: Spearman {_fmt(sp['objective']['rho'], 3)}"},
                      {"fast": fast["PnL"], "exact": exact["PnL"], "label": pnl_label,
                       "title": f"PnL: Spearman {_fmt(sp['PnL']['rho'], 3)}"}]
        figures.verify_scatter(temps["scatter"], panels, top=groups == "top", frontier=groups == "frontier",
                               title=f"{exp.name}, {part} part: fast kernel ({exp.fill_model}) vs exact engine "
                                     f"(queue {config.queue}), {len(groups):,} lanes")
        if "fill_models" in temps:
            ids = np.arange(n_total) if exhaustive else lanes
            ex_obj = exact_all[metric] if exhaustive else exact[metric]
            ex_pnl = exact_all["PnL"] if exhaustive else exact["PnL"]
            series = []
            for model in models:
                table = results if model == exp.fill_model else sweeps[model]
                d = per_model[model]
                rho = d["exhaustive"]["spearman"] if exhaustive else d["spearman"]
                series.append({"name": model, "fast": table[f"{part}_{metric}"].to_numpy().astype(np.float64)[ids],
                               "fast_pnl": table[f"{part}_PnL"].to_numpy().astype(np.float64)[ids],
                               "rho": rho["objective"]["rho"], "rho_pnl": rho["PnL"]["rho"]})
            figures.verify_fill_models(
                temps["fill_models"], series, exact=ex_obj, exact_pnl=ex_pnl, label=obj_label, pnl_label=pnl_label,
                title=f"{exp.name}, {part} part: each fill model vs the exact engine (queue {config.queue}), "
                      f"{len(ids):,} lanes" + (" (every lane)" if exhaustive else " (frontier + sample)"))
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
        summary["units"] = {"PnL": quote, "objective": unit}
        temps["json"].write_text(json.dumps(_jsonable(summary), indent=2))
        for key, path in final.items():
            os.replace(temps[key], path)
        if "fill_models" not in final:  # an earlier comparison's plot would contradict this verify.json
            output_paths(run_dir, part)["fill_models"].unlink(missing_ok=True)
    finally:
        for path in temps.values():
            path.unlink(missing_ok=True)
    summary["table"] = format_agreement(summary, frame)
    report(summary["table"])
    return summary
