"""Oracle: hftbacktest 2.4.4 running *our* grid strategy (dev/test only; never imported by mmsweep).

``run_hbt_grid`` replays an hftbacktest ``.npz`` capture through hftbacktest's own engine
(HashMapMarketDepthBacktest, L2 queue models, NoPartialFill/PartialFill exchange) with a strategy
that mirrors ``kernels/policies/grid.py`` in absolute-tick mode (``relative = 0``), and returns
per-decision records and a per-fill list, for cross-checking our exact engine and for the speed
benchmark.  Grid parameters are in TICKS.

Strategy, at every ``decision_ts[i]`` (local clock, ns; ``current_timestamp`` is checked to equal it):

1. record the local state (position, balance, fee, num_trades, trading_value, local mid), i.e. the
   state *before* this decision's orders;
2. every local order with status FILLED becomes a fill record (``local_ts = decision_ts[i]``);
3. ``clear_inactive_orders``;
4. compute the grid (see ``_strategy``) from the local best bid/ask and position;
5. cancel every cancellable order whose (side, tick) is not wanted; submit a GTX limit order for
   every wanted (side, tick) with no order in the local map (order id ``tick*2 + (0 buy | 1 sell)``).

After the last decision the backtest runs to the end of the data (every queued response
delivered); orders filled then are recorded with ``local_ts = END_OF_DATA_TS`` (int64 max), and
the state after that drain is returned under ``"final"``.

If the local book is one-sided at a decision, ``mid`` is NaN and the grid uses the last two-sided
best bid/ask (as the frames builder carries it forward).

With the data README's reference setup (``python tests/hbt_oracle.py``; max_position 0.05 =
levels * order_qty as in hftbacktest's grid example) this reproduces hftbacktest's own grid
example exactly: 48 trades, +3.1539 USDT.  ``partial_fill=True`` can stop with error 14
(hftbacktest 2.4.4's PartialFillExchange zombie-order bug), raised as RuntimeError.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
from numba import njit

END_OF_DATA_TS = np.iinfo(np.int64).max

FILL_DTYPE = np.dtype([("exch_ts", "i8"), ("local_ts", "i8"), ("side", "i1"), ("price_tick", "i8"),
                       ("qty", "f8"), ("maker", "?")])

QUEUES = ("risk_averse", "power", "power2", "power3", "log", "log2")

# hftbacktest constants (hftbacktest.order), repeated so this module imports without it
_BUY = 1
_SELL = -1
_FILLED = 3
_GTX = 1
_LIMIT = 0
_INT64_MIN = np.iinfo(np.int64).min
_INT64_MAX = np.iinfo(np.int64).max

# event flags (hftbacktest.types)
_EXCH = 1 << 31
_LOCAL = 1 << 30
_BUYEV = 1 << 29
_SELLEV = 1 << 28
_DEPTH, _DEPTH_CLEAR, _DEPTH_SNAPSHOT = 1, 3, 4

# njit status codes
_OK = 0
_ERR_ELAPSE = 1        # elapse returned an error code (detail = code)
_ERR_EOD = 2           # data ended before a decision time
_ERR_TS = 3            # current_timestamp != decision_ts[i]
_ERR_NEG = 4           # decision_ts not increasing / before the first event
_ERR_ORDER = 5         # submit/cancel returned an error (detail = code)


def _require_hftbacktest():
    try:
        import hftbacktest  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the hftbacktest oracle needs hftbacktest==2.4.4 (a dev/test dependency: "
                          "pip install 'hftbacktest==2.4.4' or the project's [dev] extra)") from exc
    if hftbacktest.__version__ != "2.4.4":  # pragma: no cover
        warnings.warn(f"the oracle is written against hftbacktest 2.4.4, found {hftbacktest.__version__}",
                      stacklevel=3)
    return hftbacktest


def load_npz(npz_path) -> np.ndarray:
    """The event array of an hftbacktest ``.npz`` (key ``data``) or ``.npy``."""
    path = str(npz_path)
    if path.endswith(".npy"):
        return np.load(path)
    with np.load(path) as f:
        return f["data"]


def first_timestamp(npz_path_or_data) -> int:
    """hftbacktest's initial ``cur_ts``: min(first LOCAL row's local_ts, first EXCH row's exch_ts)."""
    data = npz_path_or_data if isinstance(npz_path_or_data, np.ndarray) else load_npz(npz_path_or_data)
    ev = data["ev"]
    cands = []
    local = np.flatnonzero(ev & _LOCAL)
    exch = np.flatnonzero(ev & _EXCH)
    if len(local):
        cands.append(int(data["local_ts"][local[0]]))
    if len(exch):
        cands.append(int(data["exch_ts"][exch[0]]))
    if not cands:
        raise ValueError("no LOCAL or EXCH rows in the data")
    return min(cands)


def first_two_sided_ts(data: np.ndarray, tick_size: float) -> int:
    """Local time of the first LOCAL row after which the local (HashMap) book has a bid and an ask.

    Walks only the prefix of the data (stops as soon as both sides exist); mirrors the depth rules
    (DEPTH/SNAPSHOT set or delete a level; CLEAR wipes a side up to/from its price)."""
    bids: dict[int, float] = {}
    asks: dict[int, float] = {}
    ev = data["ev"]
    for k in range(len(data)):
        e = int(ev[k])
        if not e & _LOCAL:
            continue
        kind = e & 0xFF
        side = bids if e & _BUYEV else asks if e & _SELLEV else None
        if kind in (_DEPTH, _DEPTH_SNAPSHOT) and side is not None:
            t = round(float(data["px"][k]) / tick_size)
            if float(data["qty"][k]) > 0:
                side[t] = float(data["qty"][k])
            else:
                side.pop(t, None)
        elif kind == _DEPTH_CLEAR:
            px = float(data["px"][k])
            if side is None:
                bids.clear()
                asks.clear()
            elif not math.isfinite(px):
                side.clear()
            else:
                t = round(px / tick_size)
                for lvl in [lv for lv in side if (lv >= t if side is bids else lv <= t)]:
                    del side[lvl]
        if bids and asks:
            return int(data["local_ts"][k])
    raise ValueError("the local book is never two-sided")


def decision_grid(npz_path_or_data, tick_size: float, interval_ns: int = 100_000_000) -> np.ndarray:
    """Aligned multiples of ``interval_ns`` from the first two-sided local time to the last LOCAL row
    (the frames builder's default grid)."""
    data = npz_path_or_data if isinstance(npz_path_or_data, np.ndarray) else load_npz(npz_path_or_data)
    start = first_two_sided_ts(data, tick_size)
    start = -(-start // interval_ns) * interval_ns
    end = int(data["local_ts"][np.flatnonzero(data["ev"] & _LOCAL)[-1]])
    n = (end - start) // interval_ns + 1
    return start + np.arange(n, dtype=np.int64) * interval_ns


@njit
def _collect_fills(hbt, fills_exch, fills_local, fills_side, fills_tick, fills_qty, fills_maker, n_fill, local_ts):
    """Append every local order with status FILLED; grows the arrays when full."""
    orders = hbt.orders(0)
    values = orders.values()
    while values.has_next():
        o = values.get()
        if o.status == _FILLED:
            if n_fill == len(fills_exch):
                cap = 2 * len(fills_exch) + 16
                fills_exch = _grow_i8(fills_exch, cap)
                fills_local = _grow_i8(fills_local, cap)
                fills_side = _grow_i1(fills_side, cap)
                fills_tick = _grow_i8(fills_tick, cap)
                fills_qty = _grow_f8(fills_qty, cap)
                fills_maker = _grow_b(fills_maker, cap)
            fills_exch[n_fill] = o.exch_timestamp
            fills_local[n_fill] = local_ts
            fills_side[n_fill] = o.side
            fills_tick[n_fill] = o.exec_price_tick
            fills_qty[n_fill] = o.exec_qty
            fills_maker[n_fill] = o.arr[0].maker  # no `maker` property on Order
            n_fill += 1
    return fills_exch, fills_local, fills_side, fills_tick, fills_qty, fills_maker, n_fill


@njit
def _grow_i8(a, cap):
    b = np.empty(cap, np.int64)
    b[:len(a)] = a
    return b


@njit
def _grow_i1(a, cap):
    b = np.empty(cap, np.int8)
    b[:len(a)] = a
    return b


@njit
def _grow_f8(a, cap):
    b = np.empty(cap, np.float64)
    b[:len(a)] = a
    return b


@njit
def _grow_b(a, cap):
    b = np.empty(cap, np.bool_)
    b[:len(a)] = a
    return b


@njit
def _strategy(hbt, decision_ts, first_ts, tick_size, lot_size, half_spread, skew, grid_interval, n_levels,
              order_qty, max_position, max_levels, fill_cap):
    nd = len(decision_ts)
    rec_pos = np.full(nd, np.nan)
    rec_bal = np.full(nd, np.nan)
    rec_fee = np.full(nd, np.nan)
    rec_trades = np.zeros(nd, np.int64)
    rec_value = np.full(nd, np.nan)
    rec_mid = np.full(nd, np.nan)
    fills_exch = np.empty(fill_cap, np.int64)
    fills_local = np.empty(fill_cap, np.int64)
    fills_side = np.empty(fill_cap, np.int8)
    fills_tick = np.empty(fill_cap, np.int64)
    fills_qty = np.empty(fill_cap, np.float64)
    fills_maker = np.empty(fill_cap, np.bool_)
    n_fill = 0
    final = np.full(6, np.nan)  # position, balance, fee, num_trades, trading_value, mid after the drain

    # the policy's constants
    step = max(float(np.round(grid_interval)), 1.0)
    levels = int(min(max(math.floor(n_levels + 1e-6), 0.0), float(max_levels)))
    size = math.floor(max(order_qty, 0.0) / lot_size * (1.0 + 1e-6)) * lot_size
    # as kernels.orders.to_decision: no order larger than the position limit
    if math.isfinite(max_position):
        size = min(size, math.floor(max_position / lot_size + 1e-3) * lot_size)
    cap_lots = max_position / lot_size - 1e-3
    want_bid = np.empty(max(levels, 1), np.int64)
    want_ask = np.empty(max(levels, 1), np.int64)
    last_bb = _INT64_MIN
    last_ba = _INT64_MAX

    status = _OK
    detail = 0
    at = -1
    for i in range(nd):
        if i == 0:
            d = decision_ts[0] - first_ts
        else:
            d = decision_ts[i] - hbt.current_timestamp
        if d < 0:
            status, detail, at = _ERR_NEG, d, i
            break
        r = hbt.elapse(d)
        if r == 1:
            status, detail, at = _ERR_EOD, r, i
            break
        if r != 0:
            status, detail, at = _ERR_ELAPSE, r, i
            break
        now = hbt.current_timestamp
        if now != decision_ts[i]:
            status, detail, at = _ERR_TS, now, i
            break

        # 1. state before this decision's orders
        sv = hbt.state_values(0)
        position = sv.position
        rec_pos[i] = position
        rec_bal[i] = sv.balance
        rec_fee[i] = sv.fee
        rec_trades[i] = sv.num_trades
        rec_value[i] = sv.trading_value
        depth = hbt.depth(0)
        bb = depth.best_bid_tick
        ba = depth.best_ask_tick
        if bb != _INT64_MIN and ba != _INT64_MAX:
            rec_mid[i] = (depth.best_bid + depth.best_ask) / 2.0
            last_bb = bb
            last_ba = ba
        else:
            bb = last_bb
            ba = last_ba

        # 2. fills seen by the local since the last decision; 3. drop inactive orders
        (fills_exch, fills_local, fills_side, fills_tick, fills_qty, fills_maker,
         n_fill) = _collect_fills(hbt, fills_exch, fills_local, fills_side, fills_tick, fills_qty,
                                  fills_maker, n_fill, now)
        hbt.clear_inactive_orders(0)
        if bb == _INT64_MIN or ba == _INT64_MAX:
            continue  # never two-sided yet: no grid

        # 4. the grid (policies/grid.py, relative = 0, absolute ticks)
        mid = (bb + ba) * 0.5
        reservation = mid - skew * (position / order_qty if order_qty != 0 else 0.0)
        bid_top = math.floor((min(reservation - half_spread, float(bb)) + 1e-4) / step) * step
        ask_top = math.ceil((max(reservation + half_spread, float(ba)) - 1e-4) / step) * step
        bid_top = min(bid_top, float(bb))
        ask_top = max(ask_top, float(ba))
        n_bid = levels
        n_ask = levels
        pos_lots = position / lot_size
        if pos_lots >= cap_lots:
            n_bid = 0
        if pos_lots <= -cap_lots:
            n_ask = 0
        if size <= 0.0:
            n_bid = 0
            n_ask = 0
        istep = int(step)
        for k in range(n_bid):
            want_bid[k] = int(bid_top) - k * istep
        for k in range(n_ask):
            want_ask[k] = int(ask_top) + k * istep

        # 5a. cancel what is not wanted
        orders = hbt.orders(0)
        values = orders.values()
        while values.has_next():
            o = values.get()
            if not o.cancellable:
                continue
            wanted = False
            if o.side == _BUY:
                for k in range(n_bid):
                    if want_bid[k] == o.price_tick:
                        wanted = True
            else:
                for k in range(n_ask):
                    if want_ask[k] == o.price_tick:
                        wanted = True
            if not wanted:
                rc = hbt.cancel(0, o.order_id, False)
                if rc != 0:
                    status, detail, at = _ERR_ORDER, rc, i
        if status != _OK:
            break
        # 5b. submit what is missing (the id encodes side and tick, so "in orders" is the check)
        for k in range(n_bid):
            oid = want_bid[k] * 2
            if oid not in orders:
                rc = hbt.submit_buy_order(0, oid, want_bid[k] * tick_size, size, _GTX, _LIMIT, False)
                if rc != 0:
                    status, detail, at = _ERR_ORDER, rc, i
        for k in range(n_ask):
            oid = want_ask[k] * 2 + 1
            if oid not in orders:
                rc = hbt.submit_sell_order(0, oid, want_ask[k] * tick_size, size, _GTX, _LIMIT, False)
                if rc != 0:
                    status, detail, at = _ERR_ORDER, rc, i
        if status != _OK:
            break

    if status == _OK:
        # drain to the end of the data: every row and every queued response
        r = 0
        while r == 0:
            r = hbt.elapse(3_600_000_000_000)
        if r != 1:
            status, detail, at = _ERR_ELAPSE, r, nd
        else:
            (fills_exch, fills_local, fills_side, fills_tick, fills_qty, fills_maker,
             n_fill) = _collect_fills(hbt, fills_exch, fills_local, fills_side, fills_tick, fills_qty,
                                      fills_maker, n_fill, _INT64_MAX)
            sv = hbt.state_values(0)
            final[0] = sv.position
            final[1] = sv.balance
            final[2] = sv.fee
            final[3] = sv.num_trades
            final[4] = sv.trading_value
            depth = hbt.depth(0)
            if depth.best_bid_tick != _INT64_MIN and depth.best_ask_tick != _INT64_MAX:
                final[5] = (depth.best_bid + depth.best_ask) / 2.0
    return (status, detail, at, rec_pos, rec_bal, rec_fee, rec_trades, rec_value, rec_mid,
            fills_exch[:n_fill], fills_local[:n_fill], fills_side[:n_fill], fills_tick[:n_fill],
            fills_qty[:n_fill], fills_maker[:n_fill], final)


def _build(hbt_mod, data, latency, *, tick_size, lot_size, entry_latency_ns, response_latency_ns, queue,
           queue_n, partial_fill, maker_fee, taker_fee, inverse_contract_size=None):
    asset = hbt_mod.BacktestAsset().data(data)
    asset = (asset.linear_asset(1.0) if inverse_contract_size is None else asset.inverse_asset(inverse_contract_size))
    asset = asset.tick_size(tick_size).lot_size(lot_size).trading_value_fee_model(maker_fee, taker_fee)
    if latency is None:
        asset = asset.constant_order_latency(int(entry_latency_ns), int(response_latency_ns))
    else:
        asset = asset.intp_order_latency(latency)
    q = {"risk_averse": lambda: asset.risk_adverse_queue_model(),
         "power": lambda: asset.power_prob_queue_model(float(queue_n)),
         "power2": lambda: asset.power_prob_queue_model2(float(queue_n)),
         "power3": lambda: asset.power_prob_queue_model3(float(queue_n)),
         "log": lambda: asset.log_prob_queue_model(),
         "log2": lambda: asset.log_prob_queue_model2()}
    asset = q[queue]()
    asset = asset.partial_fill_exchange() if partial_fill else asset.no_partial_fill_exchange()
    return hbt_mod.HashMapMarketDepthBacktest([asset])


_WARM = False


def run_hbt_grid(npz_path, *, decision_ts, tick_size, lot_size,
                 half_spread, skew, grid_interval, n_levels, order_qty, max_position,
                 entry_latency_ns=10_000_000, response_latency_ns=10_000_000, latency_npz=None,
                 queue="power", queue_n=2.0,
                 partial_fill=False, maker_fee=-0.00005, taker_fee=0.0007, max_levels=5,
                 inverse_contract_size: float | None = None) -> dict:
    """Run hftbacktest 2.4.4 with our grid policy (absolute ticks) and return records and fills.

    Args:
        npz_path: hftbacktest event ``.npz`` (key ``data``), or an event ndarray.
        decision_ts: int64 local decision times (ns), strictly increasing, >= the first event.
        half_spread, skew, grid_interval: TICKS (``skew`` per ``order_qty`` of position).
        n_levels: levels per side (capped at ``max_levels``); order_qty, max_position: qty units.
        latency_npz: hftbacktest order-latency ``.npz`` -> IntpOrderLatency; else ConstantLatency.
        queue: "risk_averse" | "power" | "power2" | "power3" | "log" | "log2" (``queue_n`` for power*).
        inverse_contract_size: None for hftbacktest's ``linear_asset(1.0)``; a contract size for its
            ``inverse_asset(size)`` (balance, fee and trading value then in the coin; equity is
            ``-balance - size * position / mid - fee``).

    Returns a dict: ``timestamp, position, balance, fee, num_trades, trading_value, mid`` (local
    state at each decision, before its orders; ``mid`` in price units, NaN if one-sided),
    ``fills`` (``FILL_DTYPE``, sorted by local_ts, exch_ts), ``final`` (state after draining the
    data), ``events`` (rows in the data) and ``elapsed_s`` (wall time of the njit loop only; the
    loop is compiled by a short warm-up run first).
    """
    hbt_mod = _require_hftbacktest()
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}, got {queue!r}")
    data = npz_path if isinstance(npz_path, np.ndarray) else load_npz(npz_path)
    data = np.ascontiguousarray(data)
    latency = None
    if latency_npz is not None:
        latency = np.ascontiguousarray(load_npz(latency_npz))
    decision_ts = np.ascontiguousarray(decision_ts, dtype=np.int64)
    if decision_ts.ndim != 1 or len(decision_ts) == 0:
        raise ValueError("decision_ts must be a non-empty 1-d array")
    if np.any(np.diff(decision_ts) <= 0):
        raise ValueError("decision_ts must be strictly increasing")
    first_ts = first_timestamp(data)
    if decision_ts[0] < first_ts:
        raise ValueError(f"decision_ts[0]={decision_ts[0]} is before the first event {first_ts}")
    build = dict(tick_size=tick_size, lot_size=lot_size, entry_latency_ns=entry_latency_ns,
                 response_latency_ns=response_latency_ns, queue=queue, queue_n=queue_n,
                 partial_fill=partial_fill, maker_fee=maker_fee, taker_fee=taker_fee,
                 inverse_contract_size=None if inverse_contract_size is None else float(inverse_contract_size))
    args = (float(tick_size), float(lot_size), float(half_spread), float(skew), float(grid_interval),
            float(n_levels), float(order_qty), float(max_position), int(max_levels))
    levels = int(min(max(math.floor(n_levels + 1e-6), 0), max_levels))
    fill_cap = min(len(decision_ts) * 2 * levels, 1 << 16) + 16

    global _WARM
    if not _WARM:  # compile the njit loop on a 2-decision run (same types as the real one)
        hbt = _build(hbt_mod, data, latency, **build)
        try:
            _strategy(hbt, decision_ts[:2], first_ts, *args, 16)
        finally:
            hbt.close()
        _WARM = True

    hbt = _build(hbt_mod, data, latency, **build)
    try:
        t0 = time.perf_counter()
        out = _strategy(hbt, decision_ts, first_ts, *args, fill_cap)
        elapsed = time.perf_counter() - t0
    finally:
        hbt.close()  # `data` (raw pointer inside hbt) is alive until here
    (status, detail, at, pos, bal, fee, trades, value, mid,
     f_exch, f_local, f_side, f_tick, f_qty, f_maker, final) = out
    if status != _OK:
        what = {_ERR_ELAPSE: f"elapse returned error code {detail}",
                _ERR_EOD: "the data ended before this decision time",
                _ERR_TS: f"current_timestamp {detail} != decision_ts",
                _ERR_NEG: f"decision time is {detail} ns before current_timestamp",
                _ERR_ORDER: f"an order request returned error code {detail}"}[status]
        ts = decision_ts[at] if at < len(decision_ts) else "end of data"
        if status == _ERR_ELAPSE and detail == 14 and partial_fill:
            what += (" (InvalidOrderStatus: hftbacktest 2.4.4's PartialFillExchange leaves an order that was "
                     "filled exactly by a queue fill resting as a Filled zombie; the next trade touching it "
                     "fails - a known bug, see the semantics doc §6.3)")
        raise RuntimeError(f"hftbacktest oracle: {what} (decision {at}, ts {ts})")

    fills = np.empty(len(f_exch), FILL_DTYPE)
    fills["exch_ts"] = f_exch
    fills["local_ts"] = f_local
    fills["side"] = f_side
    fills["price_tick"] = f_tick
    fills["qty"] = f_qty
    fills["maker"] = f_maker
    # within one decision the local map's iteration order is arbitrary: sort for a stable output
    fills = fills[np.lexsort((fills["qty"], fills["price_tick"], fills["side"], fills["exch_ts"],
                              fills["local_ts"]))]
    return {"timestamp": decision_ts.copy(), "position": pos, "balance": bal, "fee": fee,
            "num_trades": trades, "trading_value": value, "mid": mid, "fills": fills,
            "final": {"position": float(final[0]), "balance": float(final[1]), "fee": float(final[2]),
                      "num_trades": int(final[3]) if np.isfinite(final[3]) else -1,
                      "trading_value": float(final[4]), "mid": float(final[5])},
            "events": int(len(data)), "elapsed_s": elapsed}


def _main() -> None:
    """The data README's reference setup (bps converted to ticks at the first decision's mid):
    ``python tests/hbt_oracle.py`` prints trades, final equity and the loop time."""
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npz", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "hftbacktest"
                                         / "usdm" / "btcusdt_20240808.npz"))
    p.add_argument("--half-spread-bps", type=float, default=2.0)
    p.add_argument("--skew-bps", type=float, default=0.1)
    p.add_argument("--grid-bps", type=float, default=1.0)
    p.add_argument("--max-position", type=float, default=0.05,
                   help="qty; 0.05 = levels * order_qty, as in hftbacktest's grid example")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    tick, lot = 0.1, 0.001
    data = load_npz(a.npz)
    dts = decision_grid(data, tick)
    res0 = run_hbt_grid(data, decision_ts=dts[:3], tick_size=tick, lot_size=lot, half_spread=1, skew=0,
                        grid_interval=1, n_levels=1, order_qty=0.01, max_position=1.0)
    tpb = res0["mid"][0] * 1e-4 / tick
    kw = dict(decision_ts=dts, tick_size=tick, lot_size=lot, half_spread=a.half_spread_bps * tpb,
              skew=a.skew_bps * tpb, grid_interval=a.grid_bps * tpb, n_levels=5, order_qty=0.01,
              max_position=a.max_position)
    print(f"decisions {len(dts)}  start mid {res0['mid'][0]:.2f}  ticks/bp {tpb:.3f}  "
          f"half_spread {kw['half_spread']:.3f} skew {kw['skew']:.4f} grid {kw['grid_interval']:.3f} ticks")
    for _ in range(a.repeat):
        r = run_hbt_grid(a.npz, **kw)
        f = r["final"]
        eq = f["balance"] + f["position"] * f["mid"] - f["fee"]
        eq_last = r["balance"][-1] + r["position"][-1] * r["mid"][-1] - r["fee"][-1]
        print(f"trades {f['num_trades']} (at last decision {r['num_trades'][-1]})  fills {len(r['fills'])}  "
              f"final equity {eq:.4f} (at last decision {eq_last:.4f})  position {f['position']:.3f}  "
              f"elapsed {r['elapsed_s']:.4f} s  events {r['events']}  "
              f"{r['events'] / r['elapsed_s'] / 1e6:.2f} M ev/s  {len(dts) / r['elapsed_s'] / 1e3:.1f} k dec/s")


if __name__ == "__main__":
    _main()
