"""Strict cross (conservative, hftbacktest's "accelerated" contract).

A buy at ``p`` fills only if the best ask reached ``p`` or a seller-aggressor trade printed
strictly below ``p``: a trade *at* ``p`` may have filled only the queue ahead of us.
"""


def thresholds(window):
    return window["buy_fill"], window["sell_fill"]
