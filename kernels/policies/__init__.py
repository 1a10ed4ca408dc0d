"""Quoting policies (DESIGN §3) and their registry.

Every policy module exposes:

* ``quote(params, obs, position, market, xp, static=None) -> Quote`` — the contract of
  :mod:`.base`, plus an optional ``static`` mapping of non-traced config (feature names);
  ``static=None`` uses the defaults.  Use :func:`bind` to get a function with exactly the
  contract signature for given static config.
* ``PARAMS`` — ``{name: (default or None if required, unit, description)}``: the numeric,
  sweepable parameters (traced inside the kernel).
* ``STATIC`` — ``{name: (default, description)}``: static config (feature names, VAMP depth),
  fixed per experiment, never traced.
* ``FEATURES(static=None, market=None) -> tuple[str, ...]`` — the feature columns it reads.
* optionally ``validate(params, static=None)`` — checks on concrete parameter values.

Quote fields come back as ``xp`` floats holding whole numbers for ticks/step/levels (the
kernel casts); prices are rounded conservatively (bids down, asks up) and clamped to the touch.
"""
from __future__ import annotations

from functools import partial
from types import ModuleType
from typing import Any, Callable, Mapping

import numpy as np

from . import avellaneda_stoikov, fair_value, grid, linear_alpha, vamp_reference
from ._common import static_config
from .base import Invariants, Market, Observation, Params, Quote

POLICIES: dict[str, ModuleType] = {
    "grid": grid,
    "fair_value": fair_value,
    "avellaneda_stoikov": avellaneda_stoikov,
    "linear_alpha": linear_alpha,
    "vamp_reference": vamp_reference,
}

__all__ = ["POLICIES", "get_policy", "resolve_params", "resolve_static", "required_features",
           "bind", "lane_invariants", "Market", "Observation", "Quote", "Params"]


def get_policy(name: str) -> ModuleType:
    """The policy module called ``name``; KeyError lists the known names."""
    try:
        return POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None


def resolve_static(name: str, static: Mapping[str, Any] | None = None) -> dict:
    """Static config for policy ``name`` with defaults filled; KeyError on unknown keys."""
    return static_config(get_policy(name).STATIC, static)


def resolve_params(name: str, params: Mapping[str, Any], static: Mapping[str, Any] | None = None) -> dict:
    """Parameters for policy ``name`` with defaults filled.

    Values may be scalars or arrays of sweep values (not inspected beyond ``validate``).
    Raises KeyError for unknown or missing required parameters, ValueError from the policy's
    ``validate``.
    """
    module = get_policy(name)
    unknown = set(params) - set(module.PARAMS)
    if unknown:
        raise KeyError(f"unknown parameter(s) {sorted(unknown)} for policy {name!r}; "
                       f"known: {sorted(module.PARAMS)}")
    missing = [p for p, (default, *_rest) in module.PARAMS.items() if default is None and p not in params]
    if missing:
        raise KeyError(f"policy {name!r} needs parameter(s) {missing}")
    out = {p: params.get(p, spec[0]) for p, spec in module.PARAMS.items()}
    if hasattr(module, "validate"):
        module.validate(out, static)
    return out


def lane_invariants(name: str, lanes: Mapping[str, Any]) -> Invariants:
    """What policy ``name`` keeps constant over every decision of these lanes (arrays of swept
    values, unset parameters at their defaults): the kernel shortcuts it allows."""
    module = get_policy(name)
    n = max((np.size(v) for v in lanes.values()), default=1)
    full = {p: np.broadcast_to(np.asarray(lanes.get(p, spec[0] if spec[0] is not None else np.nan), np.float64), (n,))
            for p, spec in module.PARAMS.items()}
    return module.invariants(full)


def required_features(name: str, static: Mapping[str, Any] | None = None,
                      market: Market | None = None) -> tuple[str, ...]:
    """Feature columns policy ``name`` reads under ``static`` config."""
    return tuple(get_policy(name).FEATURES(static, market))


def bind(name: str, static: Mapping[str, Any] | None = None) -> Callable[..., Quote]:
    """``quote`` of policy ``name`` with its static config closed over, i.e. a function
    ``(params, obs, position, market, xp) -> Quote`` (static config is checked now)."""
    module = get_policy(name)
    resolved = resolve_static(name, static)
    module.FEATURES(resolved, None)  # validates feature lists eagerly
    return partial(module.quote, static=resolved)
