"""MySQL and MariaDB as a kind of target (``kind: mysql``; see :class:`exporter.kind.Kind`).

One session per target (:class:`exporter.mysql.connection.MySQLConnection`), no database
discovery (a MySQL server's schemas are labels, not sessions). The probe reads ``VERSION()``:
the flavour (``mysql`` or ``mariadb``) and the version number pick each collector's SQL.
Collectors: the catalog's (:file:`catalog.yaml`: server, variables, innodb, processlist, tables,
table_io), ``global_status`` (:mod:`.status`), ``replication`` (:mod:`.replication`) and
``statements`` (:mod:`.statements`), all on the one session.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from exporter.collector import Collector, ServerInfo
from exporter.configfile import read_yaml_file
from exporter.metrics import Family
from exporter.postgres.catalog import CatalogCollector
from exporter.postgres.catalog_schema import parse_collectors
from exporter.postgres.sqlmark import mark

CATALOG = Path(__file__).with_name("catalog.yaml")
PROBE_SQL = mark("SELECT VERSION(), DATABASE(), @@GLOBAL.read_only")

# errors that say the server lacks what a collector reads: no such table (performance_schema off
# at build time, or a MySQL-only table), unknown system variable
UNSUPPORTED_ERRORS = frozenset({1146, 1109, 1193})
# errors that say the user lacks a privilege
PRIVILEGE_ERRORS = frozenset({1044, 1142, 1143, 1227, 1370})
GRANT_HINT = ("; grant the monitoring user what it reads: GRANT PROCESS, REPLICATION CLIENT, SELECT ON *.* TO <user> "
              "(and SLAVE MONITOR on MariaDB 10.5+)")


def describe_server(server: ServerInfo) -> str:
    product = "MariaDB" if server.flavour == "mariadb" else "MySQL"
    return f"{product} {server.version // 10000}.{server.version // 100 % 100}"


class MySQLCatalogCollector(CatalogCollector):
    """A collector of :file:`catalog.yaml`: its queries for the server's flavour and version."""

    def applies(self, server) -> str | None:
        if not self.plan(server.version, server.flavour):
            return f"no query for {describe_server(server)}"
        return None


@functools.cache
def catalog() -> tuple[MySQLCatalogCollector, ...]:
    specs = parse_collectors(read_yaml_file(CATALOG, what="MySQL collector catalog"), str(CATALOG), user=False)
    return tuple(MySQLCatalogCollector(spec) for spec in specs)


def _code(exc: BaseException):
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class MySQLKind:
    name = "mysql"
    product = "MySQL"
    up_metric = "mysql_up"
    up_help = "1 when dbperf could connect to the MySQL or MariaDB server and query it in this scrape."
    flavour = None  # sessions are made by connection() below
    probe_sql = PROBE_SQL
    discovers_databases = False

    @staticmethod
    def server_info(results: list) -> ServerInfo:
        from exporter.mysql.connection import flavour_of, version_number

        (_, rows), = results
        text, database, read_only = rows[0]
        return ServerInfo(version=version_number(str(text)), in_recovery=False, dbname=database or "",
                          version_text=str(text), flavour=flavour_of(str(text)))

    @staticmethod
    def describe(server: ServerInfo) -> str:
        return describe_server(server)

    @staticmethod
    def info_families(server: ServerInfo) -> list[Family]:
        return []  # the server collector serves mysql_server_info

    @staticmethod
    def collectors() -> list[Collector]:
        from exporter.mysql.replication import ReplicationCollector
        from exporter.mysql.statements import MySQLStatementsCollector
        from exporter.mysql.status import GlobalStatusCollector

        return [*(copy.copy(c) for c in catalog()), GlobalStatusCollector(), ReplicationCollector(),
                MySQLStatementsCollector()]

    @staticmethod
    def unsupported(exc: BaseException) -> bool:
        return _code(exc) in UNSUPPORTED_ERRORS

    @staticmethod
    def hint(exc: BaseException, dsn: str) -> str:
        return GRANT_HINT if _code(exc) in PRIVILEGE_ERRORS else ""

    @staticmethod
    def connection(dsn, dbname, connect_timeout, watchdog, statement_timeout):
        from exporter.mysql.connection import MySQLConnection

        return MySQLConnection(dsn, dbname, connect_timeout, watchdog, statement_timeout=statement_timeout)


MYSQL = MySQLKind()
