"""Concurrent callers share one call instead of piling work on the database."""

from __future__ import annotations

import threading
from concurrent.futures import Future


class SingleFlight:
    """``run(fn, wait)``: the first caller runs ``fn()``; callers arriving while it runs wait up
    to ``wait`` seconds for the same result (or exception)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._inflight: Future | None = None

    def run(self, fn, wait: float):
        with self._lock:
            future, owner = self._inflight, False
            if future is None:
                future = self._inflight = Future()
                owner = True
        if not owner:
            return future.result(timeout=wait)
        try:
            result = fn()
            future.set_result(result)
            return result
        except BaseException as exc:  # never leave waiters hanging
            future.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight = None
