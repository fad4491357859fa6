"""PostgreSQL as a kind of target (``kind: postgres``, the default): its probe, its session set-up,
its collectors, and how its errors read (see :class:`exporter.kind.Kind`)."""

from __future__ import annotations

import copy

from exporter.collector import Collector, ServerInfo
from exporter.metrics import Family
from exporter.postgres.connection import POSTGRES as FLAVOUR
from exporter.postgres.privileges import grant_hint

PROBE_SQL = """SELECT current_setting('server_version_num')::int, pg_is_in_recovery(), current_database(),
  array(SELECT datname::text FROM pg_database
        WHERE datallowconn AND NOT datistemplate AND has_database_privilege(oid, 'CONNECT') ORDER BY 1),
  array(SELECT extname::text FROM pg_extension ORDER BY oid), array(SELECT extversion FROM pg_extension ORDER BY oid)
  /*application='dbperf'*/"""

# errors that say the server lacks what a collector reads (not that the collector failed): the
# view or table does not exist (undefined_table), or the server does not offer the feature
# (feature_not_supported, as managed services answer for some functions). A missing column is a
# failure: the collector's SQL does not match the server's version, a bug to see.
UNSUPPORTED_SQLSTATES = frozenset({"42P01", "0A000"})


def builtin_collectors() -> list[Collector]:
    """New objects of every built-in PostgreSQL collector: the catalog's (copies of the parsed,
    immutable entries; the per-relation ones share one new series budget) and the code collectors."""
    from exporter.advisor.collector import AdvisorCollector
    from exporter.pipelines.collector import PipelinesCollector
    from exporter.postgres import catalog
    from exporter.postgres.budget import RELATION_COLLECTORS, SeriesBudget
    from exporter.postgres.live import LiveQueriesCollector
    from exporter.postgres.plans import PlansCollector
    from exporter.postgres.privileges import PrivilegesCollector
    from exporter.postgres.relations import RelationCollector
    from exporter.postgres.settings import SettingsCollector
    from exporter.postgres.statements import StatementsCollector
    from exporter.postgres.wait_events import (RouteStatementWaitEventsCollector, RouteWaitEventsCollector,
                                              SharedSampler, StatementWaitEventsCollector, WaitEventsCollector)
    from exporter.serverlog.collector import ServerLogCollector

    budget = SeriesBudget()  # the target's max_series, shared by its per-relation collectors only
    builtin = [RelationCollector(c.spec, budget) if c.name in RELATION_COLLECTORS else copy.copy(c)
               for c in catalog.load()]
    statements = StatementsCollector()
    sampler = SharedSampler(statements)  # one session sampler per target, for both wait-event collectors
    return [*builtin, SettingsCollector(), statements, LiveQueriesCollector(),
            WaitEventsCollector(sampler), StatementWaitEventsCollector(sampler), RouteWaitEventsCollector(sampler),
            RouteStatementWaitEventsCollector(sampler),
            # opt-in (plans: {enabled: true}): EXPLAIN of the top statements, with the sampler's samples
            PlansCollector(statements, samples=lambda: getattr(sampler.sampler, "store", None)),
            PrivilegesCollector(),  # fails naming the grant when the role lacks what pg_monitor grants
            AdvisorCollector(sampler),  # opt-in: dbperf_advisor_findings (statement ones from the samples)
            PipelinesCollector(),   # on for targets with `pipelines:` sources
            ServerLogCollector()]   # on for targets with `server_log:`


class PostgresKind:
    name = "postgres"
    product = "PostgreSQL"
    up_metric = "pg_up"
    up_help = "1 when dbperf could connect to the target and query it in this scrape."
    flavour = FLAVOUR
    probe_sql = PROBE_SQL
    discovers_databases = True

    @staticmethod
    def server_info(results: list) -> ServerInfo:
        (_, rows), = results
        version, in_recovery, dbname, databases, extensions, versions = rows[0]
        return ServerInfo(version=version, in_recovery=in_recovery, databases=tuple(databases),
                          extensions=frozenset(extensions), dbname=dbname,
                          extension_versions=tuple(zip(extensions, versions)))

    @staticmethod
    def describe(server: ServerInfo) -> str:
        return f"PostgreSQL {server.version // 10000}"

    @staticmethod
    def info_families(server: ServerInfo) -> list[Family]:
        return []  # the server collector serves pg_server_info

    @staticmethod
    def collectors() -> list[Collector]:
        return builtin_collectors()

    @staticmethod
    def unsupported(exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) in UNSUPPORTED_SQLSTATES

    @staticmethod
    def hint(exc: BaseException, dsn: str) -> str:
        return grant_hint(exc, dsn)

    @staticmethod
    def connection(dsn, dbname, connect_timeout, watchdog, statement_timeout):
        from exporter.postgres.connection import Connection

        return Connection(dsn, dbname, connect_timeout, watchdog, flavour=FLAVOUR, statement_timeout=statement_timeout)


POSTGRES = PostgresKind()
