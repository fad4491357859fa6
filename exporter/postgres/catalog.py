"""Collectors made of SQL as data: ``catalog.yaml`` (dbperf's own) and a user's collector files
(``collector_files:`` in the config), planned by server version and role.

:mod:`exporter.postgres.catalog_schema` checks a file into immutable specs; :func:`from_spec`
makes the collector of one spec. A user's collector (:class:`UserCollector`) runs the same way
as a built-in one, and is checked at run time as well: the columns its metrics name must be in
its result, values must be numbers, a result is cut at ``max_rows`` (by the server) and reported
(``dbperf_collector_rows_truncated``), and a counter that goes down is logged once per series."""

from __future__ import annotations

import datetime
import functools
import logging
from decimal import Decimal
from pathlib import Path

from exporter.collector import DATABASE, Collector, Context
from exporter.configfile import ConfigError, read_yaml_file
from exporter.log import RateLimiter
from exporter.metrics import Family, pairs_formatter
from exporter.postgres.catalog_schema import CollectorSpec, MetricSpec, QuerySpec, parse_collectors

__all__ = ["CATALOG", "CatalogCollector", "CatalogError", "MetricSpec", "QuerySpec", "UserCollector",
           "builtin_specs", "from_spec", "load"]

CATALOG = Path(__file__).with_name("catalog.yaml")
LOG = logging.getLogger("dbperf.catalog")

CatalogError = ConfigError  # a mistake in a collector file: one line naming the file, key path and reason

TRUNCATED = "dbperf_collector_rows_truncated"
TRUNCATED_HELP = ("1 when the user collector's last result had more rows than its max_rows and was cut "
                  "to max_rows (the rest is not served); 0 otherwise.")


class CatalogCollector(Collector):
    """One catalog entry: its applicable queries run in one round trip."""

    def __init__(self, spec: CollectorSpec):
        queries = spec.queries
        super().__init__(
            name=spec.name, scope=spec.scope, help=spec.help, enabled_by_default=spec.enabled,
            default_ttl=spec.ttl, default_timeout=spec.timeout, role=spec.role,
            requires_extension=spec.requires_extension, optional=spec.optional,
            min_version=min(q.min_version for q in queries),
            families=spec.metric_names(),
        )
        self.spec = spec
        self.queries = queries

    def plan(self, version: int, flavour: str = "") -> list[QuerySpec]:
        return [q for q in self.queries if q.applies(version, flavour)]

    def families_for(self, version: int) -> tuple[str, ...]:
        """The families this collector's SQL for ``version`` reads (each served when PostgreSQL
        has the data: a NULL gives no sample)."""
        return tuple(sorted({m.name for q in self.plan(version) for m in q.metrics}))

    def applies(self, server) -> str | None:
        reason = super().applies(server)
        if reason is None and not self.plan(server.version, server.flavour):
            return "no query for this PostgreSQL version"
        return reason

    def sql(self, ctx: Context) -> str:
        limit = ctx.options.table_limit
        return ";\n".join(q.sql.replace("{table_limit}", str(limit))
                          for q in self.plan(ctx.server.version, ctx.server.flavour))

    def documented(self) -> list[tuple[str, str, tuple, str]]:
        seen, out = set(), []
        for query in self.queries:
            for metric in query.metrics:
                if metric.name not in seen:
                    seen.add(metric.name)
                    out.append((metric.name, metric.type, metric.labels, metric.help))
        return out

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        queries = self.plan(ctx.server.version, ctx.server.flavour)
        results = conn.query(self.sql(ctx), timeout)
        return self.to_families(queries, results)

    @staticmethod
    def to_families(queries, results) -> list[Family]:
        out: dict[str, Family] = {}
        for query, (columns, rows) in zip(queries, results):
            index = {c: i for i, c in enumerate(columns)}
            label_strings: dict[tuple, list[str]] = {}  # label set -> rendered pairs per row
            for metric in query.metrics:
                family = out.get(metric.name)
                if family is None:
                    family = out[metric.name] = Family(metric.name, metric.type, metric.help, metric.labels)
                pairs = label_strings.get(metric.labels)
                if pairs is None:
                    idx = [index[c] for c in metric.labels]
                    render = pairs_formatter(metric.labels)
                    pairs = label_strings[metric.labels] = [render([row[i] for i in idx]) for row in rows]
                if metric.column is None:
                    family.columns.append((pairs, [metric.value] * len(pairs)))
                elif metric.scale != 1.0:
                    vi, scale = index[metric.column], metric.scale
                    family.columns.append((pairs, [None if row[vi] is None else _scaled(row[vi], scale)
                                                   for row in rows]))
                else:
                    vi = index[metric.column]
                    family.columns.append((pairs, [row[vi] for row in rows]))
        return list(out.values())


def _scaled(value, scale: float) -> float:
    """``value * scale`` to 15 significant digits: 1520 cents * 0.01 is 15.2, not
    15.200000000000001 (the product's binary error is below that; the rounding is monotonic, so
    a counter never goes down by it)."""
    return float(f"{float(value) * scale:.15g}")


class CollectorFailure(RuntimeError):
    """A user collector's result does not fit its file (a missing column, a value that is not a
    number, two rows with the same labels): the collector fails with this one line."""


def _number(value, column: str):
    """A result value as a sample value: None (no sample), int, float or Decimal."""
    kind = type(value)
    if kind is int or kind is float or kind is Decimal or value is None:
        return value
    if kind is bool:
        return int(value)
    if kind is str:
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, (datetime.datetime, datetime.date)):
        raise CollectorFailure(f"column {column} holds timestamps, not numbers: select "
                               f"extract(epoch FROM {column}) for a _timestamp_seconds metric")
    if isinstance(value, datetime.timedelta):
        raise CollectorFailure(f"column {column} holds intervals, not numbers: select "
                               f"extract(epoch FROM {column}) for a _seconds metric")
    text = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    raise CollectorFailure(f"column {column} holds {type(value).__name__} values, not numbers (got {text})")


class UserCollector(CatalogCollector):
    """A collector of a user's collector file. Each query reaches the server as ``SELECT * FROM
    (<sql>) LIMIT max_rows + 1`` (catalog_schema.wrap): memory is bounded by the server."""

    def __init__(self, spec: CollectorSpec):
        super().__init__(spec)
        self.families = tuple(sorted(self.families + (TRUNCATED,)))
        # (target, datname, metric) -> {rendered labels: last value} of the counters, the last run's only
        self._counters: dict[tuple, dict[str, float]] = {}
        self._went_down: dict[tuple, set[str]] = {}  # series already reported (of the last run's)
        self._log_limit = RateLimiter(60.0)

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        queries = self.plan(ctx.server.version, ctx.server.flavour)
        results = conn.query(self.sql(ctx), timeout)
        cut = False
        checked = []
        for n, (query, (columns, rows)) in enumerate(zip(queries, results)):
            where = f"{self.spec.source}: collectors.{self.name}.queries[{self.queries.index(query)}]"
            if len(rows) > self.spec.max_rows:
                rows, cut = rows[: self.spec.max_rows], True
            checked.append(self._checked(query, columns, rows, ctx, where))
        families = self.to_families(queries, checked)
        self._check_unique(families)
        self._check_counters(families, ctx)
        key = (ctx.target, ctx.datname)
        if cut:
            if self._log_limit.allow(key):
                LOG.warning("target=%s collector=%s%s: the result has more than max_rows=%d rows; cut to %d "
                            "(dbperf_collector_rows_truncated 1; repeats are logged at most once a minute)",
                            ctx.target, self.name, f" database={ctx.datname}" if self.scope == DATABASE else "",
                            self.spec.max_rows, self.spec.max_rows,
                            extra={"target": ctx.target, "collector": self.name})
        else:
            self._log_limit.forget(key)
        truncated = Family(TRUNCATED, "gauge", TRUNCATED_HELP, ("collector", "datname"))
        truncated.add((self.name, ctx.datname if self.scope == DATABASE else ""), 1 if cut else 0)
        return families + [truncated]

    def _checked(self, query: QuerySpec, columns: list, rows: list, ctx: Context, where: str):
        """``(columns, rows)`` with the values as numbers and labels as text, datname added when
        dbperf adds it; :class:`CollectorFailure` naming what does not fit."""
        if self.spec.adds_datname and "datname" not in columns:
            columns = [*columns, "datname"]
            rows = [(*row, ctx.datname) for row in rows]
        index = {c: i for i, c in enumerate(columns)}
        for metric in query.metrics:
            for column, what in [(c, "a label") for c in metric.labels] + [(metric.column, "the value")]:
                if column is not None and column not in index:
                    raise CollectorFailure(
                        f"{where}: column {column} ({what} of {metric.name}) is not in the query's result "
                        f"(its columns: {', '.join(columns) or 'none'})")
        labels = [index[c] for c in query.labels]
        values = sorted({index[m.column] for m in query.metrics if m.column is not None})
        out = []
        for row in rows:
            row = list(row)
            for i in labels:
                value = row[i]
                row[i] = "" if value is None else value if type(value) is str else str(value)
            for i in values:
                row[i] = _number(row[i], columns[i])
            out.append(row)
        return columns, out

    def _check_unique(self, families: list[Family]) -> None:
        for family in families:
            for pairs, _ in family.columns:
                if len(set(pairs)) != len(pairs):
                    seen = set()
                    twin = next(p for p in pairs if p in seen or seen.add(p))
                    raise CollectorFailure(
                        f"{self.spec.source}: collectors.{self.name}: {family.name}: two rows have the same labels "
                        f"{{{twin[1:]}}}: add a label column that tells them apart, or aggregate")

    def _check_counters(self, families: list[Family], ctx: Context) -> None:
        """Log, once per series, a counter whose value went down since the last run."""
        for family in families:
            if family.type != "counter":
                continue
            key = (ctx.target, ctx.datname, family.name)
            before = self._counters.get(key, {})
            reported = self._went_down.get(key, set())
            now: dict[str, float] = {}
            for pairs, values in family.columns:
                for labels, value in zip(pairs, values):
                    if value is None:
                        continue
                    value = float(value)
                    now[labels] = value
                    last = before.get(labels)
                    if last is not None and value < last and labels not in reported:
                        reported.add(labels)
                        LOG.warning("target=%s collector=%s metric=%s series {%s} went down from %s to %s: a "
                                    "counter must never decrease (make it a gauge, or fix the SQL); reported "
                                    "once per series", ctx.target, self.name, family.name, labels[1:], last,
                                    value, extra={"target": ctx.target, "collector": self.name})
            self._counters[key] = now
            self._went_down[key] = reported & now.keys()


def from_spec(spec: CollectorSpec) -> CatalogCollector:
    """The collector of ``spec``: a :class:`UserCollector` for a user's file, else a
    :class:`CatalogCollector`. A new object each time (a user collector keeps its counters' last
    values: one per exporter, or per target)."""
    return UserCollector(spec) if spec.user else CatalogCollector(spec)


@functools.cache
def builtin_specs() -> tuple[CollectorSpec, ...]:
    """The collectors of ``catalog.yaml``, checked with the schema users' files follow."""
    return parse_collectors(read_yaml_file(CATALOG, what="collector catalog"), str(CATALOG), user=False)


@functools.cache
def load() -> tuple[CatalogCollector, ...]:
    return tuple(from_spec(spec) for spec in builtin_specs())
