"""The ``mmsweep`` command line."""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import click

from .errors import InputError


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
            click.echo(click.style(f"error: {exc}", fg="red"), err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="mmsweep")
def main() -> None:
    """mmsweep: sweep thousands of market-making parameter sets over tick data at once."""


@main.group()
def data() -> None:
    """Read, inspect and generate market data."""


def _reader_options(tick_size, lot_size, symbol) -> dict:
    return {k: v for k, v in (("tick_size", tick_size), ("lot_size", lot_size), ("symbol", symbol)) if v is not None}


@data.command("inspect")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["binance", "tardis", "hftbacktest", "mmsweep"]),
              help="Source format (default: detected from the file).")
@click.option("--tick-size", type=float, help="Price tick (default: from the data or inferred).")
@click.option("--lot-size", type=float, help="Quantity lot (default: from the data or inferred).")
@click.option("--symbol", help="Symbol to keep when a file holds several.")
@click.option("--merge", is_flag=True, help="Merge the Tardis files into one source (trades + book/quotes).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def inspect_cmd(files, fmt, tick_size, lot_size, symbol, merge, as_json) -> None:
    """Summarise FILES: span, counts by kind, tick/lot, feed latency, gaps, crossed book."""
    from .data.inspect import format_summary, summarize
    from .data.loader import load_events

    options = _reader_options(tick_size, lot_size, symbol)
    groups = [list(files)] if merge else [[f] for f in files]
    out = []
    for group in groups:
        events = load_events(group if len(group) > 1 else group[0], format=fmt, **options)
        summary = summarize(events)
        out.append(summary)
        if not as_json:
            click.echo(format_summary(summary))
    if as_json:
        click.echo(json.dumps(out if len(out) > 1 else out[0], indent=2, default=str))


@data.command("synth")
@click.option("--hours", type=float, default=1.0, show_default=True, help="Length of the market (hours).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same data).")
@click.option("--lead-lag-ms", type=float, default=None, help="How far spot leads futures (ms).")
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
@click.option("--interval-ms", type=float, default=100.0, show_default=True, help="Decision interval (ms).")
@click.option("--latency-ms", type=float, default=10.0, show_default=True, help="Constant entry latency (ms).")
@click.option("--latency-file", type=click.Path(dir_okay=False),
              help="hftbacktest order-latency .npz (overrides --latency-ms).")
@click.option("--feature", "features", multiple=True,
              help="Feature as kind[:key=value,...], e.g. mid_return:lag_s=1 or imbalance:levels=5.")
@click.option("--tick-size", type=float)
@click.option("--lot-size", type=float)
@click.option("--symbol")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Also write the frames to this .npz.")
def frames_cmd(files, interval_ms, latency_ms, latency_file, features, tick_size, lot_size, symbol, out) -> None:
    """Build (or load from cache) the decision frames of FILES and print their summary."""
    from .data.loader import load_events
    from .frames import FrameSpec, LatencySpec, build_frames, save_frames

    events = load_events(list(files) if len(files) > 1 else files[0], **_reader_options(tick_size, lot_size, symbol))
    latency = LatencySpec(entry_ns=int(round(latency_ms * 1e6)))
    if latency_file:
        from .data.hftnpz import read_order_latency

        latency = LatencySpec(rows=read_order_latency(latency_file), source=str(latency_file))
    spec = FrameSpec(interval_ns=int(round(interval_ms * 1e6)), latency=latency,
                     features=tuple(_parse_feature(f) for f in features))
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
        spec[key] = value if key == "instrument" else (int(value) if value.isdigit() else float(value))
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
    fills_b = np.mean(c["buy_fill_b"] <= c["bid"])
    click.echo(f"  a resting buy at the local best bid would fill in window b of {100 * fills_b:.1f} % of rows")
    for name in frames.feature_names:
        col = frames[name]
        click.echo(f"  feature {name:<28} mean {col.mean():+.3e}  std {col.std():.3e}  "
                   f"warm-up rows {m['warmup_rows'][name]}")


@main.command()
@click.option("--hours", type=float, default=1.0, show_default=True, help="Synthetic market length (hours).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
def demo(hours, seed, out_dir) -> None:
    """Run the data pipeline end to end on the embedded synthetic market."""
    from .data.inspect import format_summary, summarize
    from .data.synthetic import SynthConfig, synthetic_market
    from .data.store import save_events
    from .features import FeatureSpec
    from .frames import FrameSpec, LatencySpec, build_frames

    out = Path(out_dir)
    with _Step(f"1/3 generating {hours:g} h of synthetic futures + spot market (seed {seed})"):
        market = synthetic_market(SynthConfig(seed=seed, hours=hours))
        for name, events in market.items():
            save_events(events, out / "data" / f"{name}.npz")
    names = list(market)
    quoted, signal = names[0], (names[1] if len(names) > 1 else None)
    for name in names:
        click.echo(format_summary(summarize(market[name])))
    features = [{"kind": "mid_return", "lag_s": 1.0}, {"kind": "imbalance", "levels": 5},
                {"kind": "realized_vol", "window_s": 60.0}]
    if signal:
        features.append({"kind": "rolling_return", "instrument": signal, "window_s": 300.0})
    spec = FrameSpec(latency=LatencySpec(entry_ns=10_000_000), features=tuple(FeatureSpec.parse(f) for f in features))
    signals = {signal: market[signal]} if signal else {}
    with _Step("2/3 building 100 ms frames (10 ms entry latency)"):
        frames = build_frames(market[quoted], spec, signals=signals)
    _print_frames(frames)
    with _Step("3/3 rebuilding the frames (a cache hit)"):
        again = build_frames(market[quoted], spec, signals=signals)
    click.echo(f"cache hit: {again.meta['cache_hit']}")
    click.echo(f"\nWritten: {out / 'data'}.  Next: `mmsweep data inspect {out / 'data' / (quoted + '.npz')}`, "
               f"or `mmsweep data frames` on a real capture, e.g. ../shared/data/binance/usdm/btcusdt_20240808.gz")


if __name__ == "__main__":
    main()
