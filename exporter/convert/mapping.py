"""One postgres_exporter namespace -> one dbperf collector (the catalog.yaml format), and the
report of what could not be converted (:class:`Report`); docs/migrating-from-postgres-exporter.md
has the table."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from exporter.configfile import ConfigError
from exporter.convert import names, sqlwrap, versions
from exporter.convert.queries import USAGES, Column, Namespace
from exporter.postgres.catalog_schema import parse_collectors, reserved_name

METRIC_USAGES = {"GAUGE": "gauge", "COUNTER": "counter", "DURATION": "duration", "MAPPEDMETRIC": "gauge"}
IGNORED_KEY = "not a postgres_exporter key: ignored (postgres_exporter ignores it too)"


def _query(low: int, high: int | None, sql: str, labels: list, metrics: list) -> dict:
    """One query of a collector file: its version range, SQL, labels and metrics."""
    query = {"min_version": low} if low else {}
    if high is not None:
        query["max_version"] = high
    query.update(sql=sql, labels=list(labels), metrics=[dict(m) for m in metrics])
    return query


@dataclass
class Line:
    key: str          # namespace, or namespace.column
    text: str
    omitted: bool     # True: something the file asks for is not in the converted file


@dataclass
class Report:
    lines: list[Line] = field(default_factory=list)

    def omit(self, key: str, text: str) -> None:
        self.lines.append(Line(key, text, True))

    def note(self, key: str, text: str) -> None:
        self.lines.append(Line(key, text, False))

    def drop_notes(self, since: int) -> None:
        """Forget the notes added since line ``since`` (of a namespace left out after all)."""
        self.lines[since:] = [line for line in self.lines[since:] if line.omitted]

    @property
    def omissions(self) -> int:
        return sum(line.omitted for line in self.lines)


@functools.cache
def builtin() -> tuple[frozenset, dict]:
    """dbperf's own collector names, and its metric names -> collector (what a collector file's
    names may not repeat)."""
    from exporter.registry import builtin_family_names, collector_names

    return collector_names(), builtin_family_names()


@dataclass
class Converter:
    """Converts namespaces one by one; names stay unique across the file and against dbperf's."""

    auto_discover: bool = True       # as postgres_exporter's --auto-discover-databases
    report: Report = field(default_factory=Report)
    collectors: dict = field(default_factory=dict)   # name -> collector spec
    metric_owner: dict = field(default_factory=dict)  # metric name -> "namespace.column"

    def convert(self, namespaces: list[Namespace]) -> dict:
        for ns in namespaces:
            start = len(self.report.lines)
            spec = self.namespace(ns)
            if spec is None:
                self.report.drop_notes(start)
            else:
                self.collectors[self._collector_name(ns.name)] = spec
        return self.collectors

    def _collector_name(self, namespace: str) -> str:
        base = name = names.collector_name(namespace)
        taken = builtin()[0] | set(self.collectors)
        if name in taken:
            name = f"{base}_queries"
            n = 2
            while name in taken:
                name, n = f"{base}_queries_{n}", n + 1
            self.report.note(namespace, f"collector named {name}: {base} is taken"
                             + (" by a built-in collector" if base in builtin()[0] else ""))
        elif name != namespace:
            self.report.note(namespace, f"collector named {name}")
        return name

    def namespace(self, ns: Namespace) -> dict | None:
        report, key = self.report, ns.name
        for unknown in ns.unknown:
            report.omit(f"{key}.{unknown}", IGNORED_KEY)
        for column in ns.repeated:
            report.note(f"{key}.{column}", "listed more than once: the last entry counts, as in postgres_exporter")
        sql = self._sql(ns)
        if sql is None:
            return None
        ranges = self._ranges(ns)
        if ranges is None:
            return None
        scope = "cluster" if ns.master or not self.auto_discover else "database"
        pending: dict[str, str] = {}
        outputs = sqlwrap.parse_select(sql)[1]
        kinds = dict(outputs or ())
        if outputs and len(kinds) < len(outputs):
            twice = sorted({name for name, _ in outputs if [n for n, _ in outputs].count(name) > 1})
            report.omit(key, f"the query returns two columns named {', '.join(twice)}: not converted")
            return None
        labels, metrics = self._columns(ns, None if outputs is None else list(kinds), kinds, pending)
        if labels is None:
            return None
        if not metrics:
            report.omit(key, "no metric left to serve: not converted")
            return None
        label_names = [label for _, label in labels]
        if scope == "database" and "datname" not in label_names:
            report.note(key, "dbperf adds the label datname (the database the query ran in), as to every "
                             "series of a database collector")
        items = [(sqlwrap.label_expr(col.name, kinds.get(col.name)), label) for col, label in labels]
        specs = []
        for col, metric, expr in metrics:
            alias = metric.name if metric.name not in label_names else metric.name + "_value"
            items.append((expr, alias))
            help_ = " ".join(col.description.split()) or f"{col.name} of the postgres_exporter query {key}."
            specs.append({"name": metric.name, "column": alias,
                          "type": "counter" if col.usage == "COUNTER" else "gauge", "help": help_})
        spec = {"help": f"postgres_exporter query {key} (converted by dbperf convert-queries)", "scope": scope}
        if ns.cache_seconds:
            spec["ttl"] = ns.cache_seconds
        spec["queries"] = [_query(low, high, sqlwrap.wrap(sql, items), label_names, specs) for low, high in ranges]
        try:  # the checks dbperf applies to a collector file (the SQL's read-only check among them)
            parse_collectors({"collectors": {names.collector_name(key): spec}}, key, user=True)
        except ConfigError as exc:
            report.omit(key, f"dbperf would refuse the collector: {exc.key}: {exc.reason}: not converted")
            return None
        self.metric_owner.update(pending)
        return spec

    def _sql(self, ns: Namespace) -> str | None:
        if not ns.query.strip():
            self.report.omit(ns.name, "no query: postgres_exporter runs nothing for it")
            return None
        try:
            statements = sqlwrap.statements(ns.query)
        except sqlwrap.SqlError as exc:
            self.report.omit(f"{ns.name}.query", f"the SQL cannot be read: {exc}: not converted")
            return None
        if len(statements) != 1:
            self.report.omit(f"{ns.name}.query", f"{len(statements)} statements: a dbperf query is one SELECT: "
                                                 "not converted")
            return None
        if sqlwrap.parse_select(statements[0])[0] is False:
            self.report.omit(f"{ns.name}.query", "not a SELECT (SHOW, EXPLAIN ...): dbperf reads the rows of a "
                                                 "SELECT around it: not converted (SHOW x is current_setting('x'))")
            return None
        return statements[0]

    def _ranges(self, ns: Namespace):
        if not ns.runonserver:
            return [(0, None)]
        key = f"{ns.name}.runonserver"
        try:
            ranges = versions.parse_range(ns.runonserver)
        except versions.RangeError as exc:
            self.report.omit(key, f"{ns.runonserver!r} is not a range postgres_exporter's semver library reads "
                                  f"({exc}; e.g. '>=13.0.0 <16.0.0'): not converted")
            return None
        if not ranges:
            self.report.omit(key, f"{ns.runonserver!r} matches no PostgreSQL version: not converted")
            return None
        if len(ranges) > 1:
            self.report.note(key, f"one query per version range: {versions.describe(ranges)}")
        return ranges

    def _columns(self, ns: Namespace, outputs: list[str] | None, kinds: dict, pending: dict):
        """``([(column, label name)], [(column, names.Name, SQL expression)])``; ``(None, None)``
        when the namespace cannot be converted."""
        report, key = self.report, ns.name
        labels, metrics, listed = [], [], set()
        for col in ns.columns:
            ckey = f"{key}.{col.name}"
            listed.add(col.name)
            for unknown in col.unknown:
                report.omit(f"{ckey}.{unknown}", IGNORED_KEY)
            if col.pg_version:
                report.omit(f"{ckey}.pg_version", "ignored: postgres_exporter ignores pg_version in a queries file "
                                                  "(runonserver gives a query's versions)")
            if col.usage == "HISTOGRAM":
                listed.update(f"{col.name}_{part}" for part in ("bucket", "sum", "count"))
                report.omit(ckey, f"HISTOGRAM: a dbperf collector file has no histogram type ({col.name}, "
                                  f"{col.name}_bucket, {col.name}_sum and {col.name}_count are left out)")
            elif col.usage not in USAGES:
                why = f"usage {col.usage!r} is none of {', '.join(USAGES)} (case matters)" if col.usage else "no usage"
                report.omit(ckey, f"{why}: postgres_exporter discards the column, so does dbperf")
            elif outputs is not None and col.usage != "DISCARD" and col.name not in outputs:
                if col.usage == "LABEL":
                    report.omit(ckey, "the query returns no such column (postgres_exporter filled the label with the "
                                      "first column's value): the namespace is not converted")
                    return None, None
                report.omit(ckey, "the query returns no such column: not converted")
            elif col.usage == "LABEL":
                try:
                    label, why = names.label_name(col.name)
                except names.NameProblem as exc:
                    report.omit(ckey, f"label {exc}: the namespace is not converted")
                    return None, None
                if label in [name for _, name in labels]:
                    report.omit(ckey, f"label {label} is already another column's: the namespace is not converted")
                    return None, None
                if why:
                    report.note(ckey, f"label {label}: {'; '.join(why)}")
                labels.append((col, label))
            elif col.usage in METRIC_USAGES:
                metric = self._metric(ns, col, kinds.get(col.name), pending)
                if metric is not None:
                    metrics.append(metric)
        for extra in outputs or ():
            if extra not in listed:
                report.omit(f"{key}.{extra}", f"the query returns it but metrics does not list it: postgres_exporter "
                                              f"served it as the untyped metric {key}_{extra} when it is a number "
                                              "(list it as GAUGE or COUNTER, or DISCARD)")
        return labels, metrics

    def _metric(self, ns: Namespace, col: Column, kind: str | None, pending: dict):
        ckey = f"{ns.name}.{col.name}"
        try:
            metric = names.metric_name(ns.name, col.name, METRIC_USAGES[col.usage])
        except names.NameProblem as exc:
            self.report.omit(ckey, f"{exc}: not converted")
            return None
        reserved = reserved_name(metric.name, builtin()[1])
        if reserved:
            self.report.omit(ckey, f"{reserved}: not converted (rename the namespace to keep your own)")
            return None
        other = self.metric_owner.get(metric.name) or pending.get(metric.name)
        if other:
            self.report.omit(ckey, f"{metric.name} is already {other}'s name: not converted")
            return None
        if col.usage == "MAPPEDMETRIC":
            if not col.mapping:
                self.report.omit(ckey, "MAPPEDMETRIC without metric_mapping: no text maps to a number: not converted")
                return None
            expr = sqlwrap.mapped_expr(col.name, col.mapping, metric.factor)
            self.report.note(ckey, "metric_mapping applied in the SQL (postgres_exporter ignores the mapping of a "
                                   "queries file's column and served no sample)")
        elif col.usage == "DURATION":
            expr = sqlwrap.duration_expr(col.name)
        else:
            expr = sqlwrap.value_expr(col.name, kind, metric.factor)
        pending[metric.name] = ckey
        if metric.reasons:
            self.report.note(ckey, f"served as {metric.name}: {'; '.join(metric.reasons)}")
        return col, metric, expr
