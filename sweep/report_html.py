"""``mmsweep report RUN_DIR`` and ``mmsweep show RUN_DIR --lane ID``.

``report`` writes ``RUN_DIR/report/index.html`` with its PNGs beside it (a folder that opens
from disk, no server, nothing fetched): the run's warnings; the overfitting statistics; objective
heatmaps over the two axes that matter most (train and test); the objective against every swept
axis; the stats table of the top lanes (hftbacktest's columns plus PnL, fees and the PnL
decomposition of :mod:`mmsweep.sweep.pnl`), train and test, fast kernel and exact engine; equity,
inventory and mid of each top lane on one time axis; the markouts of their exact fills; and the
verify agreement when ``mmsweep verify`` ran.  Everything is written to temporary names and
moved into place at the end.

The top lanes are the best feasible train lanes with *distinct* outcomes (a lane repeating a
better lane's fills exactly is skipped).  They are recomputed on the fast kernel with per-row
records and, unless ``exact=False``, replayed on the exact engine (the experiment's ``verify``
assumptions) for fills, exact curves and markouts (:mod:`mmsweep.sweep.lane_detail`).
"""
from __future__ import annotations

import html
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .data.instruments import units as instrument_units
from .errors import InputError

#: the stats table's columns: hftbacktest's summary, then PnL and its decomposition
HBT_COLUMNS = ("SR", "Sortino", "Return", "MaxDrawdown", "DailyNumberOfTrades", "DailyTurnover", "ReturnOverMDD",
               "ReturnOverTrade", "MaxPositionValue")
STATS_COLUMNS = HBT_COLUMNS + ("PnL", "Fees", "NumberOfTrades")
DECOMPOSITION = ("spread_capture", "rebates_fees", "inventory")
CHART_LANES = 3  # lanes in the decomposition chart (the tables hold every top lane)
PNL_COLUMNS = ("PnL", "spread_capture", "rebates_fees", "inventory", "Fees", "NumberOfTrades")


def stats_units(quote: str, book_size: float, days: float, qty_unit: str = "") -> dict[str, str]:
    """Unit of every stats column (for headers and the text table); ``qty_unit`` "contracts"
    (an inverse instrument): the position value is contracts x price, as in hftbacktest."""
    b = f"{book_size:g} {quote}" if book_size < 1000 else f"{book_size:,.0f} {quote}"
    value = ("max |contracts| x mid (price units, not the coin)" if qty_unit == "contracts"
             else f"max |pos| x mid, {quote}")
    return {
        "SR": f"annualised ({days:g} d/yr)", "Sortino": f"annualised ({days:g} d/yr)",
        "Return": f"PnL / book {b}", "MaxDrawdown": f"/ book {b}", "DailyNumberOfTrades": "fills/day",
        "DailyTurnover": "traded value / book / day", "ReturnOverMDD": "PnL / max drawdown",
        "ReturnOverTrade": "PnL / traded value", "MaxPositionValue": value,
        "PnL": f"{quote}, after fees", "Fees": f"{quote}, + = cost", "NumberOfTrades": "fills", "spread_capture": quote,
        "rebates_fees": f"{quote}, + = rebate", "inventory": f"{quote}, mark-to-market",
    }


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    v = float(v)
    if not math.isfinite(v):
        return "inf" if v > 0 else "-inf" if v < 0 else "NaN"
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e9):
        return f"{v:.{digits - 1}e}"
    if a >= 10 ** (digits - 1):
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def load_run(run_dir: str | os.PathLike):
    """``(experiment, results sorted by lane, manifest or {}, verify summary or None)``."""
    import polars as pl

    from .config import parse_experiment

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("no such run folder", source=str(run_dir))
    results_path, config_path = run_dir / "results.parquet", run_dir / "config.json"
    if not config_path.exists():
        raise InputError("no config.json: not a run folder of mmsweep run", source=str(run_dir))
    if not results_path.exists():
        raise InputError("no results.parquet: the run has not finished (mmsweep run --resume completes it)",
                         source=str(run_dir))
    try:
        stored = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the run's configuration ({exc})", source=str(config_path)) from None
    exp = parse_experiment(stored["experiment"], str(config_path))
    results = pl.read_parquet(results_path).sort("lane")
    manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
    verify = json.loads((run_dir / "verify.json").read_text()) if (run_dir / "verify.json").exists() else None
    return exp, results, manifest, verify


def top_distinct(results, n: int) -> np.ndarray:
    """The best ``n`` feasible lanes by rank whose train outcomes differ (lane ids)."""
    import polars as pl

    from .diagnostics import distinct_outcomes

    _, ids = distinct_outcomes(results)
    ranked = results.with_columns(pl.Series("_outcome", ids)).filter(pl.col("feasible")).sort("rank")
    seen, out = set(), []
    for lane, outcome in zip(ranked["lane"].to_list(), ranked["_outcome"].to_list()):
        if outcome not in seen:
            seen.add(outcome)
            out.append(int(lane))
        if len(out) >= n:
            break
    return np.asarray(out, np.int64)


def stats_rows(details, exp) -> list[dict[str, Any]]:
    """One row per (lane, part, engine, decomposition): the stats columns and the PnL split
    (``split``: ``per row`` for both engines, and ``per fill`` for the exact engine)."""
    rows = []
    for i, lane in enumerate(details.lanes):
        for part, d in details.parts.items():
            engines = [("fast", "per row", d.fast_metrics, d.fast_decomposition)]
            if d.exact_metrics is not None:
                engines += [("exact", "per row", d.exact_metrics, d.exact_row_decomposition),
                            ("exact", "per fill", d.exact_metrics, d.exact_decomposition)]
            for engine, split, metrics, dec in engines:
                row = {"lane": int(lane), "part": part, "engine": engine, "split": split}
                row.update({m: float(metrics[m][i]) for m in STATS_COLUMNS})
                row.update({k: float(dec[i][k]) for k in DECOMPOSITION})
                rows.append(row)
    return rows


def format_stats(rows: Sequence[dict[str, Any]], units: dict[str, str]) -> str:
    """A lane's stats as text: one line per metric, one column per (part, engine)."""
    stats = [r for r in rows if r["split"] == "per row"]
    header = ["metric", "unit"] + [f"{r['part']} {r['engine']}" for r in stats]
    table = [header]
    for m in STATS_COLUMNS:
        table.append([m, units.get(m, "")] + [_fmt(r[m]) for r in stats])
    table.append(["PnL split", ""] + [""] * len(stats))
    labels = {"spread_capture": "spread capture", "rebates_fees": "rebates/fees", "inventory": "inventory MTM"}
    for split in ("per row", "per fill"):
        some = [r for r in rows if r["split"] == split]
        if not some:
            continue
        for m in DECOMPOSITION:
            cells = [next((_fmt(r[m]) for r in some if (r["part"], r["engine"]) == (s["part"], s["engine"])), "-")
                     for s in stats]
            table.append([f"  {labels[m]} ({split})", units.get(m, "")] + cells)
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths)))
                     for r in table)


def _time_axis(details) -> tuple[int, list[str]]:
    t0 = min(int(d.ts[0]) for d in details.parts.values())
    return t0, list(details.parts)


def _lane_title(exp, results, lane: int, swept: Sequence[str]) -> str:
    row = results.row(lane, named=True)
    ps = ", ".join(f"{p}={float(row[p]):.4g}" for p in swept)
    rank = row.get("rank")
    return f"lane {lane}" + (f" (rank {rank})" if rank is not None else "") + f": {ps}"


def lane_figures(out_dir: Path, details, exp, results, *, quote: str, qty_unit: str, price_unit: str,
                 prefix: str = "") -> dict[str, list[Path]]:
    """``lane_<id>.png`` (curves) per lane, then ``<prefix>markouts_<part>.png`` and
    ``<prefix>decomposition.png`` over all of them; written under ``out_dir``."""
    from . import report_figures as rf

    swept = list(exp.sweep.names)
    t0, parts = _time_axis(details)
    curves = []
    for i, lane in enumerate(details.lanes):
        panels = []
        for part in parts:
            d = details.parts[part]
            panels.append({"name": part, "minutes": (d.ts - t0) / 6e10, "mid": d.mid,
                           "fast_equity": d.fast_equity[i], "fast_position": d.fast_position[i],
                           "exact_equity": None if d.exact_equity is None else d.exact_equity[i],
                           "exact_position": None if d.exact_position is None else d.exact_position[i]})
        pnl = "; ".join(f"{p} PnL fast {_fmt(details.parts[p].fast_metrics['PnL'][i])}"
                        + ("" if details.parts[p].exact_metrics is None
                           else f" / exact {_fmt(details.parts[p].exact_metrics['PnL'][i])}") + f" {quote}"
                        for p in parts)
        title = f"{exp.name}, {_lane_title(exp, results, int(lane), swept)}\n{pnl}" + (
            f"  (exact engine: queue {details.queue})" if details.queue else "")
        path = out_dir / f"lane_{int(lane)}.png"
        curves.append(rf.lane_curves(path, parts=panels, quote=quote, qty_unit=qty_unit, price_unit=price_unit,
                                     title=title))
    out = {"curves": curves, "markouts": []}
    for part in parts:
        d = details.parts[part]
        if d.markouts is None:
            continue
        panels = [{"title": f"lane {int(lane)}, {part} part", "rows": d.markouts[i]}
                  for i, lane in enumerate(details.lanes)]
        path = out_dir / f"{prefix}markouts_{part}.png"
        out["markouts"].append(rf.markouts(path, panels, horizons_ns=details.horizons_ns,
                                           title=f"{exp.name}: markouts of the exact engine's fills, {part} part",
                                           reference=d.reference))
    bars = []
    for i, lane in enumerate(details.lanes[:CHART_LANES]):
        for part in parts:
            d = details.parts[part]
            bars.append({"group": f"lane {int(lane)}", "label": f"{part}\nfast\nper row", **d.fast_decomposition[i]})
            if d.exact_decomposition is not None:
                bars.append({"group": f"lane {int(lane)}", "label": f"{part}\nexact\nper row",
                             **d.exact_row_decomposition[i]})
                bars.append({"group": f"lane {int(lane)}", "label": f"{part}\nexact\nper fill",
                             **d.exact_decomposition[i]})
    out["decomposition"] = [rf.decomposition(out_dir / f"{prefix}decomposition.png", bars, quote=quote,
                                             title=f"{exp.name}: where the PnL comes from, "
                                                   + ", ".join(f"lane {int(x)}" for x in details.lanes[:CHART_LANES]))]
    return out


def _axis_label(exp, name: str) -> str:
    """``name (unit)`` from the policy's parameter declaration; the unit is cut at its first
    alternative ("ticks | bps of mid if relative=1" reads "ticks" when the experiment uses ticks)."""
    spec = exp.policy.params.get(name)
    unit = str(getattr(spec, "unit", "") or "")
    if "|" in unit:
        ticks, _, rel = unit.partition("|")
        unit = rel.strip().replace(" if relative=1", "") if exp.strategy.params.get("relative") else ticks.strip()
    return f"{name} ({unit})" if unit else name


def _landscape_figures(out_dir: Path, exp, results, top: np.ndarray, metric_label: str) -> dict[str, Any]:
    from . import landscape as ls
    from . import report_figures as rf

    metric, maximize = exp.objective.metric, exp.objective.maximize
    sign = 1.0 if maximize else -1.0
    y_train = ls.score(results, f"train_{metric}", maximize)
    has_test = f"test_{metric}" in results.columns
    test_raw = np.asarray(results[f"test_{metric}"].to_numpy(), np.float64) if has_test else None
    logs = ls.log_axes(exp.sweep)
    label = {name: _axis_label(exp, name) for name in exp.sweep.names}
    axes = [ls.make_axis(name, results[name].to_numpy(), log=name in logs) for name in exp.sweep.names]
    ranked = ls.rank_axes(axes, y_train)
    out: dict[str, Any] = {"axes": ls.summary(ranked), "files": {}}
    if not ranked or not np.isfinite(y_train).any():
        return out
    anchor = int(top[0]) if len(top) else int(np.nanargmax(y_train))
    if len(ranked) >= 2:
        ax_x, ax_y = ranked[0][0], ranked[1][0]
        others = [a for a in axes if a.name not in (ax_x.name, ax_y.name)]
        hm = ls.heatmap(ax_x, ax_y, others, y_train, anchor)
        markers = []
        in_slice = set(int(v) for v in hm["lane"].ravel() if v >= 0)
        for k, lane in enumerate(top):
            if k == 0 or int(lane) in in_slice:
                markers.append((int(ax_x.level[lane]), int(ax_y.level[lane]), str(k + 1), k == 0))
        panels = [{"value": sign * hm["value"], "markers": markers,
                   "title": f"train {metric}"}]
        if has_test:
            test = np.where(hm["lane"] >= 0, test_raw[np.maximum(hm["lane"], 0)], np.nan)
            panels.append({"value": test, "markers": markers, "title": f"test {metric} of the same lanes"})
        fixed = ", ".join(f"{o.name}={o.labels[o.level[anchor]]:.4g}" for o in others if not o.binned)
        free = ", ".join(o.name for o in others if o.binned)
        note = ("each cell: the best feasible train lane at those two values (test: that same lane)"
                + (f", with {fixed} (the chosen lane's)" if fixed else "")
                + (f"; {free} free" if free else "") + ". Grey: no feasible lane, or the metric is undefined (no "
                "fills). Gold outline: the chosen lane; black: the next top lanes in this slice (numbers: their "
                "place in the top list)")
        path = rf.heatmaps(out_dir / "heatmap.png", x_name=label[ax_x.name], y_name=label[ax_y.name],
                           x_labels=ax_x.labels,
                           y_labels=ax_y.labels, panels=panels, metric_label=metric_label,
                           x_binned=ax_x.binned, y_binned=ax_y.binned,
                           title=f"{exp.name}: {metric} over {ax_x.name} x {ax_y.name} (the two axes that "
                                 "explain the most)", note=note)
        out["files"]["heatmap"] = path
    panels = []
    for a, imp in ranked:
        prof = ls.profile(a, y_train)
        panel = {"name": a.name, "axis_label": label[a.name], "labels": a.labels, "log": a.log, "binned": a.binned,
                 "importance": imp,
                 "train_best": sign * prof["best"], "train_median": sign * prof["median"]}
        if has_test:
            y_test = np.where(np.isfinite(y_train), test_raw, np.nan)
            panel["test_of_best"] = np.where(prof["best_lane"] >= 0, test_raw[np.maximum(prof["best_lane"], 0)],
                                             np.nan)
            panel["test_median"] = np.array([np.nanmedian(y_test[a.level == k]) if np.any(
                (a.level == k) & np.isfinite(y_test)) else np.nan for k in range(len(a.labels))])
        panels.append(panel)
    out["files"]["sensitivity"] = rf.sensitivity(out_dir / "sensitivity.png", panels, metric_label=metric_label,
                                                 title=f"{exp.name}: {metric} against each swept axis (feasible "
                                                       "lanes)")
    return out


def _chosen_moments(exp, details) -> tuple[float, float] | None:
    """Skewness and kurtosis of the chosen lane's train equity changes per resample period (its
    fast record, sampled every resample window)."""
    from .stats import moments

    if details is None or "train" not in details.parts:
        return None
    every = max(1, int(round(exp.metrics.resample_s * 1e9 / exp.interval_ns)))
    equity = details.parts["train"].fast_equity[0]
    changes = np.diff(equity[every - 1::every])
    return moments(changes) if changes.size >= 3 else None


def _selection_section(work: Path, exp, results, manifest, details, metric_label: str) -> dict[str, Any]:
    """The overfitting statistics, the fold table and the fold figure; ``html`` is the section."""
    from . import report_figures as rf
    from . import selection

    esc = html.escape
    summary = selection.overfitting(results, exp, manifest, moments=_chosen_moments(exp, details))
    parts = [f"<p class='note'>Lanes are ranked on <b>{esc(selection.describe(exp))}</b> (feasible lanes: the "
             "constraints hold on the whole train part).</p>"]
    rows = []
    p = summary.get("pbo")
    if p is not None:
        if p.get("pbo") is None:
            rows.append(["PBO (CSCV)", "n/a", esc(p.get("why", ""))])
        else:
            rows.append(["PBO (CSCV)", _fmt(p["pbo"], 3),
                         f"{p['blocks']} blocks, {p['combinations']} splits, {p['trials']:,} distinct lanes, on "
                         f"{esc(p['metric'])}; out-of-sample loss of the in-sample winner in "
                         f"{100 * p['oos_loss']:.0f} % of splits; OOS/IS slope {_fmt(p['degradation'], 3)}"])
    else:
        rows.append(["PBO (CSCV)", "n/a", "needs time blocks: add split.walk_forward or split.k_fold"])
    d = summary.get("dsr")
    if d is not None:
        rows.append([f"deflated SR, lane {d['lane']}", _fmt(d["dsr"], 3),
                     f"P[true SR &gt; 0] given {d['trials']:,.0f} trials: SR {_fmt(d['sr_annual'])} vs "
                     f"{_fmt(d['sr0_annual'])} expected from the best of that many unskilled trials (annualised; "
                     f"SR - SR0 = {_fmt(d['sr_annual'] - d['sr0_annual'])}); "
                     f"{d['n_obs']:,} train samples, skewness {_fmt(d['skew'], 3)}, kurtosis {_fmt(d['kurtosis'], 3)}"
                     + ("" if d.get("moments_measured") else " (assumed normal)") + f"; PSR(0) without deflation "
                     f"{_fmt(d['psr0'], 3)}"])
    parts.append(_table(["statistic", "value", "how"], rows, wrap=(2,)))
    parts.append("<p class='note'>PBO: the probability that the lane best in-sample ranks at or below the median "
                 "out of sample, over every split of the blocks into halves (Bailey, Borwein, López de Prado and "
                 "Zhu 2016); 0.5 is a coin flip, near 0 a persistent edge. Deflated SR: the probability that the "
                 "chosen lane's true Sharpe ratio is positive once the number of trials, their spread of Sharpe "
                 "ratios and the returns' skewness and kurtosis are accounted for (Bailey and López de Prado "
                 "2014); the best of pure noise scores about 0.5, a real edge near 1 (0.95 is the usual bar). "
                 "Trials = feasible lanes with distinct outcomes.</p>")
    folds = exp.split.folds
    if folds is not None:
        table = selection.fold_table(results, exp)
        parts.append(_table(["fold", "train blocks", "test block", "train winner", f"its train {exp.objective.metric}",
                             f"its test {exp.objective.metric}", "its test PnL", "its rank on test"],
                            [[str(r["fold"]), ", ".join(map(str, r["train_blocks"])), str(r["test_block"]),
                              "-" if r.get("lane") is None else str(r["lane"])]
                             + (["-"] * 4 if r.get("lane") is None else
                                [_fmt(r["train_objective"]), _fmt(r["test_objective"]), _fmt(r["test_PnL"]),
                                 f"{r['test_rank']:,} / {r['lanes']:,}"]) for r in table], left=0))
        res = results.sort("lane")
        m = selection.block_columns(res, exp.objective.metric, folds.blocks)
        top = [int(x) for x in (details.lanes if details is not None else [])][:6]
        labels = [f"lane {x} (rank {res['rank'][x]})" for x in top]
        path = rf.folds(work / "folds.png", blocks=m[:, top].T if top else np.zeros((0, folds.blocks)),
                        labels=labels, test_blocks=sorted({te for _, te in folds.plan()}), metric_label=metric_label,
                        logits=None if p is None or p.get("pbo") is None else np.asarray(p["logits"]),
                        pbo=None if p is None else p.get("pbo"),
                        title=f"{exp.name}: {folds.scheme.replace('_', '-')} blocks of the train part")
        parts.append(_img(path.name, "folds"))
    summary["html"] = "\n".join(parts)
    return summary


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1400px;
color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h3{font-size:15px;margin:14px 0 2px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc;padding-bottom:4px}
.sub{color:#555;font-size:13px} .warn{background:#fff4e5;border-left:4px solid #e08a00;padding:8px 12px;margin:6px 0;
font-size:14px} .ok{background:#eef7ee;border-left:4px solid #2ca02c;padding:8px 12px;font-size:14px}
table{border-collapse:collapse;font-size:12px;margin:8px 0} th,td{border:1px solid #ddd;padding:3px 6px;
text-align:right;white-space:nowrap} th{background:#f3f3f3;vertical-align:bottom} td.l,th.l{text-align:left} td.w,th.w{white-space:normal;text-align:left;min-width:420px}
tr.exact td{color:#8b1a1a} tr.sep td{border-top:2px solid #999} .unit{font-weight:normal;color:#666;font-size:10px}
img{max-width:100%;height:auto;border:1px solid #eee;margin:6px 0} .note{font-size:12px;color:#555;max-width:1100px}
code{background:#f4f4f4;padding:1px 4px}
"""


def _img(name: str, alt: str) -> str:
    return f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1,
           row_class: Sequence[str] | None = None, wrap: Sequence[int] = ()) -> str:
    """An HTML table; the first ``left`` columns left-aligned, columns in ``wrap`` wrapped text."""
    def cls(k: int) -> str:
        names = (["l"] if k < left else []) + (["w"] if k in wrap else [])
        return f' class="{" ".join(names)}"' if names else ""

    th = "".join(f"<th{cls(k)}>{h}</th>" for k, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        rc = f' class="{row_class[r]}"' if row_class and row_class[r] else ""
        body.append(f"<tr{rc}>" + "".join(f"<td{cls(k)}>{c}</td>" for k, c in enumerate(row)) + "</tr>")
    return (f"<div style='overflow-x:auto'><table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody>"
            "</table></div>")


def build_report(run_dir: str | os.PathLike, *, top: int = 5, exact: bool = True, processes: int = 1,
                 log: Callable[[str], None] = print) -> Path:
    """Write ``RUN_DIR/report/index.html`` (and its PNGs); returns the page's path."""
    import polars as pl

    from . import diagnostics
    from .lane_detail import analyse_lanes
    from .report import pnl_units
    from .run import prepare

    started = time.perf_counter()
    run_dir = Path(run_dir)
    exp, results, manifest, verify = load_run(run_dir)
    if top < 1:
        raise InputError(f"--top must be >= 1, got {top}", key="top")
    metric = exp.objective.metric
    findings = diagnostics.findings(results, exp, manifest)
    lanes = top_distinct(results, top)
    final_dir = run_dir / "report"
    work = run_dir / f"report.{os.getpid()}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        inst = manifest.get("data", {}).get("instrument", {})
        quote, qty_unit = pnl_units(inst)  # inverse contracts: PnL in the coin, qty in contracts
        units = stats_units(quote, exp.metrics.book_size, exp.metrics.trading_days_per_year, qty_unit)
        metric_label = f"{metric} ({units[metric]})" if metric in units else metric
        land = _landscape_figures(work, exp, results, lanes, metric_label)
        details = None
        figs: dict[str, list[Path]] = {}
        if len(lanes):
            prep = prepare(exp, log=log)
            details = analyse_lanes(prep, lanes, exact=exact, processes=processes, log=log)
            figs = lane_figures(work, details, exp, results, quote=quote, qty_unit=qty_unit,
                                price_unit=instrument_units(inst)["price"])
        overfit = _selection_section(work, exp, results, manifest, details, metric_label)
        for name in ("verify_scatter.png", "verify_fill_models.png"):
            several = len((verify or {}).get("fill_models") or {}) > 1  # else a plot of an earlier verify
            if verify is not None and (run_dir / "plots" / name).exists() and (several or "fill" not in name):
                shutil.copy(run_dir / "plots" / name, work / name)
        page = _page(exp, results, manifest, verify, findings, lanes, land, overfit, details, figs, units, quote,
                     work, time.perf_counter() - started)
        (work / "index.html").write_text(page, encoding="utf-8")
        if final_dir.exists():
            old = run_dir / f"report.{os.getpid()}.old"
            os.replace(final_dir, old)
            os.replace(work, final_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, final_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"report: {final_dir / 'index.html'} [{time.perf_counter() - started:.1f} s]")
    return final_dir / "index.html"


def _page(exp, results, manifest, verify, findings, lanes, land, overfit, details, figs, units, quote, work: Path,
          seconds: float) -> str:
    import polars as pl

    from .selection import describe

    metric = exp.objective.metric
    esc = html.escape
    n = results.height
    feasible = int(results["feasible"].sum())
    data = manifest.get("data", {})
    fr = manifest.get("frames", {})
    interval_s = exp.interval_ns / 1e9
    rows_total = int(fr.get("rows") or 0)
    train_rows = int(fr.get("train_rows") or rows_total)
    src = data.get("quoted") or "synthetic"
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(exp.name)} report</title>"
           f"<style>{_CSS}</style></head><body>",
           f"<h1>{esc(exp.name)}</h1><div class='sub'>{esc(exp.description)}</div>",
           f"<div class='sub'>{n:,} lanes of policy <code>{esc(exp.strategy.policy)}</code> on {esc(str(src))} "
           f"({esc(data.get('instrument', {}).get('symbol', ''))}); {rows_total:,} decision rows of "
           f"{interval_s * 1e3:g} ms, train {train_rows * interval_s:,.0f} s, test "
           f"{(rows_total - train_rows) * interval_s:,.0f} s; fill model {esc(exp.fill_model)}; maker "
           f"{exp.fees.maker_bps:g} bps (negative = rebate). Ranked on {esc(describe(exp))} "
           f"({'larger' if exp.objective.maximize else 'smaller'} is better); {feasible:,} lanes meet the "
           f"constraints. PnL in {esc(quote)}.</div>"]

    out.append("<h2 id='warnings'>Warnings</h2>")
    if findings:
        out += [f"<div class='warn'><b>{esc(f.code)}</b>: {esc(f.message)}</div>" for f in findings]
    else:
        out.append("<div class='ok'>no warnings</div>")

    out.append("<h2 id='overfitting'>Selection and overfitting</h2>")
    out.append(overfit.get("html", ""))

    out.append("<h2 id='landscape'>The objective over the swept axes</h2>")
    if land["axes"]:
        out.append(_table(["axis", "levels", "binned", "share of the rank variance explained"],
                          [[esc(a["axis"]), str(a["levels"]), "yes" if a["binned"] else "no",
                            f"{100 * a['importance']:.1f} %"] for a in land["axes"]]))
    for key, alt in (("heatmap", "objective heatmaps"), ("sensitivity", "objective against each axis")):
        if key in land["files"]:
            out.append(_img(land["files"][key].name, alt))
    if not land["files"]:
        out.append("<p class='note'>fewer than one swept axis with two values: nothing to map</p>")

    out.append("<h2 id='stats'>Top lanes: stats</h2>")
    if details is None:
        out.append("<p class='note'>no feasible lane</p>")
    else:
        swept = list(exp.sweep.names) + [t.target for t in exp.sweep.derived]
        ptable = [[str(int(l)), _fmt(results.row(int(l), named=True)["rank"])]
                  + [_fmt(results.row(int(l), named=True)[p]) for p in swept] for l in lanes]
        out.append(_table(["lane", "rank"] + [esc(p) for p in swept], ptable, left=0))
        srows = stats_rows(details, exp)
        names = {"spread_capture": "spread capture", "rebates_fees": "rebates / fees", "inventory": "inventory MTM"}
        for title, cols, split in (("hftbacktest's stats", HBT_COLUMNS, False),
                                   ("PnL and where it comes from", PNL_COLUMNS, True)):
            ids = ["lane", "part", "engine"] + (["split"] if split else [])
            header = ids + [f"{esc(names.get(m, m))}<br><span class='unit'>{esc(units.get(m, ''))}</span>"
                            for m in cols]
            body, classes, prev = [], [], None
            for r in srows:
                if not split and r["split"] != "per row":
                    continue
                body.append([str(r[k]) for k in ids] + [_fmt(r[m], 4) for m in cols])
                classes.append(("exact" if r["engine"] == "exact" else "")
                               + (" sep" if prev not in (None, r["lane"]) else ""))
                prev = r["lane"]
            out.append(f"<h3>{title}</h3>" + _table(header, body, left=len(ids), row_class=classes))
        out.append("<p class='note'>PnL = spread capture + rebates/fees + inventory MTM, in "
                   f"{esc(quote)}; each part is backtested from flat. <b>per row</b> (both engines, from their "
                   "per-decision records; the fast kernel keeps no per-fill prices): inventory MTM = sum over "
                   "decision rows of position x change of the mid to the next row, rebates/fees = -Fees, "
                   "spread capture = the rest, i.e. each fill's edge against the mid at the first decision "
                   "after it (up to one interval later, so it already holds that interval's adverse "
                   "selection). <b>per fill</b> (exact engine): each fill's edge against the exchange mid "
                   "just before it; inventory marked from each fill to the part's last decision. A strategy "
                   "that only earns the rebate shows spread capture + inventory &le; 0.</p>")
        for p in figs.get("decomposition", []):
            out.append(_img(p.name, "PnL decomposition"))
        out.append("<h2 id='curves'>Top lanes: equity, inventory and mid</h2>")
        for p in figs.get("curves", []):
            out.append(_img(p.name, f"curves {p.stem}"))
        out.append("<h2 id='markouts'>Fill markouts</h2>")
        if figs.get("markouts"):
            out.append("<p class='note'>markout(h) = side x (mid(t + h) - fill price) / fill price, in bps; h = 0 "
                       "is the spread captured against the exchange mid just before the fill. Falling lines are "
                       "adverse selection. Error bars: 95 % confidence of the mean. Dotted grey: the passive side "
                       "of every trade printed at the touch in the same span (the market's markout).</p>")
            for p in figs["markouts"]:
                out.append(_img(p.name, f"markouts {p.stem}"))
            rows_m = []
            for part, d in details.parts.items():
                for i, lane in enumerate(details.lanes):
                    for r in d.markouts[i]:
                        if r["side"] == "all":
                            rows_m.append([str(int(lane)), part, f"{r['horizon_ns'] / 1e9:g} s", _fmt(r["spread_bps"]),
                                           _fmt(r["markout_bps"]), _fmt(r["mid_move_bps"]), str(r["fills"])])
            out.append(_table(["lane", "part", "horizon", "spread at fill (bps)", "markout (bps)", "mid move (bps)",
                               "fills"], rows_m, left=3))
        else:
            out.append("<p class='note'>not replayed on the exact engine (report --no-exact): no fills</p>")

    out.append("<h2 id='verify'>Fast kernel vs exact engine (mmsweep verify)</h2>")
    if verify is None:
        out.append(f"<p class='note'>not verified: run <code>mmsweep verify RUN_DIR</code>, then the report "
                   "again</p>")
    else:
        a = verify["agreement"]
        sp = a["spearman"]
        ov = a["top_k_overlap"]
        rows_v = [[f"Spearman {esc(metric)} (objective)", _fmt(sp["objective"]["rho"]), str(sp["objective"]["n"])],
                  ["Spearman PnL", _fmt(sp["PnL"]["rho"]), str(sp["PnL"]["n"])],
                  ["Spearman NumberOfTrades", _fmt(sp["NumberOfTrades"]["rho"]), str(sp["NumberOfTrades"]["n"])],
                  [f"top-{ov['k']} overlap", _fmt(ov["overlap"]), str(ov["k"])],
                  ["median PnL (exact - fast) / |fast|", _fmt(a["relative_difference"]["PnL"]["median"]),
                   str(a["relative_difference"]["PnL"]["n"])]]
        out.append(_table(["measure", "value", "lanes"], rows_v))
        cfg = verify["engine"]["config"]
        vl = verify["lanes"]
        extra = vl.get("frontier_lanes", vl["top"]) - vl["top"]
        out.append(f"<p class='note'>{vl['verified']} lanes ({vl['top']} top"
                   + (f" + {extra} more of the frontier" if extra else "")
                   + f" + {vl['sample']} random) on the {esc(verify['part'])} part; exact engine queue "
                   f"{esc(str(cfg.get('queue')))}.</p>")
        from .verify import agreement_tables

        for t in agreement_tables(verify):
            out.append(f"<h3>{esc(t['title'])}</h3>")
            out.append(_table([esc(h) for h in t["header"]], [[esc(c) for c in r] for r in t["rows"]]))
            if t["note"]:
                out.append(f"<p class='note'>{esc(t['note'])}</p>")
        if (work / "verify_scatter.png").exists():
            out.append(_img("verify_scatter.png", "verify scatter"))
        if (work / "verify_fill_models.png").exists():
            out.append(_img("verify_fill_models.png", "fast vs exact per fill model"))
    out.append(f"<p class='sub'>written by mmsweep report in {seconds:.1f} s</p></body></html>")
    return "\n".join(out)


def show_lane(run_dir: str | os.PathLike, lane: int, *, out_dir: str | os.PathLike | None = None, exact: bool = True,
              log: Callable[[str], None] = print) -> tuple[str, list[Path]]:
    """One lane's stats table (text) and its plots (curves, markouts, decomposition) in
    ``out_dir`` (default ``RUN_DIR/lanes``)."""
    from .lane_detail import analyse_lanes
    from .report import pnl_units
    from .run import prepare

    run_dir = Path(run_dir)
    exp, results, manifest, _ = load_run(run_dir)
    if not 0 <= lane < results.height:
        raise InputError(f"lane {lane} is not in this run (lanes 0..{results.height - 1})", key="lane")
    prep = prepare(exp, log=log)
    details = analyse_lanes(prep, [lane], exact=exact, log=log)
    quote, qty_unit = pnl_units(manifest.get("data", {}).get("instrument", {}))
    units = stats_units(quote, exp.metrics.book_size, exp.metrics.trading_days_per_year, qty_unit)
    out = Path(out_dir) if out_dir is not None else run_dir / "lanes"
    out.mkdir(parents=True, exist_ok=True)
    figs = lane_figures(out, details, exp, results, quote=quote, qty_unit=qty_unit, prefix=f"lane_{lane}_",
                        price_unit=instrument_units(manifest.get("data", {}).get("instrument", {}))["price"])
    swept = list(exp.sweep.names) + [t.target for t in exp.sweep.derived]
    text = [_lane_title(exp, results, lane, swept), "", format_stats(stats_rows(details, exp), units)]
    for part, d in details.parts.items():
        if d.markouts is None:
            continue
        text += ["", f"markouts of the exact fills, {part} part (bps of the fill price; spread at h=0):"]
        rows = [["side", "fills", "spread"] + [f"{h / 1e9:g} s" for h in details.horizons_ns]]
        for side in ("buy", "sell", "all"):
            rs = [r for r in d.markouts[0] if r["side"] == side]
            rows.append([side, str(rs[0]["fills"]), _fmt(rs[0]["spread_bps"])] + [_fmt(r["markout_bps"]) for r in rs])
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        text += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    files = [p for group in figs.values() for p in group]
    return "\n".join(text), files
