"""Overfitting statistics of a parameter sweep: the probability of backtest overfitting (PBO) by
combinatorially symmetric cross-validation, and the deflated Sharpe ratio.  Pure numpy / scipy.

References:

* D. H. Bailey, J. M. Borwein, M. López de Prado, Q. J. Zhu, "The probability of backtest
  overfitting", Journal of Computational Finance 20(4), 2016 (CSCV and PBO).
* D. H. Bailey, M. López de Prado, "The deflated Sharpe ratio: correcting for selection bias,
  backtest overfitting and non-normality", Journal of Portfolio Management 40(5), 2014.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

EULER_GAMMA = 0.5772156649015329
MAX_COMBINATIONS = 20_000


def pbo_cscv(performance: np.ndarray, *, max_combinations: int = MAX_COMBINATIONS, seed: int = 0) -> dict[str, Any]:
    """Probability of backtest overfitting by CSCV (Bailey, Borwein, López de Prado, Zhu 2016).

    ``performance`` is ``[S, N]``: the performance (larger = better) of each of ``N`` trials
    (lanes) on each of ``S`` disjoint, equally long time blocks, ``S`` even.  For every split
    ``c`` of the blocks into a set ``J`` of ``S/2`` in-sample blocks and its complement ``J'``
    (``C(S, S/2)`` of them; a seeded random subset of ``max_combinations`` when there are more):

    * ``R_n`` = mean performance of trial ``n`` over ``J``, ``R'_n`` over ``J'`` (the paper forms
      the performance of the concatenated sub-matrices; with one performance value per block the
      mean is that statistic for additive measures such as PnL, and a consistent one otherwise);
    * ``n* = argmax_n R_n`` (the in-sample choice);
    * ``w_c`` = relative rank of ``R'_{n*}`` among the ``R'``, ``rank / (N + 1)`` in (0, 1), rank 1
      the worst;  ``lambda_c = ln(w_c / (1 - w_c))``.

    ``PBO = P(lambda <= 0)``, the share of splits in which the in-sample winner is at or below
    the out-of-sample median.  Pure noise gives about 0.5; a real, persistent edge gives about 0.

    Returns ``pbo``, ``logits`` (the ``lambda_c``), ``combinations``, ``trials``, ``blocks``,
    ``oos_loss`` (share of splits where ``R'_{n*} < 0``) and ``degradation`` (least-squares slope
    of ``R'_{n*}`` on ``R_{n*}``).
    """
    m = np.asarray(performance, np.float64)
    if m.ndim != 2:
        raise ValueError("performance must be [blocks, trials]")
    s, n = m.shape
    if s < 2 or s % 2:
        raise ValueError(f"CSCV needs an even number of blocks >= 2, got {s}")
    if n < 2:
        raise ValueError("CSCV needs at least 2 trials")
    if not np.all(np.isfinite(m)):
        raise ValueError("performance must be finite (drop trials with undefined blocks)")
    combos = list(itertools.combinations(range(s), s // 2))
    if len(combos) > max_combinations:
        pick = np.random.default_rng(seed).choice(len(combos), size=max_combinations, replace=False)
        combos = [combos[i] for i in np.sort(pick)]
    logits, is_best, oos_best = [], [], []
    for j in combos:
        inside = np.zeros(s, bool)
        inside[list(j)] = True
        r_in = m[inside].mean(axis=0)
        r_out = m[~inside].mean(axis=0)
        best = int(np.argmax(r_in))
        # rank 1 = worst; ties share their average rank
        below = np.sum(r_out < r_out[best])
        equal = np.sum(r_out == r_out[best])
        rank = below + (equal + 1) / 2.0
        w = rank / (n + 1.0)
        logits.append(math.log(w / (1.0 - w)))
        is_best.append(r_in[best])
        oos_best.append(r_out[best])
    logits = np.asarray(logits)
    x, y = np.asarray(is_best), np.asarray(oos_best)
    slope = float(np.polyfit(x, y, 1)[0]) if len(x) > 2 and np.ptp(x) > 0 else float("nan")
    return {"pbo": float(np.mean(logits <= 0)), "logits": logits, "combinations": len(combos), "trials": n,
            "blocks": s, "oos_loss": float(np.mean(y < 0)), "degradation": slope}


def expected_max_sharpe(sr_variance: float, n_trials: float) -> float:
    """``SR0``: the expected maximum Sharpe ratio of ``n_trials`` unskilled trials whose Sharpe
    ratios have variance ``sr_variance`` (Bailey & López de Prado 2014, from the false strategy
    theorem)::

        SR0 = sqrt(V[SR]) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))

    with ``g`` the Euler-Mascheroni constant and ``Z^-1`` the standard normal quantile.  Same
    units as the Sharpe ratios whose variance is given.
    """
    from scipy.special import ndtri  # the normal quantile (scipy.stats alone takes ~2 s to import)

    n = float(n_trials)
    if n < 2 or not sr_variance > 0:
        return 0.0
    return math.sqrt(sr_variance) * ((1 - EULER_GAMMA) * ndtri(1 - 1 / n) + EULER_GAMMA * ndtri(1 - 1 / (n * math.e)))


def probabilistic_sharpe(sr: float, sr_benchmark: float, n_obs: int, skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """``PSR(SR0) = Z((SR - SR0) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2))``:
    the probability that the true Sharpe ratio exceeds ``sr_benchmark``, given ``sr`` estimated
    on ``n_obs`` returns of that skewness and (non-excess) kurtosis.  Sharpe ratios *per
    observation* (not annualised)."""
    from scipy.special import ndtr  # the normal CDF

    if n_obs < 2 or not math.isfinite(sr):
        return float("nan")
    denom = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not denom > 0:
        return float("nan")
    return float(ndtr((sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(denom)))


def deflated_sharpe(sr: float, trial_srs: np.ndarray, n_obs: int, *, n_trials: float | None = None,
                    skew: float = 0.0, kurtosis: float = 3.0) -> dict[str, float]:
    """The deflated Sharpe ratio of a chosen strategy (Bailey & López de Prado 2014).

    ``DSR = PSR(SR0)``: :func:`probabilistic_sharpe` against ``SR0`` =
    :func:`expected_max_sharpe` of the trials, i.e. the probability that the chosen strategy's
    true Sharpe ratio is positive once the selection among ``N`` trials is accounted for.

    Args:
        sr: the chosen strategy's Sharpe ratio per observation.
        trial_srs: Sharpe ratios per observation of all trials (their variance estimates V[SR]).
        n_obs: returns behind ``sr``.
        n_trials: independent trials ``N`` (default: ``len(trial_srs)``).
        skew, kurtosis: of the chosen strategy's returns (normal: 0 and 3).

    Returns ``dsr`` (probability), ``sr0`` (the expected maximum under no skill), ``excess``
    (``sr - sr0``, the "deflated" Sharpe ratio: about 0 for the best of pure noise), ``psr0``
    (PSR against 0, no deflation) and the inputs used.  For the best of pure-noise trials ``sr``
    sits near ``sr0``, so ``excess`` is near 0 and ``dsr`` near 0.5 (far below a 0.95 bar); a
    real edge gives ``dsr`` near 1.
    """
    srs = np.asarray(trial_srs, np.float64)
    srs = srs[np.isfinite(srs)]
    n = float(n_trials if n_trials is not None else len(srs))
    var = float(np.var(srs, ddof=1)) if len(srs) > 1 else 0.0
    sr0 = expected_max_sharpe(var, n)
    return {"dsr": probabilistic_sharpe(sr, sr0, n_obs, skew, kurtosis), "sr0": sr0, "excess": sr - sr0,
            "psr0": probabilistic_sharpe(sr, 0.0, n_obs, skew, kurtosis), "sr": sr, "trials": n,
            "sr_variance": var, "n_obs": int(n_obs), "skew": skew, "kurtosis": kurtosis}


def moments(returns: np.ndarray) -> tuple[float, float]:
    """Skewness and (non-excess) kurtosis of a return series (population moments)."""
    x = np.asarray(returns, np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 3 or np.std(x) == 0:
        return 0.0, 3.0
    z = (x - x.mean()) / x.std()
    return float(np.mean(z ** 3)), float(np.mean(z ** 4))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties sharing the mean of their ranks (as in Spearman's rho)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]] if len(xs) else np.zeros(0, bool)
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(xs)]
    ranks = np.empty(len(xs), np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman_rho(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long samples (NaN when either is constant or
    fewer than 2 values); NaNs must be dropped by the caller."""
    if len(a) != len(b):
        raise ValueError(f"samples of {len(a)} and {len(b)} values")
    if len(a) < 2:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denom if denom > 0 else float("nan")
