"""PgBouncer: a separate kind of target (``kind: pgbouncer``) read through its admin console.

The admin console (``dbname=pgbouncer``) answers one ``SHOW ...`` command per simple-protocol
query; it has no transactions, no ``SET statement_timeout`` and no multi-statement batches. So:

- :data:`FLAVOUR`: its sessions are opened as any of dbperf's (:mod:`exporter.postgres.session`)
  with no setting at all, and bounded on the client side only (the scrape engine's watchdog
  cancels, then shuts the socket down under a query that outlives its timeout or the deadline).
- :class:`PgBouncerCollector` turns ``SHOW POOLS``, ``STATS``, ``DATABASES``, ``LISTS`` and
  ``CONFIG`` into families, column by column from the tables below; columns a PgBouncer version
  does not have are skipped, new columns are ignored. Names follow the community
  ``pgbouncer_exporter`` where it has them; microseconds become seconds.
- :data:`PGBOUNCER` is the kind (:class:`exporter.kind.Kind`): the probe is ``SHOW VERSION``, the up
  metric ``pgbouncer_up``, the info family ``pgbouncer_version_info``. The scrape engine is the one
  of every target (:class:`exporter.scrape.TargetScraper`): a PgBouncer that is down or frozen
  gives ``pgbouncer_up 0`` within the budget.
"""

from __future__ import annotations

from exporter.collector import CLUSTER, Collector, ServerInfo
from exporter.metrics import Family
from exporter.postgres.connection import Flavour

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


FLAVOUR = Flavour(settings=(), statement_timeout=False, default_dbname="pgbouncer")


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

    def collect(self, conn, ctx=None, timeout: float = 5.0) -> list[Family]:
        families: dict[str, Family] = {f.name: f for f in self.describe()}

        def show(command: str) -> tuple[list[str], list[tuple]]:  # one command per query: the console's rule
            results = conn.query(command, timeout)
            return results[0] if results else ([], [])

        cols, rows = show("SHOW DATABASES")
        pool_size: dict[str, float] = {}
        for row in rows:
            r = dict(zip(cols, row))
            labels = tuple(_label(r.get(k)) for k in DATABASE_LABELS)
            for column, (name, _, factor, _) in DATABASES.items():
                if column in r:
                    families[name].add(labels, _scaled(r[column], factor))
            if r.get("pool_size") is not None:
                pool_size[r["name"]] = float(r["pool_size"])

        cols, rows = show("SHOW POOLS")
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

        cols, rows = show("SHOW STATS")
        for row in rows:
            r = dict(zip(cols, row))
            labels = (_label(r.get("database")),)
            for column, (name, _, factor, _) in STATS.items():
                if column in r:
                    families[name].add(labels, _scaled(r[column], factor))

        cols, rows = show("SHOW LISTS")
        for list_name, items in rows:
            if list_name in LISTS:
                families[LISTS[list_name][0]].add((), _number(items))

        cols, rows = show("SHOW CONFIG")
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


def version_number(text: str) -> int:
    """``1.18.0`` -> ``11800`` (as PostgreSQL's server_version_num: major, minor, patch), 0 when
    the text is not such a version."""
    parts = (text.split("-")[0].split(".") + ["0", "0"])[:3]
    try:
        major, minor, patch = (int(p) for p in parts)
    except ValueError:
        return 0
    return major * 10000 + minor * 100 + patch


class PgBouncerKind:
    name = "pgbouncer"
    product = "PgBouncer"
    up_metric = "pgbouncer_up"
    up_help = "1 when dbperf could connect to PgBouncer's admin console and query it in this scrape."
    flavour = FLAVOUR
    probe_sql = "SHOW VERSION"
    discovers_databases = False

    @staticmethod
    def server_info(results: list) -> ServerInfo:
        rows = results[0][1] if results else []
        text = parse_version(rows[0][0]) if rows else ""
        return ServerInfo(version=version_number(text), in_recovery=False, dbname="pgbouncer", version_text=text)

    @staticmethod
    def describe(server: ServerInfo) -> str:
        return f"PgBouncer {server.version_text}"

    @staticmethod
    def info_families(server: ServerInfo) -> list[Family]:
        info = Family(VERSION_INFO[0], "gauge", VERSION_INFO[1], ("version",))
        info.add((server.version_text,), 1)
        return [info]

    @staticmethod
    def collectors() -> list[Collector]:
        return [PgBouncerCollector()]

    @staticmethod
    def unsupported(exc: BaseException) -> bool:
        return False

    @staticmethod
    def hint(exc: BaseException, dsn: str) -> str:
        return ""

    @staticmethod
    def connection(dsn, dbname, connect_timeout, watchdog, statement_timeout):
        from exporter.postgres.connection import Connection

        return Connection(dsn, dbname, connect_timeout, watchdog, flavour=FLAVOUR, statement_timeout=statement_timeout)


PGBOUNCER = PgBouncerKind()


def PgBouncerScraper(target, collectors=None, clock=None):  # noqa: N802 - was a class; kept for callers
    """The scrape engine for a PgBouncer target (``target.kind == "pgbouncer"``)."""
    import time

    from exporter.scrape import TargetScraper

    return TargetScraper(target, collectors, clock=clock or time.monotonic, kind=PGBOUNCER)
