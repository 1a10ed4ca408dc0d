"""The ``mmsweep`` command line."""
from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path

import click

from .errors import InputError
from .limits import MAX_LATENCY_MS


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(click.style(f"warning: {message}", fg="yellow"), err=True)


class _Step:
    """Prints ``label ... done in X s`` around a block: progress for the slower steps."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> "_Step":
        self.start = time.perf_counter()
        click.echo(f"{self.label} ...", err=True)
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            click.echo(f"{self.label}: done in {time.perf_counter() - self.start:.1f} s", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except InputError as exc:
            _fail(str(exc))
        except OSError as exc:  # a folder that is read-only or a file, a full disk: the user's to fix
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(f"{where}{exc.strerror or exc}")
        except MemoryError:
            _fail("out of memory; a smaller sweep (fewer lanes per chunk: run.chunk_lanes), a shorter span or a "
                  "longer interval needs less")


def _fail(message: str) -> None:
    click.echo(click.style(f"error: {message}", fg="red"), err=True)
    sys.exit(2)


class _Number(click.ParamType):
    """A finite float option (``nan``/``inf`` refused), optionally bounded; a bad value is a
    one-line ``error:`` naming the option."""

    name = "number"

    def __init__(self, low: float | None = None, *, open_low: bool = False, high: float | None = None) -> None:
        self.low, self.open_low, self.high = low, open_low, high

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
        name = param.opts[0] if param is not None and param.opts else "value"
        rng = [f"{'>' if self.open_low else '>='} {self.low:g}"] if self.low is not None else []
        rng += [f"<= {self.high:g}"] if self.high is not None else []
        bad = (not math.isfinite(number) or (self.low is not None and (number < self.low or (self.open_low and number
               == self.low))) or (self.high is not None and number > self.high))
        if bad:
            raise InputError(f"must be a finite number{' ' + ' and '.join(rng) if rng else ''}, got {value!r}",
                             source=name)
        return number


_POSITIVE = _Number(0.0, open_low=True)
_NON_NEGATIVE = _Number(0.0)


@click.group(cls=_Group)
@click.version_option(package_name="mmsweep")
def main() -> None:
    """mmsweep: sweep thousands of market-making parameter sets over tick data at once."""


@main.group()
def data() -> None:
    """Read, inspect and generate market data."""


def _reader_options(tick_size, lot_size, symbol) -> dict:
    return {k: v for k, v in (("tick_size", tick_size), ("lot_size", lot_size), ("symbol", symbol)) if v is not None}


def _source_options(fn):
    """Options of the data commands about the clock and the instrument's accounting."""
    fn = click.option("--contract-size", type=_POSITIVE, default=None,
                      help="Quote currency per contract (inverse), e.g. 10 for ETHUSD_PERP (default: inferred).")(fn)
    fn = click.option("--inverse/--linear", default=None,
                      help="Coin-margined (inverse: PnL in the coin) or linear accounting (default: inferred from "
                           "the symbol and venue).")(fn)
    fn = click.option("--feed-latency-ms", type=_Number(0.0, high=MAX_LATENCY_MS), default=None,
                      help="Binance archive files (no receive times): the feed latency to assume (ms).")(fn)
    fn = click.option("--base-latency-ms", type=_Number(0.0, high=MAX_LATENCY_MS), default=None,
                      help="Binance captures: the smallest feed latency after the clock correction (ms; default 1, "
                           "0 = hftbacktest's converter).")(fn)
    return fn


def _latency_options(base_latency_ms, feed_latency_ms) -> dict:
    out = {}
    if base_latency_ms is not None:
        out["base_latency_ns"] = int(round(base_latency_ms * 1e6))
    if feed_latency_ms is not None:
        out["feed_latency_ns"] = int(round(feed_latency_ms * 1e6))
    return out


def _instrument_override(inverse, contract_size) -> dict:
    return {k: v for k, v in (("inverse", inverse), ("contract_size", contract_size)) if v is not None}


def _load_with_override(files, fmt, options, override, sequence: bool):
    """One source from FILES (a sequence when asked or when they are several days), with the
    instrument override applied."""
    from .data.instruments import apply_override
    from .data.sequence import EventSequence

    if sequence:
        return EventSequence(list(files), format=fmt, options=options, instrument=override or None,
                             key="FILES").load()
    from .data.loader import load_events

    events = load_events(list(files) if len(files) > 1 else files[0], format=fmt, **options)
    return apply_override(events, override, "--inverse/--contract-size")


@data.command("inspect")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["binance", "tardis", "hftbacktest", "mmsweep"]),
              help="Source format (default: detected from the file).")
@click.option("--tick-size", type=_POSITIVE, help="Price tick (default: from the data or inferred).")
@click.option("--lot-size", type=_POSITIVE, help="Quantity lot (default: from the data or inferred).")
@click.option("--symbol", help="Symbol to keep when a file holds several.")
@click.option("--merge", is_flag=True, help="Merge the Tardis files into one source (trades + book/quotes).")
@click.option("--sequence", is_flag=True,
              help="FILES (or quoted globs) are one instrument in time order: the book carries across files; "
                   "report each file and the total.")
@_source_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def inspect_cmd(files, fmt, tick_size, lot_size, symbol, merge, sequence, base_latency_ms, feed_latency_ms, inverse,
                contract_size, as_json) -> None:
    """Summarise FILES: span, counts by kind, tick/lot, accounting, feed latency, gaps, crossed book."""
    from .data.inspect import format_summary, summarize
    from .data.loader import load_events

    options = _reader_options(tick_size, lot_size, symbol)
    options.update(_latency_options(base_latency_ms, feed_latency_ms))
    override = _instrument_override(inverse, contract_size)
    groups = [list(files)] if (merge or sequence) else [[f] for f in files]
    out = []
    for group in groups:
        events = _load_with_override(group, fmt, options, override, sequence)
        summary = summarize(events)
        out.append(summary)
        if not as_json:
            click.echo(format_summary(summary))
    if as_json:
        click.echo(json.dumps(out if len(out) > 1 else out[0], indent=2, default=str))


@data.command("synth")
@click.option("--hours", type=_POSITIVE, default=1.0, show_default=True, help="Length of the market (hours).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed (same seed, same data).")
@click.option("--lead-lag-ms", type=_NON_NEGATIVE, default=None, help="How far spot leads futures (ms).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Output folder.")
def synth_cmd(hours, seed, lead_lag_ms, out_dir) -> None:
    """Generate the synthetic futures + spot market into OUT (one .npz per instrument)."""
    from .data.synthetic import SynthConfig, write_synthetic

    if not hours > 0:
        raise InputError(f"--hours must be > 0, got {hours}", key="hours")
    config = SynthConfig(seed=seed, hours=hours, **({"lead_lag_ms": lead_lag_ms} if lead_lag_ms is not None else {}))
    with _Step(f"generating {hours:g} h of synthetic market (seed {seed})"):
        paths = write_synthetic(config, out_dir)
    for path in paths:
        click.echo(str(path))


@data.command("frames")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--interval-ms", type=_POSITIVE, default=100.0, show_default=True, help="Decision interval (ms).")
@click.option("--latency-ms", type=_Number(0.0, high=MAX_LATENCY_MS), default=10.0, show_default=True,
              help="Constant entry latency (ms).")
@click.option("--latency-file", type=click.Path(dir_okay=False),
              help="hftbacktest order-latency .npz (overrides --latency-ms).")
@click.option("--feature", "features", multiple=True,
              help="Feature as kind[:key=value,...], e.g. mid_return:lag_s=1 or imbalance:levels=5.")
@click.option("--tick-size", type=_POSITIVE)
@click.option("--lot-size", type=_POSITIVE)
@click.option("--symbol")
@click.option("--stale-after-s", type=_POSITIVE, default=60.0, show_default=True,
              help="A book unchanged for longer than this (s) is stale at a decision: such rows are flagged.")
@click.option("--on-stale", type=click.Choice(["warn", "error"]), default="warn", show_default=True,
              help="What a stale source does: a warning, or an error.")
@_source_options
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Also write the frames to this .npz.")
def frames_cmd(files, interval_ms, latency_ms, latency_file, features, tick_size, lot_size, symbol, stale_after_s,
               on_stale, base_latency_ms, feed_latency_ms, inverse, contract_size, out) -> None:
    """Build (or load from cache) the decision frames of FILES (one instrument: several files are
    merged (Tardis/archive files of a day) or read as a sequence in time order) and print their summary."""
    from .frames import FrameSpec, LatencySpec, build_frames, save_frames

    options = _reader_options(tick_size, lot_size, symbol)
    options.update(_latency_options(base_latency_ms, feed_latency_ms))
    events = _load_with_override(files, None, options, _instrument_override(inverse, contract_size), False)
    latency = LatencySpec(entry_ns=int(round(latency_ms * 1e6)))
    if latency_file:
        from .data.hftnpz import read_order_latency

        latency = LatencySpec(rows=read_order_latency(latency_file), source=str(latency_file))
    spec = FrameSpec(interval_ns=max(1, int(round(interval_ms * 1e6))), latency=latency,
                     features=tuple(_parse_feature(f) for f in features),
                     stale_after_ns=int(round(stale_after_s * 1e9)), on_stale=on_stale)
    with _Step(f"building frames of {events.source}"):
        frames = build_frames(events, spec)
    _print_frames(frames)
    if out:
        click.echo(f"written {save_frames(frames, out)}")


def _parse_feature(text: str):
    from .features import FeatureSpec

    kind, _, rest = text.partition(":")
    spec: dict = {"kind": kind}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise InputError(f"feature option {item!r} is not key=value", key="--feature")
        if key == "instrument":
            spec[key] = value
        elif value.isdigit():
            spec[key] = int(value)
        else:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise InputError(f"feature option {item!r}: {key} must be a finite number", source="--feature")
            spec[key] = number
    return FeatureSpec.parse(spec, where="--feature")


def _print_frames(frames) -> None:
    import numpy as np

    c = frames.columns
    m = frames.meta
    spread = c["ask"] - c["bid"]
    click.echo(f"frames: {len(frames):,} rows of {frames.spec['interval_ns'] / 1e6:g} ms "
               f"({'cache hit' if m.get('cache_hit') else 'built'}; key {m.get('cache_key')})")
    click.echo(f"  spread: one tick {100 * np.mean(spread == 1):.1f} % of rows; max lag {m['max_lag']} rows; "
               f"superseded arrivals {m['superseded_arrivals']}; rejected-entry rows {m['entry_rejected_rows']}")
    if "stale" in c:
        click.echo(f"  stale rows (book unchanged for more than {frames.spec.get('stale_after_ns', 0) / 1e9:g} s): "
                   f"{int(np.sum(c['stale'])):,} ({100 * np.mean(c['stale']):.1f} %)")
    fills_b = np.mean(c["buy_fill_b"] <= c["bid"])
    click.echo(f"  a resting buy at the local best bid would fill in window b of {100 * fills_b:.1f} % of rows")
    for name in frames.feature_names:
        col = frames[name]
        click.echo(f"  feature {name:<28} mean {col.mean():+.3e}  std {col.std():.3e}  "
                   f"warm-up rows {m['warmup_rows'][name]}")


@main.command("run")
@click.argument("experiment", type=click.Path(dir_okay=False, exists=True))
@click.option("--out", "out_root", type=click.Path(file_okay=False), help="Runs folder (default: the experiment's run.out).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run: only missing chunks are computed.")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, help="Rows of the printed top table.")
@click.option("--data", "data_file", type=click.Path(dir_okay=False, exists=True),
              help="A YAML file whose `data` section replaces the experiment's (e.g. "
                   "experiments/data/binance_btcusdt.yaml: the real sample); the run is named <name>-<file stem>.")
@click.option("--inverse/--linear", default=None,
              help="The quoted instrument's accounting (overrides the experiment's and what the data says).")
@click.option("--contract-size", type=_POSITIVE, default=None,
              help="The quoted instrument's contract size, quote currency per contract (inverse).")
def run_cmd(experiment, out_root, resume, top, data_file, inverse, contract_size) -> None:
    """Sweep EXPERIMENT (a YAML file) and write its run folder."""
    from .config import load_experiment
    from .datafile import load_with_data

    exp = load_with_data(experiment, data_file) if data_file else load_experiment(experiment)
    override = _instrument_override(inverse, contract_size)
    if override:
        import dataclasses

        data = exp.data
        merged = {**(data.instrument or {}), **((data.files or {}).get(data.quoted).instrument
                                                if data.files and data.files[data.quoted].instrument else {}),
                  **override}
        files = (None if data.files is None else
                 {n: (dataclasses.replace(f, instrument=None) if n == data.quoted else f)
                  for n, f in data.files.items()})
        exp = dataclasses.replace(exp, data=dataclasses.replace(data, instrument=merged, files=files))
    _run_and_report(exp, out_root, resume, top)


def _run_and_report(exp, out_root, resume, top) -> Path:
    import polars as pl

    from .run import run_experiment, top_table
    from .selection import describe

    start = time.perf_counter()
    run_dir = run_experiment(exp, out_root=out_root, resume=resume, log=lambda m: click.echo(m, err=True))
    results = pl.read_parquet(run_dir / "results.parquet")
    units = _units_line(run_dir)
    click.echo(f"\n{results.height:,} lanes in {time.perf_counter() - start:.1f} s; "
               f"{int(results['feasible'].sum()):,} meet the constraints. Top {top} by {describe(exp)}"
               + (f" ({units})" if units else "") + ":")
    click.echo(top_table(results, exp, top))
    _print_findings(run_dir, results, exp)
    if exp.provenance is not None:  # an exported experiment: say whether it reproduced
        from .export import compare_with_provenance

        note = compare_with_provenance(exp, results)
        if note:
            click.echo("\n" + (click.style(note, fg="yellow") if note.startswith("warning") else note))
    click.echo(f"\nrun folder: {run_dir} (results.parquet, config.json, manifest.json)")
    return run_dir


def _units_line(run_dir: Path) -> str:
    """``PnL in ETH, positions in contracts of 10 USD`` from the run's manifest (empty if none)."""
    try:
        units = json.loads((run_dir / "manifest.json").read_text()).get("units") or {}
    except (OSError, ValueError):
        return ""
    return f"PnL in {units['pnl']}, positions in {units['qty']}" if units.get("pnl") else ""


def _print_findings(run_dir: Path, results, exp) -> None:
    from .diagnostics import findings, format_findings
    from .selection import format_overfitting, overfitting

    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    found = findings(results, exp, manifest)
    if found:
        click.echo("")
        click.echo(click.style(format_findings(found), fg="yellow"))
    text = format_overfitting(overfitting(results, exp, manifest))
    if text:
        click.echo("\n" + text)


@main.command("verify")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--top", "top_k", type=int, default=None,
              help="Best feasible lanes (by rank) to replay (default: the experiment's verify.top_k).")
@click.option("--sample", type=int, default=None,
              help="Random other lanes to replay (default: the experiment's verify.sample).")
@click.option("--seed", type=int, default=None, help="Seed of the random sample (default: verify.seed).")
@click.option("--part", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="Which part of the data to replay.")
@click.option("--processes", type=int, default=None,
              help="Exact-engine worker processes, 0 = one per CPU (default: verify.processes).")
@click.option("--frontier", type=int, default=None,
              help="Replay the fast top K x FRONTIER lanes, so that the exact top K can be found among them "
                   "(default: verify.frontier, 4).")
@click.option("--fill-models", "fill_models", default=None, metavar="NAMES",
              help="Also sweep every lane under these fill models (e.g. cross,touch) and compare each with the "
                   "same exact replay.")
@click.option("--exhaustive", is_flag=True, help="Replay every lane of the sweep (refused above --max-exact-minutes).")
@click.option("--max-exact-minutes", type=_POSITIVE, default=None,
              help="Refuse an exhaustive replay estimated to take longer (default 30).")
def verify_cmd(run_dir, top_k, sample, seed, part, processes, frontier, fill_models, exhaustive,
               max_exact_minutes) -> None:
    """Replay RUN_DIR's fast frontier and a random sample (or every lane) on the exact engine;
    report the agreement."""
    from .verify import verify_run

    summary = verify_run(run_dir, top_k=top_k, sample=sample, seed=seed, part=part, processes=processes,
                         log=lambda m: click.echo(m, err=True), report=lambda m: click.echo("\n" + m),
                         frontier=frontier, fill_models=fill_models, exhaustive=exhaustive,
                         max_exact_minutes=max_exact_minutes)
    click.echo("\nwritten:")
    for path in summary["files"].values():
        click.echo(f"  {path}")


@main.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--top", type=int, default=5, show_default=True, help="Top lanes (distinct outcomes) shown in detail.")
@click.option("--no-exact", is_flag=True, help="Skip the exact-engine replay of the top lanes (no fills, markouts).")
def report_cmd(run_dir, top, no_exact) -> None:
    """Write RUN_DIR/report/index.html: warnings, heatmaps, stats, curves, markouts, verify."""
    from .report_html import build_report

    page = build_report(run_dir, top=top, exact=not no_exact, log=lambda m: click.echo(m, err=True))
    click.echo(f"report: {page}")


@main.command("show")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--lane", type=int, required=True, help="Lane id (the results' `lane` column).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Plot folder (default: RUN_DIR/lanes).")
@click.option("--no-exact", is_flag=True, help="Fast kernel only (no exact-engine replay).")
def show_cmd(run_dir, lane, out_dir, no_exact) -> None:
    """Print one lane's stats table (train/test, fast/exact) and write its plots."""
    from .report_html import show_lane

    text, files = show_lane(run_dir, lane, out_dir=out_dir, exact=not no_exact, log=lambda m: click.echo(m, err=True))
    click.echo(text)
    click.echo("\nwritten:")
    for path in files:
        click.echo(f"  {path}")


@main.command("export")
@click.argument("run_dir", type=click.Path())
@click.option("--rank", type=int, default=None, help="Train rank of the lane to export (1 = best; the default).")
@click.option("--lane", type=int, default=None, help="Lane id to export (the results' `lane` column).")
@click.option("--tuned", type=int, default=None,
              help="Tuned point to export (tune.parquet's `tuned` column: 1 = the best hard train objective).")
@click.option("-o", "--out", required=True, help="Output YAML file ('-' = standard output).")
def export_cmd(run_dir, rank, lane, tuned, out) -> None:
    """Write one lane (or tuned point) of RUN_DIR as a complete experiment that `mmsweep run`
    reproduces exactly."""
    from .export import export_run

    path, chosen = export_run(run_dir, out, rank=rank, lane=lane, tuned=tuned,
                              warn=lambda m: click.echo(click.style(f"warning: {m}", fg="yellow"), err=True))
    if path is not None:
        click.echo(f"exported {chosen.label} to {path}; run it with: mmsweep run {path}", err=True)


@main.command("tune")
@click.argument("target", type=click.Path(exists=True))
@click.option("--params", default=None, metavar="NAMES",
              help="Parameters to tune, comma-separated (default: the experiment's tune.params, else its swept "
                   "continuous parameters).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimiser steps (default: tune.steps).")
@click.option("--starts", type=click.IntRange(min=1), default=None,
              help="Start from the run's top N lanes (default: tune.starts).")
@click.option("--exact-top", type=click.IntRange(min=0), default=None,
              help="Best tuned points replayed on the exact engine with their starts (default: tune.exact.top).")
def tune_cmd(target, params, steps, starts, exact_top) -> None:
    """Gradient-tune the best points of TARGET (a run folder, or an experiment YAML that is run
    first) on the smooth kernel; re-score them on the hard kernel and the exact engine."""
    from .tune import tune_target

    names = None if params is None else [p.strip() for p in params.split(",") if p.strip()]
    summary = tune_target(target, params=names, steps=steps, starts=starts, exact_top=exact_top,
                          log=lambda m: click.echo(m, err=True), progress=lambda m: click.echo(m, err=True))
    click.echo("\n" + summary["table"])
    click.echo("\nwritten:")
    for path in summary["files"].values():
        click.echo(f"  {path}")


@main.command()
@click.option("--hours", type=_POSITIVE, default=None, help="Synthetic market length (default: the demo experiment's).")
@click.option("--out", "out_root", type=click.Path(file_okay=False), default="runs", show_default=True)
def demo(hours, out_root) -> None:
    """Sweep the bundled demo experiment on the embedded synthetic market."""
    import dataclasses

    from .config import load_experiment

    path = Path(__file__).resolve().parent.parent / "experiments" / "demo.yaml"
    exp = load_experiment(path)
    if hours is not None:
        if not hours > 0:
            raise InputError(f"--hours must be > 0, got {hours}", key="hours")
        # Its own run name: a different market must not resume the default demo's chunks.
        exp = dataclasses.replace(exp, name=f"demo-{hours:g}h",
                                  data=dataclasses.replace(exp.data, synthetic={**exp.data.synthetic, "hours": hours}))
    click.echo(f"demo: {path.name} -- {exp.description}", err=True)
    run_dir = _run_and_report(exp, out_root, True, 10)
    click.echo(f"\nNext: `mmsweep verify {run_dir}` re-checks the best lanes on the exact event-replay engine; "
               "open results.parquet with polars, edit a copy of experiments/demo.yaml "
               "(axes, policy, fill model) and `mmsweep run` it, or point data at a real capture as in "
               f"experiments/real_btcusdt_apt.yaml.  Run folder: {run_dir}")


if __name__ == "__main__":
    main()
