"""mmsweep's own on-disk event format: one ``.npz`` per instrument.

Arrays: ``events`` (EVENT_DTYPE), ``instrument`` and ``meta`` (JSON strings).  Written to a
temporary name and renamed, so an interrupted write never leaves a half-written file.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .events import EVENT_DTYPE, Events, Instrument, validate_events

FORMAT_TAG = "mmsweep-events-v1"


def save_events(events: Events, path: str | os.PathLike) -> Path:
    """Write ``events`` atomically to ``path`` (``.npz`` appended if missing)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                events=events.table,
                instrument=np.array(json.dumps(dataclasses.asdict(events.instrument))),
                meta=np.array(json.dumps(events.meta, default=str)),
                format=np.array(FORMAT_TAG),
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a full disk or a kill before the rename leaves no half file
    return path


def is_native(path: str | os.PathLike) -> bool:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return "format" in npz.files and str(npz["format"]) == FORMAT_TAG
    except Exception:
        return False


def load_native(path: str | os.PathLike) -> Events:
    """Read a file written by :func:`save_events` (validated)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            table = npz["events"]
            instrument = Instrument(**json.loads(str(npz["instrument"])))
            meta = json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"not a readable mmsweep event file ({exc})", source=str(path)) from exc
    if table.dtype != EVENT_DTYPE:
        raise InputError(f"events array has dtype {table.dtype}", source=str(path))
    validate_events(table, source=str(path))
    return Events(table, instrument, source=str(path), meta=meta)
