"""One target's scrape: plan the collectors, run them under a deadline, cache, self-metrics.

One engine for every kind of target (:mod:`exporter.kind`: PostgreSQL, PgBouncer): the kind says
how to open its sessions, what its probe asks and which collectors it has; everything below is
the same for all.

- One long-lived connection per database of the target; cluster collectors run on the target's
  own database, database collectors on every discovered database, databases concurrently up to
  the target's ``max_connections``. The sessions to the other databases stay open between
  refreshes only while the target's session sampler watches for a ``DROP DATABASE``
  (:mod:`exporter.postgres.dropwatch`), which closes them as soon as one waits for them; else
  each lives for one refresh (see :meth:`TargetScraper._release`).
- Each collector has a statement timeout and a TTL; a cached result is served as rendered text.
- The scrape ends at its deadline whatever the server does: the probe and the collectors run in
  the target's worker threads and are abandoned at the deadline (their queries are cancelled, then
  their sockets shut down, by :mod:`exporter.postgres.connection`), and reported as failed;
  the kind's up metric (``pg_up``, ``pgbouncer_up``) is 0 when the server did not answer the probe
  in time.
- Each session's statement timeout is set once, at connect, to the longest timeout of the
  collectors that use it; a collector with a shorter one is bounded at its own by the client (the
  watchdog's cancel), so that no scrape sends a ``SET``.
- Concurrent scrapes of one target share one collection; a scrape that arrives while an earlier
  one is stuck gets the stuck state (``pg_up 0``, collectors failed) by its own deadline.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace

from exporter.collector import CLUSTER, DATABASE, Collector, Context, ServerInfo
from exporter.config import Target
from exporter.kind import Kind, kind_of
from exporter.log import RateLimiter
from exporter.metrics import Family, Rendered, const_label_prefix
from exporter.metrics import _escape_label as escape_label
from exporter.postgres.connection import Busy, ConnectError, Connection, DeadlineExceeded, Watchdog
from exporter.singleflight import FINISH_MARGIN, Pending, SingleFlight

LOG = logging.getLogger("dbperf.scrape")

MIN_TIME_LEFT = 0.05  # seconds: below this a collector is not started
PROBE_TIMEOUT = 2.0   # seconds the probe may take at most (less when the deadline is nearer)
WARM_SESSIONS = 30    # sessions to other databases kept open between refreshes, at most (see _release)
HOLD = 10.0           # seconds a database a DROP DATABASE waited for gets no warm session (see _dropping)

# what a scrape does with one collector (plan_run)
CACHED, RUN, SKIP, STALE = "cached", "run", "skip", "stale"


EARLY = 1.0  # seconds: a cached result this close to its TTL is refreshed now (see plan_run)


def phase(datname: str) -> float:
    """A database's fixed offset in seconds (0 .. 3600, a stable hash of its name), which places
    its TTL slots (see :func:`plan_run`)."""
    return zlib.crc32(datname.encode()) % 3_600_000 / 1000.0


def slot(t: float, ttl: float, shift: float) -> int:
    return math.floor((t + shift) / ttl)


def plan_run(entry: "CacheEntry | None", ttl: float, now: float, remaining: float, last_duration: float,
             optional: bool, shift: float | None = None) -> str:
    """:data:`CACHED` when the collector's cached result is younger than its ``ttl`` less
    :data:`EARLY` (at most a tenth of it: a result collected a little after the start of a scrape
    one TTL ago is due in this scrape, not one interval later) and, with a ``shift`` (database
    collectors: the database's :func:`phase`), still in the same TTL slot: time is cut into slots of
    ``ttl`` seconds offset by ``shift``, and a result is refreshed in the first scrape of a new slot.
    The databases' refreshes so fall in different scrapes instead of all in one every ``ttl``
    (after the first scrape, which runs them all), a database's results are never older than
    ``ttl``, and its collectors whose TTLs are multiples of each other (30 s, 5 min) refresh in the
    same scrape, on one session. Else :data:`RUN` when it fits before the deadline: less than
    :data:`MIN_TIME_LEFT` never fits, and an optional collector does not when its last run took
    longer than the time left. A collector that does not fit is :data:`STALE` (its last result is
    served with its age) or :data:`SKIP` (nothing to serve)."""
    if (entry is not None and ttl > 0 and now - entry.at < ttl - min(EARLY, ttl / 10)
            and (shift is None or slot(now, ttl, shift) == slot(entry.at, ttl, shift))):
        return CACHED
    if remaining < MIN_TIME_LEFT or (optional and last_duration > remaining):
        return SKIP if entry is None else STALE
    return RUN


@dataclass
class Outcome:
    """What one collector did in one scrape, on one database."""

    collector: str
    datname: str
    success: bool
    duration: float = 0.0
    cache_age: float = 0.0
    error: str = ""
    rendered: Rendered | None = None
    skipped: bool = False
    supported: bool = True  # False: the collector cannot run on this server (``error`` says why)


@dataclass
class CacheEntry:
    rendered: Rendered
    at: float          # monotonic time of the collection
    duration: float


@dataclass
class Job:
    """The collectors one connection runs in one scrape, and what they did so far."""

    datname: str
    conn: Connection
    collectors: list
    outcomes: list = field(default_factory=list)
    running: str | None = None
    release: str | None = None  # the session's key: closed when its last job ends (TargetScraper._release)
    connect_error: Exception | None = None  # the session could not be opened in this job: why


class TargetScraper:
    """The scrape engine of one target, of any kind (``target.kind``).

    ``collectors``: the target's own collector objects (default: new ones from
    :func:`exporter.registry.collectors_for`); they must not be shared with another scraper."""

    def __init__(self, target: Target, collectors: tuple[Collector, ...] | None = None, clock=time.monotonic,
                 kind: Kind | None = None):
        if collectors is None:
            from exporter.registry import collectors_for

            collectors = collectors_for(target)
        self.target = target
        self.kind = kind or kind_of(target.kind)
        self.collectors = tuple(collectors)
        self.clock = clock
        self.const = const_label_prefix({"target": target.name})
        self._watchdog = Watchdog(f"dbperf-watchdog-{target.name}")
        self._timeouts = self._session_timeouts()
        self.main = self._connection(None, self._timeouts["main"])
        self.conns: dict[str, Connection] = {}
        self._users: dict[str, int] = {}  # per-database session -> jobs using it now (closed at 0)
        self._sessions_lock = threading.Lock()
        self._held: dict[str, float] = {}  # database -> until when (time.monotonic) it gets no warm session
        # the session sampler's DROP DATABASE watch (exporter.postgres.dropwatch), when a collector has it
        self.drop_watch = next((w for w in (getattr(c, "drop_watch", None) for c in self.collectors)
                                if w is not None), None)
        if self.drop_watch is not None:
            self.drop_watch.subscribe(self._dropping)
        self.cache: dict[tuple[str, str], CacheEntry] = {}  # collectors with a ttl only
        self.durations: dict[tuple[str, str], float] = {}   # last run of every collector, for the budget
        self.last_success: dict[tuple[str, str], float] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.scrapes = 0
        self.server: ServerInfo | None = None
        self._answered: ServerInfo | None = None  # the probe's answer in the scrape in flight
        self.databases: list[str] = []  # the databases the last scrape covered
        self.outcomes: list[Outcome] = []  # what each collector did in the last scrape (check-config), no text
        # samples each collector served in the last scrape ("": the engine's own), for the collectors
        # (Context.served: the series budget of exporter.postgres.budget); replaced, never changed
        self.served: dict[str, int] = {}
        self.failure = ""  # why the last scrape's probe failed ("" when it answered), with the hint
        self._pool = ThreadPoolExecutor(max_workers=target.max_connections,
                                        thread_name_prefix=f"dbperf-{target.name}")
        self._flight = SingleFlight(f"dbperf-scrape-{target.name}")
        self._log_limit = RateLimiter(60.0)
        # (collector, datname) -> why it cannot run on this server, as of the last scrape
        self.unsupported: dict[tuple[str, str], str] = {}
        self._unsupported_logged: set[tuple[str, str]] = set()  # (collector, reason) logged once

    def _connection(self, dbname: str | None, statement_timeout: float) -> Connection:
        return self.kind.connection(self.target.dsn, dbname, self.target.connect_timeout, self._watchdog,
                                    statement_timeout)

    def _session_timeouts(self) -> dict[str, float]:
        """The statement timeout of each session (see :meth:`_plan`): the longest of the enabled
        collectors that run on it, and the probe's on the target's main session."""
        enabled = self.enabled()
        out = {f"own:{c.name}": timeout for c, _, timeout in enabled if c.scope == CLUSTER and c.own_session}
        out["main"] = max([PROBE_TIMEOUT] + [timeout for c, _, timeout in enabled
                                             if not (c.scope == CLUSTER and c.own_session)])
        out["database"] = max([PROBE_TIMEOUT] + [timeout for c, _, timeout in enabled if c.scope == DATABASE])
        return out

    # -- public ----------------------------------------------------------------------------
    def begin(self, budget: float) -> Pending:
        """Start a collection within ``budget`` seconds, or join the one in flight;
        ``result()`` returns by the caller's own deadline (``budget`` plus a margin for
        rendering), with the stuck state when the collection is not done by then."""
        started = self.clock()
        return self._flight.begin(lambda: self._scrape(budget), wait=budget + FINISH_MARGIN,
                                  fallback=lambda error: self._late(error, self.clock() - started))

    def scrape(self, budget: float) -> Rendered:
        """Collect within ``budget`` seconds; concurrent callers share one collection."""
        return self.begin(budget).result()

    def close(self) -> None:
        for collector in self.collectors:  # background sources (the session sampler) stop with the scraper
            stop = getattr(collector, "close", None)
            if stop is not None:
                stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for conn in [self.main, *self.conns.values()]:
            conn.close()

    def enabled(self) -> list[tuple[Collector, float, float]]:
        """``(collector, ttl, timeout)`` of the collectors the target's config enables."""
        out = []
        for c in self.collectors:
            settings = self.target.collector(c.name, c.enabled_by_default)
            if settings.enabled:
                ttl = c.default_ttl if settings.ttl is None else settings.ttl
                out.append((c, ttl, settings.timeout or c.default_timeout))
        return out

    # -- one scrape ------------------------------------------------------------------------
    def _scrape(self, budget: float) -> Rendered:
        start = self.clock()
        deadline = start + budget
        self.scrapes += 1
        self._answered = None
        enabled = self.enabled()
        outcomes: list[Outcome] = []
        server, failure = self._probe(deadline)
        self._answered = server
        if server is not None:
            jobs = self._plan(server, enabled)
            outcomes = self._run_jobs(jobs, server, {c.name: (ttl, timeout) for c, ttl, timeout in enabled},
                                      deadline)
            outcomes += self._not_applicable(server, enabled)
            self._note_unsupported(server, outcomes)
        else:
            outcomes = self._unreachable(enabled, failure)
        rendered, served = Rendered(), {}
        for outcome in outcomes:
            if outcome.rendered is not None:
                rendered.merge(outcome.rendered)
                served[outcome.collector] = served.get(outcome.collector, 0) + outcome.rendered.samples
        # kept until the next scrape without their text (a collector without a TTL would hold it twice)
        self.outcomes = [replace(o, rendered=None) if o.rendered is not None else o for o in outcomes]
        self.failure = failure
        before = rendered.samples
        rendered.add_families(self._self_metrics(server, outcomes, self.clock() - start), self.const)
        served[""] = rendered.samples - before
        self.served = served
        return rendered

    def _not_applicable(self, server: ServerInfo, enabled) -> list[Outcome]:
        """The enabled collectors that do not apply to ``server`` (version, role, extension): not
        run, reported unsupported, per database for database collectors."""
        out = []
        for c, _, _ in enabled:
            reason = c.applies(server)
            if reason is not None:
                for datname in (self.databases if c.scope == DATABASE else [""]):
                    out.append(Outcome(c.name, datname, False, error=reason, supported=False))
        return out

    def _note_unsupported(self, server: ServerInfo, outcomes: list[Outcome]) -> None:
        """Keep why each collector is unsupported, and log it once per collector and reason."""
        self.unsupported = {(o.collector, o.datname): o.error for o in outcomes if not o.supported}
        working = {o.collector for o in outcomes if o.supported and o.success}
        self._unsupported_logged = {key for key in self._unsupported_logged if key[0] not in working}
        for (name, _), reason in sorted(self.unsupported.items()):
            if (name, reason) in self._unsupported_logged:
                continue
            self._unsupported_logged.add((name, reason))
            LOG.info("target=%s collector=%s unsupported on this server (%s): %s; its metrics are "
                     "not served (dbperf_collector_supported 0)", self.target.name, name,
                     self.kind.describe(server), reason, extra={"target": self.target.name, "collector": name})

    def _unreachable(self, enabled, error: str) -> list[Outcome]:
        return [Outcome(c.name, "", False, error=error) for c, _, _ in enabled if c.scope == CLUSTER]

    def _late(self, error: BaseException | None, waited: float) -> Rendered:
        """What a caller gets when the collection it waits for is not done by its own deadline
        (``error`` None: it joined a longer scrape, or the server hangs) or failed unexpectedly:
        ``pg_up`` 1 only when the server answered that collection's probe, every collector failed."""
        server = self._answered if error is None else None
        if error is not None:
            reason = "scrape failed: " + (self.main.scrub(" ".join(str(error).split())) or type(error).__name__)
            LOG.error("target=%s %s", self.target.name, reason, extra={"target": self.target.name})
        elif server is not None:
            reason = "still running in an earlier scrape of the target, past this scrape's deadline"
        else:
            reason = "an earlier scrape of the target is still waiting for the server"
        if server is None:
            self.server = None
        outcomes = self._unreachable(self.enabled(), reason)
        self.outcomes, self.failure = outcomes, reason if server is None else ""
        rendered = Rendered()
        rendered.add_families(self._self_metrics(server, outcomes, waited), self.const)
        return rendered

    def _ask(self, deadline: float) -> ServerInfo:
        """In a worker thread: the probe's one round trip."""
        remaining = max(0.0, deadline - time.monotonic())
        results = self.main.query(self.kind.probe_sql, timeout=max(0.1, min(PROBE_TIMEOUT, remaining)),
                                  wait=min(1.0, remaining / 2), deadline=deadline)
        return self.kind.server_info(results)

    def _probe(self, deadline: float) -> tuple[ServerInfo | None, str]:
        """``(server, "")``, or ``(None, why not)`` when it did not answer before the deadline."""
        future = self._pool.submit(self._ask, self._real_deadline(deadline))
        try:
            server = future.result(timeout=max(0.0, deadline - self.clock()))
        except FutureTimeout:
            exc = DeadlineExceeded("the server did not answer before the scrape deadline")
        except Exception as e:  # noqa: BLE001 - every failure is the up metric 0 with its reason
            exc = e
        else:
            self._log_limit.forget(("up", ""))
            self.server = server
            return server, ""
        self._log_failure("up", "", exc)
        self.server = None
        return None, self._reason(exc)

    def _real_deadline(self, deadline: float) -> float:
        """The deadline on ``time.monotonic()`` (the clock connections use)."""
        return time.monotonic() + (deadline - self.clock())

    def _plan(self, server: ServerInfo, enabled) -> list[Job]:
        cluster = [c for c, _, _ in enabled if c.scope == CLUSTER and c.applies(server) is None]
        per_db = [c for c, _, _ in enabled if c.scope == DATABASE and c.applies(server) is None]
        databases = self.target.covered(server) if self.kind.discovers_databases else [server.dbname]
        gone = set(self.databases) - set(databases)
        self.databases = databases
        jobs, keep = [], set(databases)
        # a slow cluster collector (statements) gets a second session to the target's own database
        # and runs beside the others instead of after them
        for collector in (c for c in cluster if c.own_session):
            key = f"{server.dbname}\x00{collector.name}"
            keep.add(key)
            jobs.append(Job(server.dbname, self._session(key, None, self._timeouts.get(f"own:{collector.name}",
                                                                                        collector.default_timeout)),
                            [collector]))
        shared = sorted((c for c in cluster if not c.own_session), key=lambda c: c.optional)
        jobs.append(Job(server.dbname, self.main, shared + per_db))
        if per_db:
            # the other databases' sessions: kept warm while the sampler watches, else for one refresh (_release)
            for datname in databases[1:]:
                jobs.append(Job(datname, self._session(datname, datname, self._timeouts["database"], release=True),
                                list(per_db), release=datname))
        with self._sessions_lock:
            now = time.monotonic()
            self._held = {datname: until for datname, until in self._held.items() if until > now}
            for key in set(self.conns) - keep:  # dropped databases: let their sessions go
                self._users.pop(key, None)
                self.conns.pop(key).close()
            if not self._warm():  # the sampler stopped watching: close the idle warm sessions now
                for key in databases[1:]:
                    if key in self.conns and not self._users.get(key):
                        self.conns[key].close()
        if gone:
            self._forget(keep, gone)
        return jobs

    def _session(self, key: str, dbname: str | None, statement_timeout: float, release: bool = False) -> Connection:
        """The session ``key`` (the same object every time: collectors keep state per connection;
        closed, it reconnects on its next query); ``release``: one more job uses it until
        :meth:`_release`."""
        with self._sessions_lock:
            conn = self.conns.get(key)
            if conn is None:
                conn = self.conns[key] = self._connection(dbname, statement_timeout)
            if release:
                self._users[key] = self._users.get(key, 0) + 1
            return conn

    def _release(self, key: str, conn: Connection) -> None:
        """A job on the session of another database than the target's own ended: close the session
        when no other job uses it, unless it is kept warm. A session in a database makes ``DROP
        DATABASE`` (also ``ALTER DATABASE ... RENAME``, ``CREATE DATABASE ... TEMPLATE``) wait for
        it, 5 s, then fail with "being accessed by other users". While the target's session sampler
        checks every second or two for such a command (:mod:`exporter.postgres.dropwatch`), which
        closes the sessions it waits for (:meth:`_dropping`), up to :data:`WARM_SESSIONS` stay
        open: a session that already opened the database's relations sizes them for about a third
        of a new one's cost, and no connect per refresh. Without the sampler (the wait_events
        collectors off, or its checks late) dbperf holds a session there only while it refreshes
        that database's collectors; the target's own database keeps its long-lived sessions."""
        with self._sessions_lock:
            if self.conns.get(key) is not conn:  # the database went away meanwhile: closed then
                return
            users = self._users.get(key, 0) - 1
            if users > 0:
                self._users[key] = users
                return
            self._users.pop(key, None)
            if self._warm() and self._held.get(key, 0.0) <= time.monotonic() and self._warm_count(key) < WARM_SESSIONS:
                return
            conn.close()  # no query runs on it (its jobs ended): closes at once

    def _warm(self) -> bool:
        return self.drop_watch is not None and self.drop_watch.watching()

    def _warm_count(self, but: str) -> int:
        """Idle open sessions to other databases than ``but``'s (called with the sessions lock)."""
        own = self.server.dbname if self.server is not None else None
        return sum(1 for key, c in self.conns.items()
                   if key != but and "\x00" not in key and key != own and c.connected and not self._users.get(key))

    def _dropping(self, databases: frozenset) -> None:
        """In the sampler's thread: a ``DROP DATABASE`` (or the like) waits for ``databases`` to
        have no other session. Close dbperf's sessions there now, a refresh running on one broken
        off (it fails: the database is going away), and keep none warm there for :data:`HOLD`
        seconds (a refresh that starts meanwhile closes its session when it ends)."""
        until = time.monotonic() + HOLD
        with self._sessions_lock:
            for datname in databases:
                if self.server is not None and datname == self.server.dbname:
                    continue  # the target's own database: its sessions are the target's, as always
                self._held[datname] = until
                conn = self.conns.get(datname)
                if conn is not None:
                    conn.close()

    def _forget(self, keep: set, gone: set) -> None:
        """Forget what the scraper kept of the databases ``gone`` since the last scrape (dropped,
        renamed, excluded), so that no series of theirs stays: their collectors' cached results,
        durations and error counters, and the cached results of cluster collectors that name them
        (database_size's 5-minute cache, for one: refreshed in this scrape instead)."""
        for table in (self.cache, self.durations, self.last_success, self.errors):
            for key in [k for k in table if k[1] and k[1] not in keep]:
                del table[key]
        needles = [f'datname="{escape_label(d)}"'.encode() for d in gone]
        for key in [k for k, entry in self.cache.items() if not k[1] and any(
                needle in body for bodies in entry.rendered.bodies.values() for body in bodies for needle in needles)]:
            del self.cache[key]

    def _run_jobs(self, jobs: list[Job], server: ServerInfo, settings: dict, deadline: float) -> list[Outcome]:
        futures = [self._pool.submit(self._run_job, job, server, settings, deadline) for job in jobs]
        for future in futures:
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            try:
                future.result(timeout=remaining)
            except Exception:
                pass
        outcomes = []
        for job in jobs:
            done = list(job.outcomes)  # a snapshot: a late thread may still append
            outcomes.extend(done)
            finished = {o.collector for o in done}
            late = [c for c in job.collectors if c.name not in finished]
            if late:  # a query still running is cancelled and broken off by its connection
                for c in late:
                    outcomes.append(Outcome(c.name, self._label_db(c, job), False, error="scrape deadline exceeded"))
                    self._log_failure(c.name, job.datname, TimeoutError("scrape deadline exceeded"))
        return outcomes

    def _label_db(self, collector: Collector, job: Job) -> str:
        return job.datname if collector.scope == DATABASE else ""

    def _run_job(self, job: Job, server: ServerInfo, settings: dict, deadline: float) -> None:
        try:
            for collector in job.collectors:
                ttl, timeout = settings[collector.name]
                job.running = collector.name
                outcome = self._run_collector(collector, job, server, ttl, timeout, deadline)
                job.running = None
                job.outcomes.append(outcome)
        finally:
            if job.release is not None:
                self._release(job.release, job.conn)

    def _run_collector(self, collector: Collector, job: Job, server: ServerInfo, ttl: float, timeout: float,
                       deadline: float) -> Outcome:
        datname = self._label_db(collector, job)
        key = (collector.name, datname)
        now = self.clock()
        entry = self.cache.get(key)
        last_duration = self.durations.get(key, 0.0)
        decision = plan_run(entry, ttl, now, deadline - now, last_duration, collector.optional,
                            phase(datname) if datname else None)
        if decision == CACHED:
            return Outcome(collector.name, datname, True, entry.duration, now - entry.at, rendered=entry.rendered)
        if decision == SKIP:  # the budget: not started when its last run would not fit
            return Outcome(collector.name, datname, False, last_duration, skipped=True,
                           error="skipped: its last run would not fit before the scrape deadline")
        if decision == STALE:  # ... and its last result is served with its age instead
            return Outcome(collector.name, datname, True, entry.duration, now - entry.at, rendered=entry.rendered,
                           skipped=True)
        ctx = Context(target=self.target.name, datname=job.datname, server=server, options=self.target,
                      served=self.served)
        try:
            # the collector's timeout bounds each of its queries (the session's statement timeout
            # is the longest of them, set at connect: no SET per scrape); the deadline cancels what
            # runs late, and breaks off what the server never answers
            if job.connect_error is not None:  # the session could not be opened: no new try in this job
                raise job.connect_error
            with job.conn.within(self._real_deadline(deadline)):
                families = collector.collect(job.conn, ctx, timeout)
        except Exception as exc:
            if isinstance(exc, ConnectError):
                job.connect_error = exc  # the job's other collectors fail for the same reason
            duration = self.durations[key] = self.clock() - now
            if self.kind.unsupported(exc):  # the server lacks the view
                return Outcome(collector.name, datname, False, duration, supported=False,
                               error="the server lacks what it reads: " + job.conn.scrub(" ".join(str(exc).split())))
            self.errors[key] = self.errors.get(key, 0) + 1
            self._log_failure(collector.name, datname, exc)
            return Outcome(collector.name, datname, False, duration, error=self._reason(exc))
        duration = self.durations[key] = self.clock() - now
        rendered = Rendered()
        rendered.add_families(families, self.const)
        if ttl > 0:  # only cached collectors keep their text between scrapes
            self.cache[key] = CacheEntry(rendered, now, duration)
        self.last_success[key] = time.time()
        self._log_limit.forget(key)
        return Outcome(collector.name, datname, True, duration, rendered=rendered)

    def _reason(self, exc: BaseException) -> str:
        """One line: why ``exc`` failed a collector or the probe, scrubbed, with how to fix it."""
        message = (self.main.scrub(" ".join(str(exc).split())) or type(exc).__name__) + self.kind.hint(exc, self.target.dsn)
        return "skipped: " + message if isinstance(exc, Busy) else message

    def _log_failure(self, collector: str, datname: str, exc: BaseException) -> None:
        # a database that refuses connections fails each of its collectors: one line for them all
        key = ("connect", datname) if datname and isinstance(exc, ConnectError) else (collector, datname)
        if not self._log_limit.allow(key):
            return
        where = f" database={datname}" if datname else ""
        LOG.warning("target=%s collector=%s%s failed: %s (repeats are logged at most once a minute)",
                    self.target.name, collector, where, self._reason(exc),
                    extra={"target": self.target.name, "collector": collector, "datname": datname})

    # -- self-metrics ----------------------------------------------------------------------
    def _self_metrics(self, server: ServerInfo | None, outcomes: list[Outcome], duration: float) -> list[Family]:
        up = Family(self.kind.up_metric, "gauge", self.kind.up_help)
        up.add((), 1 if server is not None else 0)
        info = self.kind.info_families(server) if server is not None else []
        labels = ("collector", "datname")
        success = Family("dbperf_collector_success", "gauge", "1 when the collector succeeded (or was served from its cache) in this scrape.", labels)
        durations = Family("dbperf_collector_duration_seconds", "gauge", "Time the collector's last run took.", labels)
        ages = Family("dbperf_collector_cache_age_seconds", "gauge", "Age of the data served (0 when collected in this scrape).", labels)
        last = Family("dbperf_collector_last_success_timestamp_seconds", "gauge", "Unix time of the collector's last successful run.", labels)
        errors = Family("dbperf_collector_errors_total", "counter", "Failed runs of the collector since dbperf started.", labels)
        skipped = Family("dbperf_collector_skipped", "gauge", "1 when the collector was not run in this scrape because its last duration did not fit in the time left before the deadline (its last result, if any, is served with its cache age).", labels)
        supported = Family("dbperf_collector_supported", "gauge", "1 when the collector can run on this server; 0 when it cannot (PostgreSQL version, primary/replica role, a missing extension or view; the reason is logged once): then it has no other dbperf_collector_* series, neither success nor failure.", labels)
        for o in outcomes:
            key = (o.collector, o.datname)
            if server is not None:  # unknown while the server does not answer
                supported.add(key, 1 if o.supported else 0)
            if not o.supported:
                continue
            success.add(key, 1 if o.success else 0)
            durations.add(key, o.duration)
            ages.add(key, o.cache_age)
            skipped.add(key, 1 if o.skipped else 0)
            if key in self.last_success:
                last.add(key, self.last_success[key])
        for key, count in self.errors.items():
            errors.add(key, count)
        scrape = Family("dbperf_scrape_duration_seconds", "gauge", "Time the last scrape of the target took.")
        scrape.add((), duration)
        scrapes = Family("dbperf_scrapes_total", "counter", "Scrapes of the target since dbperf started.")
        scrapes.add((), self.scrapes)
        conns = Family("dbperf_target_connections", "gauge", "Database sessions dbperf holds open to the target.")
        conns.add((), sum(1 for c in [self.main, *self.conns.values()] if c.connected))
        families = [up, *info, success, supported, durations, ages, last, errors, skipped, scrape, scrapes, conns]
        if self.kind.discovers_databases:
            dbs = Family("dbperf_target_databases", "gauge", "Databases of the target that database-scoped collectors cover.")
            dbs.add((), len(self.databases) if server is not None else 0)
            families.append(dbs)
        return families
