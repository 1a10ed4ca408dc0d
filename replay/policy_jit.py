"""Quoting policies as numba-compiled scalar functions, generated from their JAX trace.

numba cannot compile a policy's ``quote`` directly: it takes the array namespace ``xp`` (a module)
as an argument and resolves parameters by Python-level dict lookups.  So the policy is traced
once with ``jax.make_jaxpr`` (float64, market and static config closed over) and the jaxpr is
translated into the Python source of a straight-line scalar function, which ``numba.njit``
compiles.  The jaxpr is the single source of truth: the replay engine runs the same maths as the
sweep kernel, with no hand-written numba copy to drift.
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

from ..kernels.policies import bind, get_policy
from ..kernels.policies.base import Market, Observation

__all__ = ["OUTPUTS", "compile_policy"]

OUTPUTS = ("bid_top", "ask_top", "step", "bid_levels", "ask_levels", "bid_qty", "ask_qty")

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
    "square": "({a} * {a})", "erf": "math.erf({a})",
}
_BINARY = {
    "add": "({a} + {b})", "sub": "({a} - {b})", "mul": "({a} * {b})",
    "pow": "np.power({a}, {b})", "atan2": "np.arctan2({a}, {b})", "nextafter": "np.nextafter({a}, {b})",
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


_GLOBALS = {"np": np, "math": math, "_INF": math.inf, "_NAN": math.nan, "_fmax": _fmax,
            "_fmin": _fmin, "_sign": _sign, "_round_away": _round_away, "_idiv": _idiv,
            "_irem": _irem}


# ----------------------------------------------------------------------------- translation

class _Val(NamedTuple):
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


def _const_val(value) -> _Val:
    arr = np.asarray(value)
    return _Val(arr.shape, arr.dtype, tuple(_lit(x, arr.dtype) for x in arr.reshape(-1)), arr)


def _live_eqns(jaxpr) -> list:
    """The equations whose results reach an output (dead code dropped)."""
    live = {v for v in jaxpr.outvars if not isinstance(v, jcore.Literal)}
    keep = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars):
            keep.append(eqn)
            live.update(v for v in eqn.invars if not isinstance(v, jcore.Literal))
    return keep[::-1]


class _Translator:
    def __init__(self, what: str):
        self.what = what
        self.lines: list[str] = []
        self.count = 0

    def fresh(self) -> str:
        self.count += 1
        return f"v{self.count}"

    def fail(self, msg: str):
        raise NotImplementedError(f"{msg} (translating {self.what})")

    # -- jaxpr walking
    def run(self, jaxpr, consts, args: list[_Val]) -> list[_Val]:
        env: dict = {}

        def read(atom) -> _Val:
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

    def eqn(self, eqn, ins: list[_Val]) -> list[_Val]:
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
            vals.append(_Val(tuple(var.aval.shape), np.dtype(var.aval.dtype), items))
        return vals

    def elementwise(self, eqn, name, ins, aval) -> _Val:
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
            expr = self.expr(name, ops, in_dtypes, dtype, is_float, p)
            var = self.fresh()
            self.lines.append(f"{var} = {expr}")
            items.append(var)
        return _Val(shape, dtype, tuple(items))

    def expr(self, name, ops, in_dtypes, dtype, is_float, p) -> str:
        a = ops[0] if ops else None
        b = ops[1] if len(ops) > 1 else None
        if name in _UNARY:
            return _UNARY[name].format(a=a)
        if name in _BINARY:
            return _BINARY[name].format(a=a, b=b)
        if name == "div":
            return f"({a} / {b})" if is_float else f"_idiv({a}, {b})"
        if name == "rem":
            return f"np.fmod({a}, {b})" if is_float else f"_irem({a}, {b})"
        if name == "sign":
            return f"_sign({a})" if is_float else f"(({a} > 0) - ({a} < 0))"
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


def _source(fname: str, signature: str, prologue: list[str], lines: list[str], outs: list[_Val],
            header: str) -> str:
    for v in outs:
        if len(v.items) != 1:
            raise NotImplementedError(f"output of shape {v.shape}; expected scalars")
    ret = ", ".join(f"float({v.items[0]})" for v in outs)
    body = prologue + lines + [f"return ({ret},)"]
    return "\n".join([f"# {line}" for line in header.splitlines()]
                     + [f"def {fname}({signature}):"] + [f"    {line}" for line in body]) + "\n"


def _njit_source(source: str, fname: str):
    namespace = dict(_GLOBALS)
    exec(compile(source, f"<policy_jit {fname}>", "exec"), namespace)
    return numba.njit(error_model="numpy")(namespace[fname])


def jaxpr_to_source(closed, arg_names: tuple[str, ...], what: str = "jaxpr", fname: str = "f") -> str:
    """Source of a scalar function ``fname(*arg_names)`` computing ``closed`` (a ClosedJaxpr whose
    inputs are scalars or 1-d arrays, outputs scalars returned as a float tuple)."""
    t = _Translator(what)
    args = []
    for name, var in zip(arg_names, closed.jaxpr.invars):
        shape, dtype = tuple(var.aval.shape), np.dtype(var.aval.dtype)
        if len(shape) > 1:
            raise NotImplementedError(f"input {name} of shape {shape}")
        items = (name,) if not shape else tuple(f"{name}[{i}]" for i in range(shape[0]))
        args.append(_Val(shape, dtype, items))
    outs = t.run(closed.jaxpr, closed.consts, args)
    return _source(fname, ", ".join(arg_names), [], t.lines, outs, what)


# ----------------------------------------------------------------------------- policies

def _freeze(x):
    if isinstance(x, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    return x


def _trace(name: str, static: dict | None, market: Market, param_names: tuple[str, ...]):
    module = get_policy(name)
    unknown = [p for p in param_names if p not in module.PARAMS]
    if unknown:
        raise KeyError(f"unknown parameter(s) {unknown} for policy {name!r}; known: {sorted(module.PARAMS)}")
    if len(set(param_names)) != len(param_names):
        raise ValueError(f"duplicate parameter names in {param_names}")
    quote = bind(name, static)

    def fn(params, bid, ask, features, position):
        q = quote(dict(zip(param_names, params)), Observation(bid, ask, features), position, market, jnp)
        return (q.bid_top, q.ask_top, q.step, q.bid_levels, q.ask_levels) + tuple(q.sizes())

    scalar = jax.ShapeDtypeStruct((), jnp.float64)
    with enable_x64():
        return jax.make_jaxpr(fn)(tuple(scalar for _ in param_names), scalar, scalar,
                                  jax.ShapeDtypeStruct((len(market.feature_names),), jnp.float64), scalar)


_SIGNATURE = (nbt.Array(nbt.float64, 1, "C"), nbt.float64, nbt.float64, nbt.Array(nbt.float64, 1, "C"),
              nbt.float64)


@lru_cache(maxsize=256)
def _compile(name: str, static_key, market: Market, param_names: tuple[str, ...]):
    static = None if static_key is None else dict(static_key)
    what = f"policy {name!r} (static={static}, params={list(param_names)})"
    closed = _trace(name, static, market, param_names)
    n_p, n_k = len(param_names), len(market.feature_names)
    if len(closed.jaxpr.invars) != n_p + 3 + 1:
        raise AssertionError(f"unexpected jaxpr inputs for {what}")
    args = ([_Val((), np.dtype(np.float64), (f"params[{i}]",)) for i in range(n_p)]
            + [_Val((), np.dtype(np.float64), ("bid",)), _Val((), np.dtype(np.float64), ("ask",)),
               _Val((n_k,), np.dtype(np.float64), tuple(f"features[{k}]" for k in range(n_k))),
               _Val((), np.dtype(np.float64), ("position",))])
    t = _Translator(what)
    outs = t.run(closed.jaxpr, closed.consts, args)
    if len(outs) != len(OUTPUTS):
        raise AssertionError(f"{what}: {len(outs)} outputs, expected {len(OUTPUTS)}")
    header = (f"generated by mmsweep.replay.policy_jit from the jaxpr of {what}\n"
              f"market={market}\nreturns {OUTPUTS}")
    fname = f"policy_{name}"
    source = _source(fname, "params, bid, ask, features, position", [], t.lines, outs, header)
    f = _njit_source(source, fname)
    f.compile(_SIGNATURE)
    f.source = source
    f.jaxpr = closed
    f.param_names = param_names
    return f


def compile_policy(name: str, static: dict | None, market: Market, param_names: tuple[str, ...]):
    """The policy ``name`` as a numba dispatcher (memoised).

    ``f(params: float64[P], bid: float64, ask: float64, features: float64[K], position: float64)
    -> (bid_top, ask_top, step, bid_levels, ask_levels, bid_qty, ask_qty)`` (7 float64): the
    :class:`Quote` fields (rel ticks, step, levels as whole numbers) and ``Quote.sizes()`` (qty
    units), exactly what ``quote(params, obs, position, market, numpy)`` computes.
    ``params[i]`` is parameter ``param_names[i]``; unlisted parameters take the policy defaults
    (a missing required one raises KeyError).  ``bid``/``ask`` are rel ticks (see base.py),
    ``features`` has one entry per ``market.feature_names``, ``position`` is in qty units.

    Callable from Python and from ``@numba.njit`` code (as an argument or a global).  The
    generated source is ``f.source``, the traced jaxpr ``f.jaxpr``.  Raises NotImplementedError
    naming the primitive if the policy uses one the translator does not know.
    """
    static_key = None if static is None else _freeze(dict(static))
    market = Market(*(_freeze(v) for v in market))
    return _compile(name, static_key, market, tuple(param_names))
