"""Which backend runs the lane step, and the CPU settings that make XLA fast.

``auto`` picks numba on a CPU (its vectorised block loop is where a CPU's throughput is) and
JAX on a GPU (XLA, or the Pallas kernel of :mod:`mmsweep.kernels.pallas_backend`).  All of them
run the same lane step (:mod:`mmsweep.kernels.step`) and agree (tests/test_backends.py).
"""
from __future__ import annotations

import os
from typing import Any

#: Backend names an experiment may ask for (``run.backend``).
BACKENDS = ("auto", "jax", "numba")


def resolve(name: str) -> str:
    """``auto`` -> ``numba`` when JAX's default device is a CPU, else ``jax``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    import jax

    return "numba" if jax.default_backend() == "cpu" else "jax"


def run_lanes(params: dict[str, Any], rows: dict[str, Any], config, backend: str = "auto", *, record: bool = False,
              state=None, return_state: bool = False):
    """:func:`mmsweep.kernels.scan.run_lanes` on ``backend`` (per-row records need JAX)."""
    backend = resolve(backend)
    if backend == "numba" and not record:
        import numpy as np

        from .numba_backend import run_lanes_numba

        host = {k: np.asarray(v) for k, v in rows.items()}
        return run_lanes_numba({k: np.asarray(v) for k, v in params.items()}, host, config, state=state,
                               return_state=return_state)
    from .scan import run_lanes as run_jax

    return run_jax(params, rows, config, record=record, state=state, return_state=return_state)


def cpu_has_avx512() -> bool:
    """Whether this CPU has AVX-512 (Linux: the ``avx512f`` flag in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


def configure_xla_cpu() -> None:
    """Ask XLA:CPU for 512-bit vectors where the CPU has AVX-512 (XLA prefers 256-bit ones by
    default; on an AVX-512 CPU the JAX kernel measured ~1.7x faster with 512).  Appends
    ``--xla_cpu_prefer_vector_width=512`` to ``XLA_FLAGS`` unless that flag is already set or
    ``MMSWEEP_XLA_VECTOR_WIDTH=0``.  Takes effect only before JAX starts its CPU backend, so
    mmsweep calls it when it is imported."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_prefer_vector_width" in flags or os.environ.get("MMSWEEP_XLA_VECTOR_WIDTH") == "0":
        return
    if cpu_has_avx512():
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_prefer_vector_width=512").strip()
