"""The ``tune`` section of an experiment: what ``mmsweep tune`` optimises and how.

Schema (defaults shown; only ``params`` is needed)::

    tune:
      params: [beta, relative_skew_bps]   # continuous lane parameters to tune (at most 8 in
                                          # forward mode is the efficient range; see gradient)
      bounds:                             # optional, per tuned parameter, closed [low, high]
        beta: [0, 3]                      # parameter units; null or .inf for an open side.
        relative_skew_bps: {low: 0, high: 20}
                                          # default: the range the policy declares (a parameter
                                          # without one is unbounded)
      starts: {top: 8}                    # the top 8 feasible lanes of the run (by rank); or
                                          # {points: [{beta: 1, relative_skew_bps: 2}, ...]}, or
                                          # {sobol: {n: 16, seed: 0}} inside finite bounds; the
                                          # parameters not tuned come from the starting lane
                                          # (points and samples: the run's rank-1 lane)
      steps: 100                          # optimiser steps (all starts at once, one compiled call)
      optimizer:
        name: adam                        # adam | sgd | rmsprop (optax)
        learning_rate: 0.1                # per step, in units of each parameter's scale (below)
        schedule: cosine                  # constant | cosine (to end_factor x) | exponential
        end_factor: 0.1                   #   (to end_factor x over the steps) | warmup_cosine
        warmup_steps: 0                   # warmup_cosine: linear warm-up steps
      temperature: {start: 2.0, end: 0.25}        # fill temperature, ticks, geometric annealing;
      position_temperature: {start: 1.0, end: 0.25}  # the position cap's, lots (a number =
                                                     # constant)
      objective: {metric: PnL, inventory_penalty: 0.0}
                                          # PnL | SR | Return on the train part (default: the
                                          # experiment's objective), minus lambda x mean(position^2)
                                          # (position in qty units; lambda in objective units per
                                          # qty unit squared)
      rounding: continuous                # continuous (quotes at fractional ticks: the gradient
                                          # of a smooth surrogate) | straight_through (whole
                                          # ticks forward, surrogate gradient backward)
      gradient: {mode: auto, segment_rows: 2048}   # auto (forward for <= 8 parameters, else
                                          # reverse) | forward | reverse (checkpointed segments)
      dtype: float64                      # float64 | float32 for the smooth kernel
      eval_every: 0                       # steps between hard-kernel scores of the iterates;
                                          # 0 = steps / 20.  The kept iterate of each start is
                                          # the one with the best hard train objective (the
                                          # start itself included)
      exact: {top: 3}                     # the best K tuned points and their starts replayed on
                                          # the exact engine, train and test (0 = none)

Bounds act through smooth reparametrisations, never by clipping: a parameter bounded on both
sides is ``low + (high - low) * sigmoid(u)``, on one side ``low + s * softplus(u)`` (or ``high -
s * softplus(u)``), unbounded ``s * u``; the optimiser moves ``u``.  The scale ``s`` is the
median magnitude of the starts (1 when they are all 0), so that a learning rate of 0.1 moves a
parameter by up to about 10 % of its typical size (a sigmoid one: 2.5 % of its range) per step
whatever its unit.  A start on a bound begins 2 % inside it (a transform never reaches its bound).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

#: objectives the smooth kernel can differentiate (kernels.smooth.OBJECTIVES)
OBJECTIVES = ("PnL", "SR", "Return")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "exponential", "warmup_cosine")
ROUNDINGS = ("continuous", "straight_through")
GRADIENT_MODES = ("auto", "forward", "reverse")
DTYPES = ("float64", "float32")
START_KINDS = ("top", "points", "sobol")
#: tuned parameters forward mode handles well (cost ~ (1 + n) x a forward run)
FORWARD_MAX = 8
MAX_STEPS = 100_000
MAX_STARTS = 4096


@dataclasses.dataclass(frozen=True)
class Starts:
    """Where the optimisation starts: the ``top`` N lanes of the run, given ``points``
    (tuned parameter -> value), or a ``sobol`` sample of ``n`` points (``seed``) in the bounds."""

    kind: str = "top"
    n: int = 8
    points: tuple[tuple[tuple[str, float], ...], ...] = ()
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "top":
            return {"top": self.n}
        if self.kind == "points":
            return {"points": [dict(p) for p in self.points]}
        return {"sobol": {"n": self.n, "seed": self.seed}}


@dataclasses.dataclass(frozen=True)
class Anneal:
    """A temperature annealed geometrically from ``start`` to ``end`` over the steps."""

    start: float
    end: float

    def at(self, step: int, steps: int) -> float:
        if steps <= 1 or self.start == self.end:
            return self.start
        return self.start * (self.end / self.start) ** (step / (steps - 1))

    def to_dict(self) -> dict[str, float]:
        return {"start": self.start, "end": self.end}


@dataclasses.dataclass(frozen=True)
class Optimizer:
    name: str = "adam"
    learning_rate: float = 0.1
    schedule: str = "cosine"
    end_factor: float = 0.1
    warmup_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Tune:
    """A validated ``tune`` section (see the module docstring).

    ``bounds`` holds every tuned parameter's resolved closed interval ``(low, high)`` (inf for an
    open side); ``given_bounds`` the ones written in the experiment (for :meth:`to_dict`)."""

    params: tuple[str, ...]
    bounds: tuple[tuple[str, float, float], ...]
    given_bounds: tuple[tuple[str, float | None, float | None], ...] = ()
    starts: Starts = Starts()
    steps: int = 100
    optimizer: Optimizer = Optimizer()
    temperature: Anneal = Anneal(2.0, 0.25)
    position_temperature: Anneal = Anneal(1.0, 0.25)
    metric: str = "PnL"
    inventory_penalty: float = 0.0
    rounding: str = "continuous"
    gradient: str = "auto"
    segment_rows: int = 2048
    dtype: str = "float64"
    eval_every: int = 0
    exact_top: int = 3
    written: bool = True  # False: defaults chosen by mmsweep tune (the experiment has no section)

    @property
    def mode(self) -> str:
        """The gradient mode used: ``auto`` resolved by the number of tuned parameters."""
        if self.gradient != "auto":
            return self.gradient
        return "forward" if len(self.params) <= FORWARD_MAX else "reverse"

    @property
    def every(self) -> int:
        """Steps between hard-kernel scores of the iterates."""
        return self.eval_every if self.eval_every > 0 else max(1, self.steps // 20)

    def bound(self, name: str) -> tuple[float, float]:
        for n, lo, hi in self.bounds:
            if n == name:
                return lo, hi
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"params": list(self.params)}
        if self.given_bounds:
            out["bounds"] = {n: [lo, hi] for n, lo, hi in self.given_bounds}
        out.update(starts=self.starts.to_dict(), steps=self.steps, optimizer=self.optimizer.to_dict(),
                   temperature=self.temperature.to_dict(), position_temperature=self.position_temperature.to_dict(),
                   objective={"metric": self.metric, "inventory_penalty": self.inventory_penalty},
                   rounding=self.rounding, gradient={"mode": self.gradient, "segment_rows": self.segment_rows},
                   dtype=self.dtype, eval_every=self.eval_every, exact={"top": self.exact_top})
        return out


def _anneal(ctx, raw: Any, key: str, default: Anneal, unit: str) -> Anneal:
    from .config import _number, _Section

    if raw is None:
        return default
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = _number(ctx, key, raw, what=f"constant temperature, {unit}", low=0, open_low=True)
        return Anneal(value, value)
    sec = _Section(ctx, raw, key, ("start", "end"), f"temperature annealed from start to end, {unit}")
    start = sec.number("start", default.start, what=f"temperature at the first step, {unit}", low=0, open_low=True)
    end = sec.number("end", default.end if not sec.has("start") or default.end <= start else start,
                     what=f"temperature at the last step, {unit}", low=0, open_low=True)
    return Anneal(start, end)


def _bound_pair(ctx, key: str, raw: Any) -> tuple[float | None, float | None]:
    """``[low, high]`` or ``{low:, high:}``; null or +-.inf for an open side."""
    from .config import _number, _Section, _show

    if isinstance(raw, list):
        if len(raw) != 2:
            raise ctx.fail(key, f"expected [low, high], got a list of {len(raw)}")
        raw = {"low": raw[0], "high": raw[1]}
    if not isinstance(raw, dict):
        raise ctx.fail(key, f"expected [low, high] or {{low:, high:}} in parameter units, got {_show(raw)}")
    sec = _Section(ctx, raw, key, ("low", "high"), "bounds of a tuned parameter")
    out = []
    for side in ("low", "high"):
        value = sec.value.get(side)
        if value is None:
            out.append(None)
            continue
        value = _number(ctx, sec.k(side), value, what="parameter units (.inf: open)", allow_inf=True)
        out.append(None if math.isinf(value) else value)
    lo, hi = out
    if lo is not None and hi is not None and not hi > lo:
        raise ctx.fail(sec.k("high"), f"high ({hi:g}) must be greater than low ({lo:g})")
    return lo, hi


def declared_bounds(spec) -> tuple[float, float]:
    """A policy parameter's declared range as a closed interval (inf for an open side)."""
    return float(spec.low), float(spec.high)


def parse_tune(ctx, raw: Any, policy_name: str, policy, active, sweep, objective_metric: str):
    """The ``tune`` section (see the module docstring); None when absent."""
    if raw is None:
        return None
    from .config import _integer, _number, _Section, _show

    sec = _Section(ctx, raw, "tune", ("params", "bounds", "starts", "steps", "optimizer", "temperature",
                                      "position_temperature", "objective", "rounding", "gradient", "dtype",
                                      "eval_every", "exact"), "gradient tuning")
    names = sec.raw("params")
    if not isinstance(names, list) or not names:
        example = ", ".join(_continuous(policy, active)[:2])
        raise ctx.fail("tune.params", f"required: a list of continuous parameters to tune, e.g. [{example}]; got "
                                      f"{_show(names)}")
    params = tuple(check_tunable(ctx, f"tune.params[{i}]", name, policy_name, policy, active, sweep)
                   for i, name in enumerate(names))
    if len(set(params)) != len(params):
        dup = next(p for p in params if params.count(p) > 1)
        raise ctx.fail("tune.params", f"{dup} is listed twice")

    # bounds: given ones checked against the declared range; the others are the declared range
    given: list[tuple[str, float | None, float | None]] = []
    raw_bounds = sec.raw("bounds")
    if raw_bounds is not None:
        if not isinstance(raw_bounds, dict):
            raise ctx.fail("tune.bounds", f"expected a mapping of tuned parameter -> [low, high], got {_show(raw_bounds)}")
        for name, pair in raw_bounds.items():
            key = f"tune.bounds.{name}"
            if name not in params:
                raise ctx.fail(key, f"'{name}' is not a tuned parameter (tune.params: {', '.join(params)})")
            lo, hi = _bound_pair(ctx, key, pair)
            spec = policy.params[name]
            d_lo, d_hi = declared_bounds(spec)
            for side, value in (("low", lo), ("high", hi)):
                if value is None:
                    continue
                if value < d_lo or value > d_hi:
                    raise ctx.fail(f"{key}", f"{side} {value:g} is outside what {name} takes: {spec.allowed()} "
                                             f"({spec.unit})")
            given.append((name, lo, hi))
    resolved = []
    for name in params:
        d_lo, d_hi = declared_bounds(policy.params[name])
        lo, hi = d_lo, d_hi
        for n, g_lo, g_hi in given:
            if n == name:
                lo = g_lo if g_lo is not None else d_lo
                hi = g_hi if g_hi is not None else d_hi
        resolved.append((name, float(lo), float(hi)))

    starts = _parse_starts(ctx, sec.raw("starts"), params, dict((n, (lo, hi)) for n, lo, hi in resolved))
    steps = sec.integer("steps", 100, what="optimiser steps", low=1)
    if steps > MAX_STEPS:
        raise ctx.fail("tune.steps", f"at most {MAX_STEPS:,} steps, got {steps:,}")

    osec = _Section(ctx, sec.raw("optimizer"), "tune.optimizer",
                    ("name", "learning_rate", "schedule", "end_factor", "warmup_steps"), "the optax optimiser")
    optimizer = Optimizer(
        name=osec.text("name", "adam", what="the optax optimiser", choices=OPTIMIZERS),
        learning_rate=osec.number("learning_rate", 0.1, what="step size, in units of each parameter's scale",
                                  low=0, open_low=True, high=100),
        schedule=osec.text("schedule", "cosine", what="learning-rate schedule", choices=SCHEDULES),
        end_factor=osec.number("end_factor", 0.1, what="final learning rate / initial (cosine, exponential)",
                               low=0, open_low=True, high=1),
        warmup_steps=osec.integer("warmup_steps", 0, what="linear warm-up steps (warmup_cosine)", low=0),
    )
    if optimizer.warmup_steps >= steps and optimizer.schedule == "warmup_cosine":
        raise ctx.fail("tune.optimizer.warmup_steps", f"{optimizer.warmup_steps} warm-up steps leave none of the "
                                                      f"{steps} steps to decay over")

    objsec = _Section(ctx, sec.raw("objective"), "tune.objective", ("metric", "inventory_penalty"),
                      "what the tuner maximises on the train part")
    if objsec.has("metric"):
        metric = objsec.text("metric", what="the smooth objective", choices=OBJECTIVES)
    elif objective_metric in OBJECTIVES:
        metric = objective_metric
    else:
        raise ctx.fail("tune.objective.metric", f"the experiment ranks on {objective_metric}, which the smooth kernel "
                                                f"does not differentiate; set tune.objective.metric to one of "
                                                f"{', '.join(OBJECTIVES)}")
    penalty = objsec.number("inventory_penalty", 0.0, what="lambda of lambda x mean(position^2), objective units "
                            "per qty unit squared", low=0)

    gsec = _Section(ctx, sec.raw("gradient"), "tune.gradient", ("mode", "segment_rows"), "how gradients are taken")
    esec = _Section(ctx, sec.raw("exact"), "tune.exact", ("top",), "exact-engine replay of the tuned points")
    return Tune(
        params=params, bounds=tuple(resolved), given_bounds=tuple(given), starts=starts, steps=steps,
        optimizer=optimizer,
        temperature=_anneal(ctx, sec.raw("temperature"), "tune.temperature", Anneal(2.0, 0.25), "ticks"),
        position_temperature=_anneal(ctx, sec.raw("position_temperature"), "tune.position_temperature",
                                     Anneal(1.0, 0.25), "lots"),
        metric=metric, inventory_penalty=penalty,
        rounding=sec.text("rounding", "continuous", what="how the smooth kernel rounds quotes to ticks",
                          choices=ROUNDINGS),
        gradient=gsec.text("mode", "auto", what="gradient mode", choices=GRADIENT_MODES),
        segment_rows=gsec.integer("segment_rows", 2048, what="rows per checkpointed segment (reverse mode)", low=1),
        dtype=sec.text("dtype", "float64", what="float type of the smooth kernel", choices=DTYPES),
        eval_every=sec.integer("eval_every", 0, what="steps between hard-kernel scores (0 = steps / 20)", low=0),
        exact_top=esec.integer("top", 3, what="best tuned points replayed on the exact engine", low=0),
    )


def _continuous(policy, active) -> list[str]:
    return [n for n in active if not policy.params[n].integer]


def check_tunable(ctx, key: str, name: Any, policy_name: str, policy, active, sweep) -> str:
    """``name`` must be a continuous, settable parameter of the policy that no tie derives."""
    from .config import _hint, _show

    if not isinstance(name, str):
        raise ctx.fail(key, f"expected a parameter name, got {_show(name)}")
    if name not in active:
        raise ctx.fail(key, f"policy '{policy_name}' has no parameter '{name}'{_hint(name, active)}; continuous "
                            f"parameters it can tune: {', '.join(_continuous(policy, active))}")
    spec = policy.params[name]
    if spec.integer:
        raise ctx.fail(key, f"{name} takes whole numbers ({spec.unit}) and cannot be tuned by gradient; "
                            f"tune continuous parameters ({', '.join(_continuous(policy, active))}) and sweep "
                            f"{name}")
    for tie in sweep.derived:
        if tie.target == name:
            raise ctx.fail(key, f"{name} is derived from {tie.source} (sweep.derived.{name}: {tie.text}); tune "
                                f"{tie.source} instead, or remove the tie")
    return name


def _parse_starts(ctx, raw: Any, params: tuple[str, ...], bounds: dict[str, tuple[float, float]]) -> Starts:
    from .config import _integer, _number, _Section, _show

    if raw is None:
        return Starts()
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in START_KINDS:
        raise ctx.fail("tune.starts", f"expected one of {{top: N}}, {{points: [...]}} or {{sobol: {{n:, seed:}}}}, "
                                      f"got {_show(raw)}")
    kind, value = next(iter(raw.items()))
    key = f"tune.starts.{kind}"
    if kind == "top":
        n = _integer(ctx, key, value, what="the run's best feasible lanes to start from", low=1)
        if n > MAX_STARTS:
            raise ctx.fail(key, f"at most {MAX_STARTS} starts, got {n}")
        return Starts("top", n)
    if kind == "sobol":
        sec = _Section(ctx, value, key, ("n", "seed"), "a Sobol sample of starts inside the bounds")
        n = sec.integer("n", what="number of starts", low=1)
        if n > MAX_STARTS:
            raise ctx.fail(sec.k("n"), f"at most {MAX_STARTS} starts, got {n}")
        for name in params:
            lo, hi = bounds[name]
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ctx.fail(f"tune.bounds.{name}", f"Sobol starts need finite bounds for every tuned parameter; "
                                                      f"{name} is bounded by [{lo:g}, {hi:g}]")
        return Starts("sobol", n, seed=sec.integer("seed", 0, what="Sobol scrambling seed", low=0))
    if not isinstance(value, list) or not value:
        raise ctx.fail(key, f"expected a list of points like {{{params[0]}: ...}}, got {_show(value)}")
    if len(value) > MAX_STARTS:
        raise ctx.fail(key, f"at most {MAX_STARTS} starts, got {len(value)}")
    points = []
    for i, point in enumerate(value):
        pkey = f"{key}[{i}]"
        sec = _Section(ctx, point, pkey, params, "one start: a value for every tuned parameter")
        out = []
        for name in params:
            v = sec.number(name, what="parameter units")
            check_start(ctx, sec.k(name), name, v, bounds[name], f"start {i}")
            out.append((name, v))
        points.append(tuple(out))
    return Starts("points", len(points), tuple(points))


def check_start(ctx_or_none, key: str, name: str, value: float, bound: tuple[float, float], which: str):
    """A start must be finite and inside the closed bounds of its parameter."""
    from .errors import InputError

    lo, hi = bound
    problem = None
    if not math.isfinite(value):
        problem = f"{which} has {name} = {value:g}; a tuned parameter must start finite"
    elif value < lo or value > hi:
        problem = (f"{which} has {name} = {value:g}, outside the bounds [{lo:g}, {hi:g}]; widen "
                   f"tune.bounds.{name} or choose other starts")
    if problem is None:
        return
    if ctx_or_none is not None:
        raise ctx_or_none.fail(key, problem)
    raise InputError(problem, key=key)
