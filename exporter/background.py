"""The life of a per-target background worker (the session sampler, the server-log reader, the
plans source): one daemon thread, started at most once, stopped once for good.

:meth:`Worker.start` starts the thread unless it runs or the worker was closed;
:meth:`Worker.close` sets :attr:`Worker.stop` (the loop's ``stop.wait(...)`` returns at once) and
waits a bounded time for the thread to end, never for itself (a close from inside the loop)."""

from __future__ import annotations

import logging
import threading
from typing import Callable

LOG = logging.getLogger("dbperf.background")


class Worker:
    def __init__(self, name: str, loop: Callable[[], None]):
        self.name = name
        self.stop = threading.Event()  # set by close(): the loop ends at its next check
        self._loop = loop
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def started(self) -> bool:
        """Whether the thread was started (it may have ended since)."""
        return self._thread is not None

    def start(self, before: Callable[[], None] | None = None) -> bool:
        """Start the thread (``before`` runs first, under the lock); False when it was started
        already or the worker is closed."""
        with self._lock:
            if self._thread is not None or self.stop.is_set():
                return False
            if before is not None:
                before()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
            return True

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a loop's own bug: said once, with its traceback, never a silent stop
            LOG.exception("%s stopped by an unexpected error; it is not restarted", self.name)

    def close(self, wait: float = 3.0, before_join: Callable[[], None] | None = None) -> None:
        """Stop for good: set :attr:`stop`, run ``before_join`` (e.g. close a session, which breaks
        off a statement in flight), then wait up to ``wait`` seconds for the thread."""
        with self._lock:
            self.stop.set()
            thread = self._thread
        if before_join is not None:
            before_join()
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait)
