"""Logging: one line per event, text or JSON, and a rate limit for repeating errors."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

LOG = logging.getLogger("dbperf")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("target", "collector", "datname"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(super().format(record).split("\n"))  # one line per event, always


def setup(level: str = "info", fmt: str = "text", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


MAX_KEYS = 10_000  # a RateLimiter forgets the keys past their interval when it holds this many


class RateLimiter:
    """``allow(key)`` is true at most once per ``interval`` seconds for each key."""

    def __init__(self, interval: float = 60.0, clock=time.monotonic):
        self.interval, self.clock = interval, clock
        self._last: dict = {}
        self._lock = threading.Lock()

    def allow(self, key) -> bool:
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return False
            if len(self._last) >= MAX_KEYS:  # keys that come and go (a queryid per session): forget the quiet ones
                self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
            self._last[key] = now
            return True

    def forget(self, key) -> None:
        with self._lock:
            self._last.pop(key, None)
