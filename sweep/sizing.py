"""Lanes whose orders round to zero lots: they would never trade, and say nothing about their
parameters.  Found before the sweep by asking each lane's policy for its quote (at a flat
position) at a few decision rows spread over the frames, with the rounding every engine uses
(:func:`mmsweep.kernels.orders.to_decision`)."""
from __future__ import annotations

from typing import Any

import numpy as np


def zero_size_lanes(policy, market, lanes: dict[str, np.ndarray], bid: np.ndarray, ask: np.ndarray,
                    features: np.ndarray) -> np.ndarray:
    """Lane indices whose both sides get 0 lots at every sampled row (``bid``, ``ask``: relative
    ticks [S]; ``features`` [S, K])."""
    from ..kernels.orders import to_decision
    from ..kernels.policies.base import Observation

    n = len(next(iter(lanes.values()))) if lanes else 1
    params = {k: np.asarray(v, np.float64) for k, v in lanes.items()}
    quoting = np.zeros(n, bool)
    with np.errstate(all="ignore"):
        for s in range(len(bid)):
            obs = Observation(np.float64(bid[s]), np.float64(ask[s]), np.asarray(features[s], np.float64))
            quote = policy(params, obs, np.zeros(n), market, np)
            d = to_decision(quote, np.zeros(n), market, np, np.float64, np.int64)
            lots = np.maximum(np.broadcast_to(d.bid_lots, (n,)), np.broadcast_to(d.ask_lots, (n,)))
            quoting |= lots > 0
    return np.flatnonzero(~quoting)


def describe_zero_lanes(idx: np.ndarray, lanes: dict[str, np.ndarray], policy_params: dict[str, Any],
                        lot_size: float, qty_unit: str) -> str:
    """One warning line naming the lanes (the first ten) and the sizing parameters of the first."""
    sizing = [k for k, spec in policy_params.items() if k in lanes and
              any(w in (spec.unit or "") for w in ("quote currency", "qty units", "orders", "contracts"))]
    first = int(idx[0])
    said = ", ".join(f"{k}={float(lanes[k][first]):g}" for k in sizing) or "its size parameters"
    listed = ", ".join(str(int(i)) for i in idx[:10]) + (f" and {len(idx) - 10} more" if len(idx) > 10 else "")
    return (f"{len(idx):,} lane(s) quote orders that round to 0 lots (a lot is {lot_size:g} {qty_unit}) at every "
            f"sampled decision, so they never trade: lanes {listed} (lane {first}: {said}); raise the order size")
