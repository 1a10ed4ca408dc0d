"""The synthetic market: format contract, book consistency, and the stylised facts it promises.

Each test asserts something a broken generator would fail: the numbers it checks against are
measured on the generated data (book replayed with replay_book), not read from the generator's
own bookkeeping.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mmsweep.sweep.data.book import NO_ASK, NO_BID, price_to_ticks, replay_book
from mmsweep.sweep.data.events import (
    BBO, CLEAR, DEPTH, SNAPSHOT, TRADE, check_tick_alignment, validate_events,
)
from mmsweep.sweep.data.store import load_native
from mmsweep.sweep.data.synthetic import FUTURES, SPOT, SynthConfig, SynthInstrument, synthetic_market, write_synthetic
from mmsweep.sweep.errors import InputError

MINUTES = 20
LAG_MS = 300.0
SAMPLE_NS = 10_000_000  # mid sampled every 10 ms


@pytest.fixture(scope="module")
def config() -> SynthConfig:
    return SynthConfig(seed=0, hours=MINUTES / 60, lead_lag_ms=LAG_MS)


@pytest.fixture(scope="module")
def market(config):
    return synthetic_market(config)


def sample_grid(config: SynthConfig) -> np.ndarray:
    """A shared 10 ms grid from 1 s after the start to the end (exchange-time ns)."""
    return np.arange(config.start_ns + 1_000_000_000, config.end_ns, SAMPLE_NS, dtype=np.int64)


def top_of_book(events, samples: np.ndarray, clock: str = "local"):
    """Best bid and ask ticks after every event stamped <= each sample time."""
    inst = events.instrument
    replay = replay_book(events.table, inst.tick_size, inst.lot_size, clock=clock, sample_ts=samples, n_levels=1)
    return replay.bid_ticks[:, 0], replay.ask_ticks[:, 0]


@pytest.fixture(scope="module")
def mids(market, config):
    """Mid price (quote currency) of each instrument on the shared 10 ms grid, local clock."""
    samples = sample_grid(config)
    out = {}
    for name, events in market.items():
        bid, ask = top_of_book(events, samples)
        assert np.all(bid != NO_BID) and np.all(ask != NO_ASK)
        out[name] = (bid + ask) * 0.5 * events.instrument.tick_size
    return out


def log_returns(mid: np.ndarray, every: int) -> np.ndarray:
    return np.diff(np.log(mid[::every]))


def excess_kurtosis(x: np.ndarray) -> float:
    x = x - x.mean()
    return float(np.mean(x**4) / np.mean(x**2) ** 2 - 3.0)


def lead_lag_peak(leader: np.ndarray, follower: np.ndarray, max_lag: int) -> tuple[int, np.ndarray]:
    """Lag j (bins) maximising corr(leader[k], follower[k + j]); j > 0 means the leader leads."""
    lags = np.arange(-max_lag, max_lag + 1)
    corr = []
    for j in lags:
        a, b = (leader[: len(leader) - j], follower[j:]) if j >= 0 else (leader[-j:], follower[: len(follower) + j])
        corr.append(np.corrcoef(a, b)[0, 1])
    corr = np.asarray(corr)
    return int(lags[np.argmax(corr)]), corr


def hill_alpha(x: np.ndarray, top_fraction: float = 0.02) -> float:
    """Hill estimator of the tail exponent from the top ``top_fraction`` of the sample."""
    x = np.sort(np.asarray(x, dtype=np.float64))[::-1]
    k = max(int(len(x) * top_fraction), 10)
    return float(1.0 / np.mean(np.log(x[:k] / x[k])))


def trade_messages(table: np.ndarray):
    """(exch_ts, side, total qty) of each aggressive order: its prints share one exchange time."""
    trades = table[table["kind"] == TRADE]
    starts = np.flatnonzero(np.r_[True, np.diff(trades["exch_ts"]) != 0])
    sizes = np.add.reduceat(trades["qty"], starts)
    return trades["exch_ts"][starts], trades["side"][starts], sizes


# ---------------------------------------------------------------------------------------------
# Determinism and format
# ---------------------------------------------------------------------------------------------


def test_same_config_is_bit_identical_and_seed_matters():
    small = SynthConfig(seed=7, hours=3 / 60)
    a = synthetic_market(small)
    b = synthetic_market(small, threads=1)  # serial: the result must not depend on threading
    c = synthetic_market(dataclasses.replace(small, seed=8))
    assert list(a) == ["futures", "spot"]
    for name in a:
        assert a[name].table.tobytes() == b[name].table.tobytes()
        assert a[name].meta == b[name].meta
        assert len(c[name]) != len(a[name]) or c[name].table.tobytes() != a[name].table.tobytes()


def test_output_does_not_depend_on_buffer_size(monkeypatch):
    """The loop stops when its buffer is full and resumes from its state: same rows either way."""
    from mmsweep.sweep.data import synthetic

    small = SynthConfig(seed=9, hours=1 / 60)
    whole = synthetic_market(small)
    monkeypatch.setattr(synthetic, "_row_capacity", lambda config, inst: 1000)
    monkeypatch.setattr(synthetic, "_PIECE_ROWS", 3000)
    pieces = synthetic_market(small)
    for name in whole:
        assert len(whole[name]) > 20_000
        assert pieces[name].table.tobytes() == whole[name].table.tobytes()


def test_tables_follow_the_event_contract(market):
    for name, events in market.items():
        table, inst = events.table, events.instrument
        validate_events(table, source=name)
        check_tick_alignment(table, inst.tick_size, source=name)
        lots = table["qty"] / inst.lot_size
        assert np.all(np.abs(lots - np.round(lots)) < 1e-6), "quantities must be whole lots"
        assert np.all(np.diff(table["exch_ts"]) >= 0), "in-order delivery keeps exch_ts sorted too"
        n = events.meta["config"]["instruments"][0 if name == "futures" else 1]["depth_levels"]
        head = table[: 2 + 2 * n]
        assert list(head["kind"][:2]) == [CLEAR, CLEAR] and sorted(head["side"][:2]) == [-1, 1]
        assert np.all(np.isnan(head["price"][:2]))
        assert np.all(head["kind"][2:] == SNAPSHOT) and np.all(head["qty"][2:] > 0)
        assert len(set(head["exch_ts"])) == 1 and len(set(head["local_ts"])) == 1
        kinds = table["kind"]
        assert np.sum(kinds == CLEAR) == 2 and np.sum(kinds == SNAPSHOT) == 2 * n
        counts = events.meta["counts"]
        assert counts["trade_rows"] == np.sum(kinds == TRADE) > 0
        assert counts["depth_rows"] == np.sum((kinds == DEPTH) | (kinds == SNAPSHOT))
        assert np.any((kinds == DEPTH) & (table["qty"] == 0)), "diffs must delete levels too"


def test_rates_follow_the_config(market, config):
    for inst in config.instruments:
        events = market[inst.name]
        seconds = config.hours * 3600
        orders = len(trade_messages(events.table)[0]) / seconds
        assert orders == pytest.approx(inst.trades_per_s, rel=0.15)
        assert events.meta["per_second"]["trade_rows"] >= orders


def test_deep_churn_comes_in_batches():
    quiet = dataclasses.replace(FUTURES, trades_per_s=0.0, requote_per_s=1e-9, requote_threshold_bp=0.0,
                                touch_noise_per_s=0.0, depth_noise_per_s=500.0, depth_noise_rows_per_msg=5.0)
    cfg = SynthConfig(seed=4, hours=2 / 60, instruments=(quiet,))
    table = synthetic_market(cfg)["futures"].table
    depth = table[table["kind"] == DEPTH]
    messages = len(np.unique(depth["exch_ts"]))  # one exchange time per message
    seconds = cfg.hours * 3600
    assert len(depth) / seconds == pytest.approx(500.0, rel=0.1)
    assert len(depth) / messages == pytest.approx(5.0, rel=0.1)


# ---------------------------------------------------------------------------------------------
# Book consistency
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clock", ["local", "exch"])
def test_book_is_never_crossed(market, clock):
    for name, events in market.items():
        inst = events.instrument
        replay = replay_book(events.table, inst.tick_size, inst.lot_size, clock=clock)
        assert replay.crossed_repairs == 0
        n_head = 2 + np.sum(events.table["kind"] == SNAPSHOT)  # the snapshot message comes first
        bid, ask = replay.best_bid[n_head:], replay.best_ask[n_head:]
        assert np.all(bid != NO_BID) and np.all(ask != NO_ASK), f"{name}: a side emptied"
        assert np.all(bid < ask), f"{name}: crossed or locked book on the {clock} clock"


def test_spread_is_mostly_one_tick(market, config):
    samples = sample_grid(config)
    for name, events in market.items():
        bid, ask = top_of_book(events, samples)
        spread = ask - bid
        share = np.mean(spread == 1)
        assert share > 0.95, f"{name}: one-tick share {share:.4f}"
        assert spread.min() >= 1
    # Trades that clear the touch do widen the futures spread for a while.
    bid, ask = top_of_book(market["futures"], samples)
    assert np.any(ask - bid >= 2)


def test_trades_print_at_the_best_and_consume_the_levels(market):
    events = market["futures"]
    table, inst = events.table, events.instrument
    ts, sides, _ = trade_messages(table)
    trades = table[table["kind"] == TRADE]
    # Check every order that walked or cleared a level, and the first 300 orders.
    clears = table[(table["kind"] == DEPTH) & (table["qty"] == 0)]
    cleared_ts = np.intersect1d(ts, clears["exch_ts"])
    chosen = np.union1d(ts[:300], cleared_ts)
    assert len(cleared_ts) >= 10, "some orders should clear the touch"
    samples = np.sort(np.concatenate([chosen - 1, chosen]))
    n = events.meta["config"]["instruments"][0]["depth_levels"]
    replay = replay_book(table, inst.tick_size, inst.lot_size, clock="exch", sample_ts=samples, n_levels=n)
    lot = inst.lot_size
    moved = 0
    for i, t in enumerate(chosen):
        before, after = 2 * i, 2 * i + 1
        prints = trades[trades["exch_ts"] == t]
        side = int(prints["side"][0])
        if side > 0:  # a buy takes the asks
            b_ticks, b_qty = replay.ask_ticks[before], replay.ask_qty[before]
            a_ticks, a_qty = replay.ask_ticks[after], replay.ask_qty[after]
        else:
            b_ticks, b_qty = replay.bid_ticks[before], replay.bid_qty[before]
            a_ticks, a_qty = replay.bid_ticks[after], replay.bid_qty[after]
        ticks = price_to_ticks(prints["price"], inst.tick_size)
        assert ticks[0] == b_ticks[0], "an order prints first at the best opposite level"
        assert np.all(ticks == b_ticks[0] + side * np.arange(len(ticks))), "then walks level by level"
        levels_before = dict(zip(b_ticks.tolist(), np.round(b_qty / lot).astype(np.int64).tolist()))
        levels_after = dict(zip(a_ticks.tolist(), np.round(a_qty / lot).astype(np.int64).tolist()))
        for tick, qty in zip(ticks.tolist(), np.round(prints["qty"] / lot).astype(np.int64).tolist()):
            assert levels_after.get(tick, 0) == levels_before[tick] - qty
        moved += a_ticks[0] != b_ticks[0]
    assert moved >= len(cleared_ts) // 2, "clearing the touch moves the best price"


# ---------------------------------------------------------------------------------------------
# Stylised facts
# ---------------------------------------------------------------------------------------------


def test_short_horizon_returns_are_fat_tailed(mids):
    for name, mid in mids.items():
        k1 = excess_kurtosis(log_returns(mid, 100))  # 1 s
        k01 = excess_kurtosis(log_returns(mid, 10))  # 100 ms
        assert k1 > 3.0, f"{name}: 1 s excess kurtosis {k1:.1f}"
        assert k01 > k1, f"{name}: tails should fatten at shorter horizons ({k01:.1f} vs {k1:.1f})"


def fano_1s(exch_ts: np.ndarray, start_ns: int) -> tuple[float, float]:
    counts = np.bincount((exch_ts - start_ns) // 1_000_000_000).astype(np.float64)
    acf1 = np.corrcoef(counts[:-1], counts[1:])[0, 1]
    return float(counts.var() / counts.mean()), float(acf1)


def test_trade_arrivals_cluster(market, config):
    poisson = np.random.default_rng(0).poisson(60.0, size=MINUTES * 60).astype(np.float64)
    assert poisson.var() / poisson.mean() < 1.3  # what no clustering looks like
    for name, events in market.items():
        fano, acf1 = fano_1s(trade_messages(events.table)[0], config.start_ns)
        assert fano > 3.0, f"{name}: Fano factor {fano:.1f}"
        assert acf1 > 0.2, f"{name}: lag-1 autocorrelation of counts {acf1:.2f}"


def test_no_clustering_without_excitation_or_stochastic_volatility():
    flat = dataclasses.replace(FUTURES, hawkes_branching=0.0)
    cfg = SynthConfig(seed=3, hours=5 / 60, instruments=(flat,), sv_slow_std=0.0, sv_fast_std=0.0)
    ts = trade_messages(synthetic_market(cfg)["futures"].table)[0]
    fano, _ = fano_1s(ts, cfg.start_ns)
    assert 0.7 < fano < 1.3, f"a plain Poisson flow should give Fano ~1, got {fano:.2f}"


def test_trade_sizes_are_heavy_tailed(market, config):
    for inst in config.instruments:
        _, _, sizes = trade_messages(market[inst.name].table)
        alpha = hill_alpha(sizes)
        assert alpha == pytest.approx(inst.trade_size_alpha, rel=0.25), f"{inst.name}: Hill {alpha:.2f}"
        assert sizes.min() >= inst.trade_size_min * (1 - 1e-9) - inst.lot_size


def test_lead_lag_is_recovered(mids):
    bins = 10  # 100 ms of 10 ms samples
    lag, corr = lead_lag_peak(log_returns(mids["spot"], bins), log_returns(mids["futures"], bins), 10)
    assert lag == round(LAG_MS / 100), f"peak at {lag} bins: {np.round(corr, 2)}"  # +3: spot leads
    assert corr.max() > 0.3 and corr.max() > 3 * abs(corr[10])


@pytest.mark.parametrize("lag_ms, bin_ms", [(700.0, 100), (0.0, 100), (150.0, 50)])
def test_other_lags_are_recovered(lag_ms, bin_ms):
    cfg = SynthConfig(seed=11, hours=8 / 60, lead_lag_ms=lag_ms)
    market = synthetic_market(cfg)
    samples = sample_grid(cfg)
    rets = {}
    for name, events in market.items():
        bid, ask = top_of_book(events, samples)
        rets[name] = log_returns((bid + ask) * 0.5 * events.instrument.tick_size, bin_ms * 1_000_000 // SAMPLE_NS)
    lag, corr = lead_lag_peak(rets["spot"], rets["futures"], 12)
    assert lag == round(lag_ms / bin_ms), f"lag {lag_ms} ms: peak at {lag} bins of {bin_ms} ms: {np.round(corr, 2)}"


def test_feed_latency_is_positive_with_jitter(market, config):
    for inst in config.instruments:
        table = market[inst.name].table
        latency = table["local_ts"] - table["exch_ts"]
        assert latency.min() >= inst.feed_latency_base_ns
        assert inst.feed_latency_base_ns < np.median(latency) < inst.feed_latency_base_ns + 10_000_000
        assert latency.std() > 500_000 and len(np.unique(latency)) > 1000


def test_zero_jitter_gives_the_base_latency():
    inst = dataclasses.replace(SPOT, feed_jitter_median_ns=0, feed_latency_base_ns=2_500_000)
    table = synthetic_market(SynthConfig(hours=1 / 60, instruments=(inst,)))["spot"].table
    assert np.all(table["local_ts"] - table["exch_ts"] == 2_500_000)


# ---------------------------------------------------------------------------------------------
# BBO rows, saving, configuration errors
# ---------------------------------------------------------------------------------------------


def test_bbo_rows_match_the_depth_book():
    cfg = SynthConfig(seed=5, hours=2 / 60, emit_bbo=True)
    for name, events in synthetic_market(cfg).items():
        table, inst = events.table, events.instrument
        assert np.any(table["kind"] == BBO)
        samples = sample_grid(cfg)
        full_bid, full_ask = top_of_book(events, samples)
        quotes = table[table["kind"] != DEPTH]  # trades, clears, snapshot and BBO rows
        quotes = quotes[quotes["kind"] != SNAPSHOT]
        replay = replay_book(quotes, inst.tick_size, inst.lot_size, sample_ts=samples, n_levels=1, use_bbo=True)
        assert np.array_equal(replay.bid_ticks[:, 0], full_bid), name
        assert np.array_equal(replay.ask_ticks[:, 0], full_ask), name


def test_write_synthetic_round_trips(tmp_path):
    cfg = SynthConfig(seed=2, hours=1 / 60)
    paths = write_synthetic(cfg, tmp_path / "synth")
    assert [p.name for p in paths] == ["futures.npz", "spot.npz"]
    fresh = synthetic_market(cfg)
    for path in paths:
        loaded = load_native(path)
        original = fresh[path.stem]
        assert loaded.table.tobytes() == original.table.tobytes()
        assert loaded.instrument == original.instrument
        assert loaded.meta["counts"] == original.meta["counts"]
    assert not list((tmp_path / "synth").glob("*.partial"))


@pytest.mark.parametrize("make, key", [
    (lambda: SynthConfig(hours=0), "hours"),
    (lambda: SynthConfig(lead_lag_ms=-1), "lead_lag_ms"),
    (lambda: SynthConfig(instruments=(FUTURES, FUTURES)), "instruments"),
    (lambda: SynthInstrument(name="x", hawkes_branching=1.0), "hawkes_branching"),
    (lambda: SynthInstrument(name="x", tick_size=0.0), "tick_size"),
    (lambda: SynthInstrument(name="x", lot_size=0.01, trade_size_min=0.001), "trade_size_min"),
    (lambda: SynthInstrument(name="x", depth_levels=1), "depth_levels"),
    (lambda: SynthInstrument(name="x", informed_share=1.5), "informed_share"),
    (lambda: SynthInstrument(name="x", informed_horizon_ms=-1.0), "informed_horizon_ms"),
])
def test_bad_config_names_the_key(make, key):
    with pytest.raises(InputError) as info:
        make()
    assert info.value.key == key
