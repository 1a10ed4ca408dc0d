"""``mmsweep run``: an experiment's lanes through the kernel, chunk by chunk, into a run folder.

Run folder layout::

    <out>/<name>/
        config.json      the resolved experiment and its hash, the sha256 of every input file and
                         the frames cache key: --resume refuses another experiment, data or frames
        manifest.json    data sources, frames cache key and build facts, versions, devices, timings
        chunks/          one parquet per finished chunk (the checkpoint)
        results.parquet  every lane: parameters, train_* and test_* metrics, rank
        .lock            held (flock) while a command writes the folder

An interrupted run keeps every finished chunk; ``--resume`` computes only the missing ones (and
those found damaged), so nothing is lost or repeated, and the final table is identical to an
uninterrupted run's.  Every file is written atomically and the folder is locked for the run's
lifetime (:mod:`mmsweep.sweep.runfolder`): two runs never mix.
The train and test parts are backtested separately, each starting flat (no position, no cash).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError

#: kernel outputs written to results.parquet (prefixed train_/test_); the names experiments use
#: for objective and constraints (hftbacktest's summary columns plus mmsweep's extras).
METRIC_COLUMNS = (
    "SR", "Sortino", "Return", "MaxDrawdown", "ReturnOverMDD", "ReturnOverTrade", "DailyNumberOfTrades",
    "DailyTurnover", "MaxPositionValue", "MaxPositionNotional", "PnL", "Fees", "NumberOfTrades", "TradingValue",
    "MaxAbsPosition", "Rejections", "FinalPosition",
)


@dataclasses.dataclass
class Prepared:
    """Everything a sweep needs, built once: frames, kernel config, the lanes."""

    experiment: Any
    frames: Any
    config: Any
    parts: dict[str, Any]  # "train"/"test" -> device rows
    configs: dict[str, Any]  # "train"/"test" -> KernelConfig (each part's own epoch-aligned metrics)
    lanes: dict[str, np.ndarray]
    manifest: dict[str, Any]
    quoted: Any = None  # the quoted instrument's Events (the exact engine replays them)
    backend: str = "jax"  # the kernel backend that runs the lanes (kernels.backends, resolved)


def experiment_hash(exp) -> str:
    resolved = exp.to_dict()
    resolved.pop("tune", None)  # how mmsweep tune tunes a run does not change the run's lanes
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _split_rows(frames, split) -> int:
    n = len(frames)
    if split.train_end_ms is not None:
        if hasattr(frames, "rows_before"):  # a frames store: its rows are one regular grid
            cut = frames.rows_before(split.train_end_ms * 1_000_000)
        else:
            cut = int(np.searchsorted(frames["local_ts"], split.train_end_ms * 1_000_000, side="left"))
    else:
        cut = int(math.floor(n * (split.train_fraction if split.train_fraction is not None else 1.0)))
    if cut < 2:
        raise InputError(f"the train part has {cut} rows; move the split later", key="split")
    return cut


def part_bounds(frames, split) -> dict[str, tuple[int, int]]:
    """Frame rows ``[lo, hi)`` of the train part, the test part if any, and the blocks
    ``block<b>`` of the train part when the split has folds (:mod:`mmsweep.sweep.selection`)."""
    cut = _split_rows(frames, split)
    bounds = {"train": (0, cut)}
    if cut < len(frames) - 1:
        bounds["test"] = (cut, len(frames))
    if getattr(split, "folds", None) is not None:
        from .selection import block_bounds

        bounds.update({f"block{b}": lohi for b, lohi in enumerate(block_bounds(0, cut, split.folds))})
    return bounds


def _slice_rows(rows: dict, lo: int, hi: int) -> dict:
    import jax.numpy as jnp

    out = {k: v[lo:hi] for k, v in rows.items()}
    out["index"] = jnp.arange(hi - lo, dtype=jnp.int32)  # each part's own row clock
    return out


def kernel_max_levels(exp, lanes: dict[str, np.ndarray]) -> int:
    """Order slots per side in the kernel's arrays (their shapes are static): ``run.max_levels``
    when the experiment pins it, else the widest grid any lane asks for (``ceil(max(n_levels))``).
    An experiment exported from a sweep pins the sweep's value, so that its one lane runs with
    the sweep's array shapes."""
    widest = int(np.ceil(np.max(lanes["n_levels"]))) if "n_levels" in lanes else 1
    pinned = getattr(exp.run, "max_levels", None)
    if pinned is None:
        return widest
    if pinned < widest:
        raise InputError(f"{pinned} order slots per side, but a lane asks for n_levels up to {widest}; "
                         f"raise it to {widest} or leave it out", key="run.max_levels")
    return int(pinned)


def prepare(exp, *, log: Callable[[str], None] = print) -> Prepared:
    """Load or generate the market, build the frames (cached), bind the policy, make the lanes."""
    import jax
    import jax.numpy as jnp

    from ..kernels.backends import resolve as resolve_backend
    from ..kernels.policies import bind, lane_invariants, required_features
    from ..kernels.policies.base import Market
    from ..kernels.metrics import make_metrics_config
    from ..kernels.scan import KernelConfig, rebase_frames
    from .grids import build_lanes

    spec = exp.frame_spec()
    streamed = exp.data.streamed
    if streamed:  # a file sequence or synthetic days: frames built piece by piece into a store
        from .datasource import stream_frames

        frames, quoted = stream_frames(exp, log=log)
        signals = {n: _Source(src) for n, src in frames.meta.get("signals", {}).items()}
    else:
        from .datasource import frames_at_once

        frames, quoted, sources = frames_at_once(exp.data, spec, log=log)
        signals = {n: _Source(src) for n, src in sources.items()}
    static = dict(exp.strategy.static) if getattr(exp.strategy, "static", None) else None
    missing = set(required_features(exp.strategy.policy, static)) - set(frames.feature_names)
    if missing:
        raise InputError(f"policy {exp.strategy.policy!r} needs feature(s) {sorted(missing)}; add them under "
                         "'features'", key="features")
    interval_s = spec.interval_ns / 1e9
    dtype = jnp.float64 if exp.run.dtype == "float64" else jnp.float32
    if dtype == jnp.float64:
        jax.config.update("jax_enable_x64", True)
    inst = frames.instrument
    lanes = build_lanes(exp)
    max_levels = kernel_max_levels(exp, lanes)
    base_tick = frames.median_bid() if streamed else int(np.median(frames["bid"]))
    market = Market(inst.tick_size, inst.lot_size, base_tick, tuple(frames.feature_names), interval_s,
                    max_levels)
    # What stays constant over every decision of these lanes lets the kernel take exact shortcuts
    # (one lots value per side, keep/cancel by shifting a mask).
    invariants = lane_invariants(exp.strategy.policy, lanes)
    config = KernelConfig(bind(exp.strategy.policy, static), market, exp.fill_model, exp.fees.maker_bps * 1e-4,
                          inst.contract_multiplier, int(frames.meta["max_lag"]) + 1, dtype=dtype,
                          constant_size=invariants.constant_size, constant_step=invariants.constant_step,
                          inverse=inst.inverse,  # inverse: PnL, fees and equity in the coin
                          # fill_model queue: the exact engine's queue model (verify.queue), so both agree
                          queue_model=exp.verify.queue, queue_n=float(exp.verify.queue_n),
                          queue_levels=spec.queue_levels)
    backend = resolve_backend(exp.run.backend)
    rows = None if streamed else rebase_frames(frames, base_tick, dtype)
    bounds = part_bounds(frames, exp.split)
    cut = bounds["train"][1]
    parts, configs = {}, {}
    for part, (lo, hi) in bounds.items():
        if streamed:
            from .timechunks import StoreRows

            parts[part] = StoreRows(frames, lo, hi, base_tick, dtype)
        else:
            parts[part] = _slice_rows(rows, lo, hi)
        metrics = make_metrics_config(
            interval_ns=spec.interval_ns, resample_ns=int(round(exp.metrics.resample_s * 1e9)),
            book_size=exp.metrics.book_size, first_row_ns=int(frames.local_ts_at(lo) if streamed else
                                                               frames["local_ts"][lo]),
            trading_days_per_year=exp.metrics.trading_days_per_year, contract_multiplier=inst.contract_multiplier)
        configs[part] = config._replace(metrics=metrics)
    manifest = {
        "experiment_hash": experiment_hash(exp),
        "data": {"quoted": quoted.source, "signals": {k: v.source for k, v in signals.items()},
                 "instrument": dataclasses.asdict(inst), "reader_meta": _jsonable(quoted.meta)},
        "frames": {"cache_key": frames.meta.get("cache_key"), "rows": len(frames), "train_rows": cut,
                   "meta": _jsonable({k: v for k, v in frames.meta.items() if k != "bid_hist"}),
                   "feature_names": frames.feature_names},
        "versions": _versions(),
        "devices": [str(d) for d in jax.devices()],
        "host": platform.node(),
        # what a lane's metrics depend on besides its parameters and the frames (mmsweep export)
        "kernel": {"max_levels": max_levels, "base_tick": base_tick, "dtype": exp.run.dtype, "backend": backend,
                   **invariants._asdict()},
    }
    from .timechunks import describe_run, warn_zero_size

    manifest.update(describe_run(exp, frames, streamed))
    zero = warn_zero_size(exp, config, lanes, frames, parts["train"], base_tick)
    if zero:
        manifest["zero_size_lanes"] = zero
    return Prepared(exp, frames, config, parts, configs, lanes, manifest, quoted, backend)


class _Source:
    """A signal instrument of a streamed source: its name only (the events stay on disk)."""

    def __init__(self, source: str) -> None:
        self.source = source


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("mmsweep", "jax", "jaxlib", "numpy", "numba", "polars"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "?"
    return out


def _sharding(n_devices: int):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if n_devices <= 1:
        return None
    return NamedSharding(Mesh(np.array(jax.devices()), ("lanes",)), PartitionSpec("lanes"))


def run_chunk(prep: Prepared, lo: int, hi: int) -> "Any":
    """Backtest lanes ``[lo, hi)`` on every part; a polars DataFrame, one row per lane."""
    import polars as pl

    n = hi - lo
    dtype = np.float32 if np.dtype(prep.config.dtype) == np.float32 else np.float64
    table: dict[str, Any] = {"lane": np.arange(lo, hi, dtype=np.int64)}
    table.update({k: np.asarray(v[lo:hi]) for k, v in prep.lanes.items()})
    from .timechunks import chunked, run_part_chunked

    if prep.backend == "numba":
        from ..kernels.numba_backend import run_lanes_numba

        params = {k: np.asarray(v[lo:hi], dtype) for k, v in prep.lanes.items()}
        for part, rows in prep.parts.items():
            if chunked(prep, part):  # time chunk by time chunk, the lane state carried
                out = run_part_chunked(prep, part, params, run_lanes_numba, host=True)
            else:
                out = run_lanes_numba(params, _host_rows(prep, part), prep.configs[part])
            for column in METRIC_COLUMNS:
                table[f"{part}_{column}"] = np.asarray(out[column], np.float64)
        return pl.DataFrame(table)

    import jax

    from ..kernels.scan import run_lanes

    n_dev = len(jax.devices())
    padded = -(-n // n_dev) * n_dev  # shards need equal sizes; pad with copies of the last lane
    params = {}
    sharding = _sharding(n_dev)
    for k, v in prep.lanes.items():
        chunk = np.asarray(v[lo:hi], np.float64)
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], padded - n)])
        arr = np.asarray(chunk, dtype)
        params[k] = jax.device_put(arr, sharding) if sharding is not None else arr
    for part, rows in prep.parts.items():
        if chunked(prep, part):  # the next chunk's upload is dispatched while this one scans
            out = run_part_chunked(prep, part, params, run_lanes, host=False)
        else:
            out = run_lanes(params, rows, prep.configs[part])
        for column in METRIC_COLUMNS:
            table[f"{part}_{column}"] = np.asarray(out[column], np.float64)[:n]
    return pl.DataFrame(table)


def _host_rows(prep: Prepared, part: str) -> dict[str, np.ndarray]:
    """A part's frame rows as numpy arrays (the numba backend's input), converted once."""
    cache = prep.__dict__.setdefault("_host_parts", {})
    if part not in cache:
        cache[part] = {k: np.asarray(v) for k, v in prep.parts[part].items()}
    return cache[part]


def rank(results, exp) -> "Any":
    """Add ``feasible`` (constraints met on train) and ``rank`` (1 = best train objective)."""
    import polars as pl

    metric = f"train_{exp.objective.metric}"
    feasible = pl.col(metric).is_not_nan() & pl.col(metric).is_finite()
    if exp.constraints.min_trades is not None:
        feasible &= pl.col("train_NumberOfTrades") >= exp.constraints.min_trades
    if exp.constraints.max_drawdown is not None:
        feasible &= pl.col("train_MaxDrawdown") <= exp.constraints.max_drawdown
    results = results.with_columns(feasible.alias("feasible"))
    key = pl.when(pl.col("feasible")).then(pl.col(metric) * (1 if exp.objective.maximize else -1)).otherwise(None)
    from . import selection

    if not selection.is_plain(exp):  # folds and/or the smoothed objective: selection.ranking_score
        results = results.sort("lane")
        results = results.with_columns(pl.Series("score", selection.ranking_score(results, exp)))
        key = pl.when(pl.col("score").is_not_nan()).then(pl.col("score")).otherwise(None)
    results = results.with_columns(key.rank(method="ordinal", descending=True).alias("rank"))
    return results.sort(["rank", "lane"], nulls_last=True)


def _write_atomic_parquet(df, path: Path) -> None:
    from .runfolder import write_parquet

    write_parquet(df, path)


def _chunk_problem(path: Path, lo: int, hi: int, columns: list[str]) -> str | None:
    """Why a checkpoint chunk cannot be used (unreadable, truncated, other lanes or columns), or
    None when it holds exactly lanes ``[lo, hi)`` with every expected column."""
    import polars as pl

    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for damaged files
        return f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
    missing = [c for c in columns if c not in df.columns]
    if missing:
        return f"lacks column(s) {missing[:4]}"
    lanes = df["lane"].to_numpy()
    if len(lanes) != hi - lo or not np.array_equal(lanes, np.arange(lo, hi)):
        return f"holds {len(lanes)} lane(s), not lanes {lo}..{hi - 1}"
    return None


def _usable_chunks(chunk_dir: Path, total: int, chunk: int, columns: list[str], log) -> set[int]:
    """Indices of the finished chunks that can be trusted; damaged ones are removed (they are
    computed again) and foreign files are reported and ignored."""
    n_chunks = -(-total // chunk)
    done: set[int] = set()
    if not chunk_dir.exists():
        return done
    for path in sorted(chunk_dir.glob("chunk_*.parquet")):
        m = re.fullmatch(r"chunk_(\d{5})\.parquet", path.name)
        i = int(m.group(1)) if m else -1
        if not 0 <= i < n_chunks:
            warnings.warn(f"{path}: not a chunk of this run ({n_chunks} chunks); ignored")
            continue
        problem = _chunk_problem(path, i * chunk, min(total, (i + 1) * chunk), columns)
        if problem:
            warnings.warn(f"{path}: checkpoint chunk {problem}; it is computed again")
            path.unlink(missing_ok=True)
            continue
        done.add(i)
    return done


def run_experiment(exp, *, out_root: str | os.PathLike | None = None, resume: bool = False,
                   log: Callable[[str], None] = print, progress: Callable[[str], None] | None = None,
                   max_chunks: int | None = None) -> Path:
    """Run (or resume) ``exp``; returns the run folder.  ``max_chunks`` stops early (for tests).

    The folder is locked for the whole run (:mod:`mmsweep.sweep.runfolder`); ``--resume`` only
    continues chunks computed from the same experiment, the same input files (sha256) and the
    same frames (cache key), and recomputes damaged chunks."""
    from .fit import apply_fit
    from .runfolder import FolderLock, make_folder

    exp = apply_fit(exp, log=log)  # an experiment's `fit` step: coefficients from the train part
    root = Path(out_root if out_root is not None else exp.run.out)
    make_folder(root, "runs", key=None if out_root is not None else "run.out")
    run_dir = root / exp.name
    make_folder(run_dir, "run")
    with FolderLock(run_dir, f"mmsweep run {exp.name}"):
        return _run_locked(exp, run_dir, resume, log, progress or log, max_chunks)


def _run_locked(exp, run_dir: Path, resume: bool, log, progress, max_chunks) -> Path:
    import polars as pl

    from .grids import n_lanes
    from .runfolder import check_same_inputs, fingerprint_inputs, make_folder, read_json, remove_partials, write_json

    chunk_dir = run_dir / "chunks"
    config_path = run_dir / "config.json"
    digest = experiment_hash(exp)
    stale = remove_partials(run_dir)
    if stale:
        log(f"removed {stale} unfinished temporary file(s) of an interrupted run")
    has_chunks = chunk_dir.exists() and any(chunk_dir.glob("chunk_*.parquet"))
    previous = read_json(config_path, "run's config.json") if config_path.exists() else None
    if (previous is not None or has_chunks) and not resume:
        raise InputError(f"run folder {run_dir} exists; pass --resume to continue it or choose another name/out",
                         source=str(run_dir))
    if previous is None and has_chunks:
        raise InputError("the run folder has checkpoint chunks but no config.json: nothing tells what they were "
                         "computed from; move the folder away and start again", source=str(run_dir))
    if previous is not None and previous.get("hash") != digest:
        raise InputError("the experiment changed since this run started (config hash differs); "
                         "start a new run", source=str(config_path))
    inputs = fingerprint_inputs(exp)
    if previous is not None:
        if "inputs" in previous:
            check_same_inputs(previous["inputs"], inputs, config_path)
        elif inputs:
            warnings.warn(f"{config_path}: the run predates input checks; its input files cannot be compared")
    total = n_lanes(exp)
    chunk = int(exp.run.chunk_lanes)
    n_chunks = -(-total // chunk)
    prep = prepare(exp, log=log)
    frames_key = prep.manifest["frames"]["cache_key"]
    if previous is not None and previous.get("frames_cache_key") not in (None, frames_key):
        raise InputError(f"the frames differ from the ones the finished chunks were computed from (cache key "
                         f"{previous['frames_cache_key']} then, {frames_key} now: the data read differently, e.g. "
                         "with another version of mmsweep); start a new run", source=str(config_path))
    columns = ["lane", *prep.lanes] + [f"{part}_{m}" for part in prep.parts for m in METRIC_COLUMNS]
    done = _usable_chunks(chunk_dir, total, chunk, columns, log) if previous is not None else set()
    log(f"{exp.name}: {total:,} lanes in {n_chunks} chunk(s) of {chunk:,}"
        + (f"; resuming, {len(done)} chunk(s) already done" if done else ""))
    make_folder(chunk_dir, "chunks")
    write_json(config_path, {"hash": digest, "experiment": exp.to_dict(), "inputs": inputs,
                             "frames_cache_key": frames_key})
    started = time.perf_counter()
    computed = 0
    timings = []
    for i in range(n_chunks):
        if i in done:
            continue
        if max_chunks is not None and computed >= max_chunks:
            log(f"stopped after {computed} chunk(s) (max_chunks)")
            return run_dir
        lo, hi = i * chunk, min(total, (i + 1) * chunk)
        t = time.perf_counter()
        df = run_chunk(prep, lo, hi)
        _write_atomic_parquet(df, chunk_dir / f"chunk_{i:05d}.parquet")
        elapsed = time.perf_counter() - t
        timings.append({"chunk": i, "lanes": hi - lo, "seconds": elapsed})
        computed += 1
        lanes_done = sum(min(total, (j + 1) * chunk) - j * chunk for j in range(n_chunks) if j in done) + sum(
            x["lanes"] for x in timings)
        rate = (hi - lo) / elapsed
        steps = rate * sum(len(p) if not isinstance(p, dict) else len(p["index"]) for p in prep.parts.values())
        remaining = (total - lanes_done) / max(rate, 1e-9)
        progress(f"  chunk {i + 1}/{n_chunks}: {lanes_done:,}/{total:,} lanes, {rate:,.0f} lanes/s "
                 f"({steps / 1e6:,.1f} M lane-steps/s), ETA {remaining:,.0f} s")
    files = [chunk_dir / f"chunk_{i:05d}.parquet" for i in range(n_chunks)]
    results = rank(pl.concat([pl.read_parquet(f) for f in files]).sort("lane"), exp)
    _write_atomic_parquet(results, run_dir / "results.parquet")
    prep.manifest["timings"] = {"chunks": timings, "total_s": time.perf_counter() - started}
    prep.manifest["inputs"] = inputs
    write_json(run_dir / "manifest.json", prep.manifest)
    return run_dir


def top_table(results, exp, n: int = 10) -> str:
    """The best ``n`` feasible lanes as a fixed-width text table."""
    import polars as pl

    params = [c for c in exp.sweep.names] + [t.target for t in exp.sweep.derived]
    metric = exp.objective.metric
    cols = ["rank", "lane"] + params + [f"train_{metric}", "train_PnL", "train_NumberOfTrades",
                                         "train_MaxDrawdown"]
    if "test_PnL" in results.columns:
        cols += [f"test_{metric}", "test_PnL"]
    if "score" in results.columns:  # the ranking statistic when it is not the train objective
        cols.insert(2 + len(params), "score")
    top = results.filter(pl.col("feasible") & pl.col("rank").is_not_null()).sort("rank").head(n)
    top = top.select([c for c in dict.fromkeys(cols) if c in results.columns])  # objective PnL: listed once
    if top.height == 0:
        return "no lane meets the constraints"
    header = " ".join(f"{c:>14}" for c in top.columns)
    lines = [header]
    for row in top.iter_rows():
        lines.append(" ".join(f"{v:>14.6g}" if isinstance(v, float) else f"{v!s:>14}" for v in row))
    return "\n".join(lines)
