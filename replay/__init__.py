"""Exact CPU event-replay engine (numba)."""
