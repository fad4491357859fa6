"""End to end: real faults on a throwaway PostgreSQL -> dbperf -> the real Prometheus (rules of the
`test` profile, 1 s scrapes and evaluations) -> the real Alertmanager (alerts/alertmanager.yml's
routes and inhibitions, every receiver a webhook into this test) -> notifications, resolutions, and
an acknowledgement made with `dbperf alerts ack` that stops the repeats.

Bounded: every wait polls with a deadline; the whole module takes about a minute."""

from __future__ import annotations

import math
import subprocess
import sys

import psycopg
import pytest

from conftest import ROOT, Served, wait_until
from exporter.config import parse
from exporter.pgcluster import Cluster, free_port
from exporter.pipelines.schema import SQL as PIPELINES_SQL
from exporter.server import Exporter
from test_alerts_support import alerting_stack, e2e_workdir

pytestmark = pytest.mark.e2e

ETL = "etl"
MAX_CONNECTIONS = 20


@pytest.fixture(scope="module")
def stack():
    with e2e_workdir("dbperf-alerts-e2e-") as (workdir, rules, started):
        port = free_port()  # dbperf's, known to Prometheus before it starts
        hook, am, prom = alerting_stack(f"http://127.0.0.1:{port}", rules, workdir, started)
        cluster = Cluster(settings={"max_connections": str(MAX_CONNECTIONS)})
        started.append(cluster.cleanup)
        cluster.__enter__()
        cluster.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        cluster.psql(f"CREATE DATABASE {ETL}")
        cluster.psql(PIPELINES_SQL, dbname=ETL)
        cluster.psql("INSERT INTO dbperf.pipeline_runs (pipeline, run_id, status, started_at, finished_at) "
                     "VALUES ('nightly', 'r1', 'success', now() - interval '2 minutes', now() - interval '1 minute')",
                     dbname=ETL)
        config = parse({"listen": "127.0.0.1:0", "targets": [{
            "name": "main", "dsn": cluster.dsn("postgres"), "collectors": {"pipelines": {"ttl": 0}},
            "pipelines": {"sources": [{"type": "table", "database": ETL, "expected_intervals": {"nightly": "24h"}}]}}]},
            source="e2e-config")
        served = Served(Exporter(config), port)
        started.append(served.close)
        wait_until(lambda: prom.query('pg_up{target="main"} == 1'), timeout=30, message="Prometheus scraping dbperf")
        yield {"cluster": cluster, "prom": prom, "am": am, "hook": hook, "dbperf": served}


def ack(am_url: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "exporter", "alerts", "--alertmanager", am_url, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def firing(stack, alertname: str, **labels) -> list:
    selector = ",".join([f'alertname="{alertname}"', 'alertstate="firing"'] + [f'{k}="{v}"' for k, v in labels.items()])
    return stack["prom"].query(f"ALERTS{{{selector}}}")


def test_watchdog_heartbeat(stack):
    hook = stack["hook"]
    wait_until(lambda: len(hook.notifications("Watchdog", "firing", path="/heartbeat")) >= 2, timeout=30,
               message="two Watchdog heartbeats")
    assert not hook.notifications("Watchdog", path="/critical") and not hook.notifications("Watchdog", path="/warning")


def test_postgresql_down_pages_and_resolves(stack):
    hook, cluster = stack["hook"], stack["cluster"]
    cluster.stop()
    try:
        sent = wait_until(lambda: hook.notifications("PostgreSQLDown", "firing"), timeout=45,
                          message="PostgreSQLDown at the webhook")
        assert {n["_path"] for n in sent} == {"/critical"}
        alert = sent[0]
        assert alert["labels"]["target"] == "main" and alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["runbook_url"].endswith("#postgresqldown")
        assert "target main" in alert["annotations"]["description"]
    finally:
        cluster.start()
    wait_until(lambda: hook.notifications("PostgreSQLDown", "resolved", path="/critical"), timeout=60,
               message="PostgreSQLDown resolved at the webhook")
    # the restart is an info alert: firing in Prometheus, never sent
    wait_until(lambda: firing(stack, "PostgreSQLRestarted", target="main"), timeout=30,
               message="PostgreSQLRestarted firing")
    assert not hook.notifications("PostgreSQLRestarted")


def test_idle_in_transaction_acknowledged_then_resolved(stack):
    hook, am = stack["hook"], stack["am"]
    conn = psycopg.connect(stack["cluster"].dsn("postgres"))
    try:
        conn.execute("SELECT 1")  # opens a transaction and leaves it idle
        first = wait_until(lambda: hook.notifications("PostgreSQLIdleInTransaction", "firing"), timeout=45,
                           message="PostgreSQLIdleInTransaction at the webhook")
        assert {n["_path"] for n in first} == {"/warning"}
        assert first[0]["labels"]["datname"] == "postgres"
        # not acknowledged yet: it is repeated (every repeat_interval, E2E_TIMERS)
        wait_until(lambda: len(hook.notifications("PostgreSQLIdleInTransaction", "firing")) >= 2, timeout=30,
                   message="a repeated notification")
        out = ack(am.url, "ack", "PostgreSQLIdleInTransaction", "--label", "target=main", "--label", "datname=postgres",
                  "--for", "10m", "--comment", "e2e: looking at it", "--author", "e2e")
        silence_id = out.split("silence ")[1].split()[0]
        assert "1 firing alert(s) matched" in out
        wait_until(lambda: any(a["status"]["silencedBy"] == [silence_id] for a in am.alerts()
                               if a["labels"]["alertname"] == "PostgreSQLIdleInTransaction"), timeout=10,
                   message="the alert silenced")
        # a flush already under way when the silence was created may still deliver: count from the
        # next heartbeat on
        beats = len(hook.notifications("Watchdog"))
        wait_until(lambda: len(hook.notifications("Watchdog")) > beats, timeout=20, message="a heartbeat")
        acked_at = len(hook.notifications("PostgreSQLIdleInTransaction"))
        beats = len(hook.notifications("Watchdog"))
        # three more heartbeats (each repeat interval) and no new notification of the acknowledged alert
        wait_until(lambda: len(hook.notifications("Watchdog")) >= beats + 3, timeout=40, message="heartbeats")
        assert len(hook.notifications("PostgreSQLIdleInTransaction")) == acked_at
        assert "ACKED by e2e" in ack(am.url, "list")
        # it still fires in Prometheus: acknowledging does not resolve it
        assert firing(stack, "PostgreSQLIdleInTransaction", datname="postgres")
        # unacknowledged, it is sent again; the fault undone, it resolves
        ack(am.url, "unack", silence_id)
        wait_until(lambda: len(hook.notifications("PostgreSQLIdleInTransaction", "firing")) > acked_at, timeout=30,
                   message="sent again after unack")
    finally:
        conn.rollback()
        conn.close()
    wait_until(lambda: hook.notifications("PostgreSQLIdleInTransaction", "resolved", path="/warning"), timeout=45,
               message="PostgreSQLIdleInTransaction resolved")


def test_connections_near_the_limit(stack):
    hook, prom, cluster = stack["hook"], stack["prom"], stack["cluster"]
    limit = float(prom.query('pg_connections_limit{target="main"}')[0]["value"][1])
    assert limit == MAX_CONNECTIONS - 3

    def ratio() -> float:  # nan until the recording rule has run once
        found = prom.query('dbperf:pg_connections:use_ratio{target="main"}')
        return float(found[0]["value"][1]) if found else math.nan

    def client_sessions() -> int:  # as the server counts them (psql's own session left out)
        return int(cluster.psql("SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'"))

    # sessions for a use ratio above the test threshold (0.5) with a margin, staying below critical
    goal = int(0.6 * limit) + 1
    assert goal / limit < 0.95
    conns = []
    try:
        while (now := client_sessions()) < goal:  # dbperf's own sessions count too: open what is missing
            assert len(conns) < MAX_CONNECTIONS, "sessions never counted"
            conns += [psycopg.connect(cluster.dsn("postgres"), autocommit=True) for _ in range(goal - now)]
        wait_until(lambda: ratio() > 0.6, timeout=15, message=f"{goal} sessions counted by dbperf")
        assert ratio() < 0.95
        sent = wait_until(lambda: hook.notifications("PostgreSQLTooManyConnections", "firing"), timeout=45,
                          message="PostgreSQLTooManyConnections at the webhook")
        assert {(n["_path"], n["labels"]["severity"]) for n in sent} == {("/warning", "warning")}
        assert "% of the connections" in sent[0]["annotations"]["description"]
    finally:
        for c in conns:
            c.close()
    wait_until(lambda: hook.notifications("PostgreSQLTooManyConnections", "resolved"), timeout=45,
               message="PostgreSQLTooManyConnections resolved")


def test_failed_pipeline_run(stack):
    hook, cluster = stack["hook"], stack["cluster"]
    cluster.psql("INSERT INTO dbperf.pipeline_runs (pipeline, run_id, status, started_at, finished_at, error_message) "
                 "VALUES ('nightly', 'r2', 'failed', now() - interval '30 seconds', now(), 'KeyError: x')", dbname=ETL)
    sent = wait_until(lambda: hook.notifications("PipelineRunFailed", "firing"), timeout=45,
                      message="PipelineRunFailed at the webhook")
    assert sent[0]["labels"]["pipeline"] == "nightly" and sent[0]["_path"] == "/warning"
    # the next run succeeds: resolved
    cluster.psql("INSERT INTO dbperf.pipeline_runs (pipeline, run_id, status, started_at, finished_at) "
                 "VALUES ('nightly', 'r3', 'success', now() - interval '5 seconds', now())", dbname=ETL)
    wait_until(lambda: hook.notifications("PipelineRunFailed", "resolved"), timeout=45,
               message="PipelineRunFailed resolved")
