"""Online performance metrics for the sweep kernel, matching hftbacktest's stats.

The kernel is a ``jax.lax.scan`` over decision rows (one row every ``interval_ns``), vmapped over
parameter lanes.  This module gives it an optax-style pair of pure functions over an O(1) state:

    state = metrics_init(jnp.float32)
    state = metrics_update(config, state, row_index=t, equity=E, position=q, mid_price=m,
                           num_trades_cum=n, trading_value_cum=v, fees_cum=f)   # every row
    out   = metrics_finalize(config, state)                                   # once, at the end

and a plain numpy reference, :func:`metrics_from_record` / :func:`metrics_from_hbt_record`, that
computes the same numbers from a full record (for the exact engine and for tests).

Definitions (those of hftbacktest 2.4.4's ``LinearAssetRecord(rec).resample(freq).stats(book_size=B)``,
see ``shared/reference/hftbacktest-semantics.md`` §8.2):

* Resampling.  Windows are ``[k*freq, (k+1)*freq)`` aligned to the Unix epoch, labelled by their
  start; every column takes the **last** value in its window; empty windows are dropped.  For rows
  at ``first_row_ns + i*interval_ns`` and ``freq = resample_every*interval_ns``, the sample of a
  window is therefore the state at the **last row of the window**: row ``i`` closes a window iff
  ``(i + phase_rows + 1) % resample_every == 0`` with ``phase_rows = (first_row_ns //
  interval_ns) % resample_every``.  A partial first window (record not starting on a boundary)
  and a partial last window (record ending mid-window) are emitted by polars like any other, and
  here too: the first sample is the first window's last row, and the last sample is the record's
  last row, committed in :func:`metrics_finalize`.  Consecutive labels are ``freq`` apart (no
  window can be empty since ``freq >= interval``).
* ``E = balance + position*price*contract_size - fee`` at each sample (quote currency);
  ``dE = diff(E)``, ``m = len(dE) = n_samples - 1``.
* ``c = (86400 s / freq) * trading_days_per_year``; hftbacktest defaults ``trading_days_per_year``
  to 252 **even for crypto** (pass 365 to annualise a 24/7 market), so SR depends on ``freq``.
* ``SR = mean(dE) / std(dE, ddof=1) * sqrt(c)``; ``Sortino = mean(dE) / sqrt(mean(min(dE,0)^2)) *
  sqrt(c)`` (positive steps count as zeros in the downside mean).
* ``Return = (E_last - E_first) / B`` (PnL since the *first sample*, not since the first row);
  ``MaxDrawdown = max(cummax(E) - E) / B``; ``ReturnOverMDD`` and ``ReturnOverTrade`` use raw
  (quote-currency) PnL, MDD and traded value, so ``B`` cancels.
* ``D = (label_last - label_first) / 86400 s = m * freq / 86400 s``;
  ``DailyNumberOfTrades = trades / D``; ``DailyTurnover = traded value / B / D``.  Trades and
  traded value are hftbacktest's sums of per-row increments, i.e. ``cum[last row] - cum[first
  row]`` (a fill booked at or before the first row is not counted).
* ``MaxPositionValue = max(|position| * price)`` over the samples, with **no** contract size and
  no book size (hftbacktest's definition).

Extra outputs (not in hftbacktest's summary): ``PnL``, ``Fees``, ``NumberOfTrades``,
``TradingValue`` (all ``last row - first row``, quote currency or count), ``MaxAbsPosition``
(``max |position|`` over **every** row, not only samples; contracts), ``MaxPositionNotional``
(``MaxPositionValue * contract_multiplier``) and ``NumSamples``.

Edge cases (hftbacktest raises ``IndexError`` with < 2 samples and ``TypeError`` with 2; here
every undefined value is NaN instead):

* ``n_samples < 3`` (``m < 2``): ``SR`` is NaN.  ``m < 1``: ``Sortino``, ``DailyNumberOfTrades``,
  ``DailyTurnover`` are NaN.  No samples at all: ``Return``, ``MaxDrawdown``,
  ``MaxPositionValue`` are NaN too.
* Otherwise divisions follow IEEE, as numpy does in hftbacktest: zero std (every ``dE`` equal)
  gives ``SR = ±inf``, or NaN when ``mean(dE) = 0`` (a lane that never trades); no negative
  ``dE`` gives ``Sortino = inf`` (NaN if also ``mean = 0``); ``MDD = 0`` gives
  ``ReturnOverMDD = inf`` (NaN when the PnL is 0 too); no traded value gives ``ReturnOverTrade =
  ±inf`` or NaN.  The online std is computed from shifted sums whose shift is the first ``dE``,
  so when every ``dE`` is bit-identical the variance is exactly 0 (hftbacktest's polars std is
  then 0 as well, up to its own rounding).
* Inputs must be finite.  (hftbacktest drops NaN equity, e.g. from an empty book, in SR, Sortino,
  Return, MDD and MaxPositionValue; the numpy reference reproduces that, the online version does
  not handle NaN.)

Numerics.  ``mean(dE)`` is taken from the telescoping sum ``(E_last - E_first) / m``, which is
exact up to the rounding of the inputs.  The variance uses sums of ``(dE - K)`` and ``(dE - K)^2``
shifted by ``K = first dE`` (so a lane whose drift dominates its noise does not cancel
catastrophically) and accumulated with Kahan compensation.  Measured (tests/test_metrics.py):

* float64: equal to hftbacktest within a few ulp (<= 1e-15 relative) on every metric.  Not all
  bit-identical: XLA folds the division by the compile-time constant ``book_size`` into a
  multiplication by its reciprocal (<= 1 ulp on Return, MaxDrawdown, DailyTurnover), and SR's
  mean/variance are summed differently from polars'.
* float32, one day of 86,400 one-second samples: <= 1.2e-7 relative error added by the
  accumulation (vs float64 on the same float32 inputs); plain float32 sums gave ~1e-5.  The
  dominant float32 error is the rounding of ``E`` itself, i.e. ``ulp(|E|) / |dE|``: pass ``E`` as
  PnL since the start of the run (not including initial capital).  With |E| <= 600 and typical
  1 s changes of ~0.5 the total error stayed <= 1.4e-7; a drift-dominated lane whose per-second
  noise (1e-3) is ~20 ulp of |E| (~800) had SR off by 1.6% from the float64 value.

The state may be carried across successive scans over consecutive chunks of rows (time
chunking) as long as ``row_index`` keeps counting from the record's first row.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SECONDS_PER_DAY = 86_400
NS_PER_SECOND = 1_000_000_000

METRIC_NAMES = (
    # hftbacktest's summary() columns, in its order
    "SR",
    "Sortino",
    "Return",
    "MaxDrawdown",
    "DailyNumberOfTrades",
    "DailyTurnover",
    "ReturnOverMDD",
    "ReturnOverTrade",
    "MaxPositionValue",
    # extras
    "PnL",
    "Fees",
    "NumberOfTrades",
    "TradingValue",
    "MaxAbsPosition",
    "MaxPositionNotional",
    "NumSamples",
)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


class MetricsConfig(NamedTuple):
    """Static settings of the online metrics (close over it; every field is a Python scalar).

    resample_every: rows per resample window (e.g. 10 rows of 100 ms = 1 s).
    book_size: capital in quote currency; divides Return, MaxDrawdown and DailyTurnover.
    trading_days_per_year: annualisation factor of SR/Sortino; hftbacktest's default is 252 even
        for crypto markets that trade 365 days.
    interval_ns: decision interval in ns (one row).
    contract_multiplier: contract size; only used for ``MaxPositionNotional`` (the caller's
        equity already includes it; hftbacktest's MaxPositionValue does not).
    phase_rows: rows between the epoch-aligned start of row 0's resample window and row 0,
        ``(first_row_ns // interval_ns) % resample_every``; 0 when the record starts on a window
        boundary.  Use :func:`make_metrics_config` to derive it from timestamps.
    """

    resample_every: int
    book_size: float
    trading_days_per_year: float = 252.0
    interval_ns: int = 100_000_000
    contract_multiplier: float = 1.0
    phase_rows: int = 0


def make_metrics_config(
    *,
    interval_ns: int,
    resample_ns: int,
    book_size: float,
    first_row_ns: int = 0,
    trading_days_per_year: float = 252.0,
    contract_multiplier: float = 1.0,
) -> MetricsConfig:
    """Build a :class:`MetricsConfig` from times in ns.

    ``resample_ns`` (the hftbacktest/polars ``freq``) must be a whole number of rows.
    ``first_row_ns`` is the timestamp of row 0 (epoch ns); it fixes where the epoch-aligned
    windows cut the rows.  It need not be a multiple of ``interval_ns``: with rows at
    ``first_row_ns + i*interval_ns`` the window of row ``i`` is ``(first_row_ns // interval_ns +
    i) // resample_every`` either way.
    """
    interval_ns, resample_ns, first_row_ns = int(interval_ns), int(resample_ns), int(first_row_ns)
    if interval_ns <= 0 or resample_ns <= 0:
        raise ValueError("interval_ns and resample_ns must be positive")
    if resample_ns % interval_ns:
        raise ValueError(
            f"resample_ns={resample_ns} is not a whole number of rows of interval_ns={interval_ns}"
        )
    if book_size <= 0:
        raise ValueError("book_size must be positive")
    every = resample_ns // interval_ns
    return MetricsConfig(
        resample_every=every,
        book_size=float(book_size),
        trading_days_per_year=float(trading_days_per_year),
        interval_ns=interval_ns,
        contract_multiplier=float(contract_multiplier),
        phase_rows=(first_row_ns // interval_ns) % every,
    )


def resample_ns(config: MetricsConfig) -> int:
    """Resample period in ns (pass ``f"{resample_ns(config)}ns"`` to hftbacktest's resample)."""
    return int(config.resample_every) * int(config.interval_ns)


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


class SampleStats(NamedTuple):
    """Accumulators over the resampled equity series (one entry per committed sample).

    All money fields are quote currency.  ``n`` counts samples (int32); the sums run over the
    ``n - 1`` equity changes ``dE``, shifted by ``shift`` (the first ``dE``) and Kahan-compensated
    (``*_c`` hold the running compensation).
    """

    n: jax.Array
    e_first: jax.Array
    e_last: jax.Array
    shift: jax.Array
    s1: jax.Array
    s1_c: jax.Array
    s2: jax.Array
    s2_c: jax.Array
    neg2: jax.Array
    neg2_c: jax.Array
    peak: jax.Array
    mdd: jax.Array
    max_pos_value: jax.Array


class MetricsState(NamedTuple):
    """O(1) per-lane metrics state.

    ``samples`` holds the committed resample points.  The remaining fields track rows:
    ``rows`` rows seen (int32); ``open_window`` whether the latest row did not close its window
    (so :func:`metrics_finalize` must commit it as the last, partial, window); ``row_equity`` and
    ``row_pos_value`` that latest row's E and |position|*mid; ``*0`` the first row's equity and
    cumulative trades / traded value / fees; ``trades``, ``value``, ``fees`` the latest
    cumulative values; ``max_abs_pos`` max |position| over all rows (contracts).
    """

    samples: SampleStats
    rows: jax.Array
    open_window: jax.Array
    row_equity: jax.Array
    row_pos_value: jax.Array
    equity0: jax.Array
    trades0: jax.Array
    value0: jax.Array
    fees0: jax.Array
    trades: jax.Array
    value: jax.Array
    fees: jax.Array
    max_abs_pos: jax.Array


def metrics_init(dtype: Any = jnp.float32) -> MetricsState:
    """Empty state; ``dtype`` is the float type of every money/position accumulator."""
    z = jnp.zeros((), dtype)
    i0 = jnp.zeros((), jnp.int32)
    samples = SampleStats(
        n=i0, e_first=z, e_last=z, shift=z, s1=z, s1_c=z, s2=z, s2_c=z, neg2=z, neg2_c=z,
        peak=z, mdd=z, max_pos_value=z,
    )
    return MetricsState(
        samples=samples, rows=i0, open_window=jnp.zeros((), bool), row_equity=z, row_pos_value=z,
        equity0=z, trades0=z, value0=z, fees0=z, trades=z, value=z, fees=z, max_abs_pos=z,
    )


# --------------------------------------------------------------------------------------------
# Online update
# --------------------------------------------------------------------------------------------


def _kahan_add(total: jax.Array, comp: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Compensated ``total + x``; ``comp`` carries the low-order bits lost so far.

    XLA does not reassociate floating point (no fast-math by default), so the compensation
    survives compilation; tests/test_metrics.py checks this.
    """
    y = x - comp
    t = total + y
    return t, (t - total) - y


def _commit_sample(s: SampleStats, equity: jax.Array, pos_value: jax.Array) -> SampleStats:
    """Append one resample point (E and |position|*price of the window's last row)."""
    first = s.n == 0
    has_step = s.n >= 1
    d = equity - s.e_last  # meaningless when first; masked below
    shift = jnp.where(s.n == 1, d, s.shift)  # the first dE becomes the shift
    y = jnp.where(has_step, d - shift, 0)
    neg = jnp.where(has_step, jnp.minimum(d, 0), 0)
    s1, s1_c = _kahan_add(s.s1, s.s1_c, y)
    s2, s2_c = _kahan_add(s.s2, s.s2_c, y * y)
    neg2, neg2_c = _kahan_add(s.neg2, s.neg2_c, neg * neg)
    peak = jnp.where(first, equity, jnp.maximum(s.peak, equity))
    return SampleStats(
        n=s.n + 1,
        e_first=jnp.where(first, equity, s.e_first),
        e_last=equity,
        shift=shift,
        s1=s1, s1_c=s1_c, s2=s2, s2_c=s2_c, neg2=neg2, neg2_c=neg2_c,
        peak=peak,
        mdd=jnp.maximum(s.mdd, peak - equity),
        max_pos_value=jnp.where(first, pos_value, jnp.maximum(s.max_pos_value, pos_value)),
    )


def _tree_where(cond: jax.Array, a: Any, b: Any) -> Any:
    return jax.tree_util.tree_map(lambda x, y: jnp.where(cond, x, y), a, b)


def closes_window(config: MetricsConfig, row_index: jax.Array) -> jax.Array:
    """True where row ``row_index`` is the last row of its epoch-aligned resample window."""
    return (row_index + config.phase_rows + 1) % config.resample_every == 0


def metrics_update(
    config: MetricsConfig,
    state: MetricsState,
    *,
    row_index: jax.Array,
    equity: jax.Array,
    position: jax.Array,
    mid_price: jax.Array,
    num_trades_cum: jax.Array,
    trading_value_cum: jax.Array,
    fees_cum: jax.Array,
) -> MetricsState:
    """Fold one decision row into the state; call it on every row, in order.

    row_index: global row number (int; 0 = the first row, the one ``config.phase_rows`` is
        measured from; keep counting across chunks).
    equity: ``E = cash + position*mid*contract_multiplier - fees_cum`` after all fills up to this
        row, valued at the local mid (quote currency; prefer PnL since the start, see module doc).
    position: signed position (contracts).  mid_price: local mid (quote currency per contract).
    num_trades_cum, trading_value_cum, fees_cum: cumulative fill count, traded value (quote
        currency) and fees (quote currency) since the start.

    Acts on the resampled series only at window ends (``jnp.where``, no ``lax.cond``, so it
    vmaps into plain selects); the row-level fields update every row.  Kernels that know the
    window ends per row (not per lane) call :func:`metrics_commit` only there and
    :func:`metrics_row` on every row instead: the same result, without the commit's work on
    the rows that do not close a window.
    """
    dt = state.row_equity.dtype
    equity = jnp.asarray(equity, dt)
    pos_value = jnp.abs(jnp.asarray(position, dt)) * jnp.asarray(mid_price, dt)
    close = closes_window(config, row_index)
    state = _tree_where(close, metrics_commit(state, equity, pos_value), state)
    return metrics_row(state, close=close, equity=equity, position=position, mid_price=mid_price,
                       num_trades_cum=num_trades_cum, trading_value_cum=trading_value_cum, fees_cum=fees_cum)


def metrics_commit(state: MetricsState, equity: jax.Array, pos_value: jax.Array) -> MetricsState:
    """Commit one resample point: ``equity`` (E) and ``pos_value`` (|position| * mid) of the row
    that closes a window (:func:`closes_window`), before :func:`metrics_row` of that row."""
    return state._replace(samples=_commit_sample(state.samples, equity, pos_value))


def metrics_row(state: MetricsState, *, close, equity, position, mid_price, num_trades_cum, trading_value_cum,
                fees_cum) -> MetricsState:
    """The per-row part of :func:`metrics_update` (everything but the commit); ``close`` says
    whether this row closed its window (committed or not, it decides the last partial window)."""
    dt = state.row_equity.dtype
    equity = jnp.asarray(equity, dt)
    position = jnp.asarray(position, dt)
    mid_price = jnp.asarray(mid_price, dt)
    trades = jnp.asarray(num_trades_cum, dt)
    value = jnp.asarray(trading_value_cum, dt)
    fees = jnp.asarray(fees_cum, dt)
    first = state.rows == 0
    return MetricsState(
        samples=state.samples,
        rows=state.rows + 1,
        open_window=jnp.logical_not(close),
        row_equity=equity,
        row_pos_value=jnp.abs(position) * mid_price,
        equity0=jnp.where(first, equity, state.equity0),
        trades0=jnp.where(first, trades, state.trades0),
        value0=jnp.where(first, value, state.value0),
        fees0=jnp.where(first, fees, state.fees0),
        trades=trades,
        value=value,
        fees=fees,
        max_abs_pos=jnp.maximum(state.max_abs_pos, jnp.abs(position)),
    )


# --------------------------------------------------------------------------------------------
# Finalize
# --------------------------------------------------------------------------------------------


def metrics_finalize(config: MetricsConfig, state: MetricsState) -> dict[str, jax.Array]:
    """Metrics from a state (see the module docstring for definitions and edge cases).

    Every operation is elementwise, so a batched (vmapped) state can be passed directly.
    Units: Return, MaxDrawdown, DailyTurnover are fractions of ``book_size``; SR, Sortino,
    ReturnOverMDD, ReturnOverTrade are ratios; DailyNumberOfTrades is trades per day;
    MaxPositionValue / MaxPositionNotional, PnL, Fees, TradingValue are quote currency;
    MaxAbsPosition is contracts.
    """
    # The last row's window is still open unless that row closed it: commit it as polars would.
    s = _tree_where(
        state.open_window & (state.rows > 0),
        _commit_sample(state.samples, state.row_equity, state.row_pos_value),
        state.samples,
    )
    dt = s.e_last.dtype
    nan = jnp.asarray(jnp.nan, dt)
    book = jnp.asarray(config.book_size, dt)
    freq_s = float(resample_ns(config)) / NS_PER_SECOND
    sqrt_c = jnp.sqrt(jnp.asarray(SECONDS_PER_DAY / freq_s * config.trading_days_per_year, dt))

    m = (s.n - 1).astype(dt)  # number of equity changes
    has = s.n >= 1
    pnl_raw = jnp.where(has, s.e_last - s.e_first, nan)
    mdd_raw = jnp.where(has, s.mdd, nan)

    # mean(dE) telescopes to (E_last - E_first) / m: exact up to the inputs' rounding.
    mean = jnp.where(s.n >= 2, pnl_raw / m, nan)
    # Shifted sums: sum((dE-K)^2) - sum(dE-K)^2/m, cancellation only if |mean-K| >> std.
    m_safe = jnp.maximum(m, 1)
    ss = (s.s2 - s.s2_c) - jnp.square(s.s1 - s.s1_c) / m_safe
    var = jnp.maximum(ss, 0) / jnp.maximum(m - 1, 1)
    sr = jnp.where(s.n >= 3, mean / jnp.sqrt(var) * sqrt_c, nan)
    downside = jnp.sqrt((s.neg2 - s.neg2_c) / m_safe)
    sortino = jnp.where(s.n >= 2, mean / downside * sqrt_c, nan)

    # (m * freq) / 86400 in this order, as hftbacktest divides total seconds by 86400.
    days = jnp.where(s.n >= 2, m * jnp.asarray(freq_s, dt) / SECONDS_PER_DAY, nan)
    trades = state.trades - state.trades0
    value = state.value - state.value0

    return {
        "SR": sr,
        "Sortino": sortino,
        "Return": pnl_raw / book,
        "MaxDrawdown": mdd_raw / book,
        "DailyNumberOfTrades": trades / days,
        "DailyTurnover": value / book / days,
        "ReturnOverMDD": pnl_raw / mdd_raw,
        "ReturnOverTrade": pnl_raw / value,
        "MaxPositionValue": jnp.where(has, s.max_pos_value, nan),
        "PnL": state.row_equity - state.equity0,
        "Fees": state.fees - state.fees0,
        "NumberOfTrades": trades,
        "TradingValue": value,
        "MaxAbsPosition": state.max_abs_pos,
        "MaxPositionNotional": jnp.where(has, s.max_pos_value, nan)
        * jnp.asarray(config.contract_multiplier, dt),
        "NumSamples": s.n,
    }


# --------------------------------------------------------------------------------------------
# Plain numpy reference over a full record
# --------------------------------------------------------------------------------------------


def _last_in_window(timestamp_ns: np.ndarray, resample_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the last record in each non-empty epoch-aligned window, and window labels."""
    window = np.floor_divide(timestamp_ns, resample_ns)
    last = np.flatnonzero(np.diff(window) != 0)
    last = np.append(last, timestamp_ns.size - 1) if timestamp_ns.size else last
    return last, window[last] * resample_ns


def _divide(a: float, b: float) -> float:
    """IEEE division as numpy does it (±inf, NaN), never raising."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.divide(np.float64(a), np.float64(b)))


def metrics_from_record(
    timestamp_ns: np.ndarray,
    *,
    equity: np.ndarray,
    position: np.ndarray,
    mid_price: np.ndarray,
    num_trades_cum: np.ndarray,
    trading_value_cum: np.ndarray,
    fees_cum: np.ndarray,
    resample_ns: int,
    book_size: float,
    trading_days_per_year: float = 252.0,
    contract_multiplier: float = 1.0,
) -> dict[str, float]:
    """Reference metrics (float64) from a full record of rows, same keys as the online version.

    timestamp_ns: int64 epoch ns, nondecreasing (rows need not be regular).  equity: E per row,
    net of fees (quote currency); the other arrays as in :func:`metrics_update`.  NaN equity
    (e.g. an empty book) is handled as hftbacktest does: ``dE`` touching a NaN is dropped in
    SR/Sortino, Return uses the first and last non-NaN E, MDD and MaxPositionValue skip NaN.
    ``c`` and ``D`` come from the window labels, as in hftbacktest (which, unlike this function,
    truncates them to microseconds).
    """
    ts = np.asarray(timestamp_ns, dtype=np.int64)
    if ts.size and np.any(np.diff(ts) < 0):
        raise ValueError("timestamps must be nondecreasing")
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    equity, position, mid_price = f64(equity), f64(position), f64(mid_price)
    trades_cum, value_cum, fees_cum = f64(num_trades_cum), f64(trading_value_cum), f64(fees_cum)
    resample_ns = int(resample_ns)
    nan = float("nan")

    idx, labels = _last_in_window(ts, resample_ns)
    e = equity[idx]
    n = e.size
    trades = float(trades_cum[-1] - trades_cum[0]) if ts.size else 0.0
    value = float(value_cum[-1] - value_cum[0]) if ts.size else 0.0
    out = dict.fromkeys(METRIC_NAMES, nan)
    out.update(
        PnL=float(equity[-1] - equity[0]) if ts.size else 0.0,
        Fees=float(fees_cum[-1] - fees_cum[0]) if ts.size else 0.0,
        NumberOfTrades=trades,
        TradingValue=value,
        MaxAbsPosition=float(np.max(np.abs(position))) if ts.size else 0.0,
        NumSamples=n,
    )
    if n == 0:
        return out

    pos_value = np.abs(position[idx]) * mid_price[idx]
    finite_e = e[~np.isnan(e)]
    pnl = float(finite_e[-1] - finite_e[0]) if finite_e.size else nan
    mdd = float(np.max(np.maximum.accumulate(finite_e) - finite_e)) if finite_e.size else nan
    max_pv = float(np.nanmax(pos_value)) if np.any(~np.isnan(pos_value)) else nan
    out.update(
        Return=pnl / book_size,
        MaxDrawdown=mdd / book_size,
        ReturnOverMDD=_divide(pnl, mdd),
        ReturnOverTrade=_divide(pnl, value),
        MaxPositionValue=max_pv,
        MaxPositionNotional=max_pv * contract_multiplier,
    )
    if n < 2:
        return out

    c = SECONDS_PER_DAY / ((labels[1] - labels[0]) / NS_PER_SECOND) * trading_days_per_year
    days = (labels[-1] - labels[0]) / NS_PER_SECOND / SECONDS_PER_DAY
    de = np.diff(e)
    de = de[~np.isnan(de)]
    if de.size:
        mean = float(np.mean(de))
        downside = math.sqrt(float(np.mean(np.minimum(de, 0.0) ** 2)))
        out["Sortino"] = _divide(mean, downside) * math.sqrt(c)
        if de.size >= 2:
            out["SR"] = _divide(mean, float(np.std(de, ddof=1))) * math.sqrt(c)
    out.update(
        DailyNumberOfTrades=_divide(trades, days),
        DailyTurnover=_divide(value / book_size, days),
    )
    return out


def metrics_from_hbt_record(
    record: np.ndarray,
    *,
    resample_ns: int,
    book_size: float,
    trading_days_per_year: float = 252.0,
    contract_size: float = 1.0,
) -> dict[str, float]:
    """:func:`metrics_from_record` on a record with hftbacktest's Recorder fields.

    ``record`` is a structured array with ``timestamp`` (ns), ``price`` (local mid),
    ``position``, ``balance``, ``fee``, ``num_trades``, ``trading_value`` (cumulative).  Equity is
    formed in hftbacktest's order, ``(balance + position*price*contract_size) - fee``, so the
    float64 numbers agree with ``LinearAssetRecord(record).resample(...).stats(...)`` to rounding.
    """
    equity = (record["balance"] + record["position"] * record["price"] * contract_size) - record["fee"]
    return metrics_from_record(
        record["timestamp"],
        equity=equity,
        position=record["position"],
        mid_price=record["price"],
        num_trades_cum=record["num_trades"],
        trading_value_cum=record["trading_value"],
        fees_cum=record["fee"],
        resample_ns=resample_ns,
        book_size=book_size,
        trading_days_per_year=trading_days_per_year,
        contract_multiplier=contract_size,
    )
