"""The series budget on a real server (exporter.postgres.budget, exporter.postgres.relations):
three databases of twelve tables each under a max_series with room for about eight of them.
The tables made busy by real queries are kept, the others folded per database into other rows
whose values equal the sums over the folded tables in pg_stat_user_tables (and the sizes, and
pg_stat_user_indexes) read directly; a kept table stays while it idles; dbperf_series_folded counts
what left; the target serves at most max_series; promtool passes; check-config --connect says what
the target costs. The decisions alone: tests/test_series_budget.py."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import yaml

from conftest import ROOT, Samples, make_config, promtool_check_metrics
from exporter.postgres.budget import RELATION_COLLECTORS
from exporter.server import Exporter

pytestmark = pytest.mark.pg

TABLES = 12
PER_TABLE = 23 + 2 + 4  # tables, table_sizes, and one index (table_sizes and indexes) on PostgreSQL 13-17
ROOM = 8                # tables the budget has room for

# the 23 columns of the tables collector, for num_nonnulls: a folded table's series that left
TABLE_COLUMNS = """s.seq_scan, s.seq_tup_read, s.idx_scan, s.idx_tup_fetch, s.n_tup_ins, s.n_tup_upd, s.n_tup_del,
  s.n_tup_hot_upd, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze, s.last_vacuum, s.last_autovacuum,
  s.last_analyze, s.last_autoanalyze, s.vacuum_count, s.autovacuum_count, s.analyze_count, s.autoanalyze_count,
  io.heap_blks_read, io.heap_blks_hit, io.idx_blks_read, io.idx_blks_hit"""
SUMMED = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "n_tup_ins", "n_tup_upd", "n_tup_del",
          "n_tup_hot_upd", "n_live_tup", "n_dead_tup")


@pytest.fixture(scope="module")
def databases(pg):
    prefix = "rel_" + uuid.uuid4().hex[:6]
    names = [f"{prefix}_{i}" for i in range(3)]
    for name in names:
        pg.execute(f"CREATE DATABASE {name}")
        with pg.connect(name) as conn:
            for i in range(TABLES):  # no autovacuum or autoanalyze: the counters move only by the test's queries
                conn.execute(f"CREATE TABLE t{i} (id int PRIMARY KEY, v int) WITH (autovacuum_enabled = off)")
                conn.execute(f"INSERT INTO t{i} SELECT g, g FROM generate_series(1, {10 * (i + 1)}) g")
    yield names
    for name in names:
        pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def target(pg, names, **extra) -> dict:
    # the target's own database is the first (the cluster's postgres has other tests' tables); the
    # statements collector is off so that the other collectors' series hold still between scrapes
    return {"name": "budget", "dsn": pg.dsn(names[0]), "databases": {"include": "|".join(names)},
            "collectors": {"statements": False, **{name: {"ttl": 0} for name in RELATION_COLLECTORS}}, **extra}


def scrape(exporter) -> tuple[Samples, dict]:
    text = exporter.probe("budget", 30).decode()
    return Samples(text), dict(exporter.scrapers["budget"].served)


def relation_series(served: dict) -> int:
    return sum(n for name, n in served.items() if name in RELATION_COLLECTORS)


def work(pg, names, seq_scans=40, updates=20):
    """Make t3 of the second database and t5 of the third busy, with stats flushed."""
    with pg.connect(names[1]) as conn:
        for _ in range(seq_scans):
            conn.execute("SELECT count(*) FROM t3")
        conn.execute("SELECT pg_stat_force_next_flush()")
    with pg.connect(names[2]) as conn:
        for _ in range(updates):
            conn.execute("UPDATE t5 SET v = v + 1")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")  # the flush runs at the end of this transaction


def kept(samples: Samples, datname: str) -> set[str]:
    return {s.labels["relname"] for s in samples.series("pg_stat_user_tables_seq_scan_total", datname=datname)
            if s.labels["schemaname"]}


@pytest.fixture(scope="module")
def budgeted(pg, databases):
    """An exporter whose max_series leaves the tables room for ROOM of them, after a few scrapes
    with the busy tables busy; what each scrape served."""
    counting = Exporter(make_config(pg, target(pg, databases, max_series=100_000_000)))
    try:
        scrape(counting)
        _, served = scrape(counting)
    finally:
        counting.close()
    others = sum(served.values()) - relation_series(served)
    folded_metrics = len(RELATION_COLLECTORS) * len(databases)
    max_series = others + folded_metrics + len(databases) * PER_TABLE + ROOM * PER_TABLE + PER_TABLE // 2
    exporter = Exporter(make_config(pg, target(pg, databases, max_series=max_series)))
    scrapes = []
    for _ in range(5):
        work(pg, databases)
        scrapes.append(scrape(exporter))
    yield exporter, max_series, scrapes
    exporter.close()


def test_the_busiest_tables_across_databases_are_kept_within_max_series(budgeted, databases):
    exporter, max_series, scrapes = budgeted
    samples, served = scrapes[-1]
    assert "t3" in kept(samples, databases[1])
    assert "t5" in kept(samples, databases[2])
    shown = sum(len(kept(samples, d)) for d in databases)
    assert 4 <= shown <= ROOM, shown
    for samples, served in scrapes[1:]:  # the first scrape set half aside for collectors not counted yet
        assert len(samples.samples) == sum(served.values()) <= max_series
    assert promtool_check_metrics(samples.text) == ""
    # every database has its other rows, in every collector
    for datname in databases:
        for name in ("pg_stat_user_tables_seq_scan_total", "pg_stat_user_tables_table_size_bytes"):
            assert samples.has(name, datname=datname, schemaname="", relname="other")
        for name in ("pg_stat_user_indexes_idx_scan_total", "pg_stat_user_indexes_size_bytes"):
            assert samples.has(name, datname=datname, schemaname="", relname="other", indexrelname="other")
        # timestamps are not summed
        assert not samples.has("pg_stat_user_tables_last_vacuum_timestamp_seconds", relname="other")


def test_other_rows_equal_the_sums_over_the_folded_tables(pg, budgeted, databases):
    samples, _ = scrape(budgeted[0])  # nothing touches the tables from here to the reads below
    for datname in databases:
        shown = kept(samples, datname)
        with pg.connect(datname) as conn:
            rows = conn.execute(
                f"SELECT s.relname, {', '.join('s.' + c for c in SUMMED)}, pg_table_size(s.relid), "
                f"pg_indexes_size(s.relid), num_nonnulls({TABLE_COLUMNS}) "
                "FROM pg_stat_user_tables s JOIN pg_statio_user_tables io USING (relid)").fetchall()
            indexes = conn.execute("SELECT relname, idx_scan, idx_tup_read, idx_tup_fetch, pg_relation_size(indexrelid) "
                                   "FROM pg_stat_user_indexes").fetchall()
        folded = [row for row in rows if row[0] not in shown]
        assert len(folded) == TABLES - len(shown)
        for i, column in enumerate(SUMMED, start=1):
            assert samples.value(f"pg_stat_user_tables_{column}" + ("" if column.startswith("n_live")
                                 or column.startswith("n_dead") else "_total"),
                                 datname=datname, schemaname="", relname="other") == sum(r[i] or 0 for r in folded), column
        n = len(SUMMED)
        assert samples.value("pg_stat_user_tables_table_size_bytes", datname=datname, relname="other") == \
            sum(r[n + 1] for r in folded)
        assert samples.value("pg_stat_user_tables_index_size_bytes", datname=datname, relname="other") == \
            sum(r[n + 2] for r in folded)
        folded_indexes = [row for row in indexes if row[0] not in shown]
        for i, column in enumerate(("idx_scan", "idx_tup_read", "idx_tup_fetch"), start=1):
            assert samples.value(f"pg_stat_user_indexes_{column}_total", datname=datname, relname="other") == \
                sum(r[i] for r in folded_indexes), column
        assert samples.value("pg_stat_user_indexes_size_bytes", datname=datname, relname="other") == \
            sum(r[4] for r in folded_indexes)
        # what left, per collector: every non-NULL value of the folded tables and indexes
        assert samples.value("dbperf_series_folded", collector="tables", datname=datname) == sum(r[-1] for r in folded)
        assert samples.value("dbperf_series_folded", collector="table_sizes", datname=datname) == \
            2 * len(folded) + len(folded_indexes)
        assert samples.value("dbperf_series_folded", collector="indexes", datname=datname) == 3 * len(folded_indexes)


def test_a_kept_table_stays_while_it_idles(pg, budgeted, databases):
    exporter, max_series, scrapes = budgeted
    before = {d: kept(scrapes[-1][0], d) for d in databases}
    assert "t3" in before[databases[1]]
    for _ in range(4):  # t3 is idle now; other tables of the first database get busy instead
        with pg.connect(databases[0]) as conn:
            for i in range(TABLES):
                conn.execute(f"SELECT count(*) FROM t{i}")
            conn.execute("SELECT pg_stat_force_next_flush()")
            conn.execute("SELECT 1")
        samples, served = scrape(exporter)
        assert "t3" in kept(samples, databases[1])  # sticky: no flapping
        assert "t5" in kept(samples, databases[2])
        assert sum(served.values()) <= max_series


def test_everything_fits_under_the_default(pg, databases):
    exporter = Exporter(make_config(pg, target(pg, databases)))
    try:
        samples, _ = scrape(exporter)
    finally:
        exporter.close()
    for datname in databases:
        assert len(kept(samples, datname)) == TABLES
        assert not samples.has("pg_stat_user_tables_seq_scan_total", datname=datname, relname="other")
        for collector in RELATION_COLLECTORS:
            assert samples.value("dbperf_series_folded", collector=collector, datname=datname) == 0


def check_connect(pg, databases, tmp_path, **extra) -> str:
    path = tmp_path / "dbperf.yaml"
    path.write_text(yaml.safe_dump({"targets": [target(pg, databases, **extra)]}))
    env = {k: v for k, v in os.environ.items() if k not in ("DBPERF_CONFIG", "DBPERF_DSN")}
    proc = subprocess.run([sys.executable, "-m", "exporter", "check-config", "--connect", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return next(line for line in proc.stdout.splitlines() if line.startswith("series: "))


def test_check_config_connect_estimates_the_series_and_says_whether_max_series_cuts(pg, databases, tmp_path):
    line = check_connect(pg, databases, tmp_path)
    assert f"all of its {3 * TABLES} tables and {3 * TABLES} indexes fit" in line
    assert "within max_series 50,000" in line
    line = check_connect(pg, databases, tmp_path, max_series=1500)
    assert f"its {3 * TABLES} tables and {3 * TABLES} indexes in 3 databases would serve about" in line
    assert "max_series 1,500 cuts" in line
