"""How far a fast ranking can be trusted: the statistics ``mmsweep verify`` reports.

Everything here is plain numpy on per-lane arrays (no run folder, no engine), so that each
measure can be checked on rankings with known answers.  Conventions:

* a *side* (fast kernel or exact engine) ranks lanes by its own objective values, with the
  experiment's constraints applied to its own metrics (``ok``); :func:`ranks` gives 1 = best,
  0 = not ranked (infeasible or NaN on that side); ties go to the earlier lane;
* the *fast #1* is the lane the fast side ranks first; "lane ``a`` beats lane ``b`` on the
  exact side" means ``a`` is exact-feasible and either ``b`` is not, or ``a``'s exact objective
  is strictly better;
* the verified lanes are an *enumerated* set ``E`` (the fast frontier: every lane of it is
  replayed) plus a uniform random *sample* ``S`` of the other lanes ``C`` (``|C| = N - |E|``).
  Counts over the whole sweep are estimated by stratification: exact over ``E``, the sample's
  share times ``|C|`` over ``C``.

Intervals: Clopper-Pearson (exact binomial) for shares, a percentile bootstrap with a fixed seed
for Spearman's rho.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

#: confidence level of every interval reported
LEVEL = 0.95
#: bootstrap resamples of the random sample's Spearman rho
BOOTSTRAP = 2000


#: values agreeing to this many significant digits are ties (lanes that behave alike give equal
#: metrics on one engine and metrics differing in the last digits on the other; ranking the
#: rounding noise would lower rho and shuffle the tops for nothing)
DIGITS = 10


def rounded(values: np.ndarray, digits: int = DIGITS) -> np.ndarray:
    """``values`` to ``digits`` significant digits (NaN and infinities kept)."""
    v = np.asarray(values, np.float64)
    out = v.copy()
    ok = np.isfinite(v) & (v != 0)
    scale = 10.0 ** (np.floor(np.log10(np.abs(v[ok]))) - (digits - 1))
    out[ok] = np.round(v[ok] / scale) * scale
    return out


def ranks(values: np.ndarray, ok: np.ndarray, maximize: bool) -> np.ndarray:
    """1 = best among ``ok`` lanes (ties, to :data:`DIGITS` significant digits: the earlier lane
    first), 0 where not ``ok``."""
    values = rounded(values)
    ok = np.asarray(ok, bool) & np.isfinite(values)
    key = np.where(ok, -values if maximize else values, np.inf)
    order = np.argsort(key, kind="stable")
    out = np.zeros(len(values), np.int64)
    out[order] = np.arange(1, len(values) + 1)
    return np.where(ok, out, 0)


def spearman(fast: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    """Spearman's rho of the lanes finite on both sides (``n``; ``dropped`` the others); values
    equal to :data:`DIGITS` significant digits are ties."""
    from scipy.stats import spearmanr

    fast, exact = rounded(fast), rounded(exact)
    ok = np.isfinite(fast) & np.isfinite(exact)
    n, dropped = int(ok.sum()), int((~ok).sum())
    rho = pvalue = float("nan")
    if n >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant input: rho is NaN
            res = spearmanr(fast[ok], exact[ok])
        rho, pvalue = float(res.statistic), float(res.pvalue)
    return {"rho": rho, "pvalue": pvalue, "n": n, "dropped": dropped}


def _rank_rows(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank)."""
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def bootstrap_spearman(fast: np.ndarray, exact: np.ndarray, *, resamples: int = BOOTSTRAP, seed: int = 0,
                       level: float = LEVEL) -> dict[str, Any]:
    """Spearman's rho of ``fast`` vs ``exact`` with a percentile bootstrap interval.

    Lanes NaN on either side are dropped.  Resamples in which either side is constant (rho
    undefined) are left out and counted (``undefined``).  With fewer than 3 lanes the interval
    is NaN."""
    fast, exact = rounded(fast), rounded(exact)
    ok = np.isfinite(fast) & np.isfinite(exact)
    f, e = fast[ok], exact[ok]
    n = len(f)
    point = spearman(f, e)["rho"]
    out = {"rho": point, "lo": float("nan"), "hi": float("nan"), "n": n, "dropped": int((~ok).sum()),
           "resamples": int(resamples), "undefined": 0, "seed": int(seed), "level": float(level)}
    if n < 3 or resamples < 1:
        return out
    rng = np.random.default_rng(seed)
    rhos = np.empty(resamples)
    block = max(1, min(resamples, 2_000_000 // max(n, 1)))  # bounded memory
    for lo in range(0, resamples, block):
        hi = min(resamples, lo + block)
        idx = rng.integers(0, n, size=(hi - lo, n))
        rf, re = _rank_rows(f[idx]), _rank_rows(e[idx])
        rf -= rf.mean(axis=1, keepdims=True)
        re -= re.mean(axis=1, keepdims=True)
        den = np.sqrt((rf * rf).sum(axis=1) * (re * re).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            rhos[lo:hi] = np.where(den > 0, (rf * re).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)
    good = rhos[np.isfinite(rhos)]
    out["undefined"] = int(resamples - len(good))
    if len(good):
        alpha = 1.0 - level
        out["lo"], out["hi"] = (float(np.clip(q, -1.0, 1.0)) for q in np.quantile(good, [alpha / 2, 1 - alpha / 2]))
    return out


def proportion_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Clopper-Pearson interval of a binomial share ``k / n`` (NaN when ``n`` is 0)."""
    from scipy.stats import beta

    if n <= 0:
        return float("nan"), float("nan")
    alpha = 1.0 - level
    lo = 0.0 if k <= 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def beats(exact_obj: np.ndarray, exact_ok: np.ndarray, ref: int, maximize: bool) -> np.ndarray:
    """Which lanes beat lane index ``ref`` on the exact side (``ref`` itself never does)."""
    v = np.asarray(exact_obj, np.float64)
    ok = np.asarray(exact_ok, bool) & np.isfinite(v)
    if not ok[ref]:
        out = ok.copy()
    else:
        out = ok & ((v > v[ref]) if maximize else (v < v[ref]))
    out[ref] = False
    return out


def overlap(fast_rank: np.ndarray, exact_rank: np.ndarray, lanes: np.ndarray, k: int) -> dict[str, Any]:
    """Share of the fast side's ``k`` best lanes that are among the exact side's ``k`` best
    (``k`` capped at the lanes the fast side ranks)."""
    fast_rank, exact_rank, lanes = np.asarray(fast_rank), np.asarray(exact_rank), np.asarray(lanes)
    k = int(min(k, int((fast_rank > 0).sum())))
    fast_top = lanes[(fast_rank >= 1) & (fast_rank <= k)]
    exact_top = lanes[(exact_rank >= 1) & (exact_rank <= k)]
    common = int(len(np.intersect1d(fast_top, exact_top)))
    return {"k": k, "common": common, "overlap": common / k if k else float("nan"),
            "fast_top": sorted(int(x) for x in fast_top), "exact_top": sorted(int(x) for x in exact_top)}


def fast_best(lanes: np.ndarray, fast_rank: np.ndarray, exact_obj: np.ndarray, exact_ok: np.ndarray,
              maximize: bool) -> dict[str, Any]:
    """The fast #1 among ``lanes`` against the exact side over the same lanes: its exact rank
    (1 = the exact side's best; null when the exact side finds it infeasible), the best lane
    found by the exact side, and the regret: how much better the best lane found is, in the
    objective's units (>= 0; 0 when the fast #1 is the exact best)."""
    lanes = np.asarray(lanes)
    fast_rank = np.asarray(fast_rank)
    exact_obj = np.asarray(exact_obj, np.float64)
    exact_ok = np.asarray(exact_ok, bool) & np.isfinite(exact_obj)
    exact_rank = ranks(exact_obj, exact_ok, maximize)
    out: dict[str, Any] = {"lane": None, "exact_objective": float("nan"), "exact_rank": None,
                           "exact_ranked": int(exact_ok.sum()), "best_lane": None, "best_exact_objective": float("nan"),
                           "best_fast_rank": None, "regret": float("nan")}
    if not (fast_rank == 1).any():
        return out
    i = int(np.flatnonzero(fast_rank == 1)[0])
    out["lane"] = int(lanes[i])
    out["exact_objective"] = float(exact_obj[i])
    out["exact_rank"] = int(exact_rank[i]) if exact_rank[i] else None
    if exact_ok.any():
        b = int(np.flatnonzero(exact_rank == 1)[0])
        out["best_lane"] = int(lanes[b])
        out["best_exact_objective"] = float(exact_obj[b])
        out["best_fast_rank"] = int(fast_rank[b]) if fast_rank[b] else None
        if exact_ok[i]:
            gap = exact_obj[b] - exact_obj[i]
            out["regret"] = float(gap if maximize else -gap)
    return out


def sample_estimates(*, sample: np.ndarray, enumerated: np.ndarray, n_total: int, fast: np.ndarray,
                     exact: np.ndarray, exact_ok: np.ndarray, best: int, maximize: bool, seed: int = 0,
                     resamples: int = BOOTSTRAP, level: float = LEVEL) -> dict[str, Any]:
    """What the random sample says about the whole sweep.

    Args:
        sample, enumerated: [n] bool over the verified lanes: the random sample ``S`` and the
            enumerated set ``E`` (the frontier).
        n_total: lanes in the sweep, ``N``.
        fast, exact: [n] the objective on each side; ``exact_ok`` the exact side's feasibility.
        best: index (into the verified lanes) of the fast #1.
        maximize: the objective's direction.

    Returns ``spearman`` (rho over ``S`` with a bootstrap interval: an estimate of the rank
    agreement over the lanes outside the frontier) and ``beat_fast_best``: the share of ``S``
    whose exact objective beats the fast #1's (Clopper-Pearson interval), and from it the
    number of lanes of the whole sweep that do (exact count over ``E`` + share x ``|C|``) and
    the fast #1's exact rank in the whole sweep (1 + that number)."""
    sample, enumerated = np.asarray(sample, bool), np.asarray(enumerated, bool)
    boot = bootstrap_spearman(np.asarray(fast)[sample], np.asarray(exact)[sample], resamples=resamples, seed=seed,
                              level=level)
    won = beats(exact, exact_ok, best, maximize)
    k, n = int(won[sample].sum()), int(sample.sum())
    lo, hi = proportion_interval(k, n, level)
    in_e = int(won[enumerated].sum())
    rest = max(int(n_total) - int(enumerated.sum()), 0)
    share = k / n if n else float("nan")
    count = {"estimate": in_e + share * rest, "lo": in_e + lo * rest, "hi": in_e + hi * rest}
    best_ok = bool(np.asarray(exact_ok, bool)[best] and np.isfinite(np.asarray(exact, np.float64)[best]))
    return {
        "spearman": boot,
        "beat_fast_best": {
            "sample_beating": k, "sample": n, "share": share, "lo": lo, "hi": hi, "level": level,
            "frontier_beating": in_e, "outside_frontier": rest, "sweep_beating": count,
            "fast_best_exact_feasible": best_ok,
            "sweep_exact_rank": ({key: 1.0 + v for key, v in count.items()} if best_ok else None),
        },
    }


def relative_difference(fast: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    """``(exact - fast) / |fast|`` over lanes finite on both sides with fast != 0: mean, median,
    median of its absolute value; and the median of ``exact - fast`` itself (the metric's unit)."""
    fast, exact = np.asarray(fast, np.float64), np.asarray(exact, np.float64)
    both = np.isfinite(fast) & np.isfinite(exact)
    ok = both & (fast != 0)
    rel = (exact[ok] - fast[ok]) / np.abs(fast[ok])
    n = int(ok.sum())
    stat = (lambda f, x: float(f(x)) if len(x) else float("nan"))  # noqa: E731
    return {"mean": stat(np.mean, rel), "median": stat(np.median, rel), "median_abs": stat(np.median, np.abs(rel)),
            "n": n, "dropped": int((~ok).sum()),
            "median_gap": stat(np.median, exact[both] - fast[both]), "gap_n": int(both.sum())}


def pnl_gap(fast: np.ndarray, exact: np.ndarray, lanes: np.ndarray) -> dict[str, Any]:
    """:func:`relative_difference` of PnL over ``lanes`` (a mask), with ``exact_above``: the
    share of them (finite on both sides) where the exact PnL is above the fast one (to
    :data:`DIGITS` significant digits), and ``exact_below`` where below."""
    lanes = np.asarray(lanes, bool)
    f, e = np.asarray(fast, np.float64)[lanes], np.asarray(exact, np.float64)[lanes]
    out = relative_difference(f, e)
    both = np.isfinite(f) & np.isfinite(e)
    n = int(both.sum())
    f, e = rounded(f), rounded(e)  # equal to DIGITS significant digits: neither above nor below
    out.update(lanes=int(lanes.sum()), exact_above=float((e[both] > f[both]).mean()) if n else float("nan"),
               exact_below=float((e[both] < f[both]).mean()) if n else float("nan"))
    return out


def whole_sweep(*, fast: dict[str, np.ndarray], exact: dict[str, np.ndarray], fast_ok: np.ndarray,
                exact_ok: np.ndarray, metric: str, maximize: bool, ks: tuple[int, ...] = (10, 20)) -> dict[str, Any]:
    """Agreement over every lane of a sweep (an exhaustive replay): Spearman of the objective
    and of PnL (every lane finite on both sides), top-k overlaps for each ``k`` in ``ks``, the
    PnL gap over the lanes that meet the constraints on both sides (the lanes a selection
    chooses from; lanes that hardly trade would otherwise make the median 0) with the share of
    them where the exact PnL is above the fast one, and where the fast #1 lands on the exact
    side."""
    n = len(np.asarray(fast[metric]))
    lanes = np.arange(n)
    fr = ranks(fast[metric], fast_ok, maximize)
    er = ranks(exact[metric], exact_ok, maximize)
    best = fast_best(lanes, fr, exact[metric], exact_ok, maximize)
    out: dict[str, Any] = {
        "lanes": n,
        "spearman": {"objective": {"metric": metric, **spearman(fast[metric], exact[metric])},
                     "PnL": spearman(fast["PnL"], exact["PnL"])},
        "top_overlap": {str(k): overlap(fr, er, lanes, k) for k in ks},
        "pnl_gap": pnl_gap(fast["PnL"], exact["PnL"], np.asarray(fast_ok, bool) & np.asarray(exact_ok, bool)),
        "fast_best": best,
    }
    if best["lane"] is not None:
        won = beats(exact[metric], exact_ok, int(best["lane"]), maximize)
        out["fast_best"]["sweep_beating"] = int(won.sum())
        out["fast_best"]["share_beating"] = float(won.sum() / max(n - 1, 1))
    return out


def check_estimates(estimates: dict[str, Any], *, sweep_beating: int | None, outside_rho: float) -> dict[str, Any]:
    """Do the sample's estimates hold what an exhaustive replay found?  ``sweep_beating``: the
    lanes of the whole sweep whose exact objective beats the fast #1's; ``outside_rho``: the
    exhaustive Spearman of the objective over the lanes outside the frontier (what the sample's
    bootstrap interval estimates)."""
    sp = estimates["spearman"]
    bf = estimates["beat_fast_best"]["sweep_beating"]

    def inside(x, lo, hi):
        if x is None or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (x, lo, hi)):
            return None
        return bool(lo - 1e-12 <= x <= hi + 1e-12)

    return {"spearman_outside_frontier": outside_rho, "spearman_interval": [sp["lo"], sp["hi"]],
            "spearman_covered": inside(outside_rho, sp["lo"], sp["hi"]),
            "sweep_beating": sweep_beating, "sweep_beating_interval": [bf["lo"], bf["hi"]],
            "sweep_beating_estimate": bf["estimate"],
            "sweep_beating_covered": inside(sweep_beating, bf["lo"], bf["hi"])}
