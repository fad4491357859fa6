"""The series budget's decisions without a server (exporter.postgres.budget, the folding of
exporter.postgres.relations): reads of the per-relation collectors are given as the rows they
would bring, on a clock the test moves. The same on a real server: tests/test_relations.py."""

from __future__ import annotations

import random

import pytest

from exporter.collector import Context, ServerInfo
from exporter.config import parse
from exporter.postgres.budget import RELATION_COLLECTORS, STICKY, Read, SeriesBudget, rank_key
from exporter.postgres.catalog import builtin_specs
from exporter.postgres.relations import RelationCollector, fold
from exporter.target import Target

pytestmark = pytest.mark.fast

VERSION = 160000
TABLES = 23 + 2  # a table's series in tables and table_sizes (PostgreSQL 16)
INDEX = 1 + 3    # an index's in table_sizes and indexes
OTHER = TABLES + INDEX  # one database's other rows


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Server:
    """Databases of tables, each table with one index and a cumulative activity the test raises;
    ``scrape`` runs the three collectors' reads of every database as the engine would."""

    def __init__(self, max_series: int, databases: dict[str, int], others: int = 1000):
        self.clock = Clock()
        self.budget = SeriesBudget(clock=self.clock)
        for spec in builtin_specs():
            if spec.name in RELATION_COLLECTORS:
                RelationCollector(spec, self.budget)
        self.activity = {d: {("public", f"t{i}"): 0 for i in range(n)} for d, n in databases.items()}
        self.size = {d: {t: 100 + i for i, t in enumerate(tables)} for d, tables in self.activity.items()}
        self.target = Target(name="t", dsn="", max_series=max_series)
        self.others = others
        self.served: dict = {}
        self.kept: dict = {}

    def server(self) -> ServerInfo:
        names = list(self.activity)
        return ServerInfo(version=VERSION, in_recovery=False, databases=tuple(names), dbname=names[0])

    def read(self, datname: str, collector: str) -> Read:
        tables = self.activity[datname]
        if collector == "tables":
            return Read({t: (a, self.size[datname][t]) for t, a in tables.items()})
        return Read(dict.fromkeys(tables, (0, 0)), dict.fromkeys(tables, 1))

    def series(self, collector: str, datname: str, kept) -> int:
        """What the collector's result would serve: its kept tables, the other rows, dbperf_series_folded."""
        n = len(self.activity[datname])
        shown = n if kept is None else len([t for t in self.activity[datname] if t in kept])
        per = {"tables": (23, 0), "table_sizes": (2, 1), "indexes": (0, 3)}[collector]
        rows = shown + (1 if shown < n else 0)
        return rows * (per[0] + per[1]) + 1

    def scrape(self, databases=None, advance: float = 30.0) -> int:
        """Read ``databases`` (default all), then return the target's series."""
        self.clock.now += advance
        server = self.server()
        for datname in databases or list(self.activity):
            ctx = Context("t", datname, server, self.target, self.served)
            for collector in RELATION_COLLECTORS:
                kept = self.budget.choose(collector, ctx, self.read(datname, collector))
                self.budget.served(collector, datname, self.series(collector, datname, kept))
                if collector == "tables":
                    self.kept[datname] = kept
        relations = sum(n for db in self.budget.dbs.values() for n in db.rendered.values())
        self.served = {"": self.others, **{c: 0 for c in RELATION_COLLECTORS}}
        return self.others + relations

    def shown(self, datname: str) -> set:
        kept = self.kept[datname]
        return set(self.activity[datname]) if kept is None else set(kept)

    def busy(self, datname: str, table: str, amount: int) -> None:
        self.activity[datname][("public", table)] += amount


def test_everything_that_fits_is_kept():
    server = Server(50_000, {"a": 30, "b": 30, "c": 30})
    for _ in range(3):
        server.scrape()
        assert all(kept is None for kept in server.kept.values())
    assert not server.budget.cutting


def test_busiest_tables_across_databases_are_kept_and_the_total_stays_within_max_series():
    # room for about 20 tables of the 150, after the other collectors' 1000 series
    server = Server(1000 + 3 * 3 + 3 * OTHER + 20 * (TABLES + INDEX), {"a": 50, "b": 50, "c": 50})
    busy = [("b", "t3"), ("b", "t40"), ("c", "t7"), ("a", "t0")]
    for n in range(4):
        for datname, table in busy:
            server.busy(datname, table, 1000 * (n + 1))
        total = server.scrape()
        if n:  # the first scrape set half aside for the other collectors, before they were counted
            assert total <= server.target.max_series
    for datname, table in busy:
        assert ("public", table) in server.shown(datname), (datname, table)
    kept = sum(len(server.shown(d)) for d in "abc")
    assert 15 <= kept <= 20
    assert server.budget.cutting


def test_a_database_without_rates_gets_a_fair_share_until_it_has_them():
    server = Server(1000 + 3 * 3 + 3 * OTHER + 30 * (TABLES + INDEX), {"a": 100, "b": 100, "c": 100})
    server.scrape()  # the other collectors are not counted yet: no table is kept on a guess
    assert [len(server.shown(d)) for d in "abc"] == [0, 0, 0]
    server.scrape()  # the first read of each: no rates anywhere, each keeps its own busiest in a third
    first = [len(server.shown(d)) for d in "abc"]
    assert first[0] > 0 and first == [first[0]] * 3
    busy = {("public", f"t{i}") for i in range(20)}

    def work():
        server.busy("a", "t50", 10)
        for i in range(20):
            server.busy("c", f"t{i}", 1000)

    for _ in range(3):
        work()
        server.scrape()
    # the busiest filling half of the room are in at once (ties of rate go to the larger); the
    # tables kept before hold the rest of the room until STICKY has passed
    assert {("public", f"t{i}") for i in range(5, 20)} <= server.shown("c")
    server.clock.now += STICKY
    for _ in range(2):
        work()
        server.scrape()
    assert busy <= server.shown("c")
    assert ("public", "t50") in server.shown("a")
    assert len(server.shown("c")) > len(server.shown("b"))


def test_membership_is_sticky_and_ends_after_the_sticky_time():
    # room for 10 tables; 5 of them are always kept (the busiest half), members hold the rest
    server = Server(1000 + 2 * 3 + 2 * OTHER + 10 * (TABLES + INDEX), {"a": 40, "b": 40})
    for _ in range(4):  # a grows into what b held only on its read after b shrank: the fourth
        for i in range(10):
            server.busy("a", f"t{i}", 100 + i)
        server.scrape()
    first = server.shown("a") | server.shown("b")
    assert {("public", f"t{i}") for i in range(10)} <= first
    # t0..t4 go idle; five new tables become busy, just less than t5..t9
    for _ in range(5):
        for i in range(5, 10):
            server.busy("a", f"t{i}", 100 + i)
        for i in range(20, 25):
            server.busy("a", f"t{i}", 50)
        server.scrape(advance=60)
        assert {("public", f"t{i}") for i in range(10)} <= server.shown("a")  # held: no flapping
    server.clock.now += STICKY
    for _ in range(2):
        for i in range(5, 10):
            server.busy("a", f"t{i}", 100 + i)
        for i in range(20, 25):
            server.busy("a", f"t{i}", 50)
        server.scrape()
    shown = server.shown("a")
    assert {("public", f"t{i}") for i in range(20, 25)} <= shown
    assert not {("public", f"t{i}") for i in range(5)} & shown


def test_the_total_stays_within_max_series_whatever_the_order_of_the_reads():
    rng = random.Random(16)
    server = Server(1000 + 4 * 3 + 4 * OTHER + 40 * (TABLES + INDEX), {d: 60 for d in "abcd"})
    server.scrape()
    for _ in range(40):
        for d in "abcd":
            for i in rng.sample(range(60), 10):
                server.busy(d, f"t{i}", rng.randrange(1, 5000))
        # refreshes spread over scrapes: a random half of the databases is read each time
        total = server.scrape(databases=rng.sample("abcd", 2), advance=15)
        assert total <= server.target.max_series
        # the other collectors' series move a little, downwards only (a growth shows in the next
        # refresh of the relations)
        server.others = rng.randrange(950, server.others + 1)


def test_before_the_other_collectors_are_counted_no_table_is_kept_on_a_guess():
    # nothing counted yet: half of max_series is set aside for the others; a database whose tables
    # fit in its share of the rest keeps them all, one whose tables do not keeps none on its own
    server = Server(10_000, {"a": 400, "small": 10})
    server.scrape()
    assert server.kept["a"] == frozenset() and server.kept["small"] is None
    server.scrape()
    assert len(server.shown("a")) * (TABLES + INDEX) > 8_000 - 2 * OTHER - 1000 - 10 * (TABLES + INDEX)


def test_a_dropped_database_is_forgotten():
    server = Server(50_000, {"a": 5, "gone": 5})
    server.scrape()
    assert "gone" in server.budget.dbs
    del server.activity["gone"]
    server.scrape()
    assert "gone" not in server.budget.dbs


def test_rank_key_orders_by_rate_then_size_and_first_reads_last():
    busy = rank_key(500, 10, before=100, elapsed=10)         # 40 per second
    idle_big = rank_key(100, 1000, before=100, elapsed=10)
    idle_small = rank_key(100, 10, before=100, elapsed=10)
    reset = rank_key(50, 10, before=10_000, elapsed=10)      # went down: 50 since the reset
    new = rank_key(10 ** 9, 10 ** 9, before=None, elapsed=10)
    assert sorted([new, idle_small, reset, idle_big, busy]) == [busy, reset, idle_big, idle_small, new]


def tables_query():
    spec = next(s for s in builtin_specs() if s.name == "tables")
    return spec.queries[0]


def test_fold_sums_counters_and_amounts_and_leaves_timestamps_out():
    query = tables_query()
    columns = ["datname", "schemaname", "relname", *(m.column for m in query.metrics)]
    index = {c: i for i, c in enumerate(columns)}

    def row(name, value, vacuumed):
        values = [value] * len(query.metrics)
        out = ["db", "public", name, *values]
        out[index["last_vacuum"]] = vacuumed
        out[index["idx_scan"]] = None  # a table without an index
        return tuple(out)

    rows = [row("a", 1, 1.7e9), row("b", 10, None), row("c", 100, 1.8e9)]
    kept, folded = fold(query, columns, rows, frozenset({("public", "a")}), "db")
    assert kept[0] == rows[0]
    other = dict(zip(columns, kept[1]))
    assert (other["datname"], other["schemaname"], other["relname"]) == ("db", "", "other")
    assert other["seq_scan"] == other["n_live_tup"] == other["heap_hit"] == 110
    assert other["idx_scan"] is None           # no folded table has a value: no sample
    assert other["last_vacuum"] is None        # a timestamp is not summed
    # the series of b and c that left: every metric but idx_scan, and one last_vacuum less for b
    assert folded == 2 * (len(query.metrics) - 1) - 1


def test_fold_keeps_every_row_when_all_are_kept():
    query = tables_query()
    columns = ["datname", "schemaname", "relname", *(m.column for m in query.metrics)]
    rows = [("db", "public", "a", *[1] * len(query.metrics))]
    assert fold(query, columns, rows, frozenset({("public", "a")}), "db") == (rows, 0)


def test_max_series_default_and_value():
    config = parse({"targets": [{"name": "m", "dsn": "host=x"}, {"name": "n", "dsn": "host=x", "max_series": 5000}]})
    assert [t.max_series for t in config.targets] == [50_000, 5000]


def test_rendered_counts_its_samples_as_the_engine_tells_collectors():
    from exporter.metrics import Family, Rendered

    gauge = Family("a", "gauge", "h", ("x",))
    gauge.columns.append(([',x="1"', ',x="2"', ',x="3"'], [1, None, 3]))  # None: no sample
    histogram = Family("b", "histogram", "h", ("x",))
    histogram.add_histogram(("1",), [(1.0, 1), (float("inf"), 2)], 3.0)
    one, both = Rendered(), Rendered()
    one.add_families([gauge], 'target="t"')
    both.add_families([histogram])
    both.merge(one)
    assert one.samples == 2 and both.samples == 2 + 4
    assert both.samples == sum(1 for line in both.text().splitlines() if not line.startswith("#"))


def test_one_log_line_when_the_budget_starts_cutting(caplog):
    server = Server(1000 + 3 * 3 + 3 * OTHER + 20 * (TABLES + INDEX), {"a": 50, "b": 50, "c": 50})
    with caplog.at_level("INFO", logger="dbperf.budget"):
        for _ in range(6):
            server.scrape()
    lines = [r.getMessage() for r in caplog.records if r.name == "dbperf.budget"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"target=t max_series={server.target.max_series}: the 150 tables read so far")
    assert "dbperf_series_folded" in lines[0]
