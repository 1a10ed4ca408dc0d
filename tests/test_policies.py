"""The seed quoting policies: numpy/jax parity, jit+vmap lanes, units and behaviour."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmsweep.kernels.policies import (POLICIES, bind, get_policy, required_features,
                                      resolve_params, resolve_static)
from mmsweep.kernels.policies import avellaneda_stoikov as AS
from mmsweep.kernels.policies.base import Market, Observation, Param, Quote, Static

FEATURES = ("spot.rolling_return_300s", "realized_vol_60s", "vamp_bps_5", "spot.vamp_bps_5",
            "spot.mid", "imbalance_5")
TICK, LOT, BASE = 0.1, 0.001, 600_000
MARKET = Market(tick_size=TICK, lot_size=LOT, base_tick=BASE, feature_names=FEATURES,
                interval_s=0.1, max_levels=5)
MID_PX = BASE * TICK  # 60000.0 with the book around rel tick 0
TPB = MID_PX * 1e-4 / TICK  # ticks per bp of the mid: 60

# "Reasonable" parameters per policy (static config, params), with inventory response on.
CASES = {
    "grid": ({}, dict(half_spread=6.0, grid_interval=2.0, skew=1.5, n_levels=3, order_qty=0.01,
                      max_position=1.0)),
    "fair_value": ({}, dict(beta=0.5, relative_half_spread_bps=1.0, relative_skew_bps=0.5,
                            order_notional=1000.0, max_notional=20000.0, n_levels=2,
                            grid_interval_bps=0.05)),
    "avellaneda_stoikov": ({}, dict(gamma=0.01, k=0.5, horizon_s=4.0, eta=0.1, order_qty=0.01,
                                    n_levels=2, grid_step=2.0)),
    "linear_alpha": ({"features": ["imbalance_5", "spot.rolling_return_300s"]},
                     dict(coef_0=0.2, coef_1=2000.0, risk_aversion=0.5, half_spread=4.0,
                          order_qty=0.01, n_levels=3)),
    "vamp_reference": ({"venue": "spot"}, dict(base_bps=0.5, skew_bps=0.3, q_scale=2.0,
                                               order_qty=0.01, n_levels=2)),
}
# The parameter that makes each policy respond to inventory, and its "off" value.
SKEW_PARAM = {"grid": "skew", "fair_value": "relative_skew_bps", "avellaneda_stoikov": "gamma",
              "linear_alpha": "risk_aversion", "vamp_reference": "skew_bps"}


def features(**values) -> np.ndarray:
    """A feature vector (float64) with neutral zeros, the spot mid equal to our mid, and a
    realised vol of 1e-5 per sqrt(s) unless overridden (keys use '__' for '.')."""
    out = dict.fromkeys(FEATURES, 0.0)
    out["spot.mid"] = MID_PX
    out["realized_vol_60s"] = 1e-5
    out.update({k.replace("__", "."): v for k, v in values.items()})
    return np.array([out[n] for n in FEATURES], dtype=np.float64)


def obs(bid=-1.0, ask=1.0, **values) -> Observation:
    return Observation(np.float64(bid), np.float64(ask), features(**values))


def np_quote(name, params, o=None, position=0.0, market=MARKET, static=None):
    static = CASES[name][0] if static is None else static
    q = bind(name, static)(resolve_params(name, params, static), o or obs(), np.float64(position), market, np)
    return Quote(*(None if f is None else np.asarray(f, dtype=np.float64) for f in q))


def np_decision(name, params, o=None, position=0.0):
    """The decision the engines act on (the policy's quote through to_decision), numpy."""
    from mmsweep.kernels.orders import to_decision

    q = np_quote(name, params, o, position)
    return to_decision(q, np.float64(round(position / LOT)), MARKET, np, np.float64)


def with_params(name, **over):
    return {**CASES[name][1], **over}


def random_lane(name, rng):
    """Random but reasonable params, observation and position for one lane."""
    p = dict(CASES[name][1])
    for k, v in p.items():
        if k not in ("n_levels", "relative") and isinstance(v, float) and v != 0:
            p[k] = v * float(rng.uniform(0.5, 2.0))
    p["n_levels"] = float(rng.integers(0, 7))
    if name == "grid":
        p["relative"] = float(rng.integers(0, 2))
        p["grid_interval"] = float(rng.integers(1, 6)) if p["relative"] == 0 else 0.2
        p["half_spread"] = p["half_spread"] if p["relative"] == 0 else 0.4
        p["skew"] = p["skew"] if p["relative"] == 0 else 0.1
    bid = float(rng.integers(-20, 20))
    o = obs(bid, bid + float(rng.integers(1, 4)),
            spot__rolling_return_300s=rng.normal(0, 2e-4), realized_vol_60s=abs(rng.normal(1e-5, 5e-6)),
            vamp_bps_5=rng.normal(0, 0.5), spot__vamp_bps_5=rng.normal(0, 0.5),
            spot__mid=MID_PX + rng.normal(0, 1.0), imbalance_5=rng.uniform(-1, 1))
    position = float(rng.choice([-1, 1]) * rng.integers(0, 200)) * LOT
    return p, o, position


def assert_quotes_equal(a: Quote, b: Quote):
    for field, x, y in zip(Quote._fields, a, b):
        assert (x is None) == (y is None), field
        if x is not None:
            np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64), err_msg=field)


# --------------------------------------------------------------------------- engine parity

@pytest.mark.parametrize("name", list(POLICIES))
def test_numpy_and_jax_give_identical_quotes(name):
    rng = np.random.default_rng(1)
    static = CASES[name][0]
    f = bind(name, static)
    with jax.enable_x64(True):
        for _ in range(20):
            p, o, pos = random_lane(name, rng)
            p = resolve_params(name, p, static)
            ref = f(p, o, np.float64(pos), MARKET, np)
            got = f({k: jnp.asarray(v, jnp.float64) for k, v in p.items()},
                    Observation(*(jnp.asarray(x) for x in o)), jnp.float64(pos), MARKET, jnp)
            assert all(x is None or x.dtype == jnp.float64 for x in got)
            assert_quotes_equal(ref, got)


def _lanes(name, n, seed):
    rng = np.random.default_rng(seed)
    static = CASES[name][0]
    lanes = [random_lane(name, rng) for _ in range(n)]
    params = [resolve_params(name, p, static) for p, _, _ in lanes]
    batch_p = {k: np.array([p[k] for p in params], np.float64) for k in params[0]}
    batch_o = Observation(*(np.stack([o[i] for _, o, _ in lanes]) for i in range(3)))
    batch_pos = np.array([pos for _, _, pos in lanes])
    loop = [bind(name, static)(params[i], lanes[i][1], np.float64(lanes[i][2]), MARKET, np) for i in range(n)]
    stacked = Quote(*(None if loop[0][j] is None else np.stack([np.asarray(q[j]) for q in loop])
                      for j in range(len(Quote._fields))))
    return batch_p, batch_o, batch_pos, stacked


def _jit_vmap(name):
    f = bind(name, CASES[name][0])
    return jax.jit(jax.vmap(lambda p, o, pos: f(p, o, pos, MARKET, jnp)))


@pytest.mark.parametrize("name", list(POLICIES))
def test_jit_vmap_over_lanes_equals_numpy_loop(name):
    with jax.enable_x64(True):
        p, o, pos, expected = _lanes(name, 32, seed=2)
        got = _jit_vmap(name)({k: jnp.asarray(v) for k, v in p.items()},
                              Observation(*(jnp.asarray(x) for x in o)), jnp.asarray(pos))
        assert got.bid_top.shape == (32,)
        assert_quotes_equal(expected, got)


@pytest.mark.parametrize("name", list(POLICIES))
def test_float32_lanes_stay_finite_and_within_a_tick(name):
    p, o, pos, expected = _lanes(name, 32, seed=3)
    got = _jit_vmap(name)({k: jnp.asarray(v, jnp.float32) for k, v in p.items()},
                          Observation(*(jnp.asarray(x, jnp.float32) for x in o)),
                          jnp.asarray(pos, jnp.float32))
    assert got.bid_top.dtype == jnp.float32
    for field, x, y in zip(Quote._fields, expected, got):
        if x is None:
            continue
        y = np.asarray(y, np.float64)
        if field == "max_position":  # a limit: infinite means none
            np.testing.assert_array_equal(np.isinf(y), np.isinf(np.asarray(x, np.float64)))
            continue
        assert np.isfinite(y).all(), field
        if field in ("bid_top", "ask_top", "step"):
            assert np.abs(y - x).max() <= 1.0, field  # at most a rounding flip at a boundary


# --------------------------------------------------------------------------- behaviour

@pytest.mark.parametrize("name", list(POLICIES))
def test_no_skew_no_position_is_symmetric_around_mid(name):
    p = with_params(name, **{SKEW_PARAM[name]: 0.0})
    if name == "linear_alpha":
        p.update(coef_0=0.0, coef_1=0.0)
    o = obs(-2.0, 2.0)  # mid at rel 0 = absolute 600000, a multiple of every grid step here
    q = np_quote(name, p, o, position=0.0)
    assert q.bid_top < -2.0 or name == "avellaneda_stoikov"  # not just clamped to the touch
    assert -q.bid_top == q.ask_top
    assert q.bid_levels == q.ask_levels > 0
    # and the skew parameter really is what breaks the symmetry once there is inventory
    skewed = np_quote(name, with_params(name), o, position=0.05)
    assert -skewed.bid_top != skewed.ask_top


@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_inventory_moves_both_quotes_against_it(name, sign):
    o = obs(-1.0, 1.0)
    flat = np_quote(name, with_params(name), o, position=0.0)
    held = np_quote(name, with_params(name), o, position=sign * 0.1)
    if sign > 0:
        assert held.bid_top < flat.bid_top and held.ask_top < flat.ask_top
    else:
        assert held.bid_top > flat.bid_top and held.ask_top > flat.ask_top


@pytest.mark.parametrize("name", list(POLICIES))
def test_bids_below_asks_for_reasonable_params(name):
    rng = np.random.default_rng(4)
    for _ in range(50):
        p, o, pos = random_lane(name, rng)
        p["n_levels"] = 3.0
        q = np_quote(name, p, o, position=pos)
        assert q.step >= 1 and q.step == np.round(q.step)
        assert q.bid_top == np.round(q.bid_top) and q.ask_top == np.round(q.ask_top)
        assert q.bid_top <= o.bid and q.ask_top >= o.ask  # never through the touch
        assert q.bid_top < q.ask_top


@pytest.mark.parametrize("base_tick", [600_000, 600_001, 123_457, 2 ** 33 + 5])
@pytest.mark.parametrize("interval", [2.0, 3.0, 5.0])
def test_grid_prices_are_absolute_multiples_of_the_interval(base_tick, interval):
    market = MARKET._replace(base_tick=base_tick)
    rng = np.random.default_rng(int(interval))
    f = jax.jit(lambda p, o, pos: bind("grid")(p, o, pos, market, jnp))
    for _ in range(10):
        bid = float(rng.integers(-30, 30))
        o = obs(bid, bid + 1.0)
        p = dict(half_spread=float(rng.uniform(0, 8)), grid_interval=interval,
                 skew=float(rng.uniform(0, 3)), order_qty=0.01, n_levels=3)
        pos = float(rng.integers(-5, 5)) * 0.01
        for q in (np_quote("grid", p, o, pos, market),
                  f({k: jnp.float32(v) for k, v in p.items()}, Observation(*map(jnp.asarray, o)), jnp.float32(pos))):
            assert float(q.step) == interval
            for top in (q.bid_top, q.ask_top):
                assert (base_tick + int(top)) % int(interval) == 0
            assert float(q.bid_top) <= bid and float(q.ask_top) >= bid + 1


def test_grid_relative_units_are_bps_of_mid():
    # 0.5 bp of 60000 = 30 ticks; grid_interval 0.1 bp = 6 ticks; skew 0.05 bp = 3 ticks/order
    q = np_quote("grid", dict(half_spread=0.5, grid_interval=0.1, skew=0.05, order_qty=0.01,
                              relative=1), position=0.02)
    assert q.step == 6
    assert q.bid_top == -36 and q.ask_top == 24  # reservation -6: -36 and 24 are multiples of 6
    ticks = np_quote("grid", dict(half_spread=30, grid_interval=6, skew=3, order_qty=0.01), position=0.02)
    assert_quotes_equal(q, ticks)


def test_avellaneda_stoikov_matches_hand_computation():
    gamma, k, vol, horizon = 0.01, 0.5, 1e-5, 4.0
    sigma = vol * MID_PX / TICK * math.sqrt(horizon)  # 12 ticks
    assert sigma == pytest.approx(12.0)
    delta = gamma * sigma ** 2 + 2 / gamma * math.log(1 + gamma / k)  # 1.44 + 200 ln 1.02 = 1.44 + 3.96052546
    r = 0.0 - 1.0 * gamma * sigma ** 2  # one order long
    got_r, got_delta = AS.reservation_and_spread(0.0, 1.0, gamma, 144.0, k, np)
    assert got_r == pytest.approx(-1.44, abs=1e-12) and got_delta == pytest.approx(5.40052546, abs=1e-8)
    p = dict(gamma=gamma, k=k, horizon_s=horizon, eta=0.5, order_qty=0.01)
    q = np_quote("avellaneda_stoikov", p, obs(realized_vol_60s=vol), position=0.01)
    assert q.bid_top == math.floor(r - delta / 2) == -5
    assert q.ask_top == math.ceil(r + delta / 2) == 2
    # size shaping exp(-/+ eta q), rounded down to lots
    assert q.bid_qty == pytest.approx(0.006) and q.ask_qty == pytest.approx(0.016)
    assert q.qty == pytest.approx(0.01)
    # gamma -> 0 is the limit 2/k; k <= 0 quotes nothing (and nothing is NaN)
    _, d0 = AS.reservation_and_spread(0.0, 3.0, 0.0, 144.0, 0.5, np)
    assert d0 == pytest.approx(4.0)
    dead = np_quote("avellaneda_stoikov", dict(p, k=0.0), position=0.01)
    assert dead.bid_levels == 0 and dead.ask_levels == 0 and np.isfinite(dead.bid_top)


def test_fair_value_beta_zero_quotes_around_mid_and_positive_signal_moves_up():
    p = dict(relative_half_spread_bps=1.0, order_notional=1000.0, n_levels=2)
    o = obs(-5.0, 5.0, spot__rolling_return_300s=1e-4)
    plain = np_quote("fair_value", dict(p, beta=0.0), o)
    assert plain.bid_top == -60 and plain.ask_top == 60  # 1 bp of 60000 = 60 ticks
    # the same as quoting a relative grid around the mid
    grid = np_quote("grid", dict(half_spread=1.0, grid_interval=0.0, order_qty=plain.qty, n_levels=2,
                                 relative=1), o)
    assert_quotes_equal(plain, grid)
    up = np_quote("fair_value", dict(p, beta=0.5), o)  # fair = mid * (1 + 0.5e-4): +30 ticks
    assert up.bid_top == -30 and up.ask_top == 90
    down = np_quote("fair_value", dict(p, beta=0.5), obs(-5.0, 5.0, spot__rolling_return_300s=-1e-4))
    assert down.bid_top == -90 and down.ask_top == 30


def test_fair_value_skew_uses_normalised_notional_position():
    # position 0.1 at 60000 = 6000 of max 12000 -> 0.5; skew 2 bp -> 1 bp = 60 ticks down
    p = dict(relative_half_spread_bps=1.0, relative_skew_bps=2.0, order_notional=1000.0,
             max_notional=12000.0)
    q = np_quote("fair_value", p, obs(-5.0, 5.0), position=0.1)
    assert q.bid_top == -120 and q.ask_top == 5  # ask 0 clamped to the touch
    full = np_decision("fair_value", p, obs(-5.0, 5.0), position=0.2)  # at max notional: no bids
    assert full.bid_levels == 0 and full.ask_levels == 1


def test_vamp_reference_tanh_widens_the_inventory_side():
    p = dict(base_bps=1.0, skew_bps=0.5, q_scale=1.0, order_qty=0.01)
    own = {"venue": ""}
    flat = np_quote("vamp_reference", p, position=0.0, static=own)
    assert flat.bid_top == -60 and flat.ask_top == 60
    t = math.tanh(1.0) * 0.5  # one order long
    long = np_quote("vamp_reference", p, position=0.01, static=own)
    assert long.bid_top == math.floor(-(1 + t) * TPB) == -83  # bid (adds inventory) wider
    assert long.ask_top == math.ceil((1 - t) * TPB) == 38  # ask (reduces it) tighter
    short = np_quote("vamp_reference", p, position=-0.01, static=own)
    assert short.bid_top == -38 and short.ask_top == 83
    huge = np_quote("vamp_reference", p, position=50.0, static=own)  # tanh saturates at skew_bps
    assert huge.bid_top == -90 and huge.ask_top == 30


def test_vamp_reference_follows_the_other_venue_vamp():
    p = dict(base_bps=1.0, order_qty=0.01)
    # spot mid 0.5 above ours (+5 ticks) and its VAMP 0.1 bp above its mid (+6 ticks)
    o = obs(spot__mid=MID_PX + 0.5, spot__vamp_bps_5=0.1, vamp_bps_5=-3.0)
    q = np_quote("vamp_reference", p, o, static={"venue": "spot"})
    centre = 5.0 + 0.1 * (MID_PX + 0.5) * 1e-4 / TICK
    unit = (MID_PX + 0.5) * 1e-4 / TICK
    assert q.bid_top == math.floor(centre - unit) == -50 and q.ask_top == math.ceil(centre + unit) == 72
    assert required_features("vamp_reference", {"venue": "spot"}) == ("spot.vamp_bps_5", "spot.mid")
    # warm-up: no spot book yet (zero-filled mid) -> quote around our own mid, own VAMP ignored
    warm = np_quote("vamp_reference", p, obs(spot__mid=0.0), static={"venue": "spot"})
    assert warm.bid_top == -60 and warm.ask_top == 60


def test_linear_alpha_forecast_and_volatility_risk():
    static = {"features": ["imbalance_5"]}
    p = dict(coef_0=0.5, half_spread=20.0, order_qty=0.01)
    # forecast 0.5 bp per unit imbalance * 0.4 = 0.2 bp = 12 ticks up
    q = np_quote("linear_alpha", p, obs(imbalance_5=0.4), static=static)
    assert q.bid_top == -8 and q.ask_top == 32
    # risk: 0.5 * 2 orders * (1e-5 * 60000 / 0.1 * 1 = 6 ticks) = 6 ticks down
    r = np_quote("linear_alpha", dict(p, coef_0=0.0, risk_aversion=0.5), obs(), position=0.02, static=static)
    assert r.bid_top == -26 and r.ask_top == 14
    # vol=None: risk_aversion is a plain skew in ticks per order
    plain = np_quote("linear_alpha", dict(p, coef_0=0.0, risk_aversion=0.5), obs(), position=0.02,
                     static={"vol": None})
    assert plain.bid_top == -21 and plain.ask_top == 19
    assert required_features("linear_alpha", static) == ("imbalance_5", "realized_vol_60s")


def test_qty_rounds_down_to_lots():
    assert np_quote("grid", dict(half_spread=5, order_qty=0.0109)).qty == pytest.approx(0.010)
    coarse = MARKET._replace(lot_size=0.1)
    assert np_quote("grid", dict(half_spread=5, order_qty=0.3), market=coarse).qty == pytest.approx(0.3)
    assert np_quote("grid", dict(half_spread=5, order_qty=0.2999), market=coarse).qty == pytest.approx(0.2)
    fv = np_quote("fair_value", dict(relative_half_spread_bps=1, order_notional=1000.0))
    assert fv.qty == pytest.approx(0.016)  # 1000 / 60000 = 0.01667
    tiny = np_quote("grid", dict(half_spread=5, order_qty=0.0009))  # below one lot: no orders
    assert tiny.qty == 0 and tiny.bid_levels == 0 and tiny.ask_levels == 0


@pytest.mark.parametrize("name", list(POLICIES))
def test_levels_capped_at_max_levels_and_zero_means_none(name):
    assert np_quote(name, with_params(name, n_levels=9)).bid_levels == MARKET.max_levels
    small = np_quote(name, with_params(name, n_levels=9), market=MARKET._replace(max_levels=2))
    assert small.bid_levels == small.ask_levels == 2
    off = np_quote(name, with_params(name, n_levels=0))
    assert off.bid_levels == 0 and off.ask_levels == 0
    assert np_quote(name, with_params(name, n_levels=-3)).ask_levels == 0


@pytest.mark.parametrize("name", ["grid", "avellaneda_stoikov", "linear_alpha", "vamp_reference"])
def test_max_position_stops_the_side_that_adds_inventory(name):
    p = with_params(name, max_position=0.05)
    assert np_decision(name, p, position=0.05).bid_levels == 0
    assert np_decision(name, p, position=0.05).ask_levels > 0
    assert np_decision(name, p, position=-0.05).ask_levels == 0
    assert np_decision(name, p, position=0.04).bid_levels > 0


@pytest.mark.parametrize("name", list(POLICIES))
def test_degenerate_finite_inputs_never_give_nan(name):
    zeros = {k: 0.0 for k, (d, *_r) in get_policy(name).PARAMS.items() if k not in ("n_levels",)}
    if name == "fair_value":
        zeros.update(beta_1=0.0, beta_2=0.0, beta_3=0.0)
    for p in (zeros, with_params(name, order_qty=0.0) if "order_qty" in CASES[name][1] else zeros):
        for pos in (0.0, 1e6, -1e6):
            q = np_quote(name, p, obs(realized_vol_60s=0.0), position=pos)
            for field, x in zip(Quote._fields, q):
                if field == "max_position":  # a limit: never NaN, infinite means none
                    assert not np.isnan(x).any(), (field, p, pos)
                    continue
                assert x is None or np.isfinite(x).all(), (field, p, pos)


# --------------------------------------------------------------------------- registry

@pytest.mark.parametrize("name", list(POLICIES))
def test_every_policy_documents_units_and_features(name):
    module = get_policy(name)
    assert callable(module.quote) and callable(module.FEATURES)
    for pname, spec in module.PARAMS.items():
        assert isinstance(spec, Param) and spec.unit and spec.doc, pname
    for sname, spec in module.STATIC.items():
        assert isinstance(spec, Static) and spec.doc and spec.kind, sname
    assert set(required_features(name, CASES[name][0])) <= set(FEATURES)
    assert module.__doc__ and module.quote.__doc__


def test_registry_errors_are_specific():
    with pytest.raises(KeyError, match="known: grid"):
        get_policy("nope")
    with pytest.raises(KeyError, match="order_qty"):
        resolve_params("grid", dict(half_spread=1.0))
    with pytest.raises(KeyError, match="typo"):
        resolve_params("grid", dict(half_spread=1.0, order_qty=1.0, typo=2))
    with pytest.raises(KeyError, match="unknown static"):
        resolve_static("grid", {"signals": ["x"]})
    with pytest.raises(ValueError, match="beta_1"):
        resolve_params("fair_value", dict(relative_half_spread_bps=1, order_notional=1, beta_1=[0.0, 0.2]))
    with pytest.raises(ValueError, match="coef_0"):
        resolve_params("linear_alpha", dict(half_spread=1, order_qty=1, coef_0=1.0))
    with pytest.raises(ValueError, match="at most 4"):
        bind("fair_value", {"signals": ["a", "b", "c", "d", "e"]})
    with pytest.raises(KeyError, match="feature 'spot.rolling_return_300s'"):
        bind("fair_value")(dict(relative_half_spread_bps=1, order_notional=1), obs(),
                           0.0, MARKET._replace(feature_names=()), np)
    assert resolve_params("grid", dict(half_spread=1.0, order_qty=1.0))["grid_interval"] == 1.0
    assert required_features("fair_value") == ("spot.rolling_return_300s",)


def test_round_half_even_is_numpys_rounding():
    from mmsweep.kernels.policies._common import round_half_even

    x = np.concatenate([np.arange(-6, 6, 0.25), np.random.default_rng(9).normal(0, 1e4, 1000),
                        [np.inf, -np.inf, np.nan, 0.49999999999999994, 2.5, -2.5, 1e15 + 0.5]])
    np.testing.assert_array_equal(round_half_even(x, np), np.round(x))
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(np.asarray(round_half_even(jnp.asarray(x32), jnp)), np.round(x32))
