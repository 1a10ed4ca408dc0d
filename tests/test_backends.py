"""The kernel's backends agree: the JAX scan, the numba block backend, the shortcuts the
policies' invariants allow, and time chunking.

Tolerances (stated in the README): counts, positions, fills and rejections are equal; money
metrics in float64 within 1e-12 relative (XLA:CPU fuses some multiply-adds into FMAs, numba
rounds every operation), in float32 within 2e-6 of the traded value.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from mmsweep.kernels.metrics import MetricsConfig
from mmsweep.kernels.numba_backend import run_lanes_numba
from mmsweep.kernels.policies import bind, get_policy
from mmsweep.kernels.policies.base import Market
from mmsweep.kernels.scan import KernelConfig, rebase_frames, run_lanes
from mmsweep.sweep.data.synthetic import SynthConfig, synthetic_market
from mmsweep.sweep.features import FeatureSpec
from mmsweep.sweep.frames import FrameSpec, LatencySpec, build_frames

LEVELS = 3
EXACT = ("NumberOfTrades", "FinalPosition", "MaxAbsPosition", "Rejections", "NumSamples")
MONEY = ("PnL", "Fees", "TradingValue", "SR", "Sortino", "Return", "MaxDrawdown", "MaxPositionValue")
FEATURES = ({"kind": "realized_vol", "window_s": 60}, {"kind": "imbalance", "levels": 5},
            {"kind": "vamp_bps", "levels": 5}, {"kind": "rolling_return", "instrument": "spot", "window_s": 120},
            {"kind": "vamp_bps", "instrument": "spot", "levels": 5}, {"kind": "mid", "instrument": "spot"})
STATIC = {"fair_value": {"signals": ["spot.rolling_return_120s"]}, "avellaneda_stoikov": {},
          "linear_alpha": {"features": ["imbalance_5", "spot.rolling_return_120s"]},
          "vamp_reference": {"venue": "spot"}, "grid": {}}


def lanes(policy: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    levels = rng.integers(1, LEVELS + 1, n).astype(float)
    return {
        "grid": lambda: {"half_spread": rng.integers(0, 20, n) * 1.0, "skew": u(0, 3), "n_levels": levels,
                         "grid_interval": rng.integers(1, 4, n) * 1.0, "order_qty": np.full(n, 0.01),
                         "max_position": rng.choice([0.05, 0.2, np.inf], n), "relative": np.zeros(n)},
        "fair_value": lambda: {"beta": u(0, 2), "relative_half_spread_bps": u(0, 2), "relative_skew_bps": u(0, 2),
                               "order_notional": u(300, 900), "max_notional": np.full(n, 3000.0), "n_levels": levels,
                               "grid_interval_bps": u(0, 0.5)},
        "avellaneda_stoikov": lambda: {"gamma": u(0, 0.05), "k": u(0.1, 1), "eta": u(0, 0.2),
                                       "order_qty": np.full(n, 0.01), "n_levels": levels,
                                       "grid_step": rng.integers(1, 3, n) * 1.0, "max_position": np.full(n, 0.1)},
        "linear_alpha": lambda: {"coef_0": u(-1, 1), "coef_1": u(0, 3000), "risk_aversion": u(0, 1),
                                 "half_spread": u(0, 8), "order_qty": np.full(n, 0.01), "n_levels": levels,
                                 "max_position": np.full(n, 0.1)},
        "vamp_reference": lambda: {"base_bps": u(0, 1.5), "skew_bps": u(0, 0.5), "q_scale": u(1, 3),
                                   "order_qty": np.full(n, 0.01), "n_levels": levels, "max_position": np.full(n, 0.1)},
    }[policy]()


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    market = synthetic_market(SynthConfig(hours=0.1, seed=3))
    spec = FrameSpec(latency=LatencySpec(entry_ns=10_000_000), features=tuple(FeatureSpec.parse(f) for f in FEATURES))
    return build_frames(market["futures"], spec, signals={"spot": market["spot"]},
                        cache_dir=tmp_path_factory.mktemp("cache"))


def config_for(frames, policy: str, fill_model: str = "cross", dtype=jnp.float64, **flags) -> KernelConfig:
    base = int(np.median(frames["bid"]))
    market = Market(0.1, 0.001, base, tuple(frames.feature_names), 0.1, LEVELS)
    return KernelConfig(bind(policy, STATIC[policy]), market, fill_model, -0.00005, 1.0, frames.meta["max_lag"] + 1,
                        MetricsConfig(resample_every=10, book_size=1e5), dtype, **flags)


def invariant_flags(policy: str, params) -> dict:
    inv = get_policy(policy).invariants(params)
    return {"constant_size": inv.constant_size, "constant_step": inv.constant_step}


def assert_agree(a: dict, b: dict, dtype, what: str) -> None:
    for key in EXACT:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=f"{what}: {key}")
    value = np.asarray(a["TradingValue"], np.float64)
    for key in MONEY:
        x, y = np.asarray(a[key], np.float64), np.asarray(b[key], np.float64)
        np.testing.assert_array_equal(np.isfinite(x), np.isfinite(y), err_msg=f"{what}: {key}")
        ok = np.isfinite(x)
        if dtype == jnp.float64:
            np.testing.assert_allclose(x[ok], y[ok], rtol=1e-12, atol=1e-12, err_msg=f"{what}: {key}")
        elif key in ("PnL", "Fees", "TradingValue"):
            np.testing.assert_allclose(x[ok], y[ok], rtol=0, atol=2e-6 * value.max() + 1e-6, err_msg=f"{what}: {key}")


def run_both(frames, policy, fill_model="cross", dtype=jnp.float64, n=24, seed=0, inverse=False):
    params = lanes(policy, n, seed)
    config = config_for(frames, policy, fill_model, dtype, **invariant_flags(policy, params))
    if inverse:
        config = config._replace(inverse=True, contract_multiplier=10.0)
    with enable_x64(dtype == jnp.float64):
        rows = rebase_frames(frames, config.market.base_tick, dtype)
        jax_out = {k: np.asarray(v) for k, v in run_lanes(params, rows, config).items()}
        numba_out = {k: np.asarray(v) for k, v in run_lanes_numba(params, {k: np.asarray(v) for k, v in rows.items()},
                                                                   config).items()}
    assert jax_out["NumberOfTrades"].sum() > 20, f"{policy}: the comparison must see fills"
    return jax_out, numba_out


# Every policy, both fill models and both float types, without compiling every combination
# (each numba kernel takes seconds to compile).
CASES = [("grid", "cross", jnp.float64), ("grid", "touch", jnp.float32), ("fair_value", "cross", jnp.float64),
         ("avellaneda_stoikov", "touch", jnp.float64), ("linear_alpha", "cross", jnp.float64),
         ("vamp_reference", "cross", jnp.float32)]


@pytest.mark.parametrize("policy,fill_model,dtype", CASES, ids=[f"{p}-{f}-{np.dtype(d).name}" for p, f, d in CASES])
def test_numba_equals_jax(frames, policy, fill_model, dtype):
    jax_out, numba_out = run_both(frames, policy, fill_model, dtype, seed=len(policy))
    assert_agree(jax_out, numba_out, dtype, f"{policy} {fill_model}")


def test_numba_equals_jax_for_an_inverse_contract(frames):
    jax_out, numba_out = run_both(frames, "grid", "cross", jnp.float64, seed=11, inverse=True)
    assert_agree(jax_out, numba_out, jnp.float64, "grid inverse")


@pytest.mark.parametrize("policy", ["grid", "avellaneda_stoikov"])
def test_invariant_shortcuts_change_nothing(frames, policy):
    """One lots value per side and shift-based keep/cancel (what the invariants allow) give the
    results of the general per-level formulation."""
    params = lanes(policy, 24, seed=4)
    if policy == "avellaneda_stoikov":
        params["eta"][:] = 0  # constant size
    flags = invariant_flags(policy, params)
    assert flags == {"constant_size": True, "constant_step": True}
    with enable_x64():
        fast_cfg = config_for(frames, policy, **flags)
        rows = rebase_frames(frames, fast_cfg.market.base_tick, jnp.float64)
        fast = {k: np.asarray(v) for k, v in run_lanes(params, rows, fast_cfg).items()}
        general = {k: np.asarray(v) for k, v in run_lanes(params, rows, config_for(frames, policy)).items()}
    assert fast["NumberOfTrades"].sum() > 20
    assert_agree(general, fast, jnp.float64, policy)


def test_invariants_hold_for_the_values_they_claim():
    """A policy that declares a constant size or step really quotes one at every decision."""
    from mmsweep.kernels.orders import to_decision
    from mmsweep.kernels.policies.base import Observation

    rng = np.random.default_rng(5)
    market = Market(0.1, 0.001, 600_000, ("realized_vol_60s", "imbalance_5", "spot.rolling_return_120s",
                                          "vamp_bps_5", "spot.vamp_bps_5", "spot.mid"), 0.1, LEVELS)
    for policy in STATIC:
        params = lanes(policy, 1, seed=6)
        if policy == "avellaneda_stoikov":
            params["eta"][:] = 0
        if policy == "fair_value":
            params["grid_interval_bps"][:] = 0
        flags = get_policy(policy).invariants(params)
        quote = bind(policy, STATIC[policy])
        steps, sizes = set(), set()
        with enable_x64():
            for _ in range(200):
                bid = float(rng.integers(-50, 50))
                feats = np.array([abs(rng.normal(1e-5, 5e-6)), rng.uniform(-1, 1), rng.normal(0, 2e-4),
                                  rng.normal(0, 0.5), rng.normal(0, 0.5), 60_000.0 + rng.normal(0, 5)])
                position = float(rng.integers(-200, 200))
                q = quote({k: jnp.float64(v[0]) for k, v in params.items()},
                          Observation(jnp.float64(bid), jnp.float64(bid + rng.integers(1, 3)), jnp.asarray(feats)),
                          position * market.lot_size, market, jnp)
                d = to_decision(q, jnp.float64(position), market, jnp, jnp.float64)
                steps.add(int(d.step))
                sizes.add((float(d.bid_lots), float(d.ask_lots)))
        assert flags.constant_step and len(steps) == 1, (policy, steps)
        assert not flags.constant_size or len(sizes) == 1, (policy, sizes)


@pytest.mark.parametrize("backend", ["jax", "numba"])
def test_time_chunks_carry_the_state_bit_for_bit(frames, backend):
    params = lanes("grid", 16, seed=7)
    config = config_for(frames, "grid", **invariant_flags("grid", params))
    run = run_lanes if backend == "jax" else run_lanes_numba
    with enable_x64():
        rows = rebase_frames(frames, config.market.base_tick, jnp.float64)
        rows = {k: np.asarray(v) for k, v in rows.items()} if backend == "numba" else rows
        whole = run(params, rows, config)
        n = len(rows["index"])
        state = None
        for lo, hi in ((0, n // 3), (n // 3, n // 3 + 7), (n // 3 + 7, n)):
            part, state = run(params, {k: v[lo:hi] for k, v in rows.items()}, config, state=state,
                              return_state=True)
    for key in whole:
        np.testing.assert_array_equal(np.asarray(whole[key]), np.asarray(part[key]), err_msg=key)


@pytest.mark.parametrize("policy", ["grid", "fair_value"])
def test_pallas_kernel_equals_scan_in_interpret_mode(frames, policy):
    """The GPU kernel (rows looped inside one launch) run by Pallas's interpreter on the CPU."""
    from mmsweep.kernels.pallas_backend import run_lanes_pallas

    params = lanes(policy, 10, seed=8)
    config = config_for(frames, policy, dtype=jnp.float32, **invariant_flags(policy, params))
    rows = {k: v[:400] for k, v in rebase_frames(frames, config.market.base_tick, jnp.float32).items()}
    want = run_lanes(params, rows, config)
    got = run_lanes_pallas(params, rows, config, block=8, interpret=True)
    assert float(np.asarray(want["NumberOfTrades"]).sum()) > 20
    for key in want:
        np.testing.assert_array_equal(np.asarray(want[key]), np.asarray(got[key]), err_msg=key)


def test_lane_step_uses_only_primitives_the_gpu_lowering_knows():
    """Pallas's Triton lowering has no rule for some primitives (rounding, slicing an array
    value): the lane step of every policy must not need them, or the GPU kernel would fail to
    compile on the first GPU it meets."""
    from jax._src.pallas.triton.lowering import triton_lowering_rules

    from mmsweep.kernels.pallas_backend import _FeatureRow
    from mmsweep.kernels.scan import make_scan_step

    known = {p.name for p in triton_lowering_rules}
    names = ("realized_vol_60s", "imbalance_5", "vamp_bps_5", "spot.rolling_return_120s", "spot.vamp_bps_5",
             "spot.mid")

    def primitives(jaxpr, out):
        for eqn in jaxpr.eqns:
            out.add(eqn.primitive.name)
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        primitives(inner, out)
        return out

    for policy in STATIC:
        for shortcuts in (True, False):
            config = KernelConfig(bind(policy, STATIC[policy]), Market(0.1, 0.001, 600_000, names, 0.1, LEVELS),
                                  "touch", -5e-5, 1.0, 2, MetricsConfig(10, 1e5), jnp.float32,
                                  constant_size=shortcuts, constant_step=shortcuts)
            init, body, _lane = make_scan_step(config)
            row = {c: jnp.int32(0) for c in ("index", "bid", "ask", "bid_ack", "ask_ack", "lag_a", "lag_b",
                                             "entry_rejected", "buy_fill_a", "buy_fill_b", "sell_fill_a",
                                             "sell_fill_b", "sell_trade_low_a", "sell_trade_low_b",
                                             "buy_trade_high_a", "buy_trade_high_b")}
            row["features"] = _FeatureRow(jnp.float32(0) for _ in names)
            params = {k: jnp.float32(1) for k in lanes(policy, 1)}
            jaxpr = jax.make_jaxpr(lambda p, s, r: body(p, s, r)[0])(params, init(), row)
            assert primitives(jaxpr.jaxpr, set()) <= known, (policy, primitives(jaxpr.jaxpr, set()) - known)


def test_numba_results_do_not_depend_on_threads_or_batch(frames):
    """A lane's metrics are the same bit for bit whatever the thread count and whichever lanes
    run beside it (no cross-lane reduction, no FMA contraction in the numba backend)."""
    params = lanes("grid", 150, seed=12)
    config = config_for(frames, "grid", **invariant_flags("grid", params))
    with enable_x64():
        rows = {k: np.asarray(v) for k, v in rebase_frames(frames, config.market.base_tick, jnp.float64).items()}
        one = run_lanes_numba(params, rows, config, threads=1)
        two = run_lanes_numba(params, rows, config, threads=2)
        part = run_lanes_numba({k: v[70:75] for k, v in params.items()}, rows, config)
    for key in one:
        np.testing.assert_array_equal(np.asarray(one[key]), np.asarray(two[key]), err_msg=key)
        np.testing.assert_array_equal(np.asarray(one[key])[70:75], np.asarray(part[key]), err_msg=key)


def test_generated_source_is_read_back_without_tracing_and_runs_the_same(frames, monkeypatch):
    """A later process reads the kernel's source from the cache instead of tracing the lane
    functions again; the key moves with every config field, and is refused for a config whose
    description holds a memory address."""
    import functools

    from mmsweep.kernels import numba_backend as nb

    params = lanes("grid", 8)
    config = config_for(frames, "grid", "cross", jnp.float64, **invariant_flags("grid", params))
    names = tuple(sorted(params))
    with enable_x64(True):
        rows = {k: np.asarray(v) for k, v in rebase_frames(frames, config.market.base_tick, jnp.float64).items()}
        first = run_lanes_numba(params, rows, config)
        key = nb._source_key(config, names, nb.BLOCK)
        index = nb._cache_dir() / f"source_{key}.txt"
        assert index.exists()
        generated = nb.generate(config, names)[0]
        assert (nb._cache_dir() / index.read_text()).read_text() == generated  # not stale
        nb._compiled.cache_clear()

        def refuse(*_a, **_k):
            raise AssertionError("traced again")

        monkeypatch.setattr(nb, "_translate", refuse)
        second = run_lanes_numba(params, rows, config)
    for name in first:
        assert np.array_equal(np.asarray(first[name]), np.asarray(second[name]), equal_nan=True), name
    monkeypatch.undo()
    index.write_text("lane_kernel_0.py")  # an index naming a file that is not its source: generated again
    nb._compiled.cache_clear()
    with enable_x64(True):
        third = run_lanes_numba(params, rows, config)
    assert index.read_text() == nb._module_file(generated)
    assert np.array_equal(np.asarray(first["PnL"]), np.asarray(third["PnL"]))
    assert nb._source_key(config._replace(maker_fee=0.0), names, nb.BLOCK) != key
    assert nb._source_key(config, names, 0) != key and nb._source_key(config, names[1:], nb.BLOCK) != key
    odd = config._replace(policy=functools.partial(config.policy.func, static=object()))
    assert nb._source_key(odd, names, nb.BLOCK) is None
