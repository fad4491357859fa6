"""End to end: wrong passwords against a real PostgreSQL that logs what docs/server-log.md asks for
-> dbperf reading its log (server_log:) -> the real Prometheus evaluating the `test` profile's rules
(PostgreSQLAuthFailuresBurst: more than 5 failed logins in 1m, for 2s; 1 s scrapes and evaluations)
-> the real Alertmanager -> the webhook. A few wrong passwords below the burst leave it quiet; a
burst makes it fire. Every wait polls with a deadline."""

from __future__ import annotations

import re
import time
from datetime import datetime

import psycopg
import pytest
import requests

from conftest import Served, wait_until
from exporter.config import parse
from exporter.pgcluster import Cluster, free_port
from exporter.server import Exporter
from exporter.serverlog.settings import throwaway_settings
from test_alerts_support import alerting_stack, e2e_workdir

pytestmark = pytest.mark.e2e

ALERT = "PostgreSQLAuthFailuresBurst"
BURST = 5  # auth_failures_burst of the test profile (alerts/thresholds.yaml)
FOR = 2    # auth_failures_for, seconds
PASSWORD = "the-right-one"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with e2e_workdir("dbperf-auth-e2e-") as (workdir, rules, started):
        port = free_port()
        hook, am, prom = alerting_stack(f"http://127.0.0.1:{port}", rules, workdir, started)
        cluster = Cluster()
        fmt, settings = throwaway_settings(cluster.major())
        cluster.settings.update(settings)
        started.append(cluster.cleanup)
        cluster.__enter__()
        cluster.psql(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
        cluster.require_password("app")
        config = parse({"listen": "127.0.0.1:0", "state_dir": str(tmp_path_factory.mktemp("state")), "targets": [{
            "name": "main", "dsn": cluster.dsn("postgres"),
            "server_log": {"path": str(cluster.datadir / "log"), "format": fmt, "interval": 0.2}}]},
            source="e2e-config")
        served = Served(Exporter(config), port)
        started.append(served.close)
        # scraped, and the reader has read the log once (it starts at the end: nothing before counts)
        wait_until(lambda: prom.query('dbperf_log_lines_total{target="main"}'), timeout=30,
                   message="Prometheus scraping dbperf's log reader")
        yield {"cluster": cluster, "prom": prom, "hook": hook}


def wrong_passwords(cluster, count: int) -> None:
    for _ in range(count):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(cluster.dsn("postgres", user="app") + " password=wrong", connect_timeout=5).close()


def failures_seen(prom) -> float:
    found = prom.query('sum(pg_log_auth_failures_total{target="main", reason="password"})')
    return float(found[0]["value"][1]) if found else 0.0


def last_evaluation(prom) -> float:
    """When Prometheus last evaluated the alert's rule (Unix seconds)."""
    groups = requests.get(prom.url + "/api/v1/rules", params={"type": "alert"}, timeout=5).json()["data"]["groups"]
    stamp, = [r["lastEvaluation"] for g in groups for r in g["rules"] if r["name"] == ALERT]
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")  # nanoseconds: Python reads micro
    return datetime.fromisoformat(stamp).timestamp()


def alert_series(prom, window: str | None = None) -> list:
    expr = f'ALERTS{{alertname="{ALERT}"}}'
    return prom.query(f"max_over_time({expr}[{window}])" if window else expr)


def test_a_few_wrong_passwords_stay_quiet(stack):
    cluster, prom = stack["cluster"], stack["prom"]
    before = failures_seen(prom)
    wrong_passwords(cluster, BURST - 2)
    wait_until(lambda: failures_seen(prom) == before + BURST - 2, timeout=20,
               message=f"{BURST - 2} failed logins in Prometheus")
    counted_at = time.time()  # Prometheus runs on this machine: the same clock
    # evaluated for longer than `for:` after the failures were counted: never pending, never firing
    wait_until(lambda: last_evaluation(prom) > counted_at + FOR + 1, timeout=20, message="rule evaluations")
    assert not alert_series(prom, "1m"), alert_series(prom, "1m")
    assert not stack["hook"].notifications(ALERT)


def test_a_burst_of_wrong_passwords_fires(stack):
    cluster, prom, hook = stack["cluster"], stack["prom"], stack["hook"]
    wrong_passwords(cluster, BURST + 3)
    firing = wait_until(lambda: [a for a in alert_series(prom) if a["metric"]["alertstate"] == "firing"],
                        timeout=30, message=f"{ALERT} firing")
    assert firing[0]["metric"]["target"] == "main" and firing[0]["metric"]["severity"] == "warning"
    sent = wait_until(lambda: hook.notifications(ALERT, "firing"), timeout=30, message=f"{ALERT} at the webhook")
    assert {n["_path"] for n in sent} == {"/warning"}
    assert "failed logins on main" in sent[0]["annotations"]["description"]
