"""One strategy lane's step over a frame row, written once for every backend.

``make_lane(config)`` returns a :class:`Lane` of small pure functions on the scalars of one lane
(optax style: the state is a pytree, the functions never branch on values).  The JAX backend
(:mod:`mmsweep.kernels.scan`) vmaps them over lanes inside ``lax.scan``; the CPU backend
(:mod:`mmsweep.kernels.numba_backend`) traces each one to a jaxpr and compiles it into a numba
loop over blocks of lanes; the GPU backend (:mod:`mmsweep.kernels.pallas_backend`) loops over
rows inside one kernel launch.  They differ only in how rows, lanes and the decision ring are
laid out, so they agree (tests/test_backends.py).

The step at row ``r`` (DESIGN §3; the exact engine reproduces it in its degenerate mode):

1. ``observe``: the state after every fill up to ``local_ts[r]``, valued at the local mid, is
   what the metrics see (``commit`` on rows that close a resample window, ``track`` on all);
2. ``decide``: the policy turns ``(params, local row r, position)`` into a quote, and
   :func:`mmsweep.kernels.orders.to_decision` into a :class:`~mmsweep.kernels.orders.Decision`
   (position cap, tick and lot rounding), with the levels of the new grid that already hold a
   live order *as the bot sees them now* (those get no new order, even if they fill before the
   decision's messages arrive: the bot only learns of that fill afterwards);
3. ``fill`` window a: the resting orders (the last arrived decision's) fill;
4. ``arrive``, if a decision reaches the exchange in this row (``lag_b < lag_a``): orders whose
   tick is still wanted keep their place and size, the rest are cancelled, and the missing
   levels are sent post-only (rejected if marketable against the exchange best at arrival);
5. ``fill`` window b.

Accounting is in lots and relative ticks so float32 lanes stay exact: position and order sizes
are whole lots, ``cash = -sum(side * lots * tick_rel)``, and the equity is ``tick_size *
lot_size * contract_multiplier * (cash + position * mid_rel) - fees`` in quote currency
(the base price cancels because ``sum(side * lots) = position``).  Fees are ``maker_fee *
notional`` (positive = cost, negative = rebate), ``notional = lots * lot_size * price *
contract_multiplier``.

Inverse (coin-margined) contracts are accounted in the coin, as hftbacktest's InverseAsset and
the exact engine do: a fill of ``q = lots * lot_size`` contracts at ``p`` is worth
``contract_size * q / p`` coins, and the equity is ``contract_size * sum(side * q * (1/p_fill -
1/mid)) - fees``.  Kept relative to the base price ``p0`` so that float32 keeps its digits:
``cash = -sum(side * lots * (1/p0 - 1/p))`` and ``equity = contract_size * lot_size * (cash +
position * (1/p0 - 1/mid)) - fees``; fees are ``maker_fee`` times the coin notional.  The position can exceed the cap by at most one step's fills: the old
grid filled in window a plus the new one in window b (more with latencies above the interval).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax.numpy as jnp

from . import orders as om
from .fills import FillModel, get_fill_model
from .metrics import (MetricsConfig, MetricsState, closes_window, metrics_commit, metrics_finalize, metrics_init,
                      metrics_row)
from .policies.base import Market, Observation

# Frame sentinels become these (int32-safe) after rebasing to relative ticks.
NO_FILL = 1 << 29

#: Frame columns every lane step reads, besides those its fill model declares per window.
ROW_COLUMNS = ("index", "bid", "ask", "bid_ack", "ask_ack", "lag_a", "lag_b", "entry_rejected")


class KernelConfig(NamedTuple):
    """Static settings of a sweep kernel (hashable; closed over, not traced).

    Attributes:
        policy: ``quote(params, obs, position, market, xp)`` function.
        market: static instrument facts; ``market.max_levels`` bounds the levels per side.
        fill_model: a name in :data:`mmsweep.kernels.fills.FILL_MODELS`.
        maker_fee: fee rate of passive fills (fraction of notional; -0.00005 = 0.5 bp rebate).
        contract_multiplier: linear: quote currency per (qty x price); inverse: the contract size
            (quote currency per contract, e.g. 10 USD for ETHUSD_PERP).
        inverse: coin-margined (inverse) contract: every money figure is in the coin.
        queue_model, queue_n, queue_levels: the ``queue`` fill model's queue model (as the exact
            engine's), its exponent, and the frames' queue levels (``FrameSpec.queue_levels``).
        ring: how many past decisions to keep (frames' max lag + 1).
        metrics: resampling, book size and annualisation of the metrics (hftbacktest's definitions,
            see :mod:`mmsweep.kernels.metrics`); its ``phase_rows`` aligns windows to the epoch.
        dtype: float dtype of the lane state (jnp.float32 or jnp.float64).
        unroll: ``lax.scan`` unroll factor of the JAX backend.
        constant_size: every lane's order size per side is the same at every decision (the
            policy's ``invariants`` say so for the swept values): one lots value per side instead
            of one per level, and fills counted with popcounts.
        constant_step: every lane's grid step is the same at every decision (``invariants``):
            keeping and cancelling is then a shift of the side's mask, not a loop over levels.
    """

    policy: Callable
    market: Market
    fill_model: str = "cross"
    maker_fee: float = 0.0
    contract_multiplier: float = 1.0
    ring: int = 2
    metrics: MetricsConfig = MetricsConfig(resample_every=10, book_size=100_000.0)
    dtype: Any = jnp.float32
    unroll: int = 1
    constant_size: bool = False
    constant_step: bool = False
    inverse: bool = False
    queue_model: str = "power"
    queue_n: float = 2.0
    queue_levels: int = 0


class SideBook(NamedTuple):
    """One side's resting orders: a regular grid from ``top`` (int32 rel ticks) every
    ``LaneState.step`` ticks outward, ``mask`` (int32) bit ``j`` = level ``j`` is live; ``lots``
    one float per side (constant size) or one per level; ``order_state`` the fill model's
    per-order state, one tuple per level."""

    top: Any
    mask: Any
    lots: tuple
    order_state: tuple


class LaneState(NamedTuple):
    """A lane's carry.  Money in quote currency, position and sizes in lots, ticks relative."""

    position: Any  # lots (whole numbers, exact in float32 up to 2**24), signed
    cash: Any  # linear: -sum(side lots tick_rel); inverse: -sum(side lots (1/base price - 1/price))
    fees: Any  # quote currency (the coin for inverse contracts)
    traded_value: Any  # quote currency (the coin for inverse contracts)
    trades: Any  # fills, count
    rejections: Any  # post-only (and latency-model) rejections, count
    max_abs_position: Any  # lots, after every fill
    step: Any  # int32 ticks between the resting levels (both sides)
    bids: SideBook
    asks: SideBook
    metrics: MetricsState


class Pending(NamedTuple):
    """A decision on its way to the exchange, with the levels of its grid that already held a
    live order when it was made (int32 masks), and whether the latency model rejects its
    messages before they reach the exchange (int32 0/1, the frames' ``entry_rejected``)."""

    decision: om.Decision
    bid_seen: Any
    ask_seen: Any
    entry_rejected: Any


class Observed(NamedTuple):
    """What the metrics see at a row: equity (quote currency), |position| x mid (quote currency
    per contract, hftbacktest's MaxPositionValue), position (qty units), local mid (price)."""

    equity: Any
    pos_value: Any
    position: Any
    mid_price: Any


class Lane(NamedTuple):
    """The lane step as pure functions of one lane's scalars (see the module docstring)."""

    init: Callable  # () -> LaneState
    empty_pending: Callable  # () -> Pending (the ring's initial entries: nothing wanted)
    observe: Callable  # (state, row) -> Observed
    commit: Callable  # (state, observed) -> state, on rows that close a resample window
    track: Callable  # (state, observed, close) -> state, every row after commit
    decide: Callable  # (params, state, row) -> Pending
    fill: Callable  # (state, window) -> state
    arrive: Callable  # (state, pending, row) -> state
    finalize: Callable  # (state) -> dict of metrics
    fill_model: FillModel


def window_columns(fill_model: FillModel, which: str) -> dict[str, str]:
    """``{model column: frame column}`` of window ``which`` (``"a"`` or ``"b"``), plus the row's
    local touch (``bid``/``ask``) that per-tick columns are measured from."""
    return {**{c: f"{c}_{which}" for c in fill_model.columns}, "bid": "bid", "ask": "ask"}


def fill_model_for(config: KernelConfig) -> FillModel:
    return get_fill_model(config.fill_model, queue_model=config.queue_model, queue_n=config.queue_n,
                          queue_levels=config.queue_levels, lot_size=config.market.lot_size)


def make_lane(config: KernelConfig) -> Lane:
    """Build the lane functions for ``config`` (everything static is closed over)."""
    L = config.market.max_levels
    if not 1 <= L <= om.MAX_LEVELS:
        raise ValueError(f"max_levels must be in 1..{om.MAX_LEVELS}, got {L}")
    dtype = config.dtype
    model = fill_model_for(config)
    window_b = window_columns(model, "b")
    market = config.market
    lot = market.lot_size
    tick_value = market.tick_size * config.contract_multiplier * lot  # quote ccy per (lot x tick)
    base_price = market.base_tick * market.tick_size
    n_lots = 1 if config.constant_size else L
    zero = lambda: jnp.zeros((), dtype)  # noqa: E731

    def empty_side() -> SideBook:
        return SideBook(top=jnp.int32(0), mask=jnp.int32(0), lots=tuple(zero() for _ in range(n_lots)),
                        order_state=tuple(tuple(zero() for _ in model.order_state) for _ in range(L)))

    def init() -> LaneState:
        return LaneState(position=zero(), cash=zero(), fees=zero(), traded_value=zero(), trades=zero(),
                         rejections=zero(), max_abs_position=zero(), step=jnp.int32(1), bids=empty_side(),
                         asks=empty_side(), metrics=metrics_init(dtype))

    def empty_pending() -> Pending:
        i0 = jnp.int32(0)
        return Pending(om.Decision(i0, i0, jnp.int32(1), i0, i0, zero(), zero()), i0, i0, i0)

    def observe(state: LaneState, row) -> Observed:
        mid_rel = (row["bid"] + row["ask"]).astype(dtype) * 0.5
        mid_price = mid_rel * market.tick_size + base_price
        if config.inverse:  # 1/p0 - 1/mid = (mid - p0) / (mid p0)
            coin_per_lot = config.contract_multiplier * lot
            equity = coin_per_lot * (state.cash + state.position * (mid_rel * market.tick_size) / (mid_price * base_price)) \
                - state.fees
        else:
            equity = tick_value * (state.cash + state.position * mid_rel) - state.fees
        position = state.position * lot
        return Observed(equity, jnp.abs(position) * mid_price, position, mid_price)

    def commit(state: LaneState, seen: Observed) -> LaneState:
        return state._replace(metrics=metrics_commit(state.metrics, seen.equity, seen.pos_value))

    def track(state: LaneState, seen: Observed, close) -> LaneState:
        return state._replace(metrics=metrics_row(
            state.metrics, close=close, equity=seen.equity, position=seen.position, mid_price=seen.mid_price,
            num_trades_cum=state.trades, trading_value_cum=state.traded_value, fees_cum=state.fees))

    def remap(mask, top, step, new_top, new_step, side: int, lots=None):
        if config.constant_step and lots is None:
            return om.shift_remap(mask, top, new_top, new_step, side, L, dtype)
        return om.remap(mask, top, step, new_top, new_step, side, L, dtype, lots=lots)

    def decide(params, state: LaneState, row) -> Pending:
        bid, ask = row["bid"], row["ask"]
        quote = config.policy(params, Observation(bid.astype(dtype), ask.astype(dtype), row["features"]),
                              state.position * lot, market, jnp)
        d = om.to_decision(quote, state.position, market, jnp, dtype)
        bid_seen = remap(state.bids.mask, state.bids.top, state.step, d.bid_top, d.step, +1)
        ask_seen = remap(state.asks.mask, state.asks.top, state.step, d.ask_top, d.step, -1)
        return Pending(d, bid_seen, ask_seen, (row["entry_rejected"] != 0).astype(jnp.int32))

    def filled_levels(book: SideBook, step, window, side: int):
        """(mask of the levels that fill, per-level fill-model state)."""
        if model.thresholds is not None:
            buy, sell = model.thresholds(window)
            return book.mask & om.reach(book.top, step, buy if side > 0 else sell, side, L), book.order_state
        outcome = model.on_window(window, side, [(om.level_tick(book.top, step, j, side), om.level_bit(book.mask, j),
                                                  book.order_state[j]) for j in range(L)], dtype)
        mask = jnp.int32(0)
        for j, (filled, _state) in enumerate(outcome):
            mask = mask | jnp.where(filled, jnp.int32(1 << j), jnp.int32(0))
        return mask & book.mask, tuple(st for _f, st in outcome)

    def side_fills(book: SideBook, step, window, side: int):
        """Fill one side in one window: (new book, lots bought or sold, cash per side unit (lots x
        tick; inverse: lots x (1/p0 - 1/p)), notional per contract unit (lots x price; inverse:
        lots / price), fill count)."""
        filled, order_state = filled_levels(book, step, window, side)
        count = om.popcount(filled)
        if config.constant_size and not config.inverse:
            # every order of the side has the same size: sums from two popcounts
            tick_sum = count * book.top - (side * step) * om.level_index_sum(filled, L)
            lots = book.lots[0]
            qty = lots * count.astype(dtype)
            lots_ticks = lots * tick_sum.astype(dtype)
            notional = lots * (tick_sum.astype(dtype) * market.tick_size + count.astype(dtype) * base_price)
        else:
            qty_l, ticks_l, notional_l = [], [], []
            for j in range(L):
                q = jnp.where(om.level_bit(filled, j), book.lots[0 if config.constant_size else j], 0)
                tick = om.level_tick(book.top, step, j, side).astype(dtype)
                price = tick * market.tick_size + base_price
                qty_l.append(q)
                if config.inverse:  # lots x (1/p0 - 1/p), and lots / p (coin notional per contract size)
                    ticks_l.append(q * (tick * market.tick_size) / (price * base_price))
                    notional_l.append(q / price)
                else:
                    ticks_l.append(q * tick)
                    notional_l.append(q * price)
            qty, lots_ticks, notional = level_sum(qty_l), level_sum(ticks_l), level_sum(notional_l)
        new = book._replace(mask=book.mask & ~filled, order_state=order_state)
        return new, qty, lots_ticks, notional, count.astype(dtype)

    def fill(state: LaneState, window) -> LaneState:
        return book_fills(state, window, side_fills, config)

    def side_arrive(book: SideBook, step, pending: Pending, row, side: int):
        """The decision's grid on one side at its arrival: (new book, rejections)."""
        d = pending.decision
        top, levels, lots, seen = ((d.bid_top, d.bid_levels, d.bid_lots, pending.bid_seen) if side > 0
                                   else (d.ask_top, d.ask_levels, d.ask_lots, pending.ask_seen))
        opposite = row["ask_ack"] if side > 0 else row["bid_ack"]
        wanted = om.below(levels)
        if config.constant_size:
            kept = remap(book.mask, book.top, step, top, d.step, side) & wanted
            new_lots = (lots,)
        else:
            held, held_lots = remap(book.mask, book.top, step, top, d.step, side, lots=book.lots)
            kept = held & wanted
            new_lots = tuple(jnp.where(om.level_bit(kept, j), held_lots[j], lots) for j in range(L))
        send = wanted & ~kept & ~seen
        # post-only: a level at or through the exchange's opposite best at arrival is rejected
        marketable = om.reach(top, d.step, opposite, side, L)
        # The latency model rejecting the decision's messages (negative entry latency in an
        # order-latency file): nothing reaches the exchange, no cancel either, so the old
        # orders stay and every order it would have sent counts as rejected.
        entry_rejected = pending.entry_rejected != 0
        rejected = jnp.where(entry_rejected, send, send & marketable)
        order_state = book.order_state
        if model.order_state:  # kept orders carry their state to the level they land on
            held_state = [om.remap(book.mask, book.top, step, top, d.step, side, L, dtype,
                                   lots=tuple(book.order_state[j][f] for j in range(L)))[1]
                          for f in range(len(model.order_state))]
            window = {name: row[col] for name, col in window_b.items()}  # window b starts at the arrival
            order_state = tuple(
                tuple(jnp.where(om.level_bit(kept, j), held_state[f][j], fresh)
                      for f, fresh in enumerate(model.init_order(window, om.level_tick(top, d.step, j, side), side,
                                                                 dtype)))
                for j in range(L))
        new = SideBook(top=top, mask=kept | (send & ~marketable), lots=new_lots, order_state=order_state)
        return _tree_select(entry_rejected, book, new), om.popcount(rejected).astype(dtype)

    def arrive(state: LaneState, pending: Pending, row) -> LaneState:
        bids, bid_rej = side_arrive(state.bids, state.step, pending, row, +1)
        asks, ask_rej = side_arrive(state.asks, state.step, pending, row, -1)
        step = jnp.where(pending.entry_rejected != 0, state.step, pending.decision.step)
        return state._replace(bids=bids, asks=asks, step=step, rejections=state.rejections + bid_rej + ask_rej)

    def finalize(state: LaneState) -> dict:
        out = metrics_finalize(config.metrics, state.metrics)
        out["Rejections"] = state.rejections
        out["FinalPosition"] = state.position * lot
        return out

    return Lane(init, empty_pending, observe, commit, track, decide, fill, arrive, finalize, model)


def book_fills(state, window, side_fills, config: KernelConfig):
    """One window's fills of both sides booked into a lane state (the hard step's and the smooth
    step's, which share these field names).  ``side_fills(book, step, window, side)`` returns
    ``(book, qty lots, cash (lots x ticks, or coin units for inverse), notional (lots x price),
    count)`` of one side; fees are maker fees on the notional in contracts x multiplier."""
    bids, bought, bid_cash, bid_notional, bid_count = side_fills(state.bids, state.step, window, +1)
    asks, sold, ask_cash, ask_notional, ask_count = side_fills(state.asks, state.step, window, -1)
    notional = (bid_notional + ask_notional) * (config.contract_multiplier * config.market.lot_size)
    position = state.position + bought - sold
    return state._replace(
        bids=bids, asks=asks, position=position, cash=state.cash - bid_cash + ask_cash,
        fees=state.fees + config.maker_fee * notional, traded_value=state.traded_value + notional,
        trades=state.trades + bid_count + ask_count,
        max_abs_position=jnp.maximum(state.max_abs_position, jnp.abs(position)))


def level_sum(terms):
    """Sum over levels in a fixed pairwise order: the even levels' sum plus the odd levels',
    recursively.  Every backend sums in this order (it is also the order of XLA:CPU's reduce
    over a short axis), so money sums agree bit for bit; counts and lots are exact anyway."""
    terms = list(terms)
    if len(terms) == 1:
        return terms[0]
    return level_sum(terms[0::2]) + level_sum(terms[1::2])


def _tree_select(pred, if_true, if_false):
    import jax

    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), if_true, if_false)


def closes(config: KernelConfig, row_index):
    """Whether row ``row_index`` closes its resample window (the same for every lane)."""
    return closes_window(config.metrics, row_index)
