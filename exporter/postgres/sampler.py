"""The session sampler of one PostgreSQL target: a thread of its own, independent of scrapes, that
reads ``pg_stat_activity`` once per ``wait_events.interval`` (default 1 s) and integrates what it
sees (:mod:`exporter.postgres.waits`); the ``wait_events`` collectors render its counters at
scrape time without any SQL (:mod:`exporter.postgres.wait_events`).

- Its own session (a :class:`~exporter.postgres.connection.Connection`: dbperf's session set-up,
  ``application_name=dbperf``, marked SQL, reconnect backoff), never one of the scrapes'.
- Each sample is bounded: the session's ``statement_timeout`` is :func:`sample_timeout` (half the
  interval, 0.1 .. 1 s), and the watchdog cancels, then breaks off, a sample still running one
  interval after it started, or 1 s after its timeout when sooner (a frozen server): that sample fails, counted, the session is
  replaced. One thread, one sample at a time: a slow server makes samples fail or be skipped
  (counted), never a pile-up of threads.
- One statement per sample, aggregated on the server (one row per database, state, wait event and
  statement); every minute the same round trip also reads the server version and whether
  ``query_id`` is computed (``compute_query_id``).
- It starts at the target's first scrape with a wait_events collector enabled, and stops when the
  Exporter closes (:meth:`Sampler.close`: the thread ends, the session is closed).
"""

from __future__ import annotations

import logging
import threading
import time

from exporter.log import RateLimiter
from exporter.postgres.connection import Connection, Watchdog
from exporter.postgres.session import APPLICATION_NAME
from exporter.postgres.sqlmark import batch, mark
from exporter.postgres.waits import COUNTED_STATES, Integrator, Schedule, sample_timeout

LOG = logging.getLogger("dbperf.sampler")

SETTINGS_EVERY = 60.0  # seconds between reads of the server's version and compute_query_id

SETTINGS_SQL = """SELECT current_setting('server_version_num')::int, current_setting('compute_query_id', true),
  current_setting('shared_preload_libraries')"""

_STATES = ", ".join(f"'{s}'" for s in COUNTED_STATES)
SAMPLE_SQL = f"""SELECT a.datid, a.datname::text, a.state, a.wait_event_type, a.wait_event, {{query_id}}, count(*)::int
FROM pg_stat_activity a
WHERE a.backend_type = 'client backend' AND a.state IN ({_STATES})
  AND a.pid <> pg_backend_pid() AND a.application_name IS DISTINCT FROM '{APPLICATION_NAME}'
GROUP BY 1, 2, 3, 4, 5, 6"""


def sample_sql(version: int) -> str:
    """The sample's statement on a server of ``version`` (``query_id`` is PostgreSQL 14+)."""
    return mark(SAMPLE_SQL.format(query_id="a.query_id::text" if version >= 140000 else "NULL::text"))


def query_ids_reason(version: int, compute_query_id: str | None, preload: str) -> str:
    """Why ``pg_stat_activity.query_id`` is NULL on this server, or "" when it is computed."""
    if version < 140000:
        return "pg_stat_activity.query_id needs PostgreSQL 14+"
    if compute_query_id in ("on", "regress", "verbose"):
        return ""
    if compute_query_id == "auto" and "pg_stat_statements" in (preload or ""):
        return ""  # auto: on when a module asks for it, as pg_stat_statements does
    return (f"compute_query_id is {compute_query_id or 'unknown'}, so pg_stat_activity.query_id is NULL: set "
            "compute_query_id = on (or auto with pg_stat_statements in shared_preload_libraries)")


class Sampler:
    """Samples ``target``'s sessions; ``shown()`` gives the ``(datid, queryid)`` of the statements the
    statements collector shows (the others are summed in ``queryid="other"``)."""

    def __init__(self, target, shown=frozenset, clock=time.monotonic):
        self.target = target
        self.interval = target.wait_events.interval
        self.timeout = sample_timeout(self.interval)
        self.shown = shown
        self.clock = clock
        self.integrator = Integrator(self.interval)
        self.conn = Connection(target.dsn, None, target.connect_timeout,
                               Watchdog(f"dbperf-sampler-watchdog-{target.name}"), statement_timeout=self.timeout)
        self.samples = 0   # successful samples
        self.failures = 0  # failed samples (the server did not answer in time, or refused)
        self.last_duration = 0.0
        self.last_error = ""
        self.version: int | None = None
        self.query_ids_off = ""  # why query_id is not computed ("" when it is, or not known yet)
        self._settings_at = -SETTINGS_EVERY
        self._schedule = Schedule(self.interval, clock())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._log_limit = RateLimiter(60.0)
        self.after_sample: list = []  # hook(sampler) after each successful sample (exporter.postgres.dropwatch)

    @property
    def skipped(self) -> int:
        return self._schedule.skipped

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._schedule = Schedule(self.interval, self.clock())
                self._thread = threading.Thread(target=self._loop, name=f"dbperf-sampler-{self.target.name}",
                                                daemon=True)
                self._thread.start()

    def close(self, wait: float = 3.0) -> None:
        """Stop the thread (a sample in flight is broken off) and close the session."""
        with self._start_lock:
            self._stop.set()
            thread = self._thread
        self.conn.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait)
        self.conn.close()  # a sample that reconnected meanwhile

    def _loop(self) -> None:
        while not self._stop.is_set():
            delay = self._schedule.wait(self.clock())
            if delay > 0:
                self._stop.wait(delay)
                continue
            self._schedule.take(self.clock())  # slots missed by a slow sample are counted as skipped
            self.sample_once()

    def sample_once(self) -> bool:
        """Take one sample now (the thread's loop calls it; tests may too); True when it succeeded."""
        start = self.clock()
        try:
            rows = self._read(start)
        except Exception as exc:
            self.failures += 1
            self.integrator.failed()
            self.last_error = self.conn.scrub(" ".join(str(exc).split())) or type(exc).__name__
            if not self._stop.is_set() and self._log_limit.allow("sample"):
                LOG.warning("target=%s wait_events sampler: a sample failed: %s (repeats are logged at most once a "
                            "minute; dbperf_sampler_failed_samples_total counts them)", self.target.name,
                            self.last_error, extra={"target": self.target.name, "collector": "wait_events"})
            return False
        finally:
            self.last_duration = self.clock() - start
        self.integrator.add(start, rows, self.shown(), self.target.databases.wanted)
        self.samples += 1
        self._log_limit.forget("sample")
        for hook in self.after_sample:
            hook(self)
        return True

    def _read(self, start: float) -> list:
        deadline = time.monotonic() + max(self.interval, self.timeout + 0.1)
        if self.version is None:  # the statement depends on the version: one round trip for the settings first
            self._settings(self.conn.query(mark(SETTINGS_SQL), self.timeout, deadline=deadline)[0][1], start)
            return []  # a baseline (the integrator's first sample adds nothing)
        if start - self._settings_at >= SETTINGS_EVERY:
            settings, sample = self.conn.query(batch([SETTINGS_SQL, sample_sql(self.version)]), self.timeout,
                                               deadline=deadline)
            self._settings(settings[1], start)
            return sample[1]
        (_, rows), = self.conn.query(sample_sql(self.version), self.timeout, deadline=deadline)
        return rows

    def _settings(self, rows, at: float) -> None:
        version, compute_query_id, preload = rows[0]
        self.version, self._settings_at = version, at
        self.query_ids_off = query_ids_reason(version, compute_query_id, preload)
