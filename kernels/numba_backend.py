"""The CPU backend: the lane step compiled by numba, lanes as SIMD vectors in cache-sized blocks.

The lane functions of :mod:`mmsweep.kernels.step` are traced once to jaxprs and written out as
straight-line Python (:mod:`mmsweep.kernels.jaxpr_numba`), then placed inside a generated loop
nest and compiled by ``numba.njit(parallel=True)``:

    for each block of lanes (prange: one thread per block)
        for each row r                       (rows outer: the block's state stays in cache)
            row-level facts: does r close a resample window?  does a decision arrive?
            for each lane of the block       (inner: branch-free, LLVM vectorises it)
                step the lane

so there is one definition of every strategy and of the order management, and the CPU runs it
the way its vector units want it: the same instruction over consecutive lanes, state in
``[field, lane]`` arrays that stay in L1/L2, frame rows read once per block.  Work that depends
only on the row is decided outside the lane loop (a separate loop commits the resample windows;
rows with and without an arrival run different loop bodies).

The generated module is written to ``$MMSWEEP_CACHE/kernels`` (default
``~/.cache/mmsweep/kernels``) under a hash of its source and compiled with numba's on-disk
cache, so a second run with the same strategy and instrument does not compile again.

Results equal the JAX backend's: counts, positions and fills exactly; money within a few ulps
(XLA:CPU fuses some multiply-adds into FMAs, numba rounds each operation; tests/test_backends.py
states the tolerances).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .jaxpr_numba import translate
from .scan import KernelState, _initial_state, make_scan_step
from .step import ROW_COLUMNS, KernelConfig, closes, window_columns

#: Lanes per block: a multiple of the widest vector (16 float32 lanes with AVX-512) and small
#: enough that a block's state (about 60 fields) stays in L1.
BLOCK = 64
#: Bump when the generated code's layout changes (part of the cache key).
CODEGEN_VERSION = 1


def _cache_dir() -> Path:
    root = os.environ.get("MMSWEEP_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "mmsweep"
    return base / "kernels"


class _Layout:
    """Where every leaf of a pytree lives: a row of a float array or of an int32 array (bools
    as 0/1), starting at ``float_base`` / ``int_base``."""

    def __init__(self, tree, float_dtype, float_base: int = 0, int_base: int = 0):
        self.leaves, self.treedef = jax.tree_util.tree_flatten(tree)
        self.kinds = []  # ("f" | "i" | "b", row)
        n_f = n_i = 0
        for leaf in self.leaves:
            dt = np.dtype(jnp.result_type(leaf))
            if np.issubdtype(dt, np.floating):
                self.kinds.append(("f", float_base + n_f))
                n_f += 1
            else:
                self.kinds.append(("b" if dt == np.bool_ else "i", int_base + n_i))
                n_i += 1
        self.n_f, self.n_i = n_f, n_i
        self.float_base, self.int_base = float_base, int_base
        self.float_dtype = float_dtype

    def shifted(self, float_base: int, int_base: int) -> "_Layout":
        return _Layout(jax.tree_util.tree_unflatten(self.treedef, self.leaves), self.float_dtype, float_base,
                       int_base)

    def specs(self):
        return jax.tree_util.tree_unflatten(
            self.treedef, [jax.ShapeDtypeStruct((), jnp.result_type(leaf)) for leaf in self.leaves])

    def pack(self, tree, n_lanes: int, lead: tuple = ()):
        """Leaves ``[lanes]`` (or ``lead + [lanes]``) into ``(floats, ints)`` arrays."""
        leaves = self.treedef.flatten_up_to(tree)
        f = np.zeros(lead + (self.n_f, n_lanes), self.float_dtype)
        i = np.zeros(lead + (self.n_i, n_lanes), np.int32)
        for leaf, (kind, row) in zip(leaves, self.kinds):
            arr = np.asarray(leaf)
            if kind == "f":
                f[..., row - self.float_base, :] = arr
            else:
                i[..., row - self.int_base, :] = arr
        return f, i

    def unpack(self, f, i):
        leaves = []
        for (kind, row), leaf in zip(self.kinds, self.leaves):
            if kind == "f":
                leaves.append(f[..., row - self.float_base, :])
            elif kind == "b":
                leaves.append(i[..., row - self.int_base, :] != 0)
            else:
                leaves.append(i[..., row - self.int_base, :].astype(np.int32))
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def loads(self, tag: str):
        """``(load lines, names pytree)``: one local per leaf, from ``lf`` / ``li`` at lane ``l``."""
        lines, names = [], []
        for k, (kind, row) in enumerate(self.kinds):
            local = f"{tag}{k}"
            if kind == "f":
                lines.append(f"{local} = lf[{row * BLOCK} + l]")
            elif kind == "b":
                lines.append(f"{local} = li[{row * BLOCK} + l] != 0")
            else:
                lines.append(f"{local} = li[{row * BLOCK} + l]")
            names.append(local)
        return lines, jax.tree_util.tree_unflatten(self.treedef, names)

    def stores(self, exprs, tag: str | None = None):
        """Store lines of ``exprs`` (a pytree of ``(expression, dtype)``); with ``tag``, leaves
        whose expression is still their own load are skipped."""
        out = []
        for k, ((expr, _dt), (kind, row)) in enumerate(zip(self.treedef.flatten_up_to(exprs), self.kinds)):
            if tag is not None and expr == f"{tag}{k}":
                continue
            out.append(f"{'lf' if kind == 'f' else 'li'}[{row * BLOCK} + l] = {expr}")
        return out


def _row_spec(config: KernelConfig, columns: list[str]):
    """Specs and generated-code names of one frame row (int32 columns, then features)."""
    n_feat = len(config.market.feature_names)
    row = {c: jax.ShapeDtypeStruct((), jnp.int32) for c in columns}
    row["features"] = jax.ShapeDtypeStruct((n_feat,), config.dtype)
    names = {c: f"row_{c}" for c in columns}
    names["features"] = tuple(f"feat_{k}" for k in range(n_feat))
    loads = [f"row_{c} = cols[r, {j}]" for j, c in enumerate(columns)]
    loads += [f"feat_{k} = features[r, {k}]" for k in range(n_feat)]
    return row, names, loads


def _indent(lines, n):
    return [" " * n + line for line in lines]


def _expr_names(tree):
    return jax.tree_util.tree_map(lambda e: e[0], tree,
                                  is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], np.dtype))


def _copy_rows(dst: str, dst_row, src: str, src_row, n: int, to_block: bool) -> list[str]:
    """Copy ``n`` rows between a ``[rows, lanes]`` array and a block-local flat array."""
    if n == 0:
        return []
    if to_block:
        # a short last block is padded with copies of its last lane (valid values in every
        # column the fixed-length lane loops compute); the padding is never copied back
        target, source = f"{dst}[({dst_row} + k) * {BLOCK} + l]", f"{src}[{src_row} + k, lo + min(l, n - np.uint64(1))]"
        lanes = f"np.uint64({BLOCK})"
    else:
        target, source = f"{dst}[{dst_row} + k, lo + l]", f"{src}[({src_row} + k) * {BLOCK} + l]"
        lanes = "n"
    return [f"for k in range({n}):", f"    for l in range({lanes}):", f"        {target} = {source}"]


def generate(config: KernelConfig, param_names: tuple[str, ...]):
    """The Python source of the block kernel for ``config`` and these lane parameters.

    Inside a block every value lives in two local arrays with compile-time shapes, ``lf``
    (floats) and ``li`` (int32), one row per field and one column per lane: the lane state,
    the parameters, the decision made at this row (``cur``) and the one arriving (``arr``).
    Constant rows and strides let LLVM prove the lane loop free of aliasing and vectorise it;
    the ring of decisions in flight is only touched by small copy loops outside it.
    """
    init, _body, lane = make_scan_step(config)
    state0 = init()
    state_layout = _Layout(state0.lanes, np.dtype(config.dtype))
    pend = state0.ring[0]
    n_params = len(param_names)
    pend_probe = _Layout(pend, np.dtype(config.dtype))
    f_params = state_layout.n_f
    cur_layout = pend_probe.shifted(f_params + n_params, state_layout.n_i)
    arr_layout = pend_probe.shifted(cur_layout.float_base + pend_probe.n_f, cur_layout.int_base + pend_probe.n_i)
    n_float_rows = arr_layout.float_base + pend_probe.n_f
    n_int_rows = arr_layout.int_base + pend_probe.n_i

    win_a = window_columns(lane.fill_model, "a")
    win_b = window_columns(lane.fill_model, "b")
    columns = list(ROW_COLUMNS) + sorted(set(win_a.values()) | set(win_b.values()))
    row_spec, row_names, row_loads = _row_spec(config, columns)
    params_spec = {k: jax.ShapeDtypeStruct((), config.dtype) for k in param_names}
    params_names = {k: f"prm{i}" for i, k in enumerate(param_names)}
    param_loads = [f"prm{i} = lf[{(f_params + i) * BLOCK} + l]" for i in range(n_params)]
    flag = jax.ShapeDtypeStruct((), jnp.bool_)
    state_spec = state_layout.specs()
    what = f"lane step of {_policy_name(config.policy)}"

    def window(row, cols):
        return {name: row[col] for name, col in cols.items()}

    load_state, state_names = state_layout.loads("st")
    load_arr, arr_names = arr_layout.loads("ar")

    commit_lines, commit_out = translate(lambda s, r: lane.commit(s, lane.observe(s, r)), (state_spec, row_spec),
                                         (state_names, row_names), what=what, prefix="c")

    def step(p, s, r, arriving, close, fresh, arrived):
        seen = lane.observe(s, r)
        s = lane.track(s, seen, close)
        pending = lane.decide(p, s, r)
        s = lane.fill(s, window(r, win_a))
        # the decision arriving now is this row's own (lag_b == 0) or an older one (from the ring)
        arriving = _select(fresh, pending, arriving)
        s = _select(arrived, lane.arrive(s, arriving, r), s)
        return lane.fill(s, window(r, win_b)), pending

    step_lines, (step_state, step_pending) = translate(
        step, (params_spec, state_spec, row_spec, arr_layout.specs(), flag, flag, flag),
        (params_names, state_names, row_names, arr_names, "row_close", "row_fresh", "row_arrived"),
        what=what, prefix="a")

    lane_loop = f"for l in range(np.uint64({BLOCK})):"  # a constant trip count: no vector epilogue
    commit_loop = [lane_loop] + _indent(load_state + commit_lines + state_layout.stores(commit_out, "st"), 4)
    step_loop = [lane_loop] + _indent(param_loads + load_state + load_arr + step_lines
                                      + state_layout.stores(step_state, "st") + cur_layout.stores(step_pending), 4)
    ring = config.ring
    # One function, so that LLVM optimises (and vectorises) the step once: numba links called
    # functions into their caller and LLVM would inline and re-optimise them at every level.
    row_body = row_loads + [
        "arrived = row_lag_b < row_lag_a",
        "fresh = row_lag_b == 0",
        "row_close = close[r] != 0",
        "row_fresh = fresh",
        "row_arrived = arrived",
        "if row_close:",
    ] + _indent(commit_loop, 4) + [
        "if arrived and not fresh:",
        f"    rd = (row_index - row_lag_b) % {ring}",
    ] + _indent(_copy_rows("lf", arr_layout.float_base, "rf", f"rd * {pend_probe.n_f}", pend_probe.n_f, True)
                + _copy_rows("li", arr_layout.int_base, "ri", f"rd * {pend_probe.n_i}", pend_probe.n_i, True), 4) \
        + step_loop + [f"w = row_index % {ring}"] \
        + _copy_rows("rf", f"w * {pend_probe.n_f}", "lf", cur_layout.float_base, pend_probe.n_f, False) \
        + _copy_rows("ri", f"w * {pend_probe.n_i}", "li", cur_layout.int_base, pend_probe.n_i, False)
    block_body = [
        # unsigned lane counts: numba then drops its negative-index wraparound, which would
        # otherwise stop LLVM from vectorising the lane loops
        f"lo = np.uint64(b * {BLOCK})",
        f"n = np.uint64(min({BLOCK}, n_lanes - b * {BLOCK}))",
    ] + _copy_rows("lf", 0, "sf", 0, state_layout.n_f, True) \
        + _copy_rows("li", 0, "si", 0, state_layout.n_i, True) \
        + _copy_rows("lf", f_params, "prm", 0, n_params, True) \
        + ["for r in range(cols.shape[0]):"] + _indent(row_body, 4) \
        + _copy_rows("sf", 0, "lf", 0, state_layout.n_f, False) \
        + _copy_rows("si", 0, "li", 0, state_layout.n_i, False)
    kernel_fn = [
        "@numba.njit(cache=True, error_model=\"numpy\", nogil=True)",
        "def kernel(prm, sf, si, rf, ri, cols, features, close, first_block, last_block):",
        "    n_lanes = sf.shape[1]",
        f"    lf = np.zeros({n_float_rows * BLOCK}, np.{np.dtype(config.dtype).name})",
        f"    li = np.zeros({n_int_rows * BLOCK}, np.int32)",
        "    for b in range(first_block, last_block):",
    ] + _indent(block_body, 8)
    header = textwrap.dedent(f'''\
        # Generated by mmsweep.kernels.numba_backend (codegen v{CODEGEN_VERSION}) from the jaxprs of
        # {what}
        # market={config.market}
        # fill_model={config.fill_model} dtype={np.dtype(config.dtype).name} ring={ring} block={BLOCK}
        import math
        import numba
        import numpy as np
        from mmsweep.kernels.jaxpr_numba import (_fmax, _fmin, _idiv, _irem, _popcount, _round_away, _shl32, _shr32,
                                                 _sign)
        _INF, _NAN = math.inf, math.nan
        ''')
    source = header + "\n\n" + "\n".join(kernel_fn) + "\n"
    return source, columns, state_layout, pend_probe


def _policy_name(policy) -> str:
    """A stable name for the generated code's header (a repr would hold a memory address and
    change the cache key in every process)."""
    func = getattr(policy, "func", policy)
    static = getattr(policy, "keywords", None)
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')} static={static}"


def _select(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


@functools.lru_cache(maxsize=32)
def _compiled(config: KernelConfig, param_names: tuple[str, ...]):
    source, columns, state_layout, pend_layout = generate(config, param_names)
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    folder = _cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"lane_kernel_{digest}.py"
    if not path.exists():
        tmp = path.with_name(path.name + f".{os.getpid()}.partial")
        tmp.write_text(source)
        os.replace(tmp, path)
    name = f"mmsweep_lane_kernel_{digest}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module.kernel, columns, state_layout, pend_layout, source


def kernel_source(config: KernelConfig, param_names: tuple[str, ...]) -> str:
    """The generated source (for inspection)."""
    return _compiled(config, tuple(sorted(param_names)))[4]


def run_lanes_numba(params: dict[str, Any], rows: dict[str, Any], config: KernelConfig, *,
                    state: KernelState | None = None, return_state: bool = False):
    """:func:`mmsweep.kernels.scan.run_lanes` on the numba backend (same arguments and results;
    ``record`` is not available here: use the JAX backend for per-row curves)."""
    names = tuple(sorted(params))
    dtype = np.dtype(config.dtype)
    kernel, columns, state_layout, pend_layout, _src = _compiled(config, names)
    n = int(np.shape(params[names[0]])[0]) if names else 1
    prm = np.zeros((max(len(names), 1), n), dtype)
    for i, k in enumerate(names):
        prm[i] = np.asarray(params[k], dtype)
    if state is None:
        state = _initial_state(config, n)
    sf, si = state_layout.pack(state.lanes, n)
    rf, ri = pend_layout.pack(_stack_ring(state.ring), n, lead=(config.ring,))
    rf = rf.reshape(config.ring * pend_layout.n_f, n)
    ri = ri.reshape(config.ring * pend_layout.n_i, n)
    cols = np.ascontiguousarray(np.stack([np.asarray(rows[c], np.int32) for c in columns], axis=1))
    features = np.ascontiguousarray(np.asarray(rows["features"], dtype))
    if features.ndim != 2 or features.shape[1] != len(config.market.feature_names):
        raise ValueError(f"features of shape {features.shape}; the market names {len(config.market.feature_names)}")
    close = np.asarray(closes(config, np.asarray(rows["index"])), np.int8)
    _run_threads(kernel, (prm, sf, si, rf, ri, cols, features, close), n)
    lanes = state_layout.unpack(sf, si)
    rf = rf.reshape(config.ring, pend_layout.n_f, n)
    ri = ri.reshape(config.ring, pend_layout.n_i, n)
    ring = tuple(pend_layout.unpack(rf[k], ri[k]) for k in range(config.ring))
    new_state = KernelState(jax.tree_util.tree_map(jnp.asarray, lanes), jax.tree_util.tree_map(jnp.asarray, ring))
    metrics = _finalize(config)(new_state.lanes)
    return (metrics, new_state) if return_state else metrics


def _run_threads(kernel, args, n_lanes: int) -> None:
    """Blocks of lanes split over one thread per core.  The kernel releases the GIL, so plain
    threads run in parallel (numba's own parallel loops would recompile the whole step inside
    a generated gufunc, tripling the compile time)."""
    n_blocks = -(-n_lanes // BLOCK)
    n_threads = max(1, min(n_blocks, _threads()))
    if n_threads == 1:
        kernel(*args, 0, n_blocks)
        return
    from concurrent.futures import ThreadPoolExecutor

    cuts = np.linspace(0, n_blocks, n_threads + 1).round().astype(int)
    with ThreadPoolExecutor(n_threads) as pool:
        for fut in [pool.submit(kernel, *args, int(lo), int(hi)) for lo, hi in zip(cuts[:-1], cuts[1:])]:
            fut.result()


def _threads() -> int:
    """Threads for the CPU backend: ``MMSWEEP_THREADS``, else the CPUs this process may use."""
    value = os.environ.get("MMSWEEP_THREADS")
    if value:
        return max(1, int(value))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _stack_ring(ring: tuple):
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *ring)


@functools.lru_cache(maxsize=32)
def _finalize(config: KernelConfig):
    lane = make_scan_step(config)[2]
    return jax.jit(jax.vmap(lane.finalize))
