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
- One statement per sample, reading ``pg_stat_activity`` once (a materialised CTE) and returning
  two kinds of rows: the counted sessions aggregated on the server (one row per database, state,
  wait event and statement) for the counters, and one row per active backend with its text (at
  most :data:`~exporter.postgres.samples.MAX_TEXT` characters, and the end of a longer one for its
  route tag) for the route counter and the query samples (:attr:`Sampler.store`). Every minute the
  same round trip also reads the server version, whether ``query_id`` is computed
  (``compute_query_id``) and ``track_activity_query_size`` (a text that long looks truncated).
- It starts at the target's first scrape with a wait_events collector enabled, and stops when the
  Exporter closes (:meth:`Sampler.close`: the thread ends, the session is closed).
"""

from __future__ import annotations

import logging
import time

from exporter.background import Worker
from exporter.log import RateLimiter
from exporter.postgres.connection import Connection, Watchdog
from exporter.postgres.session import APPLICATION_NAME
from exporter.postgres.sqlmark import batch, is_own, mark
from exporter.postgres.samples import MAX_TEXT, Sample, SampleStore
from exporter.postgres.waits import ACTIVE_STATES, COUNTED_STATES, CPU, Integrator, Schedule, sample_timeout

LOG = logging.getLogger("dbperf.sampler")

TAIL = 512  # characters of the end of a text longer than MAX_TEXT read for its route tag
NO_TEXT = "<insufficient privilege>"  # what pg_stat_activity shows of another role's session without pg_read_all_stats
SETTINGS_EVERY = 60.0  # seconds between reads of the server's version and compute_query_id

SETTINGS_SQL = """SELECT current_setting('server_version_num')::int, current_setting('compute_query_id', true),
  current_setting('shared_preload_libraries'),
  (SELECT setting::int FROM pg_settings WHERE name = 'track_activity_query_size')"""

_STATES = ", ".join(f"'{s}'" for s in COUNTED_STATES)
_ACTIVE = ", ".join(f"'{s}'" for s in ACTIVE_STATES)
# One read of pg_stat_activity (a materialised CTE: the view's function copies every backend's
# entry, text included, at each call), then two kinds of rows: backend = false, the counted
# sessions grouped (for the counters); backend = true, one per active backend with its text.
SAMPLE_SQL = f"""WITH a AS MATERIALIZED (
  SELECT a.datid, a.datname::text AS datname, a.state, a.wait_event_type, a.wait_event, {{query_id}} AS queryid,
    CASE WHEN a.state IN ({_ACTIVE}) THEN left(a.query, {MAX_TEXT}) END AS text,
    CASE WHEN a.state IN ({_ACTIVE}) THEN octet_length(a.query) END AS octets,
    CASE WHEN a.state IN ({_ACTIVE}) AND length(a.query) > {MAX_TEXT} THEN right(a.query, {TAIL}) END AS tail,
    extract(epoch FROM now() - a.query_start)::float8 AS duration, a.application_name, host(a.client_addr) AS client,
    a.usename::text AS usename, a.pid
  FROM pg_stat_activity a
  WHERE a.backend_type = 'client backend' AND a.state IN ({_STATES})
    AND a.pid <> pg_backend_pid() AND a.application_name IS DISTINCT FROM '{APPLICATION_NAME}')
SELECT false, datid, datname, state, wait_event_type, wait_event, queryid, count(*)::int, NULL, NULL::int, NULL,
  NULL::float8, NULL, NULL, NULL, NULL::int
FROM a GROUP BY datid, datname, state, wait_event_type, wait_event, queryid
UNION ALL
SELECT true, datid, datname, state, wait_event_type, wait_event, queryid, 1, text, octets, tail, duration,
  application_name, client, usename, pid
FROM a WHERE text IS NOT NULL"""


def sample_sql(version: int) -> str:
    """The sample's statement on a server of ``version`` (``query_id`` is PostgreSQL 14+)."""
    return mark(SAMPLE_SQL.format(query_id="a.query_id::text" if version >= 140000 else "NULL::text"))


def split_rows(rows) -> tuple[list, list]:
    """The sample's rows as ``(sessions, backends)``: the grouped sessions ``(datid, datname, state,
    wait_event_type, wait_event, queryid, count)`` for :class:`~exporter.postgres.waits.Integrator`,
    and the active backends ``(datid, datname, wait_event_type, wait_event, queryid, text, octets,
    tail, duration, application, client, user, pid)``."""
    sessions, backends = [], []
    for row in rows:
        if row[0]:
            backends.append(row[1:3] + row[4:7] + row[8:])
        else:
            sessions.append(row[1:8])
    return sessions, backends


def looks_truncated(text: str, octets: int, track_size: int | None) -> bool:
    """A text cut by PostgreSQL (at ``track_activity_query_size - 1`` bytes, on a character
    boundary) or by the sampler (:data:`MAX_TEXT` characters)."""
    return len(text) >= MAX_TEXT or (track_size is not None and octets >= track_size - 4)


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

    def __init__(self, target, shown=frozenset, clock=time.monotonic, interval: float | None = None, wall=time.time):
        self.target = target
        self.interval = interval or target.wait_events.interval
        self.timeout = sample_timeout(self.interval)
        self.shown = shown
        self.clock = clock
        self.wall = wall
        self.integrator = Integrator(self.interval, target.wait_events.max_routes,
                                     target.wait_events.max_route_statements)
        self.store = SampleStore(target.samples.limit, target.samples.max_age)
        self.track_size: int | None = None  # track_activity_query_size, bytes
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
        self._worker = Worker(f"dbperf-sampler-{target.name}", self._loop)
        self._stop = self._worker.stop
        self._log_limit = RateLimiter(60.0)
        self.after_sample: list = []  # hook(sampler) after each successful sample (exporter.postgres.dropwatch)

    @property
    def skipped(self) -> int:
        return self._schedule.skipped

    @property
    def running(self) -> bool:
        return self._worker.running

    def start(self) -> None:
        self._worker.start(before=lambda: setattr(self, "_schedule", Schedule(self.interval, self.clock())))

    def close(self, wait: float = 3.0) -> None:
        """Stop the thread (a sample in flight is broken off) and close the session."""
        self._worker.close(wait, before_join=self.conn.close)
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
            rows, backends = self._read(start)
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
        try:
            shown = self.shown()
            dt = self.integrator.add(start, rows, shown, self.target.databases.wanted)
        except Exception as exc:  # dbperf's own bug: a failed sample, counted and said, never a stopped thread
            self.failures += 1
            self.integrator.failed()
            self.last_error = f"integrating the sample failed: {type(exc).__name__}"
            if self._log_limit.allow("integrate"):
                LOG.exception("target=%s wait_events sampler: %s (logged at most once a minute)", self.target.name,
                              self.last_error, extra={"target": self.target.name, "collector": "wait_events"})
            return False
        try:
            self._backends(dt, backends, shown)
        except Exception as exc:  # never let a sample's text stop the thread (nor show it: the type only)
            if self._log_limit.allow("backends"):
                LOG.error("target=%s wait_events sampler: reading the active backends failed: %s (logged at most "
                          "once a minute)", self.target.name, type(exc).__name__,
                          extra={"target": self.target.name, "collector": "wait_events"})
        self.samples += 1
        self._log_limit.forget("sample")
        for hook in self.after_sample:
            hook(self)
        return True

    def _read(self, start: float) -> tuple[list, list]:
        deadline = time.monotonic() + max(self.interval, self.timeout + 0.1)
        if self.version is None:  # the statement depends on the version: one round trip for the settings first
            self._settings(self.conn.query(mark(SETTINGS_SQL), self.timeout, deadline=deadline)[0][1], start)
            return [], []  # a baseline (the integrator's first sample adds nothing)
        if start - self._settings_at >= SETTINGS_EVERY:
            settings, sample = self.conn.query(batch([SETTINGS_SQL, sample_sql(self.version)]), self.timeout,
                                               deadline=deadline)
            self._settings(settings[1], start)
            return split_rows(sample[1])
        (_, rows), = self.conn.query(sample_sql(self.version), self.timeout, deadline=deadline)
        return split_rows(rows)

    def _backends(self, dt: float, backends: list, shown) -> None:
        """The route counter and the query samples, from the active backends' rows."""
        from exporter.instrument.sqltags import route

        wanted, store, now = self.target.databases.wanted, self.store, self.wall()
        routes = []
        for datid, datname, wait_type, wait_event, queryid, text, octets, tail, duration, app, client, user, pid \
                in backends:
            if datname is None or text is None or text == NO_TEXT or not wanted(datname):
                continue
            tag = (route(tail) if tail is not None else None) or route(text)
            if wait_type is None:
                wait_type, wait_event = CPU, CPU
            routes.append((datname, tag, wait_type, datid, queryid))
            if is_own(text):
                continue  # dbperf's own statement (advise, the recorder): counted, never kept as a sample
            kept = store.slowest(datname, queryid) if queryid is not None else None
            if kept is not None and (duration or 0.0) < kept.duration and kept.seen_at >= now - store.max_age:
                continue  # the common case of a statement seen again, decided without building a sample
            store.offer(Sample(text=text, truncated=looks_truncated(text, octets or 0, self.track_size),
                               duration=max(0.0, duration or 0.0), wait_event_type=wait_type,
                               wait_event=wait_event or "", application=app or "", client=client or "",
                               user=user or "", datname=datname, queryid=queryid, seen_at=now, route=tag, pid=pid),
                        shown=(datid, queryid) in shown)
        self.integrator.add_routes(dt, routes, shown)
        store.expire(now)

    def _settings(self, rows, at: float) -> None:
        version, compute_query_id, preload, self.track_size = rows[0]
        self.version, self._settings_at = version, at
        self.query_ids_off = query_ids_reason(version, compute_query_id, preload)
