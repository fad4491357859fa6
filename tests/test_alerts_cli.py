"""``dbperf alerts ack`` of an alert the Alertmanager does not hold is refused (exit 2, one line
listing what it holds) unless ``--force``: a silence that matches nothing hides nothing and is
forgotten, until an alert of that name fires unseen. Against a real Alertmanager 0.25."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from conftest import ROOT, wait_until
from exporter.alerts_cli import existing_alerts
from test_alerts_support import Alertmanager, alertmanager_test_config

pytestmark = pytest.mark.prom


@pytest.fixture(scope="module")
def am():
    manager = Alertmanager(alertmanager_test_config("http://127.0.0.1:9"))  # notifications go nowhere
    manager.post_alerts(
        {"alertname": "PostgreSQLIdleInTransaction", "severity": "warning", "target": "main", "datname": "app"},
        {"alertname": "PostgreSQLIdleInTransaction", "severity": "warning", "target": "main", "datname": "shop"},
        {"alertname": "HostMemoryLow", "severity": "warning", "instance": "db1:9847"},
    )
    wait_until(lambda: len(manager.alerts()) == 3, timeout=10, message="3 alerts in Alertmanager")
    yield manager
    manager.stop()


def silences(am) -> list[dict]:
    return [s for s in requests.get(am.url + "/api/v2/silences", timeout=5).json()
            if s["status"]["state"] == "active"]


def ack(am, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "alerts", "--alertmanager", am.url, "ack", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_ack_of_an_unknown_alert_is_refused_and_creates_nothing(am):
    before = silences(am)
    proc = ack(am, "NoSuchAlert", "--for", "1h", "-c", "INC-1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        f"dbperf alerts: no alert at {am.url} matches NoSuchAlert, so the silence would match nothing; "
        "alerts there now: HostMemoryLow, PostgreSQLIdleInTransaction (2) "
        "(--force silences it anyway, e.g. ahead of a maintenance window)")
    assert silences(am) == before


def test_ack_with_labels_that_match_nothing_lists_that_alerts_label_sets(am):
    before = silences(am)
    proc = ack(am, "PostgreSQLIdleInTransaction", "-l", "target=mian", "-c", "INC-2")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert 'matches PostgreSQLIdleInTransaction{target="mian"}' in line
    assert ('PostgreSQLIdleInTransaction is there with other labels: '
            'PostgreSQLIdleInTransaction{target="main",datname="app"}, '
            'PostgreSQLIdleInTransaction{target="main",datname="shop"}') in line
    assert silences(am) == before


def test_force_creates_the_silence_ahead_of_the_alert(am):
    proc = ack(am, "NoSuchAlert", "--for", "1h", "-c", "maintenance window", "--force")
    assert proc.returncode == 0, proc.stderr
    silence_id = proc.stdout.split("silence ")[1].split()[0]
    assert "no alert matching it is firing now" in proc.stdout
    [created] = [s for s in silences(am) if s["id"] == silence_id]
    assert created["matchers"] == [{"name": "alertname", "value": "NoSuchAlert", "isRegex": False, "isEqual": True}]


def test_ack_of_an_alert_that_is_there_needs_no_force(am):
    proc = ack(am, "HostMemoryLow", "-c", "INC-3")
    assert proc.returncode == 0, proc.stderr
    assert "1 firing alert(s) matched" in proc.stdout


def test_the_list_of_existing_alerts_is_bounded():
    alerts = [{"labels": {"alertname": f"Alert{i:02d}"}} for i in range(25)]
    text = existing_alerts(alerts, "Other", limit=10)
    assert text == "alerts there now: " + ", ".join(f"Alert{i:02d}" for i in range(10)) + " and 15 more"
    assert existing_alerts([], "Other") == "it has no alerts now"
    same = [{"labels": {"alertname": "A", "target": f"t{i}"}} for i in range(12)]
    assert existing_alerts(same, "A", limit=2) == 'A is there with other labels: A{target="t0"}, A{target="t1"} and 10 more'
