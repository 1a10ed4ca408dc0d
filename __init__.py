"""mmsweep: sweep thousands of market-making parameter sets over tick data at once.

Public API (the rest is private):

* data: :class:`Events`, :class:`Instrument`, :func:`load_events`, :func:`synthetic_market`
* frames: :class:`FrameSpec`, :func:`build_frames`
"""
__version__ = "0.1.0"
