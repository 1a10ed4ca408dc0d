"""``mmsweep export``: one configuration of a run as a complete experiment that runs again.

``mmsweep export RUN_DIR [--rank N | --lane ID | --tuned K] -o best.yaml`` writes a YAML experiment holding
everything the chosen lane's metrics depend on: the strategy and every parameter (each with its
unit, from the policy's parameter declarations, as a comment), the data section, interval,
latency, fees, fill model, features, split, metrics and verify settings of the run, and
``run.max_levels`` pinned to the sweep's value.  ``mmsweep run best.yaml`` backtests that one
lane and reproduces the sweep's metrics for it exactly; ``mmsweep verify`` accepts that run.

Exactness.  A lane's metrics depend on its parameter values, on the frames (their cache key:
data, interval, latency, features) and on the kernel's static shapes and constants.  Hence:

* parameter values are ``results.parquet``'s float64 values, written in their shortest
  round-trip form (``repr``), never recomputed from the axes; the file is parsed back before it
  is written and every value must read back bit for bit;
* every section the frames are built from is copied from the run's resolved experiment
  (``config.json``), so the frames cache key is the same;
* the kernel's order slots per side are the sweep's (``max_levels = ceil(max(n_levels))`` over
  all lanes, :func:`mmsweep.sweep.run.kernel_max_levels`): the export pins them as
  ``run.max_levels``, so the one lane runs with the sweep's array shapes; the base tick is a
  function of the frames alone, and ``run.dtype`` (float32 by default) is kept.

The ``provenance`` section is informational: the experiment parser checks its shape (known
keys, plain values) and nothing in it changes what runs.  It holds::

    provenance:
      exported_from: {run_dir, experiment, experiment_hash, selected_by, lane, rank, feasible,
                      lanes_in_run, objective}
      exported_at: ISO time
      parameters: {name: {value, unit}}            # every policy parameter
      instrument: {symbol, tick_size, lot_size, contract_multiplier, accounting, venue, units}
      data: {inputs: {path: sha256}, hashed, frames_cache_key, frames_rows, train_rows}
      kernel: {max_levels, base_tick, dtype}
      metrics: {units: {metric: unit},
                fast: {part: {metric: value}},       # results.parquet's train_/test_/... columns
                exact: {part: {metrics: {...}, engine: {...}}}}   # if the run was verified

A point that is not a lane of the table (a tuned one: parameter values plus metrics) goes
through the same code path: build a :class:`Chosen` and call :func:`export_experiment`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import re
import struct
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError
from .runfolder import fingerprint_inputs

#: keys of the informational ``provenance`` section and what each must be
PROVENANCE_KEYS = {"exported_from": dict, "exported_at": str, "parameters": dict, "instrument": dict,
                   "data": dict, "kernel": dict, "metrics": dict}

#: units of the kernel's metric columns (``Q`` stands for the quote currency)
METRIC_UNITS = {
    "SR": "annualised Sharpe ratio of resampled equity changes (dimensionless)",
    "Sortino": "annualised Sortino ratio (dimensionless)",
    "Return": "fraction of metrics.book_size",
    "MaxDrawdown": "fraction of metrics.book_size",
    "ReturnOverMDD": "PnL / max drawdown (dimensionless)",
    "ReturnOverTrade": "PnL / traded value (dimensionless)",
    "DailyNumberOfTrades": "fills per day",
    "DailyTurnover": "book sizes traded per day",
    "MaxPositionValue": "Q (|position| x price, no contract multiplier)",
    "MaxPositionNotional": "Q",
    "PnL": "Q, after fees",
    "Fees": "Q, positive = paid",
    "NumberOfTrades": "fills",
    "TradingValue": "Q",
    "MaxAbsPosition": "qty units",
    "Rejections": "post-only rejections",
    "FinalPosition": "qty units",
    "CancelsLost": "cancels that lost the race to a fill",
}

#: a metric column of results.parquet: ``<part>_<metric>``
_METRIC_COLUMN = re.compile(r"^(train|test|block\d+)_([A-Za-z]\w*)$")


# --------------------------------------------------------------------------------------------
# The provenance section (called by the experiment parser)
# --------------------------------------------------------------------------------------------


def check_provenance(raw: Any, fail: Callable[[str, str], Exception]) -> dict:
    """Check the informational ``provenance`` section: a mapping of the keys in
    :data:`PROVENANCE_KEYS`, holding plain values only (mappings with text keys, lists, text,
    numbers, booleans, null).  ``fail(key, message)`` makes the error.  Returns a copy."""
    if not isinstance(raw, dict):
        raise fail("provenance", "expected a mapping (informational: where an exported experiment came from), "
                                 f"got {type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        where = f"provenance.{key}"
        if key not in PROVENANCE_KEYS:
            raise fail(where, f"unknown key; allowed here: {', '.join(PROVENANCE_KEYS)}")
        kind = PROVENANCE_KEYS[key]
        if value is not None and not isinstance(value, kind):
            raise fail(where, f"expected {'a mapping' if kind is dict else 'text'}, got {type(value).__name__}")
        out[key] = _plain_copy(value, where, fail)
    return out


def _plain_copy(value: Any, where: str, fail) -> Any:
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise fail(where, f"keys must be text, got {k!r}")
        return {k: _plain_copy(v, f"{where}.{k}", fail) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_copy(v, f"{where}[{i}]", fail) for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise fail(where, f"expected plain values (text, numbers, true/false, null), got {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Reading a run folder
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """A finished run: its folder, resolved experiment, ``config.json``, ``manifest.json`` (empty
    if absent) and ``results.parquet`` (a polars DataFrame)."""

    path: Path
    experiment: Any
    stored: dict
    manifest: dict
    results: Any


def read_run(run_dir: str | os.PathLike) -> RunFolder:
    """Read a run folder written by ``mmsweep run``; an :class:`InputError` names what is missing."""
    import polars as pl

    from .config import parse_experiment

    path = Path(run_dir)
    if not path.is_dir():
        raise InputError("no such run folder", source=str(path))
    results_path, config_path = path / "results.parquet", path / "config.json"
    if not results_path.is_file():
        raise InputError("no results.parquet: the run has not finished (mmsweep run --resume completes it)",
                         source=str(path))
    if not config_path.is_file():
        raise InputError("no config.json: not a run folder of mmsweep run", source=str(path))
    stored = _read_json(config_path, "the run's configuration")
    if not isinstance(stored.get("experiment"), dict):
        raise InputError("config.json holds no experiment; not a run folder of mmsweep run", source=str(config_path))
    exp = parse_experiment(stored["experiment"], str(config_path))
    manifest_path = path / "manifest.json"
    manifest = _read_json(manifest_path, "the run's manifest") if manifest_path.is_file() else {}
    try:
        results = pl.read_parquet(results_path)
    except Exception as exc:  # polars raises several types for damaged files
        raise InputError(f"cannot read results.parquet ({type(exc).__name__})", source=str(results_path)) from None
    for column in ("lane", "feasible", "rank"):
        if column not in results.columns:
            raise InputError(f"results.parquet has no '{column}' column; not a table of mmsweep run",
                             source=str(results_path))
    return RunFolder(path, exp, stored, manifest, results)


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {what} ({type(exc).__name__}: {exc})", source=str(path)) from None
    if not isinstance(obj, dict):
        raise InputError(f"{what} is not a JSON object", source=str(path))
    return obj


# --------------------------------------------------------------------------------------------
# What to export
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Chosen:
    """One configuration to export.

    Attributes:
        params: the value of every policy parameter, in the units the policy declares.
        label: how it was chosen, in words (``lane 17 (rank 1)``, ``tuned point 3``).
        suffix: appended to the run's name to name the exported experiment (``lane17``).
        origin: facts about the choice (lane, rank, feasible ...), for ``provenance.exported_from``.
        fast: ``{part: {metric: value}}`` on the fast kernel (parts ``train``, ``test`` ...).
        exact: ``{part: {"metrics": {metric: value}, "engine": {...}}}`` on the exact engine.
    """

    params: dict[str, float]
    label: str
    suffix: str
    origin: dict[str, Any]
    fast: dict[str, dict[str, float]]
    exact: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def choose_lane(run: RunFolder, *, rank: int | None = None, lane: int | None = None,
                warn: Callable[[str], None] | None = None) -> Chosen:
    """The lane of ``run`` with train rank ``rank`` (1 = best; the default) or id ``lane``.

    ``--rank`` counts feasible lanes only (infeasible ones have no rank); ``--lane`` may name an
    infeasible lane, with a warning (``mmsweep verify`` of its export would find nothing to verify).
    """
    import polars as pl

    results, where = run.results, str(run.path / "results.parquet")
    if rank is not None and lane is not None:
        raise InputError("give --rank or --lane, not both", key="--lane")
    n_total = results.height
    if n_total == 0:
        raise InputError("results.parquet holds no lanes", source=where)
    if lane is None:
        rank = 1 if rank is None else rank
        n_ranked = int(results["rank"].is_not_null().sum())
        if rank < 1:
            raise InputError(f"rank {rank}: ranks start at 1 (the best lane)", key="--rank")
        if rank > n_total:
            raise InputError(f"rank {rank} is beyond the table: the run has {n_total:,} lanes", key="--rank")
        if rank > n_ranked:
            raise InputError(f"rank {rank} is not a feasible lane: only {n_ranked:,} of the {n_total:,} lanes meet "
                             f"the constraints (ranks 1..{n_ranked}); the rest are unranked (pick one by --lane)",
                             key="--rank")
        rows = results.filter(pl.col("rank") == rank)
    else:
        rows = results.filter(pl.col("lane") == lane)
        if rows.height == 0:
            lanes = results["lane"]
            raise InputError(f"no lane {lane}: the run's lanes are {int(lanes.min())}..{int(lanes.max())}",
                             key="--lane")
    if rows.height != 1:
        raise InputError(f"results.parquet holds {rows.height} rows for this lane", source=where)
    row = rows.row(0, named=True)
    feasible = bool(row["feasible"])
    if not feasible and warn is not None:
        warn(f"lane {row['lane']} does not meet the run's constraints; `mmsweep verify` of its export will find "
             "no lane to verify")
    params = {}
    for name in run.experiment.param_names:
        if name not in row:
            raise InputError(f"results.parquet has no column for parameter '{name}'", source=where)
        params[name] = float(row[name])
    rank_value = None if row["rank"] is None else int(row["rank"])
    label = f"lane {row['lane']}" + (f" (rank {rank_value})" if rank_value is not None else " (infeasible)")
    origin = {"selected_by": f"rank {rank}" if lane is None else f"lane {lane}", "lane": int(row["lane"]),
              "rank": rank_value, "feasible": feasible, "lanes_in_run": n_total}
    return Chosen(params, label, f"lane{row['lane']}", origin, _fast_metrics(row), _exact_metrics(run, row["lane"]))


def _fast_metrics(row: dict) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for column, value in row.items():
        m = _METRIC_COLUMN.match(column)
        if m and isinstance(value, (int, float)) and not isinstance(value, bool):
            out.setdefault(m.group(1), {})[m.group(2)] = float(value)
    return out


def _verify_files(run_dir: Path) -> dict[str, tuple[Path, Path]]:
    """``{part: (verify parquet, verify json)}`` as ``mmsweep verify`` names them."""
    try:
        from .verify import output_paths
    except ImportError:  # verify writes the train part only
        return {"train": (run_dir / "verify.parquet", run_dir / "verify.json")}
    out = {}
    for part in ("train", "test"):
        paths = output_paths(run_dir, part)
        out[part] = (paths["parquet"], paths["json"])
    return out


def _exact_metrics(run: RunFolder, lane: int) -> dict[str, dict[str, Any]]:
    """The exact engine's metrics of ``lane`` per verified part (empty if never verified)."""
    import polars as pl

    out: dict[str, dict[str, Any]] = {}
    for part, (parquet, summary) in _verify_files(run.path).items():
        if not parquet.is_file():
            continue
        try:
            table = pl.read_parquet(parquet).filter(pl.col("lane") == lane)
        except Exception as exc:
            raise InputError(f"cannot read the verification table ({type(exc).__name__})", source=str(parquet)) from None
        if table.height == 0:
            continue
        row = table.row(0, named=True)
        entry: dict[str, Any] = {"metrics": {c[len("exact_"):]: float(v) for c, v in row.items()
                                             if c.startswith("exact_") and c[len("exact_"):] in METRIC_UNITS
                                             and isinstance(v, (int, float)) and not isinstance(v, bool)}}
        if row.get("exact_failure"):
            entry["failure"] = str(row["exact_failure"])
        if summary.is_file():
            info = _read_json(summary, "the verification summary")
            entry["engine"] = info.get("engine", {}).get("config", {})
        out[part] = entry
    return out


# --------------------------------------------------------------------------------------------
# Writing the experiment
# --------------------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    """One YAML scalar that reads back as exactly ``value`` (floats in shortest round-trip form)."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        if v.is_integer() and abs(v) < 2**53 and math.copysign(1.0, v) > 0:
            return str(int(v))
        text = repr(v)
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:  # 1e-05 -> 1.0e-05: a float to every YAML reader
            text = f"{mantissa}.0e{exponent}"
        return text
    return json.dumps(str(value))  # a double-quoted YAML string


def _plain(obj: Any) -> Any:
    """Plain YAML types (numpy scalars and tuples converted)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


def _section(key: str, value: Any) -> str:
    import yaml

    return yaml.safe_dump({key: _plain(value)}, sort_keys=False, default_flow_style=False, width=100)


def _bits(value: float) -> bytes:
    return struct.pack("<d", float(value))


def _units(exp) -> dict[str, str]:
    return {name: spec.unit for name, spec in exp.policy.params.items()}


def _kernel_facts(run: RunFolder) -> dict[str, Any]:
    """max_levels, base tick and dtype of the run's kernel (the manifest's, else recomputed)."""
    from .run import kernel_max_levels

    facts = dict(run.manifest.get("kernel") or {})
    if "max_levels" not in facts:
        lanes = {"n_levels": run.results["n_levels"].to_numpy()} if "n_levels" in run.results.columns else {}
        facts["max_levels"] = kernel_max_levels(run.experiment, lanes)
    facts.setdefault("dtype", run.experiment.run.dtype)
    return facts


def _data_facts(run: RunFolder, warn: Callable[[str], None] | None) -> dict[str, Any]:
    """Input files with their sha256 (as recorded when the run started, when it did), frames facts."""
    now = fingerprint_inputs(run.experiment)
    recorded = run.stored.get("inputs")
    facts: dict[str, Any] = {}
    if not now and not recorded:
        facts["inputs"] = {}
        facts["hashed"] = "no input files: the synthetic market is generated from data.synthetic (seeded)"
    elif isinstance(recorded, dict):
        facts["inputs"] = dict(recorded)
        facts["hashed"] = "when the sweep started"
        changed = sorted(p for p in set(recorded) | set(now) if recorded.get(p) != now.get(p))
        if changed and warn is not None:
            warn(f"input file {changed[0]} changed since the sweep ran: the exported experiment reads other data "
                 "and will not reproduce the sweep's metrics")
    else:
        facts["inputs"] = now
        facts["hashed"] = "at export (the run recorded no hashes)"
    frames = run.manifest.get("frames") or {}
    facts["frames_cache_key"] = run.stored.get("frames_cache_key") or frames.get("cache_key")
    for key, name in (("rows", "frames_rows"), ("train_rows", "train_rows")):
        if key in frames:
            facts[name] = frames[key]
    return facts


def _instrument_facts(run: RunFolder) -> dict[str, Any]:
    inst = dict((run.manifest.get("data") or {}).get("instrument") or {})
    if not inst:
        return {}
    from .report import currency_units

    quote, qty = currency_units(inst.get("symbol", ""))
    inverse = bool(inst.get("inverse", False))
    units = ({"tick_size": f"{quote} per tick", "lot_size": "contracts per lot",
              "contract_multiplier": f"{quote} per contract", "Q": qty} if inverse else
             {"tick_size": f"{quote} per tick", "lot_size": f"{qty} per lot",
              "contract_multiplier": f"{quote} per (qty x price)", "Q": quote})
    return {
        "symbol": inst.get("symbol"), "venue": inst.get("venue", ""),
        "tick_size": inst.get("tick_size"), "lot_size": inst.get("lot_size"),
        "contract_multiplier": inst.get("contract_multiplier", 1.0),
        "accounting": f"inverse (in the coin, {qty})" if inverse else f"linear (in the quote currency, {quote})",
        "units": units,
    }


def export_experiment(run: RunFolder, chosen: Chosen, *, warn: Callable[[str], None] | None = None) -> str:
    """The YAML text of ``chosen`` as a one-lane experiment of ``run`` (see the module docstring).

    The text is parsed back before it is returned: it must be a valid experiment whose parameter
    values are ``chosen.params`` bit for bit and whose other sections equal the run's.
    """
    from .config import _read_yaml, parse_experiment

    exp = run.experiment
    active = exp.policy.active(exp.strategy.static)
    units = _units(exp)
    for name, spec in exp.policy.params.items():
        if name not in chosen.params:
            raise InputError(f"the point to export has no value for parameter '{name}'", key=name)
        if name not in active and chosen.params[name] != float(spec.default):
            raise InputError(f"{name} = {chosen.params[name]!r} weighs a feature the policy's static options do not "
                             "list; it cannot be written", key=name)
    base = exp.to_dict()
    kernel = _kernel_facts(run)
    instrument = _instrument_facts(run)
    name = f"{exp.name}-{chosen.suffix}"
    base.update(name=name, description=f"{chosen.label} of run {exp.name}" + (f": {exp.description}"
                                                                              if exp.description else ""),
                sweep={})
    base["run"] = {**{k: v for k, v in base["run"].items() if k != "max_levels"}, "max_levels": kernel["max_levels"]}
    base["verify"] = {**base["verify"], "top_k": 1, "sample": 0}  # one lane: verify it, nothing to sample
    objective = base.get("objective") or {}
    provenance = {
        "exported_from": {"run_dir": str(run.path.resolve()), "experiment": exp.name,
                          "experiment_hash": run.stored.get("hash"), **chosen.origin,
                          "objective": {"metric": objective.get("metric"), "maximize": objective.get("maximize")}},
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "parameters": {p: {"value": chosen.params[p], "unit": units[p],
                           **({"doc": doc} if (doc := getattr(exp.policy.params[p], "doc", "")) else {})}
                       for p in active},
        "instrument": instrument,
        "data": _data_facts(run, warn),
        "kernel": kernel,
        "metrics": {"units": {m: METRIC_UNITS.get(m, "see mmsweep.kernels.metrics")
                              for m in sorted({m for part in chosen.fast.values() for m in part})},
                    "fast": chosen.fast,
                    **({"exact": chosen.exact} if chosen.exact else {})},
    }
    text = _header(run, chosen, instrument, kernel) + "".join(
        _strategy_section(base["strategy"], chosen.params, active, units) if key == "strategy"
        else _section(key, value) for key, value in base.items() if key != "provenance")
    text += ("# Informational (ignored when running): where this configuration came from, the data it was\n"
             "# chosen on, and its metrics.\n") + _section("provenance", provenance)

    # Parse it back: a valid experiment, the same values bit for bit, the same everything else.
    data, _ = _read_yaml(text, name)
    again = parse_experiment(data, f"the exported {name}")
    for p in exp.param_names:
        if _bits(again.strategy.params[p]) != _bits(chosen.params[p]):
            raise RuntimeError(f"exported {p} reads back as {again.strategy.params[p]!r}, not {chosen.params[p]!r}")
    for field in ("data", "interval_ns", "latency", "fees", "fill_model", "features", "objective", "constraints",
                  "split", "metrics"):
        if getattr(again, field) != getattr(exp, field):
            raise RuntimeError(f"the exported experiment's {field} differs from the run's")
    return text


def _header(run: RunFolder, chosen: Chosen, instrument: dict, kernel: dict) -> str:
    exp = run.experiment
    lanes = chosen.origin.get("lanes_in_run")
    lines = [f"Exported by mmsweep export: {chosen.label} of the run {run.path.resolve()}",
             (f"({lanes:,} lanes, " if lanes else "(") + f"objective {exp.objective.metric}).",
             "`mmsweep run` on this file backtests this one configuration and reproduces the metrics under",
             "provenance.metrics.fast exactly: the sections below are the run's, the parameter values",
             "results.parquet's (shortest exact float form), and run.max_levels the sweep's order slots."]
    if instrument:
        u = instrument["units"]
        lines.append(f"Instrument {instrument['symbol']}: tick {_scalar(instrument['tick_size'])} {u['Q']}, lot "
                     f"{_scalar(instrument['lot_size'])} ({u['lot_size']}), contract multiplier "
                     f"{_scalar(instrument['contract_multiplier'])}, {instrument['accounting']}.")
    quote = instrument.get("units", {}).get("Q", "quote currency")
    for part, metrics in chosen.fast.items():
        lines.append(f"Fast {part}: " + _summary(metrics, exp.objective.metric, quote))
    for part, entry in chosen.exact.items():
        lines.append(f"Exact engine {part}: " + _summary(entry["metrics"], exp.objective.metric, quote))
    return "".join(f"# {line}\n" for line in lines)


def _summary(metrics: dict[str, float], objective: str, quote: str) -> str:
    parts = [f"{objective} {metrics.get(objective, float('nan')):.6g}"]
    if "PnL" in metrics:
        parts.append(f"PnL {metrics['PnL']:.6g} {quote}")
    if "NumberOfTrades" in metrics:
        parts.append(f"{metrics['NumberOfTrades']:.0f} fills")
    if "MaxDrawdown" in metrics:
        parts.append(f"MaxDrawdown {metrics['MaxDrawdown']:.4g} of book size")
    return ", ".join(parts)


def _strategy_section(strategy: dict, params: dict[str, float], active: list[str], units: dict[str, str]) -> str:
    """``strategy:`` with every active parameter on its own line, its unit as a comment."""
    lines = ["strategy:", f"  policy: {strategy['policy']}",  # a policy name is a plain identifier
             "  params:                         # every parameter, with its unit"]
    values = {p: _scalar(params[p]) for p in active}
    width = max((len(p) + len(v) for p, v in values.items()), default=0) + 6
    for p, v in values.items():
        lines.append(f"    {p}: {v}".ljust(width) + f"  # {units[p]}")
    text = "\n".join(lines) + "\n"
    static = _section("static", strategy.get("static") or {})
    return text + "".join(f"  {line}\n" for line in static.splitlines())


# --------------------------------------------------------------------------------------------
# Output and the whole command
# --------------------------------------------------------------------------------------------


def check_output(out: str | os.PathLike) -> Path | None:
    """The output file (None = standard output, ``-``); an :class:`InputError` when it cannot be
    written: a folder, a parent that is missing or not a folder, no permission to write there."""
    if str(out) == "-":
        return None
    path = Path(out)
    if path.is_dir():
        raise InputError("is a folder; give a file name, e.g. best.yaml inside it", source=str(path), key="-o")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"no such folder {parent}", source=str(path), key="-o")
    if not parent.is_dir():
        raise InputError(f"{parent} is a file, not a folder", source=str(path), key="-o")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError("permission denied: cannot write here", source=str(path), key="-o")
    return path


def write_text(path: Path | None, text: str) -> None:
    """Write ``text`` whole or not at all (a temporary file renamed over ``path``); None = stdout."""
    if path is None:
        sys.stdout.write(text)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        why = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
        raise InputError(f"cannot write the exported experiment: {why}", source=str(path), key="-o") from None
    finally:
        tmp.unlink(missing_ok=True)


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, *, rank: int | None = None,
               lane: int | None = None, warn: Callable[[str], None] | None = None,
               tuned: int | None = None) -> tuple[Path | None, Chosen]:
    """``mmsweep export``: choose a lane of ``run_dir`` (``rank`` 1 by default, or ``lane``), or
    tuned point ``tuned`` of its ``tune.parquet`` (:func:`mmsweep.sweep.tune.choose_tuned`), and
    write it to ``out`` (``-`` = standard output).  Returns the path written and the choice."""
    if tuned is not None and (rank is not None or lane is not None):
        raise InputError("give --tuned, --rank or --lane, not two of them", key="--tuned")
    path = check_output(out)
    run = read_run(run_dir)
    if tuned is not None:
        from .tune import choose_tuned

        chosen = choose_tuned(run, tuned)
    else:
        chosen = choose_lane(run, rank=rank, lane=lane, warn=warn)
    write_text(path, export_experiment(run, chosen, warn=warn))
    return path, chosen


def compare_with_provenance(exp, results) -> str | None:
    """After ``mmsweep run`` of an exported experiment: do its metrics equal the exported ones?
    None when ``exp`` carries no exported metrics; else one line saying so, or which differ."""
    fast = ((exp.provenance or {}).get("metrics") or {}).get("fast")
    if not isinstance(fast, dict) or results.height != 1:
        return None
    row = results.row(0, named=True)
    compared, differ = 0, []
    for part, metrics in fast.items():
        for metric, value in (metrics or {}).items():
            column = f"{part}_{metric}"
            if column not in row or not isinstance(value, (int, float)):
                continue
            compared += 1
            now, then = float(row[column]), float(value)
            if not (now == then or (math.isnan(now) and math.isnan(then))):
                differ.append(f"{column} {now!r} (exported {then!r})")
    if not compared:
        return None
    if differ:
        return (f"warning: {len(differ)} of {compared} metrics differ from the exported ones: "
                + "; ".join(differ[:3]) + ("; ..." if len(differ) > 3 else ""))
    return f"all {compared} metrics equal the exported ones exactly"
