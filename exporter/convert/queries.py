"""Reads a postgres_exporter queries file (``--extend.query-path``) and checks its shape.

The format, as postgres_exporter's ``exporter/queries.go`` reads it::

    NAMESPACE:                 # metric names are NAMESPACE_COLUMN
      query: SQL
      master: true|false       # true: only on the DSN's own database when discovering databases
      cache_seconds: N         # serve the last result for N seconds
      runonserver: RANGE       # a blang/semver range of the server version
      metrics:
        - COLUMN:
            usage: LABEL|COUNTER|GAUGE|DURATION|MAPPEDMETRIC|HISTOGRAM|DISCARD
            description: TEXT
            metric_mapping: {TEXT: NUMBER}   # MAPPEDMETRIC

A file of the wrong shape (not a mapping, a namespace or column that is not one, a value of the
wrong type) is a :class:`~exporter.configfile.ConfigError` naming the file and the key; keys that
postgres_exporter ignores are kept in :attr:`Namespace.unknown` / :attr:`Column.unknown` for the
converter to name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.configfile import ConfigError, read_yaml_file, show

USAGES = ("LABEL", "COUNTER", "GAUGE", "DURATION", "MAPPEDMETRIC", "HISTOGRAM", "DISCARD")
NAMESPACE_KEYS = ("query", "master", "cache_seconds", "runonserver", "metrics")
COLUMN_KEYS = ("usage", "description", "metric_mapping", "pg_version")
MAX_CACHE_SECONDS = 366 * 86400


@dataclass
class Column:
    name: str
    usage: str                 # as written ("" when missing: postgres_exporter then discards it)
    description: str = ""
    mapping: dict | None = None  # metric_mapping: text -> number
    pg_version: bool = False   # given (postgres_exporter ignores it in a queries file)
    unknown: tuple = ()        # keys postgres_exporter does not know


@dataclass
class Namespace:
    name: str
    query: str = ""
    master: bool = False
    cache_seconds: int = 0
    runonserver: str = ""
    columns: list[Column] = field(default_factory=list)
    unknown: tuple = ()
    repeated: tuple = ()       # columns listed more than once (the last entry counts)


def read(path: str) -> list[Namespace]:
    """The namespaces of the queries file ``path``, in the file's order."""
    data = read_yaml_file(path, what="queries file")
    if data is None:
        raise ConfigError(path, "", "the file is empty: no query to convert")
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"must be a mapping of namespaces to queries (postgres_exporter's "
                                    f"--extend.query-path format), not a {type(data).__name__}")
    return [_namespace(path, name, spec) for name, spec in data.items()]


def _text(path: str, key: str, value, allow_numbers: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if allow_numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(path, key, f"must be text, got {show(value)}")


def _namespace(path: str, name, spec) -> Namespace:
    if not isinstance(name, str) or not name:
        raise ConfigError(path, show(name), "a namespace name must be text")
    if not isinstance(spec, dict):
        raise ConfigError(path, name, f"must be a mapping with query and metrics, got {show(spec)}")
    ns = Namespace(name, unknown=tuple(str(k) for k in spec if k not in NAMESPACE_KEYS))
    ns.query = _text(path, f"{name}.query", spec.get("query"))
    master = spec.get("master")
    if master is not None and not isinstance(master, bool):
        raise ConfigError(path, f"{name}.master", f"must be true or false, got {show(master)}")
    ns.master = bool(master)
    cache = spec.get("cache_seconds")
    if cache is not None:
        if isinstance(cache, bool) or not isinstance(cache, int) or not 0 <= cache <= MAX_CACHE_SECONDS:
            raise ConfigError(path, f"{name}.cache_seconds",
                              f"must be a whole number of seconds from 0 to {MAX_CACHE_SECONDS}, got {show(cache)}")
        ns.cache_seconds = cache
    ns.runonserver = _text(path, f"{name}.runonserver", spec.get("runonserver"), allow_numbers=True)
    metrics = spec.get("metrics")
    if metrics is None:
        metrics = []
    if not isinstance(metrics, list):
        raise ConfigError(path, f"{name}.metrics", f"must be a list of columns, got {show(metrics)}")
    seen: dict[str, int] = {}
    repeated = []
    for i, item in enumerate(metrics):
        if not isinstance(item, dict) or not item:
            raise ConfigError(path, f"{name}.metrics[{i}]",
                              f"must be a mapping of a column name to its usage, got {show(item)}")
        for column, options in item.items():
            col = _column(path, f"{name}.metrics[{i}]", column, options)
            if col.name in seen:  # postgres_exporter keeps the last
                ns.columns[seen[col.name]] = col
                repeated.append(col.name)
            else:
                seen[col.name] = len(ns.columns)
                ns.columns.append(col)
    ns.repeated = tuple(dict.fromkeys(repeated))
    return ns


def _column(path: str, where: str, name, options) -> Column:
    if not isinstance(name, str) or not name:
        raise ConfigError(path, where, f"a column name must be text, got {show(name)}")
    key = f"{where}.{name}"
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(path, key, f"must be a mapping with usage and description, got {show(options)}")
    col = Column(name, usage=_text(path, f"{key}.usage", options.get("usage")),
                 description=_text(path, f"{key}.description", options.get("description"), allow_numbers=True),
                 pg_version="pg_version" in options,
                 unknown=tuple(str(k) for k in options if k not in COLUMN_KEYS))
    mapping = options.get("metric_mapping")
    if mapping is not None:
        if not isinstance(mapping, dict):
            raise ConfigError(path, f"{key}.metric_mapping", f"must map text to numbers, got {show(mapping)}")
        col.mapping = {}
        for text, number in mapping.items():
            if not isinstance(text, str):
                raise ConfigError(path, f"{key}.metric_mapping", f"{show(text)}: quote the text to map "
                                  "(YAML reads it as a number or true/false, not as the column's text)")
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise ConfigError(path, f"{key}.metric_mapping.{text}", f"must be a number, got {show(number)}")
            col.mapping[text] = float(number)
    return col
