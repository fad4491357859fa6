"""YAML configuration -> typed objects. Every mistake raises :class:`ConfigError` with one line
naming the file, the key and the reason. The configuration is parsed once and passed down."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

DEFAULT_PORT = 9847
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"


class ConfigError(ValueError):
    """A configuration mistake; ``str()`` is one line: ``file: key: reason``.

    A key starting with ``--`` is a command-line option; its source is then the command
    (``dbperf serve``) or empty, and the CLI prints it without a ``config error`` prefix."""

    def __init__(self, source: str, key: str, reason: str):
        self.source, self.key, self.reason = source, key, reason
        super().__init__(": ".join(part for part in (source, key, reason) if part))

    @property
    def on_command_line(self) -> bool:
        return self.key.startswith("--")


@dataclass(frozen=True)
class CollectorSettings:
    enabled: bool | None  # None: the collector's own default
    timeout: float | None = None  # seconds; None = the collector's default
    ttl: float | None = None      # seconds; None = the collector's default


@dataclass(frozen=True)
class Databases:
    discover: bool = True
    include: re.Pattern = re.compile(".*")
    exclude: re.Pattern = re.compile("^$")

    def wanted(self, datname: str) -> bool:
        return bool(self.include.fullmatch(datname)) and not self.exclude.fullmatch(datname)


@dataclass(frozen=True)
class Target:
    name: str
    dsn: str = field(repr=False)  # holds the password: never log it, use exporter.secrets.describe_dsn
    databases: Databases = Databases()
    collectors: dict = field(default_factory=dict)  # name -> CollectorSettings (only the overridden)
    max_connections: int = 4
    table_limit: int = 1000
    connect_timeout: float = 3.0
    statements: dict = field(default_factory=dict)  # options of the statements collector
    pipelines: object = None  # exporter.pipelines.sources.Pipelines when `pipelines:` is set
    kind: str = "postgres"  # "postgres" or "pgbouncer" (its admin console; exporter.pgbouncer)
    dsn_from: str = ""      # where the DSN comes from when not inline: "environment variable PG_DSN", "file ..."
    # set (one line: file, key, target, reason) when the DSN's secret was absent and the config was
    # parsed with secrets=False (check-config): dsn is then "" and the target cannot be connected to
    dsn_missing: str = ""

    def collector(self, name: str, enabled_by_default: bool) -> CollectorSettings:
        settings = self.collectors.get(name)
        if settings is None:
            return CollectorSettings(enabled=enabled_by_default)
        if settings.enabled is None:  # only ttl/timeout were set: keep the default on/off
            return replace(settings, enabled=enabled_by_default)
        return settings


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

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    @property
    def missing_secrets(self) -> list[str]:
        """One line per target whose DSN could not be read (only with ``parse(..., secrets=False)``)."""
        return [t.dsn_missing for t in self.targets if t.dsn_missing]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")


class _Reader:
    """Walks one YAML mapping, checking keys and types, and remembering the key path."""

    def __init__(self, source: str, data, path: str):
        self.source, self.path = source, path
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail("", f"must be a mapping, got {type(data).__name__}")
        self.data = data

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, reason: str):
        raise ConfigError(self.source, self.key(key) if key else self.path, reason)

    def allow(self, *keys: str) -> None:
        for key in self.data:
            if key not in keys:
                self.fail(str(key), f"unknown key (allowed: {', '.join(keys)})")

    def get(self, key, kind, default=None):
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if kind is float:
            return self.duration(key, value)
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                self.fail(key, f"must be a non-negative integer, got {value!r}")
            return value
        if kind is bool:
            if not isinstance(value, bool):
                self.fail(key, f"must be true or false, got {value!r}")
            return value
        if kind is str:
            if not isinstance(value, str) or not value:
                self.fail(key, f"must be a non-empty string, got {type(value).__name__}")
            return value
        if kind is re.Pattern:
            if not isinstance(value, str):
                self.fail(key, f"must be a regular expression string, got {type(value).__name__}")
            try:
                return re.compile(value)
            except re.error as exc:
                self.fail(key, f"bad regular expression {value!r}: {exc}")
        return value

    def duration(self, key, value) -> float:
        if isinstance(value, bool):
            self.fail(key, f"must be a duration like 500ms, 10s, 5m, got {value!r}")
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            match = _DURATION.match(str(value))
            if not match:
                self.fail(key, f"must be a duration like 500ms, 10s, 5m, got {value!r}")
            seconds = float(match.group(1)) * _UNIT[match.group(2)]
        if seconds < 0:
            self.fail(key, f"must not be negative, got {value!r}")
        return seconds

    def sub(self, key: str) -> "_Reader":
        return _Reader(self.source, self.data.get(key), self.key(key))


def parse_listen(source: str, key: str, value: str) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(source, key, f"must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _dsn(source: str, reader: _Reader, name: str, env=os.environ, secrets: bool = True) -> tuple[str, str, str]:
    """``(dsn, where it comes from, problem)``. A DSN from an unset environment variable or an
    unreadable file is an error, unless ``secrets`` is False (checking a config without its
    secrets): then the DSN is "" and ``problem`` the one-line error serve would give."""
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
            dsn = path.read_text().strip()
        except OSError as exc:
            dsn, missing = "", f"target {name!r}: cannot read the DSN file {path}: {exc.strerror}"
    elif kind == "dsn_env":
        where = f"environment variable {value}"
        dsn = env.get(value, "").strip()
        if not dsn:
            missing = f"target {name!r}: environment variable {value} (the target's DSN) is not set or empty"
    else:
        dsn = value
    if missing:
        if secrets:
            reader.fail(kind, missing)
        return "", where, str(ConfigError(source, reader.key(kind), missing))
    from exporter.secrets import validate_dsn

    problem = validate_dsn(dsn)
    if problem:
        reader.fail(kind, f"target {name!r}: {problem}")
    return dsn, where, ""


def _collectors(source: str, reader: _Reader) -> dict:
    from exporter.registry import collector_names

    known = collector_names()
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
        timeout = sub.get("timeout", float)
        if timeout is not None and timeout <= 0:
            sub.fail("timeout", "must be greater than 0")
        out[name] = CollectorSettings(enabled=sub.get("enabled", bool), timeout=timeout,
                                      ttl=sub.get("ttl", float))
    return out


def _statements(reader: _Reader) -> dict:
    reader.allow("limit", "rank_by", "sticky", "query_text", "query_text_length", "query_text_ttl",
                 "slow_threshold", "slowest_query_info")
    out = {}
    for key, kind in (("limit", int), ("rank_by", str), ("sticky", float), ("query_text", bool),
                      ("query_text_length", int), ("query_text_ttl", float),
                      ("slow_threshold", float), ("slowest_query_info", bool)):
        value = reader.get(key, kind)
        if value is not None:
            out[key] = value
    if out.get("rank_by") not in (None, "total_time", "calls", "mean_time", "rows", "io_time"):
        reader.fail("rank_by", "must be one of total_time, calls, mean_time, rows, io_time")
    return out


TARGET_KEYS = ("name", "kind", "dsn", "dsn_file", "dsn_env", "databases", "collectors", "max_connections",
               "table_limit", "connect_timeout", "statements", "pipelines")
PGBOUNCER_KEYS = ("name", "kind", "dsn", "dsn_file", "dsn_env", "connect_timeout")


def _pgbouncer_target(source: str, reader: _Reader, name: str, env=os.environ, secrets: bool = True) -> Target:
    """``kind: pgbouncer``: PgBouncer's admin console; only the pgbouncer collector runs."""
    reader.allow(*PGBOUNCER_KEYS)
    dsn, where, missing = _dsn(source, reader, name, env, secrets)
    from psycopg.conninfo import conninfo_to_dict

    dbname = conninfo_to_dict(dsn).get("dbname")
    if dbname not in (None, "pgbouncer"):
        reader.fail("dsn", f"a pgbouncer target connects to the admin console: dbname must be pgbouncer, got {dbname!r}")
    return Target(name=name, dsn=dsn, kind="pgbouncer", connect_timeout=reader.get("connect_timeout", float, 3.0),
                  dsn_from=where, dsn_missing=missing)


def _target(source: str, reader: _Reader, defaults: dict, env=os.environ, secrets: bool = True) -> Target:
    reader.allow(*TARGET_KEYS)
    name = reader.get("name", str)
    if name is None:
        reader.fail("name", "is required")
    if not NAME_RE.match(name):
        reader.fail("name", f"must match {NAME_RE.pattern}, got {name!r}")
    kind = reader.get("kind", str, "postgres")
    if kind not in ("postgres", "pgbouncer"):
        reader.fail("kind", f"must be postgres or pgbouncer, got {kind!r}")
    if kind == "pgbouncer":
        return _pgbouncer_target(source, reader, name, env, secrets)
    dbs = reader.sub("databases")
    dbs.allow("discover", "include", "exclude")
    databases = Databases(discover=dbs.get("discover", bool, True),
                          include=dbs.get("include", re.Pattern, re.compile(".*")),
                          exclude=dbs.get("exclude", re.Pattern, re.compile("^$")))
    collectors = dict(defaults)
    collectors.update(_collectors(source, reader.sub("collectors")))
    pipelines = None
    if reader.data.get("pipelines") is not None:
        from exporter.pipelines.sources import parse as parse_pipelines

        pipelines = parse_pipelines(reader.sub("pipelines"))
        current = collectors.get("pipelines")  # on unless switched off explicitly
        if current is None or current.enabled is None:
            collectors["pipelines"] = replace(current or CollectorSettings(enabled=True), enabled=True)
    max_conn = reader.get("max_connections", int, 4)
    if max_conn < 1:
        reader.fail("max_connections", "must be at least 1")
    dsn, where, missing = _dsn(source, reader, name, env, secrets)
    return Target(
        name=name, dsn=dsn, dsn_from=where, dsn_missing=missing, databases=databases, collectors=collectors,
        max_connections=max_conn, table_limit=reader.get("table_limit", int, 1000),
        connect_timeout=reader.get("connect_timeout", float, 3.0),
        statements=_statements(reader.sub("statements")),
        pipelines=pipelines,
    )


def parse(data, source: str = "<config>", env=os.environ, secrets: bool = True) -> Config:
    """``secrets=False``: an unset ``dsn_env`` or unreadable ``dsn_file`` is no error (the target's
    ``dsn_missing`` says what is missing); ``dbperf check-config`` checks a file that way."""
    top = _Reader(source, data, "")
    top.allow("listen", "scrape_timeout", "scrape_timeout_offset", "host_metrics", "log_level",
              "log_format", "collectors", "targets")
    host, port = parse_listen(source, "listen", top.get("listen", str, DEFAULT_LISTEN))
    log_level = top.get("log_level", str, "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        top.fail("log_level", f"must be debug, info, warning or error, got {log_level!r}")
    log_format = top.get("log_format", str, "text")
    if log_format not in ("text", "json"):
        top.fail("log_format", f"must be text or json, got {log_format!r}")
    scrape_timeout = top.get("scrape_timeout", float, 10.0)
    if scrape_timeout <= 0:
        top.fail("scrape_timeout", "must be greater than 0")
    defaults = _collectors(source, top.sub("collectors"))
    raw_targets = top.data.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        top.fail("targets", "must be a non-empty list of targets")
    targets, seen = [], set()
    for i, raw in enumerate(raw_targets):
        target = _target(source, _Reader(source, raw, f"targets[{i}]"), defaults, env, secrets)
        if target.name in seen:
            raise ConfigError(source, f"targets[{i}].name", f"duplicate target name {target.name!r}")
        seen.add(target.name)
        targets.append(target)
    return Config(source=source, listen_host=host, listen_port=port, scrape_timeout=scrape_timeout,
                  scrape_timeout_offset=top.get("scrape_timeout_offset", float, 0.5),
                  host_metrics=top.get("host_metrics", bool, True), log_level=log_level,
                  log_format=log_format, targets=tuple(targets))


def load(path: str, env=os.environ, secrets: bool = True) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, "", f"invalid YAML: {where}{problem}") from None
    return parse(data, source=path, env=env, secrets=secrets)


def from_env(env=os.environ) -> Config:
    """``DBPERF_DSN`` alone: one target named ``DBPERF_TARGET`` (default ``default``)."""
    name = env.get("DBPERF_TARGET", "default")
    data = {"targets": [{"name": name, "dsn_env": "DBPERF_DSN"}]}
    if env.get("DBPERF_LISTEN"):
        data["listen"] = env["DBPERF_LISTEN"]
    return parse(data, source="$DBPERF_DSN", env=env)
