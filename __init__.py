"""mmsweep: sweep thousands of market-making parameter sets over tick data at once.

The public API (everything else is private), imported lazily so that ``import mmsweep`` stays
cheap:

* data: :class:`Events`, :class:`Instrument`, :func:`load_events`, :class:`SynthConfig`,
  :func:`synthetic_market`
* frames: :class:`FrameSpec`, :class:`LatencySpec`, :class:`FeatureSpec`, :func:`build_frames`
* sweeps: :func:`load_experiment`, :func:`run_experiment`
* errors: :class:`InputError`
"""
from importlib import import_module

__version__ = "0.1.0"

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
