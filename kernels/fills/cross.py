"""Strict cross (hftbacktest's "accelerated" contract).

A buy at ``p`` fills only if the best ask reached ``p`` or a seller-aggressor trade printed
strictly below ``p``: a trade *at* ``p`` may have filled only the queue ahead of us.  Whether
this under- or over-states the exact engine's PnL depends on the data (adverse queue fills at
the touch can make the exact engine worse); ``mmsweep verify`` measures it per run.
"""

COLUMNS = ("buy_fill", "sell_fill")


def thresholds(window):
    return window["buy_fill"], window["sell_fill"]
