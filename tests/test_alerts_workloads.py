"""End to end on real workloads: a throwaway PostgreSQL (pg_stat_statements preloaded) -> dbperf ->
the real Prometheus with the `test` profile's rules (1 s scrapes and evaluations). Nothing is
simulated: the deadlocks are two sessions locking rows in opposite order, the rollbacks come from
the project's example app under its load generator (healthy: its pool rolls back every connection
it gets back) and from a workload whose statements fail (autocommit INSERTs hitting a unique key,
COMMITs of aborted transactions).

Each workload has a database of its own, so one Prometheus serves them all and the per-database
alerts cannot see each other's traffic. Bounded: every wait polls with a deadline."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import psycopg
import pytest
import requests

from conftest import ROOT, Prometheus, Served, wait_until
from exporter.config import parse
from exporter.pgcluster import Cluster, free_port
from exporter.server import Exporter
from test_alerts_support import e2e_workdir, generate

pytestmark = pytest.mark.e2e

DEADLOCKS, SHOP, FAILING = "deadlocks", "shop", "failing"


@pytest.fixture(scope="module")
def stack():
    with e2e_workdir("dbperf-alerts-workloads-") as (workdir, rules, started):
        # Prometheus first, dbperf's port known to it: the setup below fits in its first 5 s (alerting_stack)
        port = free_port()
        prom = Prometheus([{"job_name": "dbperf", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
                          [str(p) for p in sorted(rules.glob("*.yml"))], workdir=workdir)
        started.append(prom.stop)
        # the deadlock detector runs after deadlock_timeout (1 s by default): a tenth keeps the test short
        cluster = Cluster(settings={"deadlock_timeout": "'100ms'"})
        started.append(cluster.cleanup)
        cluster.__enter__()
        cluster.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for db in (DEADLOCKS, SHOP, FAILING):
            cluster.psql(f"CREATE DATABASE {db}")
        config = parse({"listen": "127.0.0.1:0", "targets": [{"name": "main", "dsn": cluster.dsn("postgres")}]},
                       source="workloads-config")
        served = Served(Exporter(config), port)
        started.append(served.close)
        wait_until(lambda: prom.query('pg_up{target="main"} == 1'), timeout=30, message="Prometheus scraping dbperf")
        yield {"cluster": cluster, "prom": prom}


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


# -- rollbacks -------------------------------------------------------------------------------------

ROLLBACK_RATIO = "dbperf:pg_stat_database_xact:rollback_ratio_rate5m"                 # every rollback
IMPLICIT_RATIO = "dbperf:pg_stat_database_xact:implicit_rollback_ratio_rate5m"        # without a ROLLBACK
TPS = "dbperf:pg_stat_database_xact:rate5m"


class Repeat:
    """Runs ``step`` over and over in a thread until stopped; re-raises what it raised."""

    def __init__(self, step):
        self.stop_event, self.error, self.rounds = threading.Event(), None, 0

        def loop():
            try:
                while not self.stop_event.is_set():
                    step()
                    self.rounds += 1
            except BaseException as exc:  # noqa: BLE001 - handed to the test in stop()
                self.error = exc

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the workload did not stop"
        if self.error:
            raise self.error


@pytest.fixture
def shop_app(stack, tmp_path):
    """examples/shop_app as users run it, on its own database. Its log (a traceback per /fail
    request) goes to a file: a pipe nobody reads would fill and stall the app."""
    port, log = free_port(), tmp_path / "shop_app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "examples.shop_app", "--dsn", stack["cluster"].dsn(SHOP),
                                 "--port", str(port)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=30, message="the shop app to serve")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:  # requests still open: uvicorn waits for them
            proc.kill()
            proc.wait()


def test_the_example_app_under_load_stays_quiet(stack, shop_app):
    """Its pool sends ROLLBACK for every connection it gets back: most of its transactions roll back,
    none of them is failed work (its /fail requests roll back with the pool's ROLLBACK too)."""
    prom = stack["prom"]
    shop = f'{{datname="{SHOP}"}}'
    # one long run of the load generator, stopped by the test: steady traffic while it looks
    load = subprocess.Popen([sys.executable, "-m", "examples.shop_app.load", "--url", shop_app,
                             "--requests", "1000000", "--concurrency", "4"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # the database's transaction-control series are there once dbperf has classified them
        wait_until(lambda: value(prom, IMPLICIT_RATIO + shop) is not None and value(
            prom, f'pg_stat_statements_transaction_control_calls_total{{datname="{SHOP}",command="rollback"}}'),
            timeout=60, message="the shop's ROLLBACK statements counted")
        # what the rule used to read: most of the transactions roll back, at a real rate
        wait_until(lambda: (value(prom, ROLLBACK_RATIO + shop) or 0) > 0.5 and (value(prom, TPS + shop) or 0) > 1,
                   timeout=60, message="most of the shop's transactions rolling back at more than 1/s")
        # for twice the alert's `for:` and more, the alert is not even pending
        rollback_for = generate.seconds(generate.load_profile("test")["rollback_for"])
        seen, deadline = [], time.monotonic() + 2 * rollback_for + 5
        while time.monotonic() < deadline:
            assert load.poll() is None, load.stderr.read()
            pending = alerts(prom, "PostgreSQLHighRollbackRatio", datname=SHOP)
            seen.append((value(prom, ROLLBACK_RATIO + shop), value(prom, IMPLICIT_RATIO + shop)))
            assert not pending, (pending, seen)
            time.sleep(1)
        assert all(raw > 0.5 and implicit is not None and implicit < 0.1 for raw, implicit in seen), seen
    finally:
        load.kill()
        load.wait()


def test_failing_work_fires(stack):
    """Autocommit INSERTs hitting a unique key and COMMITs of transactions an error aborted: the
    server rolls them back, the client never sent ROLLBACK."""
    cluster, prom = stack["cluster"], stack["prom"]
    cluster.psql("CREATE TABLE u (id bigint PRIMARY KEY)", dbname=FAILING)
    conn = psycopg.connect(cluster.dsn(FAILING), autocommit=True)
    next_id = iter(range(1, 10**9))

    def step():
        conn.execute("INSERT INTO u VALUES (%s)", (next(next_id),))          # succeeds: a commit
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO u VALUES (1)")                          # fails: a rollback
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO u VALUES (1)")
        conn.execute("COMMIT")                                                # answered with ROLLBACK
        time.sleep(0.01)

    work = Repeat(step)
    try:
        firing = wait_until(lambda: [a for a in alerts(prom, "PostgreSQLHighRollbackRatio", datname=FAILING)
                                     if a["state"] == "firing"], timeout=90,
                            message="PostgreSQLHighRollbackRatio firing")
    finally:
        work.stop()
        conn.close()
    assert firing[0]["labels"]["severity"] == "warning" and firing[0]["labels"]["target"] == "main"
    assert (f"of the transactions in {FAILING} on main rolled back without a ROLLBACK from the client"
            in firing[0]["annotations"]["description"])
    # two of every three transactions failed
    assert 0.4 < value(prom, f'{IMPLICIT_RATIO}{{datname="{FAILING}"}}') <= 0.7
