"""Every kernel backend equals a plain scalar loop of the same contract, fill for fill."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from mmsweep.kernels.metrics import MetricsConfig
from mmsweep.kernels.policies import bind
from mmsweep.kernels.policies.base import Market
from mmsweep.kernels.reference import reference_lane, reference_lanes
from mmsweep.kernels.scan import KernelConfig, rebase_frames, run_lanes
from mmsweep.kernels.numba_backend import run_lanes_numba
from mmsweep.sweep.data.loader import load_events
from mmsweep.sweep.frames import FrameSpec, LatencySpec, build_frames

LEVELS = 4


@pytest.fixture(scope="module", params=[10_000_000, 230_000_000], ids=["10ms", "230ms-pending"])
def setup(request, shared_data, tmp_path_factory):
    events = load_events(shared_data / "hftbacktest" / "usdm" / "btcusdt_20240808.npz")
    frames = build_frames(events, FrameSpec(latency=LatencySpec(entry_ns=request.param)),
                          cache_dir=tmp_path_factory.mktemp("cache"))
    base = int(frames["bid"][0])
    market = Market(0.1, 0.001, base, (), 0.1, LEVELS)
    config = KernelConfig(bind("grid"), market, "cross", 0.0, 1.0, frames.meta["max_lag"] + 1,
                          MetricsConfig(resample_every=10, book_size=1e5), jnp.float64)
    return frames, base, config


def lanes(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"half_spread": rng.integers(0, 25, n).astype(float), "skew": rng.choice([0.0, 0.5, 1.7, 4.0], n),
            "grid_interval": rng.integers(1, 6, n).astype(float), "n_levels": rng.integers(1, LEVELS + 1, n) * 1.0,
            "order_qty": rng.choice([0.001, 0.01, 0.015], n), "max_position": rng.choice([0.05, 0.2, np.inf], n),
            "relative": np.zeros(n)}


def test_kernel_equals_scalar_loop_fill_for_fill(setup) -> None:
    frames, base, config = setup
    params = lanes(12)
    with enable_x64():
        rows = rebase_frames(frames, base, jnp.float64)
        out = run_lanes(params, rows, config, record=True)
        position = np.asarray(out["position"])
        equity = np.asarray(out["equity"])
        trades = np.asarray(out["NumberOfTrades"])
    host_rows = {k: np.asarray(v) for k, v in rows.items()}
    mid = (host_rows["bid"] + host_rows["ask"]) * 0.5
    total_fills = 0
    for i in range(len(params["skew"])):
        lane = {k: v[i] for k, v in params.items()}
        ref_pos, ref_cash, fills, _rej = reference_lane("grid", None, config.market, lane, host_rows,
                                                        ring=config.ring)
        # Position before every step, in lots: the same fills in the same rows.
        np.testing.assert_array_equal(np.round(position[i] / 0.001), ref_pos, err_msg=f"lane {i} {lane}")
        np.testing.assert_allclose(equity[i], 0.1 * 0.001 * (ref_cash + ref_pos * mid), rtol=0, atol=1e-9)
        # The kernel's trade count runs to the last decision; the loop's to the end of the data.
        assert trades[i] <= fills
        total_fills += fills
    assert total_fills > 100  # the comparison exercised real fills


def test_numba_backend_and_parallel_scalar_loop_agree(setup) -> None:
    """Final position, trades and rejections of every lane: the numba block backend, the
    scalar loop on all cores and on one core."""
    frames, base, config = setup
    params = lanes(70)  # more than one block of lanes
    with enable_x64():
        rows = rebase_frames(frames, base, jnp.float64)
        host_rows = {k: np.asarray(v) for k, v in rows.items()}
        fast = run_lanes_numba(params, host_rows, config._replace(constant_size=True, constant_step=True))
    parallel = reference_lanes("grid", None, config.market, params, host_rows, ring=config.ring)
    serial = reference_lanes("grid", None, config.market, {k: v[:5] for k, v in params.items()}, host_rows,
                             ring=config.ring, parallel=False)
    np.testing.assert_array_equal(parallel[:5], serial)
    np.testing.assert_array_equal(np.asarray(fast["Rejections"]), parallel[:, 3])
    assert parallel[:, 2].sum() > 100
    # the kernel counts fills up to the last decision: compare positions through the record
    np.testing.assert_array_equal(np.asarray(fast["NumberOfTrades"]) <= parallel[:, 2], True)
