"""The kernel's queue fill model against the exact engine's queue models.

Degenerate mode: with at most one market message per exposure window the frames' per-window
aggregates lose nothing, so the kernel (``fill_model: queue``) and the exact engine (same queue
model, strict cross otherwise, constant entry latency below the interval, no response latency)
must make the same fills at the same decisions.  The test market sends one message every 150 ms
(every window is at most one 100 ms row long).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmsweep.kernels.metrics import MetricsConfig
from mmsweep.kernels.policies import bind
from mmsweep.kernels.policies.base import Market
from mmsweep.kernels.scan import KernelConfig, rebase_frames, run_lanes
from mmsweep.kernels.numba_backend import run_lanes_numba
from mmsweep.replay import ReplayConfig, replay_policy
from mmsweep.sweep.data.events import DEPTH, SNAPSHOT, TRADE, Events, Instrument, make_table, sort_events
from mmsweep.sweep.frames import FrameSpec, LatencySpec, build_frames

LEVELS = 3
QUEUE_LEVELS = 8  # covers every tick the lanes rest at here: the aggregation then loses nothing
ENTRY_NS = 10_000_000


pytestmark = pytest.mark.usefixtures("x64")  # float64 kernels, module-wide (conftest)


def one_event_market(n_messages: int, seed: int, gap_ns: int = 150_000_000) -> Events:
    """A small book (tick 0.1, lot 0.001) whose messages come ``gap_ns`` apart, one thing at a
    time: a trade at the best bid or ask, then (next message) its size decrease; a size added or
    cancelled at one of the four best levels of a side; or the whole book moving one tick (one
    message: the level given up on one side, a new one on the other)."""
    rng = np.random.default_rng(seed)
    tick, lot = 0.1, 0.001
    bids = {1000 - k: float(rng.integers(5, 60)) * lot for k in range(8)}
    asks = {1001 + k: float(rng.integers(5, 60)) * lot for k in range(8)}
    rows = []  # (exch_ts, kind, side, tick, qty)
    t = 1_700_000_000_000_000_000
    for p, q in bids.items():
        rows.append((t, SNAPSHOT, +1, p, q))
    for p, q in asks.items():
        rows.append((t, SNAPSHOT, -1, p, q))
    pending = None  # a trade's size decrease, sent in the next message

    def refill(book, side):  # keep at least four levels a side (a deep one joins the message)
        while len(book) < 4:
            deep = (min(book) - 1) if side > 0 else (max(book) + 1)
            book[deep] = float(rng.integers(5, 40)) * lot
            rows.append((t, DEPTH, side, deep, book[deep]))

    for _ in range(n_messages):
        t += gap_ns
        if pending is not None:
            side, p, q = pending
            book = bids if side > 0 else asks
            book[p] = max(book[p] - q, 0.0)
            rows.append((t, DEPTH, side, p, book[p]))
            if book[p] == 0.0:
                del book[p]
                refill(book, side)
            pending = None
            continue
        u = rng.uniform()
        if u < 0.35:  # a trade at the touch: a seller hits the best bid or a buyer lifts the best ask
            side = +1 if rng.uniform() < 0.5 else -1
            book = bids if side > 0 else asks
            p = max(book) if side > 0 else min(book)
            q = min(book[p], float(rng.integers(1, 30)) * lot)
            rows.append((t, TRADE, -side, p, q))
            pending = (side, p, q)
        elif u < 0.85:  # size added or cancelled near the touch
            side = +1 if rng.uniform() < 0.5 else -1
            book = bids if side > 0 else asks
            best = max(book) if side > 0 else min(book)
            p = best - side * int(rng.integers(0, 4))
            q = max(book.get(p, 0.0) + float(rng.integers(-20, 25)) * lot, 0.0)
            if q == 0.0 and len(book) <= 4:
                q = 10 * lot
            book[p] = q
            rows.append((t, DEPTH, side, p, q))
            if q == 0.0:
                del book[p]
                refill(book, side)
        else:  # the book moves a tick: the touch on one side is given up, a level joins the other
            gives, takes = (asks, bids) if rng.uniform() < 0.5 else (bids, asks)
            side = -1 if gives is asks else +1  # the side giving up its touch
            p = min(gives) if side < 0 else max(gives)
            rows.append((t, DEPTH, side, p, 0.0))
            del gives[p]
            deep = (max(gives) + 1) if side < 0 else (min(gives) - 1)  # keep the side's depth
            gives[deep] = float(rng.integers(5, 40)) * lot
            rows.append((t, DEPTH, side, deep, gives[deep]))
            takes[p] = float(rng.integers(5, 40)) * lot
            rows.append((t, DEPTH, -side, p, takes[p]))
            far = min(takes) if side < 0 else max(takes)
            rows.append((t, DEPTH, -side, far, 0.0))
            del takes[far]
    exch = np.array([r[0] for r in rows], np.int64)
    table = make_table(exch_ts=exch, local_ts=exch + 5_000_000, kind=[r[1] for r in rows],
                       side=[r[2] for r in rows], price=[r[3] * tick for r in rows], qty=[r[4] for r in rows])
    return Events(sort_events(table), Instrument(symbol="TEST", tick_size=tick, lot_size=lot), source="one-event test market")


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    events = one_event_market(6_000, seed=11)
    spec = FrameSpec(latency=LatencySpec(entry_ns=ENTRY_NS), queue_levels=QUEUE_LEVELS)
    frames = build_frames(events, spec, cache_dir=tmp_path_factory.mktemp("cache"))
    return events, frames


def lanes(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {"half_spread": rng.integers(0, 2, n) * 1.0, "skew": rng.uniform(0, 1, n),
            "grid_interval": rng.integers(1, 3, n) * 1.0, "n_levels": np.full(n, float(LEVELS)),
            "order_qty": np.full(n, 0.01), "max_position": np.full(n, 0.1), "relative": np.zeros(n)}


@pytest.mark.parametrize("queue", ["risk_averse", "power2", "log2"])
def test_kernel_queue_fills_equal_the_exact_engine(market, queue):
    events, frames = market
    inst = events.instrument
    base = int(np.median(frames["bid"]))
    mk = Market(inst.tick_size, inst.lot_size, base, (), 0.1, LEVELS)
    config = KernelConfig(bind("grid"), mk, "queue", -0.00005, 1.0, frames.meta["max_lag"] + 1,
                          MetricsConfig(resample_every=10, book_size=1e5), jnp.float64, queue_model=queue,
                          queue_n=2.0, queue_levels=QUEUE_LEVELS)
    params = lanes(12)
    rows = rebase_frames(frames, base, jnp.float64)
    fast = run_lanes(params, rows, config, record=True)
    decisions = frames["local_ts"]
    exact = replay_policy(events.table, tick_size=inst.tick_size, lot_size=inst.lot_size, decision_ts=decisions,
                          end_ts=int(decisions[-1]) + 100_000_000, features=np.zeros((len(decisions), 0)), market=mk,
                          policy="grid", static=None, params=params,
                          config=dataclasses.replace(ReplayConfig.degenerate(ENTRY_NS, processes=1), queue=queue,
                                                     queue_n=2.0))
    np.testing.assert_array_equal(np.asarray(fast["position"]), exact.position)
    np.testing.assert_allclose(np.asarray(fast["equity"]), exact.equity, rtol=0, atol=1e-9)
    trades = np.asarray(fast["NumberOfTrades"])
    assert trades.sum() > 30
    # the queue mattered: strict cross alone fills less
    cross = run_lanes(params, rows, config._replace(fill_model="cross"))
    assert trades.sum() > np.asarray(cross["NumberOfTrades"]).sum()
    if queue == "risk_averse":  # and the numba backend runs the same queue model (one compile: slow)
        numba = run_lanes_numba(params, {k: np.asarray(v) for k, v in rows.items()}, config)
        np.testing.assert_array_equal(np.asarray(numba["NumberOfTrades"]), trades)
        np.testing.assert_allclose(np.asarray(numba["PnL"]), np.asarray(fast["PnL"]), rtol=1e-12, atol=1e-12)
