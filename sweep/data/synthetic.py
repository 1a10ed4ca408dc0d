"""The synthetic market: mmsweep's embedded, seeded default data source (DESIGN §2.3).

It produces, with no downloads, event tables in the normalized format (DESIGN §2.1) for one or
more related instruments -- by default a BTCUSDT-like USD-M futures book and a spot book.

Model
-----
*Latent price.*  One efficient log-price ``X`` on a regular grid (``latent_step_ms``) shared by
all instruments: Gaussian increments with stochastic volatility (two log-volatility
Ornstein-Uhlenbeck factors, a slow one and a fast one, normalised so that the mean variance is the
configured ``volatility_annual``) plus compound-Poisson jumps.  Between grid points ``X`` is
linearly interpolated.

*Lead-lag.*  A leading instrument sees ``X(t)``; a lagged one (``SynthInstrument.lagged``) sees
``X(t - lead_lag_ms)``.  By default spot leads and futures follows (the APT study's effect).
Its fair price in ticks is ``base_price * exp(X) * (1 + basis_bp / 1e4) / tick_size``.

*Book.*  Each side holds exactly ``depth_levels`` contiguous price levels from its best (a dense
book, as BTCUSDT futures is near the touch), sizes drawn from a depth profile that rises away from
the touch with lognormal noise.  The book changes through five processes, each an event at its
own exchange time (one event = one feed message; all its rows share ``exch_ts`` and ``local_ts``):

* re-quotes (Poisson, ``requote_per_s``, and at once when the fair price runs more than
  ``requote_threshold_bp`` from the mid): market makers re-centre the book on the fair price
  with a one-tick spread; levels that stay keep their size (queues persist), the rest are
  added / deleted in an order that keeps every intermediate state of the message uncrossed
  with both sides non-empty;
* aggressive orders (Hawkes, ``trades_per_s`` mean, self-exciting with ``hawkes_branching`` and
  ``hawkes_decay_per_s``; the baseline scales with the latent variance so volume follows
  volatility): heavy-tailed (Pareto) sizes; a share ``informed_share`` of them is informed and
  trades towards the fair price ``informed_horizon_ms`` ahead (so the mid moves against the
  passive side after a trade, as on real books), the others are tilted towards the current fair
  price; printed at the best and walking the book -- one TRADE row per level touched, then the
  DEPTH rows that update or delete the consumed levels (a new level is added at the far end so
  the side keeps its depth);
* refills after a trade clears the touch (spread > 1 tick): after an exponential delay
  (``refill_ms``) a level is added inside the spread on the side the fair price points to;
* touch churn (``touch_noise_per_s``): the best level of a random side gets a new size; and
  deep-book churn (``depth_noise_per_s`` rows, in messages of ``depth_noise_rows_per_msg`` rows
  on average): uniformly random levels behind the touch get new sizes.

*Feed latency.*  Each message reaches the bot after ``feed_latency_base_ns`` plus a lognormal
jitter, delivered in order as on one TCP stream: ``local_ts = max(exch_ts + latency, previous
local_ts)``.  So ``local_ts >= exch_ts`` and the table is sorted by ``local_ts`` *and* by
``exch_ts`` at once (hftbacktest can replay it without its order-correction step).

Output starts with a snapshot message (CLEAR of each side, then SNAPSHOT rows), then DEPTH diff
rows (absolute size, 0 deletes), TRADE rows and, with ``emit_bbo``, BBO rows after every message
that changes a side's best price or size.  Prices are generated as integer ticks and quantities
as integer lots, converted to floats only when a row is written, so every price is the float
nearest to an exact multiple of the tick.

Determinism: every random number comes from a xoshiro256** generator with explicit state, one
stream for the latent path and one per instrument, seeded by numpy ``SeedSequence(seed)``
children; so the same config gives bit-identical output whatever the thread count.  (A shorter run is *not* a prefix of a longer one:
the variance path is normalised over the generated span, see :func:`latent_path`.)

Speed: the event loop is numba-compiled, writes rows straight into the output records (one
allocation sized by a generous bound, shrunk in place afterwards; untouched pages cost nothing),
and runs the instruments in parallel threads (the loop releases the GIL).  ``bench/synth.py``
measures a full day.
"""
from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np

from ..errors import InputError
from ..limits import check_fits
from .events import BBO, CLEAR, DEPTH, EVENT_DTYPE, SNAPSHOT, TRADE, Events, Instrument, sort_events, validate_events
from .store import save_events

NS_PER_S = 1_000_000_000
SECONDS_PER_YEAR = 365.0 * 86_400.0
GENERATOR_VERSION = "mmsweep-synthetic-v2"

_NEVER = np.iinfo(np.int64).max  # "no event scheduled"
_CLEAR_TICK = np.iinfo(np.int64).min  # tick placeholder of CLEAR rows (written as price NaN)
_PIECE_ROWS = 1 << 22  # rows of each extra output piece (~176 MB) if the first allocation runs out


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _positive(obj, where: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and value > 0):
            raise InputError(f"{where}: {name} must be a positive number, got {value!r}", key=name)


def _non_negative(obj, where: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and value >= 0):
            raise InputError(f"{where}: {name} must be a non-negative number, got {value!r}", key=name)


@dataclasses.dataclass(frozen=True)
class SynthInstrument:
    """One synthetic instrument: its contract facts and its book / trade / feed parameters.

    Attributes:
        name: key of this instrument in :func:`synthetic_market`'s result, e.g. ``"futures"``.
        symbol: exchange-style symbol written into :class:`Instrument`.
        venue: free text written into :class:`Instrument`.
        tick_size: price increment (quote currency per base unit).
        lot_size: quantity increment (base units).
        lagged: True if this book follows the latent price ``lead_lag_ms`` late (the follower);
            False if it sees the latent price at once (the leader).
        basis_bp: constant premium of the fair price over the latent price (basis points).
        depth_levels: price levels kept on each side of the book (>= 2).
        touch_qty: mean size at the best level (base units).
        depth_growth: mean size at level k (0 = touch) is ``touch_qty * (1 + depth_growth * k)``.
        depth_qty_sigma: log-standard deviation of a level's size around that mean.
        trades_per_s: mean arrival rate of aggressive orders (per second); one order prints one
            TRADE row per price level it touches, so trade rows/s are slightly higher.
        hawkes_branching: Hawkes branching ratio n in [0, 1): mean number of orders each order
            triggers.  Baseline rate = ``trades_per_s * (1 - n)``.
        hawkes_decay_per_s: decay rate of the exponential Hawkes kernel (per second).
        trade_size_min: Pareto scale of aggressive order sizes (base units; at least one lot).
        trade_size_alpha: Pareto tail exponent of order sizes (P(size > x) ~ x^-alpha).
        informed_bp: scale of the tilt of uninformed orders towards the fair price (basis
            points): P(buy) = logistic((fair - mid) / mid * 1e4 / informed_bp).
        informed_share: share of aggressive orders that are informed: an informed order buys if
            the instrument's fair price ``informed_horizon_ms`` later is above the current one and
            sells if below (the book follows the fair price, so the mid then moves against the
            resting order it hit: adverse selection of passive fills).
        informed_horizon_ms: how far ahead informed orders see the fair price (ms).
        requote_per_s: rate at which makers re-centre the book on the fair price (per second).
            Keep it equal across instruments: the lead-lag measured between two books is the
            configured lag only when their (random) re-quote delays have the same distribution.
        requote_threshold_bp: makers also re-quote at once (at the next latent grid step) when
            the fair price is further than this from the mid (basis points), so that jumps and
            bursts reach the book within one grid step; 0 disables it.
        refill_ms: mean delay before a level is added inside a spread wider than one tick (ms).
        touch_noise_per_s: rate of size changes at the best level of a random side (per second).
        depth_noise_per_s: rate of size changes at a random deeper level (rows per second).
        depth_noise_rows_per_msg: mean rows per deep-churn message (>= 1): the changes come in
            batches sharing one exchange time and one receive time, as in an exchange diff stream.
        feed_latency_base_ns: minimum feed latency (ns).
        feed_jitter_median_ns: median of the lognormal jitter added to the base (ns).
        feed_jitter_sigma: log-standard deviation of that jitter.
    """

    name: str
    symbol: str = "BTCUSDT"
    venue: str = "synthetic"
    tick_size: float = 0.1
    lot_size: float = 0.001
    lagged: bool = False
    basis_bp: float = 0.0
    depth_levels: int = 20
    touch_qty: float = 1.0
    depth_growth: float = 0.25
    depth_qty_sigma: float = 0.8
    trades_per_s: float = 60.0
    hawkes_branching: float = 0.85
    hawkes_decay_per_s: float = 10.0
    trade_size_min: float = 0.005
    trade_size_alpha: float = 1.5
    informed_bp: float = 0.2
    informed_share: float = 0.0
    informed_horizon_ms: float = 1000.0
    requote_per_s: float = 20.0
    requote_threshold_bp: float = 0.5
    refill_ms: float = 5.0
    touch_noise_per_s: float = 100.0
    depth_noise_per_s: float = 400.0
    depth_noise_rows_per_msg: float = 1.0
    feed_latency_base_ns: int = 1_000_000
    feed_jitter_median_ns: int = 2_500_000
    feed_jitter_sigma: float = 0.9

    def __post_init__(self) -> None:
        where = f"instrument {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise InputError("instrument name must be a non-empty string", key="name")
        _positive(self, where, "tick_size", "lot_size", "touch_qty", "trade_size_min", "trade_size_alpha",
                  "informed_bp", "requote_per_s", "refill_ms", "hawkes_decay_per_s")
        _non_negative(self, where, "depth_growth", "depth_qty_sigma", "trades_per_s", "touch_noise_per_s",
                      "requote_threshold_bp",
                      "depth_noise_per_s", "feed_latency_base_ns", "feed_jitter_median_ns", "feed_jitter_sigma")
        if not (isinstance(self.depth_levels, int) and 2 <= self.depth_levels <= 1000):
            raise InputError(f"{where}: depth_levels must be an integer in [2, 1000], got {self.depth_levels!r}",
                             key="depth_levels")
        if not (math.isfinite(self.depth_noise_rows_per_msg) and self.depth_noise_rows_per_msg >= 1.0):
            raise InputError(f"{where}: depth_noise_rows_per_msg must be >= 1, got {self.depth_noise_rows_per_msg!r}",
                             key="depth_noise_rows_per_msg")
        if not (math.isfinite(self.informed_share) and 0.0 <= self.informed_share <= 1.0):
            raise InputError(f"{where}: informed_share must be in [0, 1], got {self.informed_share!r}",
                             key="informed_share")
        if not (math.isfinite(self.informed_horizon_ms) and 0.0 <= self.informed_horizon_ms <= 3_600_000.0):
            raise InputError(f"{where}: informed_horizon_ms must be in [0, 3600000], got "
                             f"{self.informed_horizon_ms!r}", key="informed_horizon_ms")
        if not 0.0 <= self.hawkes_branching < 1.0:
            raise InputError(f"{where}: hawkes_branching must be in [0, 1), got {self.hawkes_branching!r}",
                             key="hawkes_branching")
        if self.trade_size_min < self.lot_size * (1 - 1e-9):
            raise InputError(f"{where}: trade_size_min {self.trade_size_min} is below one lot ({self.lot_size})",
                             key="trade_size_min")
        if not (math.isfinite(self.basis_bp) and abs(self.basis_bp) < 1e4):
            raise InputError(f"{where}: basis_bp must be finite and above -10000, got {self.basis_bp!r}",
                             key="basis_bp")


FUTURES = SynthInstrument(
    name="futures", venue="synthetic-usdm", tick_size=0.1, lot_size=0.001, lagged=True, depth_levels=20,
    touch_qty=1.0, trades_per_s=65.0, trade_size_min=0.005, trade_size_alpha=1.5,
    informed_share=0.5, informed_horizon_ms=1000.0, refill_ms=20.0, touch_noise_per_s=150.0, depth_noise_per_s=700.0, depth_noise_rows_per_msg=8.0,
    feed_latency_base_ns=1_000_000, feed_jitter_median_ns=2_000_000, feed_jitter_sigma=0.8,
)
"""BTCUSDT USD-M-like futures (tick 0.1, lot 0.001), the follower by default.

Its trade rate is a little above the real capture's (62.3 trade rows/s); the two churn rates are
chosen so that book rows/s and top-of-book updates/s are at least those of the real capture
(1,353 depth rows/s, 192 bookTicker updates/s; see bench/synth.py).  Half of the aggressive orders
are informed one second ahead, so that passive fills at the touch lose about as much 1 s and 10 s
later as on the real capture (README, "Synthetic market")."""

SPOT = SynthInstrument(
    name="spot", venue="synthetic-spot", tick_size=0.01, lot_size=0.00001, lagged=False, depth_levels=5,
    touch_qty=0.5, trades_per_s=36.0, trade_size_min=0.0003, trade_size_alpha=2.0,
    informed_share=0.7, informed_horizon_ms=1500.0, touch_noise_per_s=60.0, depth_noise_per_s=100.0, depth_noise_rows_per_msg=4.0,
    feed_latency_base_ns=1_000_000, feed_jitter_median_ns=2_000_000, feed_jitter_sigma=0.6,
)
"""BTCUSDT-like spot (tick 0.01, lot 0.00001), the leader by default (36 trade rows/s; the real
capture has 34.5).  Fewer levels than futures: with a 0.01 tick a re-quote moves the book by tens of
ticks, rewriting every level, so the level count sets the row rate (the real spot book is sparse
at that tick anyway).  70 % of its aggressive orders are informed 1.5 s ahead (the real spot
capture's touch markouts are larger than futures' at 10 s)."""


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic market (same config, bit-identical output).

    Attributes:
        seed: random seed.
        start_ns: exchange time of the initial snapshot (ns since the Unix epoch).
        hours: length of the market (hours).
        instruments: the instruments generated, in the order of the result dict (the first is the
            one the demo quotes on).
        lead_lag_ms: how far the leaders (``lagged=False``, spot by default) lead the followers
            (ms); 0 = no lead.
        base_price: latent price at ``start_ns`` (quote currency per base unit).
        volatility_annual: mean annualised volatility of the latent log-price (0.5 = 50 %/year,
            i.e. 0.89 bp per sqrt-second).
        sv_slow_std, sv_slow_halflife_s: stationary standard deviation and half-life (s) of the
            slow log-volatility factor.
        sv_fast_std, sv_fast_halflife_s: the same for the fast factor (bursts of activity).
        jump_per_hour: mean number of latent price jumps per hour.
        jump_std_bp: standard deviation of a jump (basis points, normal).
        latent_step_ms: grid step of the latent path (ms); the path is linear in between.
        emit_bbo: also write BBO rows (best price and size of a side) after every message that
            changes them, like a book-ticker stream.
    """

    seed: int = 0
    start_ns: int = 1_700_000_000_000_000_000
    hours: float = 1.0
    instruments: tuple[SynthInstrument, ...] = (FUTURES, SPOT)
    lead_lag_ms: float = 200.0
    base_price: float = 60_000.0
    volatility_annual: float = 0.5
    sv_slow_std: float = 0.35
    sv_slow_halflife_s: float = 3_600.0
    sv_fast_std: float = 0.5
    sv_fast_halflife_s: float = 60.0
    jump_per_hour: float = 20.0
    jump_std_bp: float = 8.0
    latent_step_ms: float = 10.0
    emit_bbo: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}", key="seed")
        if not isinstance(self.start_ns, (int, np.integer)) or self.start_ns < 0:
            raise InputError(f"start_ns must be a non-negative integer (ns), got {self.start_ns!r}", key="start_ns")
        _positive(self, "synthetic config", "hours", "base_price", "volatility_annual", "sv_slow_halflife_s",
                  "sv_fast_halflife_s", "latent_step_ms")
        _non_negative(self, "synthetic config", "lead_lag_ms", "sv_slow_std", "sv_fast_std", "jump_per_hour",
                      "jump_std_bp")
        if self.hours > 24 * 366:
            raise InputError(f"hours must be at most a year, got {self.hours!r}", key="hours")
        instruments = tuple(self.instruments)
        if not instruments or not all(isinstance(i, SynthInstrument) for i in instruments):
            raise InputError("instruments must be a non-empty tuple of SynthInstrument", key="instruments")
        names = [i.name for i in instruments]
        if len(set(names)) != len(names):
            raise InputError(f"instrument names must be unique, got {names}", key="instruments")
        object.__setattr__(self, "instruments", instruments)

    @property
    def duration_ns(self) -> int:
        return int(round(self.hours * 3600.0 * NS_PER_S))

    @property
    def end_ns(self) -> int:
        """Exchange time (ns) at which generation stops (exclusive)."""
        return self.start_ns + self.duration_ns


# --------------------------------------------------------------------------------------------
# Random numbers (numba; explicit state, so streams are reproducible in any thread)
# --------------------------------------------------------------------------------------------


_U64_5 = np.uint64(5)
_U64_7 = np.uint64(7)
_U64_9 = np.uint64(9)
_U64_11 = np.uint64(11)
_U64_17 = np.uint64(17)
_U64_45 = np.uint64(45)
_U64_57 = np.uint64(57)
_U64_19 = np.uint64(19)


@numba.njit(cache=True, inline="always")
def _next_u64(s: np.ndarray) -> np.uint64:
    """xoshiro256** (Blackman & Vigna): explicit state, so streams are reproducible across threads."""
    s0 = s[0]
    s1 = s[1]
    s2 = s[2]
    s3 = s[3]
    x = s1 * _U64_5
    result = ((x << _U64_7) | (x >> _U64_57)) * _U64_9
    t = s1 << _U64_17
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = (s3 << _U64_45) | (s3 >> _U64_19)
    s[0] = s0
    s[1] = s1
    s[2] = s2
    s[3] = s3
    return result


@numba.njit(cache=True, inline="always")
def _uniform(s: np.ndarray) -> float:
    """Uniform on the open interval (0, 1): safe to take logs and negative powers of."""
    return (float(_next_u64(s) >> _U64_11) + 0.5) * (1.0 / 9007199254740992.0)


_SPARE_SCALE = float(2**52)


@numba.njit(cache=True, inline="always")
def _normal(s: np.ndarray) -> float:
    """Standard normal (Box-Muller).

    Each transform gives two normals; the second is kept in the generator state (``s[4]`` flags
    it, ``s[5]`` holds it as a fixed-point integer in units of 2**-52, exact enough for any
    normal this transform can produce, |z| < 9) so the next call costs no transcendental.
    """
    if s[4] != 0:
        s[4] = np.uint64(0)
        return float(np.int64(s[5])) / _SPARE_SCALE
    r = math.sqrt(-2.0 * math.log(_uniform(s)))
    angle = 2.0 * math.pi * _uniform(s)
    s[5] = np.uint64(np.int64(round(r * math.sin(angle) * _SPARE_SCALE)))
    s[4] = np.uint64(1)
    return r * math.cos(angle)


# --------------------------------------------------------------------------------------------
# Latent price
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LatentPath:
    """The latent log-price on a regular grid, shared by all instruments.

    Attributes:
        origin_ns: exchange time of grid point 0 (ns); earlier than the start by at least the lag,
            so that a lagged instrument has a path to look back on.
        step_ns: grid step (ns).
        log_price: ``X`` at each grid point (0 at the origin; the start's value is not 0).
        var_mult: latent variance over its mean at each grid step (mean exactly 1 over
            ``[start, end)``); scales the diffusion and the trade arrivals.
    """

    origin_ns: int
    step_ns: int
    log_price: np.ndarray
    var_mult: np.ndarray


@numba.njit(cache=True)
def _latent_kernel(rng: np.ndarray, n: int, n_pre: int, n_span: int, var_step: float, slow_std: float,
                   slow_phi: float, fast_std: float, fast_phi: float, jump_p: float, jump_std: float):
    """One pass for the variance path, one for the log-price (no large temporaries).

    Each log-volatility factor is a stationary AR(1) (an OU process sampled on the grid) with mean
    ``-std**2``, so that E[exp(2 v)] = 1.  Returns ``(log_price, var_mult)``.
    """
    var_mult = np.empty(n)
    slow = -slow_std * slow_std + slow_std * _normal(rng)
    fast = -fast_std * fast_std + fast_std * _normal(rng)
    slow_innov = slow_std * math.sqrt(max(1.0 - slow_phi * slow_phi, 0.0))
    fast_innov = fast_std * math.sqrt(max(1.0 - fast_phi * fast_phi, 0.0))
    span_sum = 0.0
    for i in range(n):
        var_mult[i] = math.exp(2.0 * (slow + fast))
        if n_pre <= i < n_pre + n_span:
            span_sum += var_mult[i]
        slow = -slow_std * slow_std + (slow + slow_std * slow_std) * slow_phi + slow_innov * _normal(rng)
        fast = -fast_std * fast_std + (fast + fast_std * fast_std) * fast_phi + fast_innov * _normal(rng)
    # Normalise over the generated span so that volatility_annual and trades_per_s are the
    # realised means of this run, not just expectations (a slow factor with an hour's half-life
    # would otherwise move a day's trade count by tens of percent from seed to seed).
    scale = n_span / span_sum
    log_price = np.empty(n)
    x = 0.0
    for i in range(n):
        var_mult[i] *= scale
        log_price[i] = x
        s2 = var_step * var_mult[i]
        x += math.sqrt(s2) * _normal(rng) - 0.5 * s2  # -s2/2: the price itself is a martingale
        if _uniform(rng) < jump_p:
            x += jump_std * _normal(rng)
    # Re-anchor so that X(start) = 0: base_price is the price at the start, not before it.
    x0 = log_price[n_pre]
    for i in range(n):
        log_price[i] -= x0
    return log_price, var_mult


def _halflife_phi(halflife_s: float, step_s: float) -> float:
    """AR(1) coefficient of an OU process with this half-life sampled every step_s seconds."""
    return math.exp(-math.log(2.0) * step_s / halflife_s)


def _rng_state(seed: np.random.SeedSequence) -> np.ndarray:
    """A fresh generator state for the numba code: xoshiro256** [0:4], spare normal [4:6]."""
    state = np.zeros(6, np.uint64)
    state[:4] = seed.generate_state(4, np.uint64)
    if not state[:4].any():  # xoshiro's one forbidden state
        state[0] = 1
    return state


def latent_path(config: SynthConfig, seed: np.random.SeedSequence | None = None) -> LatentPath:
    """Generate the latent log-price grid covering ``[start - lag, end + the longest informed
    horizon]`` (see :class:`LatentPath`).

    ``seed`` defaults to the first child of ``SeedSequence(config.seed)``, the one
    :func:`synthetic_market` uses.
    """
    if seed is None:
        seed = np.random.SeedSequence(config.seed).spawn(1)[0]
    step_ns = max(int(round(config.latent_step_ms * 1e6)), 1)
    step_s = step_ns / NS_PER_S
    lag_ns = int(round(config.lead_lag_ms * 1e6))
    n_pre = -(-lag_ns // step_ns) + 1
    n_span = max(-(-config.duration_ns // step_ns), 1)
    ahead_ns = max(int(round(i.informed_horizon_ms * 1e6)) if i.informed_share > 0 else 0 for i in config.instruments)
    n_ahead = -(-ahead_ns // step_ns)  # informed orders near the end look past it
    log_price, var_mult = _latent_kernel(
        _rng_state(seed), n_pre + n_span + 2 + n_ahead, n_pre, n_span,
        config.volatility_annual**2 / SECONDS_PER_YEAR * step_s,
        config.sv_slow_std, _halflife_phi(config.sv_slow_halflife_s, step_s),
        config.sv_fast_std, _halflife_phi(config.sv_fast_halflife_s, step_s),
        config.jump_per_hour / 3600.0 * step_s, config.jump_std_bp * 1e-4,
    )
    return LatentPath(config.start_ns - n_pre * step_ns, step_ns, log_price, var_mult)


# --------------------------------------------------------------------------------------------
# Event loop (numba)
# --------------------------------------------------------------------------------------------


class _Params(NamedTuple):
    """Per-instrument constants of the event loop, in loop units (ticks, lots, ns, per second)."""

    levels: int
    lag_ns: int
    fair_scale: float  # fair ticks = fair_scale * exp(X)
    touch_lots: float
    growth: float
    qty_sigma: float
    mu0: float  # Hawkes baseline (orders per second) at mean variance
    hawkes_alpha: float  # excitation jump per order (per second) = branching * decay
    hawkes_decay: float  # per second
    size_min_lots: float
    inv_alpha: float
    informed_bp: float
    informed_share: float
    informed_ahead_ns: int
    requote_rate: float
    requote_threshold: float  # |fair - mid| / mid that triggers an immediate re-quote (0: never)
    refill_rate: float
    touch_noise_rate: float
    depth_noise_rate: float  # deep-churn messages per second
    deep_batch_q: float  # log(1 - 1/mean rows) of the geometric batch size; 0: one row a message
    lat_base_ns: float
    jit_median_ns: float
    jit_sigma: float
    px_mul: float  # price = tick * px_mul / px_div (exact decimals when 1/tick is an integer)
    px_div: float
    q_mul: float
    q_div: float
    emit_bbo: bool


# Integer state slots.
_S_B, _S_A, _S_STEP, _S_NEXT_TRADE, _S_NEXT_REQ, _S_NEXT_TOUCH, _S_NEXT_DEEP, _S_NEXT_REFILL = range(8)
_S_LAST_LOCAL, _S_HAWKES_T, _S_INIT, _S_TOB_BT, _S_TOB_BQ, _S_TOB_AT, _S_TOB_AQ = range(8, 15)
# Counters (also integer slots).
_C_MSG, _C_TRADE_ROWS, _C_DEPTH_ROWS, _C_ORDERS, _C_REQUOTES, _C_REFILLS, _C_TOB, _C_BEST, _C_CLEARS = range(15, 24)
_C_BBO_ROWS, _C_UNFILLED = range(24, 26)
_N_INT_STATE = 26
# Float state slots.
_F_HAWKES_E, _F_HAWKES_BOUND, _F_MU = range(3)
_N_FLOAT_STATE = 3

_COUNTERS = {
    "messages": _C_MSG, "trade_rows": _C_TRADE_ROWS, "depth_rows": _C_DEPTH_ROWS, "aggressive_orders": _C_ORDERS,
    "requotes": _C_REQUOTES, "refills": _C_REFILLS, "top_of_book_updates": _C_TOB, "best_price_changes": _C_BEST,
    "levels_cleared_by_trades": _C_CLEARS, "bbo_rows": _C_BBO_ROWS, "orders_partly_unfilled": _C_UNFILLED,
}

@numba.njit(cache=True, inline="always")
def _wait_ns(s: np.ndarray, rate_per_s: float) -> int:
    """Exponential waiting time (ns) of a Poisson process with this rate; 'never' if rate is 0."""
    if rate_per_s <= 0.0:
        return _NEVER // 2
    return int(-math.log(_uniform(s)) / rate_per_s * 1e9)


@numba.njit(cache=True, inline="always")
def _level_lots(p: _Params, s: np.ndarray, k: int) -> int:
    """A fresh size (lots, >= 1) for the level k ticks from the touch: rising profile, lognormal noise."""
    mean = p.touch_lots * (1.0 + p.growth * k)
    lots = mean * math.exp(p.qty_sigma * _normal(s) - 0.5 * p.qty_sigma * p.qty_sigma)
    return max(1, int(lots + 0.5))


@numba.njit(cache=True, inline="always")
def _fair_ticks(p: _Params, xg: np.ndarray, origin: int, step: int, t: int) -> float:
    """The instrument's fair price (fractional ticks) at exchange time t (ns): latent path, lagged."""
    u = t - p.lag_ns - origin
    i = u // step
    frac = (u - i * step) / step
    return p.fair_scale * math.exp(xg[i] + frac * (xg[i + 1] - xg[i]))


@numba.njit(cache=True, inline="always")
def _message_local_ts(p: _Params, si: np.ndarray, s: np.ndarray, t: int) -> int:
    """Receive time of a message sent at t: base + lognormal jitter, in order (no overtaking)."""
    latency = p.lat_base_ns
    if p.jit_median_ns > 0.0:
        latency += p.jit_median_ns * math.exp(p.jit_sigma * _normal(s))
    local = t + int(latency)
    if local < si[_S_LAST_LOCAL]:
        local = si[_S_LAST_LOCAL]
    si[_S_LAST_LOCAL] = local
    si[_C_MSG] += 1
    return local


@numba.njit(cache=True, inline="always")
def _put(out, pos: int, p: _Params, exch: int, local: int, kind: int, side: int, tick: int, lots: int) -> int:
    """Write one row (integer tick and lots converted to float price and qty); returns pos + 1."""
    out[pos]["exch_ts"] = exch
    out[pos]["local_ts"] = local
    out[pos]["kind"] = kind
    out[pos]["side"] = side
    if tick == _CLEAR_TICK:
        out[pos]["price"] = np.nan
    else:
        out[pos]["price"] = tick * p.px_mul / p.px_div
    out[pos]["qty"] = lots * p.q_mul / p.q_div
    out[pos]["order_id"] = 0
    return pos + 1


@numba.njit(cache=True, inline="always")
def _after_message(out, pos: int, p: _Params, si: np.ndarray, bq: np.ndarray, aq: np.ndarray, exch: int,
                   local: int) -> int:
    """Count top-of-book changes of the message just written and, if asked, write BBO rows."""
    b = si[_S_B]
    a = si[_S_A]
    bid_changed = b != si[_S_TOB_BT] or bq[0] != si[_S_TOB_BQ]
    ask_changed = a != si[_S_TOB_AT] or aq[0] != si[_S_TOB_AQ]
    if bid_changed or ask_changed:
        si[_C_TOB] += 1
    if b != si[_S_TOB_BT] or a != si[_S_TOB_AT]:
        si[_C_BEST] += 1
    if p.emit_bbo:
        if bid_changed:
            pos = _put(out, pos, p, exch, local, BBO, 1, b, bq[0])
            si[_C_BBO_ROWS] += 1
        if ask_changed:
            pos = _put(out, pos, p, exch, local, BBO, -1, a, aq[0])
            si[_C_BBO_ROWS] += 1
    si[_S_TOB_BT] = b
    si[_S_TOB_BQ] = bq[0]
    si[_S_TOB_AT] = a
    si[_S_TOB_AQ] = aq[0]
    return pos


@numba.njit(cache=True)
def _snapshot(out, pos: int, p: _Params, si: np.ndarray, bq: np.ndarray, aq: np.ndarray, rng: np.ndarray,
              xg: np.ndarray, origin: int, step: int, t: int) -> int:
    """Initial book around the fair price: CLEAR each side, then one SNAPSHOT row per level."""
    n = p.levels
    b = int(math.floor(_fair_ticks(p, xg, origin, step, t)))
    a = b + 1
    si[_S_B] = b
    si[_S_A] = a
    local = _message_local_ts(p, si, rng, t)
    pos = _put(out, pos, p, t, local, CLEAR, 1, _CLEAR_TICK, 0)
    pos = _put(out, pos, p, t, local, CLEAR, -1, _CLEAR_TICK, 0)
    for k in range(n):
        bq[k] = _level_lots(p, rng, k)
        pos = _put(out, pos, p, t, local, SNAPSHOT, 1, b - k, bq[k])
    for k in range(n):
        aq[k] = _level_lots(p, rng, k)
        pos = _put(out, pos, p, t, local, SNAPSHOT, -1, a + k, aq[k])
    si[_C_DEPTH_ROWS] += 2 * n
    si[_S_TOB_BT] = b
    si[_S_TOB_BQ] = bq[0]
    si[_S_TOB_AT] = a
    si[_S_TOB_AQ] = aq[0]
    if p.emit_bbo:
        pos = _put(out, pos, p, t, local, BBO, 1, b, bq[0])
        pos = _put(out, pos, p, t, local, BBO, -1, a, aq[0])
        si[_C_BBO_ROWS] += 2
    return pos


@numba.njit(cache=True, inline="always")
def _move_side(out, pos: int, p: _Params, q: np.ndarray, tmp: np.ndarray, rng: np.ndarray, side: int, old_best: int,
               new_best: int, t: int, local: int):
    """Move one side's window of levels from ``old_best`` to ``new_best``; returns (pos, rows).

    Levels in both windows keep their size (and move to their new depth index without a row).
    New levels are written before old ones are deleted, so the side never empties mid-message.
    """
    n = p.levels
    away = 1 if side < 0 else -1  # direction of increasing depth in ticks: asks up, bids down
    rows = 0
    for k in range(n):
        old = (new_best + away * k - old_best) * away
        if 0 <= old < n:
            tmp[k] = q[old]
        else:
            tmp[k] = _level_lots(p, rng, k)
            pos = _put(out, pos, p, t, local, DEPTH, side, new_best + away * k, tmp[k])
            rows += 1
    for k in range(n):
        new = (old_best + away * k - new_best) * away
        if not 0 <= new < n:
            pos = _put(out, pos, p, t, local, DEPTH, side, old_best + away * k, 0)
            rows += 1
    q[:] = tmp
    return pos, rows


@numba.njit(cache=True)
def _requote(out, pos: int, p: _Params, si: np.ndarray, bq: np.ndarray, aq: np.ndarray, rng: np.ndarray,
             tmp: np.ndarray, fair: float, t: int) -> int:
    """Re-centre both sides on the fair price with a one-tick spread (no rows if already there).

    Levels inside the new windows keep their size; the others are deleted and new ones added.
    The side moving away from the other is moved first: its new levels cannot cross the other
    side's old ones, and once it sits in its new window the other side's new levels cannot cross
    it either.  So every intermediate state of the message is uncrossed, with both sides non-empty.
    """
    b = si[_S_B]
    a = si[_S_A]
    nb = int(math.floor(fair))  # the one-tick book whose mid is nearest the fair price
    na = nb + 1
    if nb == b and na == a:
        return pos
    local = _message_local_ts(p, si, rng, t)
    if nb >= b:  # moving up (or only the ask side moves): asks first
        pos, rows_a = _move_side(out, pos, p, aq, tmp, rng, -1, a, na, t, local)
        pos, rows_b = _move_side(out, pos, p, bq, tmp, rng, 1, b, nb, t, local)
    else:  # moving down: bids first
        pos, rows_b = _move_side(out, pos, p, bq, tmp, rng, 1, b, nb, t, local)
        pos, rows_a = _move_side(out, pos, p, aq, tmp, rng, -1, a, na, t, local)
    si[_S_B] = nb
    si[_S_A] = na
    si[_C_DEPTH_ROWS] += rows_a + rows_b
    si[_C_REQUOTES] += 1
    return _after_message(out, pos, p, si, bq, aq, t, local)


@numba.njit(cache=True)
def _trade(out, pos: int, p: _Params, si: np.ndarray, bq: np.ndarray, aq: np.ndarray, rng: np.ndarray,
           fair: float, fair_ahead: float, t: int) -> int:
    """One aggressive order: prints at the best, walks the book, updates the consumed levels.

    An informed order (probability ``informed_share``) trades towards ``fair_ahead``, the fair
    price ``informed_horizon_ms`` later; the others are tilted towards the current fair price.

    A buy (side +1) trades against asks from the best ask upwards; each fully consumed level is
    deleted and a new level is added beyond the far end of the side (the side keeps its depth).
    The order can consume at most the ``levels`` levels it sees; any rest is left unfilled.
    """
    n = p.levels
    b = si[_S_B]
    a = si[_S_A]
    mid = 0.5 * (a + b)
    if p.informed_share > 0.0 and fair_ahead != fair and _uniform(rng) < p.informed_share:
        side = 1 if fair_ahead > fair else -1
    else:
        z = (fair - mid) / mid * 1e4 / p.informed_bp
        z = min(max(z, -50.0), 50.0)
        side = 1 if _uniform(rng) * (1.0 + math.exp(-z)) < 1.0 else -1  # P(buy) = logistic(z)
    size = p.size_min_lots * _uniform(rng) ** (-p.inv_alpha)  # Pareto
    remaining = int(min(size, 1e15) + 0.5)
    if remaining < 1:
        remaining = 1
    if side > 0:
        q = aq
        top = a
        step = 1
    else:
        q = bq
        top = b
        step = -1
    book_side = -side
    local = _message_local_ts(p, si, rng, t)
    cleared = 0
    partial = False
    while remaining > 0 and cleared < n:
        fill = min(remaining, q[cleared])
        pos = _put(out, pos, p, t, local, TRADE, side, top + step * cleared, fill)
        si[_C_TRADE_ROWS] += 1
        remaining -= fill
        if fill == q[cleared]:
            cleared += 1
        else:
            q[cleared] -= fill
            partial = True
            break
    if remaining > 0:
        si[_C_UNFILLED] += 1
    # Book rows: the partly filled level, then new levels beyond the far end (written before
    # the deletions so the side never empties, even when the order takes every level).
    rows = 0
    if partial:
        pos = _put(out, pos, p, t, local, DEPTH, book_side, top + step * cleared, q[cleared])
        rows += 1
    if cleared > 0:
        for k in range(n - cleared):
            q[k] = q[k + cleared]
        for k in range(n - cleared, n):
            q[k] = _level_lots(p, rng, k)
            pos = _put(out, pos, p, t, local, DEPTH, book_side, top + step * (k + cleared), q[k])
            rows += 1
    for k in range(cleared):
        pos = _put(out, pos, p, t, local, DEPTH, book_side, top + step * k, 0)
        rows += 1
    if cleared > 0:
        if side > 0:
            si[_S_A] = a + cleared
        else:
            si[_S_B] = b - cleared
        si[_C_CLEARS] += cleared
        if si[_S_A] - si[_S_B] > 1 and si[_S_NEXT_REFILL] == _NEVER:
            si[_S_NEXT_REFILL] = t + _wait_ns(rng, p.refill_rate)
    si[_C_DEPTH_ROWS] += rows
    si[_C_ORDERS] += 1
    return _after_message(out, pos, p, si, bq, aq, t, local)


@numba.njit(cache=True)
def _refill(out, pos: int, p: _Params, si: np.ndarray, bq: np.ndarray, aq: np.ndarray, rng: np.ndarray,
            fair: float, t: int) -> int:
    """Add one level inside a spread wider than a tick, on the side the fair price points to."""
    n = p.levels
    b = si[_S_B]
    a = si[_S_A]
    si[_S_NEXT_REFILL] = _NEVER
    if a - b <= 1:
        return pos
    local = _message_local_ts(p, si, rng, t)
    if fair > 0.5 * (a + b):  # price moving up: a new best bid (the deepest bid drops off)
        for k in range(n - 1, 0, -1):
            bq[k] = bq[k - 1]
        bq[0] = _level_lots(p, rng, 0)
        pos = _put(out, pos, p, t, local, DEPTH, 1, b + 1, bq[0])
        pos = _put(out, pos, p, t, local, DEPTH, 1, b - (n - 1), 0)
        si[_S_B] = b + 1
    else:  # a new best ask
        for k in range(n - 1, 0, -1):
            aq[k] = aq[k - 1]
        aq[0] = _level_lots(p, rng, 0)
        pos = _put(out, pos, p, t, local, DEPTH, -1, a - 1, aq[0])
        pos = _put(out, pos, p, t, local, DEPTH, -1, a + (n - 1), 0)
        si[_S_A] = a - 1
    si[_C_DEPTH_ROWS] += 2
    si[_C_REFILLS] += 1
    if si[_S_A] - si[_S_B] > 1:
        si[_S_NEXT_REFILL] = t + _wait_ns(rng, p.refill_rate)
    return _after_message(out, pos, p, si, bq, aq, t, local)


@numba.njit(cache=True)
def _churn(out, pos: int, p: _Params, si: np.ndarray, bq: np.ndarray, aq: np.ndarray, rng: np.ndarray,
           at_touch: bool, t: int) -> int:
    """New sizes for book levels of random sides: the touch (one row), or a batch of deeper levels.

    A deep batch has 1 + Geometric rows (mean ``depth_noise_rows_per_msg``, at most ``3 * levels``),
    each a uniformly random level behind the touch, like an exchange diff message that bundles
    the changes of a few milliseconds.
    """
    n = p.levels
    rows = 1
    if not at_touch and p.deep_batch_q < 0.0:
        rows = 1 + int(math.log(_uniform(rng)) / p.deep_batch_q)
        rows = min(rows, 3 * n)
    local = _message_local_ts(p, si, rng, t)
    for _ in range(rows):
        bid = _uniform(rng) < 0.5
        k = 0 if at_touch else 1 + min(int(_uniform(rng) * (n - 1)), n - 2)
        lots = _level_lots(p, rng, k)
        if bid:
            bq[k] = lots
            pos = _put(out, pos, p, t, local, DEPTH, 1, si[_S_B] - k, lots)
        else:
            aq[k] = lots
            pos = _put(out, pos, p, t, local, DEPTH, -1, si[_S_A] + k, lots)
    si[_C_DEPTH_ROWS] += rows
    return _after_message(out, pos, p, si, bq, aq, t, local)


@numba.njit(cache=True, nogil=True)
def _advance(p: _Params, si: np.ndarray, sf: np.ndarray, bq: np.ndarray, aq: np.ndarray, rng: np.ndarray,
             xg: np.ndarray, vm: np.ndarray, origin: int, step: int, t_end: int, out, pos: int):
    """Run the event loop until exchange time ``t_end`` (exclusive) or until ``out`` is full.

    All state lives in ``si`` / ``sf`` / ``bq`` / ``aq`` / ``rng``, and an event is only taken when
    its rows are sure to fit, so calling again with a fresh ``out`` resumes exactly where it stopped.
    Returns ``(rows written, finished)``.
    """
    n = p.levels
    reserve = 4 * n + 16  # the most rows one event can write (a re-quote moving every level, + BBO)
    cap = out.shape[0]
    tmp = np.empty(n, np.int64)
    if si[_S_INIT] == 0:
        if pos + reserve > cap:
            return pos, False
        t0 = si[_S_HAWKES_T]
        pos = _snapshot(out, pos, p, si, bq, aq, rng, xg, origin, step, t0)
        si[_S_INIT] = 1
    while True:
        if pos + reserve > cap:
            return pos, False
        step_end = origin + (si[_S_STEP] + 1) * step
        t = min(si[_S_NEXT_TRADE], si[_S_NEXT_REQ], si[_S_NEXT_TOUCH], si[_S_NEXT_DEEP], si[_S_NEXT_REFILL])
        if step_end <= t:
            if step_end >= t_end:
                return pos, True
            # New latent grid step: the Hawkes baseline follows the latent variance.  The order
            # candidate is redrawn from here (memoryless), with the new bound.
            e = sf[_F_HAWKES_E] * math.exp(-p.hawkes_decay * (step_end - si[_S_HAWKES_T]) * 1e-9)
            sf[_F_HAWKES_E] = e
            si[_S_HAWKES_T] = step_end
            si[_S_STEP] += 1
            mu = p.mu0 * vm[si[_S_STEP]]
            sf[_F_MU] = mu
            sf[_F_HAWKES_BOUND] = mu + e
            si[_S_NEXT_TRADE] = step_end + _wait_ns(rng, mu + e)
            if p.requote_threshold > 0.0:
                # Makers watching the fair price pull and re-place their quotes at once when it
                # runs away from the book (a jump, a burst) instead of waiting for a re-quote.
                fair = _fair_ticks(p, xg, origin, step, step_end)
                mid = 0.5 * (si[_S_B] + si[_S_A])
                if abs(fair - mid) > p.requote_threshold * mid:
                    si[_S_NEXT_REFILL] = _NEVER
                    pos = _requote(out, pos, p, si, bq, aq, rng, tmp, fair, step_end)
            continue
        if t >= t_end:
            return pos, True
        if t == si[_S_NEXT_TRADE]:
            # Ogata thinning: the intensity only decays until the next order, so the bound holds.
            e = sf[_F_HAWKES_E] * math.exp(-p.hawkes_decay * (t - si[_S_HAWKES_T]) * 1e-9)
            si[_S_HAWKES_T] = t
            intensity = sf[_F_MU] + e
            if _uniform(rng) * sf[_F_HAWKES_BOUND] <= intensity:
                fair = _fair_ticks(p, xg, origin, step, t)
                ahead = _fair_ticks(p, xg, origin, step, t + p.informed_ahead_ns) if p.informed_share > 0.0 else fair
                pos = _trade(out, pos, p, si, bq, aq, rng, fair, ahead, t)
                e += p.hawkes_alpha
            sf[_F_HAWKES_E] = e
            sf[_F_HAWKES_BOUND] = sf[_F_MU] + e
            si[_S_NEXT_TRADE] = t + _wait_ns(rng, sf[_F_HAWKES_BOUND])
        elif t == si[_S_NEXT_REQ]:
            si[_S_NEXT_REQ] = t + _wait_ns(rng, p.requote_rate)
            si[_S_NEXT_REFILL] = _NEVER
            pos = _requote(out, pos, p, si, bq, aq, rng, tmp, _fair_ticks(p, xg, origin, step, t), t)
        elif t == si[_S_NEXT_REFILL]:
            pos = _refill(out, pos, p, si, bq, aq, rng, _fair_ticks(p, xg, origin, step, t), t)
        elif t == si[_S_NEXT_TOUCH]:
            si[_S_NEXT_TOUCH] = t + _wait_ns(rng, p.touch_noise_rate)
            pos = _churn(out, pos, p, si, bq, aq, rng, True, t)
        else:
            si[_S_NEXT_DEEP] = t + _wait_ns(rng, p.depth_noise_rate)
            pos = _churn(out, pos, p, si, bq, aq, rng, False, t)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _decimal_ratio(unit: float) -> tuple[float, float]:
    """(mul, div) with ``unit == mul / div`` and ``div`` an integer when 1/unit is one.

    ``k * mul / div`` is then the correctly rounded value of the exact decimal ``k * unit``
    (e.g. ``617003 / 10`` is the double nearest 61700.3, which ``617003 * 0.1`` is not always).
    """
    inverse = 1.0 / unit
    if unit < 1.0 and abs(inverse - round(inverse)) < 1e-9 * inverse:
        return 1.0, float(round(inverse))
    return float(unit), 1.0


def _params(config: SynthConfig, inst: SynthInstrument) -> _Params:
    n = inst.hawkes_branching
    px_mul, px_div = _decimal_ratio(inst.tick_size)
    q_mul, q_div = _decimal_ratio(inst.lot_size)
    return _Params(
        levels=int(inst.depth_levels),
        lag_ns=int(round(config.lead_lag_ms * 1e6)) if inst.lagged else 0,
        fair_scale=config.base_price * (1.0 + inst.basis_bp * 1e-4) / inst.tick_size,
        touch_lots=inst.touch_qty / inst.lot_size,
        growth=float(inst.depth_growth),
        qty_sigma=float(inst.depth_qty_sigma),
        mu0=inst.trades_per_s * (1.0 - n),
        hawkes_alpha=n * inst.hawkes_decay_per_s,
        hawkes_decay=float(inst.hawkes_decay_per_s),
        size_min_lots=inst.trade_size_min / inst.lot_size,
        inv_alpha=1.0 / inst.trade_size_alpha,
        informed_bp=float(inst.informed_bp),
        informed_share=float(inst.informed_share),
        informed_ahead_ns=int(round(inst.informed_horizon_ms * 1e6)),
        requote_rate=float(inst.requote_per_s),
        requote_threshold=inst.requote_threshold_bp * 1e-4,
        refill_rate=1000.0 / inst.refill_ms,
        touch_noise_rate=float(inst.touch_noise_per_s),
        depth_noise_rate=inst.depth_noise_per_s / inst.depth_noise_rows_per_msg,
        deep_batch_q=math.log(1.0 - 1.0 / inst.depth_noise_rows_per_msg) if inst.depth_noise_rows_per_msg > 1 else 0.0,
        lat_base_ns=float(inst.feed_latency_base_ns),
        jit_median_ns=float(inst.feed_jitter_median_ns),
        jit_sigma=float(inst.feed_jitter_sigma),
        px_mul=px_mul, px_div=px_div, q_mul=q_mul, q_div=q_div,
        emit_bbo=bool(config.emit_bbo),
    )


def _initial_state(config: SynthConfig, p: _Params, path: LatentPath, seed: np.random.SeedSequence):
    si = np.zeros(_N_INT_STATE, np.int64)
    sf = np.zeros(_N_FLOAT_STATE, np.float64)
    rng = _rng_state(seed)
    start = config.start_ns
    si[_S_STEP] = (start - path.origin_ns) // path.step_ns
    si[_S_HAWKES_T] = start
    si[_S_LAST_LOCAL] = start
    mu = p.mu0 * path.var_mult[si[_S_STEP]]
    # Start the excitation at its stationary mean so the first seconds are not unusually quiet.
    n = p.hawkes_alpha / p.hawkes_decay
    e = mu * n / (1.0 - n)
    sf[_F_MU] = mu
    sf[_F_HAWKES_E] = e
    sf[_F_HAWKES_BOUND] = mu + e
    si[_S_NEXT_TRADE] = start + _wait_ns(rng, mu + e)
    si[_S_NEXT_REQ] = start + _wait_ns(rng, p.requote_rate)
    si[_S_NEXT_TOUCH] = start + _wait_ns(rng, p.touch_noise_rate)
    si[_S_NEXT_DEEP] = start + _wait_ns(rng, p.depth_noise_rate)
    si[_S_NEXT_REFILL] = _NEVER
    return si, sf, np.zeros(p.levels, np.int64), np.zeros(p.levels, np.int64), rng


def _row_capacity(config: SynthConfig, inst: SynthInstrument) -> int:
    """Rows to reserve: a generous bound on the expected count (never-touched pages cost nothing).

    Per second: a re-quote writes at most ``4 * levels`` rows, an order about two rows per level
    it walks (six is ample on average), churn one row per ``depth_noise_per_s`` /
    ``touch_noise_per_s``, a refill two; BBO rows at most two per message.  Capped at a quarter of the physical
    memory; if a (very bursty) run still outgrows it, the loop continues into extra pieces.
    """
    n = inst.depth_levels
    messages = inst.requote_per_s + inst.trades_per_s + inst.touch_noise_per_s + inst.depth_noise_per_s + 50.0
    per_s = inst.requote_per_s * (4 * n + 2) + 6.0 * inst.trades_per_s + inst.touch_noise_per_s
    per_s += inst.depth_noise_per_s + 100.0 + (2.0 * messages if config.emit_bbo else 0.0)
    rows = int(per_s * config.duration_ns / NS_PER_S) + 8 * n + 1024
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 8 << 30
    return max(min(rows, memory // 4 // EVENT_DTYPE.itemsize), _PIECE_ROWS // 16)


def _join(pieces: list[np.ndarray]) -> np.ndarray:
    """Concatenate, freeing each piece once copied (peak memory ~ the result plus one piece)."""
    if len(pieces) == 1:
        return pieces.pop()
    out = np.empty(sum(len(x) for x in pieces), EVENT_DTYPE)
    at = 0
    while pieces:
        piece = pieces.pop(0)
        out[at:at + len(piece)] = piece
        at += len(piece)
        del piece
    return out


@numba.njit(cache=True, nogil=True)
def _is_sorted(local_ts: np.ndarray, exch_ts: np.ndarray) -> bool:
    """True if already in :func:`sort_events` order (local_ts, then exch_ts)."""
    for i in range(1, local_ts.shape[0]):
        if local_ts[i] < local_ts[i - 1] or (local_ts[i] == local_ts[i - 1] and exch_ts[i] < exch_ts[i - 1]):
            return False
    return True


def _validate_in_slices(table: np.ndarray, source: str, rows: int = 1 << 24) -> None:
    """:func:`validate_events` over overlapping slices: same checks, bounded temporaries.

    (Its temporaries on a whole day would be gigabytes of fresh memory, which costs more time
    than the checks themselves.)  Errors name the row of the whole table.
    """
    for lo in range(0, len(table), rows):
        start = max(lo - 1, 0)  # one row of overlap keeps the sortedness check continuous
        try:
            validate_events(table[start:lo + rows], source=source)
        except InputError as exc:
            row = None if exc.row is None else exc.row + start
            raise InputError(exc.message, source=source, row=row) from exc


def _generate_instrument(config: SynthConfig, inst: SynthInstrument, path: LatentPath,
                         seed: np.random.SeedSequence, validate: bool) -> Events:
    p = _params(config, inst)
    si, sf, bq, aq, rng = _initial_state(config, p, path, seed)
    pieces = []
    finished = False
    rows = _row_capacity(config, inst)  # one piece, normally: the result is written in place
    while not finished:
        out = np.empty(rows, EVENT_DTYPE)
        pos, finished = _advance(p, si, sf, bq, aq, rng, path.log_price, path.var_mult, path.origin_ns,
                                 path.step_ns, config.end_ns, out, 0)
        # Shrink in place (realloc; no copy for large blocks) rather than copying out a slice.
        out.resize(pos, refcheck=False)
        pieces.append(out)
        del out
        rows = _PIECE_ROWS
    table = _join(pieces)
    # The loop emits in exchange order and delivers in order, so this is already sorted; the
    # check keeps the contract (sort_events order) explicit if the feed model ever changes.
    if not _is_sorted(table["local_ts"], table["exch_ts"]):
        table = sort_events(table)
    if validate:
        _validate_in_slices(table, source=f"synthetic:{inst.name}")
    seconds = config.duration_ns / NS_PER_S
    counts = {name: int(si[slot]) for name, slot in _COUNTERS.items()}
    meta = {
        "generator": GENERATOR_VERSION,
        "instrument": inst.name,
        "seed": int(config.seed),
        "start_ns": int(config.start_ns),
        "end_ns": int(config.end_ns),
        "lagged": bool(inst.lagged),
        "lag_ns": int(p.lag_ns),
        "rows": int(len(table)),
        "counts": counts,
        "per_second": {
            "rows": len(table) / seconds,
            "trade_rows": counts["trade_rows"] / seconds,
            "book_rows": counts["depth_rows"] / seconds,
            "top_of_book_updates": counts["top_of_book_updates"] / seconds,
            "best_price_changes": counts["best_price_changes"] / seconds,
        },
        "config": dataclasses.asdict(config),
    }
    return Events(table, Instrument(inst.symbol, inst.tick_size, inst.lot_size, 1.0, inst.venue),
                  source="synthetic", meta=meta)


#: rows per second an instrument generates at most with the default intensities (measured: futures
#: 1,515/s, spot 625/s), and the peak bytes per row while generating (a 40-byte row, x1.6 measured)
_ROWS_PER_S = 1_600
_PEAK_BYTES_PER_ROW = 64


def estimated_bytes(config: SynthConfig) -> float:
    """Peak memory (bytes) generating ``config`` needs, a generous estimate: the event rows and
    the latent path (three float64 values per latent step)."""
    seconds = config.duration_ns / NS_PER_S
    rows = seconds * _ROWS_PER_S * len(config.instruments)
    latent_steps = seconds * 1e3 / config.latent_step_ms
    return rows * _PEAK_BYTES_PER_ROW + latent_steps * 24


def synthetic_market(config: SynthConfig = SynthConfig(), *, validate: bool = True,
                     threads: int | None = None) -> dict[str, Events]:
    """Generate the synthetic market: one validated :class:`Events` per instrument, by name.

    Args:
        config: what to generate (see :class:`SynthConfig`); same config, bit-identical tables.
        validate: run :func:`validate_events` on each table (a few seconds on a full day).
        threads: instruments generated in parallel (default: min(instruments, CPUs)); the output
            does not depend on it.

    Returns:
        ``{instrument name: Events}`` in ``config.instruments`` order.  Each ``meta`` holds the
        row counts and rates (per second) of what was generated and the full config.
    """
    check_fits(estimated_bytes(config), f"a synthetic market of {config.hours:g} h", key="hours",
               hint="Generate fewer hours (or fewer instruments)")
    streams = np.random.SeedSequence(config.seed).spawn(1 + len(config.instruments))
    path = latent_path(config, streams[0])
    jobs = list(zip(config.instruments, streams[1:]))
    workers = max(1, min(len(jobs), threads or os.cpu_count() or 1))
    if workers == 1:
        results = [_generate_instrument(config, inst, path, seed, validate) for inst, seed in jobs]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda job: _generate_instrument(config, job[0], path, job[1], validate), jobs))
    return {inst.name: events for (inst, _), events in zip(jobs, results)}


def write_synthetic(config: SynthConfig, out_dir: str | os.PathLike) -> list[Path]:
    """Generate ``config`` and save each instrument atomically to ``<out_dir>/<name>.npz``."""
    out = Path(out_dir)
    return [save_events(events, out / f"{name}.npz") for name, events in synthetic_market(config).items()]
