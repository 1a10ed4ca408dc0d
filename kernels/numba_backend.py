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
cache, so a second run with the same strategy and instrument does not compile again; the source
itself is found again from the kernel's config (:func:`_source_key`), so it does not trace the
lane functions again either.

Results equal the JAX backend's: counts, positions and fills exactly; money within a few ulps
(XLA:CPU fuses some multiply-adds into FMAs, numba rounds each operation; tests/test_backends.py
states the tolerances).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numba
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

    def loads(self, tag: str, block: int):
        """``(load lines, names pytree)``: one local per leaf, from ``lf`` / ``li`` at lane ``l``."""
        lines, names = [], []
        for k, (kind, row) in enumerate(self.kinds):
            local = f"{tag}{k}"
            if kind == "f":
                lines.append(f"{local} = lf[{row * block} + l]")
            elif kind == "b":
                lines.append(f"{local} = li[{row * block} + l] != 0")
            else:
                lines.append(f"{local} = li[{row * block} + l]")
            names.append(local)
        return lines, jax.tree_util.tree_unflatten(self.treedef, names)

    def stores(self, exprs, block: int, tag: str | None = None):
        """Store lines of ``exprs`` (a pytree of ``(expression, dtype)``); with ``tag``, leaves
        whose expression is still their own load are skipped."""
        out = []
        for k, ((expr, _dt), (kind, row)) in enumerate(zip(self.treedef.flatten_up_to(exprs), self.kinds)):
            if tag is not None and expr == f"{tag}{k}":
                continue
            out.append(f"{'lf' if kind == 'f' else 'li'}[{row * block} + l] = {expr}")
        return out


def _row_spec(config: KernelConfig, columns: list[str], qty_columns: list[str]):
    """Specs and generated-code names of one frame row: int32 tick columns (``cols``), float
    quantity columns (``qcols``), then features."""
    n_feat = len(config.market.feature_names)
    row = {c: jax.ShapeDtypeStruct((), jnp.int32) for c in columns}
    row.update({c: jax.ShapeDtypeStruct((), config.dtype) for c in qty_columns})
    row["features"] = jax.ShapeDtypeStruct((n_feat,), config.dtype)
    names = {c: f"row_{c}" for c in list(columns) + list(qty_columns)}
    names["features"] = tuple(f"feat_{k}" for k in range(n_feat))
    loads = [f"row_{c} = cols[r, {j}]" for j, c in enumerate(columns)]
    loads += [f"row_{c} = qcols[r, {j}]" for j, c in enumerate(qty_columns)]
    loads += [f"feat_{k} = features[r, {k}]" for k in range(n_feat)]
    return row, names, loads


def _indent(lines, n):
    return [" " * n + line for line in lines]


def _expr_names(tree):
    return jax.tree_util.tree_map(lambda e: e[0], tree,
                                  is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], np.dtype))


def _copy_rows(dst: str, dst_row, src: str, src_row, n: int, to_block: bool, block: int) -> list[str]:
    """Copy ``n`` rows between a ``[rows, lanes]`` array and a block-local flat array."""
    if n == 0:
        return []
    if to_block:
        # a short last block is padded with copies of its last lane (valid values in every
        # column the fixed-length lane loops compute); the padding is never copied back
        target, source = f"{dst}[({dst_row} + k) * {block} + l]", f"{src}[{src_row} + k, lo + min(l, n - np.uint64(1))]"
        lanes = f"np.uint64({block})"
    else:
        target, source = f"{dst}[{dst_row} + k, lo + l]", f"{src}[({src_row} + k) * {block} + l]"
        lanes = "n"
    return [f"for k in range({n}):", f"    for l in range({lanes}):", f"        {target} = {source}"]


class _Translated(NamedTuple):
    """The lane functions written out as source lines over named locals (``st<k>`` state
    leaves, ``prm<i>`` parameters, ``ar<k>`` the arriving decision, ``row_<column>`` and
    ``feat_<k>`` the row), with their outputs as ``(expression, dtype)`` pytrees."""

    columns: list
    qty_columns: list
    state_layout: Any
    pend_layout: Any
    row_loads: list
    commit_lines: list
    commit_out: Any
    step_lines: list
    step_state: Any
    step_pending: Any
    what: str


def _layouts(config: KernelConfig):
    """``(lane, int columns, qty columns, state layout, pending-decision layout)`` of the
    generated kernel: what running it needs besides its source."""
    init, _body, lane = make_scan_step(config)
    state0 = init()
    state_layout = _Layout(state0.lanes, np.dtype(config.dtype))
    pend_layout = _Layout(state0.ring[0], np.dtype(config.dtype))
    win_a = window_columns(lane.fill_model, "a")
    win_b = window_columns(lane.fill_model, "b")
    qty_names = {f"{c}_{w}" for c in lane.fill_model.qty_columns for w in ("a", "b")}
    columns = list(ROW_COLUMNS) + sorted((set(win_a.values()) | set(win_b.values())) - set(ROW_COLUMNS) - qty_names)
    return lane, columns, sorted(qty_names), state_layout, pend_layout


def _translate(config: KernelConfig, param_names: tuple[str, ...]) -> _Translated:
    lane, columns, qty_columns, state_layout, pend_layout = _layouts(config)
    win_a = window_columns(lane.fill_model, "a")
    win_b = window_columns(lane.fill_model, "b")
    row_spec, row_names, row_loads = _row_spec(config, columns, qty_columns)
    params_spec = {k: jax.ShapeDtypeStruct((), config.dtype) for k in param_names}
    params_names = {k: f"prm{i}" for i, k in enumerate(param_names)}
    flag = jax.ShapeDtypeStruct((), jnp.bool_)
    state_spec = state_layout.specs()
    state_names = jax.tree_util.tree_unflatten(state_layout.treedef, [f"st{k}" for k in range(len(state_layout.kinds))])
    arr_names = jax.tree_util.tree_unflatten(pend_layout.treedef, [f"ar{k}" for k in range(len(pend_layout.kinds))])
    what = f"lane step of {_policy_name(config.policy)}"

    def window(row, cols):
        return {name: row[col] for name, col in cols.items()}

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
        step, (params_spec, state_spec, row_spec, pend_layout.specs(), flag, flag, flag),
        (params_names, state_names, row_names, arr_names, "row_close", "row_fresh", "row_arrived"),
        what=what, prefix="a")
    return _Translated(columns, qty_columns, state_layout, pend_layout, row_loads, commit_lines, commit_out,
                       step_lines, step_state, step_pending, what)


_HEADER = """\
# Generated by mmsweep.kernels.numba_backend (codegen v{version}) from the jaxprs of
# {what}
# market={market}
# fill_model={fill_model} dtype={dtype} ring={ring} block={block}
import math
import numba
import numpy as np
from mmsweep.kernels.jaxpr_numba import (_fmax, _fmin, _idiv, _irem, _popcount, _round_away, _shl32, _shr32,
                                         _sign)
_INF, _NAN = math.inf, math.nan
"""


def _header(config: KernelConfig, t: _Translated, block) -> str:
    return _HEADER.format(version=CODEGEN_VERSION, what=t.what, market=config.market, fill_model=config.fill_model,
                          dtype=np.dtype(config.dtype).name, ring=config.ring, block=block)


_ROW_FLAGS = ["arrived = row_lag_b < row_lag_a", "fresh = row_lag_b == 0", "row_close = close[r] != 0",
              "row_fresh = fresh", "row_arrived = arrived"]


def generate_scalar(config: KernelConfig, param_names: tuple[str, ...]):
    """The same step one lane at a time, state in locals across the rows: the scalar baseline of
    bench/throughput.py (no SIMD; one lane per outer loop iteration)."""
    t = _translate(config, param_names)
    sl, pl_ = t.state_layout, t.pend_layout
    ring = config.ring

    def assign(exprs, layout, tag):
        pairs = [(f"{tag}{k}", e) for k, (e, _dt) in enumerate(layout.treedef.flatten_up_to(exprs))
                 if e != f"{tag}{k}"]
        return [f"{', '.join(a for a, _ in pairs)} = {', '.join(b for _, b in pairs)}"] if pairs else []

    def load(layout, tag, f_src, i_src):  # f_src / i_src: index formats of a leaf's row
        out = []
        for k, (kind, row) in enumerate(layout.kinds):
            src = (f_src if kind == "f" else i_src).format(row=row)
            out.append(f"{tag}{k} = {src}{' != 0' if kind == 'b' else ''}")
        return out

    def store(exprs, layout, f_dst, i_dst):
        return [f"{(f_dst if kind == 'f' else i_dst).format(row=row)} = {e}"
                for (e, _dt), (kind, row) in zip(layout.treedef.flatten_up_to(exprs), layout.kinds)]

    names_state = jax.tree_util.tree_unflatten(sl.treedef, [(f"st{k}", None) for k in range(len(sl.kinds))])
    body = (["for c in range(first_lane, last_lane):"]
            + _indent([f"prm{i} = prm[{i}, c]" for i in range(len(param_names))]
                      + load(sl, "st", "sf[{row}, c]", "si[{row}, c]")
                      + [f"rgf = np.empty(({ring}, {pl_.n_f}), np.{np.dtype(config.dtype).name})",
                         f"rgi = np.empty(({ring}, {pl_.n_i}), np.int32)",
                         f"for k in range({ring}):",
                         f"    for j in range({pl_.n_f}):",
                         f"        rgf[k, j] = rf[k * {pl_.n_f} + j, c]",
                         f"    for j in range({pl_.n_i}):",
                         f"        rgi[k, j] = ri[k * {pl_.n_i} + j, c]",
                         "for r in range(cols.shape[0]):"]
                      + _indent(t.row_loads + _ROW_FLAGS
                                + [f"rd = (row_index - row_lag_b) % {ring}", f"w = row_index % {ring}",
                                   "if row_close:"]
                                + _indent(t.commit_lines + assign(t.commit_out, sl, "st"), 4)
                                + load(pl_, "ar", "rgf[rd, {row}]", "rgi[rd, {row}]")
                                + t.step_lines + store(t.step_pending, pl_, "rgf[w, {row}]", "rgi[w, {row}]")
                                + assign(t.step_state, sl, "st"), 4)
                      + store(names_state, sl, "sf[{row}, c]", "si[{row}, c]")
                      + [f"for k in range({ring}):",
                         f"    for j in range({pl_.n_f}):",
                         f"        rf[k * {pl_.n_f} + j, c] = rgf[k, j]",
                         f"    for j in range({pl_.n_i}):",
                         f"        ri[k * {pl_.n_i} + j, c] = rgi[k, j]"], 4))
    source = _header(config, t, 1) + "\n\n" + "\n".join(
        ['@numba.njit(cache=True, error_model="numpy", nogil=True)',
         "def kernel(prm, sf, si, rf, ri, cols, qcols, features, close, first_lane, last_lane):"]
        + _indent(body, 4)) + "\n"
    return source, (t.columns, t.qty_columns), sl, pl_


def generate(config: KernelConfig, param_names: tuple[str, ...], block: int = BLOCK):
    """The Python source of the block kernel for ``config`` and these lane parameters.

    Inside a block every value lives in two local arrays with compile-time shapes, ``lf``
    (floats) and ``li`` (int32), one row per field and one column per lane: the lane state,
    the parameters, the decision made at this row (``cur``) and the one arriving (``arr``).
    Constant rows and strides let LLVM prove the lane loop free of aliasing and vectorise it;
    the ring of decisions in flight is only touched by small copy loops outside it.
    """
    t = _translate(config, param_names)
    state_layout, pend_probe, row_loads = t.state_layout, t.pend_layout, t.row_loads
    columns = (t.columns, t.qty_columns)
    n_params = len(param_names)
    f_params = state_layout.n_f
    cur_layout = pend_probe.shifted(f_params + n_params, state_layout.n_i)
    arr_layout = pend_probe.shifted(cur_layout.float_base + pend_probe.n_f, cur_layout.int_base + pend_probe.n_i)
    n_float_rows = arr_layout.float_base + pend_probe.n_f
    n_int_rows = arr_layout.int_base + pend_probe.n_i
    param_loads = [f"prm{i} = lf[{(f_params + i) * block} + l]" for i in range(n_params)]
    load_state, _ = state_layout.loads("st", block)
    load_arr, _ = arr_layout.loads("ar", block)
    commit_lines, commit_out, step_lines = t.commit_lines, t.commit_out, t.step_lines
    step_state, step_pending = t.step_state, t.step_pending

    lane_loop = f"for l in range(np.uint64({block})):"  # a constant trip count: no vector epilogue
    commit_loop = [lane_loop] + _indent(load_state + commit_lines + state_layout.stores(commit_out, block, "st"), 4)
    step_loop = [lane_loop] + _indent(param_loads + load_state + load_arr + step_lines
                                      + state_layout.stores(step_state, block, "st") + cur_layout.stores(step_pending, block), 4)
    ring = config.ring
    # One function, so that LLVM optimises (and vectorises) the step once: numba links called
    # functions into their caller and LLVM would inline and re-optimise them at every level.
    row_body = row_loads + _ROW_FLAGS + [
        "if row_close:",
    ] + _indent(commit_loop, 4) + [
        "if arrived and not fresh:",
        f"    rd = (row_index - row_lag_b) % {ring}",
    ] + _indent(_copy_rows("lf", arr_layout.float_base, "rf", f"rd * {pend_probe.n_f}", pend_probe.n_f, True, block)
                + _copy_rows("li", arr_layout.int_base, "ri", f"rd * {pend_probe.n_i}", pend_probe.n_i, True, block), 4) \
        + step_loop + [f"w = row_index % {ring}"] \
        + _copy_rows("rf", f"w * {pend_probe.n_f}", "lf", cur_layout.float_base, pend_probe.n_f, False, block) \
        + _copy_rows("ri", f"w * {pend_probe.n_i}", "li", cur_layout.int_base, pend_probe.n_i, False, block)
    block_body = [
        # unsigned lane counts: numba then drops its negative-index wraparound, which would
        # otherwise stop LLVM from vectorising the lane loops
        f"lo = np.uint64(b * {block})",
        f"n = np.uint64(min({block}, n_lanes - b * {block}))",
    ] + _copy_rows("lf", 0, "sf", 0, state_layout.n_f, True, block) \
        + _copy_rows("li", 0, "si", 0, state_layout.n_i, True, block) \
        + _copy_rows("lf", f_params, "prm", 0, n_params, True, block) \
        + ["for r in range(cols.shape[0]):"] + _indent(row_body, 4) \
        + _copy_rows("sf", 0, "lf", 0, state_layout.n_f, False, block) \
        + _copy_rows("si", 0, "li", 0, state_layout.n_i, False, block)
    kernel_fn = [
        "@numba.njit(cache=True, error_model=\"numpy\", nogil=True)",
        "def kernel(prm, sf, si, rf, ri, cols, qcols, features, close, first_block, last_block):",
        "    n_lanes = sf.shape[1]",
        f"    lf = np.zeros({n_float_rows * block}, np.{np.dtype(config.dtype).name})",
        f"    li = np.zeros({n_int_rows * block}, np.int32)",
        "    for b in range(first_block, last_block):",
    ] + _indent(block_body, 8)
    header = _header(config, t, block)
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
def _compiled(config: KernelConfig, param_names: tuple[str, ...], block: int = BLOCK):
    """``block=0``: the scalar kernel (:func:`generate_scalar`).  The generated source is kept
    under :func:`_source_key` and read back by later processes: tracing and translating the
    lane functions costs about half a second per config."""
    key = _source_key(config, param_names, block)
    index = _cache_dir() / f"source_{key}.txt" if key else None
    source = _read_indexed(index) if index is not None else None
    if source is not None:
        _lane, int_columns, qty_columns, state_layout, pend_layout = _layouts(config)
        columns = (int_columns, qty_columns)
    else:
        source, columns, state_layout, pend_layout = (generate(config, param_names, block) if block > 0
                                                      else generate_scalar(config, param_names))
    module = _load_module(source)
    if index is not None:
        try:
            if not index.exists() or index.read_text() != Path(module.__file__).name:
                _write_atomic(index, Path(module.__file__).name)
        except OSError:
            pass  # the index only saves time
    return module.kernel, columns, state_layout, pend_layout, source


def _read_indexed(index: Path) -> str | None:
    """The source an index names (``lane_kernel_<digest>.py``), if it is there and its content
    still hashes to its name; else None (generated again)."""
    try:
        name = index.read_text().strip()
        source = (index.parent / name).read_text()
    except OSError:
        return None
    return source if name == _module_file(source) else None


def _source_key(config: KernelConfig, param_names: tuple[str, ...], block: int) -> str | None:
    """What the generated source depends on, hashed: every field of ``config`` (the policy by
    name), the parameter names, the block, the codegen version, JAX's version (the jaxprs) and
    a digest of all of mmsweep's sources (the lane functions, the policies, the translator).
    None when ``config`` has no stable description (a repr with a memory address)."""
    import re

    import mmsweep

    text = repr((config._replace(policy=_policy_name(config.policy)), param_names, block, CODEGEN_VERSION,
                 jax.__version__, mmsweep._sources_digest()))
    if re.search(r" at 0x[0-9a-fA-F]+", text):
        return None
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def _module_file(source: str) -> str:
    """``lane_kernel_<sha256 of the source, 20 hex>.py``."""
    return f"lane_kernel_{hashlib.sha256(source.encode()).hexdigest()[:20]}.py"


def _load_module(source: str):
    """Import generated source as a module from the cache folder (numba caches what a module in
    a file compiles; the file name is the hash of the source, so it never serves stale code)."""
    folder = _cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _module_file(source)
    if not path.exists():
        _write_atomic(path, source)
    name = f"mmsweep_{path.stem}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def kernel_source(config: KernelConfig, param_names: tuple[str, ...]) -> str:
    """The generated source (for inspection)."""
    return _compiled(config, tuple(sorted(param_names)))[4]


def run_lanes_numba(params: dict[str, Any], rows: dict[str, Any], config: KernelConfig, *,
                    state: KernelState | None = None, return_state: bool = False, block: int = BLOCK,
                    threads: int | None = None):
    """:func:`mmsweep.kernels.scan.run_lanes` on the numba backend (same arguments and results;
    ``record`` is not available here: use the JAX backend for per-row curves).

    ``block`` lanes share one pass over the rows (a multiple of the vector width); ``block=0``
    runs the same step one lane at a time with its state in locals (the scalar baseline of
    bench/throughput.py); ``threads`` defaults to :func:`_threads`."""
    names = tuple(sorted(params))
    dtype = np.dtype(config.dtype)
    kernel, columns, state_layout, pend_layout, _src = _compiled(config, names, int(block))
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
    int_columns, qty_columns = columns
    cols = np.ascontiguousarray(np.stack([np.asarray(rows[c], np.int32) for c in int_columns], axis=1))
    qcols = np.ascontiguousarray(np.stack([np.asarray(rows[c], dtype) for c in qty_columns], axis=1)
                                 if qty_columns else np.zeros((cols.shape[0], 0), dtype))
    features = np.ascontiguousarray(np.asarray(rows["features"], dtype))
    if features.ndim != 2 or features.shape[1] != len(config.market.feature_names):
        raise ValueError(f"features of shape {features.shape}; the market names {len(config.market.feature_names)}")
    close = np.asarray(closes(config, np.asarray(rows["index"])), np.int8)
    with _deep_recursion():  # numba's passes recurse along long dependency chains (queue models)
        kernel.compile(tuple(numba.typeof(a) for a in (prm, sf, si, rf, ri, cols, qcols, features, close))
                       + (numba.types.int64, numba.types.int64))
    _run_threads(kernel, (prm, sf, si, rf, ri, cols, qcols, features, close), n, int(block),
                 _threads() if threads is None else int(threads))
    lanes = state_layout.unpack(sf, si)
    rf = rf.reshape(config.ring, pend_layout.n_f, n)
    ri = ri.reshape(config.ring, pend_layout.n_i, n)
    ring = tuple(pend_layout.unpack(rf[k], ri[k]) for k in range(config.ring))
    new_state = KernelState(jax.tree_util.tree_map(jnp.asarray, lanes), jax.tree_util.tree_map(jnp.asarray, ring))
    metrics = _finalize(config)(sf, si)
    return (metrics, new_state) if return_state else metrics


@contextlib.contextmanager
def _deep_recursion(limit: int = 100_000):
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def _run_threads(kernel, args, n_lanes: int, block: int, threads: int) -> None:
    """Blocks of lanes split over ``threads`` threads.  The kernel releases the GIL, so plain
    threads run in parallel (numba's own parallel loops would recompile the whole step inside
    a generated gufunc, tripling the compile time)."""
    n_blocks = -(-n_lanes // block) if block > 0 else n_lanes  # the scalar kernel takes lane ranges
    n_threads = max(1, min(n_blocks, threads))
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
    """The metrics of every lane from its final state, compiled like the step (one lane per
    iteration, no FMA contraction): a lane's metrics then never depend on how many lanes ran
    beside it (XLA's vectorised finalize could round differently per batch shape)."""
    init, _body, lane = make_scan_step(config)
    sl = _Layout(init().lanes, np.dtype(config.dtype))
    state_names = jax.tree_util.tree_unflatten(sl.treedef, [f"st{k}" for k in range(len(sl.kinds))])
    what = f"metrics of the lane step of {_policy_name(config.policy)}"
    lines, outs = translate(lane.finalize, (sl.specs(),), (state_names,), what=what, prefix="m")
    keys = list(outs)
    loads = [f"st{k} = {'sf' if kind == 'f' else 'si'}[{row}, c]{' != 0' if kind == 'b' else ''}"
             for k, (kind, row) in enumerate(sl.kinds)]
    stores = [f"out[{j}, c] = {outs[key][0]}" for j, key in enumerate(keys)]
    source = _HEADER.format(version=CODEGEN_VERSION, what=what, market=config.market, fill_model=config.fill_model,
                            dtype=np.dtype(config.dtype).name, ring=config.ring, block="-") + "\n\n" + "\n".join(
        ['@numba.njit(cache=True, error_model="numpy", nogil=True)', "def finalize(sf, si, out):",
         "    for c in range(sf.shape[1]):"] + _indent(loads + lines + stores, 8)) + "\n"
    module = _load_module(source)

    def run(sf, si):
        out = np.zeros((len(keys), sf.shape[1]), np.dtype(config.dtype))
        module.finalize(sf, si, out)
        return {key: out[j] for j, key in enumerate(keys)}

    return run
