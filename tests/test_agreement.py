"""The agreement statistics of `mmsweep verify` (sweep/agreement.py) on rankings with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from mmsweep.sweep import agreement as ag


def test_ranks_order_ties_and_infeasible_lanes() -> None:
    values = np.array([3.0, 5.0, 5.0, np.nan, 1.0, 4.0])
    ok = np.array([True, True, True, True, True, False])
    np.testing.assert_array_equal(ag.ranks(values, ok, maximize=True), [3, 1, 2, 0, 4, 0])
    np.testing.assert_array_equal(ag.ranks(values, ok, maximize=False), [2, 3, 4, 0, 1, 0])


def test_identical_rankings() -> None:
    n, k = 40, 10
    obj = np.linspace(-1.0, 2.0, n)
    ok = np.ones(n, bool)
    lanes = np.arange(100, 100 + n)
    fr = ag.ranks(obj, ok, True)
    ov = ag.overlap(fr, ag.ranks(obj, ok, True), lanes, k)
    assert (ov["k"], ov["common"], ov["overlap"]) == (k, k, 1.0)
    best = ag.fast_best(lanes, fr, obj, ok, True)
    assert best["lane"] == 100 + n - 1 and best["exact_rank"] == 1 and best["regret"] == 0.0
    assert best["best_lane"] == best["lane"] and best["best_fast_rank"] == 1
    boot = ag.bootstrap_spearman(obj, 3 * obj + 1, seed=3)
    assert boot["rho"] == pytest.approx(1.0) and boot["lo"] == pytest.approx(1.0) and boot["hi"] == pytest.approx(1.0)
    assert ag.beats(obj, ok, n - 1, True).sum() == 0


def test_reversed_ranking() -> None:
    n = 30
    fast = np.arange(n, dtype=float)
    exact = -fast
    ok = np.ones(n, bool)
    lanes = np.arange(n)
    fr = ag.ranks(fast, ok, True)
    best = ag.fast_best(lanes, fr, exact, ok, True)
    assert best["lane"] == n - 1 and best["exact_rank"] == n and best["exact_ranked"] == n
    assert best["best_lane"] == 0 and best["best_fast_rank"] == n
    assert best["regret"] == pytest.approx(n - 1)  # exact best 0 minus the fast #1's -(n - 1)
    assert ag.overlap(fr, ag.ranks(exact, ok, True), lanes, 10)["common"] == 0
    assert ag.spearman(fast, exact)["rho"] == pytest.approx(-1.0)
    whole = ag.whole_sweep(fast={"SR": fast, "PnL": fast}, exact={"SR": exact, "PnL": exact}, fast_ok=ok,
                           exact_ok=ok, metric="SR", maximize=True)
    assert whole["fast_best"]["exact_rank"] == n and whole["fast_best"]["sweep_beating"] == n - 1
    assert whole["top_overlap"]["10"]["common"] == 0 and whole["top_overlap"]["20"]["common"] == 10
    assert whole["spearman"]["objective"]["rho"] == pytest.approx(-1.0)
    # the PnL gap over the lanes feasible on both sides only
    part = np.arange(n) < 20
    whole = ag.whole_sweep(fast={"SR": fast, "PnL": fast}, exact={"SR": exact, "PnL": exact}, fast_ok=ok,
                           exact_ok=part, metric="SR", maximize=True)
    gap = whole["pnl_gap"]
    assert gap["lanes"] == 20 and gap["median_gap"] == pytest.approx(np.median(-2 * fast[:20]))
    assert gap["exact_below"] == pytest.approx(19 / 20) and gap["exact_above"] == 0.0  # lane 0: 0 vs 0


def test_minimised_objective_and_infeasible_fast_best() -> None:
    fast = np.array([1.0, 2.0, 3.0, 4.0])  # smaller is better: lane 0 is the fast #1
    exact = np.array([2.5, 2.0, 5.0, 1.0])
    ok = np.ones(4, bool)
    best = ag.fast_best(np.arange(4), ag.ranks(fast, ok, False), exact, ok, False)
    assert best["lane"] == 0 and best["exact_rank"] == 3 and best["best_lane"] == 3
    assert best["regret"] == pytest.approx(1.5)  # 2.5 - 1.0, positive although the objective is minimised
    # the fast #1 fails the constraints on the exact side: no exact rank, no regret, every feasible lane beats it
    exact_ok = np.array([False, True, True, False])
    best = ag.fast_best(np.arange(4), ag.ranks(fast, ok, False), exact, exact_ok, False)
    assert best["exact_rank"] is None and math.isnan(best["regret"]) and best["best_lane"] == 1
    np.testing.assert_array_equal(ag.beats(exact, exact_ok, 0, False), [False, True, True, False])


def test_clopper_pearson_known_values() -> None:
    lo, hi = ag.proportion_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** 0.1, rel=1e-9)  # 0.3085
    lo, hi = ag.proportion_interval(10, 10)
    assert lo == pytest.approx(0.025 ** 0.1, rel=1e-9) and hi == 1.0
    lo, hi = ag.proportion_interval(5, 10)
    assert lo == pytest.approx(0.187086, abs=1e-6) and hi == pytest.approx(0.812914, abs=1e-6)
    assert all(math.isnan(x) for x in ag.proportion_interval(0, 0))


def test_bootstrap_interval_is_seeded_and_narrows_with_more_lanes() -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=400)
    y = x + rng.normal(size=400)
    small = ag.bootstrap_spearman(x[:30], y[:30], seed=5)
    again = ag.bootstrap_spearman(x[:30], y[:30], seed=5)
    other = ag.bootstrap_spearman(x[:30], y[:30], seed=6)
    large = ag.bootstrap_spearman(x, y, seed=5)
    assert (small["lo"], small["hi"]) == (again["lo"], again["hi"])
    assert (small["lo"], small["hi"]) != (other["lo"], other["hi"])
    for b, n in ((small, 30), (large, 400)):
        assert b["n"] == n and b["lo"] <= b["rho"] <= b["hi"]
        assert b["rho"] == pytest.approx(spearmanr(x[:n], y[:n]).statistic)
    assert large["hi"] - large["lo"] < 0.5 * (small["hi"] - small["lo"])
    # with NaN dropped and too few lanes there is no interval
    tiny = ag.bootstrap_spearman(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0, 3.0]))
    assert tiny["n"] == 2 and tiny["dropped"] == 1 and math.isnan(tiny["lo"])


def test_sample_estimates_stratify_over_the_frontier() -> None:
    """A frontier of 10 lanes enumerated, the sample every other lane: the estimate is exact."""
    rng = np.random.default_rng(2)
    n = 100
    fast = rng.normal(size=n)
    exact = fast + rng.normal(scale=1.0, size=n)
    ok = np.ones(n, bool)
    frontier = np.argsort(-fast)[:10]
    enumerated = np.zeros(n, bool)
    enumerated[frontier] = True
    best = int(frontier[0])
    truth = int(ag.beats(exact, ok, best, True).sum())
    est = ag.sample_estimates(sample=~enumerated, enumerated=enumerated, n_total=n, fast=fast, exact=exact,
                              exact_ok=ok, best=best, maximize=True, seed=0)
    b = est["beat_fast_best"]
    assert b["sample"] == 90 and b["outside_frontier"] == 90
    assert b["frontier_beating"] + b["sample_beating"] == truth
    assert b["sweep_beating"]["estimate"] == pytest.approx(truth)
    assert b["sweep_beating"]["lo"] <= truth <= b["sweep_beating"]["hi"]
    assert b["sweep_exact_rank"]["estimate"] == pytest.approx(truth + 1)
    assert est["spearman"]["rho"] == pytest.approx(spearmanr(fast[~enumerated], exact[~enumerated]).statistic)
    # a sample of half the rest scales its share up to the whole rest
    half = ~enumerated & (np.arange(n) % 2 == 0)
    est = ag.sample_estimates(sample=half, enumerated=enumerated, n_total=n, fast=fast, exact=exact, exact_ok=ok,
                              best=best, maximize=True)
    b = est["beat_fast_best"]
    assert b["sweep_beating"]["estimate"] == pytest.approx(b["frontier_beating"] + b["share"] * 90)
    check = ag.check_estimates(est, sweep_beating=truth, outside_rho=0.5)
    assert check["sweep_beating_covered"] == (b["sweep_beating"]["lo"] <= truth <= b["sweep_beating"]["hi"])


def test_relative_difference_and_gap() -> None:
    fast = np.array([1.0, 2.0, 0.0, 4.0, np.nan])
    exact = np.array([2.0, 1.0, 1.0, 4.0, 3.0])
    rd = ag.relative_difference(fast, exact)
    assert rd["n"] == 3 and rd["dropped"] == 2  # fast = 0 and NaN dropped
    assert rd["median"] == pytest.approx(0.0) and rd["mean"] == pytest.approx((1.0 - 0.5 + 0.0) / 3)
    assert rd["gap_n"] == 4 and rd["median_gap"] == pytest.approx(0.5)  # median of 1, -1, 1, 0


def test_rounding_noise_is_not_ranked() -> None:
    """Lanes that behave alike: equal metrics on one side, the last digits apart on the other."""
    fast = np.array([1.0, 2.0, 2.0, 2.0, 3.0])
    exact = np.array([1.0, 2.0 + 3e-13, 2.0 - 2e-13, 2.0, 3.0])
    assert ag.spearman(fast, exact)["rho"] == pytest.approx(1.0)
    ok = np.ones(5, bool)
    np.testing.assert_array_equal(ag.ranks(exact, ok, True), ag.ranks(fast, ok, True))
    assert ag.overlap(ag.ranks(fast, ok, True), ag.ranks(exact, ok, True), np.arange(5), 2)["common"] == 2
    # a real difference is still one
    assert ag.spearman(fast, np.array([1.0, 2.0 + 1e-6, 2.0, 2.0, 3.0]))["rho"] < 1.0


def test_a_zero_regret_is_printed_not_missing() -> None:
    from mmsweep.sweep.verify import regret_cell

    assert regret_cell({"regret": 0.0, "best_lane": 7, "best_fast_rank": 1}) == "0.000 (lane 7, fast rank 1)"
    assert regret_cell({"regret": float("nan"), "best_lane": None}) == "n/a"
    assert regret_cell({"regret": 2.5, "best_lane": 3, "best_fast_rank": 40}).startswith("2.500 (lane 3")
