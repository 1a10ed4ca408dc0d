"""The synthetic market over days and months, generated piece by piece in bounded memory.

:func:`synthetic_pieces` yields the market of ``days`` days as consecutive pieces of
``piece_hours`` (``{instrument name: Events}`` each), with the same model as
:func:`mmsweep.sweep.data.synthetic.synthetic_market` and the same event loop, resumed: every
instrument's book, Hawkes excitation, pending events, feed queue and random stream carry from one
piece to the next, so the pieces join into one continuous market (the book is built once, by the
snapshot at the very start).

The latent price is generated day by day with its stochastic-volatility factors and log-price
carried across days; each day's variance path is normalised over that day (as a market of one
day is), so ``volatility_annual`` and ``trades_per_s`` are each day's realised means and every
day is as busy as a one-day market.  Memory: the latent path of two days (~280 MB at the 10 ms
default step) and one piece of events (a synthetic hour of futures + spot is ~9 M rows, 360 MB).

Deterministic: the same config, days and piece length give the same pieces (the latent path
does not depend on the piece length; the events do not either, since the loop is resumed
exactly).  A multi-day market is *not* the same as ``synthetic_market`` over the same hours:
that one normalises the variance over its whole span and draws its latent path in one run.
"""
from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numba
import numpy as np

from ..errors import InputError
from .events import EVENT_DTYPE, Events, Instrument, sort_events
from .synthetic import (
    GENERATOR_VERSION, NS_PER_S, SECONDS_PER_YEAR, _COUNTERS, _PIECE_ROWS, LatentPath, SynthConfig, _advance,
    _halflife_phi, _initial_state, _is_sorted, _join, _normal, _params, _rng_state, _row_capacity, _uniform,
    _validate_in_slices,
)
from .synthetic import _S_STEP

STREAM_VERSION = "mmsweep-synthetic-stream-v1"
DAY_NS = 86_400 * NS_PER_S
MAX_DAYS = 3_660


@numba.njit(cache=True)
def _latent_block(rng, carry, n, var_step, slow_std, slow_phi, fast_std, fast_phi, jump_p, jump_std):
    """``n`` latent steps continuing ``carry = [slow, fast, x]`` (updated in place): the variance
    path normalised to mean 1 over the block, then the log-price.  Returns ``(log_price, var_mult)``."""
    var_mult = np.empty(n)
    slow, fast = carry[0], carry[1]
    slow_innov = slow_std * math.sqrt(max(1.0 - slow_phi * slow_phi, 0.0))
    fast_innov = fast_std * math.sqrt(max(1.0 - fast_phi * fast_phi, 0.0))
    total = 0.0
    for i in range(n):
        var_mult[i] = math.exp(2.0 * (slow + fast))
        total += var_mult[i]
        slow = -slow_std * slow_std + (slow + slow_std * slow_std) * slow_phi + slow_innov * _normal(rng)
        fast = -fast_std * fast_std + (fast + fast_std * fast_std) * fast_phi + fast_innov * _normal(rng)
    scale = n / total
    log_price = np.empty(n)
    x = carry[2]
    for i in range(n):
        var_mult[i] *= scale
        log_price[i] = x
        s2 = var_step * var_mult[i]
        x += math.sqrt(s2) * _normal(rng) - 0.5 * s2
        if _uniform(rng) < jump_p:
            x += jump_std * _normal(rng)
    carry[0], carry[1], carry[2] = slow, fast, x
    return log_price, var_mult


@numba.njit(cache=True)
def _stationary_start(rng, slow_std, fast_std):
    """``[slow, fast, x]``: both log-volatility factors drawn from their stationary law, x = 0."""
    slow = -slow_std * slow_std + slow_std * _normal(rng)
    fast = -fast_std * fast_std + fast_std * _normal(rng)
    return np.array([slow, fast, 0.0])


class _Latent:
    """The latent path as day blocks, generated on demand; windows of it as :class:`LatentPath`."""

    def __init__(self, config: SynthConfig, seed: np.random.SeedSequence, days: float) -> None:
        self.config = config
        self.step_ns = max(int(round(config.latent_step_ms * 1e6)), 1)
        step_s = self.step_ns / NS_PER_S
        lag_ns = int(round(config.lead_lag_ms * 1e6))
        ahead_ns = max(int(round(i.informed_horizon_ms * 1e6)) if i.informed_share > 0 else 0
                       for i in config.instruments)
        self.pre = -(-lag_ns // self.step_ns) + 2
        self.ahead = -(-ahead_ns // self.step_ns) + 2
        self.day_steps = -(-DAY_NS // self.step_ns)
        self.origin_ns = config.start_ns - self.pre * self.step_ns
        self.rng = _rng_state(seed)
        self.carry = _stationary_start(self.rng, config.sv_slow_std, config.sv_fast_std)
        self.args = (config.volatility_annual ** 2 / SECONDS_PER_YEAR * step_s,
                     config.sv_slow_std, _halflife_phi(config.sv_slow_halflife_s, step_s),
                     config.sv_fast_std, _halflife_phi(config.sv_fast_halflife_s, step_s),
                     config.jump_per_hour / 3600.0 * step_s, config.jump_std_bp * 1e-4)
        self.blocks: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # block -> (first step, X, var)
        self.next_block = 0
        self.next_step = 0
        self.x0: float | None = None

    def _extend(self) -> None:
        b = self.next_block
        n = self.pre + self.day_steps if b == 0 else self.day_steps
        x, v = _latent_block(self.rng, self.carry, n, *self.args)
        if self.x0 is None:  # X(start) = 0: base_price is the price at the start
            self.x0 = float(x[self.pre])
        self.blocks[b] = (self.next_step, x - self.x0, v)
        self.next_block += 1
        self.next_step += n

    def window(self, t0_ns: int, t1_ns: int) -> LatentPath:
        """The path covering exchange times ``[t0 - lag, t1 + informed horizon]``."""
        lo = max(0, (t0_ns - self.origin_ns) // self.step_ns - self.pre)
        hi = (t1_ns - self.origin_ns) // self.step_ns + self.ahead + 2
        while self.next_step < hi:
            self._extend()
        xs, vs = [], []
        for b in sorted(self.blocks):
            first, x, v = self.blocks[b]
            a, z = max(lo, first), min(hi, first + len(x))
            if a < z:
                xs.append(x[a - first:z - first])
                vs.append(v[a - first:z - first])
        for b in [b for b in self.blocks if self.blocks[b][0] + len(self.blocks[b][1]) <= lo]:
            del self.blocks[b]  # never needed again
        return LatentPath(self.origin_ns + lo * self.step_ns, self.step_ns, np.concatenate(xs), np.concatenate(vs))


def synthetic_pieces(config: SynthConfig, days: float, *, piece_hours: float = 1.0, validate: bool = True,
                     threads: int | None = None) -> Iterator[dict[str, Events]]:
    """The synthetic market of ``days`` days from ``config.start_ns`` (``config.hours`` is not
    used), as consecutive pieces of ``piece_hours`` hours (the last one shorter when they do not
    divide the span): ``{instrument name: Events}``, each validated and sorted."""
    if not (isinstance(days, (int, float)) and math.isfinite(days) and 0 < days <= MAX_DAYS):
        raise InputError(f"days must be a number in (0, {MAX_DAYS}], got {days!r}", key="days")
    if not (isinstance(piece_hours, (int, float)) and math.isfinite(piece_hours) and 0 < piece_hours <= 24 * 31):
        raise InputError(f"piece_hours must be a number in (0, 744], got {piece_hours!r}", key="piece_hours")
    span_ns = int(round(days * DAY_NS))
    piece_ns = int(round(piece_hours * 3600 * NS_PER_S))
    streams = np.random.SeedSequence(config.seed).spawn(1 + len(config.instruments))
    latent = _Latent(config, streams[0], days)
    piece_config = dataclasses.replace(config, hours=min(piece_hours, days * 24))
    first = latent.window(config.start_ns, min(config.start_ns + piece_ns, config.start_ns + span_ns))
    gens = []
    for inst, seed in zip(config.instruments, streams[1:]):
        p = _params(config, inst)
        si, sf, bq, aq, rng = _initial_state(config, p, first, seed)
        gens.append([inst, p, si, sf, bq, aq, rng, first.origin_ns])
    end_ns = config.start_ns + span_ns
    t0 = config.start_ns
    k = 0
    workers = max(1, min(len(gens), threads or 2))
    while t0 < end_ns:
        t1 = min(t0 + piece_ns, end_ns)
        path = latent.window(t0, t1)

        def run(g, t1=t1, path=path):
            inst, p, si, sf, bq, aq, rng, origin = g
            si[_S_STEP] += (origin - path.origin_ns) // path.step_ns  # the same latent step, new window
            g[7] = path.origin_ns
            before = si.copy()
            pieces, finished = [], False
            rows = _row_capacity(piece_config, inst)
            while not finished:
                out = np.empty(rows, EVENT_DTYPE)
                pos, finished = _advance(p, si, sf, bq, aq, rng, path.log_price, path.var_mult, path.origin_ns,
                                         path.step_ns, t1, out, 0)
                out.resize(pos, refcheck=False)
                pieces.append(out)
                rows = _PIECE_ROWS
            table = _join(pieces)
            if not _is_sorted(table["local_ts"], table["exch_ts"]):
                table = sort_events(table)
            if validate and len(table):
                _validate_in_slices(table, source=f"synthetic:{inst.name}")
            counts = {name: int(si[slot] - before[slot]) for name, slot in _COUNTERS.items()}
            meta = {"generator": GENERATOR_VERSION, "stream": STREAM_VERSION, "instrument": inst.name,
                    "seed": int(config.seed), "piece": k, "start_ns": int(t0), "end_ns": int(t1), "days": days,
                    "piece_hours": piece_hours, "rows": int(len(table)), "counts": counts}
            return Events(table, Instrument(inst.symbol, inst.tick_size, inst.lot_size, 1.0, inst.venue),
                          source=f"synthetic ({days:g} days, seed {config.seed})", meta=meta)

        if workers == 1:
            results = [run(g) for g in gens]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(run, gens))
        yield {g[0].name: ev for g, ev in zip(gens, results)}
        del results
        t0 = t1
        k += 1
