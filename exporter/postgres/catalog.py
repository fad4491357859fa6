"""Loads ``catalog.yaml`` into collectors: SQL as data, planned by server version and role."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from exporter.collector import Collector, Context
from exporter.metrics import TYPES, Family, pairs_formatter
from exporter.postgres.sqlmark import mark

CATALOG = Path(__file__).with_name("catalog.yaml")


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: str
    help: str
    column: str | None     # None: constant value
    value: float
    labels: tuple          # label columns (a subset of the query's)


@dataclass(frozen=True)
class QuerySpec:
    sql: str
    labels: tuple
    metrics: tuple
    min_version: int = 0
    max_version: int | None = None

    def applies(self, version: int) -> bool:
        return version >= self.min_version and (self.max_version is None or version < self.max_version)


class CatalogCollector(Collector):
    """One catalog entry: its applicable queries run in one round trip."""

    def __init__(self, name: str, spec: dict, queries: tuple):
        super().__init__(
            name=name, scope=spec.get("scope", "cluster"), help=spec.get("help", ""),
            enabled_by_default=spec.get("enabled", True), default_ttl=float(spec.get("ttl", 0)),
            default_timeout=float(spec.get("timeout", 2)), role=spec.get("role"),
            requires_extension=spec.get("requires_extension"),
            optional=spec.get("optional", True),
            min_version=min(q.min_version for q in queries),
            families=tuple(sorted({m.name for q in queries for m in q.metrics})),
        )
        self.queries = queries

    def plan(self, version: int) -> list[QuerySpec]:
        return [q for q in self.queries if q.applies(version)]

    def families_for(self, version: int) -> tuple[str, ...]:
        """The families this collector's SQL for ``version`` reads (each served when PostgreSQL
        has the data: a NULL gives no sample)."""
        return tuple(sorted({m.name for q in self.plan(version) for m in q.metrics}))

    def applies(self, server) -> str | None:
        reason = super().applies(server)
        if reason is None and not self.plan(server.version):
            return "no query for this PostgreSQL version"
        return reason

    def sql(self, ctx: Context) -> str:
        limit = int(getattr(ctx.options, "table_limit", 1000) or 1000)
        return ";\n".join(q.sql.replace("{table_limit}", str(limit)) for q in self.plan(ctx.server.version))

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        queries = self.plan(ctx.server.version)
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
                else:
                    vi = index[metric.column]
                    family.columns.append((pairs, [row[vi] for row in rows]))
        return list(out.values())


def _flat(items) -> list:
    """A metrics list may hold an alias of another (``[*common, {...}]``): spliced in place."""
    out = []
    for item in items:
        out.extend(_flat(item) if isinstance(item, list) else [item])
    return out


def _splice(sql: str, fragments: dict) -> str:
    """``{name}`` of a fragment (the catalog's ``fragments:``) replaced by its text."""
    for key, text in fragments.items():
        sql = sql.replace("{" + key + "}", text.strip())
    return sql


def _query(name: str, i: int, raw: dict, fragments: dict | None = None) -> QuerySpec:
    where = f"{CATALOG.name}: collectors.{name}.queries[{i}]"
    labels = tuple(raw.get("labels", ()))
    metrics = []
    for j, m in enumerate(_flat(raw.get("metrics", ()))):
        if m.get("type") not in TYPES:
            raise CatalogError(f"{where}.metrics[{j}]: bad type {m.get('type')!r}")
        mlabels = tuple(m.get("labels", labels))
        if not set(mlabels) <= set(labels):
            raise CatalogError(f"{where}.metrics[{j}]: labels {mlabels} not among the query's {labels}")
        metrics.append(MetricSpec(name=m["name"], type=m["type"], help=m["help"], column=m.get("column"),
                                  value=float(m.get("value", 1)), labels=mlabels))
    # every statement dbperf sends carries its marker (exporter.postgres.sqlmark), set here once
    return QuerySpec(sql=mark(_splice(raw["sql"], fragments or {})), labels=labels, metrics=tuple(metrics),
                     min_version=int(raw.get("min_version", 0)), max_version=raw.get("max_version"))


@functools.cache
def load() -> tuple[CatalogCollector, ...]:
    data = yaml.safe_load(CATALOG.read_text())
    fragments = data.get("fragments") or {}
    out = []
    for name, spec in data["collectors"].items():
        queries = tuple(_query(name, i, q, fragments) for i, q in enumerate(spec["queries"]))
        out.append(CatalogCollector(name, spec, queries))
    return tuple(out)
