"""Swept axes -> a lane table: one row of strategy parameters per kernel lane (DESIGN §5).

Combination rule (the experiment's ``sweep`` section, in the order written):

* every ``list`` / ``linspace`` / ``logspace`` axis is one *block* of its values;
* every sample (``random`` / ``sobol``, on one axis or a ``joint`` group of several) is one block
  of ``n`` points: its axes are sampled together (zipped), never crossed with each other;
* the lanes are the full product of the blocks, the first block varying slowest (C order, as
  ``itertools.product``), so ``n_lanes`` is the product of the block sizes;
* fixed parameters are broadcast to every lane; derived ties (``target = factor * source``) are
  computed last, in dependency order.

Lane ``i`` is therefore a pure function of the experiment (seeds included): :func:`lane` gives
it without building the table.  Values are float64 in the units the policy registry states
(:data:`mmsweep.sweep.config.POLICIES`); whole-number parameters hold whole floats.

Samplers: ``random`` is numpy's PCG64 (``default_rng(seed)``), uniform on ``[low, high)`` (or
log-uniform with ``log: true``); ``sobol`` is scipy's scrambled Sobol sequence
(``scipy.stats.qmc.Sobol``, Owen scrambling seeded by ``seed``), the first ``n`` points of the
next power of two (balance is exact only when ``n`` is a power of two).  Both depend on the
library versions for bit-exact values; the run folder records the values themselves.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import InputError

if TYPE_CHECKING:  # config imports this module's generators; no import cycle at run time
    from .config import Experiment

#: Refuse to materialise more lanes than this (50 M lanes x 10 params x 8 B = 4 GB of host memory).
MAX_LANES = 50_000_000


def linspace(start: float, stop: float, num: int) -> np.ndarray:
    """``num`` evenly spaced values from ``start`` to ``stop`` inclusive (parameter units)."""
    return np.linspace(float(start), float(stop), int(num), dtype=np.float64)


def logspace(start_exp: float, stop_exp: float, num: int) -> np.ndarray:
    """``num`` values ``10**e`` for ``e`` evenly spaced from ``start_exp`` to ``stop_exp`` inclusive."""
    return np.logspace(float(start_exp), float(stop_exp), int(num), base=10.0, dtype=np.float64)


def unit_samples(method: str, n: int, dims: int, seed: int) -> np.ndarray:
    """``[n, dims]`` points in the unit cube ``[0, 1)``: ``random`` (PCG64) or ``sobol`` (scrambled)."""
    if method == "random":
        return np.random.default_rng(seed).random((n, dims))
    if method == "sobol":
        from scipy.stats import qmc  # only Sobol sweeps need scipy

        rng = np.random.default_rng(seed)
        try:
            sampler = qmc.Sobol(dims, scramble=True, rng=rng)
        except TypeError:  # scipy < 1.15 names the argument `seed`
            sampler = qmc.Sobol(dims, scramble=True, seed=rng)
        # Draw a power of two (no balance warning) and keep the first n: a prefix of a scrambled
        # Sobol sequence is still low-discrepancy, and n need not be a power of two.
        return sampler.random_base2(max(0, math.ceil(math.log2(n))))[:n]
    raise ValueError(f"unknown sampling method {method!r}")


def scale_samples(unit: np.ndarray, low: float, high: float, log: bool) -> np.ndarray:
    """Map unit-cube coordinates to ``[low, high)``, uniformly or (``log``) log-uniformly."""
    if log:
        lo, hi = math.log10(low), math.log10(high)
        return 10.0 ** (lo + unit * (hi - lo))
    return low + unit * (high - low)


def block_values(block) -> tuple[tuple[str, ...], np.ndarray]:
    """The names and ``[n, d]`` float64 values of one sweep block (an axis or a sample)."""
    if hasattr(block, "ranges"):  # a Sample: d axes drawn together
        unit = unit_samples(block.method, block.n, len(block.ranges), block.seed)
        cols = [scale_samples(unit[:, j], r.low, r.high, r.log) for j, r in enumerate(block.ranges)]
        return tuple(r.name for r in block.ranges), np.stack(cols, axis=1)
    return (block.name,), np.asarray(block.values, dtype=np.float64)[:, None]


def check_count(sizes: Sequence[int]) -> int:
    """The product of the block sizes; an InputError beyond :data:`MAX_LANES`."""
    total = math.prod(sizes)
    if total > MAX_LANES:
        raise InputError(f"the sweep has {total:,} lanes (block sizes {' x '.join(map(str, sizes))}); "
                         f"at most {MAX_LANES:,} are allowed in one experiment -- split it", key="sweep")
    return total


def n_lanes(exp: "Experiment") -> int:
    """Number of lanes (the product of the block sizes; 1 when nothing is swept)."""
    return check_count([b.size for b in exp.sweep.blocks])


def build_lanes(exp: "Experiment") -> dict[str, np.ndarray]:
    """The lane table: one float64 array of length ``n_lanes`` per strategy parameter.

    Keys are every parameter of the policy (fixed, swept, derived and defaulted), in the policy
    registry's order (:meth:`Experiment.param_names`).  Lane ``i`` is the same on every call.
    """
    blocks = [block_values(b) for b in exp.sweep.blocks]
    sizes = [vals.shape[0] for _, vals in blocks]
    total = check_count(sizes)
    columns: dict[str, np.ndarray] = {}
    stride = total
    for (names, vals), size in zip(blocks, sizes):
        stride //= size
        # Mixed-radix digit of each lane for this block: the first block varies slowest.
        idx = (np.arange(total, dtype=np.int64) // stride) % size
        for j, name in enumerate(names):
            columns[name] = vals[idx, j]
    for name, value in exp.strategy.params.items():
        columns[name] = np.full(total, float(value), dtype=np.float64)
    for tie in exp.sweep.derived:  # already in dependency order
        columns[tie.target] = tie.factor * columns[tie.source]
    return {name: columns[name] for name in exp.param_names}


def lane(exp: "Experiment", i: int) -> dict[str, float]:
    """The parameters of lane ``i`` alone (same values as ``build_lanes(exp)[...][i]``)."""
    blocks = [block_values(b) for b in exp.sweep.blocks]
    sizes = [vals.shape[0] for _, vals in blocks]
    total = check_count(sizes)
    if not 0 <= i < total:
        raise IndexError(f"lane {i} out of range: the sweep has {total} lanes")
    values: dict[str, float] = {k: float(v) for k, v in exp.strategy.params.items()}
    stride = total
    for (names, vals), size in zip(blocks, sizes):
        stride //= size
        row = (i // stride) % size
        values.update({name: float(vals[row, j]) for j, name in enumerate(names)})
    for tie in exp.sweep.derived:
        values[tie.target] = tie.factor * values[tie.source]
    return {name: values[name] for name in exp.param_names}


def grid_axes(exp: "Experiment") -> dict[str, np.ndarray]:
    """The values of each ``list`` / ``linspace`` / ``logspace`` axis (for heatmaps over two axes)."""
    return {b.name: np.asarray(b.values, dtype=np.float64) for b in exp.sweep.blocks if not hasattr(b, "ranges")}
