"""bench/gpu.sh runs end to end in its CI-sized dry run (CPU, Pallas interpreted), writes its
tables, and the Pallas kernel agrees with the XLA scan there."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_dry_run(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), JAX_PLATFORMS="cpu", PATH=f"{Path(sys.executable).parent}:"
               f"{os.environ.get('PATH', '')}")
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run", "--strategies", "grid5,apt",
                             "--lanes", "128", "--repeat", "1"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    table = (tmp_path / "gpu_bench.md").read_text()
    assert "| grid5 | 128 |" in table and "| apt | 128 |" in table
    entries = json.loads((tmp_path / "gpu_bench.json").read_text())["results"]
    assert len(entries) == 4 and not any("error" in e for e in entries), entries
    assert all(e["lane_steps_per_s"] > 0 for e in entries)
    assert all(e["max_pnl_difference"] == 0.0 for e in entries if "max_pnl_difference" in e)
