"""Benchmark: the frames build of the two-instrument synthetic market, this checkout against
another revision, in one run.

Usage:  python bench/frames_build.py [--hours 3] [--against REV] [--repeats 2] [--out frames_build.json]

Each measurement is a fresh process that builds the frames store of ``--hours`` hours of the
market of ``experiments/apt_two_months.yaml`` (futures + spot, one-hour pieces, 100 ms rows, three
spot return features) in an empty cache, after a short warm-up build that loads the compiled
code.  It reports wall time, CPU time (user + system, all threads: the next piece is generated
in a thread meanwhile) and a digest of every stored column.  With ``--against REV`` the same is
done for that revision (checked out into a temporary git worktree), alternating the two, so
both see the same machine load; the two digests must be equal, else the changed code changed
the frames.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

CHILD = r"""
import hashlib, json, os, resource, sys, tempfile, time
sys.path.insert(0, {bench!r})
os.environ["MMSWEEP_CACHE"] = tempfile.mkdtemp(prefix="mmsweep-fb-")
from scale import experiment
from mmsweep.sweep.config import parse_experiment
from mmsweep.sweep.run import prepare
prepare(parse_experiment(experiment(0.05, 16)), log=lambda *_: None)  # load the compiled code
r0 = resource.getrusage(resource.RUSAGE_SELF); t = time.perf_counter()
prep = prepare(parse_experiment(experiment({hours!r}, 16)), log=lambda *_: None)
wall = time.perf_counter() - t; r1 = resource.getrusage(resource.RUSAGE_SELF)
frames = prep.frames.to_frames()
digest = hashlib.sha256(frames.features.tobytes())
for name in sorted(frames.columns):
    digest.update(name.encode()); digest.update(frames.columns[name].tobytes())
print(json.dumps({{"wall_s": wall, "cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
                  "rows": len(frames), "digest": digest.hexdigest()[:16]}}))
"""


def measure(package_parent: Path, hours: float) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{package_parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    code = CHILD.format(bench=str(HERE), hours=hours)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if out.returncode:
        raise SystemExit(f"frames build failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def checkouts(against: str | None):
    """``[(name, folder to put on PYTHONPATH)]``: this checkout as package ``mmsweep`` (whatever
    is installed), then REV ``against`` (a temporary git worktree) when given; removed after."""
    here = Path(tempfile.mkdtemp(prefix="mmsweep-here-"))
    (here / "mmsweep").symlink_to(REPO, target_is_directory=True)
    other = Path(tempfile.mkdtemp(prefix="mmsweep-rev-")) if against else None
    try:
        if other is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(other / "mmsweep"),
                            against], check=True)
        yield [("this checkout", here)] + ([(against, other)] if other is not None else [])
    finally:
        if other is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(other / "mmsweep")])
            shutil.rmtree(other, ignore_errors=True)
        shutil.rmtree(here, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--against", help="a git revision to measure too (e.g. HEAD~1)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="frames_build.json")
    args = ap.parse_args()
    rows = []
    with checkouts(args.against) as sides:
        for r in range(args.repeats):
            for name, parent in sides:
                m = measure(parent, args.hours)
                m.update(code=name, repeat=r)
                rows.append(m)
                print(f"{name:>14}  {args.hours:g} h  {m['rows']:,} rows  wall {m['wall_s']:6.1f} s  "
                      f"cpu {m['cpu_s']:6.1f} s  frames {m['digest']}", flush=True)
    summary = {"hours": args.hours, "runs": rows}
    if args.against:
        mine = [m for m in rows if m["code"] == "this checkout"]
        base = [m for m in rows if m["code"] == args.against]
        summary["same_frames"] = {m["digest"] for m in mine} == {m["digest"] for m in base}
        summary["wall_ratio"] = min(m["wall_s"] for m in base) / min(m["wall_s"] for m in mine)
        summary["cpu_ratio"] = min(m["cpu_s"] for m in base) / min(m["cpu_s"] for m in mine)
        print(f"same frames: {summary['same_frames']}; {args.against} / this checkout: wall "
              f"{summary['wall_ratio']:.2f}x, cpu {summary['cpu_ratio']:.2f}x (best of {args.repeats})")
        if not summary["same_frames"]:
            raise SystemExit("the frames differ between the two revisions")
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
