"""replay.policy_jit: the numba translation of each policy's jaxpr equals the numpy policy exactly."""
from __future__ import annotations

import math
import types
import zlib

import jax
import jax.numpy as jnp
import numba
import numpy as np
import pytest
from jax import enable_x64
from mmsweep.kernels.policies import POLICIES, bind, get_policy
from mmsweep.kernels.policies.base import Market, Observation
from mmsweep.kernels import policy_numba as policy_jit
from mmsweep.kernels.policy_numba import OUTPUTS, compile_policy, jaxpr_to_source

FEATURES = ("spot.rolling_return_300s", "realized_vol_60s", "vamp_bps_5", "spot.vamp_bps_5",
            "spot.mid", "imbalance_5", "spot.rolling_return_60s", "spot.imbalance_5")
TICK, LOT, BASE = 0.1, 0.001, 600_000
MID_PX = BASE * TICK
MARKET = Market(tick_size=TICK, lot_size=LOT, base_tick=BASE, feature_names=FEATURES,
                interval_s=0.1, max_levels=5)
BARE = Market(tick_size=TICK, lot_size=LOT, base_tick=BASE, feature_names=(), interval_s=0.1, max_levels=5)

# (policy, static, market, param subset or None for all of the policy's PARAMS)
CONFIGS = [
    ("grid", {}, MARKET, None),
    ("grid", None, BARE, ("half_spread", "order_qty")),  # K = 0, defaults for the rest
    ("fair_value", None, MARKET, None),
    ("fair_value", {"signals": ["spot.rolling_return_300s", "imbalance_5"]}, MARKET, None),
    ("fair_value", {"signals": ["spot.rolling_return_300s", "imbalance_5", "spot.rolling_return_60s",
                                "spot.imbalance_5"]}, MARKET, None),
    ("fair_value", {"signals": []}, BARE, ("relative_half_spread_bps", "order_notional", "max_notional")),
    ("avellaneda_stoikov", None, MARKET, None),
    ("avellaneda_stoikov", {"vol": "realized_vol_60s"}, MARKET, ("gamma", "k", "order_qty", "eta")),
    ("linear_alpha", {"features": ["imbalance_5", "spot.rolling_return_300s"]}, MARKET, None),
    ("linear_alpha", {"features": ["vamp_bps_5"], "vol": None}, MARKET, None),
    ("linear_alpha", {"features": (), "vol": None}, BARE, None),
    ("vamp_reference", None, MARKET, None),
    ("vamp_reference", {"venue": "spot"}, MARKET, None),
]
N_DRAWS = 300


def _pick(rng, *choices):
    """One of ``choices`` (values or callables of rng), uniformly."""
    c = choices[int(rng.integers(len(choices)))]
    return c(rng) if callable(c) else c


def _ticks(r):
    return float(r.uniform(0.0, 25.0))


def _bps(r):
    return float(r.uniform(0.0, 5.0))


PARAM_DRAWS = {
    "half_spread": lambda r: _pick(r, _ticks, 0.0, 0.5, lambda r: float(r.uniform(-3, 3)), 1e12),
    "grid_interval": lambda r: _pick(r, 1.0, 2.0, 2.5, lambda r: float(r.uniform(0, 8)), 0.0, 0.2),
    "skew": lambda r: _pick(r, 0.0, lambda r: float(r.uniform(-3, 3)), 1.5),
    "n_levels": lambda r: _pick(r, 0.0, 1.0, 3.0, 5.0, 7.0, 2.9999999, lambda r: float(r.uniform(-1, 8))),
    "order_qty": lambda r: _pick(r, 0.0, 0.01, 0.0005, 0.0019999, lambda r: float(r.uniform(0, 0.1)),
                                 -0.01),
    "max_position": lambda r: _pick(r, math.inf, 0.0, 0.05, lambda r: float(r.uniform(0, 1))),
    "relative": lambda r: _pick(r, 0.0, 1.0),
    "beta": lambda r: _pick(r, 0.0, lambda r: float(r.normal(0, 1))),
    "beta_1": lambda r: _pick(r, 0.0, lambda r: float(r.normal(0, 1))),
    "beta_2": lambda r: _pick(r, 0.0, lambda r: float(r.normal(0, 1))),
    "beta_3": lambda r: _pick(r, 0.0, lambda r: float(r.normal(0, 1))),
    "relative_half_spread_bps": lambda r: _pick(r, _bps, 0.0, 1.0),
    "relative_skew_bps": lambda r: _pick(r, 0.0, _bps, lambda r: -_bps(r)),
    "order_notional": lambda r: _pick(r, 0.0, 1000.0, 59.99, lambda r: float(r.uniform(0, 5000))),
    "max_notional": lambda r: _pick(r, math.inf, 0.0, 20000.0, lambda r: float(r.uniform(0, 1e5))),
    "grid_interval_bps": lambda r: _pick(r, 0.0, 0.05, lambda r: float(r.uniform(0, 2))),
    "gamma": lambda r: _pick(r, 0.0, -0.1, 0.01, 1e-12, lambda r: float(r.uniform(0, 1))),
    "k": lambda r: _pick(r, 0.0, -1.0, 0.5, 1e-9, lambda r: float(r.uniform(0, 3))),
    "horizon_s": lambda r: _pick(r, 1.0, 0.0, -1.0, lambda r: float(r.uniform(0, 60))),
    "eta": lambda r: _pick(r, 0.0, 0.1, -0.3, 100.0, lambda r: float(r.normal(0, 1))),
    "grid_step": lambda r: _pick(r, 1.0, 2.0, 0.4, 2.5, 3.5, lambda r: float(r.uniform(0, 6))),
    **{f"coef_{j}": (lambda r: _pick(r, 0.0, lambda r: float(r.normal(0, 10)))) for j in range(4)},
    "risk_aversion": lambda r: _pick(r, 0.0, 0.5, lambda r: float(r.uniform(-2, 2))),
    "base_bps": lambda r: _pick(r, _bps, 0.0, 0.5),
    "skew_bps": lambda r: _pick(r, 0.0, 0.3, lambda r: float(r.uniform(-2, 2))),
    "q_scale": lambda r: _pick(r, 1.0, 0.0, -1.0, 2.0, lambda r: float(r.uniform(0, 5))),
}
FEATURE_DRAWS = {
    "spot.rolling_return_300s": lambda r: float(r.normal(0, 1e-3)),
    "spot.rolling_return_60s": lambda r: float(r.normal(0, 1e-3)),
    "realized_vol_60s": lambda r: _pick(r, 1e-5, 0.0, -1e-5, lambda r: float(r.uniform(0, 1e-4))),
    "vamp_bps_5": lambda r: float(r.normal(0, 2)),
    "spot.vamp_bps_5": lambda r: float(r.normal(0, 2)),
    "spot.mid": lambda r: _pick(r, MID_PX, 0.0, -1.0, lambda r: MID_PX + float(r.normal(0, 20))),
    "imbalance_5": lambda r: float(r.uniform(-1, 1)),
    "spot.imbalance_5": lambda r: float(r.uniform(-1, 1)),
}


def draw(rng, param_names, market):
    """Random (params, bid, ask, features, position), with edge cases mixed in."""
    params = np.array([PARAM_DRAWS[p](rng) for p in param_names], dtype=np.float64)
    spread = _pick(rng, 1.0, 2.0, 3.0, lambda r: float(r.integers(1, 12)), 0.5, 1.5)
    bid = _pick(rng, lambda r: float(r.integers(-30, 30)), 0.0, lambda r: float(r.integers(-30, 30)) + 0.5,
                1e6, -1e6, 2.0 ** 31)
    ask = bid + spread
    features = np.array([FEATURE_DRAWS[n](rng) for n in market.feature_names], dtype=np.float64)
    if len(features) and rng.random() < 0.1:
        features[int(rng.integers(len(features)))] = _pick(rng, math.nan, math.inf, -math.inf)
    position = _pick(rng, 0.0, -0.0, lambda r: float(r.normal(0, 0.05)), 1e6, -1e6, 0.01, -0.02)
    if "max_position" in param_names and rng.random() < 0.3:  # sit exactly on the limit
        m = params[param_names.index("max_position")]
        position = _pick(rng, m, -m) if math.isfinite(m) else position
    return params, bid, ask, features, position


def numpy_quote(name, static, market, param_names, params, bid, ask, features, position):
    q = bind(name, static)(dict(zip(param_names, map(float, params))),
                           Observation(np.float64(bid), np.float64(ask), features),
                           np.float64(position), market, np)
    fields = (q.bid_top, q.ask_top, q.step, q.bid_levels, q.ask_levels) + tuple(q.sizes())
    return np.array([np.asarray(f, dtype=np.float64) for f in fields])


def _id(cfg):
    name, static, market, names = cfg
    return f"{name}-{static}-K{len(market.feature_names)}-{'all' if names is None else len(names)}"


@pytest.mark.parametrize("cfg", CONFIGS, ids=[_id(c) for c in CONFIGS])
def test_matches_numpy_policy(cfg):
    name, static, market, names = cfg
    names = tuple(get_policy(name).PARAMS) if names is None else names
    f = compile_policy(name, static, market, names)
    rng = np.random.default_rng(zlib.crc32(_id(cfg).encode()))  # a stable seed per case
    got, want = [], []
    with np.errstate(all="ignore"):  # NaN features, inf * 0 ... exactly as the numpy policy
        for _ in range(N_DRAWS):
            args = draw(rng, names, market)
            got.append(f(*args))
            want.append(numpy_quote(name, static, market, names, *args))
    got, want = np.array(got), np.array(want)
    # Every field is exact: the transcendental ops (exp, log1p, tanh: numpy's SIMD versions vs
    # libm in numba) only feed floor/ceil or a comparison, so a 1-ulp difference could only show
    # at an exact rounding boundary, which these draws do not hit.
    for j, field in enumerate(OUTPUTS):
        np.testing.assert_array_equal(got[:, j], want[:, j], err_msg=f"{name} {static} field {field}")
    # the draws actually exercise both quoting and not quoting
    assert np.any(got[:, 3] > 0) and np.any(got[:, 3] == 0)


def test_huge_position_and_nan_features():
    """Deterministic edge cases on top of the random draws."""
    names = tuple(get_policy("avellaneda_stoikov").PARAMS)
    f = compile_policy("avellaneda_stoikov", None, MARKET, names)
    base = dict(gamma=0.01, k=0.5, horizon_s=4.0, eta=0.1, order_qty=0.01, n_levels=2, grid_step=2.0,
                max_position=math.inf)
    params = np.array([base[n] for n in names])
    feats = np.array([FEATURE_DRAWS[n](np.random.default_rng(0)) for n in FEATURES])
    with np.errstate(all="ignore"):
        for position in (0.0, 1e9, -1e9, 0.01):
            for vol in (1e-5, math.nan, math.inf):
                x = feats.copy()
                x[FEATURES.index("realized_vol_60s")] = vol
                got = np.array(f(params, -1.0, 1.0, x, position))
                want = numpy_quote("avellaneda_stoikov", None, MARKET, names, params, -1.0, 1.0, x, position)
                np.testing.assert_array_equal(got, want)


def test_callable_inside_njit_loop():
    name, static = "linear_alpha", {"features": ["imbalance_5", "spot.rolling_return_300s"]}
    names = tuple(get_policy(name).PARAMS)
    f = compile_policy(name, static, MARKET, names)
    rng = np.random.default_rng(7)
    n = 200
    params = np.array([dict(coef_0=0.2, coef_1=2000.0, risk_aversion=0.5, half_spread=4.0, order_qty=0.01,
                            n_levels=3.0, max_position=0.05).get(p, get_policy(name).PARAMS[p][0])
                       for p in names], dtype=np.float64)
    bids = rng.integers(-20, 20, n).astype(np.float64)
    asks = bids + rng.integers(1, 4, n)
    feats = np.stack([np.array([FEATURE_DRAWS[k](rng) for k in FEATURES]) for _ in range(n)])
    positions = rng.normal(0, 0.05, n)

    @numba.njit
    def loop(policy, params, bids, asks, feats, positions):
        out = np.empty((bids.shape[0], 7))
        position = 0.0
        for i in range(bids.shape[0]):
            r = policy(params, bids[i], asks[i], feats[i], positions[i])
            for j in range(7):
                out[i, j] = r[j]
            position += r[5] - r[6]  # the caller can use the results as numbers
        return out, position

    @numba.njit
    def loop_global(params, bids, asks, feats, positions):  # f captured as a compile-time constant
        out = np.empty((bids.shape[0], 7))
        for i in range(bids.shape[0]):
            r = f(params, bids[i], asks[i], feats[i], positions[i])
            for j in range(7):
                out[i, j] = r[j]
        return out

    got, _ = loop(f, params, bids, asks, feats, positions)
    want = np.array([numpy_quote(name, static, MARKET, names, params, bids[i], asks[i], feats[i], positions[i])
                     for i in range(n)])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loop_global(params, bids, asks, feats, positions), want)
    np.testing.assert_array_equal(np.array([f(params, bids[i], asks[i], feats[i], positions[i])
                                            for i in range(n)]), want)


def test_memoised_and_source_kept():
    names = ("half_spread", "order_qty")
    a = compile_policy("fair_value", {"signals": ["imbalance_5"]}, MARKET, ("relative_half_spread_bps",
                                                                             "order_notional"))
    b = compile_policy("fair_value", {"signals": ("imbalance_5",)}, MARKET, ["relative_half_spread_bps",
                                                                              "order_notional"])
    assert a is b
    g = compile_policy("grid", None, BARE, names)
    assert "def policy_grid(params, bid, ask, features, position):" in g.source
    # no library call left per lane: no fmod (grid_origin), no rounding instruction (floor only)
    assert "np.fmod(" not in g.source and "np.rint(" not in g.source and "np.floor(" in g.source
    with pytest.raises(KeyError, match="missing required parameter"):
        compile_policy("grid", None, BARE, ("half_spread",))
    with pytest.raises(KeyError, match="unknown parameter"):
        compile_policy("grid", None, BARE, ("half_spread", "order_qty", "nope"))


def test_unsupported_primitive_is_named():
    with enable_x64():
        closed = jax.make_jaxpr(lambda x: jax.lax.erf_inv(x) + 1.0)(np.float64(0.5))
    with pytest.raises(NotImplementedError, match="erf_inv.*toy"):
        jaxpr_to_source(closed, ("x",), what="toy")

    def quote(params, obs, position, market, xp, static=None):  # sorts: no scalar translation
        top = xp.sort(obs.features)[0]
        return types.SimpleNamespace(bid_top=top, ask_top=top, step=top, bid_levels=top, ask_levels=top,
                                     sizes=lambda: (top, top))

    toy = types.SimpleNamespace(PARAMS={}, STATIC={}, FEATURES=lambda static=None, market=None: (),
                                quote=quote)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(POLICIES, "toy_sorting", toy)
        with pytest.raises(NotImplementedError, match="'sort'.*toy_sorting"):
            compile_policy("toy_sorting", None, MARKET, ())


def test_translator_elementwise_and_indexing():
    """Primitives the seed policies do not emit (gather, dynamic_slice, integer_pow, rem ...)."""

    def fn(x, y, v):
        i = jnp.int64(2)
        return (jax.lax.rem(x, y), x ** 3, x ** -1, jnp.round(x), jnp.sign(y), v[i], v[-1],
                jax.lax.dynamic_slice(v, (1,), (1,))[0], jnp.clip(x, -1.0, 1.0), jnp.expm1(x),
                jnp.where(x > y, jnp.abs(v[0]), jax.lax.rsqrt(jnp.abs(y))), jnp.square(v).at[1].get(),
                v[np.array([0, 2])][1] + jnp.take(v, 3) + jnp.concatenate([v, v[:2]])[5],
                jnp.stack([v[0], v[1]])[1], jnp.take(v, 7, mode="fill"))

    with enable_x64():
        closed = jax.make_jaxpr(fn)(np.float64(0), np.float64(0), np.zeros(4))
        src = jaxpr_to_source(closed, ("x", "y", "v"), what="toy", fname="toy")
        g = policy_jit._njit_source(src, "toy")
        rng = np.random.default_rng(3)
        for _ in range(50):
            x, y = (float(v) for v in rng.normal(0, 3, 2))
            x = _pick(rng, x, 2.5, -2.5, 0.5, -0.0)
            v = rng.normal(0, 2, 4)
            want = np.array([float(o) for o in jax.jit(fn)(x, y, v)])
            # XLA's own exp/pow kernels vs libm: not bit-identical, hence rtol (the policies are
            # compared with numpy, exactly, above)
            np.testing.assert_allclose(np.array(g(x, y, v)), want, rtol=1e-14, atol=0)
        assert "gather" in str(closed) and "dynamic_slice" in str(closed)
