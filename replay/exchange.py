"""The exchange side (numba): the matching engine's book, resting orders and their fills.

Rules (reference notes §6; hftbacktest's where sound, with the fixes listed in the README):

* A resting order fills as a maker at its own price, when (a) a trade prints *through* it (a
  buyer-aggressor trade above a resting sell, a seller-aggressor trade below a resting buy),
  (b) a trade at its price exhausts the queue ahead (:mod:`.queue`), or (c) the opposite best
  crosses it (the best bid rises to or above a resting sell; the best ask falls to or below a
  resting buy).  With ``cross_per_message`` the cross test (c) runs after each whole message
  (rows sharing an ``exch_ts``) instead of after each row: Binance lists a message's bids
  before its asks, so a rising bid briefly crosses an ask the same message deletes.
* No-partial-fill exchange: every fill takes the whole order.  Partial-fill exchange: a queue
  fill takes the lots the queue overshoot allows; through-trades and crosses take the rest.
* New orders (at their arrival time, after every market event stamped at or before it):
  post-only (GTX) orders that would cross are expired; marketable GTC / IOC limits and market
  orders take liquidity at the opposite best (no-partial: all of it at the best; partial: level
  by level up to the limit, then IOC/market remainders expire and a GTC remainder fills at its
  limit, as hftbacktest does); IOC/FOK orders that are not marketable expire.  Every chunk of a
  taker fill is reported (hftbacktest reports only the last one).
* Cancels remove a resting order; a cancel that arrives after the order finished is rejected
  (the fill won the race).
* No market impact: the replayed book is never changed by our own fills.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from . import bus, queue
from .book import BEST_ASK, BEST_BID
from .latency import response_latency
from .state import (A_BALANCE, A_FEE, A_TRADES, A_VALUE, A_VOLUME, C_CANCEL_LOST, C_REJECTIONS, C_RESTING,
                    FLAG_FINISHED, FLAG_MAKER, K_MAX_BUY, K_MIN_SELL, K_REF_ASK, K_REF_BID, K_RESTING, LIMIT, MSG_ACK, MSG_CANCEL,
                    MSG_CANCEL_REJECTED, MSG_CANCELED, MSG_EXPIRED, MSG_FILL, MSG_NEW, O_ID, O_LEAVES, O_SIDE,
                    O_TICK, O_TIF, O_TYPE, O_XST, TIF_FOK, TIF_GTC, TIF_GTX, TIF_IOC, TO_BOT, X_DONE, X_RESTING,
                    M_ID, M_KIND, M_SLOT)

# Event kinds (mmsweep.sweep.data.events)
DEPTH = 1
TRADE = 2
CLEAR = 3
SNAPSHOT = 4


@numba.njit(cache=True)
def apply_fill(acct, pos, which, c, side, lots, tick, maker, cfg):
    """Book a fill of ``lots`` at ``tick`` into account ``which`` of candidate ``c``."""
    qty = lots * cfg.lot_size
    price = tick * cfg.tick_size
    amount = cfg.contract_size * qty / price if cfg.inverse else cfg.contract_size * qty * price
    a = acct[which, c]
    pos[which, c] += side * lots
    a[A_BALANCE] -= side * amount
    a[A_FEE] += (cfg.maker_fee if maker else cfg.taker_fee) * amount
    a[A_VALUE] += amount
    a[A_VOLUME] += qty
    a[A_TRADES] += 1.0


@numba.njit(cache=True, inline="always")
def _unrest(sim, cfg, c, o):
    """Order ``o`` of candidate ``c`` stops resting."""
    sim.count[c, C_RESTING] -= 1
    sim.cur[K_RESTING] -= 1
    idx = o[O_TICK] - cfg.book_base
    if 0 <= idx < sim.rest_bid.shape[0]:
        if o[O_SIDE] > 0:
            sim.rest_bid[idx] -= 1
        else:
            sim.rest_ask[idx] -= 1


@numba.njit(cache=True)
def fill(sim, cfg, lat, c, s, lots, tick, maker, ts):
    """The exchange fills ``lots`` of order ``s`` at ``tick``; the bot hears of it later."""
    o = sim.ordi[c, s]
    if lots > o[O_LEAVES]:
        lots = o[O_LEAVES]
    if lots <= 0:
        return
    o[O_LEAVES] -= lots
    flag = FLAG_MAKER if maker else 0
    if o[O_LEAVES] == 0:
        flag |= FLAG_FINISHED
        if o[O_XST] == X_RESTING:
            _unrest(sim, cfg, c, o)
        o[O_XST] = X_DONE
    apply_fill(sim.acct, sim.pos, 1, c, o[O_SIDE], lots, tick, maker, cfg)
    bus.push(sim, TO_BOT, c, ts + response_latency(lat, ts), MSG_FILL, s, o[O_ID], lots, tick, flag, ts)


@numba.njit(cache=True)
def _respond(sim, lat, c, s, kind, ts):
    bus.push(sim, TO_BOT, c, ts + response_latency(lat, ts), kind, s, sim.ordi[c, s, O_ID], 0, 0, 0, ts)


# ------------------------------------------------------------------------------ market events

@numba.njit(cache=True)
def cross(sim, cfg, lat, ts):
    """Fill resting orders the opposite best has crossed since the last check."""
    best_bid = sim.xbest[BEST_BID]
    best_ask = sim.xbest[BEST_ASK]
    n_ticks = sim.xbid.shape[0]
    rose = best_bid >= 0 and best_bid > sim.cur[K_REF_BID]
    fell = best_ask < n_ticks and best_ask < sim.cur[K_REF_ASK]
    sim.cur[K_REF_BID] = best_bid
    sim.cur[K_REF_ASK] = best_ask
    if not (rose or fell):
        return
    bid_tick = best_bid + cfg.book_base
    ask_tick = best_ask + cfg.book_base
    max_buy = np.iinfo(np.int64).min
    min_sell = np.iinfo(np.int64).max
    for c in range(sim.ordi.shape[0]):
        if sim.count[c, C_RESTING] == 0:
            continue
        for s in range(sim.ordi.shape[1]):
            o = sim.ordi[c, s]
            if o[O_XST] != X_RESTING:
                continue
            if rose and o[O_SIDE] < 0 and o[O_TICK] <= bid_tick:
                fill(sim, cfg, lat, c, s, o[O_LEAVES], o[O_TICK], True, ts)
            elif fell and o[O_SIDE] > 0 and o[O_TICK] >= ask_tick:
                fill(sim, cfg, lat, c, s, o[O_LEAVES], o[O_TICK], True, ts)
            elif o[O_SIDE] > 0:
                max_buy = max(max_buy, o[O_TICK])
            else:
                min_sell = min(min_sell, o[O_TICK])
    sim.cur[K_MAX_BUY] = max_buy
    sim.cur[K_MIN_SELL] = min_sell


@numba.njit(cache=True)
def trade(sim, cfg, lat, aggressor, tick, qty, ts):
    """A trade: a buyer-aggressor trade can fill resting sells, a seller-aggressor one buys."""
    if aggressor == 0:
        return
    for c in range(sim.ordi.shape[0]):
        if sim.count[c, C_RESTING] == 0:
            continue
        for s in range(sim.ordi.shape[1]):
            o = sim.ordi[c, s]
            if o[O_XST] != X_RESTING or o[O_SIDE] != -aggressor:
                continue
            through = o[O_TICK] < tick if aggressor > 0 else o[O_TICK] > tick
            if through:
                fill(sim, cfg, lat, c, s, o[O_LEAVES], o[O_TICK], True, ts)
            elif o[O_TICK] == tick:
                queue.on_trade(cfg.queue_kind, sim.queue[c], s, qty)
                lots = queue.filled_lots(cfg.queue_kind, sim.queue[c], s, cfg.lot_size)
                if lots > 0:
                    fill(sim, cfg, lat, c, s, lots if cfg.partial else o[O_LEAVES], o[O_TICK], True, ts)


@numba.njit(cache=True)
def depth_queues(sim, cfg, side, tick, prev_qty, new_qty):
    for c in range(sim.ordi.shape[0]):
        if sim.count[c, C_RESTING] == 0:
            continue
        for s in range(sim.ordi.shape[1]):
            o = sim.ordi[c, s]
            if o[O_XST] == X_RESTING and o[O_SIDE] == side and o[O_TICK] == tick:
                queue.on_depth(cfg.queue_kind, cfg.queue_n, sim.queue[c], s, prev_qty, new_qty)


# ------------------------------------------------------------------------------ requests

@numba.njit(cache=True)
def _take(sim, cfg, lat, c, s, limit_tick, ts, is_market):
    """A marketable order takes liquidity from the opposite side; returns the lots left."""
    o = sim.ordi[c, s]
    side = o[O_SIDE]
    n_ticks = sim.xbid.shape[0]
    if not cfg.partial:
        best = sim.xbest[BEST_ASK] if side > 0 else sim.xbest[BEST_BID]
        fill(sim, cfg, lat, c, s, o[O_LEAVES], best + cfg.book_base, False, ts)
        return 0
    j = sim.xbest[BEST_ASK] if side > 0 else sim.xbest[BEST_BID]
    book = sim.xask if side > 0 else sim.xbid
    while o[O_LEAVES] > 0 and 0 <= j < n_ticks:
        tick = j + cfg.book_base
        if not is_market and (tick > limit_tick if side > 0 else tick < limit_tick):
            break
        avail = book[j] / cfg.lot_size
        lots = math.floor(avail + 0.5)
        if lots > 0:
            fill(sim, cfg, lat, c, s, min(lots, o[O_LEAVES]), tick, False, ts)
        j += side
    return o[O_LEAVES]


@numba.njit(cache=True)
def on_request(sim, cfg, lat, c, m, ts):
    """A request of candidate ``c`` reaches the exchange at ``ts``."""
    kind = m[M_KIND]
    s = m[M_SLOT]
    o = sim.ordi[c, s]
    if o[O_ID] != m[M_ID]:
        return
    if kind == MSG_CANCEL:
        if o[O_XST] == X_RESTING:
            o[O_XST] = X_DONE
            _unrest(sim, cfg, c, o)
            _respond(sim, lat, c, s, MSG_CANCELED, ts)
        else:
            sim.count[c, C_CANCEL_LOST] += 1
            _respond(sim, lat, c, s, MSG_CANCEL_REJECTED, ts)
        return
    if kind != MSG_NEW:
        return
    side = o[O_SIDE]
    n_ticks = sim.xbid.shape[0]
    opposite = sim.xbest[BEST_ASK] if side > 0 else sim.xbest[BEST_BID]
    has_opposite = opposite < n_ticks if side > 0 else opposite >= 0
    opposite_tick = opposite + cfg.book_base
    if o[O_TYPE] != LIMIT:
        if not has_opposite:
            o[O_XST] = X_DONE
            _respond(sim, lat, c, s, MSG_EXPIRED, ts)
            return
        if _take(sim, cfg, lat, c, s, 0, ts, True) > 0:
            o[O_XST] = X_DONE
            _respond(sim, lat, c, s, MSG_EXPIRED, ts)
        return
    tick = o[O_TICK]
    marketable = has_opposite and (tick >= opposite_tick if side > 0 else tick <= opposite_tick)
    tif = o[O_TIF]
    if marketable:
        if tif == TIF_GTX:
            o[O_XST] = X_DONE
            sim.count[c, C_REJECTIONS] += 1
            _respond(sim, lat, c, s, MSG_EXPIRED, ts)
            return
        if tif == TIF_FOK and cfg.partial:
            # all or nothing: enough visible size up to the limit?
            book = sim.xask if side > 0 else sim.xbid
            need = o[O_LEAVES]
            j = opposite
            while need > 0 and 0 <= j < n_ticks and (j + cfg.book_base <= tick if side > 0
                                                     else j + cfg.book_base >= tick):
                need -= math.floor(book[j] / cfg.lot_size + 0.5)
                j += side
            if need > 0:
                o[O_XST] = X_DONE
                _respond(sim, lat, c, s, MSG_EXPIRED, ts)
                return
        left = _take(sim, cfg, lat, c, s, tick, ts, False)
        if left > 0:
            if tif == TIF_GTC:
                fill(sim, cfg, lat, c, s, left, tick, False, ts)
            else:
                o[O_XST] = X_DONE
                _respond(sim, lat, c, s, MSG_EXPIRED, ts)
        return
    if tif == TIF_IOC or tif == TIF_FOK:
        o[O_XST] = X_DONE
        _respond(sim, lat, c, s, MSG_EXPIRED, ts)
        return
    o[O_XST] = X_RESTING
    sim.count[c, C_RESTING] += 1
    sim.cur[K_RESTING] += 1
    idx = tick - cfg.book_base
    if 0 <= idx < n_ticks:
        if side > 0:
            sim.rest_bid[idx] += 1
        else:
            sim.rest_ask[idx] += 1
    if side > 0 and tick > sim.cur[K_MAX_BUY]:
        sim.cur[K_MAX_BUY] = tick
    if side < 0 and tick < sim.cur[K_MIN_SELL]:
        sim.cur[K_MIN_SELL] = tick
    book = sim.xbid if side > 0 else sim.xask
    sim.queue[c, s, 0] = book[idx] if 0 <= idx < n_ticks else 0.0
    sim.queue[c, s, 1] = 0.0
    _respond(sim, lat, c, s, MSG_ACK, ts)
