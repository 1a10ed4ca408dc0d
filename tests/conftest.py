"""Shared fixtures.  Real captures are read from ../shared/data (never copied here)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$MMSWEEP_SHARED_DATA`` or ``<repo>/../shared/data``; fails loudly if absent."""
    path = Path(os.environ.get("MMSWEEP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.fail(f"real sample data not found at {path}; set MMSWEEP_SHARED_DATA", pytrace=False)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()
