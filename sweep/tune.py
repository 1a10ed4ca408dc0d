"""``mmsweep tune``: gradient tuning of a run's best points on the smooth kernel, re-scored on the
hard kernel and the exact engine.

``mmsweep tune RUN_DIR`` (or ``EXPERIMENT.yaml``: the experiment is run first, resuming a finished
run) reads the experiment's ``tune`` section (:mod:`mmsweep.sweep.tune_config`; without one, the
swept continuous parameters are tuned with the defaults) and:

1. picks the starts: the run's top N feasible lanes with distinct train outcomes (or the given
   points, or a Sobol sample inside the bounds; their untuned parameters are the rank-1 lane's);
2. maximises the smooth objective of the train part (:mod:`mmsweep.kernels.smooth`: the
   experiment's PnL, SR or Return with fills relaxed to sigmoids of the fill temperature, minus
   ``lambda * mean(position**2)``) with an optax optimiser, all starts as lanes of one compiled
   call per step (the temperatures are traced, so annealing does not recompile).  Each bounded
   parameter moves through a sigmoid/softplus reparametrisation (:class:`Transform`); gradients
   are never clipped.  Derived parameters (``sweep.derived``) follow their tuned source, and
   their gradient flows back to it by the chain rule;
3. scores every ``eval_every``-th iterate of every start on the hard kernel (the sweep's own
   kernel, dtype and order slots) and keeps, per start, the iterate with the best hard train
   objective -- the start itself included, so a tuned point never scores below its start on
   the hard train objective; that choice uses the train part only;
4. scores the kept points and their starts on every part (train, test, blocks) with the hard
   kernel, and on both parts with the smooth kernel at the final temperatures;
5. replays the best ``exact.top`` tuned points and their starts on the exact engine, train and
   test, through :func:`mmsweep.sweep.verify.replay_and_score` (the path ``mmsweep verify``
   takes), with the experiment's ``verify`` settings.

Writes into the run folder (each file atomically, the folder locked)::

    tune.parquet        one row per start: tuned (rank of the tuned point by hard train
                        objective, 1 = best; null if it misses the constraints), start,
                        start_lane (null for points and samples), start_<p> for every tuned p,
                        every lane parameter at its tuned value, step (the kept iterate; 0 =
                        the start), objective (the tuned metric), smooth_{start,tuned}_{train,test}
                        (smooth objective at the final temperatures), hard_{start,tuned}_{train,test}
                        and exact_{start,tuned}_{train,test} (the objective minus the inventory
                        penalty), feasible, train_<M>/test_<M>/... (the hard metrics of the
                        tuned point, as results.parquet names them), start_train_<M>/...
                        (its start's), exact_train_<M>/exact_test_<M>/exact_start_<part>_<M>
                        (NaN where not replayed), exact_failure
    tune.json           settings, transforms, timings (compile, steps/s, lane-steps/s), the
                        per-step trace (objective per start, temperatures, learning rate),
                        machine and load
    plots/tune_objective.png   the smooth train objective over the steps for each start, the
                        hard train objective of the scored iterates, the temperature

Units: PnL in the quote currency of a linear contract (the coin of an inverse one), SR
annualised (dimensionless), Return a fraction of ``metrics.book_size``; temperatures in ticks
(fills) and lots (the position cap).  ``mmsweep export RUN_DIR --tuned K`` writes tuned point K
as an experiment that reruns to its hard metrics.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError
from .tune_config import OBJECTIVES, check_start, check_tunable

#: metrics of the exact engine kept per replayed point (all of the sweep's metric columns)
#: a start on (or within this share of its range from) a bound is moved this far inside: the
#: transforms never reach their bounds, and a sigmoid saturated at 1e-6 of its range would not move
_NUDGE = 0.02


# --------------------------------------------------------------------------------------------
# Reparametrisation
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Transform:
    """``x = f(u)`` for one tuned parameter: ``sigmoid`` on ``[low, high]``, ``softplus`` above
    ``low`` (``softplus_upper``: below ``high``), ``linear`` when unbounded; ``scale`` is the
    parameter's typical size (its unit) for the one-sided and unbounded forms."""

    name: str
    kind: str
    low: float
    high: float
    scale: float

    @staticmethod
    def make(name: str, low: float, high: float, starts: np.ndarray) -> "Transform":
        finite = np.abs(starts[np.isfinite(starts)])
        scale = float(np.median(finite)) if finite.size else 0.0
        scale = scale if scale > 0 else 1.0
        if math.isfinite(low) and math.isfinite(high):
            return Transform(name, "sigmoid", low, high, high - low)
        if math.isfinite(low):
            return Transform(name, "softplus", low, high, scale)
        if math.isfinite(high):
            return Transform(name, "softplus_upper", low, high, scale)
        return Transform(name, "linear", low, high, scale)

    def x(self, u: np.ndarray) -> np.ndarray:
        if self.kind == "sigmoid":
            return self.low + (self.high - self.low) * _sigmoid(u)
        if self.kind == "softplus":
            return self.low + self.scale * np.logaddexp(0.0, u)
        if self.kind == "softplus_upper":
            return self.high - self.scale * np.logaddexp(0.0, u)
        return self.scale * u

    def dx_du(self, u: np.ndarray) -> np.ndarray:
        if self.kind == "sigmoid":
            s = _sigmoid(u)
            return (self.high - self.low) * s * (1.0 - s)
        if self.kind == "softplus":
            return self.scale * _sigmoid(u)
        if self.kind == "softplus_upper":
            return -self.scale * _sigmoid(u)
        return np.full_like(u, self.scale)

    def u(self, x: np.ndarray) -> np.ndarray:
        """The inverse; a start on or next to a bound is moved :data:`_NUDGE` inside (of the range
        for a sigmoid, of the scale for a softplus); the hard scores of the start use its own value."""
        x = np.asarray(x, np.float64)
        if self.kind == "sigmoid":
            f = np.clip((x - self.low) / (self.high - self.low), _NUDGE, 1.0 - _NUDGE)
            return np.log(f) - np.log1p(-f)
        if self.kind in ("softplus", "softplus_upper"):
            y = (x - self.low) / self.scale if self.kind == "softplus" else (self.high - x) / self.scale
            y = np.maximum(y, _NUDGE)
            return y + np.log(-np.expm1(-y))  # softplus^-1
        return x / self.scale

    def describe(self) -> str:
        if self.kind == "sigmoid":
            return f"{self.name} = {self.low:g} + {self.high - self.low:g} * sigmoid(u)"
        if self.kind == "softplus":
            return f"{self.name} = {self.low:g} + {self.scale:.4g} * softplus(u)"
        if self.kind == "softplus_upper":
            return f"{self.name} = {self.high:g} - {self.scale:.4g} * softplus(u)"
        return f"{self.name} = {self.scale:.4g} * u"


def _sigmoid(u):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(u, np.float64)))


# --------------------------------------------------------------------------------------------
# Which tune settings, which starts
# --------------------------------------------------------------------------------------------


class _CliCtx:
    """A parse context whose errors name the command-line option."""

    source = ""

    def __init__(self, option: str) -> None:
        self.option = option

    def fail(self, key: str, message: str) -> InputError:
        return InputError(message, key=self.option if not key.startswith("tune.") or key.startswith("tune.params")
                          else key)


def resolve_tune(exp, *, params: list[str] | None = None, steps: int | None = None, starts: int | None = None,
                 exact_top: int | None = None):
    """The experiment's ``tune`` section with command-line overrides; an experiment without one
    tunes its swept continuous parameters with the defaults."""
    from .tune_config import parse_tune

    tune = exp.tune
    if tune is None:
        if params is None:
            swept = [n for n in exp.sweep.names if not exp.policy.params[n].integer]
            if not swept:
                raise InputError("the experiment has no tune section and sweeps no continuous parameter: add "
                                 "tune.params to it, or pass --params", key="tune.params")
            params = swept
        raw: dict[str, Any] = {"params": list(params)}
    else:
        raw = tune.to_dict()
        if params is not None:
            raw["params"] = list(params)
            raw["bounds"] = {k: v for k, v in (raw.get("bounds") or {}).items() if k in params}
            if raw["starts"].get("points") is not None:
                raise InputError("--params changes the tuned parameters, but tune.starts.points names the old "
                                 "ones; edit the experiment instead", key="--params")
    if steps is not None:
        raw["steps"] = steps
    if starts is not None:
        raw["starts"] = {"top": starts}
    if exact_top is not None:
        raw["exact"] = {"top": exact_top}
    scope = exp.policy.active(exp.strategy.static)
    ctx = _CliCtx("--params") if params is not None else _CliCtx("tune")
    try:
        out = parse_tune(ctx, raw, exp.strategy.policy, exp.policy, scope, exp.sweep, exp.objective.metric)
    except InputError as exc:
        if exc.key in (None, "tune") and tune is None:
            raise InputError(exc.message, key="tune") from None
        raise
    return dataclasses.replace(out, written=tune is not None)


@dataclasses.dataclass
class StartSet:
    """The starting points: every lane parameter ``[N]`` and where each came from."""

    params: dict[str, np.ndarray]
    lane: np.ndarray  # [N] lane id of the run, -1 for points / samples
    label: list[str]


def choose_starts(run, tune) -> StartSet:
    """The starts of ``tune`` in run ``run`` (an :class:`mmsweep.sweep.export.RunFolder`)."""
    import polars as pl

    results = run.results
    names = run.experiment.param_names
    ranked = results.filter(pl.col("feasible") & pl.col("rank").is_not_null()).sort("rank")
    where = str(run.path / "results.parquet")
    if tune.starts.kind == "top":
        if ranked.height == 0:
            raise InputError("no lane of the run meets the constraints, so there is no top lane to start from; start "
                             "from tune.starts.points or tune.starts.sobol", source=where, key="tune.starts.top")
        metric = f"train_{run.experiment.objective.metric}"
        keys = [c for c in (metric, "train_PnL", "train_NumberOfTrades") if c in ranked.columns]
        distinct = ranked.unique(subset=keys, keep="first", maintain_order=True)
        picked = distinct.head(tune.starts.n)
        if picked.height < tune.starts.n:
            warnings.warn(f"the run has {picked.height} feasible lane(s) with distinct train outcomes; tuning from "
                          f"{picked.height} start(s), not {tune.starts.n}")
        params = {k: picked[k].to_numpy().astype(np.float64) for k in names}
        lanes = picked["lane"].to_numpy().astype(np.int64)
        label = [f"lane {int(lane)} (rank {int(r)})" for lane, r in zip(lanes, picked["rank"].to_numpy())]
    else:
        if ranked.height == 0:
            raise InputError("no lane of the run meets the constraints: the untuned parameters of the starts come "
                             "from its rank-1 lane", source=where, key="tune.starts")
        best = ranked.row(0, named=True)
        if tune.starts.kind == "points":
            values = {p: np.array([dict(pt)[p] for pt in tune.starts.points], np.float64) for p in tune.params}
        else:
            from .grids import unit_samples

            unit = unit_samples("sobol", tune.starts.n, len(tune.params), tune.starts.seed)
            values = {}
            for j, p in enumerate(tune.params):
                lo, hi = tune.bound(p)
                values[p] = lo + (hi - lo) * unit[:, j]
        n = len(next(iter(values.values())))
        params = {k: (values[k] if k in values else np.full(n, float(best[k]), np.float64)) for k in names}
        lanes = np.full(n, -1, np.int64)
        label = [f"{tune.starts.kind} {i}" for i in range(n)]
    params = _apply_ties(run.experiment, params, tune.params)
    for p in tune.params:
        for i, value in enumerate(params[p]):
            check_start(None, f"tune.bounds.{p}", p, float(value), tune.bound(p), f"start {i} ({label[i]})")
    return StartSet(params, lanes, label)


def _tied(exp, tuned: tuple[str, ...]) -> list:
    """The ties of ``sweep.derived`` whose source is tuned (or follows a tuned one), in order."""
    moving, out = set(tuned), []
    for tie in exp.sweep.derived:  # dependency order: sources first
        if tie.source in moving:
            out.append(tie)
            moving.add(tie.target)
    return out


def _apply_ties(exp, params: dict[str, np.ndarray], tuned: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = dict(params)
    for tie in _tied(exp, tuned):
        out[tie.target] = tie.factor * out[tie.source]
    return out


# --------------------------------------------------------------------------------------------
# The optimisation
# --------------------------------------------------------------------------------------------


def _schedule(opt, steps: int):
    import optax

    lr = opt.learning_rate
    if opt.schedule == "constant":
        return optax.constant_schedule(lr)
    if opt.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=steps, alpha=opt.end_factor)
    if opt.schedule == "exponential":
        return optax.exponential_decay(lr, transition_steps=steps, decay_rate=opt.end_factor)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=opt.warmup_steps, decay_steps=steps,
                                              end_value=lr * opt.end_factor)


def _optimizer(opt, schedule):
    import optax

    if opt.name == "adam":
        return optax.adam(schedule)
    if opt.name == "sgd":
        return optax.sgd(schedule, momentum=0.9)
    return optax.rmsprop(schedule)


def smooth_parts(prep, tune, parts=("train",)) -> dict[str, tuple[dict, Any]]:
    """``{part: (rows, KernelConfig)}`` for the smooth kernel in the tune dtype (call inside
    ``jax.enable_x64`` for float64)."""
    import jax.numpy as jnp

    from ..kernels.scan import rebase_frames
    from .run import _slice_rows, part_bounds

    if prep.experiment.data.streamed:
        raise InputError("tuning needs the frames in memory; this run streams them from a store (a file sequence "
                         "or synthetic days): tune on a shorter span", key="data")
    dtype = jnp.float64 if tune.dtype == "float64" else jnp.float32
    rows = rebase_frames(prep.frames, prep.config.market.base_tick, dtype)
    bounds = part_bounds(prep.frames, prep.experiment.split)
    return {part: (_slice_rows(rows, *bounds[part]), prep.configs[part]._replace(dtype=dtype))
            for part in parts if part in bounds}


@dataclasses.dataclass
class Trace:
    """What the optimisation did: per step the smooth objective of every start, the temperatures
    and the learning rate; the iterates kept for hard scoring (``snapshots[k]`` at step
    ``snapshot_steps[k]``, ``{tuned parameter: [N]}``); timings."""

    objective: np.ndarray  # [steps, N]
    temperature: np.ndarray  # [steps]
    position_temperature: np.ndarray  # [steps]
    learning_rate: np.ndarray  # [steps]
    snapshot_steps: list[int]
    snapshots: list[dict[str, np.ndarray]]
    compile_s: float
    steps_s: float
    rows: int


def optimise(prep, tune, starts: StartSet, *, progress: Callable[[int, int, np.ndarray, float], None] | None = None
             ) -> Trace:
    """Run the optimiser from every start at once (see the module docstring)."""
    import jax
    import optax

    from ..kernels.smooth import SmoothSpec, objective_and_grad

    exp = prep.experiment
    ties = _tied(exp, tune.params)
    kernel_tuned = tuple(tune.params) + tuple(t.target for t in ties)
    n = len(starts.lane)
    transforms = [Transform.make(p, *tune.bound(p), starts.params[p]) for p in tune.params]
    u = np.stack([t.u(starts.params[t.name]) for t in transforms], axis=1)  # [N, P]
    schedule = _schedule(tune.optimizer, tune.steps)
    opt = _optimizer(tune.optimizer, schedule)
    spec = SmoothSpec(objective=tune.metric, inventory_penalty=tune.inventory_penalty, rounding=tune.rounding)
    every = tune.every
    objective = np.full((tune.steps, n), np.nan)
    temps = np.array([tune.temperature.at(k, tune.steps) for k in range(tune.steps)])
    ptemps = np.array([tune.position_temperature.at(k, tune.steps) for k in range(tune.steps)])
    lrs = np.array([float(schedule(k)) for k in range(tune.steps)])
    snapshot_steps = [0]
    snapshots = [{p: np.asarray(starts.params[p], np.float64).copy() for p in tune.params}]
    compile_s = 0.0
    with jax.enable_x64(tune.dtype == "float64"):
        (rows, config), = smooth_parts(prep, tune, ("train",)).values()
        state = opt.init(u)
        started = time.perf_counter()
        for k in range(tune.steps):
            x = {t.name: t.x(u[:, j]) for j, t in enumerate(transforms)}
            params = _apply_ties(exp, {**starts.params, **x}, tune.params)
            t0 = time.perf_counter()
            value, grads, _out = objective_and_grad(params, kernel_tuned, rows, config, spec, temperature=temps[k],
                                                    position_temperature=ptemps[k], mode=tune.mode,
                                                    segment_rows=tune.segment_rows)
            value = np.asarray(value, np.float64)
            if k == 0:
                compile_s = time.perf_counter() - t0
            g = {name: np.asarray(grads[name], np.float64) for name in kernel_tuned}
            for tie in reversed(ties):  # chain rule: d/d source += factor * d/d target
                g[tie.source] = g[tie.source] + tie.factor * g[tie.target]
            g_u = np.stack([g[t.name] * t.dx_du(u[:, j]) for j, t in enumerate(transforms)], axis=1)
            g_u = np.where(np.isfinite(g_u), g_u, 0.0)  # a lane with no gradient stays put
            objective[k] = value
            updates, state = opt.update(-g_u, state, u)  # maximise: descend on -objective
            u = np.asarray(optax.apply_updates(u, updates), np.float64)
            if (k + 1) % every == 0 or k + 1 == tune.steps:
                snapshot_steps.append(k + 1)
                snapshots.append({t.name: t.x(u[:, j]) for j, t in enumerate(transforms)})
            if progress is not None:
                progress(k + 1, tune.steps, value, temps[k])
        steps_s = time.perf_counter() - started
    return Trace(objective, temps, ptemps, lrs, snapshot_steps, snapshots, compile_s, steps_s,
                 int(rows["index"].shape[0]))


# --------------------------------------------------------------------------------------------
# Scoring: hard kernel, smooth kernel, exact engine
# --------------------------------------------------------------------------------------------


def _points_prep(prep, points: dict[str, np.ndarray], parts: tuple[str, ...] | None = None):
    """``prep`` with ``points`` as its lanes (kernel shortcuts re-derived for them)."""
    from ..kernels.policies import lane_invariants

    inv = lane_invariants(prep.experiment.strategy.policy, points)
    fix = lambda c: c._replace(constant_size=inv.constant_size, constant_step=inv.constant_step)  # noqa: E731
    keep = prep.parts if parts is None else {p: v for p, v in prep.parts.items() if p in parts}
    sub = dataclasses.replace(prep, lanes={k: np.asarray(v, np.float64) for k, v in points.items()},
                              config=fix(prep.config), parts=keep,
                              configs={p: fix(c) for p, c in prep.configs.items() if p in keep})
    sub.__dict__["_host_parts"] = prep.__dict__.setdefault("_host_parts", {})
    return sub


def hard_scores(prep, points: dict[str, np.ndarray], parts: tuple[str, ...] | None = None):
    """The hard kernel's metrics of ``points`` (every lane parameter, [n]) on ``parts`` (default:
    all of the run's parts), as :func:`mmsweep.sweep.run.run_chunk` computes a sweep's: a polars
    DataFrame with ``<part>_<metric>`` columns."""
    from .run import run_chunk

    sub = _points_prep(prep, points, parts)
    n = len(next(iter(points.values())))
    return run_chunk(sub, 0, n)


def mean_square_position(prep, points: dict[str, np.ndarray], part: str) -> np.ndarray:
    """``mean over the part's rows of position**2`` (qty units squared) per point, from the hard
    kernel's per-row record (the inventory penalty's measure)."""
    from ..kernels.scan import run_lanes

    sub = _points_prep(prep, points, (part,))
    out = run_lanes({k: np.asarray(v) for k, v in sub.lanes.items()}, prep.parts[part], sub.configs[part],
                    record=True)
    position = np.asarray(out["position"], np.float64)
    return np.mean(position ** 2, axis=1)


def _feasible(table, exp, part: str = "train") -> np.ndarray:
    metric = table[f"{part}_{exp.objective.metric}"].to_numpy()
    ok = np.isfinite(metric)
    if exp.constraints.min_trades is not None:
        ok &= table[f"{part}_NumberOfTrades"].to_numpy() >= exp.constraints.min_trades
    if exp.constraints.max_drawdown is not None:
        ok &= table[f"{part}_MaxDrawdown"].to_numpy() <= exp.constraints.max_drawdown
    return ok


def _objective(metrics: dict[str, np.ndarray] | Any, part: str, tune, msq: np.ndarray | None) -> np.ndarray:
    value = np.asarray(metrics[f"{part}_{tune.metric}"], np.float64)
    if tune.inventory_penalty and msq is not None:
        value = value - tune.inventory_penalty * msq
    return value


def keep_best(prep, tune, starts: StartSet, trace: Trace, log) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Per start, the scored iterate with the best hard train objective (feasible ones first; the
    start is iterate 0).  Returns the kept points (every lane parameter), the kept steps and the
    hard train objective of every scored iterate ``[snapshots, N]``."""
    exp = prep.experiment
    n = len(starts.lane)
    k = len(trace.snapshots)
    stacked = {name: np.concatenate([np.asarray(starts.params[name], np.float64)] * k) for name in starts.params}
    for j, snap in enumerate(trace.snapshots):
        for p, values in snap.items():
            stacked[p][j * n:(j + 1) * n] = values
    stacked = _apply_ties(exp, stacked, tune.params)
    t = time.perf_counter()
    table = hard_scores(prep, stacked, ("train",))
    msq = mean_square_position(prep, stacked, "train") if tune.inventory_penalty else None
    hard = _objective(table, "train", tune, msq).reshape(k, n)
    feasible = _feasible(table, exp).reshape(k, n)
    log(f"hard kernel: {k} iterate(s) x {n} start(s) scored on the train part [{time.perf_counter() - t:.1f} s]")
    score = np.where(feasible, hard, -np.inf)
    score = np.where(np.isfinite(hard) | feasible, score, -np.inf)
    best = np.zeros(n, np.int64)
    for i in range(n):
        column = score[:, i]
        if np.all(column == -np.inf):  # nothing feasible: the best objective regardless
            column = np.where(np.isfinite(hard[:, i]), hard[:, i], -np.inf)
        best[i] = int(np.argmax(column)) if np.any(column > -np.inf) else 0
    kept = {name: stacked[name].reshape(k, n)[best, np.arange(n)] for name in stacked}
    steps = np.asarray(trace.snapshot_steps, np.int64)[best]
    return kept, steps, {"hard_train": hard, "feasible": feasible}


def smooth_scores(prep, tune, points: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The smooth objective of ``points`` (starts then tuned points, ``n`` each) on each part at
    the final temperatures.  The train part reuses the optimiser's compiled call (``n`` lanes at
    a time); the test part compiles a forward-only one."""
    import jax

    from ..kernels.smooth import SmoothSpec, objective_and_grad, smooth_metrics

    spec = SmoothSpec(objective=tune.metric, inventory_penalty=tune.inventory_penalty, rounding=tune.rounding)
    ties = _tied(prep.experiment, tune.params)
    kernel_tuned = tuple(tune.params) + tuple(t.target for t in ties)
    temps = dict(temperature=tune.temperature.end, position_temperature=tune.position_temperature.end)
    out = {}
    with jax.enable_x64(tune.dtype == "float64"):
        for part, (rows, config) in smooth_parts(prep, tune, ("train", "test")).items():
            if part == "train":
                values = []
                for lo in range(0, 2 * n, n):
                    half = {k: v[lo:lo + n] for k, v in points.items()}
                    value, _g, _m = objective_and_grad(half, kernel_tuned, rows, config, spec, mode=tune.mode,
                                                       segment_rows=tune.segment_rows, **temps)
                    values.append(np.asarray(value, np.float64))
                out[part] = np.concatenate(values)
            else:
                value, _m = smooth_metrics(points, rows, config, spec, **temps)
                out[part] = np.asarray(value, np.float64)
    return out


def exact_scores(prep, tune, points: dict[str, np.ndarray], log) -> dict[str, Any]:
    """``points`` replayed on the exact engine on each part (:func:`mmsweep.sweep.verify.
    replay_and_score`, the experiment's ``verify`` settings): ``{part: (metrics, objective,
    failure)}``."""
    from .verify import replay_and_score

    out = {}
    for part in ("train", "test"):
        if part not in prep.parts:
            continue
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
            scored = replay_and_score(prep, params=points, part=part)
        msq = None
        if tune.inventory_penalty and scored.record is not None:
            msq = np.nanmean(np.asarray(scored.record.position, np.float64) ** 2, axis=1)
        objective = np.asarray(scored.metrics[tune.metric], np.float64)
        if msq is not None:
            objective = objective - tune.inventory_penalty * msq
        out[part] = (scored.metrics, objective, scored.failure)
        log(f"exact engine: {len(scored.lanes)} point(s) on the {part} part [{scored.seconds:.1f} s]")
    return out


# --------------------------------------------------------------------------------------------
# The whole command
# --------------------------------------------------------------------------------------------


def output_paths(run_dir: Path) -> dict[str, Path]:
    return {"parquet": run_dir / "tune.parquet", "json": run_dir / "tune.json",
            "plot": run_dir / "plots" / "tune_objective.png"}


def tune_target(target: str | os.PathLike, *, log: Callable[[str], None] = print,
                progress: Callable[[str], None] | None = None, **overrides) -> dict[str, Any]:
    """``mmsweep tune TARGET``: a run folder, or an experiment file (run first, resuming)."""
    path = Path(target)
    if path.is_file():
        from .config import load_experiment
        from .run import run_experiment

        exp = load_experiment(path)
        resolve_tune(exp, **overrides)  # bad tune settings fail before the sweep runs
        run_dir = run_experiment(exp, resume=True, log=log, progress=log)
        return tune_run(run_dir, log=log, progress=progress, **overrides)
    return tune_run(path, log=log, progress=progress, **overrides)


def tune_run(run_dir: str | os.PathLike, *, log: Callable[[str], None] = print,
             progress: Callable[[str], None] | None = None, params: list[str] | None = None,
             steps: int | None = None, starts: int | None = None, exact_top: int | None = None) -> dict[str, Any]:
    """Tune a run folder (see the module docstring); returns the summary written to tune.json
    plus ``table`` (the printed text) and ``files``."""
    from .export import read_run
    from .runfolder import FolderLock

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError("not a run folder (a file); give a run folder or an experiment .yaml", source=str(run_dir))
    run = read_run(run_dir)
    tune = resolve_tune(run.experiment, params=params, steps=steps, starts=starts, exact_top=exact_top)
    with FolderLock(run_dir, "mmsweep tune"):
        return _tune_locked(run, tune, log, progress)


def _tune_locked(run, tune, log, progress) -> dict[str, Any]:
    import polars as pl

    from .run import METRIC_COLUMNS, prepare
    from .runfolder import make_folder, remove_partials, write_json, write_parquet

    started = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    remove_partials(run.path)
    exp = run.experiment
    if not tune.written:
        log(f"the experiment has no tune section: tuning {', '.join(tune.params)} with the defaults "
            f"(tune_config.py documents the section)")
    starts = choose_starts(run, tune)  # bad starts fail before the market is loaded
    t = time.perf_counter()
    prep = prepare(exp, log=log)
    prepare_s = time.perf_counter() - t
    lanes_now = {k: np.asarray(v) for k, v in prep.lanes.items()}
    n_total = run.results.height
    ordered = run.results.sort("lane")
    if len(next(iter(lanes_now.values()))) != n_total or any(
            k in ordered.columns and not np.array_equal(lanes_now[k], ordered[k].to_numpy(), equal_nan=True)
            for k in lanes_now):
        raise InputError("the lanes this version of mmsweep builds differ from the run's; rerun the sweep",
                         source=str(run.path / "results.parquet"))
    n = len(starts.lane)
    units = (run.manifest.get("units") or {}) or _units(prep)
    unit = _objective_unit(tune.metric, units)
    log(f"tune {run.path}: {', '.join(tune.params)} from {n} start(s), {tune.steps} {tune.optimizer.name} steps, "
        f"{tune.metric} on the train part ({prep.manifest['frames']['train_rows']:,} rows), {tune.mode}-mode "
        f"gradients, {tune.rounding} rounding, {tune.dtype}")
    bar = _ProgressBar(progress or log, tune.steps, tune, unit)
    trace = optimise(prep, tune, starts, progress=bar)
    bar.close()
    steps_per_s = (tune.steps - 1) / max(trace.steps_s - trace.compile_s, 1e-9) if tune.steps > 1 else float("nan")
    log(f"optimiser: {tune.steps} steps in {trace.steps_s:.1f} s (first step with compilation {trace.compile_s:.1f} "
        f"s; then {steps_per_s:.2f} steps/s, {steps_per_s * n * trace.rows / 1e6:.3f} M smooth lane-steps/s)")

    kept, kept_step, scored = keep_best(prep, tune, starts, trace, log)
    t = time.perf_counter()
    both = {k: np.concatenate([np.asarray(starts.params[k], np.float64), kept[k]]) for k in kept}
    table = hard_scores(prep, both)
    parts = [p for p in prep.parts]
    msq = {p: mean_square_position(prep, both, p) for p in ("train", "test") if p in prep.parts} \
        if tune.inventory_penalty else {}
    hard_s = time.perf_counter() - t
    t = time.perf_counter()
    smooth = smooth_scores(prep, tune, both, n)
    smooth_s = time.perf_counter() - t
    hard_obj = {p: _objective(table, p, tune, msq.get(p)) for p in ("train", "test") if p in prep.parts}
    feasible = _feasible(table, exp)[n:]
    order = np.lexsort((-np.where(np.isfinite(hard_obj["train"][n:]), hard_obj["train"][n:], -np.inf),
                        ~feasible))
    tuned_rank = np.full(n, -1, np.int64)
    rank = 1
    for i in order:
        if feasible[i]:
            tuned_rank[i] = rank
            rank += 1

    # the best tuned points and their starts on the exact engine
    exact: dict[str, Any] = {}
    exact_rows = np.zeros(0, np.int64)
    exact_s = 0.0
    if tune.exact_top > 0 and prep.quoted is not None:
        exact_rows = np.array([i for i in order if feasible[i]][:tune.exact_top], np.int64)
        if len(exact_rows):
            pick = {k: np.concatenate([v[exact_rows], v[n + exact_rows]]) for k, v in both.items()}
            t = time.perf_counter()
            exact = exact_scores(prep, tune, pick, log)
            exact_s = time.perf_counter() - t
    elif tune.exact_top > 0:
        warnings.warn("the run keeps no events in memory (streamed frames): the exact engine is skipped")

    # tune.parquet
    out: dict[str, Any] = {
        "tuned": pl.Series([int(r) if r > 0 else None for r in tuned_rank], dtype=pl.Int64),
        "start": np.arange(n, dtype=np.int64),
        "start_lane": pl.Series([int(x) if x >= 0 else None for x in starts.lane], dtype=pl.Int64),
        "start_label": starts.label,
    }
    for p in tune.params:
        out[f"start_{p}"] = np.asarray(starts.params[p], np.float64)
    for p in exp.param_names:
        out[p] = np.asarray(kept[p], np.float64)
    out["step"] = kept_step
    out["objective"] = [tune.metric] * n
    for part in ("train", "test"):
        if part in smooth:
            out[f"smooth_start_{part}"] = smooth[part][:n]
            out[f"smooth_tuned_{part}"] = smooth[part][n:]
        if part in hard_obj:
            out[f"hard_start_{part}"] = hard_obj[part][:n]
            out[f"hard_tuned_{part}"] = hard_obj[part][n:]
        if part in prep.parts:
            values = {"start": np.full(n, np.nan), "tuned": np.full(n, np.nan)}
            if part in exact:
                objective = exact[part][1]
                m = len(exact_rows)
                values["start"][exact_rows] = objective[:m]
                values["tuned"][exact_rows] = objective[m:]
            out[f"exact_start_{part}"] = values["start"]
            out[f"exact_tuned_{part}"] = values["tuned"]
        if part in msq:
            out[f"msq_start_{part}"] = msq[part][:n]
            out[f"msq_tuned_{part}"] = msq[part][n:]
    out["feasible"] = feasible
    for part in parts:
        for column in METRIC_COLUMNS:
            out[f"{part}_{column}"] = table[f"{part}_{column}"].to_numpy()[n:]
    for part in parts:
        for column in METRIC_COLUMNS:
            out[f"start_{part}_{column}"] = table[f"{part}_{column}"].to_numpy()[:n]
    failure = np.array([""] * n, dtype=object)
    for part in ("train", "test"):
        if part not in prep.parts:
            continue
        for column in METRIC_COLUMNS:
            tuned_v, start_v = np.full(n, np.nan), np.full(n, np.nan)
            if part in exact:
                metrics = exact[part][0]
                m = len(exact_rows)
                start_v[exact_rows] = np.asarray(metrics[column], np.float64)[:m]
                tuned_v[exact_rows] = np.asarray(metrics[column], np.float64)[m:]
                for j, why in enumerate(exact[part][2][m:]):
                    if why and not failure[exact_rows[j]]:
                        failure[exact_rows[j]] = f"{part}: {why}"
            out[f"exact_{part}_{column}"] = tuned_v
            out[f"exact_start_{part}_{column}"] = start_v
    out["exact_failure"] = pl.Series([str(f) if f else None for f in failure], dtype=pl.Utf8)
    frame = pl.DataFrame(out).sort(["tuned", "start"], nulls_last=True)

    paths = output_paths(run.path)
    make_folder(paths["plot"].parent, "plots")
    write_parquet(frame, paths["parquet"])
    figure = _plot(paths["plot"], trace, scored, starts, tune, unit, run.experiment.name)

    summary = {
        "run_dir": str(run.path.resolve()),
        "tune": tune.to_dict(),
        "section": "the experiment's tune section" if tune.written else "defaults (no tune section)",
        "gradient_mode": tune.mode,
        "transforms": [Transform.make(p, *tune.bound(p), starts.params[p]).describe() for p in tune.params],
        "starts": [{"start": i, "label": starts.label[i], **{p: float(starts.params[p][i]) for p in tune.params}}
                   for i in range(n)],
        "units": {"objective": unit, "temperature": "ticks", "position_temperature": "lots"},
        "timings": {"prepare_s": prepare_s, "compile_s": trace.compile_s, "optimise_s": trace.steps_s,
                    "steps_per_s": steps_per_s, "smooth_lane_steps_per_s": steps_per_s * n * trace.rows,
                    "train_rows": trace.rows, "starts": n, "hard_s": hard_s, "smooth_scores_s": smooth_s, "exact_s": exact_s,
                    "total_s": time.perf_counter() - started},
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "load_average_at_start": load,
                    "devices": prep.manifest.get("devices")},
        "trace": {"step": list(range(tune.steps)), "temperature": trace.temperature.tolist(),
                  "position_temperature": trace.position_temperature.tolist(),
                  "learning_rate": trace.learning_rate.tolist(),
                  "objective": [[_finite(v) for v in row] for row in trace.objective.T],
                  "hard_steps": trace.snapshot_steps,
                  "hard_train": [[_finite(v) for v in row] for row in scored["hard_train"].T]},
    }
    write_json(paths["json"], summary)
    summary["table"] = format_table(frame, tune, unit)
    summary["files"] = {"parquet": str(paths["parquet"]), "json": str(paths["json"]), "plot": str(figure)}
    return summary


def _finite(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _units(prep) -> dict[str, str]:
    from .data.instruments import units

    return units(prep.frames.instrument)


def _objective_unit(metric: str, units: dict) -> str:
    if metric == "PnL":
        return units.get("pnl", "quote currency")
    if metric == "Return":
        return "fraction of book size"
    return "annualised, dimensionless"


def format_table(frame, tune, unit: str, max_rows: int = 10) -> str:
    """The tuned points (best first): start, tuned values, objectives start -> tuned."""
    cols = ["tuned", "start_label"] + [f"start_{p}" for p in tune.params] + list(tune.params) + ["step"]
    pairs = [("hard", "train"), ("hard", "test"), ("exact", "train"), ("exact", "test"), ("smooth", "train")]
    head = [c.replace("start_label", "start") for c in cols] + [f"{k} {p}" for k, p in pairs]
    lines = [f"{tune.metric} ({unit}), start -> tuned; hard = the sweep's kernel, exact = the exact engine, smooth "
             f"= the smooth kernel at the final temperature"]
    rows = []
    for row in frame.head(max_rows).iter_rows(named=True):
        cells = ["-" if row["tuned"] is None else str(row["tuned"]), str(row["start_label"])]
        cells += [f"{row[c]:.4g}" for c in cols[2:-1]] + [str(row["step"])]
        for kind, part in pairs:
            a, b = row.get(f"{kind}_start_{part}"), row.get(f"{kind}_tuned_{part}")
            if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
                cells.append("")
            else:
                cells.append(f"{a:.4g} -> {b:.4g}")
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


class _ProgressBar:
    """``[#####.....] step 40/100  objective mean 12.3 best 20.1 USDT  T 0.80 ticks``: redrawn in
    place on a terminal, a line every tenth of the steps otherwise."""

    def __init__(self, emit: Callable[[str], None], steps: int, tune, unit: str) -> None:
        self.emit, self.steps, self.unit = emit, steps, unit
        self.tty = sys.stderr.isatty()
        self.metric = tune.metric
        self.started = time.perf_counter()
        self.last = -1

    def __call__(self, step: int, steps: int, value: np.ndarray, temperature: float) -> None:
        finite = value[np.isfinite(value)]
        mean = float(np.mean(finite)) if finite.size else float("nan")
        best = float(np.max(finite)) if finite.size else float("nan")
        width = 24
        filled = int(round(width * step / steps))
        elapsed = time.perf_counter() - self.started
        eta = elapsed / step * (steps - step)
        text = (f"[{'#' * filled}{'.' * (width - filled)}] step {step}/{steps}  smooth {self.metric} mean {mean:.5g} "
                f"best {best:.5g} {self.unit}  T {temperature:.3g} ticks  {elapsed:.0f} s, ETA {eta:.0f} s")
        if self.tty:
            sys.stderr.write("\r" + text)
            sys.stderr.flush()
        elif step == steps or step == 1 or step * 10 // steps != self.last:
            self.emit("  " + text)
        self.last = step * 10 // steps

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _plot(path: Path, trace: Trace, scored: dict, starts: StartSet, tune, unit: str, name: str) -> Path:
    """Two panels over the optimiser steps, one colour per start: the hard train objective of the
    scored iterates (the kept one ringed), and the smooth objective the optimiser sees (at each
    step's temperature, drawn dashed on the right axis)."""
    from . import report as figures
    from .runfolder import partial_path

    fig = figures._figure(10.0, 6.4)
    hard_ax, smooth_ax = fig.subplots(2, 1, sharex=True)
    n = trace.objective.shape[1]
    colors = [f"C{i % 10}" for i in range(n)]
    steps = np.arange(1, trace.objective.shape[0] + 1)  # the objective at step k is evaluated before update k
    hard = scored["hard_train"]
    label = f"train {tune.metric} ({unit})" + (f" - {tune.inventory_penalty:g} mean(position^2)"
                                               if tune.inventory_penalty else "")
    for i in range(n):
        lw = 1.2 if n <= 12 else 0.6
        hard_ax.plot(trace.snapshot_steps, hard[:, i], "o-", color=colors[i], ms=3, lw=lw,
                     label=starts.label[i] if n <= 12 else None)
        finite = np.where(np.isfinite(hard[:, i]), hard[:, i], -np.inf)
        if np.any(np.isfinite(finite)):
            k = int(np.argmax(finite))
            hard_ax.plot([trace.snapshot_steps[k]], [hard[k, i]], "o", ms=9, mfc="none", color=colors[i])
        smooth_ax.plot(steps - 1, trace.objective[:, i], color=colors[i], lw=lw)
    hard_ax.set_ylabel(f"hard kernel\n{label}", fontsize=8)
    hard_ax.set_title(f"{name}: {n} start(s) tuned on {', '.join(tune.params)}; hard objective of the scored iterates "
                      f"(best ringed)", fontsize=8.5)
    smooth_ax.set_ylabel(f"smooth kernel\n{label}", fontsize=8)
    smooth_ax.set_xlabel("optimiser step")
    for ax in (hard_ax, smooth_ax):
        ax.grid(alpha=0.3)
    twin = smooth_ax.twinx()
    twin.plot(steps - 1, trace.temperature, color="0.4", ls="--", lw=1.0)
    twin.set_ylabel("fill temperature (ticks), dashed", color="0.35", fontsize=8)
    twin.set_yscale("log")
    smooth_ax.set_title("smooth objective the optimiser maximises, at each step's temperature", fontsize=8.5)
    if n <= 12:  # beside the hard panel, clear of the curves
        hard_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="start", title_fontsize=7)
    tmp = partial_path(path)
    figures._save(fig, tmp)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# Export of a tuned point
# --------------------------------------------------------------------------------------------


def choose_tuned(run, k: int):
    """Tuned point ``k`` (1 = the best hard train objective) of ``run``'s tune.parquet as an
    :class:`mmsweep.sweep.export.Chosen`."""
    import polars as pl

    from .export import Chosen, _fast_metrics

    path = output_paths(run.path)["parquet"]
    if not path.is_file():
        raise InputError("no tune.parquet: run `mmsweep tune` on this run folder first", source=str(run.path),
                         key="--tuned")
    try:
        table = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for damaged files
        raise InputError(f"cannot read tune.parquet ({type(exc).__name__})", source=str(path)) from None
    ranked = int(table["tuned"].is_not_null().sum())
    if k < 1:
        raise InputError(f"tuned point {k}: tuned points are numbered from 1 (the best)", key="--tuned")
    if k > ranked:
        raise InputError(f"tuned point {k} is beyond the table: {ranked} of the {table.height} tuned point(s) meet "
                         f"the constraints (1..{ranked})", key="--tuned")
    row = table.filter(pl.col("tuned") == k).row(0, named=True)
    params = {name: float(row[name]) for name in run.experiment.param_names}
    fast = _fast_metrics(row)
    exact: dict[str, dict[str, Any]] = {}
    for part in ("train", "test"):
        values = {c[len(f"exact_{part}_"):]: float(v) for c, v in row.items()
                  if c.startswith(f"exact_{part}_") and isinstance(v, float) and math.isfinite(v)}
        if values:
            exact[part] = {"metrics": values}
    origin = {"selected_by": f"tuned point {k}", "tuned": k, "start": int(row["start"]),
              "start_lane": row["start_lane"], "start_label": row["start_label"], "step": int(row["step"]),
              "objective": row["objective"]}
    return Chosen(params, f"tuned point {k} (from {row['start_label']})", f"tuned{k}", origin, fast, exact)
