"""GPU throughput: the XLA scan and the Pallas kernel at 65k, 262k and 1M lanes.

Run by ``bench/gpu.sh`` (which sets the import path and ``$OUT``); ``--dry-run`` runs the same
measurements CI-sized on the CPU (Pallas in interpret mode) to check the script itself.

For each strategy (``grid1``, ``grid5``, ``apt``: see bench/common.py) and lane count, each
backend is called once (compilation included; reported apart as *compile*), then timed over
``--repeat`` calls (best kept).  Peak device memory is the allocator's peak since the process
started (``memory_stats()['peak_bytes_in_use']``), so it is cumulative across rows of the
table.  A measurement that fails (a lowering the GPU does not support, memory) is reported
with its error instead of stopping the run; a global deadline (``--deadline-s``) skips what
would not fit, and says so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402


def peak_bytes() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    return float(stats.get("peak_bytes_in_use", float("nan")))


def measure(fn, repeat: int) -> tuple[float, float]:
    """(compile seconds: the first call minus a timed one, best of ``repeat`` calls)."""
    first, best = common.timed(fn, repeat)
    return max(first - best, 0.0), best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, Pallas interpreted")
    ap.add_argument("--lanes", default=None)
    ap.add_argument("--strategies", default="grid1,grid5,apt")
    ap.add_argument("--backends", default="pallas,xla")
    ap.add_argument("--hours", type=float, default=None)
    ap.add_argument("--rows", type=int, default=None, help="rows per call (default: every row)")
    ap.add_argument("--block", type=int, default=128, help="Pallas lanes per program")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--deadline-s", type=float, default=420.0)
    ap.add_argument("--out", default=os.environ.get("OUT", str(ROOT / "out")))
    args = ap.parse_args()
    lanes = args.lanes or ("256,512" if args.dry_run else "65536,262144,1048576")
    hours = args.hours or (0.02 if args.dry_run else 1.0)
    rows_cap = args.rows or (200 if args.dry_run else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from mmsweep.kernels.pallas_backend import run_lanes_pallas
    from mmsweep.kernels.scan import run_lanes as run_xla

    start = time.perf_counter()
    frames, build_s = common.synthetic_frames(hours)
    device = jax.devices()[0]
    header = (f"device {device.device_kind if hasattr(device, 'device_kind') else device} ({jax.default_backend()}), "
              f"jax {jax.__version__}; synthetic market {hours:g} h, {len(frames):,} rows built in {build_s:.1f} s "
              f"(CPU: {common.machine()})")
    print(header, flush=True)
    results = []
    for strategy in args.strategies.split(","):
        for n in (int(x) for x in lanes.split(",")):
            params = common.lanes(strategy, n)
            config = common.kernel_config(frames, strategy, params)
            n_rows = min(len(frames), rows_cap or len(frames))
            rows = common.rows_for(frames, config, n_rows)
            pnl = {}
            for backend in args.backends.split(","):
                entry = {"strategy": strategy, "lanes": n, "rows": n_rows, "backend": backend}
                if time.perf_counter() - start > args.deadline_s:
                    entry["error"] = "skipped: past the deadline"
                    results.append(entry)
                    continue
                try:
                    if backend == "pallas":
                        call = lambda: run_lanes_pallas(params, rows, config, block=args.block,  # noqa: E731
                                                        interpret=args.dry_run)["PnL"]
                    else:
                        call = lambda: run_xla(params, rows, config)["PnL"]  # noqa: E731
                    compile_s, best = measure(call, args.repeat)
                    entry.update(lane_steps_per_s=n * n_rows / best, seconds=best, compile_s=compile_s,
                                 peak_device_bytes=peak_bytes())
                    pnl[backend] = np.asarray(call(), np.float64)
                    if len(pnl) > 1:  # the backends must agree on every lane's PnL
                        first = next(iter(pnl.values()))
                        entry["max_pnl_difference"] = float(np.max(np.abs(pnl[backend] - first)))
                except Exception as exc:  # a failed measurement is reported, the others still run
                    entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    (out / f"error_{strategy}_{n}_{backend}.txt").write_text(traceback.format_exc())
                results.append(entry)
                print(json.dumps(entry), flush=True)

    lines = [f"# GPU throughput\n\n{header}\n", "| strategy | lanes | rows | backend | lane-steps/s | seconds per call "
             "| compile s | peak device memory | max PnL difference to the first backend |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for e in results:
        if "error" in e:
            lines.append(f"| {e['strategy']} | {e['lanes']:,} | {e['rows']:,} | {e['backend']} | {e['error']} | | | | |")
        else:
            lines.append(f"| {e['strategy']} | {e['lanes']:,} | {e['rows']:,} | {e['backend']} | "
                         f"{e['lane_steps_per_s']:.3g} | {e['seconds']:.3f} | {e['compile_s']:.1f} | "
                         f"{e['peak_device_bytes'] / 2**30:.2f} GiB | {e.get('max_pnl_difference', '')} |")
    table = "\n".join(lines) + f"\n\ntotal {time.perf_counter() - start:.0f} s\n"
    (out / "gpu_bench.md").write_text(table)
    (out / "gpu_bench.json").write_text(json.dumps({"header": header, "results": results}, indent=1))
    print(table)


if __name__ == "__main__":
    main()
