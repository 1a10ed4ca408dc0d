"""Pure-JAX sweep kernels (policies, fill models, the scan backtest, online metrics)."""
