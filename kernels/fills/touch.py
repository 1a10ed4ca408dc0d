"""Touch: a resting order fills as soon as a trade prints at its price.

It assumes we are first in the queue, one tick looser than ``cross``.
"""
import jax.numpy as jnp

COLUMNS = ("buy_fill", "sell_fill", "sell_trade_low", "buy_trade_high")


def thresholds(window):
    # A seller-aggressor trade at p touches a buy resting at p.
    buy = jnp.minimum(window["buy_fill"], window["sell_trade_low"])
    sell = jnp.maximum(window["sell_fill"], window["buy_trade_high"])
    return buy, sell
