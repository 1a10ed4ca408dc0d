"""The smooth (differentiable) lane step: it is the hard step as the temperature goes to 0,
its gradients are those of its own objective, it ranks lanes like the hard kernel at a low
temperature, and forward-mode gradients need no memory that grows with the horizon."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

from mmsweep.kernels import smooth
from mmsweep.kernels.scan import rebase_frames, run_lanes
from mmsweep.kernels.smooth import SmoothSpec, objective_and_grad, smooth_metrics

import test_backends as tb


@pytest.fixture(scope="module", autouse=True)
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return tb.frames.__wrapped__(tmp_path_factory)


_CONFIGS: dict = {}


def config_for(frames, policy):
    """One kernel config per policy for the whole module: compiled functions are cached per
    config, so the temperatures (traced arguments) and tests share them."""
    if policy not in _CONFIGS:
        _CONFIGS[policy] = tb.config_for(frames, policy, dtype=jnp.float64)
    return _CONFIGS[policy]


def rows_for(frames, config, n):
    return {k: v[:n] for k, v in rebase_frames(frames, config.market.base_tick, jnp.float64).items()}


@pytest.mark.parametrize("policy", ["grid", "fair_value", "avellaneda_stoikov"])
def test_zero_temperature_is_the_hard_kernel(frames, policy):
    params = tb.lanes(policy, 8, 0)
    config = config_for(frames, policy)
    rows = rows_for(frames, config, 800)
    hard = run_lanes(params, rows, config)
    _objective, soft = smooth_metrics(params, rows, config, temperature=1e-4, position_temperature=1e-4)
    assert float(np.asarray(hard["NumberOfTrades"]).sum()) > 50
    for key in ("NumberOfTrades", "FinalPosition", "Rejections"):
        np.testing.assert_allclose(np.asarray(soft[key]), np.asarray(hard[key]), rtol=0, atol=1e-9, err_msg=key)
    for key in ("PnL", "Fees", "TradingValue"):
        np.testing.assert_allclose(np.asarray(soft[key]), np.asarray(hard[key]), rtol=1e-9, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("policy,tuned", [("grid", ("half_spread", "skew")),
                                          ("fair_value", ("beta", "relative_half_spread_bps", "relative_skew_bps"))])
@pytest.mark.parametrize("temperature", [3.0, 1.0])
def test_gradients_match_finite_differences(frames, policy, tuned, temperature):
    """Forward and reverse mode against central differences of the same (continuous-rounding)
    objective, on the lanes where it is smooth around the point: where differences at two step
    sizes agree (the kept/cancelled pattern jumps when a quote crosses half a tick)."""
    params = tb.lanes(policy, 8, 0)
    config = config_for(frames, policy)
    rows = rows_for(frames, config, 500)
    spec = SmoothSpec(rounding="continuous")
    kw = dict(temperature=temperature, position_temperature=temperature)
    _v, forward, _o = objective_and_grad(params, tuned, rows, config, spec, **kw)
    _v, reverse, _o = objective_and_grad(params, tuned, rows, config, spec, mode="reverse", segment_rows=128, **kw)
    checked = 0
    for name in tuned:
        np.testing.assert_allclose(np.asarray(reverse[name]), np.asarray(forward[name]), rtol=1e-9, atol=1e-12)
        differences = []
        for h in (1e-5, 5e-6):
            step = h * max(1.0, float(np.abs(params[name]).mean()))
            up, down = dict(params), dict(params)
            up[name], down[name] = params[name] + step, params[name] - step
            f_up, _ = smooth_metrics(up, rows, config, spec, **kw)
            f_down, _ = smooth_metrics(down, rows, config, spec, **kw)
            differences.append((np.asarray(f_up) - np.asarray(f_down)) / (2 * step))
        smooth_here = np.isclose(differences[0], differences[1], rtol=1e-3, atol=1e-6)
        assert smooth_here.sum() >= 4, (name, smooth_here)
        np.testing.assert_allclose(np.asarray(forward[name])[smooth_here], differences[1][smooth_here], rtol=1e-3,
                                   atol=1e-6, err_msg=name)
        checked += int(smooth_here.sum())
    assert checked >= 4 * len(tuned)


def test_low_temperature_ranks_lanes_like_the_hard_kernel(frames):
    params = tb.lanes("grid", 48, 1)
    config = config_for(frames, "grid")
    rows = rows_for(frames, config, 1000)
    hard = np.asarray(run_lanes(params, rows, config)["PnL"])
    objective, _ = smooth_metrics(params, rows, config, temperature=0.1, position_temperature=0.1)
    assert spearmanr(hard, np.asarray(objective)).statistic > 0.99
    objective, _ = smooth_metrics(params, rows, config, temperature=1.0, position_temperature=1.0)
    assert spearmanr(hard, np.asarray(objective)).statistic > 0.95


def test_forward_mode_memory_does_not_grow_with_the_horizon(frames):
    """XLA's own accounting of the compiled forward-mode gradient: its temporaries are the same
    for 4x the rows (tangents ride along the scan; only the frames grow)."""
    params = {k: v[:2] for k, v in tb.lanes("grid", 2, 2).items()}
    config = config_for(frames, "grid")
    tuned = ("half_spread", "skew")
    fixed = tuple(sorted(k for k in params if k not in tuned))
    fn = smooth._compiled(config, SmoothSpec(), tuned, fixed, "forward", None)
    temp = {}
    for n in (300, 1200):
        args = (tuple(jnp.asarray(params[k]) for k in tuned), tuple(jnp.asarray(params[k]) for k in fixed),
                rows_for(frames, config, n), jnp.float64(1.0), jnp.float64(1.0))
        temp[n] = fn.lower(*args).compile().memory_analysis().temp_size_in_bytes
    assert temp[1200] == temp[300], temp


def test_bad_arguments_are_named(frames):
    params = tb.lanes("grid", 2, 0)
    config = config_for(frames, "grid")
    rows = rows_for(frames, config, 50)
    with pytest.raises(KeyError, match="nope"):
        objective_and_grad(params, ("nope",), rows, config)
    with pytest.raises(ValueError, match="gradient mode"):
        objective_and_grad(params, ("skew",), rows, config, mode="sideways")
    with pytest.raises(ValueError, match="objective"):
        objective_and_grad(params, ("skew",), rows, config, SmoothSpec(objective="Luck"))
