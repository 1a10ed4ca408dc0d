"""Sweep kernels: quoting policies, fill models, the lane step and its backends, online metrics."""
from .backends import configure_xla_cpu as _configure_xla_cpu

_configure_xla_cpu()
