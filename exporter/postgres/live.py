"""Live queries from ``pg_stat_activity``, per database: what the ``activity`` collector lacks.

``activity`` already emits the longest running query (``pg_stat_activity_oldest_query_age_seconds``),
the longest idle-in-transaction session (``pg_stat_activity_oldest_idle_in_transaction_age_seconds``)
and blocked sessions (``pg_stat_activity_blocked_sessions``); this collector adds, per database:

- ``pg_stat_activity_slow_queries``: active client queries running longer than
  ``statements.slow_threshold`` (default 1s);
- ``pg_stat_activity_oldest_lock_wait_seconds``: the longest current wait for a heavyweight lock
  (``now - state_change`` of active sessions with ``wait_event_type = 'Lock'``);
- opt-in (``statements.slowest_query_info: true``, PostgreSQL 14+ with ``compute_query_id``):
  ``pg_stat_activity_slowest_query_info{datname, queryid}`` = 1 for the longest running active
  query of each database, to join with ``pg_stat_statements_*`` series by ``queryid``.

dbperf's own session is left out. Every connectable database gets a series (0 when idle).
"""

from __future__ import annotations

from exporter.collector import CLUSTER, Collector, Context
from exporter.config import StatementsOptions
from exporter.metrics import Family
from exporter.postgres.sqlmark import batch

SQL = """SELECT d.datname,
  count(a.pid) FILTER (WHERE a.state = 'active' AND clock_timestamp() - a.query_start > make_interval(secs => {threshold})) AS slow,
  coalesce(max(extract(epoch FROM clock_timestamp() - a.state_change))
           FILTER (WHERE a.state = 'active' AND a.wait_event_type = 'Lock'), 0)::float8 AS lock_wait
FROM pg_database d
LEFT JOIN pg_stat_activity a ON a.datid = d.oid AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
WHERE d.datallowconn AND NOT d.datistemplate
GROUP BY d.datname"""

SLOWEST_SQL = """SELECT DISTINCT ON (a.datname) a.datname, a.query_id::text
FROM pg_stat_activity a
WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() AND a.state = 'active'
  AND a.query_id IS NOT NULL AND a.datname IS NOT NULL
ORDER BY a.datname, a.query_start"""

HELP = {
    "pg_stat_activity_slow_queries":
        "Active client queries running longer than statements.slow_threshold (default 1s).",
    "pg_stat_activity_oldest_lock_wait_seconds":
        "Longest current wait for a heavyweight lock by an active session (0 when none).",
    "pg_stat_activity_slowest_query_info":
        "queryid of the longest running active query (opt-in: statements.slowest_query_info; PostgreSQL 14+).",
}


class LiveQueriesCollector(Collector):
    def __init__(self):
        super().__init__(
            name="live_queries", scope=CLUSTER,
            help="per database: active queries slower than statements.slow_threshold, longest lock wait; "
                 "opt-in queryid of the slowest running query",
            families=tuple(HELP))

    @staticmethod
    def describe() -> list[Family]:
        return [Family("pg_stat_activity_slow_queries", "gauge", HELP["pg_stat_activity_slow_queries"], ("datname",)),
                Family("pg_stat_activity_oldest_lock_wait_seconds", "gauge",
                       HELP["pg_stat_activity_oldest_lock_wait_seconds"], ("datname",)),
                Family("pg_stat_activity_slowest_query_info", "gauge",
                       HELP["pg_stat_activity_slowest_query_info"], ("datname", "queryid"))]

    @staticmethod
    def options(ctx: Context) -> tuple[float, bool]:
        opts = getattr(ctx.options, "statements", None) or StatementsOptions()
        return opts.slow_threshold, opts.slowest_query_info

    def sql(self, ctx: Context) -> str:
        threshold, slowest = self.options(ctx)
        with_slowest = slowest and ctx.server.version >= 140000
        return batch([SQL.format(threshold=repr(float(threshold)))] + ([SLOWEST_SQL] if with_slowest else []))

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        with_slowest = self.options(ctx)[1] and ctx.server.version >= 140000
        results = conn.query(self.sql(ctx), timeout)
        slow, lock_wait, info = self.describe()
        for datname, count, wait in results[0][1]:
            slow.add((datname,), count)
            lock_wait.add((datname,), wait)
        out = [slow, lock_wait]
        if with_slowest:
            for datname, queryid in results[1][1]:
                info.add((datname, queryid), 1)
            out.append(info)
        return out
