"""The scan kernel: lanes, precision, accounting identities, sharding."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from mmsweep.kernels.policies.base import Market, Quote
from mmsweep.kernels.metrics import MetricsConfig
from mmsweep.kernels.scan import KernelConfig, rebase_frames, run_lanes
from mmsweep.sweep.data.loader import load_events
from mmsweep.sweep.frames import FrameSpec, LatencySpec, build_frames


def symmetric_grid(params, obs, position, market, xp):
    """A minimal skewed grid in relative ticks (the real policies have their own tests)."""
    mid = (obs.bid + obs.ask) / 2
    reservation = mid - params["skew"] * position / params["order_qty"]
    bid_top = xp.minimum(xp.floor(reservation - params["half_spread"]), obs.bid)
    ask_top = xp.maximum(xp.ceil(reservation + params["half_spread"]), obs.ask)
    levels = xp.asarray(params["n_levels"])
    return Quote(bid_top, ask_top, params["grid_interval"], levels, levels, params["order_qty"],
                 max_position=params["max_position"])


@pytest.fixture(scope="module")
def frames(shared_data, tmp_path_factory):
    events = load_events(shared_data / "hftbacktest" / "usdm" / "btcusdt_20240808.npz")
    return build_frames(events, FrameSpec(latency=LatencySpec(entry_ns=10_000_000)),
                        cache_dir=tmp_path_factory.mktemp("cache"))


def setup(frames, dtype=jnp.float32, fill_model="cross", levels=5):
    base = int(frames["bid"][0])
    market = Market(0.1, 0.001, base, tuple(frames.feature_names), 0.1, levels)
    config = KernelConfig(symmetric_grid, market, fill_model, -0.00005, 1.0, frames.meta["max_lag"] + 1,
                          MetricsConfig(resample_every=10, book_size=100_000.0), dtype)
    return config, rebase_frames(frames, base, dtype)


def lanes(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"half_spread": rng.uniform(0, 30, n).round(), "skew": rng.uniform(0, 3, n),
            "grid_interval": rng.integers(1, 5, n).astype(float), "order_qty": np.full(n, 0.01),
            "n_levels": rng.integers(0, 6, n).astype(float), "max_position": np.full(n, 0.2)}


def run(frames, params, **kw):
    config, rows = setup(frames, **{k: kw.pop(k) for k in ("dtype", "fill_model", "levels") if k in kw})
    out = run_lanes(params, rows, config, **kw)
    return {k: np.asarray(v) for k, v in out.items()}


def test_vmapped_lanes_equal_lanes_run_one_by_one(frames) -> None:
    params = lanes(16)
    together = run(frames, params)
    for i in range(0, 16, 5):
        alone = run(frames, {k: v[i:i + 1] for k, v in params.items()})
        for key in ("PnL", "NumberOfTrades", "Fees", "FinalPosition"):
            np.testing.assert_array_equal(together[key][i:i + 1], alone[key], err_msg=key)
        # SR divides sums that XLA may reassociate differently per batch size: last-ulp level.
        np.testing.assert_allclose(together["SR"][i:i + 1], alone["SR"], rtol=1e-6)
    assert together["NumberOfTrades"].max() > 0


def test_float32_matches_float64(frames) -> None:
    params = lanes(32, seed=1)
    f32 = run(frames, params)
    with enable_x64():
        f64 = run(frames, params, dtype=jnp.float64)
    # Same fills (integer tick logic), PnL within 1e-4 of the traded value: relative-tick
    # accounting keeps float32 exact for positions and cash; only fee sums round.
    np.testing.assert_array_equal(f32["NumberOfTrades"], f64["NumberOfTrades"])
    np.testing.assert_allclose(f32["PnL"], f64["PnL"], atol=1e-4 * f64["TradingValue"].max() / 1e3 + 1e-3)
    np.testing.assert_allclose(f32["Fees"], f64["Fees"], rtol=1e-5, atol=1e-4)


def test_wide_spread_never_fills_and_zero_levels_never_trade(frames) -> None:
    params = lanes(4)
    params["half_spread"][:] = 5_000  # 500 USD away: beyond every move in the sample
    out = run(frames, params)
    assert np.all(out["NumberOfTrades"] == 0) and np.all(out["PnL"] == 0) and np.all(out["Fees"] == 0)
    params = lanes(4)
    params["n_levels"][:] = 0
    out = run(frames, params)
    assert np.all(out["NumberOfTrades"] == 0)


def test_accounting_identities(frames) -> None:
    params = lanes(8, seed=2)
    params["n_levels"][:] = 3
    params["half_spread"][:] = 0
    out = run(frames, params, record=True)
    assert out["NumberOfTrades"].min() > 0
    # Every order is order_qty, so |final position| is a multiple of it and at most trades x qty.
    units = out["FinalPosition"] / 0.01
    np.testing.assert_allclose(units, np.round(units), atol=1e-3)
    assert np.all(np.abs(out["FinalPosition"]) <= out["NumberOfTrades"] * 0.01 + 1e-6)
    # Max position respected up to one step's fills: 3 old + 3 new orders of 0.01 on one side.
    assert np.all(out["MaxAbsPosition"] <= 0.2 + 2 * 3 * 0.01 + 1e-6)
    assert out["MaxAbsPosition"].max() > 0.2 - 1e-6  # the cap was actually reached
    # Fees are the maker rate times the traded value.
    np.testing.assert_allclose(out["Fees"], -0.00005 * out["TradingValue"], rtol=1e-4)
    # The recorded equity starts at 0 and PnL is the equity at the last decision (hftbacktest's
    # Recorder semantics: fills after the last decision are not seen).
    assert np.all(out["equity"][:, 0] == 0)
    np.testing.assert_allclose(out["PnL"], out["equity"][:, -1], rtol=1e-5, atol=1e-4)


def test_touch_fills_at_least_as_often_as_cross(frames) -> None:
    params = lanes(16, seed=3)
    cross = run(frames, params)
    touch = run(frames, params, fill_model="touch")
    assert touch["NumberOfTrades"].sum() > cross["NumberOfTrades"].sum()


def test_sharded_over_four_host_devices_gives_identical_results(tmp_path, shared_data) -> None:
    script = textwrap.dedent(f"""
        import os, sys, json
        import numpy as np, jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import test_kernel as tk
        from mmsweep.sweep.data.loader import load_events
        from mmsweep.sweep.frames import FrameSpec, LatencySpec, build_frames
        assert len(jax.devices()) == 4, jax.devices()
        ev = load_events({str(shared_data / "hftbacktest" / "usdm" / "btcusdt_20240808.npz")!r})
        frames = build_frames(ev, FrameSpec(latency=LatencySpec(entry_ns=10_000_000)), cache_dir={str(tmp_path)!r})
        config, rows = tk.setup(frames)
        params = tk.lanes(16, seed=4)
        plain = tk.run_lanes(params, rows, config)
        mesh = Mesh(np.array(jax.devices()), ("lanes",))
        shard = NamedSharding(mesh, PartitionSpec("lanes"))
        sharded_params = {{k: jax.device_put(np.asarray(v, np.float32), shard) for k, v in params.items()}}
        sharded = tk.run_lanes(sharded_params, rows, config)
        assert len(sharded["PnL"].sharding.device_set) == 4
        exact = ("PnL", "NumberOfTrades", "Fees", "TradingValue", "FinalPosition", "MaxAbsPosition", "Rejections")
        same = all(np.array_equal(np.asarray(plain[k]), np.asarray(sharded[k])) for k in exact)
        # Ratios of sums (SR, Sortino) may differ in the last ulp: XLA reassociates per shard.
        same &= all(np.allclose(np.asarray(plain[k]), np.asarray(sharded[k]), rtol=1e-6, equal_nan=True) for k in plain)
        print(json.dumps({{"same": same, "NumberOfTrades": float(np.asarray(plain["NumberOfTrades"]).sum())}}))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"same": true' in result.stdout and '"NumberOfTrades": 0.0' not in result.stdout
