"""The schema of collector files (``catalog.yaml`` and a user's ``collector_files``): every key,
type and range checked, metric names checked against Prometheus's naming rules (what
``promtool check metrics`` lints), a user's SQL checked to be one read-only query. The result is
immutable :class:`CollectorSpec` objects; :func:`exporter.postgres.catalog.from_spec` makes a
collector of one.

Every mistake is a :class:`~exporter.config.ConfigError` of one line naming the file, the key
path and the reason: ``FILE: collectors.NAME.queries[0].metrics[2].colum: unknown key (allowed:
...)``. docs/custom-collectors.md describes the format for users."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from exporter.configfile import ConfigError, _Reader, read_yaml_file, show

COLLECTOR_KEYS = ("help", "scope", "enabled", "ttl", "timeout", "role", "requires_extension", "optional",
                  "queries")
USER_COLLECTOR_KEYS = COLLECTOR_KEYS + ("max_rows",)  # a user's SQL is cut at max_rows; dbperf's has its limits
QUERY_KEYS = ("sql", "min_version", "max_version", "flavour", "labels", "metrics")
FLAVOURS = ("mysql", "mariadb")  # a query's flavour: kind mysql's two servers (exporter.mysql.kind)
METRIC_KEYS = ("name", "type", "help", "column", "value", "scale", "labels")
METRIC_TYPES = ("gauge", "counter")  # one value per row: a histogram needs code

DEFAULT_MAX_ROWS = 10_000
MAX_ROWS_RANGE = (1, 1_000_000)
MAX_COLLECTOR_FILES = 200  # after directories are expanded
MAX_VERSION_NUM = 9_999_999

COLLECTOR_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
METRIC_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")  # snake_case, no colons (they are for recording rules)
LABEL_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")
MAX_NAME = 200

# promtool check metrics (client_golang's promlint): the words of a name, split at "_"
TYPE_WORDS = frozenset({"counter", "gauge", "histogram", "summary"})
ABBREVIATIONS = frozenset({"s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d"})
BASE_UNITS = {"amperes": "amperes", "bytes": "bytes", "celsius": "celsius", "grams": "grams", "joules": "joules",
              "kelvin": "kelvin", "meters": "meters", "metres": "metres", "seconds": "seconds", "volts": "volts",
              "minutes": "seconds", "hours": "seconds", "days": "seconds", "weeks": "seconds",
              "kelvins": "kelvin", "fahrenheit": "celsius", "rankine": "celsius", "inches": "meters",
              "yards": "meters", "miles": "meters", "bits": "bytes", "calories": "joules", "pounds": "grams",
              "ounces": "grams"}
UNIT_PREFIXES = ("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega",
                 "mebi", "giga", "gibi", "tera", "tebi", "peta", "pebi")
RESERVED_SUFFIXES = ("_count", "_sum", "_bucket")
RESERVED_LABELS = {"le": "histograms' bucket label", "quantile": "summaries' label",
                   "target": "dbperf adds it to every series"}
# families other parts of dbperf serve under these prefixes (their names vary)
RESERVED_PREFIXES = {"dbperf_": "dbperf's own metrics", "pg_settings_": "the settings collector's",
                     "pgbouncer_": "PgBouncer targets'", "host_": "the host metrics'",
                     "process_": "the process metrics'", "python_": "the process metrics'"}

# functions a read-only session still lets do harm, from the advisor's list (exporter.advisor.guard.DENIED),
# minus those that only read or sleep (the statement timeout bounds them)
ALLOWED_OF_DENIED = re.compile(r"pg_sleep.*|pg_ls_.*|pg_stat_file|pg_read_file.*|pg_read_binary_file.*"
                               r"|query_to_xml.*|cursor_to_xml.*|ts_stat|ts_rewrite")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: str
    help: str
    column: str | None     # None: constant value
    value: float
    labels: tuple          # label columns (a subset of the query's)
    scale: float = 1.0     # the column's value is multiplied by it


@dataclass(frozen=True)
class QuerySpec:
    sql: str               # as sent: marked (exporter.postgres.sqlmark); a user's wrapped in its row limit
    labels: tuple
    metrics: tuple
    min_version: int = 0
    max_version: int | None = None  # exclusive
    flavour: str | None = None      # only for this server flavour (ServerInfo.flavour: mysql, mariadb)

    def applies(self, version: int, flavour: str = "") -> bool:
        return (version >= self.min_version and (self.max_version is None or version < self.max_version)
                and (self.flavour is None or self.flavour == flavour))


@dataclass(frozen=True)
class CollectorSpec:
    """One collector of a collector file, checked."""

    name: str
    source: str            # the file it comes from
    queries: tuple         # QuerySpec
    scope: str = "cluster"
    help: str = ""
    enabled: bool = True
    ttl: float = 0.0
    timeout: float = 2.0
    role: str | None = None
    requires_extension: str | None = None
    optional: bool = True
    user: bool = False     # from a user's collector_files: max_rows, value checks, counter checks
    max_rows: int = DEFAULT_MAX_ROWS
    adds_datname: bool = False  # user, database scope: dbperf adds datname to metrics without one

    def metric_names(self) -> tuple[str, ...]:
        return tuple(sorted({m.name for q in self.queries for m in q.metrics}))


# -- naming ------------------------------------------------------------------------------------------
def metric_name_problem(name: str, mtype: str) -> str | None:
    """Why ``name`` breaks Prometheus's naming rules for a metric of ``mtype``, or None."""
    problem = _identifier_problem(name, METRIC_NAME_RE, " (no colons)")
    if problem:
        return problem
    if mtype == "counter" and not name.endswith("_total"):
        return "a counter's name must end in _total"
    if mtype != "counter" and name.endswith("_total"):
        return f"only a counter's name may end in _total (this is a {mtype})"
    suffix = next((s for s in RESERVED_SUFFIXES if name.endswith(s)), None)
    if suffix:
        return f"must not end in {suffix} (reserved for histograms and summaries)"
    words = name.split("_")
    for word in words:
        if word in TYPE_WORDS:
            return f"must not have the type word {word!r} in it"
        if word in ABBREVIATIONS:
            return f"must not have the abbreviated unit {word!r} in it (write seconds, bytes ...)"
        base = BASE_UNITS.get(word)
        if base is None:
            prefix = next((p for p in UNIT_PREFIXES if word.startswith(p) and word[len(p):] in BASE_UNITS), None)
            base = BASE_UNITS[word[len(prefix):]] if prefix else None
        if base is not None and base != word:
            return f"use the base unit {base!r}, not {word!r} (scale: converts the column)"
    return None


def _identifier_problem(text: str, pattern: re.Pattern, note: str = "") -> str | None:
    if len(text) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if not pattern.fullmatch(text):
        return f"must be snake_case: lower-case letters, digits and _, not starting with a digit{note}"
    if text.startswith("__"):
        return "must not start with __ (reserved for Prometheus)"
    return None


def label_name_problem(label: str) -> str | None:
    if not isinstance(label, str) or not label:
        return "must be a non-empty string"
    problem = _identifier_problem(label, LABEL_NAME_RE)
    if problem:
        return problem
    if label in RESERVED_LABELS:
        return f"is reserved ({RESERVED_LABELS[label]})"
    return None


def reserved_name(name: str, builtin: dict) -> str | None:
    """Why a user's metric may not be called ``name``: a built-in family's name (``builtin``:
    name -> collector), or under a prefix of dbperf's own."""
    if name in builtin:
        return f"duplicate metric name: the built-in collector {builtin[name]} serves {name}"
    for prefix, whose in RESERVED_PREFIXES.items():
        if name.startswith(prefix):
            return f"names starting with {prefix} are reserved ({whose})"
    return None


# -- SQL ---------------------------------------------------------------------------------------------
def read_only_query(sql: str) -> tuple[str | None, str]:
    """``(problem, statement)``: why ``sql`` is not exactly one read-only query (None when it is),
    and the statement's text without its ``;``. One SELECT, VALUES, TABLE or WITH ... SELECT;
    no data-modifying WITH, SELECT INTO, FOR UPDATE/SHARE, nor a call of a function that a
    read-only session still lets change something (settings, locks, other sessions ...)."""
    from pglast import ast

    from exporter.advisor.guard import denied
    from exporter.advisor.sqltree import walk
    from exporter.advisor.statements import Unparsable, _funcname, parse

    try:
        raws = parse(sql.replace("{table_limit}", "1000"))
    except Unparsable as exc:
        return f"SQL does not parse: {exc}", ""
    if len(raws) != 1:
        return f"must be exactly one statement, got {len(raws)}", ""
    raw = raws[0]
    statement = (sql[raw.stmt_location: raw.stmt_location + raw.stmt_len] if raw.stmt_len
                 else sql[raw.stmt_location:]).strip()
    if not isinstance(raw.stmt, ast.SelectStmt):
        kind = type(raw.stmt).__name__.removesuffix("Stmt")
        return f"must be a read-only query (SELECT, VALUES, TABLE or WITH ... SELECT), not {kind}", statement
    for node in walk(raw.stmt):
        if isinstance(node, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)) or type(node).__name__ == "MergeStmt":
            what = type(node).__name__.removesuffix("Stmt").upper()
            return f"must be a read-only query: it has a data-modifying WITH ({what})", statement
        if isinstance(node, ast.SelectStmt):
            if node.intoClause is not None:
                return "must be a read-only query: SELECT ... INTO creates a table", statement
            if node.lockingClause:
                return "must be a read-only query: FOR UPDATE/SHARE locks rows", statement
        if isinstance(node, ast.FuncCall):
            name = _funcname(node)
            why = denied(name)
            if why and not ALLOWED_OF_DENIED.fullmatch(name):
                return f"must be a read-only query: it calls {name}(), which a collector may not ({why})", statement
    return None, statement


def wrap(statement: str, max_rows: int) -> str:
    """The user's query with its row limit applied by the server: never more than ``max_rows``
    + 1 rows reach dbperf (one more tells that the result was cut)."""
    from exporter.postgres.sqlmark import mark

    return mark(f"SELECT * FROM (\n{statement}\n) AS dbperf_user_query LIMIT {max_rows + 1}")


# -- the schema walk ---------------------------------------------------------------------------------
def _flat(items) -> list:
    """A metrics list may hold an alias of another (``[*common, {...}]``): spliced in place."""
    out = []
    for item in items:
        out.extend(_flat(item) if isinstance(item, list) else [item])
    return out


def _list(reader: _Reader, key: str) -> list:
    value = reader.data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        reader.fail(key, f"must be a list, got {type(value).__name__}")
    return value


def _labels(reader: _Reader, key: str, default: tuple) -> tuple:
    if reader.data.get(key) is None:
        return default
    labels = _list(reader, key)
    for i, label in enumerate(labels):
        problem = label_name_problem(label)
        if problem:
            reader.fail(f"{key}[{i}]", f"label {show(label)} {problem}")
    if len(set(labels)) != len(labels):
        reader.fail(key, f"a label is listed twice: {show(', '.join(labels), 200)}")
    return tuple(labels)


def _version(reader: _Reader, key: str):
    value = reader.get(key, int, None, 0, MAX_VERSION_NUM)
    if value is not None and 0 < value < 10000:
        reader.fail(key, f"must be a server_version_num such as 140000 (PostgreSQL 14) or 90600 (9.6), got {value}")
    return value


def _number(reader: _Reader, key: str, default: float) -> float:
    value = reader.data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        reader.fail(key, f"must be a finite number, got {show(value)}")
    if abs(value) > 1e18:
        reader.fail(key, f"must be at most 1e18 in size, got {show(value)}")
    return float(value)


def _metric(reader: _Reader, query_labels: tuple) -> MetricSpec:
    reader.allow(*METRIC_KEYS)
    name = reader.get("name", str)
    if name is None:
        reader.fail("name", "is required")
    mtype = reader.get("type", str)
    if mtype not in METRIC_TYPES:
        reader.fail("type", f"must be {' or '.join(METRIC_TYPES)}, got {show(mtype)}")
    problem = metric_name_problem(name, mtype)
    if problem:
        reader.fail("name", f"{show(name)} {problem}")
    help_ = reader.get("help", str)
    if help_ is None:
        reader.fail("help", "is required (promtool: no help text)")
    column = reader.get("column", str)
    if column is not None and "value" in reader.data:
        reader.fail("value", "a metric has either column (a value per row) or value (a constant), not both")
    value = _number(reader, "value", 1.0)
    scale = _number(reader, "scale", 1.0)
    if "scale" in reader.data:
        if column is None:
            reader.fail("scale", "multiplies a column's value: it needs column")
        if scale == 0:
            reader.fail("scale", "must not be 0")
    labels = _labels(reader, "labels", query_labels)
    missing = [label for label in labels if label not in query_labels]
    if missing:
        reader.fail("labels", f"{show(', '.join(missing))} not among the query's labels ({', '.join(query_labels) or 'none'})")
    return MetricSpec(name=name, type=mtype, help=help_, column=column, value=value, labels=labels, scale=scale)


def _splice(sql: str, fragments: dict) -> str:
    """``{name}`` of a fragment (the file's ``fragments:``) replaced by its text."""
    for key, text in fragments.items():
        sql = sql.replace("{" + key + "}", text.strip())
    return sql


def _fragments(top: _Reader) -> dict:
    """The file's ``fragments:``: name -> SQL text shared by several queries (``{name}`` in SQL)."""
    fragments = top.sub("fragments")
    for key, text in fragments.data.items():
        if not isinstance(key, str) or not COLLECTOR_NAME_RE.fullmatch(key) or key == "table_limit":
            fragments.fail(str(key), "a fragment name is lower-case letters, digits and _ (and not table_limit)")
        if not isinstance(text, str) or not text.strip():
            fragments.fail(key, "must be SQL text")
    return dict(fragments.data)


def _query(reader: _Reader, user: bool, max_rows: int, adds_datname: bool, fragments: dict) -> QuerySpec:
    from exporter.postgres.sqlmark import mark

    reader.allow(*QUERY_KEYS)
    sql = reader.get("sql", str)
    if sql is None:
        reader.fail("sql", "is required")
    sql = _splice(sql, fragments)
    labels = _labels(reader, "labels", ())
    minimum, maximum = _version(reader, "min_version"), _version(reader, "max_version")
    flavour = reader.get("flavour", str)
    if flavour not in (None, *FLAVOURS):
        reader.fail("flavour", f"must be {' or '.join(FLAVOURS)} (omit it for every server), got {show(flavour)}")
    if minimum is not None and maximum is not None and minimum >= maximum:
        reader.fail("max_version", f"must be above min_version ({minimum}): the range is [min_version, max_version)")
    raw_metrics = _flat(_list(reader, "metrics"))
    if not raw_metrics:
        reader.fail("metrics", "must be a non-empty list of metrics")
    if user:
        problem, statement = read_only_query(sql)
        if problem:
            reader.fail("sql", problem)
        sql = wrap(statement, max_rows)
    else:
        sql = mark(sql)  # every statement dbperf sends carries its marker (exporter.postgres.sqlmark)
    if adds_datname and "datname" not in labels:
        labels += ("datname",)
    metrics, seen = [], set()
    for j, raw in enumerate(raw_metrics):
        sub = _Reader(reader.source, raw, reader.key(f"metrics[{j}]"))
        metric = _metric(sub, labels)
        if adds_datname and "datname" not in metric.labels:
            metric = MetricSpec(**{**metric.__dict__, "labels": metric.labels + ("datname",)})
        if metric.name in seen:
            sub.fail("name", f"duplicate metric name {metric.name} in this query")
        seen.add(metric.name)
        metrics.append(metric)
    return QuerySpec(sql=sql, labels=labels, metrics=tuple(metrics), min_version=minimum or 0, max_version=maximum,
                     flavour=flavour)


def _overlap(a: QuerySpec, b: QuerySpec) -> bool:
    if a.flavour is not None and b.flavour is not None and a.flavour != b.flavour:
        return False
    return a.min_version < (b.max_version or math.inf) and b.min_version < (a.max_version or math.inf)


def _collector(source: str, name, raw, user: bool, fragments: dict) -> CollectorSpec:
    reader = _Reader(source, raw, f"collectors.{name}")
    if not isinstance(name, str) or not COLLECTOR_NAME_RE.fullmatch(name):
        reader.fail("", f"collector name {show(name)} must be lower-case letters, digits and _ "
                    "(starting with a letter, at most 64)")
    reader.allow(*(USER_COLLECTOR_KEYS if user else COLLECTOR_KEYS))
    scope = reader.get("scope", str, "cluster")
    if scope not in ("cluster", "database"):
        reader.fail("scope", f"must be cluster or database, got {show(scope)}")
    role = reader.get("role", str)
    if role not in (None, "primary", "replica"):
        reader.fail("role", f"must be primary or replica (omit it for both), got {show(role)}")
    max_rows = reader.get("max_rows", int, DEFAULT_MAX_ROWS, *MAX_ROWS_RANGE)
    adds_datname = user and scope == "database"
    raw_queries = _list(reader, "queries")
    if not raw_queries:
        reader.fail("queries", "must be a non-empty list of queries")
    queries = []
    for i, raw_query in enumerate(raw_queries):
        sub = _Reader(source, raw_query, reader.key(f"queries[{i}]"))
        query = _query(sub, user, max_rows, adds_datname, fragments)
        for k, other in enumerate(queries):  # one family, one shape; and one query per version
            for metric in query.metrics:
                twin = next((m for m in other.metrics if m.name == metric.name), None)
                if twin is None:
                    continue
                if (twin.type, twin.help, twin.labels) != (metric.type, metric.help, metric.labels):
                    sub.fail("metrics", f"metric {metric.name}: type, help and labels must be those of "
                             f"queries[{k}]'s {metric.name}")
                if user and _overlap(query, other):
                    sub.fail("metrics", f"metric {metric.name} is in queries[{k}] too, and their version ranges "
                             "overlap (both would serve it)")
        queries.append(query)
    return CollectorSpec(
        name=name, source=source, queries=tuple(queries), scope=scope, help=reader.get("help", str, ""),
        enabled=reader.get("enabled", bool, True), ttl=reader.ranged("ttl", float, 0.0, "collectors.ttl"),
        timeout=reader.ranged("timeout", float, 2.0, "collectors.timeout"), role=role,
        requires_extension=reader.get("requires_extension", str), optional=reader.get("optional", bool, True),
        user=user, max_rows=max_rows, adds_datname=adds_datname)


def parse_collectors(data, source: str, user: bool = True) -> tuple[CollectorSpec, ...]:
    """The collectors of one collector file's document ``data``: checked, in file order; a metric
    name served by two of them is an error."""
    top = _Reader(source, data, "")
    top.allow("collectors", "fragments")
    fragments = _fragments(top)
    collectors = top.sub("collectors")
    if not collectors.data:
        top.fail("collectors", "must be a mapping of at least one collector")
    specs, owner = [], {}
    for name, raw in collectors.data.items():
        spec = _collector(source, name, raw, user, fragments)
        for metric in spec.metric_names():
            if owner.setdefault(metric, name) != name:
                raise ConfigError(source, f"collectors.{name}",
                                  f"duplicate metric name {metric}: collector {owner[metric]} serves it too")
        specs.append(spec)
    return tuple(specs)


# -- collector_files -----------------------------------------------------------------------------------
def _expand(config_source: str, reader: _Reader) -> list[Path]:
    """The files ``collector_files`` names: each entry a file or a directory (its ``*.yaml`` and
    ``*.yml`` files, sorted; dot files skipped), relative paths beside the config file."""
    entries = reader.data.get("collector_files")
    if entries is None:
        return []
    if not isinstance(entries, list):
        reader.fail("collector_files", f"must be a list of files or directories, got {type(entries).__name__}")
    files, seen = [], set()
    for i, entry in enumerate(entries):
        key = f"collector_files[{i}]"
        if not isinstance(entry, str) or not entry or "\x00" in entry:
            reader.fail(key, f"must be a path (a file or a directory), got {show(entry)}")
        path = Path(entry) if Path(entry).is_absolute() else Path(config_source).parent / entry
        try:
            is_dir = path.is_dir()
            exists = is_dir or path.exists()
        except OSError as exc:
            reader.fail(key, f"cannot read {path}: {exc.strerror or type(exc).__name__}")
        if not exists:
            reader.fail(key, f"cannot read {path}: no such file or directory")
        if is_dir:
            try:
                found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")
                               and not p.name.startswith(".") and not p.is_dir())
            except OSError as exc:
                reader.fail(key, f"cannot list the directory {path}: {exc.strerror or type(exc).__name__}")
        else:
            found = [path]
        for file in found:
            real = os.path.realpath(file)
            if real not in seen:  # a file listed twice (by name and by its directory) is read once
                seen.add(real)
                files.append(file)
        if len(files) > MAX_COLLECTOR_FILES:
            reader.fail(key, f"more than {MAX_COLLECTOR_FILES} collector files")
    return files


def load_collector_files(config_source: str, reader: _Reader, builtin_collectors: frozenset,
                         builtin_metrics: dict) -> tuple[CollectorSpec, ...]:
    """The collectors of the config's ``collector_files`` (``reader`` is the config's top level):
    a collector name or metric name may appear once, among the files and dbperf's own."""
    specs, collectors, metrics = [], {}, {}
    for path in _expand(config_source, reader):
        source = str(path)
        for spec in parse_collectors(read_yaml_file(path, what="collector file"), source, user=True):
            where = f"collectors.{spec.name}"
            if spec.name in builtin_collectors:
                raise ConfigError(source, where, f"duplicate collector name: {spec.name} is a built-in collector")
            if spec.name in collectors:
                raise ConfigError(source, where, f"duplicate collector name: {collectors[spec.name]} defines "
                                  f"{spec.name} too")
            collectors[spec.name] = source
            for name in spec.metric_names():
                problem = reserved_name(name, builtin_metrics)
                if problem is None and name in metrics:
                    problem = f"duplicate metric name: collector {metrics[name]} serves {name} too"
                if problem:
                    raise ConfigError(source, where, problem)
                metrics[name] = f"{spec.name} ({source})"
            specs.append(spec)
    return tuple(specs)
