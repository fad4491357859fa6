"""Every metric a rule reads exists in a real exposition, with the type its functions need:
dbperf against the test PostgreSQL (pg_stat_statements, a pipelines source, a replication slot),
against a PostgreSQL that logs what docs/server-log.md asks for (its target with server_log:, after
one of each incident of exporter/incidents.py: the pg_log_* series appear with their first event), a
real PgBouncer and a real MariaDB replica (tests/mysqlpair.py), the application library's registry
with an instrumented pool, and the real Prometheus and Alertmanager. A rule on a name nobody emits can never fire."""

from __future__ import annotations

import re
import threading

import psycopg_pool
import pytest
import requests
from prometheus_client import generate_latest

from conftest import Served, wait_until
from exporter import incidents
from exporter.config import parse
from exporter.instrument import Instrumentation, LogHandler
from exporter.pgcluster import Cluster
from exporter.pipelines.schema import SQL as PIPELINES_SQL
from exporter.server import Exporter
from exporter.serverlog.settings import throwaway_settings
from exporter.workload import setup_schema
from conftest import Prometheus
from mysqlpair import beat, heartbeat_table, replicated_pair
from test_alerts_support import RULES, Alertmanager, metric_names, range_function_args, rules
from test_pgbouncer import Bouncer

pytestmark = pytest.mark.prom

DB = "alerts_pipelines"
SLOT = "dbperf_alerts_test"
BUILTIN = {"up"}  # made by Prometheus for every scrape target
RANGE_NEEDS = {"rate": "counter", "irate": "counter", "increase": "counter", "resets": "counter",
               "deriv": "gauge", "predict_linear": "gauge", "delta": "gauge", "idelta": "gauge", "changes": None}


def types_of(text: str) -> dict[str, str]:
    """Series name -> 'counter' or 'gauge' from an exposition's TYPE lines (histogram and summary
    series are counters, except quantiles)."""
    out = {}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter":
            out[name] = "counter"
            out[name if name.endswith("_total") else name + "_total"] = "counter"
        elif kind in ("histogram", "summary"):
            for suffix in ("_bucket", "_sum", "_count"):
                out[name + suffix] = "counter"
            if kind == "summary":
                out[name] = "gauge"
        else:
            out[name] = "gauge"
    return out


@pytest.fixture(scope="module")
def exposition(pg, tmp_path_factory):
    texts = {}
    # dbperf: a PostgreSQL target with a pipelines source and a replication slot, and a PgBouncer
    pg.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {DB}")
    pg.execute(PIPELINES_SQL, dbname=DB)
    pg.execute("INSERT INTO dbperf.pipeline_runs (pipeline, run_id, status, started_at, finished_at) VALUES "
               "('etl', '1', 'success', now() - interval '1 hour', now() - interval '50 minutes'), "
               "('etl', '2', 'failed', now() - interval '20 minutes', now() - interval '10 minutes'), "
               "('etl', '3', 'running', now() - interval '5 minutes', NULL)", dbname=DB)
    pg.execute("CREATE TABLE IF NOT EXISTS alerts_t (id int); INSERT INTO alerts_t VALUES (1); DELETE FROM alerts_t",
               dbname=DB)
    if not pg.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", params=(SLOT,)):
        pg.execute("SELECT pg_create_physical_replication_slot(%s, true)", params=(SLOT,))
    bouncer = Bouncer(pg.dsn("postgres")).start()
    config = parse({"listen": "127.0.0.1:0", "state_dir": str(tmp_path_factory.mktemp("state")), "targets": [
        {"name": "main", "dsn": pg.dsn("postgres"), "collectors": {"pipelines": {"ttl": 0}}, "plans": {"enabled": True},
         "pipelines": {"sources": [{"type": "table", "database": DB, "expected_intervals": {"etl": "1h"}}]}},
        {"name": "bouncer", "kind": "pgbouncer", "dsn": bouncer.admin_dsn()}]}, source="test-config")
    served = Served(Exporter(config))
    try:
        # statements need two scrapes for the workload histogram; pipelines need its database found
        wait_until(lambda: "pipeline_last_run_status{" in served.get()[1] and "pg_statement_duration_seconds_bucket"
                   in served.get()[1], timeout=30, message="pipelines and statements series")
        texts["dbperf"] = served.get()[1]
    finally:
        served.close()
        bouncer.cleanup()
        pg.execute("SELECT pg_drop_replication_slot(%s)", params=(SLOT,))
    # the application library, with an instrumented pool
    inst = Instrumentation()
    pool = psycopg_pool.ConnectionPool(pg.dsn("postgres"), min_size=1, max_size=2, open=True, name="main")
    try:
        inst.instrument_psycopg_pool(pool)
        LogHandler(inst)  # app_log_messages_total (AppErrorLogsRising), not installed on any logger
        texts["app"] = generate_latest(inst.registry).decode()
    finally:
        pool.close()
    # the real Prometheus (rules loaded, sending to an Alertmanager) and Alertmanager
    am = Alertmanager({"route": {"receiver": "hook"},
                       "receivers": [{"name": "hook", "webhook_configs": [{"url": "http://127.0.0.1:9/"}]}]})
    prom = Prometheus([], [str(p) for p in sorted(RULES.glob("*.yml"))], am.url)
    try:
        wait_until(lambda: "prometheus_notifications_errors_total{" in requests.get(prom.url + "/metrics", timeout=5).text,
                   timeout=30, message="Prometheus discovering the Alertmanager")
        texts["prometheus"] = requests.get(prom.url + "/metrics", timeout=5).text
        texts["alertmanager"] = requests.get(am.url + "/metrics", timeout=5).text
    finally:
        prom.stop()
        am.stop()
    return texts


def log_series_in_rules() -> set[str]:
    return {name for rule in rules() for name in metric_names(rule["expr"]) if name.startswith("pg_log_")}


def samples_of(text: str) -> set[str]:
    return set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))


@pytest.fixture(scope="module")
def log_exposition(tmp_path_factory):
    """dbperf's exposition of a target with server_log: on a cluster with the logging settings, once
    each incident (logins, a wrong password, a unique violation, a lock wait, a temporary file, DDL,
    a deadlock, a checkpoint) has been read: every pg_log_* series a rule reads has samples."""
    cluster = Cluster()
    fmt, settings = throwaway_settings(cluster.major())
    cluster.settings.update(settings)
    with cluster:
        setup_schema(cluster.dsn())
        incidents.setup(cluster.dsn(), "alerts-pw")
        cluster.require_password(incidents.LOGIN_ROLE)
        config = parse({"listen": "127.0.0.1:0", "state_dir": str(tmp_path_factory.mktemp("log-state")), "targets": [
            {"name": "logged", "dsn": cluster.dsn(),
             "server_log": {"path": str(cluster.datadir / "log"), "format": fmt, "interval": 0.1}}]},
            source="test-config")
        served = Served(Exporter(config))
        try:
            served.get()  # the first scrape starts the reader; its first read puts it at the end of the log
            log, = [c for c in served.exporter.scrapers["logged"].collectors if c.name == "server_log"]
            wait_until(lambda: log.shared.reader.reads > 0, timeout=15, message="the log reader's first read")
            incidents.Incidents(cluster.dsn(), cluster.dsn(user=incidents.LOGIN_ROLE), "alerts-pw",
                                threading.Event()).run_each_once()
            needed = log_series_in_rules()
            assert {"pg_log_auth_failures_total", "pg_log_ddl_total"} <= needed, needed
            return wait_until(lambda: (text := served.get()[1]) and needed <= samples_of(text) and text, timeout=30,
                              message=f"samples of {sorted(needed)}")
        finally:
            served.close()


@pytest.fixture(scope="module")
def mysql_exposition():
    """dbperf's exposition of a kind: mysql target: a MariaDB replica (replication running, so it
    reports its lag, and a pt-heartbeat table with a row from the source, so its heartbeat lag)
    with a statement digest of its own."""
    with replicated_pair() as (source, replica):
        source.execute(heartbeat_table("shop"))
        beat(source, "shop")
        replica.execute("SELECT COUNT(*) FROM shop.orders")
        config = parse({"listen": "127.0.0.1:0", "targets": [
            {"name": "my", "kind": "mysql", "dsn": replica.dsn(), "replication": {"heartbeat_table": "shop.heartbeat"}}]},
            source="test-config")
        served = Served(Exporter(config))
        needed = ("mysql_statements_calls_total{", "mysql_replication_lag_seconds{",
                  "mysql_replication_heartbeat_lag_seconds{")

        def complete():
            text = served.get()[1]
            return text if all(n in text for n in needed) else None
        try:
            return wait_until(complete, timeout=30, message="statements and replication series")
        finally:
            served.close()


def test_every_metric_in_the_rules_is_emitted(exposition, log_exposition, mysql_exposition):
    emitted = {}
    for text in [*exposition.values(), log_exposition, mysql_exposition]:
        emitted.update(types_of(text))
    recorded = {r["record"] for r in rules() if "record" in r}
    missing = []
    for rule in rules():
        for name in metric_names(rule["expr"]) - recorded - BUILTIN:
            if name not in emitted:
                missing.append(f"{rule.get('alert') or rule.get('record')}: {name}")
    assert not missing, "rules read metrics nobody emits:\n" + "\n".join(sorted(set(missing)))


def test_range_functions_match_metric_types(exposition, log_exposition, mysql_exposition):
    emitted = {}
    for text in [*exposition.values(), log_exposition, mysql_exposition]:
        emitted.update(types_of(text))
    wrong = []
    for rule in rules():
        for function, name in range_function_args(rule["expr"]):
            need = RANGE_NEEDS[function]
            if name.startswith("dbperf:") or need is None:
                continue
            if emitted.get(name) != need:
                wrong.append(f"{rule.get('alert') or rule.get('record')}: {function}() on {name} ({emitted.get(name)})")
    assert not wrong, "\n".join(wrong)


def test_name_extraction_sees_what_promql_reads():
    """The checks above are only as good as the parser: it must find names, not labels or functions."""
    expr = ('sum by (job, datname) (rate(pg_stat_database_xact_rollback_total{status=~"5..",le="0.5"}[5m] offset 1w))\n'
            '/ on (job) group_left (x) dbperf:rec:rate5m > 0.1 and up{job=~"dbperf.*"} == 0 '
            'unless time() - last_autovacuum_timestamp_seconds < 86400')
    assert metric_names(expr) == {"pg_stat_database_xact_rollback_total", "dbperf:rec:rate5m", "up",
                                  "last_autovacuum_timestamp_seconds"}
    assert range_function_args(expr) == [("rate", "pg_stat_database_xact_rollback_total")]
    assert types_of("# TYPE a counter\n# TYPE b_total counter\n# TYPE h histogram\n# TYPE g gauge\n") == {
        "a": "counter", "a_total": "counter", "b_total": "counter", "h_bucket": "counter", "h_sum": "counter",
        "h_count": "counter", "g": "gauge"}
