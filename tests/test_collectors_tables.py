"""tables, table_sizes and indexes: per-table statistics of every discovered database, read on a
real PostgreSQL after the test did known work on a table of the second database."""

from __future__ import annotations

import time
import uuid

import pytest

from conftest import SECOND_DB, make_config

pytestmark = pytest.mark.pg


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def only(pg, extra: dict | None = None, **collectors_on):
    from exporter.registry import all_collectors

    target = {"collectors": {c.name: collectors_on.get(c.name, False) for c in all_collectors()}}
    target.update(extra or {})
    return make_config(pg, target)


@pytest.fixture
def table(pg):
    """A table with 500 rows and a primary key in the second database, analyzed, scanned twice
    sequentially and three times through its index; dropped afterwards."""
    name = unique("t")
    with pg.connect(SECOND_DB) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, pad text)")
        conn.execute(f"INSERT INTO {name} SELECT g, repeat('p', 50) FROM generate_series(1, 500) g")
        # flush the insert counts before ANALYZE, else they are added on top of ANALYZE's estimate
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute(f"ANALYZE {name}")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")
        # scans before ours (creating and analyzing may scan): the baseline
        before = conn.execute("SELECT seq_scan, seq_tup_read, coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                              "WHERE relname = %s", (name,)).fetchone()
        conn.execute("SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off")
        for _ in range(2):
            conn.execute(f"SELECT count(*) FROM {name}").fetchall()
        conn.execute("RESET enable_indexscan; RESET enable_bitmapscan; RESET enable_indexonlyscan; "
                     "SET enable_seqscan = off")
        for i in range(3):
            conn.execute(f"SELECT pad FROM {name} WHERE id = %s", (i + 1,)).fetchall()
        conn.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(0.05)
    yield Table(name, *before)
    pg.execute(f"DROP TABLE IF EXISTS {name}", SECOND_DB)


class Table(str):
    def __new__(cls, name, seq_scan, seq_tup_read, idx_scan):
        self = super().__new__(cls, name)
        self.seq_scan, self.seq_tup_read, self.idx_scan = seq_scan, seq_tup_read, idx_scan
        return self


def stat(pg, sql, table):
    return pg.execute(sql, SECOND_DB, (table,))[0]


def test_table_statistics_come_from_the_second_database(pg, serve, table):
    samples = serve(only(pg, tables=True)).metrics()
    labels = dict(datname=SECOND_DB, schemaname="public", relname=table)
    assert samples.value("pg_stat_user_tables_n_tup_ins_total", **labels) == 500
    assert samples.value("pg_stat_user_tables_n_live_tup", **labels) == 500
    assert samples.value("pg_stat_user_tables_n_live_tup", **labels) == stat(
        pg, "SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = %s", table)[0]
    assert samples.value("pg_stat_user_tables_n_dead_tup", **labels) == 0
    assert samples.value("pg_stat_user_tables_seq_scan_total", **labels) == table.seq_scan + 2
    assert samples.value("pg_stat_user_tables_seq_tup_read_total", **labels) == table.seq_tup_read + 1000
    assert samples.value("pg_stat_user_tables_idx_scan_total", **labels) == table.idx_scan + 3
    assert samples.value("pg_stat_user_tables_idx_tup_fetch_total", **labels) == 3
    assert samples.value("pg_stat_user_tables_analyze_total", **labels) == 1
    assert samples.value("pg_stat_user_tables_last_analyze_timestamp_seconds", **labels) == pytest.approx(
        time.time(), abs=30)
    assert not samples.has("pg_stat_user_tables_last_vacuum_timestamp_seconds", relname=table)  # never: NULL
    # the table lives in the second database only, not in the DSN's database
    assert not samples.has("pg_stat_user_tables_n_tup_ins_total", datname="postgres", relname=table)
    assert samples.families["pg_stat_user_tables_n_tup_ins"].type == "counter"
    assert samples.families["pg_stat_user_tables_n_live_tup"].type == "gauge"


def test_statio_bytes_are_whole_blocks(pg, serve, table):
    samples = serve(only(pg, tables=True)).metrics()
    block = int(pg.execute("SHOW block_size")[0][0])
    labels = dict(datname=SECOND_DB, schemaname="public", relname=table)
    heap_hit, heap_read, idx_hit, idx_read = stat(
        pg, "SELECT heap_blks_hit, heap_blks_read, idx_blks_hit, idx_blks_read "
            "FROM pg_statio_user_tables WHERE relname = %s", table)
    for name, blocks in (("heap_hit", heap_hit), ("heap_read", heap_read), ("idx_hit", idx_hit),
                         ("idx_read", idx_read)):
        value = samples.value(f"pg_statio_user_tables_{name}_bytes_total", **labels)
        assert value % block == 0, name
        assert value == blocks * block, name
    assert samples.value("pg_statio_user_tables_heap_hit_bytes_total", **labels) > 0


def test_index_statistics_and_sizes(pg, serve, table):
    samples = serve(only(pg, indexes=True, table_sizes=True)).metrics()
    labels = dict(datname=SECOND_DB, schemaname="public", relname=table)
    index = f"{table}_pkey"
    assert samples.value("pg_stat_user_indexes_idx_scan_total", indexrelname=index, **labels) == table.idx_scan + 3
    assert samples.value("pg_stat_user_indexes_idx_tup_fetch_total", indexrelname=index, **labels) == 3
    table_size, index_size, pkey_size = stat(
        pg, "SELECT pg_table_size(oid), pg_indexes_size(oid), pg_relation_size((oid::regclass::text || '_pkey')::regclass) "
            "FROM pg_class WHERE relname = %s", table)
    assert samples.value("pg_stat_user_indexes_size_bytes", indexrelname=index, **labels) == pkey_size
    assert samples.value("pg_stat_user_tables_table_size_bytes", **labels) == table_size
    assert samples.value("pg_stat_user_tables_index_size_bytes", **labels) == index_size
    assert table_size >= 500 * 50  # 500 rows of 50 bytes of padding


def test_table_limit_keeps_the_busiest_tables_of_each_database(pg, serve):
    tables = [unique("lim") for _ in range(3)]
    try:
        for rows, name in zip((3000, 2000, 10), tables):
            pg.execute(f"CREATE TABLE {name} (id int PRIMARY KEY); "
                       f"INSERT INTO {name} SELECT generate_series(1, {rows})", SECOND_DB)
        with pg.connect(SECOND_DB) as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(0.05)
        samples = serve(only(pg, {"table_limit": 2}, tables=True, table_sizes=True, indexes=True)).metrics()
        expected = {r[0] for r in pg.execute(
            "SELECT relname FROM pg_stat_user_tables ORDER BY n_live_tup + n_dead_tup DESC, relid LIMIT 2", SECOND_DB)}
        assert set(tables[:2]) <= expected  # the two big tables are the busiest of the database
        for family in ("pg_stat_user_tables_n_live_tup", "pg_stat_user_tables_table_size_bytes"):
            served = {s.labels["relname"] for s in samples.series(family, datname=SECOND_DB)}
            assert served == expected, family
            assert len(samples.series(family, datname="postgres")) <= 2, family
        indexed = {s.labels["relname"] for s in samples.series("pg_stat_user_indexes_idx_scan_total", datname=SECOND_DB)}
        assert indexed <= expected and tables[0] in indexed
        assert tables[2] not in indexed
        # without a limit the small table is there too
        unlimited = serve(only(pg, tables=True)).metrics()
        assert unlimited.has("pg_stat_user_tables_n_live_tup", datname=SECOND_DB, relname=tables[2])
    finally:
        for name in tables:
            pg.execute(f"DROP TABLE IF EXISTS {name}", SECOND_DB)


def test_a_table_locked_exclusively_does_not_fail_the_size_collectors(pg, serve, table):
    """A long ALTER TABLE / VACUUM FULL holds ACCESS EXCLUSIVE: the sizes of that table cannot be
    read without waiting, the rest of the database still can."""
    import psycopg

    other = unique("free")
    pg.execute(f"CREATE TABLE {other} (id int PRIMARY KEY); INSERT INTO {other} VALUES (1)", SECOND_DB)
    served = serve(only(pg, tables=True, table_sizes=True, indexes=True))
    holder = psycopg.connect(pg.dsn(SECOND_DB))
    try:
        holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        samples = served.metrics()
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
        pg.execute(f"DROP TABLE {other}", SECOND_DB)
    for collector in ("tables", "table_sizes", "indexes"):
        assert samples.value("dbperf_collector_success", collector=collector, datname=SECOND_DB) == 1, collector
    assert elapsed < 1.0  # nothing waited for the lock
    assert samples.has("pg_stat_user_tables_table_size_bytes", datname=SECOND_DB, relname=other)
    assert samples.has("pg_stat_user_indexes_size_bytes", datname=SECOND_DB, relname=other)
    assert not samples.has("pg_stat_user_tables_table_size_bytes", datname=SECOND_DB, relname=table)
    assert not samples.has("pg_stat_user_indexes_size_bytes", datname=SECOND_DB, relname=table)
    assert samples.has("pg_stat_user_indexes_idx_scan_total", datname=SECOND_DB, relname=table)
    # statistics need no lock: still there
    assert samples.value("pg_stat_user_tables_n_tup_ins_total", datname=SECOND_DB, relname=table) == 500
