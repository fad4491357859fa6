"""A target's settings as typed, immutable objects, with their defaults written once here.

:mod:`exporter.config` builds them from the file (and checks every value); collectors read them
from their context (``ctx.options`` is the :class:`Target`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class CollectorSettings:
    enabled: bool | None  # None: the collector's own default
    timeout: float | None = None  # seconds; None = the collector's default
    ttl: float | None = None      # seconds; None = the collector's default


# the admin databases of managed services (RDS/Aurora, Cloud SQL, Azure), which refuse connections:
# never discovered unless databases.include names them (docs/managed-services.md)
MANAGED_ADMIN_DATABASES = frozenset({"rdsadmin", "cloudsqladmin", "azure_maintenance", "azure_sys"})


@dataclass(frozen=True)
class Databases:
    discover: bool = True
    include: re.Pattern = re.compile(".*")
    exclude: re.Pattern = re.compile("^$")

    def wanted(self, datname: str) -> bool:
        if datname in MANAGED_ADMIN_DATABASES and self.include.pattern == ".*":
            return False
        return bool(self.include.fullmatch(datname)) and not self.exclude.fullmatch(datname)


RANK_BY = ("total_time", "calls", "mean_time", "rows", "io_time")


@dataclass(frozen=True)
class StatementsOptions:
    """``statements:`` of a target (the statements and live_queries collectors), validated once
    by :func:`_statements`; the defaults are written here only."""

    limit: int = 50                  # statements exposed per database (top N by rank_by)
    rank_by: str = "total_time"      # one of RANK_BY
    sticky: float = 600.0            # seconds a statement stays exposed after leaving the top N
    query_text: bool = False         # serve pg_stat_statements_query_info
    query_text_length: int = 120     # characters of query text
    query_text_ttl: float = 3600.0   # seconds between reads of the texts
    slow_threshold: float = 1.0      # seconds: pg_stat_activity_slow_queries counts longer ones
    slowest_query_info: bool = False  # serve pg_stat_activity_slowest_query_info


@dataclass(frozen=True)
class WaitEventsOptions:
    """``wait_events:`` of a target: the session sampler behind the ``wait_events``,
    ``statement_wait_events``, ``route_wait_events`` and ``route_statement_wait_events`` collectors
    (:mod:`exporter.postgres.sampler`); it runs while any of them is enabled."""

    interval: float = 1.0  # seconds between two reads of pg_stat_activity
    max_routes: int = 100  # distinct routes of pg_route_active_seconds_total; the rest in route="other"
    # distinct (datname, route, queryid) of pg_route_statement_active_seconds_total; the rest in queryid="other"
    max_route_statements: int = 500


@dataclass(frozen=True)
class SamplesOptions:
    """``samples:`` of a target: the real query samples the session sampler keeps
    (:mod:`exporter.postgres.samples`), served on ``/samples`` and read by the advisor."""

    redact: bool = True      # literals as placeholders wherever a sample leaves the process
    limit: int = 100         # statements kept (their slowest recent sample each); 0: none
    max_age: float = 600.0   # seconds a statement's sample is kept without being seen again


@dataclass(frozen=True)
class PlansOptions:
    """``plans:`` of a target: EXPLAIN of its top statements in the background
    (:mod:`exporter.postgres.plans`), off by default."""

    enabled: bool = False
    per_database: int = 10       # statements per database (the top by total time among those shown)
    interval: float = 600.0      # seconds between two EXPLAINs of one statement
    timeout: float = 2.0         # statement_timeout of each EXPLAIN
    state_dir: str = ""          # the config's top-level state_dir (exporter.state.state_dir resolves it)


@dataclass(frozen=True)
class Target:
    name: str
    dsn: str = field(repr=False)  # holds the password: never log it, use exporter.secrets.describe_dsn
    databases: Databases = Databases()
    collectors: dict = field(default_factory=dict)  # name -> CollectorSettings (only the overridden)
    max_connections: int = 4
    table_limit: int = 1000
    # series the target may serve in all; the per-relation collectors (tables, table_sizes,
    # indexes) fold what does not fit into `other` rows (exporter.postgres.budget)
    max_series: int = 50_000
    connect_timeout: float = 3.0
    statements: StatementsOptions = StatementsOptions()  # options of the statements and live_queries collectors
    wait_events: WaitEventsOptions = WaitEventsOptions()  # the session sampler's options
    samples: SamplesOptions = SamplesOptions()  # the query samples it keeps
    plans: PlansOptions = PlansOptions()  # EXPLAIN of the top statements (exporter.postgres.plans)
    pipelines: object = None  # exporter.pipelines.sources.Pipelines when `pipelines:` is set
    server_log: object = None  # exporter.serverlog.options.ServerLogOptions when `server_log:` is set
    replication: object = None  # exporter.mysql.heartbeat.HeartbeatOptions of a kind: mysql target
    kind: str = "postgres"  # a name of exporter.kind.KINDS: postgres, pgbouncer (exporter.pgbouncer), mysql (exporter.mysql)
    dsn_from: str = ""      # where the DSN comes from when not inline: "environment variable PG_DSN", "file ..."
    # set (one line: file, key, target, reason) when the DSN's secret was absent and the config was
    # parsed with secrets=False (check-config): dsn is then "" and the target cannot be connected to
    dsn_missing: str = ""

    def covered(self, server) -> list[str]:
        """The databases database-scoped collectors run on, for ``server`` (a ServerInfo): the
        target's own first, then the other discovered ones its ``databases:`` wants."""
        own = server.dbname
        if not self.databases.discover:
            return [own]
        return [own, *(d for d in server.databases if d != own and self.databases.wanted(d))]

    def collector(self, name: str, enabled_by_default: bool) -> CollectorSettings:
        settings = self.collectors.get(name)
        if settings is None:
            return CollectorSettings(enabled=enabled_by_default)
        if settings.enabled is None:  # only ttl/timeout were set: keep the default on/off
            return replace(settings, enabled=enabled_by_default)
        return settings
