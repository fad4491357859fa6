"""YAML configuration -> typed objects. Every mistake raises :class:`ConfigError` with one line
naming the file, the key and the reason. The configuration is parsed once and passed down.

Hostile files are refused in one line too: the file is read only when it is a regular file of at
most :data:`MAX_CONFIG_BYTES` (a FIFO or device is an error, never a wait), it must be UTF-8,
YAML anchors and aliases are bounded (:data:`MAX_NODES` values after expansion, no recursion),
nesting is at most :data:`MAX_DEPTH` levels, tags other than ``!!str`` are refused, and every
number has a range (:data:`RANGES`)."""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from exporter.durations import DAY, HOUR, DurationError, format_duration, parse_duration
from exporter.secrets import one_line

DEFAULT_PORT = 9847
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"


class ConfigError(ValueError):
    """A configuration mistake; ``str()`` is one line: ``file: key: reason``.

    A key starting with ``--`` is a command-line option; its source is then the command
    (``dbperf serve``) or empty, and the CLI prints it without a ``config error`` prefix."""

    def __init__(self, source: str, key: str, reason: str):
        # one line of bounded length whatever the file holds (a key or value may be megabytes)
        self.source, self.key, self.reason = one_line(source, 300), one_line(key, 200), one_line(reason, 500)
        super().__init__(": ".join(part for part in (self.source, self.key, self.reason) if part))

    @property
    def on_command_line(self) -> bool:
        return self.key.startswith("--")


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
class Target:
    name: str
    dsn: str = field(repr=False)  # holds the password: never log it, use exporter.secrets.describe_dsn
    databases: Databases = Databases()
    collectors: dict = field(default_factory=dict)  # name -> CollectorSettings (only the overridden)
    max_connections: int = 4
    table_limit: int = 1000
    connect_timeout: float = 3.0
    statements: StatementsOptions = StatementsOptions()  # options of the statements and live_queries collectors
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
    # the HTTP layer (exporter.server, exporter.webconfig): see _web below
    max_scrape_timeout: float = 120.0  # a longer X-Prometheus-Scrape-Timeout-Seconds is clamped to it
    web_config: str = ""               # web configuration file (TLS, basic auth), resolved beside the config
    web_unauthenticated_paths: tuple = ()  # paths served without basic auth: only /healthz may be here

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    @property
    def missing_secrets(self) -> list[str]:
        """One line per target whose DSN could not be read (only with ``parse(..., secrets=False)``)."""
        return [t.dsn_missing for t in self.targets if t.dsn_missing]


NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")
MAX_INT = 2**31 - 1  # what PostgreSQL's integer takes; no count in the config needs more
MAX_PATTERN = 1000   # characters of a regular expression (databases.include, exclude)

# The range of every number in the file: key -> (minimum, maximum); durations in seconds.
# A number without an entry here takes 0 .. MAX_INT (integers) or 0 .. 366d (durations).
RANGES = {
    "scrape_timeout": (0.001, HOUR),
    "scrape_timeout_offset": (0.0, 60.0),
    "max_scrape_timeout": (1.0, HOUR),
    "connect_timeout": (0.001, HOUR),
    "max_connections": (1, 100),
    "table_limit": (1, 100_000),
    "collectors.timeout": (0.001, HOUR),
    "collectors.ttl": (0.0, DAY),
    "statements.limit": (0, 10_000),
    "statements.sticky": (0.0, DAY),
    "statements.query_text_length": (1, 10_000),
    "statements.query_text_ttl": (0.0, DAY),
    "statements.slow_threshold": (0.0, DAY),
}


def show(value, limit: int = 80) -> str:
    """A value quoted for an error message: ``repr`` of at most ``limit`` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**60:
        return f"a number of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, (str, bytes)) and len(value) > limit * 4:
        value = value[: limit * 4]  # no repr of megabytes
    elif isinstance(value, (dict, list, tuple, set)):
        return f"a {type(value).__name__}"  # nested values may be huge or shared (aliases)
    return one_line(repr(value), limit)


def _range_text(minimum, maximum, duration: bool) -> str:
    fmt = format_duration if duration else str
    return f"{fmt(minimum)} .. {fmt(maximum)}"


class _Reader:
    """Walks one YAML mapping, checking keys, types and ranges, and remembering the key path."""

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

    def get(self, key, kind, default=None, minimum=None, maximum=None):
        """The value of ``key`` checked as ``kind`` (float means a duration in seconds);
        numbers within ``minimum`` .. ``maximum`` (default 0 .. :data:`MAX_INT` or 0 .. 366d)."""
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if kind is float:
            return self.duration(key, value, 0.0 if minimum is None else minimum,
                                 366 * DAY if maximum is None else maximum)
        if kind is int:
            low = 0 if minimum is None else minimum
            high = MAX_INT if maximum is None else maximum
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                self.fail(key, f"must be an integer in {_range_text(low, high, False)}, got {show(value)}")
            return value
        if kind is bool:
            if not isinstance(value, bool):
                self.fail(key, f"must be true or false, got {show(value)}")
            return value
        if kind is str:
            if not isinstance(value, str) or not value:
                self.fail(key, f"must be a non-empty string, got {type(value).__name__}")
            return value
        if kind is re.Pattern:
            if not isinstance(value, str):
                self.fail(key, f"must be a regular expression string, got {type(value).__name__}")
            if len(value) > MAX_PATTERN:
                self.fail(key, f"regular expression longer than {MAX_PATTERN} characters")
            try:
                return re.compile(value)
            except re.error as exc:
                self.fail(key, f"bad regular expression {show(value)}: {exc}")
            except (RecursionError, OverflowError, MemoryError, ValueError) as exc:
                self.fail(key, f"bad regular expression {show(value)}: {type(exc).__name__}, too deep or too large")
        return value

    def ranged(self, key, kind, default, range_key: str):
        """:meth:`get` with the range of :data:`RANGES` ``[range_key]``."""
        minimum, maximum = RANGES[range_key]
        return self.get(key, kind, default, minimum, maximum)

    def duration(self, key, value, minimum: float = 0.0, maximum: float = 366 * DAY) -> float:
        try:
            seconds = parse_duration(value, minimum=minimum, maximum=maximum, bare_seconds=True)
        except DurationError as exc:
            self.fail(key, f"{exc}, got {show(value)}")
        return seconds

    def sub(self, key: str) -> "_Reader":
        return _Reader(self.source, self.data.get(key), self.key(key))


MAX_CONFIG_BYTES = 1024 * 1024  # a config file of more is refused
MAX_DSN_BYTES = 64 * 1024       # and a dsn_file of more
MAX_DEPTH = 32                  # levels of nesting in the YAML document
MAX_NODES = 100_000             # values in the YAML document, aliases expanded


class FileProblem(Exception):
    """Why a file cannot be read; ``str()`` is a short reason (no contents)."""


def read_text(path, limit: int) -> str:
    """The UTF-8 text of the regular file ``path``, at most ``limit`` bytes. Opened without
    blocking and checked before reading: a FIFO, device or directory is a :class:`FileProblem`
    at once, never a wait; so is a file that is larger or not UTF-8 (naming the byte offset)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileProblem(exc.strerror or type(exc).__name__) from None
    except ValueError:  # a NUL in the path
        raise FileProblem("the path holds a NUL character") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "a device")
            raise FileProblem(f"not a regular file ({kind})")
        chunks, size = [], 0
        while size <= limit:
            try:
                chunk = os.read(fd, min(65536, limit + 1 - size))
            except OSError as exc:
                raise FileProblem(exc.strerror or type(exc).__name__) from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileProblem(f"larger than {limit // 1024} KiB")
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileProblem(f"not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line})") from None


def parse_listen(source: str, key: str, value: str) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 <= int(port) < 65536:
        raise ConfigError(source, key, f"must be HOST:PORT with a port in 0 .. 65535, got {show(value)}")
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
    from exporter.secrets import validate_dsn

    problem = validate_dsn(dsn)
    if problem:
        reader.fail(kind, f"target {show(name)}: {problem}")
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
        reader.fail("dsn", f"a pgbouncer target connects to the admin console: dbname must be pgbouncer, got {show(dbname)}")
    return Target(name=name, dsn=dsn, kind="pgbouncer", connect_timeout=reader.ranged("connect_timeout", float, 3.0, "connect_timeout"),
                  dsn_from=where, dsn_missing=missing)


def _target(source: str, reader: _Reader, defaults: dict, env=os.environ, secrets: bool = True) -> Target:
    reader.allow(*TARGET_KEYS)
    name = reader.get("name", str)
    if name is None:
        reader.fail("name", "is required")
    if not NAME_RE.fullmatch(name):
        reader.fail("name", f"must match {NAME_RE.pattern}, got {show(name)}")
    kind = reader.get("kind", str, "postgres")
    if kind not in ("postgres", "pgbouncer"):
        reader.fail("kind", f"must be postgres or pgbouncer, got {show(kind)}")
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
    max_conn = reader.ranged("max_connections", int, 4, "max_connections")
    dsn, where, missing = _dsn(source, reader, name, env, secrets)
    return Target(
        name=name, dsn=dsn, dsn_from=where, dsn_missing=missing, databases=databases, collectors=collectors,
        max_connections=max_conn, table_limit=reader.ranged("table_limit", int, 1000, "table_limit"),
        connect_timeout=reader.ranged("connect_timeout", float, 3.0, "connect_timeout"),
        statements=_statements(reader.sub("statements")),
        pipelines=pipelines,
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
              "log_format", "collectors", "targets")
    host, port = parse_listen(source, "listen", top.get("listen", str, DEFAULT_LISTEN))
    log_level = top.get("log_level", str, "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        top.fail("log_level", f"must be debug, info, warning or error, got {show(log_level)}")
    log_format = top.get("log_format", str, "text")
    if log_format not in ("text", "json"):
        top.fail("log_format", f"must be text or json, got {show(log_format)}")
    scrape_timeout = top.ranged("scrape_timeout", float, 10.0, "scrape_timeout")
    defaults = _collectors(source, top.sub("collectors"))
    raw_targets = top.data.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        top.fail("targets", "must be a non-empty list of targets")
    targets, seen = [], set()
    for i, raw in enumerate(raw_targets):
        target = _target(source, _Reader(source, raw, f"targets[{i}]"), defaults, env, secrets)
        if target.name in seen:
            raise ConfigError(source, f"targets[{i}].name", f"duplicate target name {show(target.name)}")
        seen.add(target.name)
        targets.append(target)
    web = _web(source, top, scrape_timeout)
    return Config(source=source, listen_host=host, listen_port=port, scrape_timeout=scrape_timeout, **web,
                  scrape_timeout_offset=top.ranged("scrape_timeout_offset", float, 0.5, "scrape_timeout_offset"),
                  host_metrics=top.get("host_metrics", bool, True), log_level=log_level,
                  log_format=log_format, targets=tuple(targets))


_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: 5 times faster
_PLAIN_TAGS = {None, "!", "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_COLLECTION_START = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_COLLECTION_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


class _Loader(_Base):
    """The safe loader, with timestamps kept as text, over-long integers kept as text (so the
    key's own check names them) and duplicate keys refused."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    if (key_node.tag, key_node.value) in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {show(key_node.value)}", key_node.start_mark)
                    seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep=deep)

    def construct_long_int(self, node):
        text = self.construct_scalar(node)
        return text if len(text) > 40 else self.construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_long_int)


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""


def _check_events(text: str) -> None:
    """Refuses, before anything is built, what could make building or walking the document blow
    up: more than :data:`MAX_DEPTH` levels, more than :data:`MAX_NODES` values once aliases are
    expanded, an alias inside its own anchor, and explicit tags (``!!python/...``, ``!!int``...)."""
    stack = []  # per open collection: [anchor, values inside, height]
    sizes = {}  # anchor -> (values, height)
    nodes = 0
    for event in yaml.parse(text, Loader=_Base):
        size, height = 0, 0
        if isinstance(event, _COLLECTION_START) or isinstance(event, yaml.ScalarEvent):
            tag = event.tag
            if tag not in _PLAIN_TAGS:
                raise yaml.YAMLError(f"{_where(event.start_mark)}tag {show(tag)} is not allowed "
                                     "(dbperf reads plain YAML)")
        if isinstance(event, _COLLECTION_START):
            if len(stack) >= MAX_DEPTH:
                raise yaml.YAMLError(f"{_where(event.start_mark)}nested deeper than {MAX_DEPTH} levels")
            stack.append([event.anchor, 1, 1])
            nodes += 1
        elif isinstance(event, _COLLECTION_END):
            anchor, size, height = stack.pop()
            if anchor:
                sizes[anchor] = (size, height)
        elif isinstance(event, yaml.ScalarEvent):
            size, height = 1, 0
            nodes += 1
            if event.anchor:
                sizes[event.anchor] = (1, 0)
        elif isinstance(event, yaml.AliasEvent):
            if any(entry[0] == event.anchor for entry in stack):
                raise yaml.YAMLError(f"{_where(event.start_mark)}alias *{one_line(event.anchor, 40)} "
                                     "refers to a value that contains it")
            if event.anchor not in sizes:
                continue  # the loader says "found undefined alias"
            size, height = sizes[event.anchor]
            nodes += size
            if len(stack) + height > MAX_DEPTH:
                raise yaml.YAMLError(f"{_where(event.start_mark)}nested deeper than {MAX_DEPTH} levels "
                                     "once aliases are expanded")
        else:
            continue
        if nodes > MAX_NODES:
            raise yaml.YAMLError(f"{_where(event.start_mark)}more than {MAX_NODES} values"
                                 + (" once aliases are expanded" if sizes else ""))
        if stack and not isinstance(event, _COLLECTION_START):
            stack[-1][1] += size
            stack[-1][2] = max(stack[-1][2], height + 1)


def load_yaml(text: str):
    """The YAML document ``text`` with the limits of :func:`_check_events`; ``yaml.YAMLError``
    (or ValueError from a value) otherwise."""
    _check_events(text)
    return yaml.load(text, Loader=_Loader)


def read_yaml_file(path, limit: int = MAX_CONFIG_BYTES, what: str = "config file"):
    """The YAML document of the file ``path`` (at most ``limit`` bytes, the limits of
    :func:`load_yaml`); :class:`ConfigError` naming the file otherwise. The web config file
    (exporter.webconfig) is read with it too."""
    path = str(path)
    try:
        text = read_text(path, limit)
    except FileProblem as exc:
        raise ConfigError(path, "", f"cannot read {what}: {exc}") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["?"])[0]
        raise ConfigError(path, "", f"invalid YAML: {_where(mark)}{problem}") from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:  # from a value's constructor
        raise ConfigError(path, "", f"invalid YAML: a value cannot be read ({type(exc).__name__})") from None


def load(path: str, env=os.environ, secrets: bool = True) -> Config:
    return parse(read_yaml_file(path), source=path, env=env, secrets=secrets)


def from_env(env=os.environ) -> Config:
    """``DBPERF_DSN`` alone: one target named ``DBPERF_TARGET`` (default ``default``)."""
    name = env.get("DBPERF_TARGET", "default")
    data = {"targets": [{"name": name, "dsn_env": "DBPERF_DSN"}]}
    if env.get("DBPERF_LISTEN"):
        data["listen"] = env["DBPERF_LISTEN"]
    return parse(data, source="$DBPERF_DSN", env=env)
