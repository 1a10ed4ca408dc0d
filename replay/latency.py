"""Order latency models (numba): when a request reaches the exchange and a response the bot.

A model is a small tuple of arrays so numba can take it: :class:`LatencyModel` with
``const = [entry_ns, response_ns]`` and, for the interpolated model, the order-latency rows
``req_ts, exch_ts, resp_ts`` (int64 ns; hftbacktest's order-latency file layout).

* Constant: entry and response latency fixed.  A negative entry latency rejects every request
  before it reaches the exchange; the rejection reaches the bot after ``|entry|``.
* Interpolated (hftbacktest's ``IntpOrderLatency``, reference notes §4): entry latency at local
  time ``t`` interpolates ``exch_ts - req_ts`` between the rows bracketing ``t`` on ``req_ts``;
  when either row has ``exch_ts <= 0`` (a recorded rejection) the request is rejected and the bot
  hears of it after the interpolated ``resp_ts - req_ts``.  Response latency at exchange time
  ``t`` interpolates ``resp_ts - exch_ts`` on the accepted rows, keyed on ``exch_ts``.  Before
  the first / after the last row the end row's latency is used.  Interpolation truncates the
  product toward zero, as hftbacktest does.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np


class LatencyModel(NamedTuple):
    const: np.ndarray  # int64 [2]: entry_ns, response_ns (used when req_ts is empty)
    req_ts: np.ndarray  # int64 [R]
    exch_ts: np.ndarray  # int64 [R]
    resp_ts: np.ndarray  # int64 [R]
    # accepted rows only, for the response latency (keyed on exch_ts)
    acc_exch_ts: np.ndarray
    acc_resp_ts: np.ndarray


def constant_latency(entry_ns: int, response_ns: int) -> LatencyModel:
    """Fixed latencies in ns (entry may be negative: every request is rejected)."""
    if response_ns < 0:
        raise ValueError(f"response latency must be >= 0 ns, got {response_ns}")
    empty = np.zeros(0, np.int64)
    return LatencyModel(np.array([entry_ns, response_ns], np.int64), empty, empty, empty, empty, empty)


def interpolated_latency(rows: np.ndarray) -> LatencyModel:
    """Order-latency rows (``req_ts, exch_ts, resp_ts``; ns) as an interpolated model."""
    req = np.ascontiguousarray(rows["req_ts"], np.int64)
    exch = np.ascontiguousarray(rows["exch_ts"], np.int64)
    resp = np.ascontiguousarray(rows["resp_ts"], np.int64)
    if len(req) == 0:
        raise ValueError("order-latency table is empty")
    if np.any(np.diff(req) < 0):
        raise ValueError("order-latency rows must be sorted by req_ts")
    accepted = exch > 0
    if not accepted.any():
        raise ValueError("every order-latency row is a rejection")
    if np.any(resp[accepted] < exch[accepted]):
        raise ValueError("order-latency rows with resp_ts < exch_ts")
    return LatencyModel(np.zeros(2, np.int64), req, exch, resp, exch[accepted].copy(), resp[accepted].copy())


@numba.njit(cache=True, inline="always")
def _intp(x, x1, y1, x2, y2):
    if x2 == x1:
        return y1
    return y1 + np.int64(np.trunc((y2 - y1) / (x2 - x1) * (x - x1)))


@numba.njit(cache=True)
def entry_latency(model, ts):
    """Entry latency (ns) of a request sent at local time ``ts``; negative = rejected before the
    exchange, the rejection reaching the bot after ``-value`` ns."""
    req = model.req_ts
    n = req.shape[0]
    if n == 0:
        return model.const[0]
    exch = model.exch_ts
    resp = model.resp_ts
    if ts < req[0]:
        return exch[0] - req[0] if exch[0] > 0 else -(resp[0] - req[0])
    i = np.searchsorted(req, ts, side="right") - 1
    if i >= n - 1:
        return exch[n - 1] - req[n - 1] if exch[n - 1] > 0 else -(resp[n - 1] - req[n - 1])
    if exch[i] <= 0 or exch[i + 1] <= 0:
        return -_intp(ts, req[i], resp[i] - req[i], req[i + 1], resp[i + 1] - req[i + 1])
    return _intp(ts, req[i], exch[i] - req[i], req[i + 1], exch[i + 1] - req[i + 1])


@numba.njit(cache=True)
def response_latency(model, ts):
    """Response latency (ns) of a message leaving the exchange at exchange time ``ts``."""
    ex = model.acc_exch_ts
    n = ex.shape[0]
    if n == 0:
        return model.const[1]
    resp = model.acc_resp_ts
    if ts < ex[0]:
        return resp[0] - ex[0]
    i = np.searchsorted(ex, ts, side="right") - 1
    if i >= n - 1:
        return resp[n - 1] - ex[n - 1]
    return max(_intp(ts, ex[i], resp[i] - ex[i], ex[i + 1], resp[i + 1] - ex[i + 1]), 0)
