"""Signal features computed on the frame grid from the local view (DESIGN §2.2).

Every feature is a float64 column ``F[t, k]`` known at decision time ``local_ts[t]`` (it uses
only book states at or before that time).  Rows before a feature's look-back is filled are
set to 0 (a neutral signal) and counted in the frames' ``meta['warmup_rows']``.

Feature specs are small dicts (as they appear in an experiment YAML)::

    {kind: mid_return, lag_s: 1.0}                       # log(mid[t] / mid[t - lag]), fraction
    {kind: rolling_return, instrument: spot, window_s: 300, shift_s: 0}
        # mid[t-shift] / mean(mid over (t-shift-window, t-shift]) - 1, fraction.  With window
        # 300 s and shift 0 this is the APT study's "price vs its mean over a 5-minute window
        # centred 2.5 minutes back".
    {kind: imbalance, levels: 5}                         # (Qbid - Qask) / (Qbid + Qask) over the
                                                         # top `levels` levels, in [-1, 1]
    {kind: realized_vol, window_s: 60}                   # sqrt(mean of squared per-row log mid
                                                         # returns / interval_s), fraction per sqrt(s)
    {kind: vamp_bps, levels: 5}                          # volume-adjusted mid vs mid, in bps
    {kind: mid, instrument: spot}                        # the mid price itself (price units)
    {kind: trade_imbalance, window_s: 10}                # (buy - sell) / (buy + sell) aggressor
                                                         # volume over (t - window, t], in [-1, 1];
                                                         # 0 when no trade in the window

``instrument`` defaults to the quoted instrument.

Windowed sums (``rolling_return``, ``realized_vol``, ``trade_imbalance``) are computed from prefix
sums that restart at absolute time blocks (multiples of ``B`` intervals since the epoch, ``B`` the
smallest power of two at least the window): a value depends only on the rows in its window and
their block, never on where the frame grid started, so frames built in time pieces
(:mod:`mmsweep.sweep.frames_store`) equal frames built at once, bit for bit.  A window holding a
row with no mid (a one-sided book) is NaN (a warm-up row); the rows after it are not affected.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numba
import numpy as np

from .errors import InputError

MAX_WINDOW_S = 366 * 86_400.0  # lags and windows: at most a year
MAX_LEVELS = 1_000  # book levels of a depth feature (each is a column per decision row)
KINDS = ("mid_return", "rolling_return", "imbalance", "realized_vol", "vamp_bps", "mid", "trade_imbalance")
_PARAMS = {
    "mid_return": {"lag_s"},
    "rolling_return": {"window_s", "shift_s"},
    "imbalance": {"levels"},
    "realized_vol": {"window_s"},
    "vamp_bps": {"levels"},
    "mid": set(),
    "trade_imbalance": {"window_s"},
}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One feature column; see the module docstring for kinds, parameters and units."""

    kind: str
    instrument: str | None = None
    lag_s: float = 1.0
    window_s: float = 300.0
    shift_s: float = 0.0
    levels: int = 5

    @property
    def name(self) -> str:
        prefix = f"{self.instrument}." if self.instrument else ""
        suffix = {
            "mid_return": f"_{self.lag_s:g}s",
            "rolling_return": f"_{self.window_s:g}s" + (f"_shift{self.shift_s:g}s" if self.shift_s else ""),
            "imbalance": f"_{self.levels}",
            "realized_vol": f"_{self.window_s:g}s",
            "vamp_bps": f"_{self.levels}",
            "mid": "",
            "trade_imbalance": f"_{self.window_s:g}s",
        }[self.kind]
        return f"{prefix}{self.kind}{suffix}"

    @property
    def depth_levels(self) -> int:
        return self.levels if self.kind in ("imbalance", "vamp_bps") else 1

    @classmethod
    def parse(cls, spec: dict[str, Any] | str, where: str = "features") -> "FeatureSpec":
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, dict) or "kind" not in spec:
            raise InputError(f"a feature needs a 'kind' (one of {', '.join(KINDS)})", key=where)
        kind = spec["kind"]
        if kind not in KINDS:
            raise InputError(f"unknown feature kind {kind!r}; known: {', '.join(KINDS)}", key=f"{where}.kind")
        unknown = set(spec) - {"kind", "instrument"} - _PARAMS[kind]
        if unknown:
            raise InputError(f"unknown key(s) {sorted(unknown)} for feature {kind!r}; allowed: "
                             f"{sorted(_PARAMS[kind] | {'instrument'})}", key=f"{where}.{sorted(unknown)[0]}")
        values = dict(spec)
        for name in ("lag_s", "window_s", "shift_s"):
            if name in values:
                try:  # 1 and 1.0 must give the same feature (and the same frames cache key)
                    values[name] = float(values[name])
                except (TypeError, ValueError):
                    raise InputError(f"{name} must be a number, got {values[name]!r}", key=f"{where}.{name}") from None
        if "levels" in values and isinstance(values["levels"], float) and values["levels"].is_integer():
            values["levels"] = int(values["levels"])
        out = cls(**values)
        for name in ("lag_s", "window_s"):
            if name in _PARAMS[kind] and not getattr(out, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(out, name)}", key=f"{where}.{name}")
        for name in ("lag_s", "window_s", "shift_s"):
            if name in _PARAMS[kind] and not getattr(out, name) <= MAX_WINDOW_S:  # NaN fails too
                raise InputError(f"{name} must be a number of seconds up to a year, got {getattr(out, name)}",
                                 key=f"{where}.{name}")
        if out.shift_s < 0:
            raise InputError(f"shift_s must be >= 0, got {out.shift_s}", key=f"{where}.shift_s")
        if kind in ("imbalance", "vamp_bps") and not (isinstance(out.levels, int) and 1 <= out.levels <= MAX_LEVELS):
            raise InputError(f"levels must be a whole number from 1 to {MAX_LEVELS}, got {out.levels!r}",
                             key=f"{where}.levels")
        return out


def _rows(seconds: float, interval_ns: int, spec: FeatureSpec, what: str) -> int:
    rows = seconds * 1e9 / interval_ns
    if abs(rows - round(rows)) > 1e-9 or round(rows) < 0:
        raise InputError(f"{spec.name}: {what} {seconds} s is not a whole number of {interval_ns / 1e9:g} s intervals",
                         key="features")
    return int(round(rows))


def _shift(x: np.ndarray, rows: int, fill: float = np.nan) -> np.ndarray:
    if rows == 0:
        return x.copy()
    out = np.full_like(x, fill)
    out[rows:] = x[:-rows]
    return out


def block_rows(window: int) -> int:
    """Rows per anchoring block of a windowed sum over ``window`` rows: the smallest power of two
    at least the window (see the module docstring)."""
    return 1 << max(0, int(window) - 1).bit_length()


def lookback_rows(spec: "FeatureSpec", interval_ns: int) -> int:
    """Decision rows before a row that its value depends on (its window, shift and anchoring
    block): frames built in pieces carry this much context."""
    if spec.kind == "mid_return":
        return _rows(spec.lag_s, interval_ns, spec, "lag_s")
    if spec.kind in ("rolling_return", "realized_vol", "trade_imbalance"):
        window = _rows(spec.window_s, interval_ns, spec, "window_s")
        shift = _rows(spec.shift_s, interval_ns, spec, "shift_s") if spec.kind == "rolling_return" else 0
        return window + shift + block_rows(window) + 2
    return 0


@numba.njit(cache=True)
def _block_prefix(x, block):
    """Prefix sums of ``x`` restarting wherever ``block`` changes."""
    out = np.empty(x.shape[0], np.float64)
    acc = 0.0
    for i in range(x.shape[0]):
        if i == 0 or block[i] != block[i - 1]:
            acc = 0.0
        acc += x[i]
        out[i] = acc
    return out


def _window_sum(x: np.ndarray, sample_ts: np.ndarray, interval_ns: int, window: int) -> np.ndarray:
    """``sum(x[t - window + 1 .. t])`` for every row ``t >= window - 1`` (NaN before), from prefix
    sums anchored at absolute blocks (module docstring); NaN where the window holds a NaN."""
    x = np.asarray(x, np.float64)
    n = len(x)
    out = np.full(n, np.nan)
    if window > n or n == 0:
        return out
    size = block_rows(window)
    block = np.asarray(sample_ts, np.int64) // (int(interval_ns) * size)
    bad = ~np.isfinite(x)
    prefix = _block_prefix(np.where(bad, 0.0, x), block)
    nbad = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])  # integers: exact from any origin
    t = np.arange(window - 1, n)
    j = t - window  # the row before the window (-1: a virtual row of sum 0 in row 0's block)
    pj = np.where(j >= 0, prefix[np.maximum(j, 0)], 0.0)
    bj = np.where(j >= 0, block[np.maximum(j, 0)], block[0])
    last_of_bj = np.searchsorted(block, bj, side="right") - 1
    same = bj == block[t]
    total = np.where(same, prefix[t] - pj, prefix[t] + (prefix[last_of_bj] - pj))
    out[window - 1:] = np.where(nbad[t + 1] - nbad[t + 1 - window] > 0, np.nan, total)
    return out


def _time_prefix(ts: np.ndarray, values: np.ndarray, block_ns: int, at: np.ndarray) -> np.ndarray:
    """Sum of ``values`` of the events with ``ts`` in ``[block start of at, at]`` (``ts`` sorted)."""
    prefix = _block_prefix(values, ts // block_ns) if len(ts) else np.zeros(0)
    idx = np.searchsorted(ts, at, side="right") - 1
    ok = (idx >= 0) & (ts[np.maximum(idx, 0)] // block_ns == at // block_ns) if len(ts) else np.zeros(len(at), bool)
    return np.where(ok, prefix[np.maximum(idx, 0)] if len(ts) else 0.0, 0.0)


def _time_window_sum(ts: np.ndarray, values: np.ndarray, t: np.ndarray, span_ns: int, block_ns: int) -> np.ndarray:
    """Sum of ``values`` over the events with ``ts`` in ``(t - span, t]``, anchored at absolute
    time blocks of ``block_ns >= span`` (so independent of where ``ts`` starts)."""
    lo = t - span_ns
    q_t = _time_prefix(ts, values, block_ns, t)
    q_lo = _time_prefix(ts, values, block_ns, lo)
    block_end = (lo // block_ns + 1) * block_ns - 1  # the last ns of lo's block
    total_lo = _time_prefix(ts, values, block_ns, block_end)
    same = lo // block_ns == t // block_ns
    return np.where(same, q_t - q_lo, q_t + (total_lo - q_lo))


def _trade_imbalance(view: dict[str, np.ndarray], window: int, interval_ns: int) -> np.ndarray:
    """Signed aggressor volume over the trades with ``local_ts`` in ``(t - window, t]`` divided by
    their total volume; NaN for the first ``window`` rows (warm-up)."""
    t = np.asarray(view["sample_ts"], np.int64)
    ts = np.asarray(view["trade_ts"], np.int64)
    block_ns = int(interval_ns) * block_rows(window)
    signed = _time_window_sum(ts, np.asarray(view["trade_side"] * view["trade_qty"], np.float64), t,
                              window * interval_ns, block_ns)
    vol = _time_window_sum(ts, np.asarray(view["trade_qty"], np.float64), t, window * interval_ns, block_ns)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(vol > 0, signed / vol, 0.0)
    out[:window] = np.nan
    return out


def compute_feature(spec: FeatureSpec, view: dict[str, np.ndarray], interval_ns: int, tick_size: float) -> np.ndarray:
    """One feature column from a local view (``bid_ticks/bid_qty/ask_ticks/ask_qty [T, L]``,
    ``mid`` [T] in price units, ``sample_ts`` [T] and the trades ``trade_ts`` / ``trade_side`` /
    ``trade_qty`` on the local clock, sorted).  NaN marks warm-up rows (the caller zero-fills
    and counts)."""
    mid = view["mid"]
    if spec.kind == "mid":
        return mid.copy()
    if spec.kind == "trade_imbalance":
        return _trade_imbalance(view, _rows(spec.window_s, interval_ns, spec, "window_s"), interval_ns)
    if spec.kind == "mid_return":
        lag = _rows(spec.lag_s, interval_ns, spec, "lag_s")
        return np.log(mid / _shift(mid, lag))
    if spec.kind == "rolling_return":
        window = _rows(spec.window_s, interval_ns, spec, "window_s")
        shift = _rows(spec.shift_s, interval_ns, spec, "shift_s")
        mean = _window_sum(mid, view["sample_ts"], interval_ns, window) / window
        return _shift(mid / mean - 1.0, shift)
    if spec.kind == "realized_vol":
        window = _rows(spec.window_s, interval_ns, spec, "window_s")
        step = np.log(mid / _shift(mid, 1))
        sq = np.where(np.isfinite(step), step * step, 0.0)
        out = np.sqrt(_window_sum(sq, view["sample_ts"], interval_ns, window) / window / (interval_ns / 1e9))
        out[:window] = np.nan
        return out
    levels = spec.levels
    bid_q = view["bid_qty"][:, :levels]
    ask_q = view["ask_qty"][:, :levels]
    if spec.kind == "imbalance":
        total = bid_q.sum(1) + ask_q.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (bid_q.sum(1) - ask_q.sum(1)) / total, 0.0)
    if spec.kind == "vamp_bps":
        bid_px = np.where(bid_q > 0, view["bid_ticks"][:, :levels], 0) * tick_size
        ask_px = np.where(ask_q > 0, view["ask_ticks"][:, :levels], 0) * tick_size
        pair = (bid_q > 0) & (ask_q > 0)
        # Each side's price is weighted by the *opposite* side's size (the price leans toward
        # the thinner side, where the next trade is likelier to move it); only levels present
        # on both sides count, so a missing level does not bias the price.
        num = (np.where(pair, bid_px * ask_q + ask_px * bid_q, 0.0)).sum(1)
        den = (np.where(pair, ask_q + bid_q, 0.0)).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            vamp = np.where(den > 0, num / den, mid)
        return (vamp / mid - 1.0) * 1e4
    raise AssertionError(spec.kind)
