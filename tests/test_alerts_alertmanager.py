"""alerts/alertmanager.yml checked by amtool (config and a routing table), its inhibitions on a real
Alertmanager 0.25, and ``dbperf alerts list | ack | unack`` against it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, require_tool, wait_until
from exporter.alerts_cli import parse_duration, UsageError
from exporter.pgcluster import free_port
from test_alerts_support import ALERTS, Alertmanager, Webhook, generate, alertmanager_test_config

pytestmark = pytest.mark.prom

CONFIG = ALERTS / "alertmanager.yml"

ROUTES = [
    ({"alertname": "Watchdog", "severity": "info"}, "heartbeat"),
    ({"alertname": "PostgreSQLDown", "severity": "critical", "target": "main"}, "critical"),
    ({"alertname": "AppErrorBudgetBurn", "severity": "critical", "job": "app", "handler": "/orders"}, "critical"),
    ({"alertname": "PostgreSQLTooManyConnections", "severity": "warning", "target": "main"}, "warning"),
    ({"alertname": "HostMemoryLow", "severity": "warning", "instance": "db1:9847"}, "warning"),
    ({"alertname": "PostgreSQLRestarted", "severity": "info", "target": "main"}, "null"),
    ({"alertname": "SomethingElse"}, "warning"),  # no severity: still reaches people
]


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("amtool"), *args], capture_output=True, text=True, timeout=30)


def test_amtool_check_config():
    proc = amtool("check-config", str(CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 inhibit rules" in proc.stdout and "4 receivers" in proc.stdout


@pytest.mark.parametrize("labels,receiver", ROUTES, ids=[f"{l.get('alertname')}-{l.get('severity')}" for l, _ in ROUTES])
def test_routes(labels, receiver):
    args = [f"{k}={v}" for k, v in labels.items()]
    proc = amtool("config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={receiver}", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == receiver
    # and the check can fail: the same labels do not route anywhere else
    wrong = amtool("config", "routes", "test", f"--config.file={CONFIG}", "--verify.receivers=nobody", *args)
    assert wrong.returncode == 1


def test_every_severity_of_the_rules_has_a_route():
    severities = {a["labels"]["severity"] for a in generate.build_all("production")}
    routed = {m for r in yaml.safe_load(CONFIG.read_text())["route"]["routes"] for m in r["matchers"]}
    assert {f'severity="{s}"' for s in severities} <= routed


def test_config_conventions():
    config = yaml.safe_load(CONFIG.read_text())
    route = config["route"]
    assert {"alertname", "target", "instance", "datname"} <= set(route["group_by"])

    def seconds(text):
        return generate.seconds(text)

    def walk(r, parent):
        timers = {k: r.get(k, parent.get(k)) for k in ("group_wait", "group_interval", "repeat_interval")}
        assert seconds(timers["repeat_interval"]) % seconds(timers["group_interval"]) == 0, r
        for child in r.get("routes", []):
            walk(child, timers)

    walk(route, {})
    for receiver in config["receivers"]:
        for key, integrations in receiver.items():
            if key.endswith("_configs"):
                assert all(i.get("send_resolved") is True for i in integrations), receiver["name"]
    text = CONFIG.read_text()
    assert "smtp_auth_password_file:" in text and "slack_api_url_file:" in text and "credentials_file:" in text
    assert "auth_password:" not in text.replace("auth_password_file", "") and "api_url:" not in text


@pytest.fixture(scope="module")
def am():
    hook = Webhook()
    manager = Alertmanager(alertmanager_test_config(hook.url))
    yield manager
    manager.stop()
    hook.close()


def _state(am, alertname, **labels):
    for alert in am.alerts():
        if alert["labels"]["alertname"] == alertname and all(alert["labels"].get(k) == v for k, v in labels.items()):
            return alert["status"]
    return None


def test_inhibitions_on_a_real_alertmanager(am):
    am.post_alerts(
        {"alertname": "PostgreSQLTooManyConnections", "severity": "critical", "job": "dbperf", "target": "main"},
        {"alertname": "PostgreSQLTooManyConnections", "severity": "warning", "job": "dbperf", "target": "main"},
        {"alertname": "PostgreSQLTooManyConnections", "severity": "warning", "job": "dbperf", "target": "other"},
        {"alertname": "PostgreSQLIdleInTransaction", "severity": "warning", "job": "dbperf", "target": "db2",
         "datname": "app"},
        {"alertname": "PostgreSQLIdleInTransaction", "severity": "critical", "job": "dbperf", "target": "db2",
         "datname": "shop"},
        {"alertname": "PostgreSQLDown", "severity": "critical", "job": "dbperf", "target": "down"},
        {"alertname": "DbperfCollectorFailing", "severity": "warning", "job": "dbperf", "target": "down",
         "collector": "statements"},
        {"alertname": "PipelineStale", "severity": "critical", "job": "dbperf", "target": "down", "pipeline": "etl"},
        {"alertname": "HostMemoryLow", "severity": "warning", "job": "dbperf", "instance": "db1:9847"},
        {"alertname": "Watchdog", "severity": "info"},
        {"alertname": "MySQLDown", "severity": "critical", "job": "dbperf", "target": "mydown"},
        {"alertname": "MySQLReplicationStopped", "severity": "critical", "job": "dbperf", "target": "mydown",
         "channel": "eu"},
        {"alertname": "MySQLDeadlocks", "severity": "warning", "job": "dbperf", "target": "myup"},
    )
    wait_until(lambda: len(am.alerts()) == 13, timeout=10, message="13 alerts in Alertmanager")

    def inhibited(name, **labels):
        return wait_until(lambda: _state(am, name, **labels), timeout=10, message=name)["inhibitedBy"] != []

    # critical mutes the warning of the same alert and target, not another target's
    wait_until(lambda: inhibited("PostgreSQLTooManyConnections", severity="warning", target="main"), timeout=10,
               message="the warning inhibited by its critical")
    assert not inhibited("PostgreSQLTooManyConnections", severity="critical", target="main")
    assert not inhibited("PostgreSQLTooManyConnections", target="other")
    # ...nor the warning of another database
    assert not inhibited("PostgreSQLIdleInTransaction", severity="warning", datname="app")
    # PostgreSQLDown mutes everything else about its target, whatever the severity
    assert inhibited("DbperfCollectorFailing", target="down")
    assert inhibited("PipelineStale", target="down")
    assert not inhibited("PostgreSQLDown", target="down")
    # and MySQLDown everything else about its MySQL target
    assert inhibited("MySQLReplicationStopped", target="mydown")
    assert not inhibited("MySQLDown", target="mydown")
    assert not inhibited("MySQLDeadlocks", target="myup")
    # alerts without a target are never muted by it
    assert not inhibited("HostMemoryLow")
    assert not inhibited("Watchdog")


def dbperf_alerts(am_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "alerts", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env={"DBPERF_ALERTMANAGER_URL": am_url, "PATH": "/usr/bin:/bin",
                                                     "USER": "tester", "LOGNAME": "tester"})


def test_ack_list_unack(am):
    am.post_alerts({"alertname": "PostgreSQLIdleInTransaction", "severity": "warning", "job": "dbperf",
                    "target": "acked", "datname": "app"},
                   {"alertname": "PostgreSQLIdleInTransaction", "severity": "warning", "job": "dbperf",
                    "target": "acked", "datname": "other"})
    wait_until(lambda: _state(am, "PostgreSQLIdleInTransaction", target="acked", datname="other"), timeout=10,
               message="alerts posted")
    listed = dbperf_alerts(am.url, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(l for l in listed.stdout.splitlines() if "target=acked" in l and "datname=app" in l)
    assert line.split()[0] == "PostgreSQLIdleInTransaction" and line.rstrip().endswith("firing")

    ack = dbperf_alerts(am.url, "ack", "PostgreSQLIdleInTransaction", "--label", "target=acked", "-l", "datname=app",
                        "--for", "1h30m", "--comment", "INC-7: fixing the job")
    assert ack.returncode == 0, ack.stderr
    silence_id = ack.stdout.split("silence ")[1].split()[0]
    assert "1 firing alert(s) matched" in ack.stdout
    status = wait_until(lambda: (_state(am, "PostgreSQLIdleInTransaction", target="acked", datname="app") or {})
                        .get("silencedBy"), timeout=10, message="silenced")
    assert status == [silence_id]
    # only that database's alert is acknowledged
    assert _state(am, "PostgreSQLIdleInTransaction", target="acked", datname="other")["silencedBy"] == []
    rows = json.loads(dbperf_alerts(am.url, "list", "--json").stdout)
    acked = {r["labels"].get("datname"): r for r in rows if r["labels"].get("target") == "acked"}
    assert acked["app"]["acknowledged"] and acked["app"]["silence_ids"] == [silence_id]
    assert not acked["other"]["acknowledged"] and acked["other"]["state"] == "firing"
    assert "ACKED by tester until" in dbperf_alerts(am.url, "list").stdout

    unack = dbperf_alerts(am.url, "unack", silence_id)
    assert unack.returncode == 0, unack.stderr
    wait_until(lambda: _state(am, "PostgreSQLIdleInTransaction", target="acked", datname="app")["silencedBy"] == [],
               timeout=10, message="silence expired")
    again = dbperf_alerts(am.url, "unack", silence_id)
    assert again.returncode == 2 and again.stderr.strip() == f"dbperf alerts: silence {silence_id} has already ended"


def test_ack_of_an_alert_not_firing_says_so(am):
    ack = dbperf_alerts(am.url, "ack", "PostgreSQLDown", "-l", "target=nothing", "-c", "maintenance window", "--force")
    assert ack.returncode == 0, ack.stderr
    assert "no alert matching it is firing now" in ack.stdout


@pytest.mark.parametrize("args,message", [
    (["ack", "X", "--for", "2x", "-c", "c"], "dbperf alerts: --for '2x': not a duration (use e.g. 30m, 2h, 1h30m, 1d)"),
    (["ack", "X", "--for", "0m", "-c", "c"], "dbperf alerts: --for '0m': must be longer than 0s"),
    (["ack", "X", "--label", "target", "-c", "c"], "dbperf alerts: --label 'target': expected NAME=VALUE with a label name like target or datname"),
    (["ack", "X", "-c", "  "], "dbperf alerts: --comment must not be empty (say why, e.g. the ticket)"),
    (["unack", "nonsense"], "dbperf alerts: unknown silence id 'nonsense': silence ids look like 5c1c3e0e-8d9b-4f4e-9a53-0123456789ab"),
    (["unack", "5c1c3e0e-8d9b-4f4e-9a53-0123456789ab"], "dbperf alerts: unknown silence id '5c1c3e0e-8d9b-4f4e-9a53-0123456789ab' (see `dbperf alerts list`)"),
])
def test_bad_input_is_one_line_and_exit_2(am, args, message):
    proc = dbperf_alerts(am.url, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == message


def test_alertmanager_unreachable_is_one_line_and_exit_1():
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["list"], ["ack", "X", "-c", "c"], ["unack", "5c1c3e0e-8d9b-4f4e-9a53-0123456789ab"]):
        proc = dbperf_alerts(url, *args)
        assert proc.returncode == 1
        assert proc.stderr.strip() == f"dbperf alerts: Alertmanager at {url} is unreachable: ConnectionError"
    # --alertmanager overrides the environment, before or after the subcommand
    proc = dbperf_alerts("http://127.0.0.1:1", "--alertmanager", url, "list")
    assert url in proc.stderr
    proc = dbperf_alerts("http://127.0.0.1:1", "list", "--alertmanager", url)
    assert url in proc.stderr


def test_parse_duration():
    assert parse_duration("1h30m").total_seconds() == 5400
    assert parse_duration("1d").total_seconds() == 86400
    assert parse_duration("1w").total_seconds() == 7 * 86400
    assert parse_duration("1.5h").total_seconds() == 5400  # exporter.durations: the config's syntax too
    for bad in ("", "h", "-1h", "2 h", "30", "366d"):
        with pytest.raises(UsageError):
            parse_duration(bad)
