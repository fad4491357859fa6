"""The exporter process's heap (glibc): fewer malloc arenas, and freed memory handed back.

A scrape allocates in several worker threads at once (the rows of each database's collectors, the
rendered text); glibc gives each thread its own arena (up to 8 per CPU), and memory freed in one
stays mapped there. ``dbperf serve`` calls :func:`limit_arenas` before any thread starts and
:func:`trim` after each collection (:mod:`exporter.server`), which returns the free pages at the
top of each arena to the system (about 1 ms for a heap of 80 MB). Elsewhere (another libc, no
ctypes) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most ``arenas`` malloc arenas for the whole process (call before threads start)."""
    return bool(_LIBC is not None and _LIBC.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Return the heap's free memory to the system; True when some was."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))
