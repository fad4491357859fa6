"""PgBouncer: a separate kind of target (``kind: pgbouncer``) read through its admin console.

The admin console (``dbname=pgbouncer``) answers one ``SHOW ...`` command per simple-protocol
query; it has no transactions, no ``SET statement_timeout`` and no multi-statement batches. So:

- :class:`AdminConnection` holds one long-lived autocommit session (no prepared statements, no
  session setup) with reconnect backoff. Time is bounded on the client side: libpq's
  ``connect_timeout`` for the connect, and :meth:`AdminConnection.interrupt`, which shuts the
  socket down under a query that outlives the scrape deadline (the blocked thread then fails).
- :class:`PgBouncerCollector` turns ``SHOW POOLS``, ``STATS``, ``DATABASES``, ``LISTS`` and
  ``CONFIG`` into families, column by column from the tables below; columns a PgBouncer version
  does not have are skipped, new columns are ignored. Names follow the community
  ``pgbouncer_exporter`` where it has them; microseconds become seconds.
- :class:`PgBouncerScraper` has the public interface of :class:`exporter.scrape.TargetScraper`
  (``scrape(budget)``, ``close()``, ``server``, ``scrapes``) so the HTTP server can hold either.
  A PgBouncer that is down or frozen gives ``pgbouncer_up 0`` within the budget.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.collector import CLUSTER, Collector
from exporter.config import Target
from exporter.log import RateLimiter
from exporter.metrics import Family, Rendered, const_label_prefix
from exporter.postgres.connection import Backoff, Busy, ConnectError
from exporter.secrets import describe_dsn, password_of, scrub
from exporter.singleflight import FINISH_MARGIN, Pending, SingleFlight

LOG = logging.getLogger("dbperf.pgbouncer")

US = 1e-6  # PgBouncer reports times in microseconds

# column -> (metric name, type, factor, help). factor None: the value is passed on unscaled.
POOLS = {
    "cl_active": ("pgbouncer_pools_client_active_connections", "gauge", None,
                  "Client connections linked to a server connection, or idle with no query waiting."),
    "cl_waiting": ("pgbouncer_pools_client_waiting_connections", "gauge", None,
                   "Client connections that sent a query and wait for a server connection."),
    "cl_active_cancel_req": ("pgbouncer_pools_client_active_cancel_connections", "gauge", None,
                             "Client connections that forwarded a cancel request and wait for the answer."),
    "cl_waiting_cancel_req": ("pgbouncer_pools_client_waiting_cancel_connections", "gauge", None,
                              "Client connections whose cancel request is not forwarded yet."),
    "sv_active": ("pgbouncer_pools_server_active_connections", "gauge", None,
                  "Server connections linked to a client connection."),
    "sv_active_cancel": ("pgbouncer_pools_server_active_cancel_connections", "gauge", None,
                         "Server connections forwarding a cancel request."),
    "sv_being_canceled": ("pgbouncer_pools_server_being_canceled_connections", "gauge", None,
                          "Server connections waiting for in-flight cancel requests before going idle."),
    "sv_idle": ("pgbouncer_pools_server_idle_connections", "gauge", None,
                "Server connections idle and ready for a client query."),
    "sv_used": ("pgbouncer_pools_server_used_connections", "gauge", None,
                "Server connections idle longer than server_check_delay, to be checked before reuse."),
    "sv_tested": ("pgbouncer_pools_server_testing_connections", "gauge", None,
                  "Server connections running server_reset_query or server_check_query."),
    "sv_login": ("pgbouncer_pools_server_login_connections", "gauge", None,
                 "Server connections logging in to PostgreSQL."),
}
MAXWAIT = ("pgbouncer_pools_client_maxwait_seconds", "gauge",
           "How long the oldest waiting client has waited for a server connection (maxwait + maxwait_us).")
UTILIZATION = ("pgbouncer_pools_server_utilization_ratio", "gauge",
               "Server connections linked to clients (sv_active) divided by the database's pool_size; "
               "1 means the pool is exhausted and new queries wait.")

STATS = {
    "total_xact_count": ("pgbouncer_stats_sql_transactions_pooled_total", "counter", None,
                         "SQL transactions pooled by PgBouncer."),
    "total_query_count": ("pgbouncer_stats_queries_pooled_total", "counter", None,
                          "SQL queries pooled by PgBouncer."),
    "total_received": ("pgbouncer_stats_received_bytes_total", "counter", None,
                       "Network traffic received from clients, in bytes."),
    "total_sent": ("pgbouncer_stats_sent_bytes_total", "counter", None,
                   "Network traffic sent to clients, in bytes."),
    "total_xact_time": ("pgbouncer_stats_server_in_transaction_seconds_total", "counter", US,
                        "Time server connections spent in a transaction (idle in transaction or executing)."),
    "total_query_time": ("pgbouncer_stats_queries_duration_seconds_total", "counter", US,
                         "Time server connections spent executing queries."),
    "total_wait_time": ("pgbouncer_stats_client_wait_seconds_total", "counter", US,
                        "Time clients spent waiting for a server connection."),
    "total_server_assignment_count": ("pgbouncer_stats_server_assignments_total", "counter", None,
                                      "Times a server connection was assigned to a client (newer PgBouncer versions only)."),
    "total_client_parse_count": ("pgbouncer_stats_client_parses_total", "counter", None,
                                 "Prepared-statement Parse messages received from clients (newer PgBouncer versions only)."),
    "total_server_parse_count": ("pgbouncer_stats_server_parses_total", "counter", None,
                                 "Prepared-statement Parse messages sent to PostgreSQL (newer PgBouncer versions only)."),
    "total_bind_count": ("pgbouncer_stats_binds_total", "counter", None,
                         "Prepared statements readied for execution with a Bind message (newer PgBouncer versions only)."),
    "avg_xact_time": ("pgbouncer_stats_average_transaction_duration_seconds", "gauge", US,
                      "Average transaction duration over the last stats_period."),
    "avg_query_time": ("pgbouncer_stats_average_query_duration_seconds", "gauge", US,
                       "Average query duration over the last stats_period."),
    "avg_wait_time": ("pgbouncer_stats_average_client_wait_seconds", "gauge", US,
                      "Average time clients assigned a server in the last stats_period waited for it."),
}

DATABASES = {
    "pool_size": ("pgbouncer_databases_pool_size", "gauge", None,
                  "Maximum number of server connections per user pool of the database."),
    "min_pool_size": ("pgbouncer_databases_min_pool_size", "gauge", None,
                      "Server connections kept open even when idle."),
    "reserve_pool": ("pgbouncer_databases_reserve_pool", "gauge", None,
                     "Additional server connections allowed when clients wait too long."),
    "max_connections": ("pgbouncer_databases_max_connections", "gauge", None,
                        "Maximum server connections to the database (0: no limit)."),
    "current_connections": ("pgbouncer_databases_current_connections", "gauge", None,
                            "Server connections open to the database now."),
    "paused": ("pgbouncer_databases_paused", "gauge", None, "1 when the database is paused (PAUSE)."),
    "disabled": ("pgbouncer_databases_disabled", "gauge", None, "1 when the database is disabled (DISABLE)."),
}
DATABASE_LABELS = ("name", "host", "port", "database", "force_user", "pool_mode")

LISTS = {
    "databases": ("pgbouncer_databases", "Databases configured in PgBouncer."),
    "users": ("pgbouncer_users", "Users known to PgBouncer."),
    "pools": ("pgbouncer_pools", "Pools (database and user pairs)."),
    "free_clients": ("pgbouncer_free_clients", "Client connection slots allocated and free."),
    "used_clients": ("pgbouncer_used_clients", "Client connections in use."),
    "login_clients": ("pgbouncer_login_clients", "Client connections logging in."),
    "free_servers": ("pgbouncer_free_servers", "Server connection slots allocated and free."),
    "used_servers": ("pgbouncer_used_servers", "Server connections in use."),
    "dns_names": ("pgbouncer_cached_dns_names", "DNS names in PgBouncer's cache."),
    "dns_zones": ("pgbouncer_cached_dns_zones", "DNS zones in PgBouncer's cache."),
    "dns_queries": ("pgbouncer_in_flight_dns_queries", "DNS queries in flight."),
}

CONFIG = {
    "max_client_conn": ("pgbouncer_config_max_client_connections", "Client connections PgBouncer accepts (max_client_conn)."),
    "max_user_connections": ("pgbouncer_config_max_user_connections",
                             "Server connections allowed per user (max_user_connections, 0: no limit)."),
}

VERSION_INFO = ("pgbouncer_version_info", "PgBouncer's version; always 1.")


def admin_conninfo(dsn: str, connect_timeout: float) -> str:
    """The DSN with ``dbname=pgbouncer`` when it names no database, and dbperf's session options."""
    extra = {"application_name": "dbperf", "connect_timeout": max(1, int(round(connect_timeout)))}
    if not conninfo_to_dict(dsn).get("dbname"):
        extra["dbname"] = "pgbouncer"
    return make_conninfo(dsn, **extra)


class AdminConnection:
    """A lazily (re)connected session to PgBouncer's admin console."""

    def __init__(self, dsn: str, connect_timeout: float = 3.0):
        self._conninfo = admin_conninfo(dsn, connect_timeout)
        self._password = password_of(dsn)
        self.description = describe_dsn(self._conninfo)
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._backoff = Backoff()
        self.connects = 0

    def scrub(self, text: str) -> str:
        return scrub(text, self._password)

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed and not self._conn.broken

    def _connect(self) -> psycopg.Connection:
        self._backoff.check(self.description)
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, prepare_threshold=None)
        except Exception as exc:
            self._backoff.failed()
            raise ConnectError(self.scrub(f"cannot connect to {self.description}: {exc}")) from None
        self._backoff.succeeded()
        self.connects += 1
        return conn

    def show(self, command: str) -> tuple[list[str], list[tuple]]:
        """Run one admin command (e.g. ``SHOW POOLS``); ``(column_names, rows)``. Without
        parameters psycopg sends it with the simple query protocol, the only one PgBouncer's
        console speaks. A broken connection is closed, so the next call reconnects."""
        if not self._lock.acquire(blocking=False):
            raise Busy(f"connection to {self.description} is still busy with an earlier scrape")
        try:
            if not self.connected:
                self._close_locked()
                self._conn = self._connect()
            try:
                cur = self._conn.execute(command)
                return [c.name for c in cur.description or ()], cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                if self._conn is not None and (self._conn.broken or self._conn.closed):
                    self._close_locked()
                raise
        finally:
            self._lock.release()

    def interrupt(self) -> None:
        """From another thread: make a query that outlived the deadline fail now. The admin
        console has no statement timeout, so the socket is shut down under the blocked read."""
        conn = self._conn
        if conn is None or conn.closed:
            return
        try:
            fd = conn.pgconn.socket
            sock = socket.socket(fileno=os.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()
        except Exception:
            pass

    def _close_locked(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None

    def close(self) -> None:
        if self._lock.acquire(timeout=1.0):
            try:
                self._close_locked()
            finally:
                self._lock.release()
        else:  # a query still runs: break it, its thread closes the connection
            self.interrupt()


def _number(value):
    """PgBouncer's int8/numeric columns arrive as int or Decimal; ``None`` stays NaN."""
    if value is None:
        return float("nan")
    return value if isinstance(value, int) else float(value)


def _scaled(value, factor):
    value = _number(value)
    return value if factor is None else float(value) * factor


def _label(value) -> str:
    return "" if value is None else str(value)


class PgBouncerCollector(Collector):
    """Pools, stats, databases, lists and limits from PgBouncer's admin console."""

    def __init__(self):
        super().__init__(name="pgbouncer", scope=CLUSTER, default_timeout=5.0,
                         help="PgBouncer pools (waiting clients, max wait, utilisation), traffic and "
                              "timing counters, databases, lists and limits, from its admin console.")
        self.families = tuple(f.name for f in self.describe())

    def describe(self) -> list[Family]:
        """Every family this collector can emit (some only on newer PgBouncer versions)."""
        pool_labels = ("database", "user")
        out = [Family(name, kind, help_, pool_labels) for name, kind, _, help_ in POOLS.values()]
        out += [Family(MAXWAIT[0], MAXWAIT[1], MAXWAIT[2], pool_labels),
                Family(UTILIZATION[0], UTILIZATION[1], UTILIZATION[2], pool_labels)]
        out += [Family(name, kind, help_, ("database",)) for name, kind, _, help_ in STATS.values()]
        out += [Family(name, kind, help_, DATABASE_LABELS) for name, kind, _, help_ in DATABASES.values()]
        out += [Family(name, "gauge", help_) for name, help_ in LISTS.values()]
        out += [Family(name, "gauge", help_) for name, help_ in CONFIG.values()]
        out += [Family(VERSION_INFO[0], "gauge", VERSION_INFO[1], ("version",))]
        return out

    def collect(self, conn: AdminConnection, ctx=None, timeout: float = 5.0) -> list[Family]:
        families: dict[str, Family] = {f.name: f for f in self.describe()}

        cols, rows = conn.show("SHOW DATABASES")
        pool_size: dict[str, float] = {}
        for row in rows:
            r = dict(zip(cols, row))
            labels = tuple(_label(r.get(k)) for k in DATABASE_LABELS)
            for column, (name, _, factor, _) in DATABASES.items():
                if column in r:
                    families[name].add(labels, _scaled(r[column], factor))
            if r.get("pool_size") is not None:
                pool_size[r["name"]] = float(r["pool_size"])

        cols, rows = conn.show("SHOW POOLS")
        for row in rows:
            r = dict(zip(cols, row))
            labels = (_label(r.get("database")), _label(r.get("user")))
            for column, (name, _, factor, _) in POOLS.items():
                if column in r:
                    families[name].add(labels, _scaled(r[column], factor))
            if "maxwait" in r:
                families[MAXWAIT[0]].add(labels, float(r["maxwait"] or 0) + float(r.get("maxwait_us") or 0) * US)
            size = pool_size.get(r.get("database"))
            if size and "sv_active" in r:
                families[UTILIZATION[0]].add(labels, float(r["sv_active"]) / size)

        cols, rows = conn.show("SHOW STATS")
        for row in rows:
            r = dict(zip(cols, row))
            labels = (_label(r.get("database")),)
            for column, (name, _, factor, _) in STATS.items():
                if column in r:
                    families[name].add(labels, _scaled(r[column], factor))

        cols, rows = conn.show("SHOW LISTS")
        for list_name, items in rows:
            if list_name in LISTS:
                families[LISTS[list_name][0]].add((), _number(items))

        cols, rows = conn.show("SHOW CONFIG")
        for row in rows:
            key, value = row[0], row[1]
            if key in CONFIG:
                try:
                    families[CONFIG[key][0]].add((), int(value))
                except (TypeError, ValueError):
                    pass
        return [f for f in families.values() if f.samples]


def parse_version(text: str) -> str:
    """``PgBouncer 1.18.0`` -> ``1.18.0`` (the text unchanged when it has another form)."""
    words = str(text).split()
    return words[1] if len(words) >= 2 and words[0].lower() == "pgbouncer" else str(text)


class PgBouncerScraper:
    """One PgBouncer target: the same public interface as :class:`exporter.scrape.TargetScraper`."""

    def __init__(self, target: Target, collectors=None, clock=time.monotonic):
        self.target = target
        self.clock = clock
        self.const = const_label_prefix({"target": target.name})
        self.conn = AdminConnection(target.dsn, target.connect_timeout)
        self.collector = PgBouncerCollector()
        self.scrapes = 0
        self.server: str | None = None   # PgBouncer's version when the last scrape reached it
        self.errors = 0
        self.last_success: float | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dbperf-{target.name}")
        self._worker: Future | None = None
        self._flight = SingleFlight(f"dbperf-scrape-{target.name}")
        self._log_limit = RateLimiter(60.0)

    # -- public ----------------------------------------------------------------------------
    def begin(self, budget: float) -> Pending:
        """Start a collection, or join the one in flight; ``result()`` answers by the caller's
        own deadline (``pgbouncer_up 0`` when the collection is not done by then)."""
        started = self.clock()
        return self._flight.begin(lambda: self._scrape(budget), wait=budget + FINISH_MARGIN,
                                  fallback=lambda error: self._late(self.clock() - started))

    def scrape(self, budget: float) -> Rendered:
        """Collect within ``budget`` seconds; concurrent callers share one collection."""
        return self.begin(budget).result()

    def _late(self, waited: float) -> Rendered:
        rendered = Rendered()
        rendered.add_families(self._self_metrics(None, False, 0.0, waited), self.const)
        return rendered

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.conn.close()

    # -- one scrape ------------------------------------------------------------------------
    def _collect(self) -> tuple[str, list[Family] | None, float, str]:
        """In the worker thread: ``(version, families or None, collector duration, error)``."""
        _, rows = self.conn.show("SHOW VERSION")
        version = parse_version(rows[0][0]) if rows else ""
        start = self.clock()
        try:
            families = self.collector.collect(self.conn, None, self.collector.default_timeout)
        except Exception as exc:
            return version, None, self.clock() - start, self.conn.scrub(str(exc)) or type(exc).__name__
        return version, families, self.clock() - start, ""

    def _scrape(self, budget: float) -> Rendered:
        start = self.clock()
        self.scrapes += 1
        version, families, duration, error = None, None, 0.0, ""
        if self._worker is not None and not self._worker.done():
            error = "skipped: an earlier scrape still waits for PgBouncer"
            self.conn.interrupt()
        else:
            self._worker = self._pool.submit(self._collect)
            try:
                version, families, duration, error = self._worker.result(timeout=max(0.0, budget - (self.clock() - start)))
            except FutureTimeout:
                self.conn.interrupt()
                error = f"scrape deadline of {budget:g}s exceeded"
            except Exception as exc:
                error = self.conn.scrub(" ".join(str(exc).split())) or type(exc).__name__
        self.server = version
        rendered = Rendered()
        success = families is not None
        if success:
            self.last_success = time.time()
            self._log_limit.forget("pgbouncer")
            rendered.add_families(families, self.const)
        else:
            self.errors += 1
            if self._log_limit.allow("pgbouncer"):
                LOG.warning("target=%s collector=pgbouncer failed: %s (repeats are logged at most once a minute)",
                            self.target.name, error, extra={"target": self.target.name, "collector": "pgbouncer"})
        rendered.add_families(self._self_metrics(version, success, duration, self.clock() - start), self.const)
        return rendered

    # -- self-metrics (same families and help as exporter.scrape's) ------------------------------
    def _self_metrics(self, version: str | None, success: bool, duration: float, total: float) -> list[Family]:
        up = Family("pgbouncer_up", "gauge", "1 when dbperf could connect to PgBouncer's admin console and query it in this scrape.")
        up.add((), 1 if version is not None else 0)
        out = [up]
        if version is not None:
            info = Family(VERSION_INFO[0], "gauge", VERSION_INFO[1], ("version",))
            info.add((version,), 1)
            out.append(info)
        labels = ("collector", "datname")
        key = ("pgbouncer", "")
        ok = Family("dbperf_collector_success", "gauge", "1 when the collector succeeded (or was served from its cache) in this scrape.", labels)
        ok.add(key, 1 if success else 0)
        durations = Family("dbperf_collector_duration_seconds", "gauge", "Time the collector's last run took.", labels)
        durations.add(key, duration)
        ages = Family("dbperf_collector_cache_age_seconds", "gauge", "Age of the data served (0 when collected in this scrape).", labels)
        ages.add(key, 0)
        last = Family("dbperf_collector_last_success_timestamp_seconds", "gauge", "Unix time of the collector's last successful run.", labels)
        if self.last_success is not None:
            last.add(key, self.last_success)
        errors = Family("dbperf_collector_errors_total", "counter", "Failed runs of the collector since dbperf started.", labels)
        if self.errors:
            errors.add(key, self.errors)
        skipped = Family("dbperf_collector_skipped", "gauge", "1 when the collector was not run in this scrape because its last duration did not fit in the time left before the deadline (its last result, if any, is served with its cache age).", labels)
        skipped.add(key, 0)
        scrape = Family("dbperf_scrape_duration_seconds", "gauge", "Time the last scrape of the target took.")
        scrape.add((), total)
        scrapes = Family("dbperf_scrapes_total", "counter", "Scrapes of the target since dbperf started.")
        scrapes.add((), self.scrapes)
        conns = Family("dbperf_target_connections", "gauge", "Database sessions dbperf holds open to the target.")
        conns.add((), 1 if self.conn.connected else 0)
        return out + [ok, durations, ages, last, errors, skipped, scrape, scrapes, conns]
