"""``mmsweep run EXPERIMENT --data FILE``: the same experiment on another market.

``FILE`` is a YAML file with one ``data`` section (the experiment format's, see
:mod:`mmsweep.sweep.config`); its paths are relative to ``FILE``'s folder.  The experiment keeps
everything else (interval, latency, features, strategy, sweep ...) and its run is named
``<name>-<FILE stem>`` so that it never resumes the other market's chunks.  The bundled
``experiments/data/binance_btcusdt.yaml`` points at the real Binance sample.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from .errors import InputError


def _absolute_paths(data: dict, ctx) -> dict:
    """``data`` with every ``files.<name>.path`` made absolute against the data file's folder."""
    from .config import _path

    out = copy.deepcopy(data)
    for name, entry in (out.get("files") or {}).items():
        if isinstance(entry, str):
            entry = out["files"][name] = {"path": entry}
        if not isinstance(entry, dict) or "path" not in entry:
            continue  # the experiment's own validation names the problem
        paths = entry["path"]
        key = f"data.files.{name}.path"

        def absolute(p):  # a glob is resolved against the data file's folder too, and expanded later
            glob = isinstance(p, str) and any(c in p for c in "*?[")
            return _path(ctx, key, p, must_exist=not glob)

        entry["path"] = [absolute(p) for p in paths] if isinstance(paths, list) else absolute(paths)
        if isinstance(entry.get("snapshot"), str):
            entry["snapshot"] = _path(ctx, f"data.files.{name}.snapshot", entry["snapshot"])
    return out


def load_with_data(experiment: str | os.PathLike, data_file: str | os.PathLike):
    """The experiment at ``experiment`` with the ``data`` section of ``data_file``."""
    from .config import _Ctx, _read_yaml, parse_experiment

    data_path = Path(data_file)
    try:
        text = data_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the data file ({exc})", source=str(data_path)) from None
    mapping, _ = _read_yaml(text, str(data_path))
    if not isinstance(mapping, dict) or set(mapping) != {"data"} or not isinstance(mapping["data"], dict):
        raise InputError("a data file holds exactly one mapping, `data:`", source=str(data_path))
    data = _absolute_paths(mapping["data"], _Ctx(str(data_path), data_path.resolve().parent))
    exp_path = Path(experiment)
    try:
        spec: Any = _read_yaml(exp_path.read_text(encoding="utf-8"), str(exp_path))[0]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the experiment ({exc})", source=str(exp_path)) from None
    if not isinstance(spec, dict) or "name" not in spec:
        raise InputError("not an experiment (no name)", source=str(exp_path))
    spec = dict(spec, data=data, name=f"{spec['name']}-{data_path.stem}")
    return parse_experiment(spec, str(exp_path), base_dir=exp_path.resolve().parent)
