"""Converted postgres_exporter queries files served by dbperf from a real PostgreSQL, through the
real path (the converted files as the config's collector_files, dbperf's Exporter behind its HTTP
server): every series has the value postgres_exporter would have served for the user's own SQL,
run directly and read as postgres_exporter reads it (tests/pe_semantics.py); the output passes
promtool."""

from __future__ import annotations

import math
from pathlib import Path

import psycopg
import pytest
import yaml

import pe_semantics as pe
from conftest import SECOND_DB, Samples, Served, promtool_check_metrics
from exporter.cli import main
from exporter.config import load
from exporter.registry import all_collectors
from exporter.server import Exporter

pytestmark = pytest.mark.pg

FIXTURES = Path(__file__).parent / "fixtures" / "postgres_exporter"
DATABASES = ("postgres", SECOND_DB)
TABLE = "conv_accounts"  # the table classic.yaml's pg_stat_user_tables is checked on


@pytest.fixture(scope="module")
def shop(pg):
    """The app's tables: shop_orders (read by app.yaml's app_orders) and a table to vacuum."""
    pg.execute("DROP TABLE IF EXISTS shop_orders, conv_accounts; "
               "CREATE TABLE shop_orders (id int, status text, region text, amount numeric, placed_at timestamptz, "
               "paid bool); INSERT INTO shop_orders VALUES "
               "(1, 'waiting_payment', 'eu', 12.50, '2026-03-01 10:00:00.75+01', false), "
               "(2, 'waiting_payment', 'eu', 7.25, '2026-03-02 11:30:00+01', false), "
               "(3, 'paid', NULL, 99.00, '2026-02-27 08:00:00+00', true), "
               "(4, 'paid', 'us', 0.10, '2026-02-28 23:59:59.999+00', true); "
               "CREATE TABLE conv_accounts (id int); INSERT INTO conv_accounts VALUES (1), (2), (3)")
    pg.execute("VACUUM conv_accounts")
    yield
    pg.execute("DROP TABLE IF EXISTS shop_orders, conv_accounts")


def converted(tmp_path: Path, fixture: str) -> Path:
    out = tmp_path / f"{fixture}.collectors.yaml"
    assert main(["convert-queries", str(FIXTURES / f"{fixture}.yaml"), "--output", str(out)]) in (0, 3)
    return out


@pytest.fixture(scope="module")
def served(pg, shop, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("convert")
    files = [converted(tmp, "app"), converted(tmp, "classic")]
    builtin_off = "".join(f"  {c.name}: false\n" for c in all_collectors())
    config = tmp / "dbperf.yaml"
    config.write_text(f"listen: 127.0.0.1:0\ncollector_files: [{', '.join(str(f) for f in files)}]\n"
                      f"collectors:\n{builtin_off}targets:\n  - name: main\n    dsn: '{pg.dsn('postgres')}'\n"
                      f"    databases: {{include: '{'|'.join(DATABASES)}'}}\n")
    s = Served(Exporter(load(str(config))))
    yield s
    s.close()


def pe_query(fixture: str, namespace: str) -> str:
    """The user's own SQL, from the queries file (read here with PyYAML, not the converter)."""
    return yaml.safe_load((FIXTURES / f"{fixture}.yaml").read_text())[namespace]["query"]


def direct(pg, sql: str, db: str = "postgres") -> list[dict]:
    with psycopg.connect(pg.dsn(db), autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql).fetchall()


def series(samples: Samples, name: str, labels: tuple) -> dict:
    """{label values: value} of one family (without target)."""
    return {tuple(s.labels[k] for k in labels): s.value for s in samples.series(name, target="main")}


def expected(rows: list[dict], labels: tuple, column: str, read=pe.value) -> dict:
    out = {}
    for row in rows:
        value = read(row[column])
        if value is not None:
            out[tuple(pe.label(row[k]) for k in labels)] = value
    return out


def scrape_between(pg, served, sql: str, db: str = "postgres"):
    """The user's SQL run directly before and after one scrape: ``(before, samples, after)``."""
    before = direct(pg, sql, db)
    samples = served.metrics()
    return before, samples, direct(pg, sql, db)


def test_every_converted_collector_runs_where_its_versions_allow(pg, served):
    samples = served.metrics()
    version = int(pg.execute("SHOW server_version_num")[0][0])
    cluster = ["app_orders", "app_uptime", "app_config", "app_session_age", "pg_replication"]
    if 100000 <= version < 140000 or version >= 150000:
        cluster.append("app_checkpoints")
    for name in cluster:
        assert samples.value("dbperf_collector_success", collector=name, datname="") == 1, name
    for name in ("app_relations", "app_stat_database_self", "pg_stat_user_tables", "pg_locks_mode"):
        for db in DATABASES:
            assert samples.value("dbperf_collector_success", collector=name, datname=db) == 1, (name, db)
    # runonserver "<10.0.0": no query for this server, served nothing, said so
    assert samples.value("dbperf_collector_supported", collector="app_old_xlog", datname="") == 0
    assert not samples.has("app_old_xlog_xlog_location_bytes_total")


def test_the_orders_are_served_as_postgres_exporter_reads_them(pg, served):
    rows = direct(pg, pe_query("app", "app_orders"))
    samples = served.metrics()
    labels = ("status", "region")
    for column, name in [("orders", "app_orders_orders"), ("amount_euros", "app_orders_amount_euros"),
                         ("last_placed", "app_orders_last_placed"), ("any_paid", "app_orders_any_paid")]:
        assert series(samples, name, labels) == expected(rows, labels, column), name
    # what postgres_exporter makes of them: a NULL region is '', a timestamp whole Unix seconds, a bool 1/0
    assert samples.value("app_orders_orders", status="paid", region="") == 1
    assert samples.value("app_orders_last_placed", status="waiting_payment", region="eu") == 1772447400
    assert samples.value("app_orders_any_paid", status="paid", region="us") == 1
    assert samples.value("app_orders_amount_euros", status="waiting_payment", region="eu") == 19.75


def test_settings_durations_and_mapped_states(pg, served):
    (row,) = direct(pg, pe_query("app", "app_config"))
    samples = served.metrics()
    assert samples.value("app_config_max_connections") == pe.value(row["max_connections"]) == 200
    wal_levels = {"minimal": 0, "replica": 1, "logical": 2}
    assert samples.value("app_config_wal_level") == pe.mapped(row["wal_level"], wal_levels)
    assert samples.value("app_config_archive_mode") == pe.mapped(row["archive_mode"], {"off": 0, "on": 1, "always": 2})
    assert samples.value("app_config_in_recovery") == pe.value(row["in_recovery"]) == 0
    assert samples.value("app_config_checkpoint_timeout_seconds") == pe.duration_seconds(row["checkpoint_timeout"])
    assert samples.value("app_config_deadlock_timeout_seconds") == pe.duration_seconds(row["deadlock_timeout"]) == 1
    # log_rotation_age is in min, which Go's durations do not know: no sample, as postgres_exporter
    assert pe.duration_seconds(row["log_rotation_age"]) is None
    assert not samples.has("app_config_log_rotation_age_seconds")


def test_timestamps_are_whole_unix_seconds(pg, served):
    (row,) = direct(pg, pe_query("app", "app_uptime"))
    samples = served.metrics()
    assert samples.value("app_uptime_started") == pe.value(row["started"]) == math.floor(row["started"].timestamp())
    assert samples.value("app_uptime_config_loaded") == pe.value(row["config_loaded"])


def test_per_database_rows_in_every_database(pg, served):
    sql = pe_query("app", "app_relations")
    for db in DATABASES:
        before, samples, after = scrape_between(pg, served, sql, db)
        for column in ("relations", "pages"):
            got = {k: v for k, v in series(samples, f"app_relations_{column}", ("datname", "kind")).items()
                   if k[0] == db}
            assert got in (expected(before, ("datname", "kind"), column),
                           expected(after, ("datname", "kind"), column)), (db, column)


def test_per_database_counters_without_a_datname_column_get_dbperfs(pg, served):
    sql = pe_query("app", "app_stat_database_self")
    for db in DATABASES:
        (before,), samples, (after,) = scrape_between(pg, served, sql, db)
        for column in ("xact_commit", "xact_rollback", "blks_hit"):
            got = samples.value(f"app_stat_database_self_{column}_total", datname=db)
            assert pe.value(before[column]) <= got <= pe.value(after[column]), (db, column)
        if after["stats_reset"] is None:  # NULL: no sample (postgres_exporter: NaN)
            assert not samples.has("app_stat_database_self_stats_reset", datname=db)
        else:
            assert samples.value("app_stat_database_self_stats_reset", datname=db) == pe.value(after["stats_reset"])


def test_the_classic_example_queries(pg, served):
    samples = served.metrics()
    (row,) = direct(pg, pe_query("classic", "pg_replication"))
    assert samples.value("pg_replication_lag") == pe.value(row["lag"]) == 0
    rows = [r for r in direct(pg, pe_query("classic", "pg_stat_user_tables")) if r["relname"] == TABLE]
    labels = ("datname", "schemaname", "relname")
    for column, name in [("last_vacuum", "pg_stat_user_tables_last_vacuum"),
                         ("last_autoanalyze", "pg_stat_user_tables_last_autoanalyze"),
                         ("vacuum_count", "pg_stat_user_tables_vacuum_count_total"),
                         ("autoanalyze_count", "pg_stat_user_tables_autoanalyze_count_total")]:
        got = {k: v for k, v in series(samples, name, labels).items() if k[2] == TABLE}
        assert got == expected(rows, labels, column), name
    assert samples.value("pg_stat_user_tables_vacuum_count_total", relname=TABLE) == 1
    assert samples.value("pg_stat_user_tables_last_autoanalyze", relname=TABLE) == 0  # COALESCE(.., 1970)
    # the names dbperf serves built in were left out: not served twice
    assert not samples.has("pg_stat_user_tables_seq_scan_total") and not samples.has("pg_database_size_bytes")
    for db in DATABASES:  # one series per lock mode, per database; the count of others' locks
        modes = series(samples, "pg_locks_mode", ("datname", "tag_lockmode"))
        assert len([k for k in modes if k[0] == db]) == 8 and all(v >= 0 for v in modes.values())


def test_volatile_counts_are_sane(served):
    samples = served.metrics()
    if samples.has("app_checkpoints_backends"):
        assert 1 <= samples.value("app_checkpoints_active") <= samples.value("app_checkpoints_backends")
    assert samples.value("app_session_age_sessions") >= 1
    assert not [n for n in samples.names() if n.startswith("app_session_age_age")]  # the HISTOGRAM, left out


@pytest.mark.prom
def test_the_converted_collectors_output_passes_promtool(served):
    assert promtool_check_metrics(served.metrics().text) == ""
