"""What ``dbperf check-config`` prints: the collectors each target will run."""

from __future__ import annotations

from exporter.collector import ServerInfo, format_version
from exporter.config import Config
from exporter.registry import known_collectors
from exporter.secrets import describe_dsn

VERSIONS = (130000, 140000, 150000, 160000, 170000, 180000)  # the majors the version matrix runs


def versions_supported(collector) -> str:
    ok = [format_version(v) for v in VERSIONS
          if collector.applies(ServerInfo(version=v, in_recovery=collector.role == "replica",
                                          extensions=frozenset([collector.requires_extension or ""]))) is None]
    return ",".join(ok) if ok else "none"


def _where(target) -> str:
    if target.dsn_missing:
        return f"DSN from {target.dsn_from} (missing)"
    return describe_dsn(target.dsn, target.kind) + (f" (from {target.dsn_from})" if target.dsn_from else "")


def describe_plan(config: Config) -> str:
    lines = [f"{config.source}: OK", f"listen {config.listen_host}:{config.listen_port}, "
             f"scrape deadline {config.scrape_timeout:g}s (or Prometheus's timeout minus "
             f"{config.scrape_timeout_offset:g}s), host metrics {'on' if config.host_metrics else 'off'}"]
    for target in config.targets:
        if getattr(target, "kind", "postgres") == "pgbouncer":
            lines.append(f"\ntarget {target.name}: PgBouncer admin console {_where(target)}; "
                         "collector pgbouncer (SHOW POOLS, STATS, DATABASES, LISTS, CONFIG)")
            continue
        if target.kind == "mysql":
            lines += _mysql_plan(target)
            continue
        dbs = target.databases
        discovery = (f"discover databases include={dbs.include.pattern!r} exclude={dbs.exclude.pattern!r}"
                     if dbs.discover else "own database only")
        lines.append(f"\ntarget {target.name}: {_where(target)}; {discovery}; "
                     f"max_connections={target.max_connections} table_limit={target.table_limit}")
        lines.append(f"  {'collector':<16} {'scope':<9} {'ttl':>6} {'timeout':>8}  {'role':<8} PostgreSQL")
        for c in known_collectors("postgres", config):
            settings = target.collector(c.name, c.enabled_by_default)
            if not settings.enabled:
                lines.append(f"  {c.name:<16} disabled")
                continue
            ttl = c.default_ttl if settings.ttl is None else settings.ttl
            timeout = settings.timeout or c.default_timeout
            spec = getattr(c, "spec", None)
            source = f"  (user: {spec.source}, max_rows {spec.max_rows})" if spec is not None and spec.user else ""
            lines.append(f"  {c.name:<16} {c.scope:<9} {ttl:>5g}s {timeout:>7g}s  {c.role or 'any':<8} "
                         f"{versions_supported(c)}{source}")
    return "\n".join(lines)


def _mysql_plan(target) -> list[str]:
    """A ``kind: mysql`` target's lines: its one session, and its collectors with the server
    flavours (MySQL 8.0, MariaDB 10.6) they have SQL for."""
    from exporter.registry import known_collectors

    lines = [f"\ntarget {target.name}: MySQL/MariaDB {_where(target)}; one session; table_limit={target.table_limit}",
             f"  {'collector':<16} {'ttl':>6} {'timeout':>8}  servers"]
    for c in known_collectors("mysql"):
        settings = target.collector(c.name, c.enabled_by_default)
        if not settings.enabled:
            lines.append(f"  {c.name:<16} disabled")
            continue
        ttl = c.default_ttl if settings.ttl is None else settings.ttl
        servers = [name for name, version, flavour in (("MySQL 8.0", 80000, "mysql"), ("MariaDB 10.6", 100600, "mariadb"))
                   if c.applies(ServerInfo(version=version, in_recovery=False, flavour=flavour)) is None]
        lines.append(f"  {c.name:<16} {ttl:>5g}s {settings.timeout or c.default_timeout:>7g}s  {', '.join(servers) or 'none'}")
    return lines
