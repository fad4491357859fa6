"""End to end: PostgreSQLStatementPlanChanged on a real PostgreSQL 16 (EXPLAIN (GENERIC_PLAN) of
pg_stat_statements' normalised texts), dbperf with plans every second, and the real Prometheus
evaluating the `test` profile's rules (1 s scrapes and evaluations, a 20 s window, a 5 s rate window,
a 2 ms floor). Two statements run all along: dropping the index of the first makes its plan a
sequential scan and its calls milliseconds slower (fires, naming both plans); an ANALYZE after the
second's column became unique gives it an index scan, no slower (stays quiet).

Bounded: every wait polls with a deadline; the module takes about a minute."""

from __future__ import annotations

import random
import threading

import psycopg
import pytest
import requests

import pgdist
from conftest import Prometheus, Served, wait_until
from exporter.config import parse
from exporter.pgcluster import Cluster, free_port
from exporter.server import Exporter
from test_alerts_support import e2e_workdir

pytestmark = pytest.mark.e2e

DB = "shop"
SLOWED = "SELECT count(*) FROM orders WHERE customer = %s"   # its index is dropped
REPLANNED = "SELECT count(*) FROM flags WHERE flag = %s"      # ANALYZE changes its plan
ALERT = "PostgreSQLStatementPlanChanged"
WINDOW = 20  # plan_change_window of the test profile, seconds


class Workload:
    """Both statements, one after the other, until stopped (psycopg binds the values: $1 in
    pg_stat_statements)."""

    def __init__(self, dsn: str):
        self.dsn, self.stop = dsn, threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    conn.execute(SLOWED, (random.randrange(5000),)).fetchall()
                    conn.execute(REPLANNED, (random.randrange(2),)).fetchall()
                    self.stop.wait(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def stack():
    with e2e_workdir("dbperf-plans-e2e-") as (workdir, rules, started):
        port = free_port()
        prom = Prometheus([{"job_name": "dbperf", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
                          [str(p) for p in sorted(rules.glob("*.yml"))], workdir=workdir)
        started.append(prom.stop)
        cluster = Cluster(bindir=pgdist.bindir(16))
        started.append(cluster.cleanup)
        cluster.__enter__()
        cluster.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        cluster.psql(f"CREATE DATABASE {DB}")
        cluster.psql("CREATE TABLE orders (id int PRIMARY KEY, customer int, pad text); "
                     "INSERT INTO orders SELECT g, g % 5000, repeat('x', 40) FROM generate_series(1, 200000) g; "
                     "CREATE INDEX orders_customer ON orders (customer); "
                     "CREATE TABLE flags (id int PRIMARY KEY, flag int); "
                     "INSERT INTO flags SELECT g, g % 2 FROM generate_series(1, 5000) g; "
                     "CREATE INDEX flags_flag ON flags (flag); ANALYZE", dbname=DB)
        workload = Workload(cluster.dsn(DB))
        started.append(workload.close)
        config = parse({"listen": "127.0.0.1:0", "state_dir": str(workdir / "state"), "targets": [{
            "name": "main", "dsn": cluster.dsn("postgres"), "plans": {"enabled": True, "interval": "1s"}}]},
            source="e2e-config")
        served = Served(Exporter(config), port)
        started.append(served.close)
        yield {"cluster": cluster, "prom": prom, "workload": workload, "workdir": workdir}


def queryid(cluster, pattern: str) -> str:
    with psycopg.connect(cluster.dsn("postgres")) as conn:
        rows = conn.execute("SELECT DISTINCT s.queryid::text FROM pg_stat_statements s JOIN pg_database d "
                            "ON d.oid = s.dbid WHERE d.datname = %s AND s.query = %s", (DB, pattern)).fetchall()
    return rows[0][0] if rows else ""


def plan_of(prom, qid: str, offset: str = "") -> str | None:
    found = prom.query(f'pg_statement_plan_info{{datname="{DB}",queryid="{qid}"}}' + (f" offset {offset}" if offset else ""))
    return found[0]["metric"]["plan"] if len(found) == 1 else None


def test_a_dropped_index_fires_and_an_analyze_stays_quiet(stack):
    cluster, prom, workload = stack["cluster"], stack["prom"], stack["workload"]
    slowed = wait_until(lambda: queryid(cluster, SLOWED.replace("%s", "$1")), timeout=30, message="the statements")
    replanned = queryid(cluster, REPLANNED.replace("%s", "$1"))
    # a window's worth of history: the plans and the mean times of WINDOW seconds ago
    mean = "dbperf:pg_statement_mean_seconds:rate5s"
    wait_until(lambda: all(plan_of(prom, q, f"{WINDOW}s") for q in (slowed, replanned))
               and len(prom.query(f'{mean}{{queryid="{slowed}"}} offset {WINDOW}s')) == 1, timeout=90,
               message=f"{WINDOW}s of plans and mean times in Prometheus")
    before = {q: plan_of(prom, q) for q in (slowed, replanned)}
    assert not prom.query(f'ALERTS{{alertname="{ALERT}"}}')
    cluster.psql("DROP INDEX orders_customer", dbname=DB)
    cluster.psql("UPDATE flags SET flag = id; ANALYZE flags", dbname=DB)

    def fired():
        assert not prom.query(f'ALERTS{{alertname="{ALERT}",queryid="{replanned}"}}'), "the ANALYZE case fired"
        return prom.query(f'ALERTS{{alertname="{ALERT}",alertstate="firing",queryid="{slowed}"}}')

    (alert,) = wait_until(fired, timeout=45, message=f"{ALERT} firing for the statement whose index was dropped")
    labels = alert["metric"]
    after = plan_of(prom, slowed)
    assert labels["old_plan"] == before[slowed] and labels["plan"] == after != before[slowed]
    assert labels["datname"] == DB and labels["severity"] == "warning"
    rule = next(r for g in requests.get(prom.url + "/api/v1/rules", timeout=5).json()["data"]["groups"]
                for r in g["rules"] if r["name"] == ALERT)
    (active,) = [a for a in rule["alerts"] if a["labels"]["queryid"] == slowed]
    assert f"changed from {before[slowed]} to {after}" in active["annotations"]["description"]
    # the other statement's plan changed too, without a slowdown: quiet, for as long as the window holds it
    wait_until(lambda: plan_of(prom, replanned) not in (None, before[replanned]), timeout=30,
               message="the ANALYZE's new plan in Prometheus")
    changed = float(prom.query(f'pg_statement_plan_changes_total{{queryid="{replanned}"}}')[0]["value"][1])
    assert changed >= 1
    wait_until(lambda: plan_of(prom, replanned, "8s") not in (None, before[replanned]) and fired(), timeout=30,
               message="the new plan 8 s old (past the 5 s rate window), still quiet")
    assert not prom.query(f'count_over_time(ALERTS{{alertname="{ALERT}",queryid="{replanned}"}}[1m])')
    # quiet because it is no slower: its mean times, now and a window ago, are there to compare
    assert len(prom.query(f'{mean}{{queryid="{replanned}"}}')) == 1
    assert len(prom.query(f'{mean}{{queryid="{replanned}"}} offset {WINDOW}s')) == 1
    assert workload.error is None
