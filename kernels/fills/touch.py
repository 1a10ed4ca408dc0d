"""Touch (optimistic): a resting order fills as soon as a trade prints at its price.

The opposite of ``cross``: it assumes we are first in the queue, so it brackets the truth from
above where ``cross`` brackets it from below.
"""
import jax.numpy as jnp


def thresholds(window):
    # A seller-aggressor trade at p touches a buy resting at p: one tick looser than strict cross.
    buy = jnp.minimum(window["buy_fill"], window["sell_trade_low"])
    sell = jnp.maximum(window["sell_fill"], window["buy_trade_high"])
    return buy, sell
