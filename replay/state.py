"""Layout of the replay engine's state: plain arrays in named tuples, so numba compiles and
caches the engine functions once and several candidates share one pass over the events.

Units: prices are integer ticks (absolute, ``tick * tick_size`` = price); order sizes and
positions are integer lots (``lots * lot_size`` = instrument qty); times are int64 ns.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

# ---- order fields: ``ordi[candidate, slot, field]`` (int64)
O_ID = 0  # order id (unique per candidate; a message naming another id is stale)
O_SIDE = 1  # +1 buy, -1 sell
O_TICK = 2  # limit price, absolute ticks
O_TIF = 3  # TIF_* below
O_TYPE = 4  # LIMIT / MARKET
O_LOTS = 5  # original size, lots
O_LEAVES = 6  # exchange's remaining size, lots
O_XST = 7  # exchange status, X_*
O_LST = 8  # the bot's view, L_*
O_LREQ = 9  # request the bot awaits an answer to, R_*
O_FIELDS = 10

TIF_GTC = 0
TIF_GTX = 1  # post-only
TIF_IOC = 2
TIF_FOK = 3
TIFS = {"GTC": TIF_GTC, "GTX": TIF_GTX, "IOC": TIF_IOC, "FOK": TIF_FOK}
LIMIT = 0
MARKET = 1

X_NONE = 0  # not (yet) at the exchange
X_RESTING = 1
X_DONE = 2  # filled, cancelled or expired

L_FREE = 0  # slot unused
L_PENDING = 1  # sent, not acknowledged
L_LIVE = 2  # acknowledged and not finished (as far as the bot knows)
L_DONE = 3  # finished; freed at the next decision

R_NONE = 0
R_NEW = 1
R_CANCEL = 2

# ---- message buses: ``bus[which, candidate, k, field]``; which 0 = bot -> exchange (requests),
# 1 = exchange -> bot (responses).  Ring buffers, FIFO by construction.
TO_EXCH = 0
TO_BOT = 1
M_TS = 0  # delivery time
M_KIND = 1
M_SLOT = 2
M_ID = 3
M_LOTS = 4
M_TICK = 5
M_FLAG = 6  # fills: 1 maker | 2 order finished; rejections: the rejected request R_*
M_EXCH_TS = 7  # exchange time of the event (fills)
M_FIELDS = 8

MSG_NEW = 1
MSG_CANCEL = 2
MSG_ACK = 3
MSG_FILL = 4
MSG_CANCELED = 5
MSG_EXPIRED = 6
MSG_CANCEL_REJECTED = 7  # the cancel lost the race: the order was no longer resting
MSG_REJECTED = 8  # rejected before the exchange (negative entry latency)

FLAG_MAKER = 1
FLAG_FINISHED = 2

# ---- bus pointers ``bus_ptr[which, candidate, field]``
P_HEAD = 0
P_TAIL = 1
P_LAST_TS = 2  # delivery time of the newest message (FIFO: later messages never overtake)

# ---- accounts ``acct[which, candidate, field]`` (which 0 = the bot's view, 1 = the exchange's)
A_BALANCE = 0  # quote currency (linear) or base coin (inverse); -sum(side * amount)
A_FEE = 1  # positive = cost
A_VALUE = 2  # traded amount
A_VOLUME = 3  # traded qty (instrument units)
A_TRADES = 4  # fills
A_FIELDS = 5

# ---- per-candidate counters ``count[candidate, field]``
C_REJECTIONS = 0  # post-only (and pre-exchange) rejections of new orders
C_CANCEL_LOST = 1  # cancels that arrived after the order had filled
C_NEXT_ID = 2
C_RESTING = 3  # orders resting at the exchange now
C_FIELDS = 4

# ---- cursor ``cur[field]``
K_LOCAL_ROW = 0
K_EXCH_ROW = 1
K_TS = 2
K_REF_BID = 3  # exchange best bid/ask the next cross check compares against
K_REF_ASK = 4
K_FILLS = 5  # fill log rows used
K_FILLS_DROPPED = 6
K_NEXT_REQ = 7  # earliest delivery time on each bus (kept up to date by push / after deliveries)
K_NEXT_RESP = 8
K_RESTING = 9  # orders resting at the exchange, all candidates
K_MAX_BUY = 10  # bounds on resting buy / sell ticks (all candidates; may be loose, never tight)
K_MIN_SELL = 11
K_FIELDS = 12

# ---- fill log ``fills[k, field]``
F_CAND = 0
F_EXCH_TS = 1
F_LOCAL_TS = 2
F_SIDE = 3
F_TICK = 4
F_LOTS = 5
F_MAKER = 6
F_ORDER = 7  # order id
F_FIELDS = 8

FULL_CLEAR = -(1 << 62)  # ``idx`` of a CLEAR row that wipes the whole side


class Data(NamedTuple):
    """The event stream, twice: in exchange-time order (the matching engine) and in local-time
    order (the bot's book).  ``*_idx`` are book array indices (``tick - book_base``)."""

    x_ts: np.ndarray
    x_kind: np.ndarray
    x_side: np.ndarray
    x_idx: np.ndarray
    x_qty: np.ndarray
    x_msg_end: np.ndarray  # bool: last row of its exch_ts group (a whole message applied)
    l_ts: np.ndarray
    l_kind: np.ndarray
    l_side: np.ndarray
    l_idx: np.ndarray
    l_qty: np.ndarray


class Cfg(NamedTuple):
    """Scalars of the exchange and the instrument."""

    tick_size: float
    lot_size: float
    book_base: int  # absolute tick of book index 0
    queue_kind: int
    queue_n: float
    partial: bool  # partial-fill exchange
    maker_fee: float  # fraction of traded amount; negative = rebate
    taker_fee: float
    inverse: bool
    contract_size: float
    cross_per_message: bool  # best-price crosses judged after whole messages


class Sim(NamedTuple):
    ordi: np.ndarray  # int64 [C, S, O_FIELDS]
    queue: np.ndarray  # float64 [C, S, 2]: front, cum_trade (qty units)
    bus: np.ndarray  # int64 [2, C, B, M_FIELDS]
    bus_ptr: np.ndarray  # int64 [2, C, 3]
    pos: np.ndarray  # int64 [2, C] position, lots (0: bot's view, 1: exchange's)
    acct: np.ndarray  # float64 [2, C, A_FIELDS]
    count: np.ndarray  # int64 [C, C_FIELDS]
    xbid: np.ndarray  # exchange book, float64 [n_ticks]
    xask: np.ndarray
    xbest: np.ndarray  # int64 [3] (see replay.book)
    lbid: np.ndarray  # the bot's book
    lask: np.ndarray
    lbest: np.ndarray
    rest_bid: np.ndarray  # int32 [n_ticks]: resting buys at each book index, all candidates
    rest_ask: np.ndarray
    cur: np.ndarray  # int64 [K_FIELDS]
    fills: np.ndarray  # int64 [F, F_FIELDS]


def new_sim(n_candidates: int, n_slots: int, bus_size: int, n_ticks: int, fill_capacity: int) -> Sim:
    from .book import new_best

    cur = np.zeros(K_FIELDS, np.int64)
    cur[K_REF_BID] = -1
    cur[K_REF_ASK] = n_ticks
    cur[K_NEXT_REQ] = np.iinfo(np.int64).max
    cur[K_NEXT_RESP] = np.iinfo(np.int64).max
    cur[K_MAX_BUY] = np.iinfo(np.int64).min
    cur[K_MIN_SELL] = np.iinfo(np.int64).max
    count = np.zeros((n_candidates, C_FIELDS), np.int64)
    count[:, C_NEXT_ID] = 1
    return Sim(
        ordi=np.zeros((n_candidates, n_slots, O_FIELDS), np.int64),
        queue=np.zeros((n_candidates, n_slots, 2), np.float64),
        bus=np.zeros((2, n_candidates, bus_size, M_FIELDS), np.int64),
        bus_ptr=np.zeros((2, n_candidates, 3), np.int64),
        pos=np.zeros((2, n_candidates), np.int64),
        acct=np.zeros((2, n_candidates, A_FIELDS), np.float64),
        count=count,
        xbid=np.zeros(n_ticks), xask=np.zeros(n_ticks), xbest=new_best(n_ticks),
        lbid=np.zeros(n_ticks), lask=np.zeros(n_ticks), lbest=new_best(n_ticks),
        rest_bid=np.zeros(n_ticks, np.int32), rest_ask=np.zeros(n_ticks, np.int32),
        cur=cur,
        fills=np.zeros((fill_capacity, F_FIELDS), np.int64),
    )
