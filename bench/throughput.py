"""Kernel throughput: lane-steps/s for 1k, 16k and 64k lanes beside a numba single-lane loop.

Run: ``python bench/throughput.py [--hours 1] [--rows 20000] [--lanes 1024,16384,65536]``.
It runs unchanged on a GPU (JAX picks the device); the numba baseline always runs on one CPU
core.  Timings exclude compilation (each size runs twice; the second run is timed) and are
printed as one markdown table, so that ratios come from the same run on the same machine.
The strategy is the skewed grid of the demo (5 levels, cross fills) on the synthetic market.
"""
from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmsweep.kernels.metrics import MetricsConfig
from mmsweep.kernels.policies import bind
from mmsweep.kernels.policies.base import Market
from mmsweep.kernels.reference import run_grid_reference
from mmsweep.kernels.scan import KernelConfig, rebase_frames, run_lanes
from mmsweep.sweep.data.synthetic import SynthConfig, synthetic_market
from mmsweep.sweep.frames import FrameSpec, LatencySpec, build_frames

LEVELS = 5


def lanes(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"half_spread": rng.uniform(0, 40, n), "skew": rng.uniform(0, 5, n), "grid_interval": rng.integers(1, 8, n) * 1.0,
            "n_levels": np.full(n, float(LEVELS)), "order_qty": np.full(n, 0.01), "max_position": np.full(n, 0.5),
            "relative": np.zeros(n)}


def peak_device_bytes() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    return float(stats.get("peak_bytes_in_use", float("nan")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0, help="synthetic market length")
    parser.add_argument("--rows", type=int, default=20_000, help="rows timed per kernel run (a prefix)")
    parser.add_argument("--lanes", default="1024,16384,65536")
    parser.add_argument("--chunk", type=int, default=16384, help="lanes per device call")
    args = parser.parse_args()

    t = time.perf_counter()
    market = synthetic_market(SynthConfig(hours=args.hours, seed=0))
    frames = build_frames(market["futures"], FrameSpec(latency=LatencySpec(entry_ns=10_000_000)))
    print(f"setup: {len(frames):,} rows in {time.perf_counter() - t:.1f} s; device {jax.devices()[0]}")
    base = int(np.median(frames["bid"]))
    config = KernelConfig(bind("grid"), Market(0.1, 0.001, base, (), 0.1, LEVELS), "cross", -0.00005, 1.0,
                          frames.meta["max_lag"] + 1, MetricsConfig(resample_every=10, book_size=1e5), jnp.float32)
    rows = rebase_frames(frames, base, jnp.float32)
    n_rows = min(args.rows, len(frames))
    rows = {k: v[:n_rows] for k, v in rows.items()}

    host = {k: np.asarray(v) for k, v in rows.items()}
    one = {k: v[0] for k, v in lanes(1).items()}
    run_grid_reference(host, base, 0.001, LEVELS, one)  # compile
    t = time.perf_counter()
    repeats = 20
    for _ in range(repeats):
        run_grid_reference(host, base, 0.001, LEVELS, one)
    numba_rate = repeats * n_rows / (time.perf_counter() - t)

    table = [("numba loop, 1 lane, 1 core", 1, numba_rate, float("nan"))]
    for n in (int(x) for x in args.lanes.split(",")):
        params = lanes(n)
        chunks = [{k: v[i:i + args.chunk] for k, v in params.items()} for i in range(0, n, args.chunk)]
        jax.block_until_ready(run_lanes(chunks[0], rows, config))  # compile
        t = time.perf_counter()
        for chunk in chunks:
            jax.block_until_ready(run_lanes(chunk, rows, config))
        rate = n * n_rows / (time.perf_counter() - t)
        table.append((f"JAX kernel, {n:,} lanes", n, rate, peak_device_bytes()))
        print(f"  {n:,} lanes: {rate / 1e6:.2f} M lane-steps/s", flush=True)

    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\n{n_rows:,} rows of 100 ms timed; peak host RSS {rss_gb:.2f} GB; "
          f"load average {open('/proc/loadavg').read().split()[0]}")
    print("| engine | lanes | lane-steps/s | vs numba loop | peak device memory |")
    print("|---|---:|---:|---:|---:|")
    for name, n, rate, peak in table:
        mem = "n/a" if np.isnan(peak) else f"{peak / 1e9:.2f} GB"
        print(f"| {name} | {n:,} | {rate / 1e6:.2f} M | {rate / numba_rate:.2f}x | {mem} |")


if __name__ == "__main__":
    main()
