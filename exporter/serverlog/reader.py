"""The server-log reader of one target: a thread of its own that reads the log once per
``server_log.interval`` (default 1 s), parses at most ``max_lines_per_second`` entries per second
(the rest of a burst is skipped and counted in ``dbperf_log_lines_dropped_total{reason="rate_limit"}``),
and adds them to its :class:`~exporter.serverlog.tally.Tally`. A scrape only reads the tally.

Bounded: at most :data:`READS_PER_TICK` reads of :data:`~exporter.serverlog.options.MAX_READ_BYTES`
per interval, an entry longer than ``max_line_bytes`` is cut; memory is the read buffer, the event
rings and the capped label sets. Its position is stored in the state directory after each read
(:class:`~exporter.serverlog.follow.Follower`). A log that cannot be read (missing path, no
permission, a remote server without the functions or grants) makes the collector fail or
unsupported with the reason, logged once a minute at most; the thread keeps trying."""

from __future__ import annotations

import logging
import threading
import time

from exporter import state
from exporter.background import Worker
from exporter.log import RateLimiter
from exporter.serverlog.follow import Follower, LocalSource, Unavailable
from exporter.serverlog.options import MAX_READ_BYTES
from exporter.serverlog.records import Framer, Parser
from exporter.serverlog.tally import Tally

LOG = logging.getLogger("dbperf.serverlog")

READS_PER_TICK = 8
UNAVAILABLE_RETRY = 60.0  # seconds before a log that cannot be read this way is tried again


class LogReader:
    def __init__(self, target, clock=time.monotonic, source=None):
        self.target = target
        self.options = opts = target.server_log
        self.clock = clock
        if source is None:
            if opts.remote:
                from exporter.serverlog.remote import RemoteSource

                source = RemoteSource(target)
            else:
                source = LocalSource(opts.path, opts.suffix)
        self.source = source
        path = state.state_file(state.state_dir(opts.state_dir), "serverlog", target.name) if opts.keep_position \
            else None  # no position read nor stored: from the end of the log
        self.follower = Follower(source, path)
        self.framer = Framer(opts.format, opts.max_line_bytes)
        self.parser = Parser(opts.format, opts.prefix)
        self.tally = Tally(opts)
        self.lines = 0           # entries parsed
        self.dropped = 0         # entries skipped by the rate limit
        self.reads = 0           # successful reads (ticks)
        self.failures = 0        # ticks that failed
        self.last_error = ""     # "" when the last tick succeeded
        self.unavailable = ""    # why this way of reading cannot work on this server ("" when it can)
        self._unavailable_at = 0.0
        self._tail = None  # (file, offset, bytes) of an unfinished last entry seen at the end of the file
        self._allowance = float(opts.max_lines_per_second)
        self._last = clock()
        self._worker = Worker(f"dbperf-serverlog-{target.name}", self._loop)
        self._stop = self._worker.stop
        self._log_limit = RateLimiter(60.0)
        self._tick_lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._worker.running

    def start(self) -> None:
        self._worker.start()

    def close(self, wait: float = 3.0) -> None:
        self._worker.close(wait)
        with self._tick_lock:
            try:
                self.follower.save()
            except OSError as exc:
                LOG.warning("target=%s server_log: cannot store the read position: %s", self.target.name, exc)
            self.source.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.options.interval)

    def tick(self) -> bool:
        """Read what the log gained (the thread calls it; tests may too); True when it succeeded."""
        with self._tick_lock:
            if self._stop.is_set() and self._worker.started:
                return False
            if self.unavailable and self.clock() - self._unavailable_at < UNAVAILABLE_RETRY:
                return False  # asked again once a minute, not every interval
            try:
                self._read()
            except Exception as exc:
                self.failures += 1
                self.last_error = " ".join(str(exc).split())[:300] or type(exc).__name__
                if isinstance(exc, Unavailable):
                    self.unavailable, self._unavailable_at = self.last_error, self.clock()
                if self._log_limit.allow("read"):
                    LOG.warning("target=%s server_log: cannot read the log: %s (repeats are logged at most once a "
                                "minute)", self.target.name, self.last_error,
                                extra={"target": self.target.name, "collector": "server_log"})
                return False
            self.reads += 1
            self.last_error = self.unavailable = ""
            self._log_limit.forget("read")
            return True

    def _read(self) -> None:
        now = self.clock()
        rate = self.options.max_lines_per_second
        self._allowance = min(float(rate), self._allowance + (now - self._last) * rate)
        self._last = now
        entries = []
        for _ in range(READS_PER_TICK):
            data, at_eof, new_file = self.follower.read(MAX_READ_BYTES)
            if new_file:
                self.framer.reset()
            # stderr: an entry's continuation lines may come in a later write (a long message), so the
            # last entry of the file is taken only when the file did not grow since the previous read,
            # or when a newer file exists (the server writes there now)
            where = (self.follower.current or {}).get("name"), (self.follower.current or {}).get("offset"), len(data)
            idle = at_eof and (where == self._tail or self.follower.newer_exists)  # a rotated file is complete
            records, consumed = self.framer.split(data, idle)
            self._tail = where if at_eof and consumed < len(data) else None
            allowed = int(self._allowance)
            if len(records) > allowed:
                self.dropped += len(records) - allowed
                records = records[:allowed]
            self._allowance -= len(records)
            entries += self.parser.parse(records)
            self.lines += len(records)
            moved = self.follower.consumed(consumed, at_eof, len(data) - consumed)
            if moved:
                self.framer.reset()
                continue
            if at_eof or not data:
                break
        self.tally.add(entries)
        self.follower.save()
