"""The exact replay engine's Python face: configuration, inputs, lock-step groups, processes.

``replay_policy`` replays candidates (parameter sets of one policy) over an event table and
returns what each bot recorded at every decision plus every fill; :func:`replay_metrics` turns
that into the sweep's metrics.  :class:`Backtest` drives one bot by hand (submit, cancel,
elapse), for scripted checks.

Assumptions that move results, all in :class:`ReplayConfig` (defaults in brackets):
queue model [power, n=2], exchange [no partial fills], entry and response latency [10 ms each,
or interpolated from an order-latency file], fees [-0.5 bp maker, 7 bp taker], asset [linear,
contract size 1], cross test per whole message [yes].  No market impact.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple

import numpy as np

from . import loop
from .book import price_to_ticks
from .latency import LatencyModel, constant_latency, interpolated_latency
from .queue import queue_code
from .state import (A_BALANCE, A_FEE, A_TRADES, A_VALUE, A_VOLUME, C_CANCEL_LOST, C_REJECTIONS, F_CAND,
                    F_EXCH_TS, F_LOCAL_TS, F_LOTS, F_MAKER, F_ORDER, F_SIDE, F_TICK, FULL_CLEAR, K_FILLS, K_FILLS_DROPPED,
                    K_TS, LIMIT, MARKET, TIFS, Cfg, Data, Sim, new_sim)

# Event kinds and sentinel (mmsweep.sweep.data.events)
_DEPTH, _TRADE, _CLEAR, _SNAPSHOT, _BBO = 1, 2, 3, 4, 5


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """Exchange, latency and fee assumptions of an exact replay.

    Attributes:
        queue: queue-position model: ``none`` (strict cross: only trades through the price or a
            crossing best fill), ``risk_averse``, ``power``, ``power2``, ``power3``, ``log``,
            ``log2`` (see :mod:`mmsweep.replay.queue`).
        queue_n: the exponent ``n`` of the power families.
        partial_fills: partial-fill exchange (else every fill takes the whole order).
        entry_ns, response_ns: constant order latencies (ns).  A negative ``entry_ns`` rejects
            every request before the exchange.
        latency_rows: order-latency rows (``req_ts, exch_ts, resp_ts``, ns), interpolated; they
            replace ``entry_ns``/``response_ns``.
        maker_fee, taker_fee: fractions of traded amount (positive = cost, -0.00005 = 0.5 bp
            rebate).
        inverse: inverse asset (amount = contract_size * qty / price; PnL in the base coin).
        contract_size: quote currency per (qty x price), linear; per qty, inverse.
        cross_per_message: judge best-price crosses after whole messages (rows sharing an
            exch_ts) rather than after every row (hftbacktest).
        lockstep: candidates replayed together in one pass over the events.
        processes: worker processes for groups of candidates (1 = in this process).
        n_slots: order slots per candidate (default: :func:`order_slots`, enough for every order
            the grid can have in flight); grown automatically if a replay still runs out.
        bus_size: capacity of each message bus per candidate (grown likewise).
        fill_capacity: rows of the fill log per pass (fills beyond are counted, not logged).
    """

    queue: str = "power"
    queue_n: float = 2.0
    partial_fills: bool = False
    entry_ns: int = 10_000_000
    response_ns: int = 10_000_000
    latency_rows: Any = dataclasses.field(default=None, compare=False, repr=False)
    maker_fee: float = -0.00005
    taker_fee: float = 0.0007
    inverse: bool = False
    contract_size: float = 1.0
    cross_per_message: bool = True
    lockstep: int = 8
    processes: int = 1
    n_slots: int | None = None
    bus_size: int = 4096
    fill_capacity: int = 1 << 18

    def __post_init__(self) -> None:
        queue_code(self.queue)
        if self.lockstep < 1 or self.processes < 1:
            raise ValueError("lockstep and processes must be >= 1")
        if self.response_ns < 0:
            raise ValueError(f"response latency must be >= 0 ns, got {self.response_ns}")

    @classmethod
    def degenerate(cls, entry_ns: int, **kw) -> "ReplayConfig":
        """The sweep kernel's contract: strict-cross fills, no queue, constant entry latency, no
        response latency, crosses judged per message.  The engine then reproduces the kernel's
        fills when ``entry_ns`` is shorter than the decision interval."""
        return cls(queue="none", entry_ns=entry_ns, response_ns=0, cross_per_message=True, **kw)

    def max_round_trip_ns(self) -> int:
        """The longest request-to-response time (ns) the latency model can give."""
        if self.latency_rows is None:
            return abs(int(self.entry_ns)) + int(self.response_ns)
        req = np.asarray(self.latency_rows["req_ts"], np.int64)
        exch = np.asarray(self.latency_rows["exch_ts"], np.int64)
        resp = np.asarray(self.latency_rows["resp_ts"], np.int64)
        ok = exch > 0
        trip = int((exch - req)[ok].max() + (resp - exch)[ok].max()) if ok.any() else 0
        return max(trip, int((resp - req)[~ok].max()) if (~ok).any() else 0)

    def latency_model(self) -> LatencyModel:
        if self.latency_rows is not None:
            return interpolated_latency(self.latency_rows)
        return constant_latency(int(self.entry_ns), int(self.response_ns))

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "latency_rows"}
        out["latency"] = ("interpolated" if self.latency_rows is not None else "constant")
        return out


def build_data(table: np.ndarray, tick_size: float, lot_size: float, *, roi: float = 0.1
               ) -> tuple[Data, int, int]:
    """The engine's view of an event table (``EVENT_DTYPE``, any order): ``(data, book_base,
    n_ticks)``.  BBO rows are ignored when the table has depth rows; a quotes-only table is
    turned into a one-level book (each quote replaces its side).

    The book is a dense array over a region of interest: the range of trade prices (or of
    depth prices, without trades) widened by ``roi`` (a fraction of the price) on each side.
    Depth rows outside it are dropped, as hftbacktest's ROIVectorMarketDepth does: deep
    snapshot levels (on the real capture some lie 10x away from the market) would otherwise
    make the arrays 100x larger and the replay 10x slower, and no quote ever rests there."""
    kind = table["kind"].astype(np.int64)
    has_depth = bool(np.any((kind == _DEPTH) | (kind == _SNAPSHOT)))
    if not has_depth:
        bbo = table[kind == _BBO]
        if len(bbo) == 0:
            raise ValueError("the exact engine needs depth or quote (BBO) rows; the table has neither")
        clears = bbo.copy()
        clears["kind"] = _CLEAR
        clears["price"] = np.nan
        depth = bbo.copy()
        depth["kind"] = _DEPTH
        rest = table[kind != _BBO]
        merged = np.concatenate([np.stack([clears, depth], axis=1).reshape(-1), rest])
        table = merged[np.lexsort((merged["exch_ts"], merged["local_ts"]))]
        kind = table["kind"].astype(np.int64)
    keep = (kind == _DEPTH) | (kind == _SNAPSHOT) | (kind == _TRADE) | (kind == _CLEAR)
    table = table[keep]
    kind = kind[keep]
    price = table["price"].astype(np.float64)
    finite = np.isfinite(price)
    ticks = np.zeros(len(table), np.int64)
    ticks[finite] = price_to_ticks(price[finite], tick_size)
    priced = finite & (kind != _CLEAR)
    if not priced.any():
        raise ValueError("no priced rows in the event table")
    anchor = ticks[priced & (kind == _TRADE)]
    if len(anchor) == 0:
        anchor = ticks[priced]
    lo, hi = int(np.percentile(anchor, 0.1)), int(np.percentile(anchor, 99.9))
    margin = int(np.ceil(roi * hi)) + 64
    base = max(lo - margin, 0)
    n_ticks = hi + margin - base + 1
    outside = priced & (kind != _TRADE) & ((ticks < base) | (ticks >= base + n_ticks))
    if outside.any():
        keep_rows = ~outside
        table, kind, ticks, finite = table[keep_rows], kind[keep_rows], ticks[keep_rows], finite[keep_rows]
    idx = np.where(finite, ticks - base, FULL_CLEAR)
    local_order = np.argsort(table["local_ts"], kind="stable")
    exch_order = np.argsort(table["exch_ts"], kind="stable")
    x_ts = table["exch_ts"][exch_order].astype(np.int64)
    msg_end = np.ones(len(x_ts), np.bool_)
    msg_end[:-1] = x_ts[1:] != x_ts[:-1]
    side = table["side"].astype(np.int64)
    qty = table["qty"].astype(np.float64)
    data = Data(
        x_ts=x_ts, x_kind=kind[exch_order], x_side=side[exch_order], x_idx=idx[exch_order],
        x_qty=qty[exch_order], x_msg_end=msg_end,
        l_ts=table["local_ts"][local_order].astype(np.int64), l_kind=kind[local_order],
        l_side=side[local_order], l_idx=idx[local_order], l_qty=qty[local_order],
    )
    return data, base, n_ticks


def order_slots(max_levels: int, round_trip_ns: int, interval_ns: int) -> int:
    """Order slots one candidate needs at most, quoting ``max_levels`` a side every
    ``interval_ns`` with requests answered within ``round_trip_ns``.

    Each decision sends at most ``max_levels`` new orders a side.  An order's slot is busy from
    its sending until the decision after its end is known: its acknowledgement comes within a
    round trip, the first decision after that may cancel it, the cancel's answer comes within
    another round trip, and the next decision frees the slot -- at most ``2 * ceil(round trip /
    interval) + 2`` decisions later.  Orders of ``2 * ceil(...) + 3`` decisions, both sides, plus
    a margin."""
    per_decision = 2 * max(int(max_levels), 1)
    trips = -(-max(int(round_trip_ns), 0) // max(int(interval_ns), 1))
    return per_decision * (2 * trips + 3) + 8


#: limits the automatic growth stops at (per candidate); a lane that needs more is reported failed
MAX_SLOTS = 1 << 14
MAX_BUS = 1 << 16


def _cfg(config: ReplayConfig, tick_size: float, lot_size: float, book_base: int) -> Cfg:
    return Cfg(float(tick_size), float(lot_size), int(book_base), queue_code(config.queue), float(config.queue_n),
               bool(config.partial_fills), float(config.maker_fee), float(config.taker_fee), bool(config.inverse),
               float(config.contract_size), bool(config.cross_per_message))


class ReplayResult(NamedTuple):
    """What each candidate's bot recorded, and its fills.

    Attributes:
        timestamp: decision times (local ns) [T].
        mid: the bot's mid price at each decision [T] (NaN while one-sided).
        equity, position, num_trades, trading_value, fees: [n, T], the bot's view *before* the
            decision's orders (quote currency; position in qty units; counts).
        fills: structured array (lane, exch_ts, local_ts, side, price, qty, maker) in the order the
            bots heard of them; ``exch_ts`` is when the exchange filled, ``local_ts`` when the bot
            knew.
        final: dict of [n] arrays at the end: Rejections, CancelsLost, FinalPosition, and the
            final equity/trades after the last window; ``Failure``: why a candidate could not be
            replayed ("" if it was; a failed candidate's record is NaN and it has no fills).
        stats: run facts (events, seconds, passes, fills dropped, order slots, failed).
    """

    timestamp: np.ndarray
    mid: np.ndarray
    equity: np.ndarray
    position: np.ndarray
    num_trades: np.ndarray
    trading_value: np.ndarray
    fees: np.ndarray
    fills: np.ndarray
    final: dict
    stats: dict


FILL_DTYPE = np.dtype([("lane", "i8"), ("exch_ts", "i8"), ("local_ts", "i8"), ("side", "i1"), ("price", "f8"),
                       ("qty", "f8"), ("maker", "?"), ("order_id", "i8")])


# Inputs of the groups, set before workers fork so they inherit them without pickling.
_JOB: dict[str, Any] = {}


def _is_capacity_error(exc: BaseException) -> bool:
    """Out of order slots (:data:`replay.local.SLOTS_FULL`) or of bus space (replay.bus.push)."""
    from .local import SLOTS_FULL

    return isinstance(exc, RuntimeError) and str(exc).startswith((SLOTS_FULL, "replay: message bus full"))


def _run_group(lo: int, hi: int) -> dict[str, np.ndarray]:
    """Replay candidates ``[lo, hi)``.  A pass that runs out of order slots or bus space is run
    again with both doubled (up to ``MAX_SLOTS``/``MAX_BUS``); candidates that still cannot be
    replayed are replayed one by one to find them, and reported in ``Failure`` (their records
    NaN) while the others complete."""
    j = _JOB
    n_slots, bus = j["n_slots"], j["config"].bus_size
    while True:
        try:
            return _replay_group(lo, hi, n_slots, bus)
        except RuntimeError as exc:
            if not _is_capacity_error(exc):
                raise
            if n_slots >= MAX_SLOTS and bus >= MAX_BUS:
                last = str(exc)
                break
            n_slots, bus = min(2 * n_slots, MAX_SLOTS), min(2 * bus, MAX_BUS)
    if hi - lo > 1:
        return _merge_groups([_run_group(c, c + 1) for c in range(lo, hi)])
    return _failed_group(lo, hi, f"{last} (at {n_slots} order slots and a bus of {bus} messages)", n_slots)


def _failed_group(lo: int, hi: int, reason: str, slots: int) -> dict[str, np.ndarray]:
    """The record of candidates that could not be replayed: NaN throughout, no fills."""
    n, T = hi - lo, len(_JOB["decision_ts"])
    rec: dict[str, Any] = {k: np.full((n, T), np.nan) for k in ("equity", "position", "num_trades", "trading_value",
                                                                "fees")}
    rec.update(mid=np.full(T, np.nan), fills=np.zeros(0, FILL_DTYPE), dropped=0, slots=slots,
               **{k: np.full(n, np.nan) for k in ("Rejections", "CancelsLost", "FinalPosition", "EndEquity",
                                                   "EndTrades", "ExchangeTrades")},
               Failure=np.array([reason] * n, dtype=object))
    return rec


def _merge_groups(parts: list[dict]) -> dict[str, np.ndarray]:
    """Candidates replayed apart, as one group (the market record from one that replayed)."""
    out: dict[str, Any] = {}
    for key in parts[0]:
        if key == "mid":
            good = [p["mid"] for p in parts if not p["Failure"].any()]
            out[key] = good[0] if good else parts[0]["mid"]
        elif key == "dropped":
            out[key] = sum(p[key] for p in parts)
        elif key == "slots":
            out[key] = max(p[key] for p in parts)
        else:
            out[key] = np.concatenate([p[key] for p in parts])
    return out


def _replay_group(lo: int, hi: int, n_slots: int, bus_size: int) -> dict[str, np.ndarray]:
    j = _JOB
    n = hi - lo
    T = len(j["decision_ts"])
    sim = new_sim(n, n_slots, bus_size, j["n_ticks"], j["config"].fill_capacity)
    rec = {k: np.zeros((n, T)) for k in ("equity", "position", "num_trades", "trading_value", "fees")}
    mid = np.zeros(T)
    loop.run_policy(sim, j["cfg"], j["lat"], j["data"], j["decision_ts"], j["end_ts"], j["features"],
                    np.ascontiguousarray(j["params"][lo:hi]), j["base_tick"], j["max_levels"], j["policy"],
                    rec["equity"], rec["position"],
                    rec["num_trades"], rec["trading_value"], rec["fees"], mid)
    k = int(sim.cur[K_FILLS])
    f = sim.fills[:k]
    fills = np.zeros(k, FILL_DTYPE)
    fills["lane"] = f[:, F_CAND] + lo
    fills["exch_ts"] = f[:, F_EXCH_TS]
    fills["local_ts"] = f[:, F_LOCAL_TS]
    fills["side"] = f[:, F_SIDE]
    fills["price"] = f[:, F_TICK] * j["cfg"].tick_size
    fills["qty"] = f[:, F_LOTS] * j["cfg"].lot_size
    fills["maker"] = f[:, F_MAKER] != 0
    fills["order_id"] = f[:, F_ORDER]
    end_mid = loop.local_mid_ticks(sim, j["cfg"]) * j["cfg"].tick_size
    rec.update(
        mid=mid, fills=fills, dropped=int(sim.cur[K_FILLS_DROPPED]),
        Rejections=sim.count[:, C_REJECTIONS].astype(np.float64),
        CancelsLost=sim.count[:, C_CANCEL_LOST].astype(np.float64),
        FinalPosition=sim.pos[0] * j["cfg"].lot_size,
        EndEquity=np.array([loop.equity(sim, j["cfg"], c, end_mid) for c in range(n)]),
        EndTrades=sim.acct[0, :, A_TRADES].copy(),
        ExchangeTrades=sim.acct[1, :, A_TRADES].copy(),
        Failure=np.array([""] * n, dtype=object),
        slots=n_slots,
    )
    return rec


def replay_policy(table: np.ndarray, *, tick_size: float, lot_size: float, decision_ts: np.ndarray, end_ts: int,
                  features: np.ndarray, market, policy: str, static: dict | None, params: dict[str, np.ndarray],
                  config: ReplayConfig = ReplayConfig(), data: tuple | None = None,
                  progress: Callable[[str], None] | None = None) -> ReplayResult:
    """Replay ``len(params[...])`` candidates of ``policy`` over the events.

    Args:
        table: events (``EVENT_DTYPE``) of the quoted instrument, from before the first decision
            (the book must be built) to ``end_ts``.
        tick_size, lot_size: the instrument's (price units per tick; qty units per lot).
        decision_ts: decision times, local clock (ns), increasing.
        end_ts: replay until this time after the last decision (its window's end).
        features: float64 [T, K] feature values at the decisions (the frames' columns).
        market: :class:`mmsweep.kernels.policies.base.Market` (``base_tick``, ``max_levels``,
            feature names) -- the same as the sweep kernel's.
        policy, static: the policy name and static options.
        params: parameter name -> values [n] (every lane parameter of the sweep).
        config: exchange / latency / fee assumptions.
        data: a cached :func:`build_data` result for ``table`` (optional).
    """
    from ..kernels.policy_numba import compile_decision

    decision_ts = np.ascontiguousarray(decision_ts, np.int64)
    if decision_ts.ndim != 1 or len(decision_ts) == 0 or np.any(np.diff(decision_ts) <= 0):
        raise ValueError("decision_ts must be a non-empty increasing array of ns")
    if end_ts < decision_ts[-1]:
        raise ValueError("end_ts is before the last decision")
    names = tuple(sorted(params))
    n = len(np.asarray(params[names[0]])) if names else 1
    values = np.stack([np.asarray(params[k], np.float64).reshape(n) for k in names], axis=1) if names else \
        np.zeros((1, 0))
    features = np.ascontiguousarray(features, np.float64).reshape(len(decision_ts), -1)
    if features.shape[1] != len(market.feature_names):
        raise ValueError(f"features has {features.shape[1]} columns; market names {len(market.feature_names)}")
    fn = compile_decision(policy, static, market, names)
    data, base, n_ticks = data if data is not None else build_data(table, tick_size, lot_size)
    max_levels = int(market.max_levels)
    _JOB.clear()
    _JOB.update(
        data=data, cfg=_cfg(config, tick_size, lot_size, base), lat=config.latency_model(), n_ticks=n_ticks,
        decision_ts=decision_ts, end_ts=np.int64(end_ts), features=features, params=values,
        base_tick=np.int64(market.base_tick), max_levels=max_levels,
        policy=fn, config=config,
        n_slots=config.n_slots or order_slots(max_levels, config.max_round_trip_ns(),
                                              int(np.diff(decision_ts).min()) if len(decision_ts) > 1 else 1),
    )
    groups = [(lo, min(n, lo + config.lockstep)) for lo in range(0, n, config.lockstep)]
    started = time.perf_counter()
    parts: list[dict] = []
    if config.processes > 1 and len(groups) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        _run_group(0, 1)  # compile once here; forked workers inherit the machine code
        started = time.perf_counter()
        with ProcessPoolExecutor(min(config.processes, len(groups)), mp_context=mp.get_context("fork")) as pool:
            futures = [pool.submit(_run_group, lo, hi) for lo, hi in groups]
            for i, fut in enumerate(futures):
                parts.append(fut.result())
                if progress:
                    progress(f"  exact replay: {groups[i][1]:,}/{n:,} candidates")
    else:
        for lo, hi in groups:
            parts.append(_run_group(lo, hi))
            if progress:
                progress(f"  exact replay: {hi:,}/{n:,} candidates")
    elapsed = time.perf_counter() - started
    cat = lambda key: np.concatenate([p[key] for p in parts])  # noqa: E731
    final = {k: cat(k) for k in ("Rejections", "CancelsLost", "FinalPosition", "EndEquity", "EndTrades",
                                 "ExchangeTrades", "Failure")}
    stats = {"events": int(len(data.x_ts)), "candidates": n, "passes": len(groups), "seconds": elapsed,
             "fills_dropped": int(sum(p["dropped"] for p in parts)), "order_slots": int(_JOB["n_slots"]),
             "order_slots_used": int(max(p["slots"] for p in parts)),
             "failed": int(sum(bool(f) for f in final["Failure"])), "config": config.describe()}
    mid = next((p["mid"] for p in parts if not all(p["Failure"])), parts[0]["mid"])
    return ReplayResult(decision_ts, mid, cat("equity"), cat("position"), cat("num_trades"),
                        cat("trading_value"), cat("fees"), cat("fills"), final, stats)


def replay_metrics(result: ReplayResult, *, resample_ns: int, book_size: float, trading_days_per_year: float = 252.0,
                   contract_multiplier: float = 1.0) -> dict[str, np.ndarray]:
    """The sweep's metrics (hftbacktest's definitions) from the record, one array per metric."""
    from ..kernels.metrics import metrics_from_record

    failed = np.array([bool(f) for f in result.final.get("Failure", [""] * result.equity.shape[0])], bool)
    rows = []
    for c in range(result.equity.shape[0]):
        if failed[c]:
            rows.append(None)
            continue
        rows.append(metrics_from_record(
            result.timestamp, equity=result.equity[c], position=result.position[c], mid_price=result.mid,
            num_trades_cum=result.num_trades[c], trading_value_cum=result.trading_value[c],
            fees_cum=result.fees[c], resample_ns=resample_ns, book_size=book_size,
            trading_days_per_year=trading_days_per_year, contract_multiplier=contract_multiplier))
    names = next((list(r) for r in rows if r is not None), [])
    out = {k: np.array([np.nan if r is None else r[k] for r in rows], np.float64) for k in names}
    out["Rejections"] = result.final["Rejections"]
    out["FinalPosition"] = result.final["FinalPosition"]
    return out


class Backtest:
    """One bot driven by hand over an event table (hftbacktest-style ``elapse``/``submit``/
    ``cancel``), on the same engine functions as :func:`replay_policy`.  For scripted checks
    and conformance tests; prices are in price units, sizes in qty units."""

    def __init__(self, table: np.ndarray, *, tick_size: float, lot_size: float,
                 config: ReplayConfig = ReplayConfig(), n_slots: int = 64):
        self.tick_size, self.lot_size, self.config = tick_size, lot_size, config
        self.data, base, n_ticks = build_data(table, tick_size, lot_size)
        self.cfg = _cfg(config, tick_size, lot_size, base)
        self.lat = config.latency_model()
        self.sim: Sim = new_sim(1, n_slots, config.bus_size, n_ticks, config.fill_capacity)
        first = min(int(self.data.l_ts[0]), int(self.data.x_ts[0]))
        self.sim.cur[K_TS] = first

    @property
    def now(self) -> int:
        return int(self.sim.cur[K_TS])

    def elapse(self, ns: int) -> None:
        loop.advance(self.sim, self.cfg, self.lat, self.data, np.int64(self.now + ns))

    def goto(self, ts: int) -> None:
        loop.advance(self.sim, self.cfg, self.lat, self.data, np.int64(ts))

    def submit(self, side: int, price: float, qty: float, tif: str = "GTX", market: bool = False) -> int:
        """Send a new order now; returns its slot.  ``side`` +1 buy / -1 sell."""
        from .local import submit

        tick = int(price_to_ticks(np.array([price]), self.tick_size)[0]) if not market else 0
        lots = int(round(qty / self.lot_size))
        slot = submit(self.sim, self.lat, 0, side, tick, lots, TIFS[tif], MARKET if market else LIMIT,
                      np.int64(self.now))
        if slot < 0:
            raise RuntimeError("no free order slot")
        return int(slot)

    def cancel(self, slot: int) -> bool:
        from .local import cancel

        return bool(cancel(self.sim, self.lat, 0, slot, np.int64(self.now)))

    def order_id(self, slot: int) -> int:
        from .state import O_ID

        return int(self.sim.ordi[0, slot, O_ID])

    def order(self, slot: int) -> dict[str, int]:
        """The order's fields (see :mod:`mmsweep.replay.state`: ``O_*``)."""
        from . import state

        o = self.sim.ordi[0, slot]
        return {name[2:].lower(): int(o[getattr(state, name)]) for name in
                ("O_ID", "O_SIDE", "O_TICK", "O_LOTS", "O_LEAVES", "O_XST", "O_LST", "O_LREQ")}

    @property
    def position(self) -> float:
        return float(self.sim.pos[0, 0] * self.lot_size)

    @property
    def balance(self) -> float:
        return float(self.sim.acct[0, 0, A_BALANCE])

    @property
    def fee(self) -> float:
        return float(self.sim.acct[0, 0, A_FEE])

    @property
    def num_trades(self) -> int:
        return int(self.sim.acct[0, 0, A_TRADES])

    @property
    def trading_volume(self) -> float:
        return float(self.sim.acct[0, 0, A_VOLUME])

    @property
    def trading_value(self) -> float:
        return float(self.sim.acct[0, 0, A_VALUE])

    def fills(self) -> np.ndarray:
        k = int(self.sim.cur[K_FILLS])
        f = self.sim.fills[:k]
        out = np.zeros(k, FILL_DTYPE)
        out["exch_ts"], out["local_ts"], out["side"] = f[:, F_EXCH_TS], f[:, F_LOCAL_TS], f[:, F_SIDE]
        out["price"], out["qty"], out["maker"] = f[:, F_TICK] * self.tick_size, f[:, F_LOTS] * self.lot_size, \
            f[:, F_MAKER] != 0
        out["order_id"] = f[:, F_ORDER]
        return out

