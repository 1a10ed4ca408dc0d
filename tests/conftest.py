"""Shared fixtures.  Real captures are read from ../shared/data (never copied here)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _numba_cache_dir() -> str:
    # numba's on-disk cache is keyed on each function's own file, but a cached function embeds
    # the (inlined) code of functions from other files: after editing one module, callers in
    # other modules would run stale code.  Key the cache on all of the package's sources.
    digest = hashlib.sha256()
    for path in sorted(REPO_ROOT.glob("*/**/*.py")):
        if "tests" not in path.parts and "bench" not in path.parts:
            digest.update(path.read_bytes())
    return str(Path.home() / ".cache" / "mmsweep" / "numba" / digest.hexdigest()[:16])


if not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = _numba_cache_dir()

import pytest  # noqa: E402


def shared_data_dir() -> Path:
    """``$MMSWEEP_SHARED_DATA`` or ``<repo>/../shared/data``; fails loudly if absent."""
    path = Path(os.environ.get("MMSWEEP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.fail(f"real sample data not found at {path}; set MMSWEEP_SHARED_DATA", pytrace=False)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="module")
def x64():
    """JAX in float64 for one test module (``pytestmark = pytest.mark.usefixtures("x64")``),
    restored after it: parity tests compare money to 1e-12, beyond float32's digits."""
    import jax

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
