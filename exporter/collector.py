"""The collector protocol shared by catalog (SQL-as-data) and code collectors.

A collector has one job: ``collect(conn, ctx) -> list[Family]``. It never knows about HTTP, the
cache or the deadline; the scrape engine (``exporter.scrape``) owns those.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

CLUSTER, DATABASE, HOST = "cluster", "database", "host"


@dataclass(frozen=True)
class ServerInfo:
    """What the planner knows of a server, read once per scrape in one round trip."""

    version: int                # server_version_num, e.g. 150004
    in_recovery: bool
    databases: tuple = ()       # connectable, non-template databases
    extensions: frozenset = frozenset()  # extensions installed in the target's own database
    dbname: str = ""            # the target's own database
    extension_versions: tuple = ()  # ((name, extversion), ...) of those extensions
    version_text: str = ""      # the version as the server writes it, where that is what is kept (PgBouncer's "1.18.0")
    flavour: str = ""           # which server of a kind it is: "mysql" or "mariadb" for kind mysql ("" for the others)

    def extension_version(self, name: str) -> str | None:
        """The installed version of extension ``name`` (``"1.10"``), None when unknown."""
        return dict(self.extension_versions).get(name)


def _no_options():
    from exporter.target import Target

    return Target(name="", dsn="")


@dataclass(frozen=True)
class Context:
    target: str
    datname: str               # database of the connection the collector runs on
    server: ServerInfo
    # the target's config (exporter.target.Target: its typed options, e.g. .statements, .table_limit);
    # by default a target with every option at its default
    options: object = field(default_factory=_no_options)
    # samples each collector served in the target's last scrape, by collector name ("": the scrape
    # engine's own metrics); empty before the first scrape
    served: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Collector:
    """Base of every collector. Subclasses set the class attributes and implement ``collect``."""

    name: str = ""
    scope: str = CLUSTER
    help: str = ""
    enabled_by_default: bool = True
    default_ttl: float = 0.0
    default_timeout: float = 2.0
    min_version: int = 0
    max_version: int | None = None      # exclusive
    role: str | None = None             # "primary", "replica" or None for both
    requires_extension: str | None = None
    optional: bool = True               # may be skipped when the scrape deadline is near
    own_session: bool = False           # cluster scope: runs on a session of its own, beside the others
    families: tuple = field(default=())  # names of the families it emits, for docs and tests

    def applies(self, server: ServerInfo) -> str | None:
        """None when the collector can run on ``server``, else why not (for check-config)."""
        if server.version < self.min_version:
            return f"needs PostgreSQL >= {format_version(self.min_version)}"
        if self.max_version is not None and server.version >= self.max_version:
            return f"needs PostgreSQL < {format_version(self.max_version)}"
        if self.role == "primary" and server.in_recovery:
            return "primary only"
        if self.role == "replica" and not server.in_recovery:
            return "replica only"
        if self.requires_extension and self.requires_extension not in server.extensions:
            return f"needs extension {self.requires_extension}"
        return None

    def documented(self) -> list[tuple[str, str, tuple, str]]:
        """``(name, type, labels, help)`` of every family the collector may emit, in order (the
        docs, the config's name checks and check-config read it)."""
        describe = getattr(self, "describe", None)
        if describe is not None:
            return [(f.name, f.type, f.labelnames, f.help) for f in describe()]
        return [(name, "gauge", (), self.help) for name in self.families]

    def collect(self, conn, ctx: Context, timeout: float) -> list:  # pragma: no cover - interface
        raise NotImplementedError


def format_version(num: int) -> str:
    major = num // 10000
    return str(major) if major >= 10 else f"{num // 10000}.{num // 100 % 100}"
