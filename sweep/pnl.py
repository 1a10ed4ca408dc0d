"""Where a lane's PnL comes from: spread capture, fees/rebates and inventory, and fill markouts.

Units.  Every amount is in the instrument's *PnL currency*: the quote currency (USDT for
BTCUSDT) for linear contracts, the base coin for inverse ones.  A position of ``q`` (qty units,
signed, long > 0) at price ``m`` is worth ``q * value(m)`` with ``value(m) = m * cm`` (linear,
``cm`` the contract multiplier) or ``value(m) = -cm / m`` (inverse: ``cm`` quote currency per
contract, PnL in the coin).  Markouts are in basis points of the fill price.  Times are ns.

PnL decomposition (an identity, no fitted term).  For fills ``i`` (side ``s_i`` +1 buy / -1 sell,
price ``p_i``, qty ``q_i``, fee ``f_i``: positive = cost, negative = rebate) from a flat start,
marked at the end at ``m_end``::

    PnL = spread capture + rebates/fees + inventory MTM
    spread capture = sum_i s_i q_i (value(m_i) - value(p_i))      # edge vs the mid at the fill
    rebates/fees   = -sum_i f_i                                   # > 0 when rebates are earned
    inventory MTM  = sum_i s_i q_i (value(m_end) - value(m_i))    # the mid moving after the fill
                   = integral of position * d value(mid)

so a strategy whose PnL is only its rebate shows spread capture + inventory <= 0.  What
``m_i`` is depends on what the engine recorded:

* :func:`decompose_fills` (exact engine, per fill): ``m_i`` is the exchange mid just before the
  fill (the book the order rested in, after every whole message stamped before the fill).
* :func:`decompose_record` (fast kernel, per decision row; also applicable to the exact
  engine's record): the kernel keeps no per-fill prices, only equity and position at each
  decision row ``t``.  Then ``inventory MTM = sum_t position[t] (value(mid[t+1]) -
  value(mid[t]))``, ``rebates/fees = -Fees`` (the kernel's output) and spread capture is the rest,
  ``PnL - rebates/fees - inventory MTM``, i.e. each fill's edge measured against the local mid
  at the first decision row after it.  That mid is up to one interval later than the fill, so
  this spread capture already contains the first interval's adverse selection, which the
  per-fill split books under inventory.

Fill markouts: ``markout(h) = s_i (mid(t_i + h) - p_i) / p_i * 1e4`` (bps, > 0 = the fill was
worth more than it cost ``h`` after it); ``h = 0`` is the spread captured.  The mid move after
the fill is ``s_i (mid(t_i + h) - mid(t_i)) / p_i * 1e4``: negative means adverse selection.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

#: markout horizons of the report, ns (100 ms, 1 s, 10 s, 60 s)
DEFAULT_HORIZONS_NS = (100_000_000, 1_000_000_000, 10_000_000_000, 60_000_000_000)


def value(price: np.ndarray, contract_multiplier: float = 1.0, inverse: bool = False) -> np.ndarray:
    """The value of one qty unit at ``price`` in PnL currency (see the module docstring)."""
    price = np.asarray(price, np.float64)
    return -contract_multiplier / price if inverse else price * contract_multiplier


class MidSeries(NamedTuple):
    """A mid price path: ``mid[k]`` holds from ``ts[k]`` until ``ts[k+1]`` (NaN while one-sided)."""

    ts: np.ndarray  # int64 ns, strictly increasing
    mid: np.ndarray  # price units

    def at(self, when: np.ndarray, *, before: bool = False) -> np.ndarray:
        """The mid in force at each time (``before``: just before it, excluding changes stamped
        exactly then); NaN before the first state."""
        when = np.asarray(when, np.int64)
        idx = np.searchsorted(self.ts, when, side="left" if before else "right") - 1
        out = np.full(len(when), np.nan)
        ok = idx >= 0
        out[ok] = self.mid[idx[ok]]
        return out


def _exchange_top(events) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ts, best_bid, best_ask)`` in ticks on the exchange clock, after every whole message
    (rows sharing an ``exch_ts``); empty sides are ``NO_BID`` / ``NO_ASK``."""
    from .data.book import replay_book

    inst = events.instrument
    book = replay_book(events.table, inst.tick_size, inst.lot_size, clock="exch", n_levels=1,
                       source=events.source)
    ts = book.take(events.table["exch_ts"]).astype(np.int64)
    last = np.append(ts[1:] != ts[:-1], True)
    return ts[last], book.best_bid[last], book.best_ask[last]


def _mids(ts: np.ndarray, bid: np.ndarray, ask: np.ndarray, tick_size: float) -> MidSeries:
    from .data.book import NO_ASK, NO_BID

    two_sided = (bid != NO_BID) & (ask != NO_ASK)
    mid = np.where(two_sided, (bid.astype(np.float64) + ask.astype(np.float64)) * 0.5 * tick_size, np.nan)
    return MidSeries(ts, mid)


def exchange_mids(events) -> MidSeries:
    """The exchange-clock mid after every whole message of an
    :class:`~mmsweep.sweep.data.events.Events` table."""
    return _mids(*_exchange_top(events), events.instrument.tick_size)


def markouts(ts: np.ndarray, side: np.ndarray, price: np.ndarray, mids: MidSeries,
             horizons_ns: Sequence[int] = DEFAULT_HORIZONS_NS) -> dict[str, np.ndarray]:
    """Per-fill markouts (bps of the fill price, see the module docstring).

    Args:
        ts: fill times on the clock of ``mids`` (ns).
        side: +1 for our buys, -1 for our sells.
        price: fill prices.
        mids: the mid path.
        horizons_ns: horizons ``h`` (ns).

    Returns:
        ``markout`` [n, H] (vs the fill price), ``mid_move`` [n, H] (vs the mid just before the
        fill), ``spread`` [n] (markout at h = 0); NaN where a mid is missing or past the data's end.
    """
    ts = np.asarray(ts, np.int64)
    side = np.asarray(side, np.float64)
    price = np.asarray(price, np.float64)
    before = mids.at(ts, before=True)
    end = mids.ts[-1] if len(mids.ts) else np.iinfo(np.int64).min
    later = np.empty((len(ts), len(horizons_ns)))
    for j, h in enumerate(horizons_ns):
        at = ts + int(h)
        later[:, j] = np.where(at <= end, mids.at(at), np.nan)
    scale = (side / price * 1e4)[:, None]
    return {"markout": (later - price[:, None]) * scale, "mid_move": (later - before[:, None]) * scale,
            "spread": (before - price) * scale[:, 0]}


def summarize_markouts(per_fill: dict[str, np.ndarray], side: np.ndarray,
                       horizons_ns: Sequence[int] = DEFAULT_HORIZONS_NS) -> list[dict[str, Any]]:
    """Mean, standard error and count of the markouts per side (``buy``/``sell``/``all``) and horizon."""
    side = np.asarray(side)
    rows = []
    for name, mask in (("buy", side > 0), ("sell", side < 0), ("all", np.ones(len(side), bool))):
        for j, h in enumerate(horizons_ns):
            row: dict[str, Any] = {"side": name, "horizon_ns": int(h)}
            for key in ("markout", "mid_move"):
                x = per_fill[key][mask, j]
                x = x[np.isfinite(x)]
                row[f"{key}_bps"] = float(x.mean()) if x.size else float("nan")
                row[f"{key}_se_bps"] = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
                row["fills"] = int(x.size)
            s = per_fill["spread"][mask]
            s = s[np.isfinite(s)]
            row["spread_bps"] = float(s.mean()) if s.size else float("nan")
            rows.append(row)
    return rows


def touch_markouts(events, horizons_ns: Sequence[int] = (1_000_000_000, 10_000_000_000), *,
                   since_ns: int | None = None) -> dict[str, Any]:
    """Markouts of the passive side of every trade printed at the touch: what a resting order at
    the best bid (ask) earned when a seller (buyer) hit it.  Exchange clock; bps of the price.

    A trade row counts when its price equals the passive side's best just before it (orders that
    walk the book print deeper rows too, which are skipped).  Returns, per horizon, the mean
    markout over trade rows (``mean_bps``), its standard error, the qty-weighted mean and the
    count.  ``since_ns``: only trades from then on (exchange clock; the book is still built from
    every earlier event).
    """
    from .data.events import TRADE

    tick = events.instrument.tick_size
    top_ts, bid, ask = _exchange_top(events)
    mids = _mids(top_ts, bid, ask, tick)
    tr = events.table[(events.table["kind"] == TRADE) & (events.table["side"] != 0)]
    tr = tr[np.argsort(tr["exch_ts"], kind="stable")]
    if since_ns is not None:
        tr = tr[tr["exch_ts"] >= since_ns]
    ts = tr["exch_ts"].astype(np.int64)
    passive = -tr["side"].astype(np.float64)  # the resting order's side
    k = np.searchsorted(top_ts, ts, side="left") - 1  # the book the resting order sat in
    kk = np.clip(k, 0, None)
    best = np.where(passive > 0, bid[kk], ask[kk]).astype(np.float64) * tick
    at_touch = (k >= 0) & (np.abs(tr["price"] - best) < 0.5 * tick) & np.isfinite(mids.at(ts, before=True))
    per = markouts(ts[at_touch], passive[at_touch], tr["price"][at_touch], mids, horizons_ns)
    qty = tr["qty"][at_touch].astype(np.float64)
    out: dict[str, Any] = {"trades": int(at_touch.sum()), "trade_rows": int(len(tr)), "horizons_ns": list(horizons_ns)}
    for j, h in enumerate(horizons_ns):
        x = per["markout"][:, j]
        ok = np.isfinite(x)
        out[f"{h / 1e9:g}s"] = {
            "mean_bps": float(x[ok].mean()) if ok.any() else float("nan"),
            "se_bps": float(x[ok].std(ddof=1) / np.sqrt(ok.sum())) if ok.sum() > 1 else float("nan"),
            "qty_weighted_bps": float(np.average(x[ok], weights=qty[ok])) if ok.any() else float("nan"),
            "n": int(ok.sum()),
        }
    return out


def decompose_fills(fills: np.ndarray, mids: MidSeries, *, end_mid: float, maker_fee: float, taker_fee: float,
                    contract_multiplier: float = 1.0, inverse: bool = False) -> dict[str, float]:
    """Per-fill decomposition of one lane's PnL (see the module docstring).

    Args:
        fills: the lane's fills (``exch_ts``, ``side``, ``price``, ``qty``, ``maker`` fields, as
            in :class:`mmsweep.replay.ReplayResult`), from a flat start.
        mids: the exchange mid path (``m_i`` = the mid just before each fill).
        end_mid: the mark at the end (price units).
        maker_fee, taker_fee: fee rates (fraction of traded value; negative = rebate).

    Returns:
        ``PnL``, ``spread_capture``, ``rebates_fees``, ``inventory`` (PnL currency) and ``fills``.
    """
    side = np.asarray(fills["side"], np.float64)
    price = np.asarray(fills["price"], np.float64)
    qty = np.asarray(fills["qty"], np.float64)
    m = mids.at(np.asarray(fills["exch_ts"], np.int64), before=True)
    m = np.where(np.isfinite(m), m, price)  # no two-sided book before the fill: no edge booked
    v = lambda x: value(x, contract_multiplier, inverse)  # noqa: E731
    amount = qty * (contract_multiplier / price if inverse else contract_multiplier * price)
    fee = np.where(np.asarray(fills["maker"], bool), maker_fee, taker_fee) * amount
    spread = float(np.sum(side * qty * (v(m) - v(price))))
    inventory = float(np.sum(side * qty * (v(np.float64(end_mid)) - v(m))))
    fees = -float(np.sum(fee))
    return {"PnL": spread + fees + inventory, "spread_capture": spread, "rebates_fees": fees, "inventory": inventory,
            "fills": int(len(side))}


def decompose_record(equity: np.ndarray, position: np.ndarray, mid: np.ndarray, fees: float, *,
                     contract_multiplier: float = 1.0, inverse: bool = False) -> dict[str, float]:
    """Per-row decomposition of one lane's PnL from a record (see the module docstring).

    Args:
        equity: [T] equity at each decision row (PnL currency, net of fees).
        position: [T] position at each row (qty units), after the fills up to that row.
        mid: [T] the mid the equity is marked at (price units).
        fees: total fees over the record (PnL currency, positive = cost): the kernel's ``Fees``.
    """
    equity = np.asarray(equity, np.float64)
    position = np.asarray(position, np.float64)
    v = value(np.asarray(mid, np.float64), contract_multiplier, inverse)
    if len(equity) < 2:
        return {"PnL": 0.0, "spread_capture": 0.0, "rebates_fees": 0.0, "inventory": 0.0}
    pnl = float(equity[-1] - equity[0])
    inventory = float(np.nansum(position[:-1] * np.diff(v)))
    return {"PnL": pnl, "spread_capture": pnl + float(fees) - inventory, "rebates_fees": -float(fees),
            "inventory": inventory}
