"""A small translator from scalar jaxprs to numba-compilable Python source.

JAX traces a pure function of scalars (and short 1-d arrays) into a jaxpr; this module writes
the jaxpr out as straight-line Python, one assignment per elementwise equation, that
``numba.njit`` compiles.  The jaxpr is the single source of truth: the numba backend of the
sweep kernel and the exact replay engine run the same maths as the JAX kernel, with no
hand-written copy to drift.  Shape-only primitives (broadcasts, slices, gathers at constant
indices) are resolved at translation time; integer constant arithmetic is folded.

Floating point follows IEEE like XLA without fast-math, with one difference: XLA:CPU may fuse a
multiply and an add into one FMA, which rounds once, where numba rounds twice; results can then
differ in the last bit (tests state the tolerances).  ``max``/``min`` propagate NaN as XLA does.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numba
import numpy as np
from jax import enable_x64
from jax.extend import core as jcore
from numba import types as nbt
from llvmlite import ir
from numba.extending import intrinsic

__all__ = ["jaxpr_to_source", "translate", "njit_source", "Translator", "Val"]

# Call-like primitives whose sub-jaxpr is inlined (names as in jax 0.4.30 .. 0.10).
_CALLS = {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr", "remat", "checkpoint", "remat2", "custom_lin"}
_SUBJAXPR_KEYS = ("jaxpr", "call_jaxpr", "fun_jaxpr")

# Shape-only primitives: evaluated on arrays of element ids (operands in _INDEX_OPERANDS must be
# compile-time constants, e.g. gather indices / dynamic_slice starts).
_STRUCTURAL = {"broadcast_in_dim", "reshape", "squeeze", "expand_dims", "slice", "dynamic_slice",
               "gather", "transpose", "rev", "concatenate", "pad", "iota", "stack", "split"}
_INDEX_OPERANDS = {"gather": lambda n: {1}, "dynamic_slice": lambda n: set(range(1, n))}
_IDENTITY = {"stop_gradient", "copy", "copy_p", "optimization_barrier", "reduce_precision_noop"}

# Elementwise primitives: format strings over operand expressions a, b, c.
_UNARY = {
    "neg": "(-{a})", "floor": "np.floor({a})", "ceil": "np.ceil({a})", "abs": "abs({a})",
    "sqrt": "np.sqrt({a})", "rsqrt": "(1.0 / np.sqrt({a}))", "cbrt": "np.cbrt({a})",
    "exp": "np.exp({a})", "exp2": "np.exp2({a})", "log": "np.log({a})", "log1p": "np.log1p({a})",
    "expm1": "np.expm1({a})", "tanh": "np.tanh({a})", "sin": "np.sin({a})", "cos": "np.cos({a})",
    "tan": "np.tan({a})", "asin": "np.arcsin({a})", "acos": "np.arccos({a})",
    "atan": "np.arctan({a})", "sinh": "np.sinh({a})", "cosh": "np.cosh({a})",
    "asinh": "np.arcsinh({a})", "acosh": "np.arccosh({a})", "atanh": "np.arctanh({a})",
    "logistic": "(1.0 / (1.0 + np.exp(-{a})))", "is_finite": "np.isfinite({a})",
    "square": "({a} * {a})", "erf": "math.erf({a})", "population_count": "_popcount({a})",
}
_BINARY = {
    "add": "({a} + {b})", "sub": "({a} - {b})", "mul": "({a} * {b})",
    "pow": "np.power({a}, {b})", "atan2": "np.arctan2({a}, {b})", "nextafter": "np.nextafter({a}, {b})",
    "shift_left": "({a} << {b})", "shift_right_arithmetic": "({a} >> {b})",
    "eq": "({a} == {b})", "ne": "({a} != {b})", "lt": "({a} < {b})", "le": "({a} <= {b})",
    "gt": "({a} > {b})", "ge": "({a} >= {b})",
    "and": "({a} & {b})", "or": "({a} | {b})", "xor": "({a} ^ {b})",
}

_ELEMENTWISE = set(_UNARY) | set(_BINARY) | {"div", "rem", "max", "min", "not", "round", "sign",
                                              "integer_pow", "clamp", "select_n", "convert_element_type"}


# ----------------------------------------------------------------------------- runtime helpers
# (globals of the generated source; NaN-propagating like XLA and numpy's maximum/minimum)

@numba.njit(error_model="numpy")
def _fmax(a, b):
    return a if (a >= b or a != a) else b


@numba.njit(error_model="numpy")
def _fmin(a, b):
    return a if (a <= b or a != a) else b


@numba.njit(error_model="numpy")
def _sign(a):  # floats: +-1, and 0, -0.0, NaN unchanged (as lax.sign / np.sign)
    return 1.0 if a > 0 else (-1.0 if a < 0 else a)


@numba.njit(error_model="numpy")
def _round_away(a):
    t = np.trunc(a)
    if abs(a - t) >= 0.5:
        t += np.copysign(1.0, a)
    return t


@numba.njit(error_model="numpy")
def _idiv(a, b):  # C (truncating) integer division, as lax.div on integers
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


@numba.njit(error_model="numpy")
def _irem(a, b):  # C (truncating) integer remainder, as lax.rem on integers
    return a - _idiv(a, b) * b


@intrinsic
def _popcount(typingctx, x):
    """Set bits of an integer: LLVM's ``ctpop``, which vectorises (numba has no popcount)."""
    if not isinstance(x, nbt.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return x(x), codegen


def _int32_shift(kind: str):
    """A 32-bit shift (numba computes int32 maths in int64, and LLVM cannot narrow a shift by a
    variable amount back to 32 bits: half the lanes per vector).  Amounts must be in 0..31."""

    @intrinsic
    def shift(typingctx, x, y):
        if not (isinstance(x, nbt.Integer) and isinstance(y, nbt.Integer)):
            return None

        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)
            a, b = (builder.trunc(v, i32) if v.type.width > 32 else builder.sext(v, i32) if v.type.width < 32 else v
                    for v in args)
            return builder.shl(a, b) if kind == "left" else builder.ashr(a, b)

        return nbt.int32(x, y), codegen

    return shift


_shl32 = _int32_shift("left")
_shr32 = _int32_shift("right")

_GLOBALS = {"np": np, "math": math, "_INF": math.inf, "_NAN": math.nan, "_fmax": _fmax,
            "_fmin": _fmin, "_sign": _sign, "_round_away": _round_away, "_idiv": _idiv, "_popcount": _popcount, "_shl32": _shl32,
            "_shr32": _shr32,
            "_irem": _irem}


# ----------------------------------------------------------------------------- translation

class Val(NamedTuple):
    """A jaxpr value: static shape/dtype, one Python expression per element (row-major), and
    its concrete value when known at translation time."""

    shape: tuple
    dtype: np.dtype
    items: tuple
    const: Any = None


def _lit(x, dtype: np.dtype) -> str:
    """A scalar literal, full precision."""
    if dtype == np.bool_:
        return "True" if bool(x) else "False"
    if np.issubdtype(dtype, np.integer):
        s = repr(int(x))
        s = s if dtype == np.int64 else f"np.{dtype.name}({s})"
    elif np.issubdtype(dtype, np.floating):
        v = float(x)
        s = "_NAN" if math.isnan(v) else ("_INF" if v > 0 else "-_INF") if math.isinf(v) else repr(v)
        s = s if dtype == np.float64 else f"np.{dtype.name}({s})"
    else:
        raise NotImplementedError(f"constant of dtype {dtype}")
    return f"({s})" if s.startswith("-") else s


def _const_val(value) -> Val:
    arr = np.asarray(value)
    return Val(arr.shape, arr.dtype, tuple(_lit(x, arr.dtype) for x in arr.reshape(-1)), arr)


def _live_eqns(jaxpr) -> list:
    """The equations whose results reach an output (dead code dropped)."""
    live = {v for v in jaxpr.outvars if not isinstance(v, jcore.Literal)}
    keep = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars):
            keep.append(eqn)
            live.update(v for v in eqn.invars if not isinstance(v, jcore.Literal))
    return keep[::-1]


class Translator:
    """Walks a jaxpr and appends one source line per elementwise equation to ``lines``.

    ``inline`` writes max/min/sign/round as branch-free expressions instead of calls to the
    helper functions, so that a loop over lanes around the generated code vectorises.
    """

    def __init__(self, what: str, inline: bool = False, prefix: str = "v"):
        self.what = what
        self.inline = inline
        self.prefix = prefix
        self.lines: list[str] = []
        self.seen: dict = {}
        self.count = 0

    def fresh(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count}"

    def fail(self, msg: str):
        raise NotImplementedError(f"{msg} (translating {self.what})")

    # -- jaxpr walking
    def run(self, jaxpr, consts, args: list[Val]) -> list[Val]:
        env: dict = {}

        def read(atom) -> Val:
            if isinstance(atom, jcore.Literal):
                return _const_val(atom.val)
            return env[atom]

        for var, c in zip(jaxpr.constvars, consts):
            env[var] = _const_val(c)
        for var, a in zip(jaxpr.invars, args):
            env[var] = a
        for eqn in _live_eqns(jaxpr):
            outs = self.eqn(eqn, [read(a) for a in eqn.invars])
            for var, val in zip(eqn.outvars, outs):
                env[var] = val
        return [read(a) for a in jaxpr.outvars]

    def eqn(self, eqn, ins: list[Val]) -> list[Val]:
        name = eqn.primitive.name
        outs_aval = [v.aval for v in eqn.outvars]
        if name in _CALLS:
            for key in _SUBJAXPR_KEYS:
                sub = eqn.params.get(key)
                if isinstance(sub, jcore.ClosedJaxpr):
                    return self.run(sub.jaxpr, sub.consts, ins)
                if isinstance(sub, jcore.Jaxpr):
                    return self.run(sub, (), ins)
            self.fail(f"call primitive {name!r} without a sub-jaxpr")
        if name in _IDENTITY:
            return list(ins)
        if name in _STRUCTURAL:
            return self.structural(eqn, ins)
        if all(v.const is not None for v in ins) and not any(
                np.issubdtype(np.dtype(a.dtype), np.inexact) for a in outs_aval):
            return self.fold(eqn, ins)  # integer/bool constant maths (index arithmetic)
        if name == "convert_element_type" and ins[0].const is not None:
            return self.fold(eqn, ins)
        if name not in _ELEMENTWISE or len(outs_aval) != 1:
            self.fail(f"unsupported primitive {name!r}")
        return [self.elementwise(eqn, name, ins, outs_aval[0])]

    def fold(self, eqn, ins):
        with enable_x64():
            out = eqn.primitive.bind(*[jnp.asarray(v.const) for v in ins], **eqn.params)
        outs = out if eqn.primitive.multiple_results else [out]
        return [_const_val(np.asarray(o)) for o in outs]

    def structural(self, eqn, ins):
        name = eqn.primitive.name
        index_ops = _INDEX_OPERANDS.get(name, lambda n: set())(len(ins))
        if all(v.const is not None for v in ins):
            return self.fold(eqn, ins)
        args, pool = [], []
        for i, v in enumerate(ins):
            if i in index_ops:
                if v.const is None:
                    self.fail(f"{name!r} with a traced (data-dependent) index")
                args.append(v.const)
            else:  # element ids stand in for the data
                args.append(np.arange(len(pool), len(pool) + len(v.items), dtype=np.int64).reshape(v.shape))
                pool.extend(v.items)
        params = dict(eqn.params)
        fill = None
        if name == "gather" and "FILL" in str(params.get("mode")).upper():
            dtype = np.dtype(eqn.outvars[0].aval.dtype)
            if params.get("fill_value") is not None:
                fill = _lit(params["fill_value"], dtype)
            elif np.issubdtype(dtype, np.inexact):
                fill = _lit(math.nan, dtype)
            params["fill_value"] = -1  # out-of-bounds reads come back as id -1
        with enable_x64():
            out = eqn.primitive.bind(*[jnp.asarray(a) for a in args], **params)
        outs = out if eqn.primitive.multiple_results else [out]
        vals = []
        for o, var in zip(outs, eqn.outvars):
            ids = np.asarray(o).reshape(-1)
            if ids.size and (ids.max() >= len(pool) or (ids.min() < 0 and fill is None)):
                self.fail(f"{name!r} reading out of bounds")
            items = tuple(fill if i < 0 else pool[i] for i in ids)
            vals.append(Val(tuple(var.aval.shape), np.dtype(var.aval.dtype), items))
        return vals

    def elementwise(self, eqn, name, ins, aval) -> Val:
        dtype = np.dtype(aval.dtype)
        shape = tuple(aval.shape)
        size = int(np.prod(shape, dtype=np.int64))
        for v in ins:
            if len(v.items) not in (1, size):
                self.fail(f"{name!r} on operands of shapes {[w.shape for w in ins]}")
        in_dtypes = [v.dtype for v in ins]
        is_float = bool(ins) and np.issubdtype(in_dtypes[0], np.inexact)
        p = eqn.params
        items = []
        for i in range(size):
            ops = [v.items[i] if len(v.items) == size else v.items[0] for v in ins]
            same = self.identity(name, ops, is_float, dtype, in_dtypes)
            if same is not None:
                items.append(same)
                continue
            key = (name, tuple(ops), dtype.str, tuple(sorted((k, str(v)) for k, v in p.items())))
            if key in self.seen:  # common subexpression: the same op on the same operands
                items.append(self.seen[key])
                continue
            expr = self.expr(name, ops, in_dtypes, dtype, is_float, p)
            if self.inline and dtype in (np.int32, np.int16, np.int8, np.uint32) and name != "convert_element_type":
                # numba computes integer maths in int64; the explicit narrowing lets LLVM keep
                # int32 vectors (twice the lanes per instruction)
                expr = f"np.{dtype.name}({expr})"
            var = self.fresh()
            self.lines.append(f"{var} = {expr}")
            self.seen[key] = var
            items.append(var)
        return Val(shape, dtype, tuple(items))

    def identity(self, name, ops, is_float, dtype, in_dtypes):
        """An operand that the op returns unchanged, bit for bit (x*1, x-0, int x+0, int 0*x
        -> 0), else None; keeps the generated code (and numba's typing time) small."""
        if len(ops) != 2 or any(np.dtype(d) != dtype for d in in_dtypes):
            return None
        a, b = ops
        one = _lit(1, dtype)
        zero = _lit(0, dtype)
        if name == "mul":
            if b == one:
                return a
            if a == one:
                return b
            if not is_float and zero in (a, b):
                return zero
        if name == "sub" and b == zero:
            return a
        if name == "add" and not is_float:
            if b == zero:
                return a
            if a == zero:
                return b
        if name in ("or", "xor") and not is_float and dtype != np.bool_:
            if b == zero:
                return a
            if a == zero:
                return b
        if name in ("shift_left", "shift_right_arithmetic") and b == zero:
            return a
        return None

    def expr(self, name, ops, in_dtypes, dtype, is_float, p) -> str:
        a = ops[0] if ops else None
        b = ops[1] if len(ops) > 1 else None
        if name in _UNARY:
            return _UNARY[name].format(a=a)
        if name in ("shift_left", "shift_right_arithmetic") and self.inline and dtype == np.int32:
            return f"{'_shl32' if name == 'shift_left' else '_shr32'}({a}, {b})"
        if name in _BINARY:
            return _BINARY[name].format(a=a, b=b)
        if name == "div":
            return f"({a} / {b})" if is_float else f"_idiv({a}, {b})"
        if name == "rem":
            return f"np.fmod({a}, {b})" if is_float else f"_irem({a}, {b})"
        if name == "sign" and is_float and self.inline:  # +-1, and 0, -0.0, NaN unchanged
            one, minus = _lit(1.0, dtype), _lit(-1.0, dtype)
            return f"({one} if {a} > 0 else ({minus} if {a} < 0 else {a}))"
        if name == "sign":
            return f"_sign({a})" if is_float else f"(({a} > 0) - ({a} < 0))"
        if name in ("max", "min") and self.inline:
            if not is_float:
                return f"({a} if {a} {'>=' if name == 'max' else '<='} {b} else {b})"
            # NaN-propagating like XLA: a NaN operand wins
            cmp = ">=" if name == "max" else "<="
            return f"({a} if (({a} {cmp} {b}) | ({a} != {a})) else {b})"
        if name == "max":
            return f"_fmax({a}, {b})"
        if name == "min":
            return f"_fmin({a}, {b})"
        if name == "not":
            return f"(not {a})" if in_dtypes[0] == np.bool_ else f"(~{a})"
        if name == "round":
            method = int(p.get("rounding_method", 0))
            return f"np.rint({a})" if method == 1 else f"_round_away({a})"
        if name == "integer_pow":
            y = int(p["y"])  # numpy's fast paths for x**y, else libm pow
            return {0: "1.0" if is_float else "1", 1: a, 2: f"({a} * {a})",
                    -1: f"(1.0 / {a})"}.get(y, f"np.power({a}, {float(y) if is_float else y})")
        if name == "clamp" and self.inline:  # clamp(lo, x, hi) = min(max(x, lo), hi)
            lo_x = self.expr("max", [b, a], in_dtypes, dtype, is_float, p)
            return self.expr("min", [lo_x, ops[2]], in_dtypes, dtype, is_float, p)
        if name == "clamp":  # clamp(lo, x, hi) = min(max(x, lo), hi)
            return f"_fmin(_fmax({b}, {a}), {ops[2]})"
        if name == "select_n":
            pred, cases = a, ops[1:]
            if len(cases) == 1:
                return cases[0]
            if in_dtypes[0] == np.bool_:
                return f"({cases[1]} if {pred} else {cases[0]})"
            out = cases[-1]
            for k in range(len(cases) - 2, -1, -1):
                out = f"({cases[k]} if {pred} == {k} else {out})"
            return out
        if name == "convert_element_type":
            src = in_dtypes[0]
            if dtype == np.bool_:
                return f"({a} != 0)"
            if dtype == np.float64:
                return f"(1.0 if {a} else 0.0)" if src == np.bool_ else f"float({a})"
            return f"np.{dtype.name}({a})"
        self.fail(f"unsupported primitive {name!r}")


def source(fname: str, signature: str, prologue: list[str], lines: list[str], outs: list[Val],
            header: str) -> str:
    for v in outs:
        if len(v.items) != 1:
            raise NotImplementedError(f"output of shape {v.shape}; expected scalars")
    ret = ", ".join(f"float({v.items[0]})" for v in outs)
    body = prologue + lines + [f"return ({ret},)"]
    return "\n".join([f"# {line}" for line in header.splitlines()]
                     + [f"def {fname}({signature}):"] + [f"    {line}" for line in body]) + "\n"


def njit_source(source: str, fname: str):
    namespace = dict(_GLOBALS)
    exec(compile(source, f"<jaxpr_numba {fname}>", "exec"), namespace)
    return numba.njit(error_model="numpy")(namespace[fname])


def jaxpr_to_source(closed, arg_names: tuple[str, ...], what: str = "jaxpr", fname: str = "f") -> str:
    """Source of a scalar function ``fname(*arg_names)`` computing ``closed`` (a ClosedJaxpr whose
    inputs are scalars or 1-d arrays, outputs scalars returned as a float tuple)."""
    t = Translator(what)
    args = []
    for name, var in zip(arg_names, closed.jaxpr.invars):
        shape, dtype = tuple(var.aval.shape), np.dtype(var.aval.dtype)
        if len(shape) > 1:
            raise NotImplementedError(f"input {name} of shape {shape}")
        items = (name,) if not shape else tuple(f"{name}[{i}]" for i in range(shape[0]))
        args.append(Val(shape, dtype, items))
    outs = t.run(closed.jaxpr, closed.consts, args)
    return source(fname, ", ".join(arg_names), [], t.lines, outs, what)




def translate(fn, args, names, *, what: str, prefix: str = "v", inline: bool = True):
    """Translate ``fn(*args)`` into source lines.

    ``args`` is a tuple of pytrees whose leaves are scalars or 1-d arrays (concrete values or
    ``jax.ShapeDtypeStruct``), traced under float64 when they ask for it; ``names`` has the same
    structure, each leaf the expression that holds that input in the generated code (for a 1-d
    leaf, a tuple of per-element expressions).  Returns ``(lines, outputs)``: the assignments
    (fresh variables named ``<prefix><n>``) and ``fn``'s output pytree with each scalar leaf
    replaced by its expression (``(expression, numpy dtype)``).
    """
    leaves, treedef = jax.tree_util.tree_flatten(args)
    name_leaves = treedef.flatten_up_to(names)
    out_tree = {}

    def flat(*xs):
        out = fn(*jax.tree_util.tree_unflatten(treedef, xs))
        out_leaves, out_tree["def"] = jax.tree_util.tree_flatten(out)
        return out_leaves

    with enable_x64():
        closed = jax.make_jaxpr(flat)(*leaves)
    t = Translator(what, inline=inline, prefix=prefix)
    vals = []
    for name, var in zip(name_leaves, closed.jaxpr.invars):
        shape, dtype = tuple(var.aval.shape), np.dtype(var.aval.dtype)
        if len(shape) > 1:
            raise NotImplementedError(f"input of shape {shape} ({what})")
        items = (name,) if not shape else tuple(name)
        vals.append(Val(shape, dtype, items))
    outs = t.run(closed.jaxpr, closed.consts, vals)
    exprs = []
    for v in outs:
        if len(v.items) != 1:
            raise NotImplementedError(f"output of shape {v.shape}; expected scalars ({what})")
        exprs.append((v.items[0], v.dtype))
    return t.lines, jax.tree_util.tree_unflatten(out_tree["def"], exprs)
