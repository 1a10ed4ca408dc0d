"""The objective as a function of the swept parameters: which axes matter, two-axis maps and
one-axis profiles of a run's results (the data behind the report's heatmaps and sensitivity
plots; pure numpy on the results table).

Every swept parameter becomes a discrete *axis*: a grid axis (at most ``MAX_LEVELS`` distinct
values) keeps its values; a sampled one (random / Sobol, or more values) is cut into
``BINS`` quantile bins labelled by their median.  Only feasible lanes with a finite objective
count; an objective to minimise is negated internally so that "best" is always the maximum.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

MAX_LEVELS = 24
BINS = 12


@dataclasses.dataclass(frozen=True)
class Axis:
    """A swept parameter made discrete.

    Attributes:
        name: the parameter.
        level: [lanes] index of each lane's level.
        labels: [levels] the value of each level (bin median for binned axes).
        binned: True for quantile bins of a sampled axis.
        log: swept on a log scale (plot it so).
    """

    name: str
    level: np.ndarray
    labels: np.ndarray
    binned: bool
    log: bool


def make_axis(name: str, values: np.ndarray, *, log: bool = False, max_levels: int = MAX_LEVELS,
              bins: int = BINS) -> Axis:
    """``log``: the axis was swept on a log scale (logspace, or log-uniform samples)."""
    values = np.asarray(values, np.float64)
    unique = np.unique(values)
    if unique.size <= max_levels:
        return Axis(name, np.searchsorted(unique, values), unique, False, log)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    level = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    labels = np.array([np.median(values[level == k]) if np.any(level == k) else np.nan for k in range(len(edges) - 1)])
    return Axis(name, level, labels, True, log)


def score(results, column: str, maximize: bool) -> np.ndarray:
    """[lanes] the objective as "larger is better", NaN where infeasible or not finite."""
    y = np.asarray(results[column].to_numpy(), np.float64) * (1.0 if maximize else -1.0)
    ok = np.isfinite(y) & np.asarray(results["feasible"].to_numpy(), bool)
    return np.where(ok, y, np.nan)


def importance(axis: Axis, y: np.ndarray) -> float:
    """Share of the variance of the objective's *ranks* explained by the axis's levels (eta^2,
    0..1); ranks so that a few extreme lanes do not decide which axes matter."""
    ok = np.isfinite(y)
    if ok.sum() < 3:
        return 0.0
    r = np.argsort(np.argsort(y[ok])).astype(np.float64)
    lv = axis.level[ok]
    total = float(np.sum((r - r.mean()) ** 2))
    if total == 0:
        return 0.0
    counts = np.bincount(lv, minlength=len(axis.labels))
    sums = np.bincount(lv, weights=r, minlength=len(axis.labels))
    has = counts > 0
    between = float(np.sum(counts[has] * (sums[has] / counts[has] - r.mean()) ** 2))
    return between / total


def rank_axes(axes: Sequence[Axis], y: np.ndarray) -> list[tuple[Axis, float]]:
    """Axes with more than one level, most important first."""
    scored = [(a, importance(a, y)) for a in axes if len(a.labels) > 1]
    return sorted(scored, key=lambda t: -t[1])


def heatmap(ax_x: Axis, ax_y: Axis, others: Sequence[Axis], y: np.ndarray, anchor: int) -> dict[str, np.ndarray]:
    """A two-axis map of the objective through the lane ``anchor`` (row index in the results).

    Cell ``(i, j)`` (``ax_y`` level i, ``ax_x`` level j) holds the best ``y`` among lanes at those
    levels whose other *grid* axes sit at the anchor's levels (binned axes are left free), and
    ``lane`` the row index of that lane (-1: none).  Returns ``value`` and ``lane`` [ny, nx].
    """
    mask = np.isfinite(y)
    for o in others:
        if not o.binned:
            mask &= o.level == o.level[anchor]
    ny, nx = len(ax_y.labels), len(ax_x.labels)
    value = np.full((ny, nx), np.nan)
    lane = np.full((ny, nx), -1, np.int64)
    idx = np.flatnonzero(mask)
    for r in idx[np.argsort(y[idx], kind="stable")]:  # worst to best: the best lane of a cell is written last
        i, j = ax_y.level[r], ax_x.level[r]
        value[i, j], lane[i, j] = y[r], r
    return {"value": value, "lane": lane}


def profile(axis: Axis, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per level of ``axis``: the best ``y`` over every other axis (``best``), the row index of
    that lane (``best_lane``, -1: none), the median (``median``) and the lane count."""
    n = len(axis.labels)
    best = np.full(n, np.nan)
    best_lane = np.full(n, -1, np.int64)
    median = np.full(n, np.nan)
    count = np.zeros(n, np.int64)
    for k in range(n):
        idx = np.flatnonzero((axis.level == k) & np.isfinite(y))
        count[k] = idx.size
        if idx.size:
            b = idx[np.argmax(y[idx])]
            best[k], best_lane[k], median[k] = y[b], b, float(np.median(y[idx]))
    return {"best": best, "best_lane": best_lane, "median": median, "count": count}


def summary(axes_ranked: Sequence[tuple[Axis, float]]) -> list[dict[str, Any]]:
    return [{"axis": a.name, "levels": len(a.labels), "binned": a.binned, "importance": float(imp)}
            for a, imp in axes_ranked]


def log_axes(sweep) -> set[str]:
    """Names of the swept parameters of a :class:`~mmsweep.sweep.config.Sweep` laid out on a
    log scale (logspace axes, log-uniform samples)."""
    out = set()
    for block in sweep.blocks:
        if hasattr(block, "ranges"):
            out |= {r.name for r in block.ranges if r.log}
        elif block.kind == "logspace":
            out.add(block.name)
    return out
