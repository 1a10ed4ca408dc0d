"""Selection that survives out of sample: time folds of the train part, ranking across folds, a
neighbourhood-smoothed (robust) objective, fold warnings and the overfitting statistics of a
sweep (:mod:`mmsweep.sweep.stats`).

Folds (experiment ``split``)::

    split:
      train_fraction: 0.7                  # the hold-out test part stays as it is
      walk_forward: {folds: 4, anchored: false}
      # or  k_fold: {folds: 4}

The train part is cut into ``B`` equal, contiguous *blocks* (``B = folds + 1`` for walk-forward,
``folds`` for k-fold), each backtested from flat like a part (results columns ``block<b>_<metric>``).
Block length is a whole number of metric resample windows (rows left over at the end of the
train part belong to no block).  Fold ``k``:

* walk-forward: trains on block ``k - 1`` (``anchored``: blocks ``0 .. k - 1``), tests on block
  ``k``, for ``k = 1 .. folds``;
* k-fold: tests on block ``k`` and trains on every other block, for ``k = 0 .. folds - 1``.

A fold's train objective is the mean of its train blocks' objective; its test objective is the
test block's.  The sweep's lanes have no fitted state, so a fold's train blocks matter only for
the fold warnings (does the fold's train winner hold up on its test block?).

Ranking (experiment ``objective``)::

    objective: {metric: SR, rank_on: train, quantile: 0.25, neighbourhood: 0}

* ``rank_on: train`` ranks on the whole train part's objective (the default); ``mean`` on the
  mean of the fold test objectives; ``quantile`` on their ``quantile`` (0.25: a bad fold counts
  more than a good one);
* ``neighbourhood: r`` (grid steps) replaces each lane's score by the mean score of the lanes
  within ``r`` steps of it on every grid axis (``list``/``linspace``/``logspace``; sampled axes
  are not smoothed), infeasible neighbours left out.  A lone peak among bad neighbours then ranks
  below a plateau.  The lane itself must be feasible.

The score is written to results.parquet (``score``, larger = better) whenever it is not simply
the train objective.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .errors import InputError

SCHEMES = ("walk_forward", "k_fold")
RANK_ON = ("train", "mean", "quantile")


@dataclasses.dataclass(frozen=True)
class Folds:
    """Time folds of the train part (see the module docstring)."""

    scheme: str  # walk_forward | k_fold
    folds: int
    anchored: bool = False
    align_rows: int = 1  # block lengths are multiples of this (the metrics' resample rows); derived

    @property
    def blocks(self) -> int:
        return self.folds + 1 if self.scheme == "walk_forward" else self.folds

    def plan(self) -> list[tuple[tuple[int, ...], int]]:
        """``[(train blocks, test block)]`` per fold."""
        if self.scheme == "walk_forward":
            return [(tuple(range(0, k)) if self.anchored else (k - 1,), k) for k in range(1, self.folds + 1)]
        return [(tuple(b for b in range(self.folds) if b != k), k) for k in range(self.folds)]

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"folds": self.folds}
        if self.scheme == "walk_forward":
            body["anchored"] = self.anchored
        return {self.scheme: body}


def parse_folds(sec) -> Folds | None:
    """The ``walk_forward`` / ``k_fold`` key of a ``split`` section (a config ``_Section``)."""
    given = [s for s in SCHEMES if sec.has(s)]
    if not given:
        return None
    if len(given) > 1:
        raise sec.ctx.fail(sec.k(given[1]), "give either walk_forward or k_fold, not both")
    scheme = given[0]
    from .config import _Section

    allowed = ("folds", "anchored") if scheme == "walk_forward" else ("folds",)
    inner = _Section(sec.ctx, sec.raw(scheme), sec.k(scheme), allowed, f"{scheme.replace('_', '-')} folds")
    low = 1 if scheme == "walk_forward" else 2
    folds = inner.integer("folds", what="number of folds", low=low)
    if folds > 64:
        raise sec.ctx.fail(inner.k("folds"), f"at most 64 folds, got {folds}")
    anchored = inner.boolean("anchored", False, what="train windows all start at the first block") \
        if scheme == "walk_forward" else False
    return Folds(scheme, folds, anchored)


def block_bounds(lo: int, hi: int, folds: Folds) -> list[tuple[int, int]]:
    """Rows ``[lo, hi)`` of each block of the train part ``[lo, hi)``: equal lengths, a whole
    number of resample windows each (so every block shares one compiled kernel)."""
    n = folds.blocks
    every = max(1, int(folds.align_rows))
    length = ((hi - lo) // n) // every * every
    if length < 2 * every:
        raise InputError(f"the train part ({hi - lo} rows) is too short for {n} blocks of at least two "
                         f"{every}-row resample windows; use fewer folds or more data", key="split")
    return [(lo + b * length, lo + (b + 1) * length) for b in range(n)]


def block_columns(results, metric: str, n_blocks: int) -> np.ndarray:
    """``[blocks, lanes]`` of ``block<b>_<metric>``.  A block in which a lane never traded (flat
    equity: SR and the other ratios are 0/0) scores 0; NaN is left where a metric is undefined
    for another reason."""
    out = []
    for b in range(n_blocks):
        v = np.asarray(results[f"block{b}_{metric}"].to_numpy(), np.float64)
        trades = f"block{b}_NumberOfTrades"
        if trades in results.columns:
            idle = np.asarray(results[trades].to_numpy(), np.float64) == 0
            v = np.where(np.isnan(v) & idle, 0.0, v)
        out.append(v)
    return np.stack(out)


def fold_objectives(results, exp, metric: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)``, each ``[folds, lanes]``: mean of the train blocks' ``metric`` and the test
    block's (the objective's metric by default; raw values, not sign-adjusted)."""
    folds = exp.split.folds
    m = block_columns(results, metric or exp.objective.metric, folds.blocks)
    plan = folds.plan()
    with np.errstate(invalid="ignore"):
        train = np.stack([m[list(tr)].mean(axis=0) for tr, _ in plan])
    test = np.stack([m[te] for _, te in plan])
    return train, test


def base_score(results, exp) -> np.ndarray:
    """``[lanes]``: the ranking statistic before smoothing (larger = better; NaN = not rankable)."""
    o = exp.objective
    sign = 1.0 if o.maximize else -1.0
    feasible = np.asarray(results["feasible"].to_numpy(), bool)
    rank_on = getattr(o, "rank_on", "train")
    if rank_on == "train":
        y = sign * np.asarray(results[f"train_{o.metric}"].to_numpy(), np.float64)
    else:
        _, test = fold_objectives(results, exp)
        test = sign * test
        ok = np.all(np.isfinite(test), axis=0)
        with np.errstate(invalid="ignore"):
            y = test.mean(axis=0) if rank_on == "mean" else np.quantile(test, o.quantile, axis=0)
        y = np.where(ok, y, np.nan)
    return np.where(feasible & np.isfinite(y), y, np.nan)


def grid_shape(exp) -> tuple[list[int], list[bool]]:
    """Block sizes of the sweep (lanes are their C-order product) and which blocks are grid axes."""
    sizes = [b.size for b in exp.sweep.blocks]
    is_grid = [not hasattr(b, "ranges") for b in exp.sweep.blocks]
    return sizes, is_grid


def smooth(values: np.ndarray, exp, radius: int) -> np.ndarray:
    """Mean of ``values`` over each lane's neighbourhood (``radius`` steps on every grid axis,
    none on sampled axes), NaN neighbours left out; NaN where the lane itself is NaN."""
    sizes, is_grid = grid_shape(exp)
    if radius <= 0 or not sizes:
        return values.copy()
    from scipy.ndimage import uniform_filter

    v = values.reshape(sizes)
    ok = np.isfinite(v)
    window = [2 * radius + 1 if g else 1 for g in is_grid]
    # uniform_filter averages over the window; the ratio of the filtered values and the filtered
    # mask is the mean over the finite neighbours only.
    total = uniform_filter(np.where(ok, v, 0.0), size=window, mode="constant", cval=0.0)
    count = uniform_filter(ok.astype(np.float64), size=window, mode="constant", cval=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ok & (count > 0), total / count, np.nan)
    return out.reshape(-1)


def ranking_score(results, exp) -> np.ndarray:
    """``[lanes]`` (results sorted by lane): what ``rank`` orders by, larger = better, NaN = unranked."""
    y = base_score(results, exp)
    radius = int(getattr(exp.objective, "neighbourhood", 0) or 0)
    return smooth(y, exp, radius) if radius else y


def is_plain(exp) -> bool:
    """True when the ranking is the train objective itself (no ``score`` column is written)."""
    o = exp.objective
    return getattr(o, "rank_on", "train") == "train" and not getattr(o, "neighbourhood", 0)


def describe(exp) -> str:
    """What the lanes are ranked on, in words (``train SR``, ``mean of 3 walk-forward fold test SR``...)."""
    o = exp.objective
    rank_on = getattr(o, "rank_on", "train")
    if rank_on == "train":
        text = f"train {o.metric}"
    else:
        f = exp.split.folds
        how = "mean" if rank_on == "mean" else f"{o.quantile:g}-quantile"
        text = f"{how} of {f.folds} {f.scheme.replace('_', '-')} fold test {o.metric}"
    if getattr(o, "neighbourhood", 0):
        text += f", averaged over \u00b1{o.neighbourhood} grid step(s)"
    return text


# --------------------------------------------------------------------------------------------
# Fold report and warnings
# --------------------------------------------------------------------------------------------


def fold_table(results, exp) -> list[dict[str, Any]]:
    """Per fold: its blocks, the lane best on its train blocks (feasible lanes), that lane's test
    objective and PnL and its rank among all lanes on the test block."""
    folds = exp.split.folds
    if folds is None:
        return []
    sign = 1.0 if exp.objective.maximize else -1.0
    feasible = np.asarray(results["feasible"].to_numpy(), bool)
    train, test = fold_objectives(results, exp)
    _, test_pnl = fold_objectives(results, exp, "PnL")
    lanes = np.asarray(results["lane"].to_numpy())
    rows = []
    for k, (tr, te) in enumerate(folds.plan()):
        s_train = np.where(feasible & np.isfinite(train[k]), sign * train[k], -np.inf)
        if not np.isfinite(s_train).any():
            rows.append({"fold": k + 1, "train_blocks": list(tr), "test_block": te, "lane": None})
            continue
        best = int(np.argmax(s_train))
        s_test = np.where(np.isfinite(test[k]), sign * test[k], -np.inf)
        rows.append({"fold": k + 1, "train_blocks": list(tr), "test_block": te, "lane": int(lanes[best]),
                     "train_objective": float(train[k, best]), "test_objective": float(test[k, best]),
                     "test_PnL": float(test_pnl[k, best]),
                     "test_rank": int(1 + np.sum(s_test > s_test[best])), "lanes": int(len(lanes))})
    return rows


def fold_findings(results, exp) -> list:
    """The ``fold_losers`` warning: the folds' train winners lose on their test blocks."""
    from .diagnostics import Finding

    rows = [r for r in fold_table(results, exp) if r.get("lane") is not None]
    losers = [r for r in rows if r["test_PnL"] < 0]
    if rows and 2 * len(losers) >= len(rows):
        return [Finding("fold_losers", f"in {len(losers)} of {len(rows)} {exp.split.folds.scheme.replace('_', '-')} "
                        "folds the lane best on the fold's train blocks loses money on its test block",
                        {"losers": len(losers), "folds": len(rows)})]
    return []


# --------------------------------------------------------------------------------------------
# Overfitting statistics
# --------------------------------------------------------------------------------------------


def sharpe_per_observation(sr_annual: np.ndarray, exp) -> np.ndarray:
    """Annualised SR (hftbacktest's: ``sqrt(samples per day x trading days)``) back to per resample sample."""
    c = 86_400.0 / exp.metrics.resample_s * exp.metrics.trading_days_per_year
    return np.asarray(sr_annual, np.float64) / math.sqrt(c)


def overfitting(results, exp, manifest: dict | None = None, *, moments: tuple[float, float] | None = None
                ) -> dict[str, Any]:
    """PBO (CSCV over the blocks, when there are an even number >= 2 of them) and the deflated SR
    of the chosen (rank 1) lane on the train part.

    Trials are the feasible lanes with *distinct* train outcomes (copies of one strategy are one
    trial).  DSR uses ``N`` = that count (an upper bound on independent trials: correlated lanes
    make the true ``N`` smaller and the DSR conservative), the cross-sectional variance of their
    train SR, ``T`` = train resample samples, and the chosen lane's return skewness / kurtosis
    (``moments``; normal returns when not given).
    """
    import polars as pl

    from . import stats
    from .diagnostics import distinct_outcomes

    out: dict[str, Any] = {}
    res = results.sort("lane")
    _, ids = distinct_outcomes(res)
    feasible = np.asarray(res["feasible"].to_numpy(), bool)
    first = np.zeros(len(ids), bool)
    first[np.unique(np.where(feasible, ids, -1), return_index=True)[1]] = True
    trials = feasible & first
    sign = 1.0 if exp.objective.maximize else -1.0
    folds = exp.split.folds
    if folds is not None:
        m = sign * block_columns(res, exp.objective.metric, folds.blocks)
        keep = trials & np.all(np.isfinite(m), axis=0)
        if folds.blocks % 2 == 0 and keep.sum() >= 2:
            p = stats.pbo_cscv(m[:, keep])
            out["pbo"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in p.items()}
            out["pbo"]["metric"] = exp.objective.metric
        else:
            out["pbo"] = {"pbo": None, "why": "needs an even number of blocks" if folds.blocks % 2
                          else "fewer than two lanes with every block defined"}
    best = res.filter(pl.col("feasible")).sort("rank").head(1)
    if best.height:
        srs = sharpe_per_observation(res["train_SR"].to_numpy(), exp)
        ok = trials & np.isfinite(srs)
        lane = int(best["lane"][0])
        train_rows = int(((manifest or {}).get("frames") or {}).get("train_rows") or 0)
        every = max(1, int(round(exp.metrics.resample_s * 1e9 / exp.interval_ns)))
        n_obs = max(2, train_rows // every - 1) if train_rows else 0
        skew, kurt = moments if moments is not None else (0.0, 3.0)
        if n_obs and np.isfinite(srs[lane]) and ok.sum() >= 2:
            d = stats.deflated_sharpe(float(srs[lane]), srs[ok], n_obs, skew=skew, kurtosis=kurt)
            c = math.sqrt(86_400.0 / exp.metrics.resample_s * exp.metrics.trading_days_per_year)
            d.update(lane=lane, sr_annual=float(srs[lane] * c), sr0_annual=float(d["sr0"] * c),
                     moments_measured=moments is not None)
            out["dsr"] = d
    return out


def format_overfitting(summary: dict[str, Any]) -> str:
    """Two lines for the console: PBO and DSR."""
    lines = []
    p = summary.get("pbo")
    if p is not None:
        if p.get("pbo") is None:
            lines.append(f"PBO: n/a ({p.get('why')})")
        else:
            lines.append(f"PBO (CSCV, {p['blocks']} blocks, {p['combinations']} splits, {p['trials']} distinct lanes, "
                         f"{p['metric']}): {p['pbo']:.2f}  (0.5 = the train winner is a coin flip out of sample)")
    d = summary.get("dsr")
    if d is not None:
        lines.append(f"deflated SR of lane {d['lane']}: DSR {d['dsr']:.3f} (P[true SR > 0] after {d['trials']:.0f} "
                     f"trials); SR {d['sr_annual']:.3g} vs {d['sr0_annual']:.3g} expected from the best of "
                     f"{d['trials']:.0f} unskilled trials (annualised)"
                     + ("" if d.get("moments_measured") else "; returns assumed normal"))
    return "\n".join(lines)
