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


_SOURCES_DIGEST: list = []
_SUBPACKAGES = ("kernels", "replay", "sweep")


def _sources_digest() -> str:
    """sha256 (16 hex) of all of mmsweep's sources (tests and benchmarks aside), once per process:
    the key of every cache of code generated or compiled from them."""
    if not _SOURCES_DIGEST:
        import hashlib
        from pathlib import Path

        root = Path(__file__).resolve().parent
        digest = hashlib.sha256()
        # the subpackages by name: a virtual environment or a run folder inside a checkout is not
        # mmsweep's source
        for path in [root / "__init__.py"] + sorted(p for sub in _SUBPACKAGES for p in (root / sub).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
        _SOURCES_DIGEST.append(digest.hexdigest()[:16])
    return _SOURCES_DIGEST[0]


def _key_numba_cache() -> None:
    """Point numba's on-disk cache at a folder named by a digest of all of mmsweep's sources.

    numba keys a cached function on its own file only, but the function embeds the code it
    inlined from other files: after an edit or a partial update (an editable install and a
    ``git pull``), callers in unchanged files would run the old code of the changed ones.  A
    ``NUMBA_CACHE_DIR`` set by the user is left alone.  Folders of other versions unused for
    14 days are removed when a new one is made.
    """
    import sys
    import time
    from pathlib import Path

    if _os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = Path(_os.environ.get("MMSWEEP_CACHE", Path.home() / ".cache" / "mmsweep")) / "numba"
    folder = base / _sources_digest()
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


def _key_jax_cache() -> None:
    """Turn on JAX's persistent compilation cache, in a folder named by a digest of this CPU's
    model and instruction-set flags (JAX keys its entries on the program, the jaxlib version
    and the XLA flags, not on the CPU: a home folder shared by machines of other CPUs would
    otherwise load code built for instructions they lack).  Every program is cached, however
    fast it compiled: a warm run compiles dozens of small ones (state init, slices, metrics),
    about a second in all.  A ``JAX_COMPILATION_CACHE_DIR`` set by the user is left alone;
    ``MMSWEEP_JAX_CACHE=0`` turns it off."""
    import hashlib
    import platform
    import sys
    from pathlib import Path

    if _os.environ.get("JAX_COMPILATION_CACHE_DIR") or _os.environ.get("MMSWEEP_JAX_CACHE") == "0":
        return
    cpu = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo") as f:
            cpu += sorted({line.strip() for line in f if line.startswith(("model name", "flags", "Features"))})
    except OSError:
        pass
    base = Path(_os.environ.get("MMSWEEP_CACHE", Path.home() / ".cache" / "mmsweep")) / "jax"
    folder = str(base / hashlib.sha256("\n".join(cpu).encode()).hexdigest()[:16])
    settings = {"JAX_COMPILATION_CACHE_DIR": folder, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    for name, value in settings.items():
        _os.environ.setdefault(name, value)
    if "jax" in sys.modules:  # imported first by the user: JAX read its environment already
        jax = sys.modules["jax"]
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


_key_numba_cache()
_key_jax_cache()

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
