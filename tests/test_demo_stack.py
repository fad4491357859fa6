"""The dashboards against the real stack: ``dbperf demo`` (real PostgreSQL with the shop workload and
pipeline runs, the example application behind PgBouncer with its load, dbperf, the real Debian
Prometheus with alerts/rules, Alertmanager) scraped every 2 s; then every variable and every query
of every panel is run through Prometheus's HTTP API, as Grafana would, and must return data, except
the short list below of panels that are empty on a healthy system."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import ROOT, processes_using, require_tool, wait_until
from exporter.pgcluster import free_port

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(ROOT / "dashboards"))
from queries import substitute, targets  # noqa: E402

# (dashboard uid, panel title, refId): why it may be empty on a healthy system.
ALLOWED_EMPTY = {
    ("dbperf-overview", "Firing alerts", "A"): "no alert fires on a healthy system",
    ("dbperf-postgres", "Replica lag", "A"): "the demo server is a primary: pg_replication_lag_seconds is a replica's",
    ("dbperf-postgres", "Standby replay lag", "A"): "no standby is connected to the demo primary",
    ("dbperf-postgres", "Replication slots: retained WAL", "A"): "the demo has no replication slot",
    ("dbperf-monitoring", "Collector errors and skips", "A"):
        "dbperf_collector_errors_total has a series only for a collector that failed at least once",
    ("dbperf-tables", "Dead rows", "C"): "autovacuum may not have run yet on a server a minute old",
}
SCRAPE = 2  # seconds
VALUES = {"topn": "10"}  # every other variable: "All" (.+), as Grafana sends it


@pytest.fixture(scope="module")
def stack():
    for tool in ("prometheus", "prometheus-alertmanager"):
        require_tool(tool)
    assert Path("/usr/sbin/pgbouncer").exists() or require_tool("pgbouncer")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo", "--listen", f"127.0.0.1:{port}",
                             "--scrape-interval", f"{SCRAPE}s", "--duration", "240", "--any-ports"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    output = lambda: "".join(lines)  # noqa: E731
    try:
        wait_until(lambda: "dbperf demo: running" in output() or proc.poll() is not None, timeout=90,
                   message="the demo to start everything")
        assert proc.poll() is None, output()
        urls = dict(re.findall(r"dbperf demo: (prometheus|alertmanager|shop app|pgbouncer)\s+(\S+(?: \S+)*?)(?:  \(|$)",
                               output(), re.M))
        assert ": not started:" not in output(), output()
        yield {"proc": proc, "lines": lines, "output": output, "reader": reader, "urls": urls,
               "prometheus": urls["prometheus"], "port": port}
    finally:
        if proc.poll() is None:  # a failed test: let the demo clean up, kill it only if it does not
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(45)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def query(prom: str, expr: str, instant: bool = True) -> dict:
    if instant:
        response = requests.get(prom + "/api/v1/query", params={"query": expr}, timeout=15)
    else:
        now = time.time()
        response = requests.get(prom + "/api/v1/query_range", timeout=15,
                                params={"query": expr, "start": now - 60, "end": now, "step": SCRAPE})
    return response.json()


def result(prom: str, expr: str) -> list:
    body = query(prom, expr)
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def test_every_panel_returns_data_and_the_demo_cleans_up(stack):
    prom, started = stack["prometheus"], time.monotonic()
    for name in ("shop app", "alertmanager", "pgbouncer"):
        assert name in stack["urls"], stack["output"]()

    # everything is scraped: dbperf (both targets), the application, Prometheus itself and Alertmanager
    def all_up():
        up = {r["metric"]["job"] for r in result(prom, "up == 1")}
        return up >= {"dbperf", "shop-app", "prometheus", "alertmanager"} and up
    wait_until(all_up, timeout=60, interval=1, message="every job up")
    assert {r["metric"]["target"] for r in result(prom, "pg_up == 1 or pgbouncer_up == 1")} == {"demo", "bouncer"}
    # enough history for rates, the recording rules and the cached collectors to have moved
    wait_until(lambda: result(prom, f'count_over_time(pg_up{{target="demo"}}[2m]) >= {int(30 / SCRAPE)}'),
               timeout=60, interval=1, message="30 s of scrapes")
    wait_until(lambda: result(prom, "dbperf:http_requests:latency_burn_rate5m")
               and result(prom, 'increase(pipeline_runs_total{status="failed"}[2m]) > 0'), timeout=40, interval=1,
               message="application recording rules and a failed pipeline run")

    # the recording rules and alerts of alerts/rules all evaluate on the real data
    groups = requests.get(prom + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert groups, "no rules loaded"
    broken = [(g["name"], r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
    assert not broken, broken
    assert result(prom, "prometheus_notifications_alertmanagers_discovered == 1"), "Alertmanager not connected"

    # every variable has values
    from queries import load_all
    for name, dash in load_all().items():
        for v in dash["templating"]["list"]:
            if v["type"] != "query":
                continue
            selector, label = re.fullmatch(r"label_values\((.+), *(\w+)\)", v["query"]["query"]).groups()
            series = requests.get(prom + "/api/v1/series", params={"match[]": substitute(selector, VALUES)},
                                  timeout=10).json()["data"]
            assert any(label in s for s in series), f"{name}: variable {v['name']} has no value"

    # every query of every panel
    empty, errors, checked = set(), [], 0
    known = set()
    for _, uid, title, ref, t in targets():
        key = (uid, title, ref)
        known.add(key)
        body = query(prom, substitute(t["expr"], VALUES), instant=t.get("instant", False))
        checked += 1
        if body["status"] != "success":
            errors.append((key, body.get("error")))
        elif not body["data"]["result"]:
            empty.add(key)
    assert not errors, errors
    unexpected = sorted(empty - set(ALLOWED_EMPTY))
    assert not unexpected, f"panels without data: {unexpected}"
    assert set(ALLOWED_EMPTY) <= known, f"stale entries: {set(ALLOWED_EMPTY) - known}"
    assert checked > 200
    print(f"{checked} queries checked, {len(empty)} empty as allowed, in {time.monotonic() - started:.0f} s")

    # Ctrl-C: everything stops, nothing is left behind
    proc, output = stack["proc"], stack["output"]
    workdir = Path(re.search(r"other parts in (\S+)", output()).group(1))
    cluster = Path(re.search(r"PostgreSQL in (\S+)", output()).group(1))
    assert workdir.is_dir() and (workdir / "prometheus.yml").is_file()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=45) == 0, output()
    stack["reader"].join(5)
    assert not workdir.exists() and not cluster.exists(), output()
    assert not processes_using(workdir) and not processes_using(cluster)
    with pytest.raises(requests.RequestException):
        requests.get(prom + "/-/ready", timeout=2)
