"""Online metrics (mmsweep.kernels.metrics) against hftbacktest 2.4.4's own stats.

Measured on this suite's synthetic records (random-walk mid around 50,000, ~2% of 100 ms rows
fill 1-4 lots of 0.001 at mid -/+ 0.05, fee 1 bp):
* float64 online == hftbacktest to a few ulp (<= 1e-15 relative) on every metric;
* float32 online: accumulation error <= ~1.2e-7 relative (vs float64 on the same float32
  inputs) over a day of 86,400 one-second samples; without Kahan compensation it was ~1e-5.
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmsweep.kernels.metrics import (
    METRIC_NAMES,
    MetricsConfig,
    _kahan_add,
    make_metrics_config,
    metrics_finalize,
    metrics_from_hbt_record,
    metrics_from_record,
    metrics_init,
    metrics_update,
    resample_ns,
)

HBT_KEYS = METRIC_NAMES[:9]  # hftbacktest's summary() metric columns
INTERVAL_NS = 100_000_000  # 100 ms rows
SECOND_NS = 1_000_000_000
DAY_ROWS = 86_400 * 10
BOOK = 100_000.0
T0 = 1_704_067_200_000_000_000  # 2024-01-01 00:00:00 UTC, on every window boundary
# XLA:CPU compiles a one-lane float32 scan into a single function (~20-40 ns/row here) but runs
# x64 or vmapped scans op by op (~4-7 us/row); unrolling 8 rows per iteration makes the long
# ones ~7x faster for a few seconds of compile.  (Unrolling the one-lane float32 scan loses its
# fast path: keep that at 1.)
UNROLL_SLOW_PATH = 8

RECORD_DTYPE = np.dtype(
    # hftbacktest's Recorder dtype (hftbacktest.types.record_dtype)
    [
        ("timestamp", "i8"),
        ("price", "f8"),
        ("position", "f8"),
        ("balance", "f8"),
        ("fee", "f8"),
        ("num_trades", "i8"),
        ("trading_volume", "f8"),
        ("trading_value", "f8"),
    ],
    align=True,
)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _x64():
    """Context enabling float64 in JAX (``jax.enable_x64`` on new JAX, experimental on old)."""
    ctx = getattr(jax, "enable_x64", None)
    if ctx is not None:
        return ctx(True)
    from jax.experimental import enable_x64  # JAX < 0.7

    return enable_x64()


@pytest.fixture
def x64():
    with _x64():
        yield


def synth_record(n: int, first_ns: int = T0, seed: int = 0, fill_prob: float = 0.02) -> np.ndarray:
    """A Recorder-shaped record: random-walk mid, random maker fills, 1 bp fee (quote currency)."""
    rng = np.random.default_rng(seed)
    mid = 50_000.0 + np.cumsum(rng.normal(0.0, 0.5, n))
    fill = rng.random(n) < fill_prob
    fill[0] = False  # nothing fills before the first decision
    side = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    qty = np.where(fill, 0.001 * rng.integers(1, 5, n), 0.0)
    price = mid - side * 0.05  # maker: buy below, sell above the mid
    rec = np.zeros(n, RECORD_DTYPE)
    rec["timestamp"] = first_ns + INTERVAL_NS * np.arange(n, dtype=np.int64)
    rec["price"] = mid
    rec["position"] = np.cumsum(side * qty)
    rec["balance"] = -np.cumsum(side * qty * price)
    rec["trading_value"] = np.cumsum(qty * price)
    rec["fee"] = 1e-4 * rec["trading_value"]
    rec["num_trades"] = np.cumsum(fill)
    rec["trading_volume"] = np.cumsum(qty)
    return rec


def record_equity(rec: np.ndarray) -> np.ndarray:
    """E in hftbacktest's operation order: (balance + position*price*cs) - fee."""
    return (rec["balance"] + rec["position"] * rec["price"] * 1.0) - rec["fee"]


def online_inputs(rec: np.ndarray, dtype, equity: np.ndarray | None = None) -> dict:
    """Per-row scan inputs, cast to ``dtype`` in numpy first (no silent JAX truncation)."""
    cast = lambda a: jnp.asarray(np.asarray(a, np.float64).astype(dtype))  # noqa: E731
    return dict(
        row_index=jnp.arange(rec.size, dtype=jnp.int32),
        equity=cast(record_equity(rec) if equity is None else equity),
        position=cast(rec["position"]),
        mid_price=cast(rec["price"]),
        num_trades_cum=cast(rec["num_trades"]),
        trading_value_cum=cast(rec["trading_value"]),
        fees_cum=cast(rec["fee"]),
    )


def scan_states(configs, xs: dict, dtype, unroll: int = 1):
    """Run metrics_update for every config in one lax.scan over rows; return final states."""

    def body(states, x):
        return tuple(metrics_update(c, s, **x) for c, s in zip(configs, states)), None

    init = tuple(metrics_init(dtype) for _ in configs)
    states, _ = jax.lax.scan(body, init, xs, unroll=unroll)
    return states


def run_online(configs, rec, dtype, *, equity=None, unroll=1) -> list[dict[str, float]]:
    xs = online_inputs(rec, dtype, equity)

    @jax.jit
    def go(xs):
        states = scan_states(configs, xs, dtype, unroll)
        return tuple(metrics_finalize(c, s) for c, s in zip(configs, states))

    return [{k: float(v) for k, v in out.items()} for out in go(xs)]


def hbt_stats(rec: np.ndarray, freq_ns: int, book: float = BOOK):
    """hftbacktest's own numbers: (summary row as a dict, resampled frame)."""
    from hftbacktest.stats import LinearAssetRecord

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its inf/NaN divisions
        stats = LinearAssetRecord(rec).resample(f"{freq_ns}ns").stats(book_size=book)
    return stats.summary().row(0, named=True), stats.entire


def assert_metrics_close(ours: dict, theirs: dict, keys, rtol: float, what: str) -> None:
    for k in keys:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=rtol, atol=0, equal_nan=True, err_msg=f"{what}: {k}")


# ----------------------------------------------------------------------------------------------
# (1) float64 online == hftbacktest on a two-day record
# ----------------------------------------------------------------------------------------------


def test_online_float64_matches_hftbacktest_two_days(x64):
    pytest.importorskip("hftbacktest")
    first_ns = T0 + 300_000_000  # starts 0.3 s into a second: partial first window
    rec = synth_record(2 * DAY_ROWS + 7, first_ns)  # ends 0.7 s into a second: partial last one
    configs = [
        make_metrics_config(interval_ns=INTERVAL_NS, resample_ns=every, book_size=BOOK, first_row_ns=first_ns)
        for every in (SECOND_NS, 10 * SECOND_NS)
    ]
    assert configs[0].phase_rows == 3 and configs[1].phase_rows == 3
    outs = run_online(configs, rec, jnp.float64, unroll=UNROLL_SLOW_PATH)

    for cfg, ours in zip(configs, outs):
        theirs, resampled = hbt_stats(rec, resample_ns(cfg))
        assert ours["NumSamples"] == resampled.height
        assert_metrics_close(ours, theirs, HBT_KEYS, 1e-14, f"online vs hftbacktest @{resample_ns(cfg)}ns")
        # Differences are a few ulp at most: XLA folds "/ book_size" (a compile-time constant)
        # into "* (1/book_size)" (Return, MaxDrawdown, DailyTurnover: <= 1 ulp); SR's mean is
        # the telescoped (E_last - E_first)/m and its variance a shifted compensated sum, where
        # polars sums the dE.  Sample selection itself is exact:
        assert ours["MaxPositionValue"] == theirs["MaxPositionValue"]

        ref = metrics_from_hbt_record(rec, resample_ns=resample_ns(cfg), book_size=BOOK)
        assert_metrics_close(ref, theirs, HBT_KEYS, 1e-14, "numpy reference vs hftbacktest")
        assert_metrics_close(ours, ref, METRIC_NAMES, 1e-14, "online vs numpy reference")

        # extras
        assert ours["NumberOfTrades"] == rec["num_trades"][-1] - rec["num_trades"][0]
        np.testing.assert_allclose(ours["TradingValue"], rec["trading_value"][-1], rtol=1e-15)
        np.testing.assert_allclose(ours["Fees"], rec["fee"][-1], rtol=1e-15)
        np.testing.assert_allclose(ours["PnL"], record_equity(rec)[-1], rtol=1e-15)
        assert ours["MaxAbsPosition"] == np.max(np.abs(rec["position"]))


# ----------------------------------------------------------------------------------------------
# partial windows, odd phases, NaN prices, edge values: small records vs hftbacktest
# ----------------------------------------------------------------------------------------------

SMALL_CASES = {
    # name: (first_row_ns, rows, resample_ns)
    "aligned_full_windows": (T0, 300, SECOND_NS),
    "phase3_partial_both_ends": (T0 + 300_000_000, 307, SECOND_NS),
    "phase9_last_row_closes": (T0 + 900_000_000, 301, SECOND_NS),
    "sub_interval_offset": (T0 + 900_000_037, 295, SECOND_NS),  # rows off the 100 ms grid
    "3s_windows_epoch_aligned": (T0 + 1_200_000_000, 1_000, 3 * SECOND_NS),
    "every_row_a_window": (T0 + 500_000_000, 200, INTERVAL_NS),
}


@pytest.mark.parametrize("case", sorted(SMALL_CASES))
def test_window_sampling_matches_hftbacktest(case, x64):
    pytest.importorskip("hftbacktest")
    first_ns, rows, freq_ns = SMALL_CASES[case]
    rec = synth_record(rows, first_ns, seed=7, fill_prob=0.2)
    cfg = make_metrics_config(interval_ns=INTERVAL_NS, resample_ns=freq_ns, book_size=BOOK, first_row_ns=first_ns)
    theirs, resampled = hbt_stats(rec, freq_ns)
    (ours,) = run_online([cfg], rec, jnp.float64)
    ref = metrics_from_hbt_record(rec, resample_ns=freq_ns, book_size=BOOK)
    assert ours["NumSamples"] == ref["NumSamples"] == resampled.height
    assert_metrics_close(ours, theirs, HBT_KEYS, 1e-13, "online vs hftbacktest")
    assert_metrics_close(ref, theirs, HBT_KEYS, 1e-13, "reference vs hftbacktest")


def test_reference_handles_nan_prices_like_hftbacktest():
    """An empty book (NaN mid) in the exact engine: hftbacktest drops NaN E; so does the reference."""
    pytest.importorskip("hftbacktest")
    rec = synth_record(600, T0 + 200_000_000, seed=3, fill_prob=0.2)
    rec["price"][:25] = np.nan  # no book yet (spans the first samples)
    rec["price"][297] = np.nan  # a window's last row (0.2 s + 29.7 s = second 29's 0.9 s row)
    rec["price"][455] = np.nan  # a row inside a window (not sampled)
    theirs, _ = hbt_stats(rec, SECOND_NS)
    ref = metrics_from_hbt_record(rec, resample_ns=SECOND_NS, book_size=BOOK)
    assert_metrics_close(ref, theirs, HBT_KEYS, 1e-13, "reference vs hftbacktest with NaN prices")


def _ramp_record(rows: int, step: float, trades: bool = True) -> np.ndarray:
    """Aligned windows, equity changing by exactly ``step`` per row (dE = 10*step per 1 s)."""
    rec = np.zeros(rows, RECORD_DTYPE)
    rec["timestamp"] = T0 + INTERVAL_NS * np.arange(rows)
    rec["price"] = 100.0
    rec["balance"] = step * np.arange(rows)
    if trades:
        rec["num_trades"] = np.arange(rows) // 7
        rec["trading_value"] = 10.0 * rec["num_trades"]
    return rec


@pytest.mark.parametrize(
    "name, rec",
    [
        ("flat_equity_no_trades", _ramp_record(50, 0.0, trades=False)),  # SR, Sortino, ROMDD, ROT: NaN
        ("flat_equity_with_trades", _ramp_record(50, 0.0)),  # ROT = 0/x = 0
        ("rising_exact_steps", _ramp_record(50, 0.25)),  # std 0 -> SR inf; no downside; MDD 0
        ("falling_no_trades", _ramp_record(50, -0.5, trades=False)),  # SR -inf, ROT -inf
    ],
)
def test_degenerate_values_match_hftbacktest(name, rec, x64):
    pytest.importorskip("hftbacktest")
    cfg = make_metrics_config(interval_ns=INTERVAL_NS, resample_ns=SECOND_NS, book_size=BOOK, first_row_ns=T0)
    theirs, _ = hbt_stats(rec, SECOND_NS)
    (ours,) = run_online([cfg], rec, jnp.float64)
    ref = metrics_from_hbt_record(rec, resample_ns=SECOND_NS, book_size=BOOK)
    assert_metrics_close(ours, theirs, HBT_KEYS, 1e-14, f"{name}: online vs hftbacktest")
    assert_metrics_close(ref, theirs, HBT_KEYS, 1e-14, f"{name}: reference vs hftbacktest")
    if name == "rising_exact_steps":
        assert ours["SR"] == np.inf and ours["Sortino"] == np.inf and ours["ReturnOverMDD"] == np.inf
    if name == "flat_equity_no_trades":
        assert np.isnan([ours["SR"], ours["Sortino"], ours["ReturnOverMDD"], ours["ReturnOverTrade"]]).all()


# ----------------------------------------------------------------------------------------------
# (4) too few samples: hftbacktest raises, we return NaN
# ----------------------------------------------------------------------------------------------


def _cfg() -> MetricsConfig:
    return make_metrics_config(interval_ns=INTERVAL_NS, resample_ns=SECOND_NS, book_size=BOOK, first_row_ns=T0)


def test_no_rows_gives_nan_metrics_and_zero_counts():
    out = {k: float(v) for k, v in metrics_finalize(_cfg(), metrics_init()).items()}
    for k in HBT_KEYS:
        assert np.isnan(out[k]), k
    assert out["NumSamples"] == 0 and out["NumberOfTrades"] == 0 and out["PnL"] == 0
    ref = metrics_from_record(
        np.zeros(0, np.int64), equity=[], position=[], mid_price=[], num_trades_cum=[],
        trading_value_cum=[], fees_cum=[], resample_ns=SECOND_NS, book_size=BOOK,
    )
    assert_metrics_close(out, ref, METRIC_NAMES, 0, "empty")


@pytest.mark.parametrize("rows, samples", [(1, 1), (10, 1), (11, 2), (20, 2), (21, 3)])
def test_few_samples(rows, samples):
    pytest.importorskip("hftbacktest")
    rec = synth_record(rows, T0, seed=1, fill_prob=0.5)
    (ours,) = run_online([_cfg()], rec, jnp.float32)
    ref = metrics_from_hbt_record(rec, resample_ns=SECOND_NS, book_size=BOOK)
    assert ours["NumSamples"] == ref["NumSamples"] == samples
    assert_metrics_close(ours, ref, METRIC_NAMES, 1e-5, "online f32 vs reference")
    assert np.isnan(ours["SR"]) == (samples < 3)  # std(ddof=1) needs two equity changes
    assert np.isnan(ours["Sortino"]) == (samples < 2)
    assert np.isnan(ours["DailyNumberOfTrades"]) == (samples < 2)  # D = 0
    if samples == 1:
        assert ours["Return"] == 0 and ours["MaxDrawdown"] == 0 and np.isnan(ours["ReturnOverMDD"])
    if samples < 3:
        # hftbacktest itself cannot compute these: IndexError (1 sample), TypeError (2 samples)
        with pytest.raises((IndexError, TypeError)):
            hbt_stats(rec, SECOND_NS)


def test_config_helper():
    cfg = make_metrics_config(interval_ns=INTERVAL_NS, resample_ns=10 * SECOND_NS, book_size=5.0, first_row_ns=T0 + 12_300_000_000)
    assert cfg.resample_every == 100 and cfg.phase_rows == 23 and resample_ns(cfg) == 10 * SECOND_NS
    assert cfg.trading_days_per_year == 252.0
    with pytest.raises(ValueError, match="whole number of rows"):
        make_metrics_config(interval_ns=INTERVAL_NS, resample_ns=250_000_000, book_size=1.0)
    with pytest.raises(ValueError):
        make_metrics_config(interval_ns=INTERVAL_NS, resample_ns=SECOND_NS, book_size=0.0)


# ----------------------------------------------------------------------------------------------
# (2) float32 accuracy over a day of 86,400 one-second samples
# ----------------------------------------------------------------------------------------------


def _drift_equity(n: int) -> np.ndarray:
    """A lane whose mean dE dominates its std (the case shifted sums exist for)."""
    rng = np.random.default_rng(11)
    return 0.01 * np.arange(n) + np.cumsum(rng.normal(0.0, 3e-4, n))


def test_float32_accuracy_one_day():
    cfg = _cfg()
    n = DAY_ROWS
    recs = [synth_record(n, T0, seed=s) for s in range(3)]
    equities = [record_equity(r) for r in recs] + [_drift_equity(n)]
    recs.append(recs[0])
    # inputs rounded to float32 once: the accumulation error is what the metrics add on top
    xs = jax.tree_util.tree_map(
        lambda *a: jnp.stack(a), *[online_inputs(r, np.float32, e) for r, e in zip(recs, equities)]
    )
    run = jax.jit(jax.vmap(lambda x: metrics_finalize(cfg, scan_states([cfg], x, jnp.float32, UNROLL_SLOW_PATH)[0])))
    outs = {k: np.asarray(v, np.float64) for k, v in run(xs).items()}

    for lane, (rec, eq) in enumerate(zip(recs, equities)):
        ours = {k: v[lane] for k, v in outs.items()}
        as32 = lambda a: np.asarray(a, np.float64).astype(np.float32).astype(np.float64)  # noqa: E731
        ref32 = metrics_from_record(
            rec["timestamp"], equity=as32(eq), position=as32(rec["position"]), mid_price=as32(rec["price"]),
            num_trades_cum=as32(rec["num_trades"]), trading_value_cum=as32(rec["trading_value"]),
            fees_cum=as32(rec["fee"]), resample_ns=SECOND_NS, book_size=BOOK,
        )
        assert ours["NumSamples"] == 86_400
        # accumulation error: float32 online vs float64 on the same float32 inputs
        assert_metrics_close(ours, ref32, METRIC_NAMES, 5e-7, f"lane {lane}: f32 accumulation")
        if lane < 3:
            # total error vs exact float64 inputs (|E| here <= ~600 quote, so its float32 spacing
            # <= 6e-5 is small against typical 1 s equity changes; larger |E| loses more)
            ref64 = metrics_from_record(
                rec["timestamp"], equity=eq, position=rec["position"], mid_price=rec["price"],
                num_trades_cum=rec["num_trades"], trading_value_cum=rec["trading_value"],
                fees_cum=rec["fee"], resample_ns=SECOND_NS, book_size=BOOK,
            )
            assert_metrics_close(ours, ref64, METRIC_NAMES, 1e-6, f"lane {lane}: f32 vs exact")


def test_kahan_compensation_survives_compilation():
    """XLA must not fold the compensation away: 10^6 float32 additions of 0.1."""
    xs = jnp.full(1_000_000, 0.1, jnp.float32)
    z = jnp.zeros((), jnp.float32)
    comp = jax.jit(lambda xs: jax.lax.scan(lambda c, x: (_kahan_add(*c, x), None), (z, z), xs)[0])(xs)
    naive = jax.jit(lambda xs: jax.lax.scan(lambda c, x: (c + x, None), z, xs)[0])(xs)
    exact = 1_000_000 * float(np.float32(0.1))
    assert abs(float(comp[0] - comp[1]) - exact) / exact < 1e-7
    assert abs(float(naive) - exact) / exact > 1e-4  # the test can tell the difference


# ----------------------------------------------------------------------------------------------
# (3) vmapped lanes == lanes one at a time
# ----------------------------------------------------------------------------------------------


def test_vmap_equals_single_lanes():
    cfg = make_metrics_config(interval_ns=INTERVAL_NS, resample_ns=SECOND_NS, book_size=BOOK, first_row_ns=T0 + 400_000_000)
    n = 3600 * 10 + 5  # an hour and a partial window
    lanes = [online_inputs(synth_record(n, T0 + 400_000_000, seed=s, fill_prob=0.05), np.float32) for s in range(4)]
    batched = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *lanes)

    one = jax.jit(lambda x: scan_states([cfg], x, jnp.float32)[0])
    many = jax.jit(jax.vmap(one))
    state_b = many(batched)
    # finalize is elementwise, so it takes the batched state as is
    out_b = metrics_finalize(cfg, state_b)
    out_vf = jax.vmap(lambda s: metrics_finalize(cfg, s))(state_b)
    for i, x in enumerate(lanes):
        state_1 = one(x)
        # the accumulated state is bit-identical lane by lane
        for a, b in zip(jax.tree_util.tree_leaves(state_b), jax.tree_util.tree_leaves(state_1)):
            np.testing.assert_array_equal(np.asarray(a)[i], np.asarray(b), err_msg=f"lane {i}")
        # finalize on a batch may differ by 1 ulp: XLA:CPU's vectorised float32 division is
        # not correctly rounded (seen on Return, MaxDrawdown, DailyTurnover)
        out_1 = metrics_finalize(cfg, state_1)
        for k in METRIC_NAMES:
            for out in (out_b, out_vf):
                np.testing.assert_allclose(np.asarray(out[k])[i], np.asarray(out_1[k]), rtol=2.5e-7, atol=0, err_msg=f"lane {i}: {k}")
