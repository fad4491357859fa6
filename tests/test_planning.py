"""The catalog's plan per PostgreSQL version, its metric names, and every planned query of the live
server run for real with the columns the catalog names."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import ROOT, SECOND_DB
from exporter.plan import VERSIONS
from exporter.postgres import catalog
from exporter.registry import all_collectors

pytestmark = pytest.mark.fast
NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def collectors():
    return {c.name: c for c in catalog.load()}


def metric_names(queries) -> set:
    return {m.name for q in queries for m in q.metrics}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_catalog_collector_plans_a_query_for_each_supported_version(version):
    # a collector of newer servers only (io: pg_stat_io, 16+) is unsupported below its min_version
    empty = [name for name, c in collectors().items() if not c.plan(version) and version >= c.min_version]
    assert not empty, f"no query for {version}: {empty}"


def test_checkpointer_reads_pg_stat_checkpointer_from_17_with_the_same_names():
    c = collectors()["checkpointer"]
    for version in (130000, 140000, 160000, 160009):
        (query,) = c.plan(version)
        assert "pg_stat_bgwriter" in query.sql and "pg_stat_checkpointer" not in query.sql, version
    (new,) = c.plan(170000)
    assert "pg_stat_checkpointer" in new.sql and "pg_stat_bgwriter" not in new.sql
    # 17 keeps every older name and adds the restartpoints (16 has no such data: no family)
    restartpoints = {f"pg_stat_checkpointer_restartpoints_{k}_total" for k in ("timed", "req", "done")}
    assert metric_names(c.plan(170000)) == metric_names(c.plan(160000)) | restartpoints
    assert not restartpoints & set(c.families_for(160000))
    # 18: checkpoints completed and SLRU writes
    assert set(c.families_for(180000)) - set(c.families_for(170000)) == {
        "pg_stat_checkpointer_num_done_total", "pg_stat_checkpointer_slru_written_bytes_total"}


def test_bgwriter_keeps_its_names_across_17_and_drops_the_backend_ones():
    c = collectors()["bgwriter"]
    (old,), (new,) = c.plan(160000), c.plan(170000)
    # pg_stat_bgwriter lost its backend columns in 17: only the older query reads or names them
    assert "buffers_backend *" in old.sql and "buffers_backend" not in new.sql
    backend = {"pg_stat_bgwriter_buffers_backend_bytes_total", "pg_stat_bgwriter_buffers_backend_fsync_total"}
    assert metric_names([old]) == metric_names([new]) | backend
    assert not backend & set(c.families_for(180000))


def test_pg_stat_wal_from_14_and_its_write_and_sync_from_pg_stat_io_on_18():
    c = collectors()["wal"]
    assert not any("pg_stat_wal" in q.sql for q in c.plan(130000))
    for version in (140000, 150000, 160000, 170000, 180000):
        assert any("FROM pg_stat_wal" in q.sql for q in c.plan(version)), version
    assert "pg_stat_wal_bytes_total" not in metric_names(c.plan(130000))
    assert "pg_wal_lsn_bytes_total" in metric_names(c.plan(130000))
    # 18 removed wal_write, wal_sync and their times from pg_stat_wal: the same families, from pg_stat_io
    assert c.families_for(180000) == c.families_for(170000)
    (new,) = [q for q in c.plan(180000) if "pg_stat_wal" in q.sql]
    assert "FROM pg_stat_io WHERE object = 'wal'" in new.sql and "wal_write_time" not in new.sql


def test_columns_new_in_18_are_planned_from_18_only():
    cases = {"stat_database": {"pg_stat_database_parallel_workers_to_launch_total",
                               "pg_stat_database_parallel_workers_launched_total"},
             "tables": {f"pg_stat_user_tables_{k}_time_seconds_total"
                        for k in ("vacuum", "autovacuum", "analyze", "autoanalyze")}}
    for name, families in cases.items():
        c = collectors()[name]
        assert set(c.families_for(180000)) - set(c.families_for(170000)) == families, name


def test_session_statistics_only_from_14_and_reserved_connections_from_16():
    stat_db, activity = collectors()["stat_database"], collectors()["activity"]
    assert "pg_stat_database_session_time_seconds_total" not in metric_names(stat_db.plan(130000))
    assert "pg_stat_database_session_time_seconds_total" in metric_names(stat_db.plan(140000))
    assert not any("'reserved_connections'" in q.sql for q in activity.plan(150000))
    assert any("'reserved_connections'" in q.sql for q in activity.plan(160000))
    # exactly one connection-limit query per version
    for version in VERSIONS:
        assert sum("pg_connections_limit" in metric_names([q]) for q in activity.plan(version)) == 1, version


def all_metrics():
    for c in catalog.load():
        for q in c.queries:
            for m in q.metrics:
                yield c, q, m


def test_metric_names_follow_the_prometheus_rules():
    problems = []
    types = {}
    for c, q, m in all_metrics():
        where = f"{c.name}: {m.name}"
        if types.setdefault(m.name, m.type) != m.type:
            problems.append(f"{where}: two types")
        if not NAME_RE.match(m.name) or not m.name.startswith("pg_"):
            problems.append(f"{where}: bad name")
        if not all(LABEL_RE.match(label) and not label.startswith("__") for label in m.labels):
            problems.append(f"{where}: bad label")
        if m.type == "counter" and not m.name.endswith("_total"):
            problems.append(f"{where}: counter without _total")
        if m.type != "counter" and m.name.endswith(("_total", "_count", "_sum", "_bucket")):
            problems.append(f"{where}: gauge with a counter/summary suffix")
        if m.name.endswith("_info") and (m.column is not None or m.value != 1):
            problems.append(f"{where}: _info must be the constant 1")
        if re.search(r"_(time|timestamp|size|ms|milliseconds|blocks|blks)$", m.name.removesuffix("_total")):
            problems.append(f"{where}: not in base units")
        if "timestamp" in m.name and not m.name.endswith("_timestamp_seconds") and m.name != "pg_postmaster_start_time_seconds":
            problems.append(f"{where}: timestamp not in _timestamp_seconds")
        if not m.help.strip().endswith("."):
            problems.append(f"{where}: help should be a sentence")
        # the SQL converts: ms columns are divided by 1000, block columns multiplied by block_size
        if m.column and re.search(rf"/ 1000\.0 AS {m.column}\b", q.sql) and "_seconds" not in m.name:
            problems.append(f"{where}: milliseconds converted but name lacks _seconds")
        if m.column and re.search(rf"block_size'\)::bigint AS {m.column}\b", q.sql) and "_bytes" not in m.name:
            problems.append(f"{where}: blocks converted but name lacks _bytes")
        if m.column and re.search(rf"epoch FROM [^,]*\) AS {m.column}\b", q.sql) and not m.name.endswith(
                ("_seconds", "_timestamp_seconds")):
            problems.append(f"{where}: epoch without _seconds")
        if "_seconds" in m.name and m.column and re.search(rf"\b{m.column}\b", q.sql) and re.search(
                rf"\b\w*_time\b AS {m.column}\b", q.sql):
            problems.append(f"{where}: a *_time column (ms) served as seconds without / 1000")
    assert not problems, "\n".join(problems)


def test_names_of_every_collector_are_unique_across_collectors():
    owner = {}
    clashes = []
    for c, _, m in all_metrics():
        if owner.setdefault(m.name, c.name) != c.name:
            clashes.append(f"{m.name}: {owner[m.name]} and {c.name}")
    assert not clashes, clashes


def test_check_config_lists_every_collector(tmp_path):
    config = tmp_path / "dbperf.yaml"
    config.write_text("targets:\n  - name: main\n    dsn: host=127.0.0.1 dbname=postgres user=x\n"
                      "    collectors:\n      database_size: false\n")
    proc = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ") and line.split()}
    for c in all_collectors():
        assert c.name in lines, f"{c.name} missing from check-config output:\n{proc.stdout}"
    assert "disabled" in lines["database_size"]
    assert lines["checkpointer"].rstrip().endswith("13,14,15,16,17,18")
    assert re.search(r"\b300s\b", lines["table_sizes"])


# -- the live server ---------------------------------------------------------------------------
@pytest.mark.pg
def test_every_planned_query_runs_on_the_live_server_with_the_named_columns(pg):
    version = int(pg.execute("SHOW server_version_num")[0][0])
    checked = 0
    for c in catalog.load():
        db = SECOND_DB if c.scope == "database" else "postgres"
        for q in c.plan(version):
            with pg.connect(db) as conn:
                cur = conn.execute(q.sql.replace("{table_limit}", "5"))
                columns = {d.name for d in cur.description}
                cur.fetchall()
            wanted = set(q.labels) | {m.column for m in q.metrics if m.column}
            assert wanted <= columns, f"{c.name}: columns missing: {sorted(wanted - columns)}"
            checked += 1
    assert checked >= len(catalog.load())


@pytest.mark.pg
def test_every_catalog_collector_collects_on_the_live_server(pg):
    """Through dbperf's own connection and the collector's single round trip."""
    from exporter.collector import Context, ServerInfo
    from exporter.postgres.connection import Connection

    version = int(pg.execute("SHOW server_version_num")[0][0])
    server = ServerInfo(version=version, in_recovery=False, databases=("postgres", SECOND_DB), dbname="postgres")
    conn = Connection(pg.dsn("postgres"), SECOND_DB)
    try:
        names = set()
        for c in catalog.load():
            if c.applies(server) is not None:
                continue
            families = c.collect(conn, Context(target="t", datname=SECOND_DB, server=server), 5.0)
            names |= {f.name for f in families}
            assert {f.name for f in families} <= set(c.families), c.name
        # every always-present family has samples
        for name in ("pg_server_info", "pg_stat_database_xact_commit_total", "pg_connections_limit",
                     "pg_locks_granted", "pg_wal_lsn_bytes_total", "pg_database_xid_age",
                     "pg_stat_checkpointer_num_timed_total", "pg_stat_bgwriter_buffers_alloc_bytes_total"):
            assert name in names, name
    finally:
        conn.close()
