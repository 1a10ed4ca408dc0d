"""The normalized event table every data source is converted to (DESIGN §2.1).

One row per market event, sorted by ``local_ts`` (the order the bot would see them).
Timestamps are int64 nanoseconds since the Unix epoch, prices and quantities are floats in
the instrument's own units (quote currency per base unit, base units); they become integer
ticks and lots only in the frames builder, where the instrument's tick and lot are known.

Kinds:

* ``DEPTH``    -- absolute size of one price level (``qty == 0`` deletes the level).
* ``TRADE``    -- a trade; ``side`` is the aggressor (+1 buyer, -1 seller, 0 unknown).
* ``CLEAR``    -- wipe a side (``side`` +1/-1, or 0 for both).  A finite ``price`` clears only
  from the best level through that price (hftbacktest's "clear up to"); NaN wipes the side.
* ``SNAPSHOT`` -- a level of a snapshot; applied exactly like ``DEPTH``.
* ``BBO``      -- the best level of one side (a book-ticker / quote row).  Sources with depth
  keep it for cross-checks only; for a quotes-only source it *is* the book (one level a side).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numba
import numpy as np

from ..errors import InputError

DEPTH = 1
TRADE = 2
CLEAR = 3
SNAPSHOT = 4
BBO = 5

KIND_NAMES = {DEPTH: "depth", TRADE: "trade", CLEAR: "clear", SNAPSHOT: "snapshot", BBO: "bbo"}

BID = 1
ASK = -1

EVENT_DTYPE = np.dtype(
    [
        ("exch_ts", "<i8"),
        ("local_ts", "<i8"),
        ("kind", "u1"),
        ("side", "i1"),
        ("price", "<f8"),
        ("qty", "<f8"),
        ("order_id", "<u8"),
    ]
)


@dataclasses.dataclass(frozen=True)
class Instrument:
    """Static facts about a traded instrument.

    Attributes:
        symbol: exchange symbol, e.g. ``"BTCUSDT"``.
        tick_size: minimum price increment (quote currency).
        lot_size: minimum quantity increment (base units / contracts).
        contract_multiplier: linear: quote value of one unit of qty per unit of price (1 for
            USDT-margined contracts and spot); inverse: the contract size, quote currency per
            contract (10 USD for Binance's ETHUSD_PERP).
        venue: free text, e.g. ``"binance-usdm"``.
        inverse: coin-margined (inverse) contract: qty in contracts, PnL and fees in the coin
            (``contracts x contract_multiplier x (1/entry - 1/exit)``).  See
            :mod:`mmsweep.sweep.data.instruments` for how it is inferred.
    """

    symbol: str
    tick_size: float
    lot_size: float
    contract_multiplier: float = 1.0
    venue: str = ""
    inverse: bool = False

    def __post_init__(self) -> None:
        for name in ("tick_size", "lot_size", "contract_multiplier"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"instrument {self.symbol!r}: {name} must be a positive number, got {value!r}")
        if not isinstance(self.inverse, (bool, np.bool_)):
            raise InputError(f"instrument {self.symbol!r}: inverse must be true or false, got {self.inverse!r}")
        object.__setattr__(self, "inverse", bool(self.inverse))


@dataclasses.dataclass
class Events:
    """A validated event table plus what travels with it.

    Attributes:
        table: structured array of ``EVENT_DTYPE``, sorted by ``local_ts``.
        instrument: tick/lot/multiplier of the instrument.
        source: where the rows came from (path or ``"synthetic"``).
        meta: reader facts a user should see: clock correction applied (ns), sequence gaps,
            repairs made, message counts ...
    """

    table: np.ndarray
    instrument: Instrument
    source: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def has_depth(self) -> bool:
        kinds = self.table["kind"]
        return bool(np.any((kinds == DEPTH) | (kinds == SNAPSHOT)))

    def of_kind(self, kind: int) -> np.ndarray:
        return self.table[self.table["kind"] == kind]


def empty_table(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=EVENT_DTYPE)


def make_table(**columns: Any) -> np.ndarray:
    """Build an event table from equal-length column arrays (missing columns are zero)."""
    lengths = {len(np.asarray(v)) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns differ in length: {sorted(lengths)}")
    table = empty_table(lengths.pop() if lengths else 0)
    for name, values in columns.items():
        table[name] = values
    return table


def sort_events(table: np.ndarray) -> np.ndarray:
    """Stable sort by ``local_ts`` (then by ``exch_ts``), keeping file order inside ties."""
    order = np.lexsort((table["exch_ts"], table["local_ts"]))
    return table[order]


def validate_events(table: np.ndarray, source: str = "", *, check_sorted: bool = True) -> None:
    """Raise :class:`InputError` naming the first offending row if the table is unusable.

    Checks: dtype, known kinds, sides in {-1, 0, 1}, finite positive prices (NaN allowed only
    on CLEAR rows), finite non-negative quantities, ``local_ts`` sorted, ``local_ts >= exch_ts``.
    Row numbers are 0-based positions in the table.
    """
    if table.dtype != EVENT_DTYPE:
        raise InputError(f"event table has dtype {table.dtype}, expected {EVENT_DTYPE}", source=source)
    if len(table) == 0:
        raise InputError("no events", source=source)

    checks = _first_invalid_rows(table["kind"], table["side"], table["price"], table["qty"], table["local_ts"],
                                 table["exch_ts"], bool(check_sorted))
    for what, row in zip(_CHECKS, checks):
        if row >= 0:  # the checks in their order; each names its first offending row
            raise InputError(f"{what}: {table[int(row)]}", source=source, row=int(row))


_CHECKS = ("unknown event kind", "side must be -1, 0 or +1", "price must be finite and positive",
           "quantity must be finite and non-negative", "book rows need a side (+1 bid, -1 ask)",
           "local_ts not sorted (row shown is the one before the drop)",
           "local_ts earlier than exch_ts (uncorrected clock offset?)")


@numba.njit(cache=True, nogil=True)
def _first_invalid_rows(kinds, sides, prices, qtys, local_ts, exch_ts, check_sorted):
    # one pass over the columns (numpy's masks would make a dozen temporaries of the table)
    first = np.full(len(_CHECKS), -1, np.int64)
    for i in range(kinds.shape[0]):
        kind = kinds[i]
        bad = (
            not (kind == DEPTH or kind == TRADE or kind == CLEAR or kind == SNAPSHOT or kind == BBO),
            not (sides[i] == -1 or sides[i] == 0 or sides[i] == 1),
            kind != CLEAR and not (np.isfinite(prices[i]) and prices[i] > 0.0),
            not np.isfinite(qtys[i]) or qtys[i] < 0.0,
            (kind == DEPTH or kind == SNAPSHOT or kind == BBO) and sides[i] == 0,
            check_sorted and i + 1 < kinds.shape[0] and local_ts[i + 1] < local_ts[i],
            local_ts[i] < exch_ts[i],
        )
        for c in range(len(bad)):
            if bad[c] and first[c] < 0:
                first[c] = i
        if first[0] >= 0:  # the first check's row is what is reported
            break
    return first


def infer_tick_size(prices: np.ndarray, max_decimals: int = 10) -> float:
    """Smallest decimal step that all prices are multiples of (e.g. 0.1 for 61800.2, 61800.3).

    Works on the decimal representation, so it is exact for prices written with finitely many
    decimals.  Returns e.g. ``0.01``.  Strict: every price must fit (readers use the robust
    :func:`mmsweep.sweep.data.screen.tick_and_strays`, which ignores a stray price or two).
    """
    from .screen import infer_tick

    return infer_tick(prices, max_decimals, outlier_share=0.0)[0]


def infer_lot_size(qtys: np.ndarray, max_decimals: int = 10) -> float:
    """Smallest decimal step of the non-zero quantities (e.g. 0.001)."""
    qtys = np.asarray(qtys, dtype=np.float64)
    qtys = np.unique(qtys[np.isfinite(qtys) & (qtys > 0)])
    if len(qtys) == 0:
        raise InputError("cannot infer a lot size from no quantities")
    for decimals in range(max_decimals + 1):
        scaled = qtys * 10.0**decimals
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6):
            step = int(np.gcd.reduce(np.round(scaled).astype(np.int64)))
            return float(step or 1) / 10.0**decimals
    raise InputError(f"quantities have more than {max_decimals} decimals; give lot_size explicitly")


def check_tick_alignment(table: np.ndarray, tick_size: float, source: str = "", tolerance: float = 1e-6) -> None:
    """Raise naming the first row whose price is not a multiple of ``tick_size``."""
    priced = table["kind"] != CLEAR
    ticks = table["price"] / tick_size
    off = priced & (np.abs(ticks - np.round(ticks)) > tolerance)
    if np.any(off):
        row = int(np.argmax(off))
        raise InputError(
            f"price {table['price'][row]!r} is not a multiple of tick_size {tick_size}", source=source, row=row
        )
