"""YAML configuration -> typed objects. Every mistake raises :class:`ConfigError` with one line
naming the file, the key and the reason. The configuration is parsed once and passed down.

Hostile files are refused in one line too (:mod:`exporter.configfile` reads them: regular files of at
most :data:`MAX_CONFIG_BYTES`, UTF-8, bounded aliases and nesting, plain tags, a range for every
number)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path


from exporter.durations import format_duration
from exporter.configfile import (  # noqa: F401 - re-exported: the config's readers and errors
    MAX_CONFIG_BYTES, MAX_DEPTH, MAX_DSN_BYTES, MAX_INT, MAX_NODES, MAX_PATTERN, RANGES, ConfigError, FileProblem,
    _Reader, load_yaml, read_text, read_yaml_file, show,
)

from exporter.target import (  # noqa: F401 - re-exported: the typed settings the config builds
    MANAGED_ADMIN_DATABASES, RANK_BY, CollectorSettings, Databases, PlansOptions, SamplesOptions, StatementsOptions,
    Target, WaitEventsOptions,
)

DEFAULT_PORT = 9847
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"


@dataclass(frozen=True)
class Config:
    source: str
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    scrape_timeout: float = 10.0
    scrape_timeout_offset: float = 0.5
    host_metrics: bool = True
    log_level: str = "info"
    log_format: str = "text"
    targets: tuple = ()
    # the HTTP layer (exporter.server, exporter.webconfig): see _web below
    max_scrape_timeout: float = 120.0  # a longer X-Prometheus-Scrape-Timeout-Seconds is clamped to it
    web_config: str = ""               # web configuration file (TLS, basic auth), resolved beside the config
    web_unauthenticated_paths: tuple = ()  # paths served without basic auth: only /healthz may be here
    # the collectors of the user's collector_files (exporter.postgres.catalog_schema.CollectorSpec),
    # in file order; exporter.postgres.catalog.from_spec makes a collector of each
    collector_specs: tuple = ()
    # where dbperf keeps state across restarts (exporter.state); "" = $DBPERF_STATE_DIR or the XDG default
    state_dir: str = ""
    # the bearer token of /samples and /events (exporter.private); "" = those endpoints are off
    private_token: str = field(default="", repr=False)

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    @property
    def missing_secrets(self) -> list[str]:
        """One line per target whose DSN could not be read (only with ``parse(..., secrets=False)``)."""
        return [t.dsn_missing for t in self.targets if t.dsn_missing]


NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")
def parse_listen(source: str, key: str, value: str) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 <= int(port) < 65536:
        raise ConfigError(source, key, f"must be HOST:PORT with a port in 0 .. 65535, got {show(value)}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _dsn(source: str, reader: _Reader, name: str, env=os.environ, secrets: bool = True,
         target_kind: str = "postgres") -> tuple[str, str, str]:
    """``(dsn, where it comes from, problem)``. A DSN from an unset environment variable or an
    unreadable file is an error, unless ``secrets`` is False (checking a config without its
    secrets): then the DSN is "" and ``problem`` the one-line error serve would give. ``target_kind``:
    whose connection string it is (a MySQL one is a ``mysql://`` URL or MySQL key=value words)."""
    given = [k for k in ("dsn", "dsn_file", "dsn_env") if reader.data.get(k) is not None]
    if len(given) != 1:
        reader.fail("dsn", "exactly one of dsn, dsn_file, dsn_env is required"
                    + (f" (got {', '.join(given)})" if given else ""))
    kind = given[0]
    value = reader.get(kind, str)
    missing, where = "", ""
    if kind == "dsn_file":
        path = Path(value)
        if not path.is_absolute():
            path = Path(source).parent / path
        where = f"file {path}"
        try:
            dsn = read_text(path, MAX_DSN_BYTES).strip()
        except FileProblem as exc:
            dsn, missing = "", f"target {show(name)}: cannot read the DSN file {path}: {exc}"
    elif kind == "dsn_env":
        where = f"environment variable {value}"
        try:
            dsn = env.get(value, "").strip()
        except (ValueError, TypeError):  # a NUL in the name
            dsn = ""
        if not dsn:
            missing = f"target {show(name)}: environment variable {value} (the target's DSN) is not set or empty"
    else:
        dsn = value
    if missing:
        if secrets:
            reader.fail(kind, missing)
        return "", where, str(ConfigError(source, reader.key(kind), missing))
    if target_kind == "mysql":
        from exporter.mysql.dsn import problem as validate_dsn
    else:
        from exporter.secrets import validate_dsn

    problem = validate_dsn(dsn)
    if problem:
        reader.fail(kind, f"target {show(name)}: {problem}")
    return dsn, where, ""


def _collectors(source: str, reader: _Reader, known: frozenset) -> dict:
    """A ``collectors:`` section; ``known``: the built-in collectors' names and the user's."""
    out = {}
    for name, value in reader.data.items():
        key = reader.key(str(name))
        if name not in known:
            raise ConfigError(source, key, f"unknown collector (known: {', '.join(sorted(known))})")
        if isinstance(value, bool):
            out[name] = CollectorSettings(enabled=value)
            continue
        sub = _Reader(source, value, key)
        sub.allow("enabled", "timeout", "ttl")
        out[name] = CollectorSettings(enabled=sub.get("enabled", bool),
                                      timeout=sub.ranged("timeout", float, None, "collectors.timeout"),
                                      ttl=sub.ranged("ttl", float, None, "collectors.ttl"))
    return out


def _statements(reader: _Reader) -> StatementsOptions:
    keys = {name: f.type for name, f in StatementsOptions.__dataclass_fields__.items()}
    reader.allow(*keys)
    kinds = {"int": int, "str": str, "float": float, "bool": bool}
    out = {}
    for key, kind in keys.items():
        kind = kinds[kind]
        range_key = f"statements.{key}"
        value = reader.ranged(key, kind, None, range_key) if range_key in RANGES else reader.get(key, kind)
        if value is not None:
            out[key] = value
    if out.get("rank_by") not in (None, *RANK_BY):
        reader.fail("rank_by", f"must be one of {', '.join(RANK_BY)}")
    return StatementsOptions(**out)


def _wait_events(reader: _Reader) -> WaitEventsOptions:
    reader.allow("interval", "max_routes", "max_route_statements")
    return WaitEventsOptions(interval=reader.ranged("interval", float, WaitEventsOptions.interval,
                                                    "wait_events.interval"),
                             max_routes=reader.ranged("max_routes", int, WaitEventsOptions.max_routes,
                                                      "wait_events.max_routes"),
                             max_route_statements=reader.ranged("max_route_statements", int,
                                                                WaitEventsOptions.max_route_statements,
                                                                "wait_events.max_route_statements"))


def _samples(reader: _Reader) -> SamplesOptions:
    reader.allow("redact", "limit", "max_age")
    return SamplesOptions(redact=reader.get("redact", bool, SamplesOptions.redact),
                          limit=reader.ranged("limit", int, SamplesOptions.limit, "samples.limit"),
                          max_age=reader.ranged("max_age", float, SamplesOptions.max_age, "samples.max_age"))


def _plans(reader: _Reader, state_dir: str) -> PlansOptions:
    reader.allow("enabled", "per_database", "interval", "timeout")
    d = PlansOptions
    return PlansOptions(enabled=reader.get("enabled", bool, d.enabled),
                        per_database=reader.ranged("per_database", int, d.per_database, "plans.per_database"),
                        interval=reader.ranged("interval", float, d.interval, "plans.interval"),
                        timeout=reader.ranged("timeout", float, d.timeout, "plans.timeout"), state_dir=state_dir)


TARGET_KEYS = ("name", "kind", "dsn", "dsn_file", "dsn_env", "databases", "collectors", "max_connections",
               "table_limit", "max_series", "connect_timeout", "statements", "wait_events", "samples",
               "pipelines", "plans", "server_log", "replication")
PGBOUNCER_KEYS = ("name", "kind", "dsn", "dsn_file", "dsn_env", "connect_timeout")
MYSQL_KEYS = ("name", "kind", "dsn", "dsn_file", "dsn_env", "connect_timeout", "collectors", "table_limit", "statements",
              "replication")


def _mysql_target(source: str, reader: _Reader, name: str, defaults: dict, env=os.environ,
                  secrets: bool = True) -> Target:
    """``kind: mysql``: a MySQL or MariaDB server (exporter.mysql), one session, its own collectors;
    the top-level ``collectors:`` settings apply to the collectors of the same name."""
    from exporter.mysql.heartbeat import parse as parse_replication
    from exporter.registry import collector_names

    reader.allow(*MYSQL_KEYS)
    known = collector_names("mysql")
    collectors = {k: v for k, v in defaults.items() if k in known}
    collectors.update(_collectors(source, reader.sub("collectors"), known))
    dsn, where, missing = _dsn(source, reader, name, env, secrets, target_kind="mysql")
    return Target(name=name, dsn=dsn, kind="mysql", collectors=collectors, max_connections=2,
                  table_limit=reader.ranged("table_limit", int, 1000, "table_limit"),
                  statements=_statements(reader.sub("statements")),
                  connect_timeout=reader.ranged("connect_timeout", float, 3.0, "connect_timeout"),
                  replication=parse_replication(reader.sub("replication")),
                  dsn_from=where, dsn_missing=missing)


def _pgbouncer_target(source: str, reader: _Reader, name: str, env=os.environ, secrets: bool = True) -> Target:
    """``kind: pgbouncer``: PgBouncer's admin console; only the pgbouncer collector runs."""
    reader.allow(*PGBOUNCER_KEYS)
    dsn, where, missing = _dsn(source, reader, name, env, secrets)
    from psycopg.conninfo import conninfo_to_dict

    dbname = conninfo_to_dict(dsn).get("dbname")
    if dbname not in (None, "pgbouncer"):
        reader.fail("dsn", f"a pgbouncer target connects to the admin console: dbname must be pgbouncer, got {show(dbname)}")
    return Target(name=name, dsn=dsn, kind="pgbouncer", connect_timeout=reader.ranged("connect_timeout", float, 3.0, "connect_timeout"),
                  dsn_from=where, dsn_missing=missing)


def _target(source: str, reader: _Reader, defaults: dict, env=os.environ, secrets: bool = True,
            known: frozenset = frozenset(), state_dir: str = "") -> Target:
    reader.allow(*TARGET_KEYS)
    name = reader.get("name", str)
    if name is None:
        reader.fail("name", "is required")
    if not NAME_RE.fullmatch(name):
        reader.fail("name", f"must match {NAME_RE.pattern}, got {show(name)}")
    from exporter.kind import KINDS

    kind = reader.get("kind", str, "postgres")
    if kind not in KINDS:
        reader.fail("kind", f"must be one of {', '.join(KINDS)}, got {show(kind)}")
    if kind == "pgbouncer":
        return _pgbouncer_target(source, reader, name, env, secrets)
    if kind == "mysql":
        return _mysql_target(source, reader, name, defaults, env, secrets)
    if "replication" in reader.data:
        reader.fail("replication", "is a key of kind: mysql targets only (a heartbeat table)")
    dbs = reader.sub("databases")
    dbs.allow("discover", "include", "exclude")
    databases = Databases(discover=dbs.get("discover", bool, True),
                          include=dbs.get("include", re.Pattern, re.compile(".*")),
                          exclude=dbs.get("exclude", re.Pattern, re.compile("^$")))
    collectors = dict(defaults)
    collectors.update(_collectors(source, reader.sub("collectors"), known))
    pipelines = None
    if reader.data.get("pipelines") is not None:
        from exporter.pipelines.sources import parse as parse_pipelines

        pipelines = parse_pipelines(reader.sub("pipelines"))
        current = collectors.get("pipelines")  # on unless switched off explicitly
        if current is None or current.enabled is None:
            collectors["pipelines"] = replace(current or CollectorSettings(enabled=True), enabled=True)
    plans = _plans(reader.sub("plans"), state_dir)
    if plans.enabled:  # `plans: {enabled: true}` turns the plans collector on, unless switched off explicitly
        current = collectors.get("plans")
        if current is None or current.enabled is None:
            collectors["plans"] = replace(current or CollectorSettings(enabled=True), enabled=True)
    server_log = None
    if reader.data.get("server_log") is not None:
        from exporter.serverlog.options import parse as parse_server_log

        server_log = parse_server_log(reader.sub("server_log"), Path(source).parent, state_dir)
        current = collectors.get("server_log")  # on unless switched off explicitly
        if current is None or current.enabled is None:
            collectors["server_log"] = replace(current or CollectorSettings(enabled=True), enabled=True)
    max_conn = reader.ranged("max_connections", int, 4, "max_connections")
    dsn, where, missing = _dsn(source, reader, name, env, secrets)
    return Target(
        name=name, dsn=dsn, dsn_from=where, dsn_missing=missing, databases=databases, collectors=collectors,
        max_connections=max_conn, table_limit=reader.ranged("table_limit", int, 1000, "table_limit"),
        max_series=reader.ranged("max_series", int, Target.max_series, "max_series"),
        connect_timeout=reader.ranged("connect_timeout", float, 3.0, "connect_timeout"),
        statements=_statements(reader.sub("statements")),
        wait_events=_wait_events(reader.sub("wait_events")),
        samples=_samples(reader.sub("samples")),
        pipelines=pipelines, plans=plans, server_log=server_log,
    )


WEB_KEYS = ("max_scrape_timeout", "web_config", "web_unauthenticated_paths")
UNAUTHENTICATED_PATHS = ("/healthz",)


def _web(source: str, top: _Reader, scrape_timeout: float) -> dict:
    """The HTTP layer's keys: ``max_scrape_timeout`` (at least ``scrape_timeout``), ``web_config``
    (a path beside the config file) and ``web_unauthenticated_paths``."""
    maximum = top.ranged("max_scrape_timeout", float, 120.0, "max_scrape_timeout")
    if scrape_timeout > maximum:
        top.fail("scrape_timeout", f"must be at most max_scrape_timeout ({format_duration(maximum)})")
    web_config = top.get("web_config", str, "")
    if web_config and not Path(web_config).is_absolute():
        web_config = str(Path(source).parent / web_config)
    paths = top.data.get("web_unauthenticated_paths") or []
    if not isinstance(paths, list) or any(p not in UNAUTHENTICATED_PATHS for p in paths):
        top.fail("web_unauthenticated_paths", f"must be a list of {', '.join(UNAUTHENTICATED_PATHS)} "
                 f"(the only path that may skip basic auth), got {show(paths)}")
    return {"max_scrape_timeout": maximum, "web_config": web_config, "web_unauthenticated_paths": tuple(paths)}


def parse(data, source: str = "<config>", env=os.environ, secrets: bool = True) -> Config:
    """``secrets=False``: an unset ``dsn_env`` or unreadable ``dsn_file`` is no error (the target's
    ``dsn_missing`` says what is missing); ``dbperf check-config`` checks a file that way."""
    top = _Reader(source, data, "")
    top.allow("listen", "scrape_timeout", "scrape_timeout_offset", "host_metrics", "log_level", *WEB_KEYS,
              "log_format", "collectors", "collector_files", "targets", "state_dir", "private_endpoints")
    host, port = parse_listen(source, "listen", top.get("listen", str, DEFAULT_LISTEN))
    log_level = top.get("log_level", str, "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        top.fail("log_level", f"must be debug, info, warning or error, got {show(log_level)}")
    log_format = top.get("log_format", str, "text")
    if log_format not in ("text", "json"):
        top.fail("log_format", f"must be text or json, got {show(log_format)}")
    scrape_timeout = top.ranged("scrape_timeout", float, 10.0, "scrape_timeout")
    specs, known = _collector_files(source, top)
    from exporter.registry import collector_names

    # the top-level settings apply to every target's collector of that name, MySQL's too
    defaults = _collectors(source, top.sub("collectors"), known | collector_names("mysql"))
    state = top.get("state_dir", str, "")
    if state and not Path(state).is_absolute():
        state = str(Path(source).parent / state)
    raw_targets = top.data.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        top.fail("targets", "must be a non-empty list of targets")
    targets, seen = [], set()
    for i, raw in enumerate(raw_targets):
        target = _target(source, _Reader(source, raw, f"targets[{i}]"), defaults, env, secrets, known, state)
        if target.name in seen:
            raise ConfigError(source, f"targets[{i}].name", f"duplicate target name {show(target.name)}")
        seen.add(target.name)
        targets.append(target)
    web = _web(source, top, scrape_timeout)
    from exporter.private import read_token

    token = read_token(top.sub("private_endpoints"), Path(source).parent, env, secrets)
    return Config(source=source, listen_host=host, listen_port=port, scrape_timeout=scrape_timeout, **web,
                  scrape_timeout_offset=top.ranged("scrape_timeout_offset", float, 0.5, "scrape_timeout_offset"),
                  host_metrics=top.get("host_metrics", bool, True), log_level=log_level,
                  log_format=log_format, targets=tuple(targets), collector_specs=specs,
                  state_dir=state, private_token=token)


def _collector_files(source: str, top: _Reader) -> tuple[tuple, frozenset]:
    """``(specs, known)``: the collectors of ``collector_files`` (each file checked whole, see
    exporter.postgres.catalog_schema) and every collector name a ``collectors:`` section may use."""
    from exporter.postgres.catalog_schema import load_collector_files
    from exporter.registry import builtin_family_names
    from exporter.registry import collector_names

    builtin = collector_names()
    if top.data.get("collector_files") is None:
        return (), builtin
    specs = load_collector_files(source, top, builtin, builtin_family_names())
    return specs, builtin | {spec.name for spec in specs}


def load(path: str, env=os.environ, secrets: bool = True) -> Config:
    return parse(read_yaml_file(path), source=path, env=env, secrets=secrets)


def resolve(path: str | None, secrets: bool = True, env=os.environ) -> Config:
    """The config of ``--config PATH``, else of ``$DBPERF_CONFIG``, else ``$DBPERF_DSN`` alone
    (:func:`from_env`); a :class:`ConfigError` on ``--config`` when there is none. ``secrets=False``:
    a DSN whose environment variable or file is missing is no error (see :func:`parse`)."""
    path = path or env.get("DBPERF_CONFIG")
    if path:
        return load(path, env=env, secrets=secrets)
    if env.get("DBPERF_DSN"):
        return from_env(env)
    raise ConfigError("", "--config", "no configuration given: pass --config FILE, or set DBPERF_CONFIG or DBPERF_DSN")


def from_env(env=os.environ) -> Config:
    """``DBPERF_DSN`` alone: one target named ``DBPERF_TARGET`` (default ``default``)."""
    name = env.get("DBPERF_TARGET", "default")
    data = {"targets": [{"name": name, "dsn_env": "DBPERF_DSN"}]}
    if env.get("DBPERF_LISTEN"):
        data["listen"] = env["DBPERF_LISTEN"]
    return parse(data, source="$DBPERF_DSN", env=env)
