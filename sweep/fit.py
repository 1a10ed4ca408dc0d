"""The ``fit`` step: policy coefficients regressed on the train part before a sweep.

Experiment section::

    fit:
      horizon_s: 10                       # target: forward log return of the quoted mid over 10 s
      params: [beta, beta_1]              # each weighs the feature its slot names (signals[0], [1])

``mmsweep run`` fits before it sweeps: an ordinary least-squares regression, without intercept,
of ``y_t = log(mid[t + h] / mid[t])`` (the quoted instrument's local mid, ``h`` = ``horizon_s``
in rows) on the named feature columns ``x_t`` over the train part's rows (rows still warming up
on any of the features, and the last ``h`` rows whose target reaches past the train part, are
left out; a feature warming up over the whole train part is not fitted and its parameter stays 0,
with a warning).  Units follow the policy: ``fair_value`` prices ``mid * (1 + sum beta_i x_i)``, so
its betas are the coefficients themselves (fraction of price per unit of feature);
``linear_alpha`` forecasts in bps, so its ``coef_j`` are the coefficients times 1e4.

The fitted values become fixed strategy parameters of the run (``config.json`` holds them, and
``fit.fitted`` the regression facts), so verify, report and export see the same lanes.  The
parameters fitted must not also be swept or derived.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable

import numpy as np

from .errors import InputError

#: policy -> factor from a regression coefficient (return per feature unit) to the parameter unit
UNIT_FACTOR = {"fair_value": 1.0, "linear_alpha": 1e4}
#: policy -> its static option naming the feature each fitted parameter weighs, in slot order
SLOTS = {"fair_value": ("signals", ("beta", "beta_1", "beta_2", "beta_3")),
         "linear_alpha": ("features", ("coef_0", "coef_1", "coef_2", "coef_3"))}


@dataclasses.dataclass(frozen=True)
class Fit:
    horizon_s: float
    params: tuple[tuple[str, str], ...]  # (parameter, the feature it weighs)
    fitted: dict[str, Any] | None = None  # regression facts once applied (coefficients, r2, rows)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"horizon_s": self.horizon_s, "params": [p for p, _ in self.params]}
        if self.fitted is not None:
            out["fitted"] = self.fitted
        return out


def parse_fit(ctx, raw: Any, policy: str, static: dict[str, Any], varied: set[str]) -> Fit | None:
    """The ``fit`` section (see the module docstring); None when absent.  Each fitted parameter
    weighs the feature its slot names in the policy's static option (``beta_1`` weighs
    ``signals[1]``, ``coef_0`` weighs ``features[0]``)."""
    if raw is None:
        return None
    from .config import _Section

    sec = _Section(ctx, raw, "fit", ("horizon_s", "params", "fitted"), "coefficients fitted on the train part")
    if policy not in SLOTS:
        raise ctx.fail("fit", f"policy {policy!r} has no fittable coefficients; fit works with "
                       f"{', '.join(sorted(SLOTS))}")
    horizon = sec.number("horizon_s", what="forward-return horizon of the target, s", low=0, open_low=True,
                         high=86_400)
    option, slots = SLOTS[policy]
    feats = list(static.get(option) or ())
    params = sec.raw("params")
    if not isinstance(params, list) or not params or not all(isinstance(p, str) for p in params):
        raise ctx.fail("fit.params", f"give a list of parameters, e.g. [{slots[0]}, {slots[1]}]")
    out = []
    for i, name in enumerate(params):
        key = f"fit.params[{i}]"
        if name not in slots:
            raise ctx.fail(key, f"{name!r} is not a fittable parameter of {policy}; allowed: {', '.join(slots)}")
        j = slots.index(name)
        if j >= len(feats):
            raise ctx.fail(key, f"{name} weighs strategy.static.{option}[{j}], which is not set")
        if name in varied:
            raise ctx.fail(key, f"{name} is fitted and cannot be swept or derived too")
        out.append((name, feats[j]))
    if len({n for n, _ in out}) != len(out):
        raise ctx.fail("fit.params", "a parameter is listed twice")
    fitted = sec.raw("fitted")
    if fitted is not None and not isinstance(fitted, dict):
        raise ctx.fail("fit.fitted", "written by mmsweep run; leave it out")
    return Fit(float(horizon), tuple(out), fitted)


def regress(y: np.ndarray, x: np.ndarray) -> dict[str, Any]:
    """OLS of ``y`` [n] on ``x`` [n, k] without intercept: coefficients, standard errors, R^2."""
    n, k = x.shape
    if n <= k + 1:
        raise InputError(f"the fit has {n} usable train rows for {k} coefficient(s); use more data or a "
                         "shorter horizon", key="fit")
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    dof = n - k
    sigma2 = float(resid @ resid) / dof
    try:
        cov = sigma2 * np.linalg.inv(x.T @ x)
        se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    except np.linalg.LinAlgError:
        se = np.full(k, np.nan)
    ss_tot = float(y @ y)  # no intercept: R^2 against zero
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan")
    return {"coef": coef, "se": se, "r2": r2, "rows": int(n)}


def fit_frames(frames, exp, fit: Fit) -> dict[str, Any]:
    """The regression of :data:`Fit` on prepared frames; returns ``values`` (parameter units) and facts."""
    from .run import part_bounds

    lo, hi = part_bounds(frames, exp.split)["train"]
    h = int(round(fit.horizon_s * 1e9 / exp.interval_ns))
    if h < 1:
        raise InputError(f"fit.horizon_s {fit.horizon_s} s is shorter than one interval", key="fit.horizon_s")
    tick = frames.instrument.tick_size
    mid = (np.asarray(frames["bid"], np.float64) + np.asarray(frames["ask"], np.float64)) * 0.5 * tick
    names = list(frames.feature_names)
    warm = frames.meta.get("warmup_rows", {})
    stop = hi - h
    # A feature still warming up (zero-filled) over the whole train part cannot be fitted: its
    # coefficient stays 0 and the fit says so; the others are fitted after their warm-up.
    usable = [(p, f) for p, f in fit.params if lo + int(warm.get(f, 0)) < stop - 10]
    skipped = [p for p, f in fit.params if (p, f) not in usable]
    if not usable:
        raise InputError("every fitted feature is still warming up over the train part (" + ", ".join(
            f"{f}: {int(warm.get(f, 0)):,} rows" for _, f in fit.params) + f", train part {hi - lo:,} rows); "
            "use more data or shorter windows", key="fit")
    start = lo + max(int(warm.get(f, 0)) for _, f in usable)
    rows = np.arange(start, stop)
    y = np.log(mid[rows + h] / mid[rows])
    x = np.stack([frames.features[rows, names.index(f)] for _, f in usable], axis=1)
    reg = regress(y, x)
    factor = UNIT_FACTOR[exp.strategy.policy]
    values = {p: 0.0 for p in skipped}
    se = {p: float("nan") for p in skipped}
    values.update({p: float(c) * factor for (p, _), c in zip(usable, reg["coef"])})
    se.update({p: float(e) * factor for (p, _), e in zip(usable, reg["se"])})
    return {"values": {p: values[p] for p, _ in fit.params}, "se": {p: se[p] for p, _ in fit.params},
            "r2": reg["r2"], "rows": reg["rows"], "first_row": int(start), "horizon_rows": h, "skipped": skipped}


def apply_fit(exp, *, log: Callable[[str], None] = print):
    """``exp`` with its ``fit`` parameters fixed at the values fitted on the train part (itself
    when it has no fit, or the fit was already applied)."""
    fit = getattr(exp, "fit", None)
    if fit is None or fit.fitted is not None:
        return exp
    from .datasource import frames_at_once

    frames = frames_at_once(exp.data, exp.frame_spec())[0]
    facts = fit_frames(frames, exp, fit)
    params = dict(exp.strategy.params)
    params.update(facts["values"])
    log("fit: " + ", ".join(f"{p} = {v:.6g} (se {facts['se'][p]:.2g})" for p, v in facts["values"].items())
        + f"; R^2 {facts['r2']:.4f} over {facts['rows']:,} train rows, {fit.horizon_s:g} s forward returns")
    if facts["skipped"]:
        warnings.warn(f"fit: {', '.join(facts['skipped'])} left at 0: the feature(s) they weigh warm up over the "
                      "whole train part")
    fitted = {"values": facts["values"], "se": {p: (v if math.isfinite(v) else None) for p, v in facts["se"].items()},
              "r2": facts["r2"] if math.isfinite(facts["r2"]) else None, "rows": facts["rows"],
              "skipped": facts["skipped"]}
    return dataclasses.replace(exp, strategy=dataclasses.replace(exp.strategy, params=params),
                               fit=dataclasses.replace(fit, fitted=fitted))
