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


def test_frames_build_bench_against_a_revision(tmp_path):
    """bench/frames_build.py builds the same tiny store with this checkout and with HEAD (a git
    worktree), and finds the same frames; the worktree is removed afterwards."""
    out = tmp_path / "fb.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "frames_build.py"), "--hours", "0.02",
                             "--repeats", "1", "--against", "HEAD", "--out", str(out)],
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert len(summary["runs"]) == 2 and all(r["rows"] > 0 for r in summary["runs"])
    assert summary["same_frames"] is True and summary["wall_ratio"] > 0
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert "mmsweep-rev-" not in worktrees
