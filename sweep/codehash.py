"""Digests of the code that turns data into frames, so that a cache never serves frames built by
other code: a change to the frame builder, the features, the book or a reader gives new keys."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent  # the repository root (mmsweep's package dir)

#: the frame builder: frames, features, both books, the event table, the frames store
FRAMES_CODE = ("sweep/frames.py", "sweep/features.py", "sweep/frames_store.py", "sweep/data/book.py",
               "sweep/data/events.py", "sweep/data/screen.py", "replay/book.py")
#: what reads the inputs of a streamed source (its frames are keyed by the input files' bytes)
READER_CODE = ("sweep/data/binance.py", "sweep/data/binance_archive.py", "sweep/data/tardis.py",
               "sweep/data/hftnpz.py", "sweep/data/store.py", "sweep/data/loader.py", "sweep/data/sequence.py",
               "sweep/data/instruments.py", "sweep/data/synthetic.py", "sweep/data/synthetic_stream.py")


@functools.lru_cache(maxsize=None)
def code_digest(files: tuple[str, ...] = FRAMES_CODE) -> str:
    """sha256 (hex, 16 chars) of the named source files' bytes (a missing file counts as empty)."""
    h = hashlib.sha256()
    for name in files:
        path = _ROOT / name
        h.update(name.encode())
        h.update(path.read_bytes() if path.exists() else b"")
    return h.hexdigest()[:16]
