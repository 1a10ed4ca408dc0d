"""mmsweep: sweep thousands of market-making parameter sets over tick data at once.

The public API (everything else is private), imported lazily so that ``import mmsweep`` stays
cheap:

* data: :class:`Events`, :class:`Instrument`, :func:`load_events`, :class:`SynthConfig`,
  :func:`synthetic_market`
* frames: :class:`FrameSpec`, :class:`LatencySpec`, :class:`FeatureSpec`, :func:`build_frames`
* sweeps: :func:`load_experiment`, :func:`run_experiment`
* errors: :class:`InputError`
"""
import os as _os
from importlib import import_module

__version__ = "0.1.0"


def _key_numba_cache() -> None:
    """Point numba's on-disk cache at a folder named by a digest of all of mmsweep's sources.

    numba keys a cached function on its own file only, but the function embeds the code it
    inlined from other files: after an edit or a partial update (an editable install and a
    ``git pull``), callers in unchanged files would run the old code of the changed ones.  A
    ``NUMBA_CACHE_DIR`` set by the user is left alone.  Folders of other versions unused for
    14 days are removed when a new one is made.
    """
    import hashlib
    import sys
    import time
    from pathlib import Path

    if _os.environ.get("NUMBA_CACHE_DIR"):
        return
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.glob("*/**/*.py")):
        if not {"tests", "bench"} & set(path.relative_to(root).parts):
            digest.update(path.read_bytes())
    base = Path(_os.environ.get("MMSWEEP_CACHE", Path.home() / ".cache" / "mmsweep")) / "numba"
    folder = base / digest.hexdigest()[:16]
    if not folder.exists() and base.is_dir():
        for old in base.iterdir():
            try:
                if old.is_dir() and time.time() - old.stat().st_mtime > 14 * 86400:
                    import shutil

                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
    _os.environ["NUMBA_CACHE_DIR"] = str(folder)
    if "numba" in sys.modules:  # imported first by the user: numba read its config already
        sys.modules["numba"].config.CACHE_DIR = str(folder)


_key_numba_cache()

_EXPORTS = {
    "Events": "mmsweep.sweep.data.events",
    "Instrument": "mmsweep.sweep.data.events",
    "load_events": "mmsweep.sweep.data.loader",
    "SynthConfig": "mmsweep.sweep.data.synthetic",
    "synthetic_market": "mmsweep.sweep.data.synthetic",
    "FrameSpec": "mmsweep.sweep.frames",
    "LatencySpec": "mmsweep.sweep.frames",
    "build_frames": "mmsweep.sweep.frames",
    "FeatureSpec": "mmsweep.sweep.features",
    "load_experiment": "mmsweep.sweep.config",
    "run_experiment": "mmsweep.sweep.run",
    "InputError": "mmsweep.sweep.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mmsweep' has no attribute {name!r}")
