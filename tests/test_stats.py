"""PBO by CSCV and the deflated Sharpe ratio (sweep/stats.py) on cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from mmsweep.sweep import stats


def test_pbo_of_pure_noise_is_one_half() -> None:
    # 200 lanes of pure noise on 10 blocks: the in-sample winner is a random lane out of sample.
    pbos = [stats.pbo_cscv(np.random.default_rng(seed).standard_normal((10, 200)))["pbo"] for seed in range(12)]
    assert 0.4 < np.mean(pbos) < 0.6, pbos
    out = stats.pbo_cscv(np.random.default_rng(0).standard_normal((10, 200)))
    assert out["combinations"] == 252 and out["blocks"] == 10 and out["trials"] == 200
    assert len(out["logits"]) == 252


def test_pbo_with_a_planted_edge_is_low() -> None:
    rng = np.random.default_rng(1)
    perf = rng.standard_normal((10, 200))
    perf[:, 17] += 1.5  # one lane is better in every block
    out = stats.pbo_cscv(perf)
    assert out["pbo"] < 0.05 and out["oos_loss"] < 0.05


def test_pbo_of_a_reversal_is_one() -> None:
    # what wins in one block loses in the other: the in-sample winner is always the worst
    out = stats.pbo_cscv(np.array([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]]))
    assert out["combinations"] == 2 and out["pbo"] == 1.0 and out["oos_loss"] == 1.0


def test_pbo_validates_its_input() -> None:
    with pytest.raises(ValueError, match="even"):
        stats.pbo_cscv(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="finite"):
        stats.pbo_cscv(np.full((4, 3), np.nan))


def test_expected_max_sharpe_matches_monte_carlo() -> None:
    rng = np.random.default_rng(2)
    for n in (100, 1000):
        simulated = rng.standard_normal((2000, n)).max(axis=1).mean()
        assert stats.expected_max_sharpe(1.0, n) == pytest.approx(simulated, rel=0.03)
    assert stats.expected_max_sharpe(4.0, 100) == pytest.approx(2 * stats.expected_max_sharpe(1.0, 100))


def test_probabilistic_sharpe_basics() -> None:
    assert stats.probabilistic_sharpe(0.1, 0.1, 500) == pytest.approx(0.5)
    assert stats.probabilistic_sharpe(0.2, 0.0, 1000) > 0.999
    # fat tails and negative skew widen the estimate's error: less confidence
    assert stats.probabilistic_sharpe(0.1, 0.0, 300, skew=-1.0, kurtosis=10.0) < stats.probabilistic_sharpe(0.1, 0.0, 300)


def _best_of(returns: np.ndarray) -> tuple[float, np.ndarray]:
    srs = returns.mean(axis=0) / returns.std(axis=0, ddof=1)
    return float(srs.max()), srs


def test_deflated_sharpe_of_pure_noise_is_not_significant() -> None:
    t, n = 1000, 300
    excess, dsr = [], []
    for seed in range(8):
        r = np.random.default_rng(10 + seed).standard_normal((t, n))
        best, srs = _best_of(r)
        out = stats.deflated_sharpe(best, srs, t)
        assert out["psr0"] > 0.99  # undeflated, the best of 300 noise lanes looks significant
        excess.append(out["excess"])
        dsr.append(out["dsr"])
    # the best noise lane's SR sits at the expected maximum: deflated SR ~ 0, DSR far below 0.95
    assert abs(np.mean(excess)) < 0.5 / np.sqrt(t), excess
    assert max(dsr) < 0.95 and 0.2 < np.mean(dsr) < 0.8, dsr


def test_deflated_sharpe_with_a_planted_edge_is_high() -> None:
    t, n = 1000, 300
    r = np.random.default_rng(3).standard_normal((t, n))
    r[:, 5] += 0.25  # SR 0.25 per observation
    best, srs = _best_of(r)
    assert int(np.argmax(srs)) == 5
    out = stats.deflated_sharpe(best, srs, t)
    assert out["dsr"] > 0.99 and out["excess"] > 0.1
    assert stats.deflated_sharpe(best, srs, t, n_trials=1e6)["dsr"] < out["dsr"]  # more trials, more deflation


def test_moments() -> None:
    x = np.random.default_rng(4).standard_normal(200_000)
    skew, kurt = stats.moments(x)
    assert abs(skew) < 0.02 and kurt == pytest.approx(3.0, abs=0.05)
    skew, kurt = stats.moments(np.random.default_rng(5).exponential(size=200_000))
    assert skew == pytest.approx(2.0, abs=0.1) and kurt == pytest.approx(9.0, abs=0.5)


def test_spearman_rho_equals_scipys_with_ties_and_is_nan_when_constant() -> None:
    from scipy.stats import rankdata, spearmanr

    rng = np.random.default_rng(7)
    for n in (2, 3, 17, 500):
        a = rng.integers(0, 5, n).astype(float)  # many ties
        b = a + rng.normal(0, 2, n)
        assert np.array_equal(stats.average_ranks(a), rankdata(a))
        assert stats.spearman_rho(a, b) == pytest.approx(spearmanr(a, b).statistic, rel=1e-12, abs=1e-15)
    assert stats.spearman_rho(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)
    assert np.isnan(stats.spearman_rho(np.ones(4), np.arange(4.0)))
    assert np.isnan(stats.spearman_rho(np.ones(1), np.ones(1)))
    with pytest.raises(ValueError, match="3 and 2"):
        stats.spearman_rho(np.ones(3), np.ones(2))


def test_normal_quantile_and_cdf_match_scipy_stats() -> None:
    """The deflated SR's normal quantile and CDF (scipy.special) are scipy.stats.norm's."""
    from scipy.stats import norm

    for n in (2, 10, 4096, 10**6):
        expected = 0.3 * ((1 - stats.EULER_GAMMA) * norm.ppf(1 - 1 / n) + stats.EULER_GAMMA * norm.ppf(1 - 1 / (n * np.e)))
        assert stats.expected_max_sharpe(0.09, n) == pytest.approx(expected, rel=1e-14)
    assert stats.probabilistic_sharpe(0.1, 0.0, 101) == pytest.approx(norm.cdf(0.1 * 10 / np.sqrt(1 + 0.5 * 0.01)),
                                                                      rel=1e-14)
