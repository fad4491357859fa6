"""A kind of target (``kind:`` in the config): a connection flavour plus its collectors.

The scrape engine (:class:`exporter.scrape.TargetScraper`) is the same for every kind: deadlines,
single-flight, backoff, rate-limited logs, caching and self-metrics are written once there. What
differs between PostgreSQL, PgBouncer and MySQL is behind :class:`Kind`; a new kind is a
new module with one object that has these attributes, named in :data:`KINDS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from exporter.collector import Collector, ServerInfo
    from exporter.metrics import Family
    from exporter.postgres.connection import Flavour


@runtime_checkable
class Kind(Protocol):
    name: str                  # the config's ``kind:`` ("postgres", "pgbouncer")
    product: str               # for messages: "PostgreSQL", "PgBouncer"
    up_metric: str             # "pg_up", "pgbouncer_up": always served, 0 when the probe failed
    up_help: str
    flavour: "Flavour"         # how its sessions are opened (settings, statement timeout, database)
    probe_sql: str             # one statement (or batch) per scrape: is it there, what is it
    discovers_databases: bool  # database-scoped collectors run on every database the probe lists

    def server_info(self, results: list) -> "ServerInfo":
        """The probe's answer (``Connection.query``'s result) as the planner's ServerInfo."""

    def describe(self, server: "ServerInfo") -> str:
        """``PostgreSQL 16``, ``PgBouncer 1.18.0``: for log lines."""

    def info_families(self, server: "ServerInfo") -> list["Family"]:
        """Families served with the self-metrics while the server answers (pgbouncer_version_info)."""

    def collectors(self) -> list["Collector"]:
        """New built-in collector objects for one target (collectors keep per-target state)."""

    def unsupported(self, exc: BaseException) -> bool:
        """True when ``exc`` says the server lacks what a collector reads (not a failure)."""

    def hint(self, exc: BaseException, dsn: str) -> str:
        """What to append to a failure's log line to say how to fix it ("" when nothing)."""

    def connection(self, dsn: str, dbname: str | None, connect_timeout: float, watchdog, statement_timeout: float):
        """A new lazily connected session (:class:`exporter.postgres.connection.Connection`'s
        interface: ``query``, ``within``, ``scrub``, ``connected``, ``close``)."""


# kind name -> "module:attribute" of its Kind object (imported on first use)
KINDS = {"postgres": "exporter.postgres.kind:POSTGRES", "pgbouncer": "exporter.pgbouncer:PGBOUNCER",
         "mysql": "exporter.mysql.kind:MYSQL"}


def kind_of(name: str) -> Kind:
    """The :class:`Kind` named ``name`` (a Target's ``kind``); KeyError for an unknown one."""
    module, attribute = KINDS[name].split(":")
    return getattr(importlib.import_module(module), attribute)
