"""Warnings about a finished sweep that a ranking alone hides.  ``mmsweep run`` prints them and
the report shows them at the top.  Each is a :class:`Finding` with a short code and a sentence.

* ``duplicates``: lanes with identical train outcomes (same PnL, fills, traded value, maximum
  position and objective), and how many distinct outcomes the sweep has; duplicates in the top
  table are one strategy counted several times.
* ``warmup``: a feature still zero-filled (warming up) over more than ``WARMUP_SHARE`` of the
  train part, e.g. a 5-minute window on 6 minutes of data.
* ``test_losers``: at least half of the top ``TOP_N`` train lanes lose money (PnL < 0) on the
  test part; also the rank correlation of train and test objective over feasible lanes.
* ``no_feasible``: the constraints remove every lane, with what each constraint alone removes.
* ``fold_losers``: with walk-forward / k-fold splits, in at least half of the folds the lane best
  on the fold's train blocks loses money on its test block.
* ``rebate_only``: the chosen lane's PnL is positive only thanks to maker rebates (PnL + Fees <=
  0, Fees being negative for a rebate).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

TOP_N = 10
WARMUP_SHARE = 0.05
#: train columns that identify an outcome (two lanes equal in all of them behaved identically)
OUTCOME_COLUMNS = ("PnL", "NumberOfTrades", "TradingValue", "MaxAbsPosition", "Fees")


@dataclasses.dataclass(frozen=True)
class Finding:
    code: str
    message: str
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)


def distinct_outcomes(results, part: str = "train") -> tuple[int, np.ndarray]:
    """``(number of distinct outcomes, [lanes] outcome id)`` over ``OUTCOME_COLUMNS`` of ``part``
    (NaN compares equal to NaN)."""
    cols = [np.asarray(results[f"{part}_{c}"].to_numpy(), np.float64) for c in OUTCOME_COLUMNS
            if f"{part}_{c}" in results.columns]
    if not cols:
        return results.height, np.arange(results.height)
    key = np.nan_to_num(np.stack(cols, axis=1), nan=np.inf)
    _, ids = np.unique(key, axis=0, return_inverse=True)
    ids = ids.reshape(-1)
    return int(ids.max()) + 1 if ids.size else 0, ids


def findings(results, exp, manifest: dict[str, Any] | None = None) -> list[Finding]:
    """Every warning that applies to a run (``results`` sorted or not; ``manifest`` for features)."""
    import polars as pl

    out: list[Finding] = []
    metric = exp.objective.metric
    results = results.sort(["rank", "lane"], nulls_last=True)
    n = results.height

    # Constraints that remove everything.
    feasible = int(results["feasible"].sum())
    if feasible == 0 and n:
        obj = np.asarray(results[f"train_{metric}"].to_numpy(), np.float64)
        parts = [f"{int((~np.isfinite(obj)).sum()):,} have no finite train {metric}"]
        c = exp.constraints
        if c.min_trades is not None:
            k = int((results["train_NumberOfTrades"] < c.min_trades).sum())
            parts.append(f"{k:,} have fewer than min_trades={c.min_trades} fills")
        if c.max_drawdown is not None:
            k = int((results["train_MaxDrawdown"] > c.max_drawdown).sum())
            parts.append(f"{k:,} exceed max_drawdown={c.max_drawdown:g}")
        out.append(Finding("no_feasible", f"the constraints remove every one of the {n:,} lanes: "
                           + "; ".join(parts) + ". Relax 'constraints' or widen the sweep.",
                           {"lanes": n}))

    # Identical outcomes.
    distinct, ids = distinct_outcomes(results)
    if distinct < n:
        top = results.filter(pl.col("feasible")).head(TOP_N)
        top_ids = ids[: top.height]
        dup_in_top = int(top.height - len(np.unique(top_ids)))
        msg = (f"{n:,} lanes give only {distinct:,} distinct train outcomes ({n - distinct:,} lanes repeat "
               "another lane's outcome exactly: on this data, some parameter values change no order)")
        if dup_in_top:
            msg += f"; the top {top.height} holds {dup_in_top} duplicate(s)"
        out.append(Finding("duplicates", msg, {"lanes": n, "distinct": distinct, "duplicates_in_top": dup_in_top}))

    # Features warming up over the train part.
    if manifest:
        frames = manifest.get("frames", {})
        train_rows = int(frames.get("train_rows") or frames.get("rows") or 0)
        warm = (frames.get("meta") or {}).get("warmup_rows") or {}
        interval_s = exp.interval_ns / 1e9
        for name, rows in sorted(warm.items()):
            if train_rows and rows > WARMUP_SHARE * train_rows:
                share = min(1.0, rows / train_rows)
                out.append(Finding("warmup", f"feature {name} is still warming up (zero-filled) over its first "
                                   f"{rows:,} rows ({rows * interval_s:,.0f} s), {100 * share:.0f} % of the "
                                   f"{train_rows * interval_s:,.0f} s train part: lanes that lean on it are "
                                   "ranked partly on a constant signal", {"feature": name, "rows": int(rows),
                                                                          "share": share}))

    # Train winners on the test part.
    if "test_PnL" in results.columns and feasible:
        top = results.filter(pl.col("feasible")).head(TOP_N)
        pnl = np.asarray(top["test_PnL"].to_numpy(), np.float64)
        losers = int(np.sum(pnl < 0))
        fe = results.filter(pl.col("feasible"))
        a = np.asarray(fe[f"train_{metric}"].to_numpy(), np.float64)
        b = np.asarray(fe[f"test_{metric}"].to_numpy(), np.float64)
        ok = np.isfinite(a) & np.isfinite(b)
        rho = float("nan")
        if ok.sum() >= 3:
            from .stats import spearman_rho

            rho = spearman_rho(a[ok], b[ok])
        if top.height and losers * 2 >= top.height:
            out.append(Finding("test_losers", f"{losers} of the top {top.height} train lanes lose money on the test "
                               f"part (Spearman of train vs test {metric} over feasible lanes: {rho:.2f}); the "
                               "train ranking does not carry over", {"losers": losers, "top": top.height,
                                                                     "spearman": rho}))

    # Walk-forward / k-fold: the folds' train winners on their test blocks.
    if exp.split.folds is not None and feasible:
        from .selection import fold_findings

        out += fold_findings(results, exp)

    # The chosen lane earns only the rebate.
    if feasible:
        best = results.filter(pl.col("feasible")).row(0, named=True)
        pnl, fees = best["train_PnL"], best["train_Fees"]
        if pnl > 0 and fees < 0 and pnl + fees <= 0:
            out.append(Finding("rebate_only", f"the chosen lane {best['lane']} earns {pnl:.4g} on train but "
                               f"{-fees:.4g} of it is maker rebate: before rebates it loses {pnl + fees:.4g}",
                               {"lane": int(best["lane"]), "pnl": pnl, "fees": fees}))
    return out


def format_findings(items: list[Finding]) -> str:
    return "\n".join(f"warning [{f.code}]: {f.message}" for f in items)
