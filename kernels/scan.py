"""The scan backtest: one lane is a pure step over frame rows; lanes are vmapped.

``make_backtest(config) -> (init, step)`` in the optax style; :func:`run_lanes` wires them
into ``lax.scan`` over rows and ``vmap`` over lanes.

One step at row ``r`` (DESIGN §3, the contract the exact engine reproduces in parity mode):

1. metrics see the state after every fill up to ``local_ts[r]``, valued at the local mid (as
   hftbacktest's Recorder would at each decision);
2. the policy turns ``(params, local row r, position)`` into a desired grid; a side stops
   quoting when |position| has reached ``max_position`` (qty units) on that side.  Orders
   already resting or in flight can still fill, so the position can exceed the cap by at most
   one step's fills: the old grid in window a plus the new grid in window b, i.e.
   ``2 x levels x qty`` (more with latencies longer than the interval);
3. window a: the resting orders (the last arrived decision's) fill against window a;
4. if a decision arrives in the row (``lag_b < lag_a``), its grid replaces the resting orders
   (keep / cancel / post-only submit, :func:`mmsweep.kernels.orders.arrive`);
5. window b: the resting orders fill against window b.

Accounting is in *lots* and *relative ticks* so float32 lanes stay exact: positions and order
sizes are whole lots, and with ``cash_ticks = -Σ side·lots·tick_rel`` the equity is
``tick_size·lot_size·cm·(cash_ticks + position_lots·mid_rel) - fees`` (the base price cancels
because Σ side·lots = position).  Order sizes are rounded down to whole lots.  Fees are ``maker_fee·notional`` (positive = cost,
negative = rebate), notional = ``qty·price·contract_multiplier`` in quote currency.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import orders as om
from .metrics import MetricsConfig, MetricsState, metrics_finalize, metrics_init, metrics_update
from .fills import get_fill_model
from .policies.base import Market, Observation

# Frame sentinels become these (int32-safe) after rebasing to relative ticks.
NO_FILL = 1 << 29


class KernelConfig(NamedTuple):
    """Static settings of a sweep kernel (hashable; closed over, not traced).

    Attributes:
        policy: ``quote(params, obs, position, market, xp)`` function.
        market: static instrument facts; ``market.max_levels`` bounds the levels per side.
        fill_model: ``"cross"`` or ``"touch"``.
        maker_fee: fee rate of passive fills (fraction of notional; -0.00005 = 0.5 bp rebate).
        contract_multiplier: quote currency per (qty x price).
        ring: how many past decisions to keep (frames' max lag + 1).
        metrics: resampling, book size and annualisation of the metrics (hftbacktest's definitions,
            see :mod:`mmsweep.kernels.metrics`); its ``phase_rows`` aligns windows to the epoch.
        unroll: ``lax.scan`` unroll factor (bench/throughput.py measures the choice).
        dtype: float dtype of the lane state (jnp.float32 or jnp.float64).
    """

    policy: Callable
    market: Market
    fill_model: str = "cross"
    maker_fee: float = 0.0
    contract_multiplier: float = 1.0
    ring: int = 2
    metrics: MetricsConfig = MetricsConfig(resample_every=10, book_size=100_000.0)
    dtype: Any = jnp.float32
    unroll: int = 1  # scan steps per loop iteration; wider unrolls measured slower on CPU lanes


class LaneState(NamedTuple):
    position: jnp.ndarray  # lots (whole numbers, exact in float32 up to 2**24), signed
    cash_ticks: jnp.ndarray  # lots x relative ticks
    fees: jnp.ndarray  # quote currency
    traded_value: jnp.ndarray  # quote currency
    trades: jnp.ndarray  # count
    rejections: jnp.ndarray  # post-only rejections, count
    max_abs_position: jnp.ndarray  # lots
    bids: om.SideOrders
    asks: om.SideOrders
    ring: jnp.ndarray  # [ring, 7 + 2L]: bid_top, ask_top, step, bid_levels, ask_levels, bid lots, ask lots,
    # then which bid / ask levels already had an order at decision time (om.present)
    metrics: MetricsState  # equity resampled online, O(1) per lane


def rebase_frames(frames, base_tick: int, dtype=jnp.float32) -> dict[str, jnp.ndarray]:
    """Frame columns as device arrays in relative ticks (int32), sentinels made int32-safe."""
    c = frames.columns
    out: dict[str, Any] = {}
    for name in ("bid", "ask", "bid_ack", "ask_ack", "buy_fill_a", "sell_fill_a", "buy_fill_b", "sell_fill_b",
                 "sell_trade_low_a", "buy_trade_high_a", "sell_trade_low_b", "buy_trade_high_b"):
        rel = np.clip(c[name].astype(np.int64) - base_tick, -NO_FILL, NO_FILL)
        out[name] = jnp.asarray(rel, jnp.int32)
    out["lag_a"] = jnp.asarray(np.minimum(c["lag_a"], 1 << 20), jnp.int32)
    out["lag_b"] = jnp.asarray(np.minimum(c["lag_b"], 1 << 20), jnp.int32)
    out["features"] = jnp.asarray(frames.features, dtype)
    out["index"] = jnp.arange(len(frames), dtype=jnp.int32)
    return out


def make_backtest(config: KernelConfig):
    """Return ``(init, step)`` for one lane: ``step(params, state, row) -> state``."""
    L = config.market.max_levels
    dtype = config.dtype
    thresholds = get_fill_model(config.fill_model)
    lot = config.market.lot_size
    tick_value = config.market.tick_size * config.contract_multiplier * lot  # quote ccy per (lot x tick)
    base_price = config.market.base_tick * config.market.tick_size

    def init() -> LaneState:
        z = jnp.zeros((), dtype)
        return LaneState(
            position=z, cash_ticks=z, fees=z, traded_value=z, trades=z, rejections=z, max_abs_position=z,
            bids=om.empty_side(L, dtype), asks=om.empty_side(L, dtype),
            ring=jnp.zeros((config.ring, 7 + 2 * L), dtype),
            metrics=metrics_init(dtype),
        )

    def apply_fills(state: LaneState, window: dict) -> LaneState:
        buy_thr, sell_thr = thresholds(window)
        bids, bid_hit = om.fills(state.bids, buy_thr, +1)
        asks, ask_hit = om.fills(state.asks, sell_thr, -1)
        bid_qty = jnp.where(bid_hit, state.bids.qty, 0)
        ask_qty = jnp.where(ask_hit, state.asks.qty, 0)
        bought = bid_qty.sum()
        sold = ask_qty.sum()
        bid_ticks = state.bids.tick.astype(dtype)
        ask_ticks = state.asks.tick.astype(dtype)
        cash_ticks = state.cash_ticks - (bid_qty * bid_ticks).sum() + (ask_qty * ask_ticks).sum()
        notional = ((bid_qty * (bid_ticks * config.market.tick_size + base_price)).sum()
                    + (ask_qty * (ask_ticks * config.market.tick_size + base_price)).sum()) * (config.contract_multiplier * lot)
        position = state.position + bought - sold
        return state._replace(
            bids=bids, asks=asks, position=position, cash_ticks=cash_ticks,
            fees=state.fees + config.maker_fee * notional,
            traded_value=state.traded_value + notional,
            trades=state.trades + bid_hit.sum() + ask_hit.sum(),
            max_abs_position=jnp.maximum(state.max_abs_position, jnp.abs(position)),
        )

    def sample_metrics(state: LaneState, row, mid_rel) -> LaneState:
        # The state after every fill up to local_ts[r], valued at the local mid (a Recorder row).
        equity = tick_value * (state.cash_ticks + state.position * mid_rel) - state.fees
        mid_price = mid_rel * config.market.tick_size + base_price
        return state._replace(metrics=metrics_update(
            config.metrics, state.metrics, row_index=row["index"], equity=equity, position=state.position * lot,
            mid_price=mid_price, num_trades_cum=state.trades, trading_value_cum=state.traded_value,
            fees_cum=state.fees))

    def step(params: dict, state: LaneState, row: dict) -> LaneState:
        bid, ask = row["bid"], row["ask"]
        mid_rel = (bid + ask).astype(dtype) * 0.5
        state = sample_metrics(state, row, mid_rel)

        quote = config.policy(params, Observation(bid.astype(dtype), ask.astype(dtype), row["features"]),
                              state.position * lot, config.market, jnp)
        # In lots; the epsilon keeps 0.2 / 0.001 = 199.99999 from letting a 200th lot through.
        max_position = params.get("max_position", jnp.inf) / lot - 1e-3
        bid_levels = jnp.where(state.position >= max_position, 0, jnp.clip(quote.bid_levels, 0, L))
        ask_levels = jnp.where(state.position <= -max_position, 0, jnp.clip(quote.ask_levels, 0, L))
        bid_size, ask_size = quote.sizes()
        top_bid, top_ask = jnp.round(quote.bid_top), jnp.round(quote.ask_top)
        step_ticks = jnp.maximum(jnp.round(quote.step), 1)
        seen_bid = om.present(state.bids, top_bid.astype(jnp.int32), step_ticks.astype(jnp.int32), +1)
        seen_ask = om.present(state.asks, top_ask.astype(jnp.int32), step_ticks.astype(jnp.int32), -1)
        decision = jnp.concatenate([jnp.stack([
            top_bid, top_ask, step_ticks, bid_levels, ask_levels,
            # sizes rounded down to whole lots (1e-6: 0.01/0.001 = 9.999999)
            jnp.floor(bid_size / lot + 1e-6), jnp.floor(ask_size / lot + 1e-6)]).astype(dtype),
            seen_bid.astype(dtype), seen_ask.astype(dtype)])
        ring = state.ring.at[row["index"] % config.ring].set(decision)
        state = state._replace(ring=ring)

        state = apply_fills(state, _window(row, "a"))

        arrived = row["lag_b"] < row["lag_a"]
        grid = ring[(row["index"] - row["lag_b"]) % config.ring]
        top_b, top_a, step_t = grid[0].astype(jnp.int32), grid[1].astype(jnp.int32), grid[2].astype(jnp.int32)
        n_b, n_a, lots_b, lots_a = grid[3], grid[4], grid[5], grid[6]
        # A side whose size rounds to zero lots sends nothing.
        seen_b, seen_a = grid[7:7 + L] > 0, grid[7 + L:] > 0
        new_bids, rej_b = om.arrive(state.bids, top_b, step_t, jnp.where(lots_b > 0, n_b, 0), lots_b,
                                    row["ask_ack"], +1, seen_b)
        new_asks, rej_a = om.arrive(state.asks, top_a, step_t, jnp.where(lots_a > 0, n_a, 0), lots_a,
                                    row["bid_ack"], -1, seen_a)
        pick = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(arrived, n, o), new, old)  # noqa: E731
        state = state._replace(bids=pick(new_bids, state.bids), asks=pick(new_asks, state.asks),
                               rejections=state.rejections + jnp.where(arrived, rej_b + rej_a, 0))

        return apply_fills(state, _window(row, "b"))

    return init, step


def _window(row: dict, which: str) -> dict:
    return {
        "buy_fill": row[f"buy_fill_{which}"], "sell_fill": row[f"sell_fill_{which}"],
        "sell_trade_low": row[f"sell_trade_low_{which}"], "buy_trade_high": row[f"buy_trade_high_{which}"],
    }


def final_metrics(state: LaneState, config: KernelConfig) -> dict[str, jnp.ndarray]:
    """hftbacktest-compatible metrics (:func:`mmsweep.kernels.metrics.metrics_finalize`) plus the
    kernel's own counters: post-only ``Rejections`` and ``FinalPosition`` (qty units)."""
    out = metrics_finalize(config.metrics, state.metrics)
    out["Rejections"] = state.rejections
    out["FinalPosition"] = state.position * config.market.lot_size
    return out


def run_lanes(params: dict[str, Any], rows: dict[str, jnp.ndarray], config: KernelConfig, *,
              record: bool = False):
    """Backtest every lane of ``params`` (each value an array ``[lanes]``) over ``rows``.

    Returns a dict of metric arrays ``[lanes]``; with ``record=True`` also per-row ``equity``
    and ``position`` arrays ``[lanes, rows]`` (use only for a few lanes: memory is lanes x rows).
    Compiled once per (config, record, parameter names).
    """
    lane_params = {k: jnp.asarray(v, config.dtype) for k, v in sorted(params.items())}
    fn = _compiled(config, bool(record), tuple(lane_params))
    return fn(lane_params, rows)


@functools.lru_cache(maxsize=32)
def _compiled(config: KernelConfig, record: bool, names: tuple):
    init, step = make_backtest(config)
    tick_value = config.market.tick_size * config.contract_multiplier * config.market.lot_size

    def one_lane(lane_params, rows):
        def body(state, row):
            new = step(lane_params, state, row)
            if record:
                mid_rel = (row["bid"] + row["ask"]).astype(config.dtype) * 0.5
                equity = tick_value * (state.cash_ticks + state.position * mid_rel) - state.fees
                return new, (equity, state.position * config.market.lot_size)
            return new, None

        state, ys = jax.lax.scan(body, init(), rows, unroll=config.unroll)
        out = final_metrics(state, config)
        if record:
            out["equity"], out["position"] = ys
        return out

    return jax.jit(jax.vmap(one_lane, in_axes=(0, None)))
