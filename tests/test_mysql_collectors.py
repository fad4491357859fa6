"""kind: mysql's collectors against a real throwaway MariaDB with a workload: each collector's
numbers against what the test did (rows written, statements run, a held metadata lock, a long
statement), and the whole output through promtool."""

from __future__ import annotations

import threading

import pytest

from conftest import Samples, mysql_dsn, promtool_check_metrics, wait_until
from exporter.config import parse
from exporter.mysql.kind import catalog
from exporter.scrape import TargetScraper

pytestmark = pytest.mark.pg

SCHEMA = "dbperf_test"


@pytest.fixture(scope="module")
def scraper(mariadb):
    mariadb.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.orders (id INT PRIMARY KEY, note VARCHAR(100)) "
                    "ENGINE=InnoDB")
    mariadb.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.archive (id INT PRIMARY KEY, note VARCHAR(100)) ENGINE=MyISAM")
    mariadb.execute(f"INSERT INTO {SCHEMA}.archive SELECT seq, CONCAT('note ', seq) FROM {SCHEMA}.seq_1_to_123")
    config = parse({"targets": [{"name": "my", "kind": "mysql", "dsn": mysql_dsn(mariadb)}]}, source="test")
    s = TargetScraper(config.targets[0])
    yield s
    s.close()


def scrape(scraper) -> Samples:
    return Samples(scraper.scrape(10.0).encode().decode())


def test_every_collector_succeeds_and_promtool_accepts_the_output(scraper):
    text = scraper.scrape(10.0).encode().decode()
    samples = Samples(text)
    for collector in ("server", "variables", "innodb", "processlist", "tables", "table_io", "global_status",
                      "replication", "statements"):
        assert samples.value("dbperf_collector_success", collector=collector) == 1, collector
    assert samples.value("mysql_up") == 1
    assert promtool_check_metrics(text) == ""


def test_server_info_and_variables(scraper, mariadb):
    samples = scrape(scraper)
    (version,), = mariadb.execute("SELECT VERSION()")
    assert samples.value("mysql_server_info", version=version, flavour="mariadb", role="primary") == 1
    assert samples.value("mysql_server_read_only") == 0
    assert samples.value("mysql_server_uptime_seconds") >= 0
    assert samples.value("mysql_global_variables_max_connections") == 100  # the fixture's setting
    assert samples.value("mysql_global_variables_innodb_buffer_pool_size_bytes") == 32 * 1024 * 1024
    assert samples.value("mysql_global_variables_long_query_time_seconds") == 10.0
    assert samples.value("mysql_global_variables_performance_schema") == 1


def test_statement_and_row_counters_follow_the_workload(scraper, mariadb):
    before = scrape(scraper)
    conn = mariadb.connect(database=SCHEMA)
    try:
        with conn.cursor() as cur:
            for i in range(7):  # 7 INSERT statements, 20 rows each: ids 1 .. 140
                cur.execute(f"INSERT INTO orders (id, note) SELECT seq + {20 * i}, CONCAT('row ', seq) FROM seq_1_to_20")
            cur.execute("UPDATE orders SET note = 'changed' WHERE id <= 30")
            cur.execute("DELETE FROM orders WHERE id > 130")
    finally:
        conn.close()
    after = scrape(scraper)

    def delta(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("mysql_global_status_commands_total", command="insert_select") == 7  # INSERT ... SELECT
    assert delta("mysql_global_status_commands_total", command="update") == 1
    assert delta("mysql_global_status_commands_total", command="delete") == 1
    assert delta("mysql_global_status_questions_total") >= 9
    assert delta("mysql_global_status_handler_writes_total", operation="write") >= 140
    assert delta("mysql_global_status_handler_writes_total", operation="update") >= 30
    assert delta("mysql_global_status_handler_writes_total", operation="delete") >= 10
    # MariaDB 10.6+ has no Innodb_rows_* status variables: the family is MySQL's (and older MariaDB's)
    assert not after.series("mysql_innodb_row_operations_total")
    # per-table I/O from performance_schema: exactly this test's rows (the table is this test's own)
    table = {"schema": SCHEMA, "table": "orders"}
    assert delta("mysql_table_io_inserted_rows_total", **table) == 140
    assert delta("mysql_table_io_updated_rows_total", **table) == 30
    assert delta("mysql_table_io_deleted_rows_total", **table) == 10
    assert delta("mysql_table_io_fetched_rows_total", **table) >= 30
    assert after.value("mysql_table_io_insert_seconds_total", **table) > 0


def test_innodb_buffer_pool(scraper):
    samples = scrape(scraper)
    pages = {s.labels["state"]: s.value for s in samples.series("mysql_innodb_buffer_pool_pages")}
    assert set(pages) == {"data", "free", "dirty", "misc"}
    size = samples.value("mysql_innodb_buffer_pool_size_pages")
    # the pool's pages, less InnoDB's own bookkeeping in it
    assert 0.9 * 32 * 1024 * 1024 < size * samples.value("mysql_innodb_page_size_bytes") <= 32 * 1024 * 1024
    assert pages["data"] + pages["free"] + pages["misc"] == size
    requests, reads = (samples.value("mysql_innodb_buffer_pool_read_requests_total"),
                       samples.value("mysql_innodb_buffer_pool_disk_reads_total"))
    assert samples.value("mysql_innodb_buffer_pool_hit_ratio") == pytest.approx(requests / (requests + reads))
    for name in ("mysql_innodb_row_lock_waits_total", "mysql_innodb_deadlocks_total", "mysql_innodb_history_list_length",
                 "mysql_innodb_checkpoint_age_bytes"):
        assert samples.value(name) >= 0


def test_table_sizes_and_rows(scraper):
    samples = scrape(scraper)
    archive = {"schema": SCHEMA, "table": "archive"}
    assert samples.value("mysql_table_rows", **archive) == 123  # MyISAM: exact
    assert samples.value("mysql_table_data_bytes", **archive) > 0
    assert samples.value("mysql_table_info", engine="MyISAM", **archive) == 1
    assert samples.value("mysql_table_info", engine="InnoDB", schema=SCHEMA, table="orders") == 1
    assert not samples.series("mysql_table_rows", schema="mysql")  # the server's own schemas are left out


def test_a_held_metadata_lock_shows_its_waiter_and_its_age(scraper, mariadb):
    holder = mariadb.connect(database=SCHEMA)
    waiter = mariadb.connect(database=SCHEMA)
    done = threading.Event()
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT COUNT(*) FROM orders")  # holds the table's metadata lock until COMMIT

        def alter():
            try:
                with waiter.cursor() as cur:
                    cur.execute("SET SESSION lock_wait_timeout = 60")
                    cur.execute("ALTER TABLE orders ADD COLUMN extra INT")
            finally:
                done.set()

        thread = threading.Thread(target=alter, daemon=True)
        thread.start()

        def waiting():
            samples = scrape(scraper)
            return samples if (samples.value("mysql_processlist_metadata_lock_waiters") == 1
                               and samples.value("mysql_processlist_oldest_active_seconds") >= 1) else None

        samples = wait_until(waiting, timeout=20, message="the ALTER waiting for the metadata lock for 1 s")
        assert samples.value("mysql_processlist_threads", command="Query", state="Waiting for table metadata lock") == 1
        assert samples.value("mysql_processlist_active_threads") >= 1
        assert samples.value("mysql_processlist_sleeping_threads") >= 1  # the holder, idle in its transaction
        assert samples.value("mysql_processlist_long_running_threads") == 0  # not 60 s yet
        with holder.cursor() as cur:
            cur.execute("COMMIT")
        assert done.wait(20)
        assert scrape(scraper).value("mysql_processlist_metadata_lock_waiters") == 0
    finally:
        holder.close()
        waiter.close()


def test_a_primary_has_no_replication_series(scraper):
    samples = scrape(scraper)
    assert samples.value("dbperf_collector_success", collector="replication") == 1
    assert not [n for n in samples.names() if n.startswith("mysql_replication_")]


def test_each_flavour_has_its_queries():
    for collector in catalog():
        for flavour, version in (("mariadb", 100600), ("mysql", 80036)):
            assert collector.plan(version, flavour), (collector.name, flavour)
    innodb = next(c for c in catalog() if c.name == "innodb")
    assert all("information_schema.global_status" in q.sql for q in innodb.plan(101100, "mariadb"))
    assert all("performance_schema.global_status" in q.sql for q in innodb.plan(80036, "mysql"))


# MySQL-only SQL that MariaDB cannot run, and why (the rest of the MySQL paths must run here too)
MYSQL_ONLY = {("innodb", 1054): "information_schema.innodb_metrics has ENABLED on MariaDB, MySQL's STATUS column"}


def test_the_mysql_flavour_sql_runs_on_mariadb_where_it_reads_the_same_tables(mariadb):
    """No MySQL 8 server is installable here: the MySQL-only queries run on MariaDB, which has
    performance_schema.global_status, replication_connection_configuration, innodb_metrics and SHOW
    REPLICA STATUS too, so a syntax error or a wrong table name fails here; only the differences
    listed in MYSQL_ONLY may fail, and only with their error."""
    import pymysql

    from exporter.mysql.replication import ReplicationCollector

    conn = mariadb.connect()
    failures = []
    try:
        queries = [(c.name, q.sql) for c in catalog() for q in c.plan(80036, "mysql")]
        queries.append(("replication", ReplicationCollector.sql("mysql", 80036)))
        for name, sql in queries:
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.replace("{table_limit}", "10"))
                    cur.fetchall()
            except pymysql.err.MySQLError as exc:
                if (name, exc.args[0]) not in MYSQL_ONLY:
                    failures.append(f"{name}: {exc}")
    finally:
        conn.close()
    assert not failures


def test_row_lock_waits_and_deadlocks_are_counted(scraper, mariadb):
    import pymysql

    mariadb.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.locks (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
    mariadb.execute(f"REPLACE INTO {SCHEMA}.locks VALUES (1, 0), (2, 0)")
    before = scrape(scraper)
    a, b = mariadb.connect(database=SCHEMA), mariadb.connect(database=SCHEMA)
    try:
        with a.cursor() as ca, b.cursor() as cb:
            # one row lock wait of about 1 s: b waits for a's lock until innodb_lock_wait_timeout
            cb.execute("SET SESSION innodb_lock_wait_timeout = 1")
            ca.execute("BEGIN")
            ca.execute("UPDATE locks SET v = v + 1 WHERE id = 1")
            with pytest.raises(pymysql.err.OperationalError) as waited:
                cb.execute("UPDATE locks SET v = v + 1 WHERE id = 1")
            assert waited.value.args[0] == 1205  # lock wait timeout exceeded
            ca.execute("ROLLBACK")
            # one deadlock: a holds 1 and wants 2, b holds 2 and wants 1
            cb.execute("SET SESSION innodb_lock_wait_timeout = 20")
            ca.execute("BEGIN")
            cb.execute("BEGIN")
            ca.execute("UPDATE locks SET v = v + 1 WHERE id = 1")
            cb.execute("UPDATE locks SET v = v + 1 WHERE id = 2")
            failed = []
            waiter = threading.Thread(target=lambda: _catch(failed, ca, "UPDATE locks SET v = v + 1 WHERE id = 2"))
            waiter.start()
            wait_until(lambda: scrape(scraper).value("mysql_innodb_row_lock_current_waits") == 1, timeout=10,
                       message="a waiting for b's row lock")
            _catch(failed, cb, "UPDATE locks SET v = v + 1 WHERE id = 1")
            waiter.join(20)
            assert failed == [1213]  # one of the two was chosen as the deadlock victim
            ca.execute("ROLLBACK")
            cb.execute("ROLLBACK")
    finally:
        a.close()
        b.close()
    after = scrape(scraper)
    assert after.value("mysql_innodb_row_lock_waits_total") - before.value("mysql_innodb_row_lock_waits_total") == 2
    waited_seconds = (after.value("mysql_innodb_row_lock_wait_seconds_total")
                      - before.value("mysql_innodb_row_lock_wait_seconds_total"))
    assert 0.9 <= waited_seconds < 10
    assert after.value("mysql_innodb_deadlocks_total") - before.value("mysql_innodb_deadlocks_total") == 1
    assert after.value("mysql_innodb_row_lock_current_waits") == 0


def _catch(failed: list, conn_cursor, sql: str) -> None:
    import pymysql

    try:
        conn_cursor.execute(sql)
    except pymysql.err.OperationalError as exc:
        failed.append(exc.args[0])
