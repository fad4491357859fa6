"""The per-relation collectors (``tables``, ``table_sizes``, ``indexes`` of catalog.yaml) under
the target's series budget (:mod:`exporter.postgres.budget`): their SQL runs as any catalog
collector's; the rows of the tables the budget does not keep are then folded, per database, into
one ``other`` row per query.

The ``other`` rows
    Labels ``{datname, schemaname="", relname="other"}`` (and ``indexrelname="other"`` for
    indexes): PostgreSQL has no schema with an empty name, so they never collide with a table (as
    statements' remainder is ``user="", queryid="other"``). Every counter is the sum over the folded
    tables (indexes), and so are the gauges that are amounts (live, dead and modified rows, sizes),
    so that a database's sum over its series still equals its total over the tables read
    (``table_limit`` of them). Timestamps (``*_timestamp_seconds``: the last vacuum and analyze)
    are not summable and are left out of ``other``. When a table joins the kept set, its value
    leaves ``other``, which then goes down (``rate()`` sees a counter reset, as for statements):
    use the per-table series for rates across membership changes.

``dbperf_series_folded{collector, datname}``
    Series of the folded tables and indexes that the collector's last result for that database does
    not serve on their own (0 when everything fits); the ``other`` rows come on top.
"""

from __future__ import annotations

from operator import itemgetter

from exporter.collector import Context
from exporter.metrics import Family
from exporter.postgres.budget import Read, SeriesBudget
from exporter.postgres.catalog import CatalogCollector

OTHER = "other"
FOLDED = "dbperf_series_folded"
FOLDED_HELP = ("Series of tables and indexes that the collector's last result for the database does not serve on "
               "their own because of the target's max_series: their values are summed into the database's other "
               "rows (schemaname=\"\", relname=\"other\"); 0 when everything fits.")

# columns of a table's activity (the budget's rank) and size (its tie-break), as the queries name them
ACTIVITY = ("seq_scan", "idx_scan", "n_tup_ins", "n_tup_upd", "n_tup_del")
SIZE = ("n_live_tup", "n_dead_tup", "table_size", "index_size")


def summable(metric) -> bool:
    """Whether ``other`` sums the metric: counters and amounts, not timestamps."""
    return metric.column is not None and not metric.name.endswith("_timestamp_seconds")


def fold(query, columns: list, rows: list, kept: frozenset, datname: str) -> tuple[list, int]:
    """``(rows, folded)``: the rows of the tables in ``kept``, then one ``other`` row summing the
    others' values (when there are any); ``folded`` counts the values (series) that left."""
    index = {c: i for i, c in enumerate(columns)}
    key = itemgetter(index["schemaname"], index["relname"])
    keep = [row for row in rows if key(row) in kept]
    if len(keep) == len(rows):
        return keep, 0
    out = list(zip(*(row for row in rows if key(row) not in kept)))  # the folded rows, column by column
    other = [None] * len(columns)
    for label, value in (("datname", datname), ("schemaname", ""), ("relname", OTHER), ("indexrelname", OTHER)):
        if label in index:
            other[index[label]] = value
    folded = 0
    for metric in query.metrics:
        if metric.column is None:
            continue
        i = index[metric.column]
        values = out[i]
        present = len(values) - values.count(None)
        folded += present
        if present and summable(metric):
            other[i] = sum(filter(None, values))  # NULL (and 0) left out
    keep.append(tuple(other))
    return keep, folded


class RelationCollector(CatalogCollector):
    """A catalog collector of per-relation rows that folds what the target's budget does not keep."""

    def __init__(self, spec, budget: SeriesBudget):
        super().__init__(spec)
        self.families = tuple(sorted(self.families + (FOLDED,)))
        self.budget = budget
        budget.register(self)

    def series_per_relation(self, version: int) -> tuple[int, int]:
        """``(per table, per index)``: the series one table and one of its indexes cost here."""
        table = index = 0
        for query in self.plan(version):
            if "indexrelname" in query.labels:
                index += len(query.metrics)
            else:
                table += len(query.metrics)
        return table, index

    def read(self, queries, results, ranks: bool) -> Read:
        """What the budget needs of this collector's result: its tables and, when it reads
        indexes, their number per table; with ``ranks`` (it is the ranking collector), each
        table's activity and size as well (else 0)."""
        tables, indexes, scans = None, None, None
        for query, (columns, rows) in zip(queries, results):
            index = {c: i for i, c in enumerate(columns)}
            keys = list(map(itemgetter(index["schemaname"], index["relname"]), rows))
            if "indexrelname" in index:
                indexes = {} if indexes is None else indexes
                for table in keys:
                    indexes[table] = indexes.get(table, 0) + 1
                if ranks and "idx_scan" in index:
                    i, scans = index["idx_scan"], {}
                    for table, row in zip(keys, rows):
                        scans[table] = scans.get(table, 0) + (row[i] or 0)
            elif tables is None:  # the first table-level query names the tables (PostgreSQL 18's second, the same)
                if ranks:
                    tables = dict(zip(keys, zip(_sums(rows, [index[c] for c in ACTIVITY if c in index]),
                                                _sums(rows, [index[c] for c in SIZE if c in index]))))
                else:
                    tables = dict.fromkeys(keys, (0, 0))
        if tables is None:  # the indexes collector: its tables, ranked by their index scans
            tables = {table: ((scans or {}).get(table, 0), 0) for table in indexes or {}}
        return Read(tables, indexes)

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        queries = self.plan(ctx.server.version)
        results = conn.query(self.sql(ctx), timeout)
        ranks = self.budget.ranking(ctx.options) == self.name
        kept = self.budget.choose(self.name, ctx, self.read(queries, results, ranks))
        folded = 0
        if kept is not None:
            out = []
            for query, (columns, rows) in zip(queries, results):
                rows, n = fold(query, columns, rows, kept, ctx.datname)
                out.append((columns, rows))
                folded += n
            results = out
        families = self.to_families(queries, results)
        families.append(Family(FOLDED, "gauge", FOLDED_HELP, ("collector", "datname"),
                               samples=[("", (self.name, ctx.datname), folded)]))
        self.budget.served(self.name, ctx.datname, samples(families))
        return families


def _sums(rows: list, columns: list[int]) -> list:
    """Per row, the sum of its values in ``columns`` (NULL as 0)."""
    if not columns:
        return [0] * len(rows)
    return list(map(sum, zip(*([row[i] or 0 for row in rows] for i in columns))))


def samples(families: list[Family]) -> int:
    """The samples ``families`` render to (a None value renders none)."""
    n = 0
    for family in families:
        n += len(family.samples)
        for _, values in family.columns:
            n += len(values) - values.count(None)
    return n
