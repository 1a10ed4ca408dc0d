"""The smooth (differentiable) lane step: it is the hard step as the temperature goes to 0 (the
queue fill model too), its gradients are those of its own objective, it ranks lanes like the
hard kernel at a low temperature, and forward-mode gradients need no memory that grows with the
horizon."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

from mmsweep.kernels import smooth
from mmsweep.kernels.metrics import MetricsConfig
from mmsweep.kernels.policies import bind
from mmsweep.kernels.policies.base import Market
from mmsweep.kernels.scan import KernelConfig, rebase_frames, run_lanes
from mmsweep.kernels.smooth import SmoothSpec, objective_and_grad, smooth_metrics
from mmsweep.sweep.frames import FrameSpec, LatencySpec, build_frames

import test_backends as tb
import test_queue as tq


pytestmark = pytest.mark.usefixtures("x64")


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


def central_differences(params, name, rows, config, spec, kw):
    """Central differences of the smooth objective in ``name`` at two step sizes, and where they
    agree (the lanes where the objective is smooth at that scale, away from a kink)."""
    differences = []
    for h in (1e-5, 5e-6):
        step = h * max(1.0, float(np.abs(params[name]).mean()))
        up, down = dict(params), dict(params)
        up[name], down[name] = params[name] + step, params[name] - step
        f_up, _ = smooth_metrics(up, rows, config, spec, **kw)
        f_down, _ = smooth_metrics(down, rows, config, spec, **kw)
        differences.append((np.asarray(f_up) - np.asarray(f_down)) / (2 * step))
    return differences, np.isclose(differences[0], differences[1], rtol=1e-3, atol=1e-6)


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
        differences, smooth_here = central_differences(params, name, rows, config, spec, kw)
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


# --- the queue fill model ---------------------------------------------------------------------

QUEUE_LEVELS = 4  # ticks of queue state from the touch (orders further out fill only outright)
QUEUE_LANE_LEVELS = 2


@pytest.fixture(scope="module")
def queue_frames(tmp_path_factory):
    """The queue tests' one-message-per-window market (trades at the touch and the size changes
    that follow, size added and cancelled near the touch, the book moving a tick): ~2,200 rows."""
    events = tq.one_event_market(1_500, seed=11)
    spec = FrameSpec(latency=LatencySpec(entry_ns=tq.ENTRY_NS), queue_levels=QUEUE_LEVELS)
    return events, build_frames(events, spec, cache_dir=tmp_path_factory.mktemp("queue_cache"))


def queue_config(queue_frames, queue: str) -> KernelConfig:
    """One config per queue model for the module (the compiled functions are cached per config)."""
    if ("queue", queue) not in _CONFIGS:
        _CONFIGS["queue", queue] = _queue_config(queue_frames, queue)
    return _CONFIGS["queue", queue]


def _queue_config(queue_frames, queue: str) -> KernelConfig:
    events, frames = queue_frames
    inst = events.instrument
    market = Market(inst.tick_size, inst.lot_size, int(np.median(frames["bid"])), (), 0.1, QUEUE_LANE_LEVELS)
    return KernelConfig(bind("grid"), market, "queue", -0.00005, 1.0, frames.meta["max_lag"] + 1,
                        MetricsConfig(resample_every=10, book_size=1e5), jnp.float64, queue_model=queue, queue_n=2.0,
                        queue_levels=QUEUE_LEVELS)


def queue_lanes(n: int) -> dict[str, np.ndarray]:
    return {**tq.lanes(n), "n_levels": np.full(n, float(QUEUE_LANE_LEVELS))}


@pytest.mark.parametrize("queue", ["risk_averse", "log2"])
def test_zero_temperature_queue_is_the_hard_queue_kernel(queue_frames, queue):
    """At T = 1e-6 (ticks; lots for the queue) the smooth queue lane makes the hard queue kernel's
    fills: counts, positions and money equal, on a market where the queue decides many fills."""
    config = queue_config(queue_frames, queue)
    rows = rows_for(queue_frames[1], config, len(queue_frames[1]))
    params = queue_lanes(8)
    hard = run_lanes(params, rows, config)
    _objective, soft = smooth_metrics(params, rows, config, temperature=1e-6, position_temperature=1e-6)
    trades = np.asarray(hard["NumberOfTrades"])
    cross = np.asarray(run_lanes(params, rows, config._replace(fill_model="cross"))["NumberOfTrades"])
    assert trades.sum() > 300 and trades.sum() > 1.2 * cross.sum(), (trades.sum(), cross.sum())
    for key in ("NumberOfTrades", "FinalPosition", "Rejections"):
        np.testing.assert_allclose(np.asarray(soft[key]), np.asarray(hard[key]), rtol=0, atol=1e-9, err_msg=key)
    for key in ("PnL", "Fees", "TradingValue", "MaxPositionValue"):
        np.testing.assert_allclose(np.asarray(soft[key]), np.asarray(hard[key]), rtol=1e-9, atol=1e-9, err_msg=key)


def queue_fd_setup(queue_frames):
    config = queue_config(queue_frames, "power2")
    return config, rows_for(queue_frames[1], config, 1_500), queue_lanes(8), ("half_spread", "skew")


def test_queue_gradients_match_finite_differences(queue_frames):
    """Forward-mode gradients of the smooth queue objective (continuous rounding, T = 1 tick / 1
    lot) against central differences of the same objective, where two step sizes agree."""
    config, rows, params, tuned = queue_fd_setup(queue_frames)
    spec = SmoothSpec(rounding="continuous")
    kw = dict(temperature=1.0, position_temperature=1.0)
    _v, forward, _o = objective_and_grad(params, tuned, rows, config, spec, **kw)
    checked = 0
    for name in tuned:
        differences, smooth_here = central_differences(params, name, rows, config, spec, kw)
        assert smooth_here.sum() >= 5, (name, smooth_here)
        assert np.abs(differences[1][smooth_here]).max() > 1e-2, name  # the objective moves with it
        np.testing.assert_allclose(np.asarray(forward[name])[smooth_here], differences[1][smooth_here], rtol=1e-3,
                                   atol=1e-6, err_msg=name)
        checked += int(smooth_here.sum())
    assert checked >= 12


def test_queue_reverse_mode_equals_forward_mode(queue_frames):
    """Reverse mode through the checkpointed scan gives the forward-mode gradient (finite: the
    queue state of orders the frames do not cover, 1e30, carries no gradient to poison it)."""
    config, rows, params, tuned = queue_fd_setup(queue_frames)
    spec = SmoothSpec(rounding="continuous")
    kw = dict(temperature=1.0, position_temperature=1.0)
    _v, forward, _o = objective_and_grad(params, tuned, rows, config, spec, **kw)
    _v, reverse, _o = objective_and_grad(params, tuned, rows, config, spec, mode="reverse", segment_rows=128, **kw)
    for name in tuned:
        assert np.all(np.isfinite(np.asarray(reverse[name]))), name
        assert np.abs(np.asarray(forward[name])).max() > 1e-2, name
        np.testing.assert_allclose(np.asarray(reverse[name]), np.asarray(forward[name]), rtol=1e-9, atol=1e-12)


def test_a_fill_model_the_smooth_kernel_cannot_relax_is_named(queue_frames, monkeypatch):
    """A stateful model other than queue (none exists yet) fails in one line, naming it."""
    from mmsweep.kernels.fills import FillModel

    stateful = FillModel("stateful", (), ("x",), lambda *a: (0.0,), lambda *a: [], None)
    monkeypatch.setattr(smooth, "fill_model_for", lambda _config: stateful)
    with pytest.raises(NotImplementedError, match=r"cannot relax the 'stateful' fill model \(it relaxes threshold"):
        smooth.make_smooth_lane(queue_config(queue_frames, "power2"), 1.0, 1.0)
