"""Shared fixtures.  Real captures are read from ../shared/data (never copied here)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


# numba's cache folder is keyed on a digest of the package's sources by ``import mmsweep``
# (mmsweep/__init__.py), before any test module compiles anything
import mmsweep  # noqa: E402,F401

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
