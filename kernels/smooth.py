"""The smooth (differentiable) lane step, for gradient tuning.

The same decision contract and order management as :mod:`mmsweep.kernels.step`, relaxed where
the hard step is piecewise constant in the parameters:

* **fills** become probabilities: a resting buy at tick ``p`` fills in a window with
  probability ``sigmoid((p - buy_threshold + 1/2) / T)`` (sells mirrored), ``T`` the temperature
  in ticks; each level carries the probability that its order is still resting (``alive``), so
  position, cash, fees and trades are expectations (fractional lots).  The ``queue`` fill model
  (:mod:`mmsweep.kernels.fills.queue_smooth`) keeps each order's queue state by the hard model's
  rules at its whole tick and fills with ``1 - (1 - P_through) (1 - P_queue)``: the strict-cross
  sigmoid above and, in a window with qty ``V > 0`` traded at the order's tick, ``sigmoid((-(front
  - V) - lot/2) / (T lot))`` (``front`` the queue ahead in qty units, so the queue temperature is
  ``T`` lots);
* **grid rounding** is straight-through: the policy runs with an array namespace whose
  ``floor``/``ceil`` return the exact rounded value forward and pass the gradient through
  unchanged backward, so tops, steps and sizes are whole numbers whose derivatives are those of
  the unrounded prices;
* the **position cap** is straight-through as well: a side's new orders are weighted by a gate
  that is exactly the hard cap forward and ``sigmoid((cap - position - 1/2) / T_pos)`` backward.

As ``T -> 0`` every probability is 0 or 1 and the smooth lane reproduces the hard one (tests
check that, and that gradients match central finite differences of the smooth objective).
Which orders are kept, cancelled or rejected stays discrete (ticks match or not).

Gradients (:func:`objective_and_grad`) are per lane (lanes are independent):

* ``mode="forward"`` (default): one ``jax.jvp`` per tuned parameter, so cost ~ (1 + n_params) x a
  forward run and memory flat in the horizon (tangents ride along the scan);
* ``mode="reverse"``: ``jax.grad`` through the scan cut into segments of ``segment_rows`` rows,
  each under ``jax.checkpoint``: memory ~ one saved carry per segment plus one segment of
  activations, instead of one carry per row.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import orders as om
from .fills import queue_smooth
from .metrics import metrics_commit, metrics_finalize, metrics_init, metrics_row
from .policies.base import Observation
from .scan import KernelState, make_scan_step
from .step import KernelConfig, Lane, Observed, Pending, book_fills, fill_model_for, level_sum, window_columns

#: Objectives the smooth run can be scored on.
OBJECTIVES = ("PnL", "SR", "Return")
GRADIENT_MODES = ("forward", "reverse")


#: How the smooth lane treats the policies' rounding to ticks and lots.
ROUNDINGS = ("straight_through", "continuous")


class SmoothSpec(NamedTuple):
    """Static settings of the relaxation (the temperatures are traced arguments instead, so an
    annealing schedule does not recompile).

    objective: the metric to maximise (``OBJECTIVES``; quote currency for PnL, the coin for
        inverse contracts).
    inventory_penalty: ``lambda`` of ``objective - lambda * mean(position**2)`` (position in qty
        units, so lambda is in objective units per qty unit squared).
    rounding: ``straight_through`` (default): exact whole ticks and lots forward, the gradient
        of the unrounded value backward (the forward run is the hard kernel's as T -> 0, but
        the objective is piecewise constant between ticks, so its gradient is a surrogate);
        ``continuous``: no rounding at all, quotes at fractional ticks (a smooth function of
        the parameters whose gradient is exact; keep/cancel still matches the rounded ticks).
    """

    objective: str = "PnL"
    inventory_penalty: float = 0.0
    rounding: str = "straight_through"


def _st(rounded, x):
    """Straight-through: the value of ``rounded``, the gradient of ``x`` (infinities pass)."""
    return jnp.where(jnp.isfinite(x), x + lax.stop_gradient(rounded - x), rounded)


def _namespace(**overrides) -> SimpleNamespace:
    ns = SimpleNamespace(**{name: getattr(jnp, name) for name in dir(jnp) if not name.startswith("_")})
    ns.__dict__.update(overrides)
    return ns


#: Array namespaces the policies see in the smooth lane: jax.numpy with relaxed rounding.
NAMESPACES = {
    "straight_through": _namespace(floor=lambda x: _st(jnp.floor(x), x), ceil=lambda x: _st(jnp.ceil(x), x),
                                   round=lambda x: _st(jnp.round(x), x)),
    "continuous": _namespace(floor=lambda x: x, ceil=lambda x: x, round=lambda x: x),
}
STRAIGHT_THROUGH = NAMESPACES["straight_through"]


class SmoothBook(NamedTuple):
    """One side: ``top`` (float whole-valued relative ticks, with a gradient), per level the
    probability its order still rests (``alive``), its lots and the fill model's per-order state
    (one tuple per level, ``()`` for threshold models; no gradient)."""

    top: Any
    alive: tuple
    lots: tuple
    order_state: tuple


class SmoothState(NamedTuple):
    position: Any  # expected lots
    cash: Any
    fees: Any
    traded_value: Any
    trades: Any
    rejections: Any
    max_abs_position: Any
    step: Any  # float whole-valued ticks
    bids: SmoothBook
    asks: SmoothBook
    position_sq: Any  # sum over rows of (position in qty units)**2, for the inventory penalty
    metrics: Any


class SmoothPending(NamedTuple):
    """A decision in flight: float ticks, the per-side straight-through gates, and per level the
    probability that the bot already had an order there when it decided."""

    decision: om.Decision
    bid_gate: Any
    ask_gate: Any
    bid_seen: tuple
    ask_seen: tuple
    entry_rejected: Any


def make_smooth_lane(config: KernelConfig, temperature, position_temperature,
                     rounding: str = "straight_through") -> Lane:
    """The relaxed lane functions (the :class:`mmsweep.kernels.step.Lane` interface) at the given
    temperatures (ticks; lots), which may be traced."""
    if rounding not in NAMESPACES:
        raise ValueError(f"unknown rounding {rounding!r}; known: {', '.join(ROUNDINGS)}")
    xp = NAMESPACES[rounding]
    L = config.market.max_levels
    dtype = config.dtype
    market = config.market
    lot = market.lot_size
    model = fill_model_for(config)
    if model.thresholds is None and model.name != "queue":
        raise NotImplementedError(f"the smooth kernel cannot relax the {model.name!r} fill model (it relaxes "
                                  f"threshold models and queue)")
    window_b = window_columns(model, "b")
    tick_value = market.tick_size * config.contract_multiplier * lot
    base_price = market.base_tick * market.tick_size
    zero = lambda: jnp.zeros((), dtype)  # noqa: E731

    def empty_side():
        return SmoothBook(zero(), tuple(zero() for _ in range(L)), tuple(zero() for _ in range(L)),
                          tuple(tuple(zero() for _ in model.order_state) for _ in range(L)))

    def init():
        return SmoothState(zero(), zero(), zero(), zero(), zero(), zero(), zero(), jnp.ones((), dtype), empty_side(),
                           empty_side(), zero(), metrics_init(dtype))

    def empty_pending():
        d = om.Decision(zero(), zero(), jnp.ones((), dtype), zero(), zero(), zero(), zero())
        return SmoothPending(d, zero(), zero(), tuple(zero() for _ in range(L)), tuple(zero() for _ in range(L)),
                             jnp.int32(0))

    def observe(state, row) -> Observed:
        mid_rel = (row["bid"] + row["ask"]).astype(dtype) * 0.5
        mid_price = mid_rel * market.tick_size + base_price
        if config.inverse:
            equity = config.contract_multiplier * lot * (
                state.cash + state.position * (mid_rel * market.tick_size) / (mid_price * base_price)) - state.fees
        else:
            equity = tick_value * (state.cash + state.position * mid_rel) - state.fees
        position = state.position * lot
        return Observed(equity, jnp.abs(position) * mid_price, position, mid_price)

    def commit(state, seen):
        return state._replace(metrics=metrics_commit(state.metrics, seen.equity, seen.pos_value))

    def track(state, seen, close):
        return state._replace(position_sq=state.position_sq + seen.position ** 2, metrics=metrics_row(
            state.metrics, close=close, equity=seen.equity, position=seen.position, mid_price=seen.mid_price,
            num_trades_cum=state.trades, trading_value_cum=state.traded_value, fees_cum=state.fees))

    def hard(x):  # the whole tick an order rests at, for matching old and new grids
        return jnp.floor(lax.stop_gradient(x) + 0.5).astype(jnp.int32)

    def presence(book, step, new_top, new_step, side, with_state=False):
        """Per level of the new grid, the alive probability and lots of the old order there (and,
        ``with_state``, its fill-model state: a tuple per state field of per-level values)."""
        mask = jnp.int32(0)
        for j in range(L):
            mask = mask | jnp.where(lax.stop_gradient(book.alive[j]) > 0, jnp.int32(1 << j), jnp.int32(0))
        args = (mask, hard(book.top), hard(step), hard(new_top), hard(new_step), side, L, dtype)
        _m, alive = om.remap(*args, lots=book.alive)
        _m, lots = om.remap(*args, lots=book.lots)
        if not with_state:
            return alive, lots
        state = tuple(om.remap(*args, lots=tuple(book.order_state[j][f] for j in range(L)))[1]
                      for f in range(len(model.order_state)))
        return alive, lots, state

    def gate(position, cap_lots, side):
        """How much a side may quote: ``sigmoid((room - 1/2) / T_pos)`` of the room to the cap
        (lots); straight-through: exactly the hard cap (0 or 1) forward."""
        room = (cap_lots - position) if side > 0 else (cap_lots + position)
        soft = jax.nn.sigmoid((room - 0.5) / position_temperature)
        return soft if rounding == "continuous" else _st((room > 0).astype(dtype), soft)

    def decide(params, state, row):
        quote = config.policy(params, Observation(row["bid"].astype(dtype), row["ask"].astype(dtype), row["features"]),
                              state.position * lot, market, xp)
        cap_lots = quote.max_position / lot - om.CAP_EPS_LOTS
        if rounding == "continuous":  # the cap acts through the soft gate alone (and caps sizes)
            d = om.to_decision(quote._replace(max_position=jnp.inf), state.position, market, xp, dtype,
                               tick_dtype=dtype)
            d = d._replace(bid_lots=jnp.minimum(d.bid_lots, quote.max_position / lot),
                           ask_lots=jnp.minimum(d.ask_lots, quote.max_position / lot))
        else:
            d = om.to_decision(quote, state.position, market, xp, dtype, tick_dtype=dtype)
        bid_seen, _ = presence(state.bids, state.step, d.bid_top, d.step, +1)
        ask_seen, _ = presence(state.asks, state.step, d.ask_top, d.step, -1)
        return SmoothPending(d, gate(state.position, cap_lots, +1), gate(state.position, cap_lots, -1), bid_seen,
                             ask_seen, (row["entry_rejected"] != 0).astype(jnp.int32))

    def fill_probabilities(book, step, window, side):
        """Per level, the probability that its order fills in ``window`` (if resting) and its
        fill-model state after the window."""
        ticks = [book.top - side * j * step for j in range(L)]
        if model.thresholds is not None:
            buy, sell = model.thresholds(window)
            threshold = (buy if side > 0 else sell).astype(dtype)
            return [jax.nn.sigmoid((side * (tick - threshold) + 0.5) / temperature) for tick in ticks], book.order_state
        orders = [(tick, hard(tick), book.order_state[j]) for j, tick in enumerate(ticks)]
        out = queue_smooth.window_fills(model, window, side, orders, dtype, lot_size=lot,
                                        levels=config.queue_levels, temperature=temperature)
        return [p for p, _s in out], tuple(s for _p, s in out)

    def side_fills(book, step, window, side):
        probabilities, order_state = fill_probabilities(book, step, window, side)
        qty, cash, notional, count, alive = [], [], [], [], []
        for j in range(L):
            tick = book.top - side * j * step
            filled = book.alive[j] * probabilities[j]
            alive.append(book.alive[j] - filled)
            q = book.lots[j] * filled
            price = tick * market.tick_size + base_price
            qty.append(q)
            count.append(filled)
            if config.inverse:
                cash.append(q * (tick * market.tick_size) / (price * base_price))
                notional.append(q / price)
            else:
                cash.append(q * tick)
                notional.append(q * price)
        return (book._replace(alive=tuple(alive), order_state=order_state), level_sum(qty), level_sum(cash),
                level_sum(notional), level_sum(count))

    def fill(state, window):
        return book_fills(state, window, side_fills, config)

    def side_arrive(book, step, pending, row, side):
        d = pending.decision
        top, levels, lots, seen, side_gate = ((d.bid_top, d.bid_levels, d.bid_lots, pending.bid_seen, pending.bid_gate)
                                              if side > 0 else
                                              (d.ask_top, d.ask_levels, d.ask_lots, pending.ask_seen, pending.ask_gate))
        held_alive, held_lots, held_state = presence(book, step, top, d.step, side, with_state=True)
        opposite = row["ask_ack"] if side > 0 else row["bid_ack"]
        marketable = om.reach(hard(top), hard(d.step), opposite, side, L)
        rejected_entry = (pending.entry_rejected != 0).astype(dtype)
        window = {name: row[col] for name, col in window_b.items()}  # window b starts at the arrival
        alive, new_lots, rejections, order_state = [], [], [], []
        for j in range(L):
            wanted = (j < lax.stop_gradient(levels)).astype(dtype)
            kept = wanted * held_alive[j]
            crosses = om.level_bit(marketable, j).astype(dtype)
            sent = wanted * (1 - kept) * (1 - seen[j])
            accepted = sent * (1 - crosses) * (1 - rejected_entry)
            fresh = accepted * side_gate
            alive.append(kept + fresh)
            rejections.append(sent * jnp.maximum(crosses, rejected_entry))
            new_lots.append(jnp.where(lax.stop_gradient(held_alive[j]) > 0, held_lots[j], lots))
            if model.order_state:  # the level's queue state: the likelier of the kept and the new order's
                arriving = queue_smooth.arrival_state(model, window, side, hard(top) - (side * j) * hard(d.step),
                                                      dtype)
                keep_old = lax.stop_gradient(kept) > lax.stop_gradient(fresh)
                order_state.append(tuple(jnp.where(keep_old, held_state[f][j], arriving[f])
                                         for f in range(len(model.order_state))))
            else:
                order_state.append(())
        new = SmoothBook(top, tuple(alive), tuple(new_lots), tuple(order_state))
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(pending.entry_rejected != 0, a, b), book, new)
        return new, level_sum(rejections)

    def arrive(state, pending, row):
        bids, bid_rej = side_arrive(state.bids, state.step, pending, row, +1)
        asks, ask_rej = side_arrive(state.asks, state.step, pending, row, -1)
        step = jnp.where(pending.entry_rejected != 0, state.step, pending.decision.step)
        return state._replace(bids=bids, asks=asks, step=step, rejections=state.rejections + bid_rej + ask_rej)

    def finalize(state):
        out = metrics_finalize(config.metrics, state.metrics)
        out["Rejections"] = state.rejections
        out["FinalPosition"] = state.position * lot
        out["MeanSquaredPosition"] = state.position_sq / jnp.maximum(state.metrics.rows.astype(dtype), 1)
        return out

    return Lane(init, empty_pending, observe, commit, track, decide, fill, arrive, finalize, model)


def _objective(out: dict, spec: SmoothSpec):
    value = out[spec.objective]
    return value - spec.inventory_penalty * out["MeanSquaredPosition"]


def _run_smooth(params, rows, config: KernelConfig, spec: SmoothSpec, temperature, position_temperature,
                segment_rows: int | None):
    """One lane over ``rows`` (unbatched): the smooth metrics and the objective."""
    lane = make_smooth_lane(config, temperature, position_temperature, spec.rounding)
    init, body, _lane = make_scan_step(config, lane=lane)
    step = lambda s, r: (body(params, s, r)[0], None)  # noqa: E731
    state = init()
    n = int(rows["index"].shape[0])
    if segment_rows and n > segment_rows:
        n_seg = n // segment_rows
        head = {k: v[: n_seg * segment_rows].reshape((n_seg, segment_rows) + v.shape[1:]) for k, v in rows.items()}
        tail = {k: v[n_seg * segment_rows:] for k, v in rows.items()}

        @jax.checkpoint
        def segment(s, seg):
            return lax.scan(step, s, seg)[0], None

        state = lax.scan(segment, state, head)[0]
        if n > n_seg * segment_rows:
            state = lax.scan(step, state, tail)[0]
    else:
        state = lax.scan(step, state, rows)[0]
    out = lane.finalize(state.lanes)
    return _objective(out, spec), out


@functools.lru_cache(maxsize=16)
def _compiled(config: KernelConfig, spec: SmoothSpec, tuned: tuple, fixed: tuple, mode: str,
              segment_rows: int | None):
    def one_lane(tuned_values, fixed_values, rows, temperature, position_temperature):
        def f(x):
            params = dict(zip(tuned, x)) | dict(zip(fixed, fixed_values))
            return _run_smooth(params, rows, config, spec, temperature, position_temperature,
                               segment_rows if mode == "reverse" else None)

        if mode == "forward":  # one scan carrying a tangent per tuned parameter (jacfwd = vmap of jvp)
            def with_aux(x):
                value, out = f(x)
                return value, (value, out)

            grads, (value, out) = jax.jacfwd(with_aux, has_aux=True)(tuned_values)
            return value, tuple(grads), out
        (value, out), grads = jax.value_and_grad(f, has_aux=True)(tuned_values)
        return value, tuple(grads), out

    return jax.jit(jax.vmap(one_lane, in_axes=(0, 0, None, None, None)))


def objective_and_grad(params: dict[str, Any], tuned: tuple[str, ...], rows: dict, config: KernelConfig,
                       spec: SmoothSpec = SmoothSpec(), *, temperature: float = 1.0, position_temperature: float = 1.0,
                       mode: str = "forward", segment_rows: int = 2048):
    """The smooth objective of every lane and its gradient with respect to the ``tuned``
    parameters.

    ``params`` maps every lane parameter to ``[lanes]`` values; returns ``(objective [lanes],
    {name: d objective / d name [lanes]}, smooth metrics)``.  ``temperature`` (ticks) and
    ``position_temperature`` (lots) are traced: changing them does not recompile.
    """
    if mode not in GRADIENT_MODES:
        raise ValueError(f"unknown gradient mode {mode!r}; known: {', '.join(GRADIENT_MODES)}")
    if spec.objective not in OBJECTIVES:
        raise ValueError(f"unknown smooth objective {spec.objective!r}; known: {', '.join(OBJECTIVES)}")
    missing = [k for k in tuned if k not in params]
    if missing:
        raise KeyError(f"tuned parameter(s) {missing} are not lane parameters: {sorted(params)}")
    fixed = tuple(sorted(k for k in params if k not in tuned))
    dtype = config.dtype
    fn = _compiled(config, spec, tuple(tuned), fixed, mode, int(segment_rows) if segment_rows else None)
    value, grads, out = fn(tuple(jnp.asarray(params[k], dtype) for k in tuned),
                           tuple(jnp.asarray(params[k], dtype) for k in fixed), rows,
                           jnp.asarray(temperature, dtype), jnp.asarray(position_temperature, dtype))
    return value, dict(zip(tuned, grads)), out


def smooth_metrics(params: dict[str, Any], rows: dict, config: KernelConfig, spec: SmoothSpec = SmoothSpec(), *,
                   temperature: float = 1.0, position_temperature: float = 1.0):
    """The smooth run's metrics and objective per lane, without gradients: ``(objective, metrics)``."""
    names = tuple(sorted(params))
    fn = _compiled_forward(config, spec, names)
    return fn(tuple(jnp.asarray(params[k], config.dtype) for k in names), rows,
              jnp.asarray(temperature, config.dtype), jnp.asarray(position_temperature, config.dtype))


@functools.lru_cache(maxsize=16)
def _compiled_forward(config: KernelConfig, spec: SmoothSpec, names: tuple):
    def one_lane(values, rows, temperature, position_temperature):
        return _run_smooth(dict(zip(names, values)), rows, config, spec, temperature, position_temperature, None)

    return jax.jit(jax.vmap(one_lane, in_axes=(0, None, None, None)))
