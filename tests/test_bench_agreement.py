"""bench/agreement.py: fill models the kernel lacks, and unknown cases, stop it at once, named
(its measurements are `mmsweep verify --exhaustive --fill-models`, tested in test_verify.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mmsweep.kernels import fills

KNOWN = tuple(getattr(fills, "NAMES", fills.FILL_MODELS))

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "agreement.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_missing_fill_models_are_named_before_any_work(tmp_path) -> None:
    missing = [m for m in ("queue", "nosuch") if m not in KNOWN]
    result = _bench("--fill-models", ",".join(["cross", "touch", *missing]), "--out", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"fill model {missing[0]!r} is not available" in lines[0], result.stderr
    assert not (tmp_path / "agreement.json").exists()
    result = _bench("no_such_case", "--out", str(tmp_path))
    assert result.returncode == 2 and "'no_such_case'" in result.stderr
