"""Database load by wait event: the ``wait_events`` and ``statement_wait_events`` collectors, which
render the counters of the target's session sampler (:mod:`exporter.postgres.sampler`) at scrape
time; a scrape sends no SQL for them and never waits for a sample.

- ``pg_active_sessions_seconds_total{datname, state, wait_event_type, wait_event}``: seconds
  sessions spent in each state and wait event (:mod:`exporter.postgres.waits` says which sessions
  count and how). ``rate()`` of it is the average number of sessions: "DB load", as AWS
  Performance Insights calls it; ``sum by (wait_event_type) (rate(
  pg_active_sessions_seconds_total{state="active"}[5m]))`` stacks it by what it waits on, to set
  against the number of CPUs.
- ``pg_statement_active_seconds_total{datname, queryid, wait_event_type}``: the same seconds of
  active sessions per statement (``pg_stat_activity.query_id``, PostgreSQL 14+ with
  ``compute_query_id``), for the statements the statements collector shows (its top N and sticky
  ones per database); every other statement (and a session without a query_id) is summed in
  ``queryid="other"``. The share of a statement's time spent on locks is one query::

      sum by (datname, queryid) (rate(pg_statement_active_seconds_total{wait_event_type="Lock"}[5m]))
        / sum by (datname, queryid) (rate(pg_statement_active_seconds_total[5m]))

  Where query_id is not computed, the collector is unsupported and says why (once, in the log).

- ``pg_route_active_seconds_total{datname, route, wait_event_type}``: the same seconds of active
  sessions by the sqlcommenter ``route`` tag of their statement (``/*route='%2Forders%2F%7Bid%7D'*/``,
  as exporter.instrument tags its SQL); a statement without the tag counts as ``route=""`` (the
  routes of a database sum to its active sessions), routes past ``wait_events.max_routes`` as
  ``route="other"``.

- ``pg_route_statement_active_seconds_total{datname, route, queryid}``: the tagged part of it
  (``route != ""``) by statement, the link from a route to its statements: ``queryid`` as in
  ``pg_statement_active_seconds_total`` (a statement not shown, or a session without a query_id, in
  ``queryid="other"``), at most ``wait_events.max_route_statements`` (default 500) distinct
  ``(datname, route, queryid)`` per target, a new pair past it counted in ``(datname, route,
  "other")``; so ``sum by (datname, route)`` of it equals ``sum by (datname, route)
  (pg_route_active_seconds_total{route!=""})``. PostgreSQL 14+ with query_id computed (the
  ``route_statement_wait_events`` collector is unsupported otherwise, as ``statement_wait_events``).

Label sets are bounded: ``state`` by :data:`~exporter.postgres.waits.COUNTED_STATES`, wait events
by PostgreSQL's fixed list (plus those extensions register), ``datname`` by the target's
``databases`` rules (a database that is gone loses its series at the next scrape), ``queryid`` by
the statements collector's limit.
"""

from __future__ import annotations

import threading

from exporter.collector import CLUSTER, Collector, Context
from exporter.postgres.dropwatch import DropWatch
from exporter.metrics import Family

SESSION_LABELS = ("datname", "state", "wait_event_type", "wait_event")
STATEMENT_LABELS = ("datname", "queryid", "wait_event_type")
ROUTE_LABELS = ("datname", "route", "wait_event_type")
ROUTE_STATEMENT_LABELS = ("datname", "route", "queryid")
SESSIONS_HELP = ("Seconds client sessions spent in each state and wait event, from pg_stat_activity sampled every "
                 "wait_events.interval (rate: average sessions, the DB load; wait_event_type and wait_event "
                 "\"CPU\" when waiting on nothing).")
STATEMENTS_HELP = ("Seconds active sessions spent running each shown statement (the statements collector's top N; "
                   "the rest in queryid=\"other\") by wait event type (\"CPU\" when waiting on nothing); "
                   "PostgreSQL 14+ with compute_query_id.")

ROUTES_HELP = ("Seconds active sessions spent running statements tagged with each sqlcommenter route "
               "(/*route='...'*/; route=\"\" untagged, route=\"other\" past wait_events.max_routes) by wait event "
               "type (\"CPU\" when waiting on nothing).")
ROUTE_STATEMENTS_HELP = ("Seconds active sessions spent running each shown statement (queryid; the rest in "
                         "queryid=\"other\") tagged with each sqlcommenter route (untagged statements left out), at "
                         "most wait_events.max_route_statements pairs, the rest in queryid=\"other\"; "
                         "PostgreSQL 14+ with compute_query_id.")


class QueryIdsOff(RuntimeError):
    """``pg_stat_activity.query_id`` is not computed: the collector is unsupported (the kind's
    feature_not_supported SQLSTATE makes the engine report it so)."""

    sqlstate = "0A000"


class SharedSampler:
    """One sampler per target, shared by its two collectors, started by the first scrape that runs
    either of them."""

    def __init__(self, statements=None):
        self.statements = statements  # the target's StatementsCollector: which statements are shown
        self.sampler = None
        # checked after each sample: lets the scrape engine keep other databases' sessions warm
        self.drop_watch = DropWatch()
        self._lock = threading.Lock()
        self._chosen = None
        self._shown = frozenset()
        self._closed = False

    def shown(self) -> frozenset:
        """``(datid, queryid)`` of the statements the statements collector showed in its last read."""
        chosen = getattr(getattr(self.statements, "state", None), "chosen", None)
        if chosen is None:
            return frozenset()
        if chosen is not self._chosen:  # replaced by each read of the statements collector, never changed
            self._shown = frozenset((dbid, queryid) for dbid, _, queryid in chosen if queryid is not None)
            self._chosen = chosen
        return self._shown

    def get(self, target):
        from exporter.postgres.sampler import Sampler

        with self._lock:
            if self.sampler is None and not self._closed:
                self.sampler = Sampler(target, shown=self.shown)
                self.sampler.after_sample.append(self.drop_watch.after_sample)
            if self.sampler is None:
                raise RuntimeError("the wait_events sampler was stopped (the exporter is closing)")
            self.sampler.start()
            return self.sampler

    def current(self, ctx: Context, query_ids: bool = False):
        """The target's sampler (started), its series of gone databases and no longer shown statements
        dropped first (bounded whichever collectors are on); ``query_ids``: a collector by queryid,
        unsupported where the server does not compute them."""
        sampler = self.get(ctx.options)
        if query_ids and sampler.query_ids_off:
            raise QueryIdsOff(sampler.query_ids_off)
        shown = {queryid for _, queryid in self.shown()}
        sampler.integrator.forget(databases=ctx.server.databases, shown_queryids=shown)
        return sampler

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sampler = self.sampler
        if sampler is not None:
            sampler.close()


def _counter(name: str, help_: str, labels: tuple, series: dict) -> Family:
    family = Family(name, "counter", help_, labels)
    for key in sorted(series):
        family.add(key, series[key])
    return family


class WaitEventsCollector(Collector):
    def __init__(self, shared: SharedSampler | None = None):
        super().__init__(
            name="wait_events", scope=CLUSTER, optional=False,
            help="database load by wait event: a sampler thread with its own session reads pg_stat_activity every "
                 "wait_events.interval (default 1s) and integrates the client sessions it sees (active, idle in "
                 "transaction, fastpath; not dbperf's own) into seconds per state and wait event; served at scrape "
                 "time without SQL, with the sampler's own counters",
            families=tuple(f.name for f in self.describe()))
        self.shared = shared or SharedSampler()

    @staticmethod
    def describe() -> list[Family]:
        return [Family("pg_active_sessions_seconds_total", "counter", SESSIONS_HELP, SESSION_LABELS),
                Family("dbperf_sampler_samples_total", "counter", "Samples of pg_stat_activity the wait_events sampler took."),
                Family("dbperf_sampler_failed_samples_total", "counter",
                       "Samples that failed (the server did not answer within the sample's timeout, or refused); the "
                       "next successful sample after one adds no time."),
                Family("dbperf_sampler_skipped_samples_total", "counter",
                       "Sampling slots missed because an earlier sample was still running."),
                Family("dbperf_sampler_last_sample_duration_seconds", "gauge", "Time the sampler's last sample took."),
                Family("dbperf_sampler_interval_seconds", "gauge", "The sampler's interval (wait_events.interval).")]

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        sampler = self.shared.current(ctx)
        sessions, _ = sampler.integrator.snapshot()
        families = self.describe()
        families[0] = _counter(families[0].name, SESSIONS_HELP, SESSION_LABELS, sessions)
        for family, value in zip(families[1:], (sampler.samples, sampler.failures, sampler.skipped,
                                                sampler.last_duration, sampler.interval)):
            family.add((), value)
        return families

    @property
    def drop_watch(self) -> DropWatch:
        return self.shared.drop_watch

    def close(self) -> None:
        self.shared.close()


class StatementWaitEventsCollector(Collector):
    def __init__(self, shared: SharedSampler | None = None):
        super().__init__(
            name="statement_wait_events", scope=CLUSTER, optional=False, min_version=140000,
            help="database load per statement by wait event type, from the wait_events sampler's "
                 "pg_stat_activity.query_id (PostgreSQL 14+ with compute_query_id on, or auto with "
                 "pg_stat_statements loaded; otherwise unsupported, saying why), for the statements the statements "
                 "collector shows (same top N per database; the rest in queryid=\"other\")",
            families=("pg_statement_active_seconds_total",))
        self.shared = shared or SharedSampler()

    @staticmethod
    def describe() -> list[Family]:
        return [Family("pg_statement_active_seconds_total", "counter", STATEMENTS_HELP, STATEMENT_LABELS)]

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        _, statements = self.shared.current(ctx, query_ids=True).integrator.snapshot()
        return [_counter("pg_statement_active_seconds_total", STATEMENTS_HELP, STATEMENT_LABELS, statements)]

    @property
    def drop_watch(self) -> DropWatch:
        return self.shared.drop_watch

    def close(self) -> None:
        self.shared.close()


class RouteWaitEventsCollector(Collector):
    def __init__(self, shared: SharedSampler | None = None):
        super().__init__(
            name="route_wait_events", scope=CLUSTER, optional=False,
            help="database load per application route by wait event type, from the wait_events sampler's texts of "
                 "the active sessions: the sqlcommenter route tag (/*route='%2Forders%2F%7Bid%7D'*/) that "
                 "exporter.instrument adds; untagged statements in route=\"\", routes past wait_events.max_routes "
                 "in route=\"other\"",
            families=("pg_route_active_seconds_total",))
        self.shared = shared or SharedSampler()

    @staticmethod
    def describe() -> list[Family]:
        return [Family("pg_route_active_seconds_total", "counter", ROUTES_HELP, ROUTE_LABELS)]

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        return [_counter("pg_route_active_seconds_total", ROUTES_HELP, ROUTE_LABELS,
                         self.shared.current(ctx).integrator.routes_snapshot())]

    def close(self) -> None:
        self.shared.close()


class RouteStatementWaitEventsCollector(Collector):
    def __init__(self, shared: SharedSampler | None = None):
        super().__init__(
            name="route_statement_wait_events", scope=CLUSTER, optional=False, min_version=140000,
            help="database load per application route and statement, from the wait_events sampler: the tagged active "
                 "sessions (sqlcommenter route) by pg_stat_activity.query_id, for the statements the statements "
                 "collector shows (the rest in queryid=\"other\"), at most wait_events.max_route_statements pairs "
                 "(the rest in queryid=\"other\"); PostgreSQL 14+ with compute_query_id, otherwise unsupported",
            families=("pg_route_statement_active_seconds_total",))
        self.shared = shared or SharedSampler()

    @staticmethod
    def describe() -> list[Family]:
        return [Family("pg_route_statement_active_seconds_total", "counter", ROUTE_STATEMENTS_HELP,
                       ROUTE_STATEMENT_LABELS)]

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        return [_counter("pg_route_statement_active_seconds_total", ROUTE_STATEMENTS_HELP, ROUTE_STATEMENT_LABELS,
                         self.shared.current(ctx, query_ids=True).integrator.route_statements_snapshot())]

    def close(self) -> None:
        self.shared.close()
