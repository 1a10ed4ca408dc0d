"""Benchmark: `mmsweep demo` end to end, cold and warm, this checkout against another revision,
in one run.

Usage:  python bench/demo_wall.py [--against REV] [--warm 3] [--out demo_wall.json]

Each measurement is the wall time of a fresh `mmsweep demo` process (python -m
mmsweep.sweep.cli demo), as a user types it.  *Cold*: an empty ``MMSWEEP_CACHE`` (so empty
frames, kernel, numba and JAX caches: everything is compiled and built).  *Warm*: the same
cache again with the run folder removed, best of ``--warm``.  With ``--against REV`` the same
is done for that revision (a temporary git worktree), the two alternated so both see the same
machine load; the two revisions' ``results.parquet`` must be equal, else the changed code
changed the results.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from frames_build import checkouts  # noqa: E402

#: variables that would point the caches elsewhere than the measurement's own folder
CACHE_VARIABLES = ("NUMBA_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR", "MMSWEEP_CACHE", "MMSWEEP_JAX_CACHE")


def run_demo(package_parent: Path, cache: Path, out: Path) -> float:
    """Wall seconds of one `mmsweep demo` process writing to ``out``."""
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES}
    env.update(PYTHONPATH=f"{package_parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", MMSWEEP_CACHE=str(cache))
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mmsweep.sweep.cli", "demo", "--out", str(out)], env=env,
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t
    if done.returncode:
        raise SystemExit(f"mmsweep demo failed:\n{done.stderr[-3000:]}")
    return wall


def same_results(a: Path, b: Path) -> bool:
    import polars as pl

    return pl.read_parquet(a / "demo" / "results.parquet").equals(pl.read_parquet(b / "demo" / "results.parquet"))


@contextlib.contextmanager
def _removed(folder: Path):
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", help="a git revision to measure too (e.g. HEAD~3)")
    ap.add_argument("--warm", type=int, default=3, help="warm runs per revision (the best is reported)")
    ap.add_argument("--out", default="demo_wall.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmsweep-demo-wall-"))
    summary: dict = {}
    with checkouts(args.against) as sides, _removed(work):
        timings: dict[str, dict] = {name: {"cold_s": None, "warm_s": []} for name, _ in sides}
        for k, (name, parent) in enumerate(sides):
            wall = run_demo(parent, work / f"cache{k}", work / f"runs{k}")
            timings[name]["cold_s"] = wall
            print(f"{name:>14}  cold  {wall:6.1f} s", flush=True)
        for r in range(args.warm):
            for k, (name, parent) in enumerate(sides):
                wall = run_demo(parent, work / f"cache{k}", work / f"runs{k}")
                timings[name]["warm_s"].append(wall)
                print(f"{name:>14}  warm  {wall:6.1f} s", flush=True)
        summary["runs"] = timings
        if args.against:
            summary["same_results"] = same_results(work / "runs0", work / "runs1")
    for name, t in timings.items():
        t["warm_best_s"] = min(t["warm_s"])
    if args.against:
        mine, base = timings["this checkout"], timings[args.against]
        summary["cold_ratio"] = base["cold_s"] / mine["cold_s"]
        summary["warm_ratio"] = base["warm_best_s"] / mine["warm_best_s"]
        print(f"same results: {summary['same_results']}; {args.against} / this checkout: cold "
              f"{summary['cold_ratio']:.2f}x, warm {summary['warm_ratio']:.2f}x (best of {args.warm})")
        if not summary["same_results"]:
            raise SystemExit("the results differ between the two revisions")
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
