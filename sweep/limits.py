"""What one machine can hold: every allocation sized from the data (a decision grid, a synthetic
market) is checked here first, so that a span that cannot fit is refused with its size instead
of dying in a MemoryError after minutes of work."""
from __future__ import annotations

import os

from .errors import InputError

GIB = float(1 << 30)
#: the longest order-entry (or response) latency accepted, ms: beyond a minute an order is not
#: market making, and every engine keeps that many decisions' orders in flight
MAX_LATENCY_MS = 60_000.0


def available_memory_bytes() -> int:
    """Memory this process may still use (bytes): ``MemAvailable`` on Linux, else the physical
    pages free; a large number when neither can be read (the check then never refuses)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_fits(nbytes: float, what: str, *, hint: str = "", source: str = "", key: str | None = None) -> None:
    """Raise :class:`InputError` if ``nbytes`` (an estimate of what ``what`` needs) exceeds the
    memory available now; the message gives both sizes."""
    free = available_memory_bytes()
    if nbytes > free:
        raise InputError(f"{what} would need about {nbytes / GIB:,.1f} GiB of memory; "
                         f"{free / GIB:,.1f} GiB are available" + (f". {hint}" if hint else ""),
                         source=source, key=key)
