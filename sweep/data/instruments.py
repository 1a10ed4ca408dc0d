"""What an instrument is: linear or inverse, its contract size, and the units of every figure.

Inference (from what the data says; every inferred fact is overridable)
---------------------------------------------------------------------
* **Binance COIN-M** (``dapi``): perpetual ``<COIN>USD_PERP`` and delivery ``<COIN>USD_<YYMMDD>``
  symbols (also recognised by the ``ps`` pair field of their stream messages).  Inverse; one
  contract is 100 USD for BTC and 10 USD for every other coin (Binance's contract
  specification).  USD-M delivery symbols (``BTCUSDT_240927``) stay linear.
* **Tardis** ``binance-delivery`` (COIN-M) with the same rule; ``bitmex`` ``XBTUSD`` (1 USD
  contracts); ``deribit`` ``BTC-*`` (10 USD) and ``ETH-*`` (1 USD) futures and perpetuals;
  ``huobi-dm-swap`` / ``huobi-dm`` and ``okex-swap`` / ``okex-futures`` ``<COIN>-USD*`` (100 USD
  for BTC, 10 USD otherwise).
* Anything else is linear with contract multiplier 1 (spot, USD-M, hftbacktest ``.npz`` files,
  which carry no instrument facts; pass ``inverse``/``contract_size`` for those).

Units
-----
Linear: qty in the base coin (BTC for BTCUSDT), prices and PnL in the quote currency (USDT).
Inverse: qty in contracts, prices in the quote currency (USD per coin), PnL and fees in the coin
(ETH for ETHUSD_PERP): a position of ``q`` contracts of size ``cs`` opened at ``p0`` is worth
``q * cs * (1/p0 - 1/p)`` coins at ``p``.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from ..errors import InputError
from .events import Events, Instrument

#: quote currencies recognised at the end of a symbol (longest first)
QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "TRY", "BTC", "ETH", "BNB")

_BINANCE_COINM = re.compile(r"^([A-Z0-9]+)USD_(PERP|\d{6})$")
_DERIBIT = re.compile(r"^(BTC|ETH)-(PERPETUAL|\d{1,2}[A-Z]{3}\d{2})$")
_DASH_USD = re.compile(r"^([A-Z0-9]+)-USD(-SWAP|-\d{6})?$")
_ALIASES = {"XBT": "BTC"}


@dataclasses.dataclass(frozen=True)
class Contract:
    """Accounting facts inferred for a symbol: inverse or not, the contract size (quote currency
    per contract; linear: per qty x price) and why."""

    inverse: bool
    contract_size: float
    reason: str


LINEAR = Contract(False, 1.0, "linear (no inverse symbol recognised)")


def currencies(symbol: str) -> tuple[str, str]:
    """``(base coin, quote currency)`` of an exchange symbol, ``("", "")`` when not recognised:
    ``BTCUSDT`` -> ``("BTC", "USDT")``, ``ETHUSD_PERP`` -> ``("ETH", "USD")``, ``XBTUSD`` ->
    ``("BTC", "USD")``, ``BTC-PERPETUAL`` -> ``("BTC", "USD")``."""
    sym = (symbol or "").upper()
    m = _BINANCE_COINM.match(sym)
    if m:
        return _ALIASES.get(m.group(1), m.group(1)), "USD"
    m = _DERIBIT.match(sym)
    if m:
        return m.group(1), "USD"
    m = _DASH_USD.match(sym)
    if m:
        return _ALIASES.get(m.group(1), m.group(1)), "USD"
    sym = re.sub(r"_(PERP|\d{6})$", "", sym).replace("-", "").replace("_", "").replace("/", "")
    for alias, coin in _ALIASES.items():  # XBTUSD: BitMEX's BTC (not "XB" quoted in "TUSD")
        if sym.startswith(alias) and len(sym) > len(alias):
            return coin, sym[len(alias):]
    for quote in QUOTES:
        if sym.endswith(quote) and len(sym) > len(quote):
            base = sym[: -len(quote)]
            return _ALIASES.get(base, base), quote
    return "", ""


def infer_contract(symbol: str, exchange: str = "") -> Contract:
    """Inverse or linear, and the contract size, from the symbol and the exchange (module docstring)."""
    sym = (symbol or "").upper()
    exchange = (exchange or "").lower()
    m = _BINANCE_COINM.match(sym)
    if m and (not exchange or exchange.startswith("binance")):
        coin = m.group(1)
        size = 100.0 if coin == "BTC" else 10.0
        return Contract(True, size, f"Binance COIN-M symbol {sym}: inverse, {size:g} USD contracts")
    if exchange.startswith("bitmex") and sym == "XBTUSD":
        return Contract(True, 1.0, "BitMEX XBTUSD: inverse, 1 USD contracts")
    if exchange.startswith("deribit"):
        m = _DERIBIT.match(sym)
        if m:
            size = 10.0 if m.group(1) == "BTC" else 1.0
            return Contract(True, size, f"Deribit {sym}: inverse, {size:g} USD contracts")
    if exchange.startswith(("huobi-dm", "okex-swap", "okex-futures")):
        m = _DASH_USD.match(sym)
        if m:
            size = 100.0 if _ALIASES.get(m.group(1), m.group(1)) == "BTC" else 10.0
            return Contract(True, size, f"{exchange} {sym}: inverse, {size:g} USD contracts")
    return LINEAR


def units(instrument: Instrument | dict[str, Any]) -> dict[str, str]:
    """Names of the units of an instrument's figures: ``pnl`` (the currency of PnL, fees, equity,
    traded value: USDT for BTCUSDT, ETH for ETHUSD_PERP), ``qty`` (BTC, or ``contracts``),
    ``price`` (quote currency per coin) and ``accounting`` (linear / inverse)."""
    inst = instrument if isinstance(instrument, dict) else dataclasses.asdict(instrument)
    base, quote = currencies(str(inst.get("symbol") or ""))
    inverse = bool(inst.get("inverse", False))
    if inverse:
        size = float(inst.get("contract_multiplier") or 1.0)
        return {"pnl": base or "coin", "qty": f"contracts of {size:g} {quote or 'quote currency'}",
                "qty_short": "contracts", "price": f"{quote or 'quote currency'} per {base or 'coin'}",
                "accounting": f"inverse: PnL and fees in {base or 'the coin'}"}
    return {"pnl": quote or "quote currency", "qty": base or "qty units", "qty_short": base or "qty units",
            "price": f"{quote or 'quote currency'} per {base or 'unit'}",
            "accounting": f"linear: PnL and fees in {quote or 'the quote currency'}"}


#: keys of an instrument override (experiment ``instrument:`` sections, CLI options)
OVERRIDE_KEYS = ("inverse", "contract_size", "tick_size", "lot_size")


def with_contract(events: Events, exchange: str = "") -> Events:
    """``events`` with its instrument's inverse flag and contract size inferred from the symbol
    (unless a reader set them already), the reason in ``meta['contract']``."""
    inst = events.instrument
    if inst.inverse or inst.contract_multiplier != 1.0:
        events.meta.setdefault("contract", {"inverse": inst.inverse, "contract_size": inst.contract_multiplier,
                                            "how": "from the reader"})
        return events
    contract = infer_contract(inst.symbol, exchange or inst.venue)
    events.meta["contract"] = {"inverse": contract.inverse, "contract_size": contract.contract_size,
                               "how": "inferred: " + contract.reason}
    if contract.inverse:
        events.instrument = dataclasses.replace(inst, inverse=True, contract_multiplier=contract.contract_size)
    return events


def check_override(override: dict[str, Any] | None, where: str = "instrument") -> dict[str, Any]:
    """A validated instrument override: known keys, ``inverse`` a boolean, sizes positive."""
    if not override:
        return {}
    if not isinstance(override, dict):
        raise InputError(f"expected a mapping with keys {', '.join(OVERRIDE_KEYS)}", key=where)
    out = {}
    for name, value in override.items():
        if name not in OVERRIDE_KEYS:
            raise InputError(f"unknown key {name!r}; allowed: {', '.join(OVERRIDE_KEYS)}", key=f"{where}.{name}")
        if value is None:
            continue
        if name == "inverse":
            if not isinstance(value, bool):
                raise InputError(f"must be true or false, got {value!r}", key=f"{where}.{name}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise InputError(f"must be a positive number, got {value!r}", key=f"{where}.{name}")
        out[name] = value
    return out


def apply_override(events: Events, override: dict[str, Any] | None, where: str = "instrument") -> Events:
    """``events`` with the instrument facts of ``override`` (``inverse``, ``contract_size``;
    tick and lot are reader options and are only checked to agree here).  What was given is
    recorded in ``meta['contract']``."""
    override = check_override(override, where)
    if not override:
        return events
    inst = events.instrument
    for name in ("tick_size", "lot_size"):
        if name in override and not math.isclose(float(override[name]), getattr(inst, name), rel_tol=1e-12):
            raise InputError(f"{name} {override[name]:g} given, but the data was read with {getattr(inst, name):g}",
                             source=events.source, key=f"{where}.{name}")
    changes = {}
    if "inverse" in override:
        changes["inverse"] = bool(override["inverse"])
    if "contract_size" in override:
        changes["contract_multiplier"] = float(override["contract_size"])
    elif changes.get("inverse") is False and inst.inverse:
        changes["contract_multiplier"] = 1.0
    if not changes:
        return events
    events.instrument = dataclasses.replace(inst, **changes)
    new = events.instrument
    events.meta["contract"] = {"inverse": new.inverse, "contract_size": new.contract_multiplier,
                               "how": "given (" + ", ".join(f"{k}: {v}" for k, v in override.items()
                                                           if k in ("inverse", "contract_size")) + ")",
                               "inferred_before": (events.meta.get("contract") or {}).get("how")}
    return events
