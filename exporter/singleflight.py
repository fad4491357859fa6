"""Concurrent callers share one call instead of piling work on the database.

The call runs in a thread of its own, so each caller waits only as long as it is willing to: a
caller whose own deadline passes first gets its ``fallback`` answer at once (what a stuck target
looks like) instead of an error, and no second call starts while one is in flight, so a target
that hangs holds one thread, not one per scrape.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

FINISH_MARGIN = 0.25  # seconds a caller waits past its budget for the call's answer (rendering)


class Pending:
    """One caller's wait for a shared call: ``result()`` returns by the caller's own deadline."""

    def __init__(self, future: Future, deadline: float, fallback=None):
        self.future, self.deadline, self.fallback = future, deadline, fallback

    def result(self):
        """The call's result; when the deadline passes first, or the call failed, the
        fallback's answer for ``None`` (still running) or the exception (without a fallback:
        :class:`TimeoutError` or the call's exception)."""
        try:
            return self.future.result(timeout=max(0.0, self.deadline - time.monotonic()))
        except FutureTimeout:
            if self.fallback is None:
                raise TimeoutError("the shared call did not finish before this caller's deadline") from None
            return self.fallback(None)
        except Exception as exc:
            if self.fallback is None:
                raise
            return self.fallback(exc)


class SingleFlight:
    """``begin(fn, wait, fallback)``: the first caller starts ``fn()`` in a new thread; callers
    arriving while it runs share it. Each waits up to its own ``wait`` seconds."""

    def __init__(self, name: str = "dbperf-flight"):
        self.name = name
        self._lock = threading.Lock()
        self._inflight: Future | None = None
        self.started = 0  # calls started (not shared), for tests and self-metrics

    @property
    def running(self) -> bool:
        return self._inflight is not None

    def begin(self, fn, wait: float, fallback=None) -> Pending:
        with self._lock:
            future = self._inflight
            if future is None:
                future = self._inflight = Future()
                self.started += 1
                threading.Thread(target=self._call, args=(future, fn), name=self.name, daemon=True).start()
        return Pending(future, time.monotonic() + wait, fallback)

    def run(self, fn, wait: float, fallback=None):
        return self.begin(fn, wait, fallback).result()

    def _call(self, future: Future, fn) -> None:
        try:
            result = fn()
        except BaseException as exc:  # never leave waiters hanging
            self._finish()
            future.set_exception(exc)
        else:
            self._finish()
            future.set_result(result)

    def _finish(self) -> None:
        with self._lock:
            self._inflight = None
