"""End to end on real workloads: a throwaway PostgreSQL (pg_stat_statements preloaded) -> dbperf ->
the real Prometheus with the `test` profile's rules (1 s scrapes and evaluations). Nothing is
simulated: the deadlocks are two sessions locking rows in opposite order, the rollbacks come from
the project's example app under its load generator (healthy: its pool rolls back every connection
it gets back) and from a workload whose statements fail (autocommit INSERTs hitting a unique key,
COMMITs of aborted transactions).

Each workload has a database of its own, so one Prometheus serves them all and the per-database
alerts cannot see each other's traffic. Bounded: every wait polls with a deadline."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import requests

from conftest import ROOT, Prometheus, Served, wait_until
from exporter.config import parse
from exporter.pgcluster import Cluster, free_port
from exporter.server import Exporter
from test_alerts_support import generate

pytestmark = pytest.mark.e2e

DEADLOCKS, SHOP, FAILING = "deadlocks", "shop", "failing"


@pytest.fixture(scope="module")
def stack():
    workdir = Path(tempfile.mkdtemp(prefix="dbperf-alerts-workloads-"))
    rules = workdir / "rules"
    assert generate.main(["--profile", "test", "--out", str(rules)]) == 0
    started = [lambda: shutil.rmtree(workdir, ignore_errors=True)]  # runs last
    # the deadlock detector runs after deadlock_timeout (1 s by default): a tenth keeps the test short
    cluster = Cluster(settings={"deadlock_timeout": "'100ms'"})
    try:
        cluster.__enter__()
        started.append(cluster.cleanup)
        cluster.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for db in (DEADLOCKS, SHOP, FAILING):
            cluster.psql(f"CREATE DATABASE {db}")
        config = parse({"listen": "127.0.0.1:0", "targets": [{"name": "main", "dsn": cluster.dsn("postgres")}]},
                       source="workloads-config")
        served = Served(Exporter(config))
        started.append(served.close)
        prom = Prometheus([{"job_name": "dbperf", "static_configs": [{"targets": [served.url.removeprefix("http://")]}]}],
                          [str(p) for p in sorted(rules.glob("*.yml"))], workdir=workdir)
        started.append(prom.stop)
        wait_until(lambda: prom.query('pg_up{target="main"} == 1'), timeout=30, message="Prometheus scraping dbperf")
        yield {"cluster": cluster, "prom": prom}
    finally:
        for stop in reversed(started):
            stop()


def alerts(prom: Prometheus, alertname: str, **labels) -> list[dict]:
    """The alerts of that name Prometheus has (pending or firing), with their annotations."""
    data = requests.get(prom.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in data if a["labels"]["alertname"] == alertname
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def value(prom: Prometheus, expr: str) -> float | None:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else None


# -- deadlocks -------------------------------------------------------------------------------------

def provoke_deadlock(dsn: str) -> None:
    """Two sessions update rows 1 and 2 in opposite order: the server kills one of them."""
    a, b = psycopg.connect(dsn), psycopg.connect(dsn)
    errors = []

    def update(conn, row):
        try:
            conn.execute("UPDATE t SET v = v + 1 WHERE id = %s", (row,))
        except psycopg.errors.DeadlockDetected as exc:
            errors.append(exc)

    try:
        update(a, 1)
        update(b, 2)
        waiting = threading.Thread(target=update, args=(a, 2))
        waiting.start()
        pid = a.info.backend_pid
        with psycopg.connect(dsn, autocommit=True) as watcher:
            wait_until(lambda: watcher.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                                               (pid,)).fetchone()[0], timeout=10, message="session a waiting for row 2")
        update(b, 1)
        waiting.join(timeout=20)
        assert not waiting.is_alive()
        assert len(errors) == 1, errors
    finally:
        for conn in (a, b):
            conn.rollback()
            conn.close()


def test_three_real_deadlocks_warn(stack):
    cluster, prom = stack["cluster"], stack["prom"]
    cluster.psql("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t VALUES (1, 0), (2, 0)",
                 dbname=DEADLOCKS)
    for _ in range(3):
        provoke_deadlock(cluster.dsn(DEADLOCKS))
    wait_until(lambda: value(prom, f'pg_stat_database_deadlocks_total{{datname="{DEADLOCKS}"}}') == 3, timeout=30,
               message="three deadlocks counted by dbperf")
    firing = wait_until(lambda: [a for a in alerts(prom, "PostgreSQLDeadlocks", datname=DEADLOCKS)
                                 if a["state"] == "firing"], timeout=30, message="PostgreSQLDeadlocks firing")
    assert [a["labels"]["severity"] for a in firing] == ["warning"]  # three is not the critical bar
    assert firing[0]["labels"]["target"] == "main"
    assert f"deadlocks in {DEADLOCKS} on main in the last 1m." in firing[0]["annotations"]["description"]
