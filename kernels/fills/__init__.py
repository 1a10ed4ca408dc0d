"""Fill models: given a window's frame columns, the per-side fill thresholds (relative ticks).

Each model is a function ``thresholds(window) -> (buy_threshold, sell_threshold)``: a resting buy
at tick ``p`` fills iff ``p >= buy_threshold``, a sell iff ``p <= sell_threshold``.  ``window``
holds the frame columns of one exposure window without their ``_a``/``_b`` suffix.
"""
from . import cross, touch

FILL_MODELS = {"cross": cross.thresholds, "touch": touch.thresholds}


def get_fill_model(name: str):
    try:
        return FILL_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown fill model {name!r}; known: {sorted(FILL_MODELS)}") from None
