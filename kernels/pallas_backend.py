"""The GPU backend: the lane step looping over rows *inside* one Pallas kernel launch.

XLA compiles ``lax.scan`` into a device loop that launches the body's kernels on every row, and
each launch costs microseconds whatever the lane count, so a scan over 36k rows is capped by
launch overhead and by a round trip of the whole lane state through device memory per row.
Here one program handles a block of lanes: its state lives in registers, the loop over rows
runs inside the kernel (``lax.fori_loop``), and each row's frame values are read once per
program (the same addresses for every program, so they come from cache).

The step is :func:`mmsweep.kernels.scan.make_scan_step`'s body, vmapped over the block: the same
lane functions as every other backend.  ``interpret=True`` runs the kernel with Pallas's
interpreter on any device, which is how the tests check it on CPUs (tests/test_backends.py).
Block dimensions are padded to powers of two, as the Triton lowering requires.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .scan import KernelState, _initial_state, make_scan_step
from .step import ROW_COLUMNS, KernelConfig, window_columns

#: Lanes per program (a power of two; 128 = four warps of 32 threads, one lane per thread).
DEFAULT_BLOCK = 128


@jax.tree_util.register_pytree_node_class
class _FeatureRow:
    """One row's features as separate scalars that index like ``features[..., k]``: the Triton
    lowering has no rule for slicing an array value, so the kernel never builds one."""

    def __init__(self, values):
        self.values = tuple(values)

    def __getitem__(self, index):
        k = index[-1] if isinstance(index, tuple) else index
        return self.values[k]

    def tree_flatten(self):
        return self.values, None

    @classmethod
    def tree_unflatten(cls, _aux, values):
        return cls(values)


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _columns(config: KernelConfig) -> list[str]:
    lane = make_scan_step(config)[2]
    win = set(window_columns(lane.fill_model, "a").values()) | set(window_columns(lane.fill_model, "b").values())
    return list(ROW_COLUMNS) + sorted(win)


def _pack(leaves, n_rows_pad: int, dtype):
    """Leaves ``[lanes]`` stacked as ``[rows_pad, lanes]`` (zero rows beyond the leaves)."""
    n = leaves[0].shape[0]
    out = jnp.zeros((n_rows_pad, n), dtype)
    return out.at[: len(leaves)].set(jnp.stack([jnp.asarray(x, dtype) for x in leaves]))


@functools.lru_cache(maxsize=16)
def _compiled(config: KernelConfig, names: tuple[str, ...], n_lanes: int, n_rows: int, block: int, interpret: bool):
    init, body, lane = make_scan_step(config)
    if lane.fill_model.qty_columns:
        raise NotImplementedError(f"the GPU kernel runs threshold fill models (cross, touch), not {config.fill_model!r}")
    columns = _columns(config)
    dtype = config.dtype
    template = init()
    leaves, treedef = jax.tree_util.tree_flatten(template)
    is_float = [jnp.issubdtype(jnp.result_type(x), jnp.floating) for x in leaves]
    float_idx = [i for i, f in enumerate(is_float) if f]
    int_idx = [i for i, f in enumerate(is_float) if not f]
    nf, ni = _pow2(len(float_idx)), _pow2(len(int_idx))
    n_params = _pow2(max(len(names), 1))
    n_cols = _pow2(len(columns))
    n_feat = len(config.market.feature_names)
    n_feat_pad = _pow2(max(n_feat, 1))
    rows_pad = _pow2(n_rows)
    leaf_dtypes = [jnp.result_type(x) for x in leaves]
    step = jax.vmap(body, in_axes=(0, 0, None))

    def kernel(prm_ref, sf_ref, si_ref, cols_ref, feat_ref, sf_out, si_out):
        params = {k: prm_ref[i, :] for i, k in enumerate(names)}
        vals = [None] * len(leaves)
        for j, i in enumerate(float_idx):
            vals[i] = sf_ref[j, :]
        for j, i in enumerate(int_idx):
            raw = si_ref[j, :]
            vals[i] = (raw != 0) if leaf_dtypes[i] == jnp.bool_ else raw.astype(leaf_dtypes[i])
        carry = jax.tree_util.tree_unflatten(treedef, vals)

        def one_row(t, carry):
            row = {c: cols_ref[j, t] for j, c in enumerate(columns)}
            row["features"] = _FeatureRow(feat_ref[k, t] for k in range(n_feat))
            new, _ = step(params, carry, row)  # the body's conds test this row's (unbatched) facts
            return new

        carry = jax.lax.fori_loop(0, n_rows, one_row, carry)
        out = jax.tree_util.tree_leaves(carry)
        for j, i in enumerate(float_idx):
            sf_out[j, :] = out[i].astype(dtype)
        for j, i in enumerate(int_idx):
            si_out[j, :] = out[i].astype(jnp.int32)

    from jax.experimental import pallas as pl

    grid = (n_lanes // block,)
    lanes_spec = lambda rows: pl.BlockSpec((rows, block), lambda i: (0, i))  # noqa: E731
    whole = lambda shape: pl.BlockSpec(shape, lambda i: (0,) * len(shape))  # noqa: E731
    compiler_params = None
    if not interpret:
        from jax.experimental.pallas import triton as plt

        compiler_params = plt.CompilerParams(num_warps=max(1, block // 32), num_stages=1)
    call = pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct((nf, n_lanes), dtype), jax.ShapeDtypeStruct((ni, n_lanes), jnp.int32)),
        grid=grid,
        in_specs=[lanes_spec(n_params), lanes_spec(nf), lanes_spec(ni), whole((n_cols, rows_pad)),
                  whole((n_feat_pad, rows_pad))],
        out_specs=(lanes_spec(nf), lanes_spec(ni)),
        interpret=interpret,
        compiler_params=compiler_params,
        name="mmsweep_lane_step",
    )

    def run(prm, sf, si, cols, feat):
        return call(prm, sf, si, cols, feat)

    layout = dict(treedef=treedef, float_idx=float_idx, int_idx=int_idx, nf=nf, ni=ni, n_params=n_params,
                  n_cols=n_cols, n_feat_pad=n_feat_pad, rows_pad=rows_pad, columns=columns, leaf_dtypes=leaf_dtypes)
    return jax.jit(run), layout, lane


def run_lanes_pallas(params: dict[str, Any], rows: dict[str, Any], config: KernelConfig, *,
                     state: KernelState | None = None, return_state: bool = False, block: int = DEFAULT_BLOCK,
                     interpret: bool | None = None):
    """:func:`mmsweep.kernels.scan.run_lanes` as one Pallas kernel (same arguments and
    results).  ``interpret`` defaults to True unless JAX's default device is a GPU."""
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    names = tuple(sorted(params))
    n = int(np.shape(params[names[0]])[0]) if names else 1
    block = min(block, _pow2(n))
    n_pad = -(-n // block) * block
    n_rows = int(np.shape(rows["index"])[0])
    fn, layout, lane = _compiled(config, names, n_pad, n_rows, block, bool(interpret))
    dtype = config.dtype

    def pad_lanes(x):
        x = jnp.asarray(x)
        return jnp.concatenate([x, jnp.repeat(x[-1:], n_pad - n, axis=0)]) if n_pad > n else x

    if state is None:
        state = _initial_state(config, n)
    leaves = [pad_lanes(x) for x in jax.tree_util.tree_leaves(state)]
    sf = _pack([leaves[i] for i in layout["float_idx"]], layout["nf"], dtype)
    si = _pack([leaves[i].astype(jnp.int32) for i in layout["int_idx"]], layout["ni"], jnp.int32)
    prm = _pack([pad_lanes(jnp.asarray(params[k], dtype)) for k in names] or [jnp.zeros(n_pad, dtype)],
                layout["n_params"], dtype)
    rows_pad = layout["rows_pad"]
    cols = jnp.zeros((layout["n_cols"], rows_pad), jnp.int32)
    cols = cols.at[: len(layout["columns"]), :n_rows].set(
        jnp.stack([jnp.asarray(rows[c], jnp.int32) for c in layout["columns"]]))
    feat = jnp.zeros((layout["n_feat_pad"], rows_pad), dtype)
    if np.shape(rows["features"])[1]:
        feat = feat.at[: np.shape(rows["features"])[1], :n_rows].set(jnp.asarray(rows["features"], dtype).T)
    sf_out, si_out = fn(prm, sf, si, cols, feat)
    out_leaves = [None] * len(leaves)
    for j, i in enumerate(layout["float_idx"]):
        out_leaves[i] = sf_out[j, :n]
    for j, i in enumerate(layout["int_idx"]):
        raw = si_out[j, :n]
        out_leaves[i] = (raw != 0) if layout["leaf_dtypes"][i] == jnp.bool_ else raw.astype(layout["leaf_dtypes"][i])
    new_state = jax.tree_util.tree_unflatten(layout["treedef"], out_leaves)
    metrics = jax.jit(jax.vmap(lane.finalize))(new_state.lanes)
    return (metrics, new_state) if return_state else metrics
