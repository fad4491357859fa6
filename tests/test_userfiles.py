"""A user's collector files on a real server, through the real scrape path (dbperf's Exporter
behind its HTTP server): a cluster and a database collector with version ranges and labels serve
the right series and values; a missing label column, failing SQL, a timeout, a result over
max_rows and a counter that goes down are each a collector error or a report, never a crash,
and the other collectors keep succeeding; check-config lists the user's collectors; the output
passes promtool."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SECOND_DB, Served, promtool_check_metrics
from exporter.config import load
from exporter.registry import all_collectors
from exporter.server import Exporter

pytestmark = pytest.mark.pg

BUILTIN_OFF = "".join(f"  {c.name}: false\n" for c in all_collectors() if c.name != "server")


@pytest.fixture(scope="module")
def tables(pg):
    """Business tables: orders in the target's own database, an outbox in the second one only."""
    pg.execute("DROP TABLE IF EXISTS uf_orders, uf_counter; "
               "CREATE TABLE uf_orders (id int, status text, amount_cents bigint, region text); "
               "INSERT INTO uf_orders VALUES (1, 'waiting_payment', 1250, 'eu'), (2, 'waiting_payment', 750, 'us'), "
               "(3, 'paid', 9900, 'eu'); CREATE TABLE uf_counter (v bigint); INSERT INTO uf_counter VALUES (10); "
               "CREATE OR REPLACE FUNCTION uf_write() RETURNS int LANGUAGE sql "
               "AS 'INSERT INTO uf_orders VALUES (99, ''written'', 0, ''eu'') RETURNING 1'")
    pg.execute("DROP TABLE IF EXISTS uf_outbox; CREATE TABLE uf_outbox (id int, topic text); "
               "INSERT INTO uf_outbox SELECT g, CASE WHEN g <= 3 THEN 'mail' ELSE 'invoice' END "
               "FROM generate_series(1, 5) g", dbname=SECOND_DB)
    yield
    pg.execute("DROP TABLE IF EXISTS uf_orders, uf_counter; DROP FUNCTION IF EXISTS uf_write()")
    pg.execute("DROP TABLE IF EXISTS uf_outbox", dbname=SECOND_DB)


def major(pg) -> int:
    return int(pg.execute("SHOW server_version_num")[0][0]) // 10000


def shop_file(pg) -> str:
    """Two collectors: orders (cluster; the query for servers >= this major and the one for < it),
    and the outbox (database; a query for servers < the next major, another for >= it)."""
    this, following = major(pg) * 10000, (major(pg) + 1) * 10000
    return f"""\
collectors:
  orders:
    help: orders waiting for payment
    scope: cluster
    queries:
      - min_version: {this}
        sql: |
          SELECT status, region, count(*) AS n, sum(amount_cents) AS cents
          FROM uf_orders GROUP BY status, region
        labels: [status, region]
        metrics:
          - {{name: app_orders, type: gauge, column: n, help: "Orders by status and region."}}
          - {{name: app_orders_amount_euros, type: gauge, column: cents, scale: 0.01, help: "Order amounts."}}
      - min_version: {this}
        sql: SELECT 'new' AS branch
        labels: [branch]
        metrics:
          - {{name: app_orders_query_info, type: gauge, value: 1, help: "Which query ran; 1."}}
      - max_version: {this}
        sql: SELECT 'old' AS branch
        labels: [branch]
        metrics:
          - {{name: app_orders_query_info, type: gauge, help: "Which query ran; 1."}}
  outbox:
    help: rows in the outbox
    scope: database
    queries:
      - max_version: {following}
        sql: SELECT topic, count(*) AS n FROM uf_outbox GROUP BY topic ORDER BY topic
        labels: [topic]
        metrics:
          - {{name: app_outbox_rows, type: gauge, column: n, help: "Rows in the outbox, by topic."}}
      - min_version: {following}
        sql: SELECT 'never' AS topic, -1 AS n
        labels: [topic]
        metrics:
          - {{name: app_outbox_rows, type: gauge, column: n, help: "Rows in the outbox, by topic."}}
"""


BAD = """\
collectors:
  no_region:
    queries:
      - sql: SELECT status, count(*) AS n FROM uf_orders GROUP BY status
        labels: [status, region]
        metrics:
          - {name: app_orders_by_region, type: gauge, column: n, help: "Orders."}
  divides:
    queries:
      - sql: SELECT 1 / (SELECT count(*) - count(*) FROM uf_orders) AS n
        metrics:
          - {name: app_divided, type: gauge, column: n, help: "Never served."}
  sleeps:
    timeout: 200ms
    queries:
      - sql: SELECT pg_sleep(30) AS slept, 1 AS n
        metrics:
          - {name: app_slept, type: gauge, column: n, help: "Never served."}
  many:
    max_rows: 5
    queries:
      - sql: WITH RECURSIVE g(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM g) SELECT id, id AS n FROM g
        labels: [id]
        metrics:
          - {name: app_many, type: gauge, column: n, help: "Cut at 5."}
  words:
    queries:
      - sql: SELECT 'not a number' AS n
        metrics:
          - {name: app_words, type: gauge, column: n, help: "Never served."}
  writes:
    queries:
      - sql: SELECT uf_write() AS n
        metrics:
          - {name: app_written, type: gauge, column: n, help: "Never served."}
  twins:
    queries:
      - sql: SELECT region, id AS n FROM uf_orders
        labels: [region]
        metrics:
          - {name: app_twins, type: gauge, column: n, help: "Never served."}
"""


def write_config(tmp_path: Path, pg, files: dict, target_extra: str = "") -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    config = tmp_path / "dbperf.yaml"
    config.write_text(f"listen: 127.0.0.1:0\ncollector_files: [{', '.join(files)}]\ncollectors:\n{BUILTIN_OFF}"
                      f"targets:\n  - name: main\n    dsn: '{pg.dsn('postgres')}'\n{target_extra}")
    return config


@pytest.fixture
def served(pg, tables, tmp_path):
    started = []

    def start(files: dict, target_extra: str = "") -> Served:
        s = Served(Exporter(load(str(write_config(tmp_path, pg, files, target_extra)))))
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def test_a_cluster_and_a_database_collector_serve_the_right_series_by_version(pg, served):
    s = served({"shop.yaml": shop_file(pg)})
    samples = s.metrics()
    assert samples.value("pg_up", target="main") == 1
    assert samples.value("app_orders", target="main", status="waiting_payment", region="eu") == 1
    assert samples.value("app_orders", target="main", status="waiting_payment", region="us") == 1
    assert samples.value("app_orders", target="main", status="paid", region="eu") == 1
    assert len(samples.series("app_orders")) == 3
    assert samples.value("app_orders_amount_euros", status="waiting_payment", region="eu") == 12.5  # scale 0.01
    assert samples.value("app_orders_amount_euros", status="paid", region="eu") == 99.0
    # min_version = this major: the new query; the old one (max_version = this major) does not run
    assert [x.labels["branch"] for x in samples.series("app_orders_query_info")] == ["new"]
    # max_version = the next major: its query runs here, the other does not; datname added by dbperf
    assert samples.value("app_outbox_rows", target="main", datname=SECOND_DB, topic="mail") == 3
    assert samples.value("app_outbox_rows", target="main", datname=SECOND_DB, topic="invoice") == 2
    assert not samples.series("app_outbox_rows", topic="never")
    # the database collector ran on every database: where the table is missing it is unsupported
    assert samples.value("dbperf_collector_success", collector="outbox", datname=SECOND_DB) == 1
    assert samples.value("dbperf_collector_supported", collector="outbox", datname="postgres") == 0
    assert samples.value("dbperf_collector_success", collector="orders", datname="") == 1
    assert samples.value("dbperf_collector_rows_truncated", collector="orders", datname="") == 0
    assert samples.value("dbperf_collector_rows_truncated", collector="outbox", datname=SECOND_DB) == 0
    assert samples.value("dbperf_collector_duration_seconds", collector="orders", datname="") > 0
    assert promtool_check_metrics(samples.text) == ""


def test_a_user_collector_is_cached_for_its_ttl_and_switched_off_like_a_built_in_one(pg, served):
    s = served({"shop.yaml": shop_file(pg)}, "    collectors: {orders: {ttl: 1h}, outbox: false}\n")
    first = s.metrics()
    pg.execute("INSERT INTO uf_orders VALUES (4, 'paid', 100, 'us')")
    try:
        second = s.metrics()
        assert not second.has("app_orders", status="paid", region="us")  # served from the cache
        assert second.value("dbperf_collector_cache_age_seconds", collector="orders", datname="") > 0
        assert first.has("app_orders") and not first.has("app_outbox_rows")
        assert not first.has("dbperf_collector_success", collector="outbox")
    finally:
        pg.execute("DELETE FROM uf_orders WHERE id = 4")


def test_bad_collectors_fail_alone_with_their_reason(pg, served, caplog):
    with caplog.at_level("WARNING", logger="dbperf"):
        s = served({"shop.yaml": shop_file(pg), "bad.yaml": BAD})
        status, text = s.get()
        assert status == 200
    from conftest import Samples

    samples = Samples(text)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for name in ("no_region", "divides", "sleeps", "words", "twins", "writes"):
        assert samples.value("dbperf_collector_success", collector=name) == 0, name
        assert f"collector={name} failed" in logged, name
    # every other collector succeeded, in the same scrape
    assert samples.value("dbperf_collector_success", collector="server") == 1
    assert samples.value("dbperf_collector_success", collector="orders") == 1
    assert samples.value("dbperf_collector_success", collector="outbox", datname=SECOND_DB) == 1
    assert samples.value("dbperf_collector_success", collector="many") == 1
    reasons = {name: next(line for line in logged.splitlines() if f"collector={name} failed" in line)
               for name in ("no_region", "divides", "sleeps", "words", "twins", "writes")}
    assert "column region (a label of app_orders_by_region) is not in the query's result (its columns: status, n)" in \
        reasons["no_region"] and "bad.yaml: collectors.no_region.queries[0]" in reasons["no_region"]
    assert "division by zero" in reasons["divides"]
    assert "statement timeout" in reasons["sleeps"] or "cancel" in reasons["sleeps"]
    assert "column n holds" in reasons["words"] or "not numbers" in reasons["words"]
    assert "two rows have the same labels {region=\"eu\"}" in reasons["twins"]
    # a function that writes, called by a query that looks read-only: the session refuses it
    assert "cannot execute INSERT in a read-only transaction" in reasons["writes"]
    assert not pg.execute("SELECT 1 FROM uf_orders WHERE id = 99")
    for name in ("app_orders_by_region", "app_divided", "app_slept", "app_words", "app_twins"):
        assert not samples.has(name), name
    assert promtool_check_metrics(text) == ""


def test_a_result_over_max_rows_is_cut_by_the_server_and_reported(pg, served, caplog):
    """An endless query (a recursive WITH without an end) finishes within its timeout: the
    server stops at max_rows + 1 rows."""
    with caplog.at_level("WARNING", logger="dbperf"):
        s = served({"bad.yaml": BAD}, "    collectors: {" + ", ".join(
            f"{n}: false" for n in ("no_region", "divides", "sleeps", "words", "twins", "writes")) + "}\n")
        first, second = s.metrics(), s.metrics()
    for samples in (first, second):
        assert samples.value("dbperf_collector_success", collector="many") == 1
        assert sorted(int(x.labels["id"]) for x in samples.series("app_many")) == [1, 2, 3, 4, 5]
        assert samples.value("dbperf_collector_rows_truncated", collector="many", datname="") == 1
    cut = [r.getMessage() for r in caplog.records if "collector=many" in r.getMessage()]
    assert len(cut) == 1, cut  # rate-limited: once a minute
    assert "more than max_rows=5 rows; cut to 5" in cut[0]
    assert promtool_check_metrics(second.text) == ""


def test_a_counter_that_goes_down_is_reported_once_per_series(pg, served, caplog):
    counter = """\
collectors:
  jobs:
    queries:
      - sql: SELECT 'a' AS queue, v AS n FROM uf_counter UNION ALL SELECT 'b', 7
        labels: [queue]
        metrics:
          - {name: app_jobs_processed_total, type: counter, column: n, help: "Jobs processed."}
"""
    s = served({"jobs.yaml": counter})
    try:
        with caplog.at_level("WARNING", logger="dbperf"):
            assert s.metrics().value("app_jobs_processed_total", queue="a") == 10
            pg.execute("UPDATE uf_counter SET v = 4")
            assert s.metrics().value("app_jobs_processed_total", queue="a") == 4  # served as it is
            pg.execute("UPDATE uf_counter SET v = 2")
            third = s.metrics()
        assert third.value("app_jobs_processed_total", queue="a") == 2
        assert third.value("dbperf_collector_success", collector="jobs") == 1
        down = [r.getMessage() for r in caplog.records if "went down" in r.getMessage()]
        assert down == ['target=main collector=jobs metric=app_jobs_processed_total series {queue="a"} went down '
                        'from 10.0 to 4.0: a counter must never decrease (make it a gauge, or fix the SQL); '
                        'reported once per series'], down
    finally:
        pg.execute("UPDATE uf_counter SET v = 10")


def test_check_config_lists_the_user_collectors(pg, tmp_path):
    config = write_config(tmp_path, pg, {"shop.yaml": shop_file(pg)}, "    collectors: {outbox: {ttl: 30s}}\n")
    proc = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert lines["orders"].split()[:4] == ["orders", "cluster", "0s", "2s"]
    assert lines["outbox"].split()[:4] == ["outbox", "database", "30s", "2s"]
    assert f"(user: {tmp_path / 'shop.yaml'}, max_rows 10000)" in lines["outbox"]
    assert f"{major(pg)}" in lines["orders"].split()[5]


def test_a_bad_collector_file_stops_dbperf_serve_with_one_line(pg, tmp_path):
    text = shop_file(pg).replace("column: cents", "colum: cents")
    config = write_config(tmp_path, pg, {"shop.yaml": text})
    proc = subprocess.run([sys.executable, "-m", "exporter", "serve", "--config", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0
    assert f"{tmp_path / 'shop.yaml'}: collectors.orders.queries[0].metrics[1].colum: unknown key (allowed: " \
        in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


DOCS = ROOT / "docs" / "custom-collectors.md"


def doc_files() -> dict:
    """The collector files of docs/custom-collectors.md: its yaml blocks that start with
    ``# collector file: NAME``."""
    out = {}
    for block in re.findall(r"^```yaml\n(.*?)^```", DOCS.read_text(), re.S | re.M):
        first = block.split("\n", 1)[0]
        if first.startswith("# collector file: "):
            out[first.removeprefix("# collector file: ")] = block
    return out


def test_the_examples_of_the_docs_serve_their_metrics(pg, tmp_path):
    files = doc_files()
    assert set(files) == {"shop.yaml", "outbox.yaml", "versions.yaml"}
    pg.execute("DROP DATABASE IF EXISTS uf_docs")
    pg.execute("CREATE DATABASE uf_docs")
    try:
        pg.execute("CREATE TABLE orders (id serial, status text, payment_method text, amount_cents bigint, "
                   "created_at timestamptz DEFAULT now() - interval '90 seconds'); "
                   "INSERT INTO orders (status, payment_method, amount_cents) VALUES "
                   "('waiting_payment', 'card', 1000), ('waiting_payment', 'card', 520), ('paid', 'card', 7)",
                   dbname="uf_docs")
        pg.execute("CREATE TABLE outbox (id bigserial, topic text, created_at timestamptz DEFAULT now()); "
                   "INSERT INTO outbox (topic) SELECT 'invoice' FROM generate_series(1, 3)", dbname="uf_docs")
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        config = tmp_path / "dbperf.yaml"
        config.write_text(f"listen: 127.0.0.1:0\ncollector_files: [{', '.join(files)}]\ncollectors:\n{BUILTIN_OFF}"
                          f"targets:\n  - name: main\n    dsn: '{pg.dsn('uf_docs')}'\n"
                          "    databases: {discover: false}\n")
        s = Served(Exporter(load(str(config))))
        try:
            samples = s.metrics()
        finally:
            s.close()
    finally:
        pg.execute("DROP DATABASE IF EXISTS uf_docs WITH (FORCE)")
    for name in ("orders_waiting", "checkpoints_requested"):
        assert samples.value("dbperf_collector_success", collector=name, datname="") == 1, name
    assert samples.value("dbperf_collector_success", collector="outbox", datname="uf_docs") == 1
    assert samples.value("shop_orders_waiting_payment", payment_method="card") == 2
    assert samples.value("shop_orders_waiting_payment_amount_euros", payment_method="card") == 15.2
    assert samples.value("shop_orders_waiting_payment_oldest_age_seconds", payment_method="card") >= 90
    assert samples.value("app_outbox_rows", topic="invoice", datname="uf_docs") == 3
    assert samples.value("app_outbox_written_rows_total", datname="uf_docs") == 3
    assert samples.has("app_checkpoints_requested_total")
    assert promtool_check_metrics(samples.text) == ""
