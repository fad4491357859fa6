"""The dashboards against the real stack: ``dbperf demo`` (real PostgreSQL with the shop workload and
pipeline runs and a streaming standby of it through a replication slot, the example application behind PgBouncer with its load, dbperf, the real Debian
Prometheus with alerts/rules, Alertmanager) scraped every 2 s; then every variable and every query
of every panel is run through Prometheus's HTTP API, as Grafana would, and must return data, except
the short list below of panels that are empty on a healthy system."""

from __future__ import annotations

import re
import signal
import sys
import time
import urllib.parse
from pathlib import Path

import psutil
import pytest
import requests

from conftest import ROOT, require_tool, wait_until
from exporter.mysqlcluster import find_server
from demorun import DemoRun, names

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(ROOT / "dashboards"))
from queries import substitute, targets  # noqa: E402

# (dashboard uid, panel title, refId): why it may be empty on a healthy system.
ALLOWED_EMPTY = {
    ("dbperf-overview", "Firing alerts", "A"): "no alert fires on a healthy system",
    ("dbperf-monitoring", "Collector errors and skips", "A"):
        "dbperf_collector_errors_total has a series only for a collector that failed at least once",
    ("dbperf-tables", "Dead rows", "C"): "autovacuum may not have run yet on a server a minute old",
    ("dbperf-mysql", "Replication lag", "B"):
        "the heartbeat lag needs replication.heartbeat_table (a pt-heartbeat table); the demo's replica reads none",
    **{("dbperf-postgres", title, ref): "pg_stat_io is PostgreSQL 16+; the demo runs the machine's PostgreSQL (Debian: 15)"
       for title, refs in (("I/O bytes by backend type", "ABC"), ("I/O time by backend type", "AB"),
                           ("Evictions and client backend writes", "AB")) for ref in refs},
    **{("dbperf-postgres", title, ref): "no VACUUM, ANALYZE, CREATE INDEX or CLUSTER runs at the moment of the query"
       for title, refs in (("Maintenance running now", "ABC"), ("Maintenance progress", "AB")) for ref in refs},
}
SCRAPE = 2  # seconds
VALUES = {"topn": "10"}  # every other variable: "All" (.+), as Grafana sends it


@pytest.fixture(scope="module")
def stack():
    for tool in ("prometheus", "prometheus-alertmanager"):
        require_tool(tool)
    assert Path("/usr/sbin/pgbouncer").exists() or require_tool("pgbouncer")
    find_server()  # MariaDB's binaries: the demo starts a source and a replica with them
    with DemoRun("--scrape-interval", f"{SCRAPE}s", "--duration", "240") as demo:
        demo.wait_running()
        output = demo.output
        urls = dict(re.findall(r"dbperf demo: (prometheus|alertmanager|shop app|pgbouncer)\s+(\S+(?: \S+)*?)(?:  \(|$)",
                               output(), re.M))
        assert ": not started:" not in output(), output()
        yield {"demo": demo, "output": output, "urls": urls, "prometheus": urls["prometheus"]}


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


def printed_urls(output: str) -> list[str]:
    """Every URL in the demo's lines, and every path printed beside one (``alerts: /alerts``), on its server."""
    urls = []
    for line in output.splitlines():
        found = [url.rstrip(".,;") for url in re.findall(r"https?://[^\s)]+", line)]
        if found:
            server = urllib.parse.urlsplit(found[0])
            urls += found + [f"{server.scheme}://{server.netloc}{path}" for path in re.findall(r"(?<=[\s(])/[\w./?=&-]*", line)]
    return urls


def alarming(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Error:|failed", line)]


def test_every_printed_url_answers_200(stack):
    """Every URL the demo prints opens (redirects followed, as a browser does); nothing alarming is printed."""
    output = stack["output"]()
    urls = printed_urls(output)
    prom = stack["prometheus"]
    assert any(url.startswith(prom + "/") and "alerts" in url for url in urls), output  # the alerts page
    assert len(urls) >= 8, urls  # metrics, 2 probes, the app and its metrics, Prometheus, its alerts, Alertmanager
    answers = {url: requests.get(url, timeout=15).status_code for url in urls}
    assert all(code == 200 for code in answers.values()), {url: code for url, code in answers.items() if code != 200}
    assert not alarming(output), output


def test_every_panel_returns_data_and_the_demo_cleans_up(stack):
    prom, started = stack["prometheus"], time.monotonic()
    for name in ("shop app", "alertmanager", "pgbouncer"):
        assert name in stack["urls"], stack["output"]()

    # everything is scraped: dbperf (both targets), the application, Prometheus itself and Alertmanager
    def all_up():
        up = {r["metric"]["job"] for r in result(prom, "up == 1")}
        return up >= {"dbperf", "shop-app", "prometheus", "alertmanager"} and up
    wait_until(all_up, timeout=60, interval=1, message="every job up")
    assert {r["metric"]["target"] for r in result(prom, "pg_up == 1 or pgbouncer_up == 1")} == {"demo", "standby", "bouncer"}
    # the standby streams from the demo PostgreSQL through its slot
    assert result(prom, 'pg_replication_is_replica{target="standby"} == 1')
    assert result(prom, 'pg_stat_replication_lag_bytes{target="demo", application_name="standby", state="streaming", '
                        'slot_name="demo_standby"}')
    assert result(prom, 'pg_replication_slots_active{target="demo", slot_name="demo_standby"} == 1')
    # the MariaDB source and its replica, applying the source's binary log
    assert {r["metric"]["target"] for r in result(prom, "mysql_up == 1")} == {"mysql-source", "mysql-replica"}
    assert result(prom, 'mysql_replication_sql_thread_running{target="mysql-replica"} == 1')
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

    # kill -HUP (what an SSH drop does): every process of the stack stops, nothing is left behind
    demo = stack["demo"]
    assert (demo.workdir / "prometheus.yml").is_file()
    standby, = demo.workdir.glob("dbperf-pg-*/data/postmaster.pid")  # the standby, inside the demo's directory
    demo.processes.append(psutil.Process(int(standby.read_text().split()[0])))
    assert names(demo.processes) >= {"postgres", "pgbouncer", "shop_app", "prometheus", "prometheus-alertmanager"}
    demo.proc.send_signal(signal.SIGHUP)
    assert demo.proc.wait(timeout=45) == 0, stack["output"]()
    demo.reader.join(5)
    demo.assert_cleaned_up(demo.processes)
    assert not alarming(stack["output"]()), stack["output"]()
    with pytest.raises(requests.RequestException):
        requests.get(prom + "/-/ready", timeout=2)


def test_no_standby_starts_and_scrapes_none():
    """``--no-standby``: the demo PostgreSQL has no replication slot, dbperf no standby target."""
    with DemoRun("--no-standby", "--no-app", "--no-prometheus", "--no-mysql", "--duration", "60") as demo:
        demo.wait_running()
        out = demo.output()
        assert "standby" not in out, out
        metrics = requests.get(f"http://127.0.0.1:{demo.port}/metrics", timeout=30).text
        assert 'pg_up{target="demo"} 1' in metrics and 'target="standby"' not in metrics
        assert "pg_replication_slots_active{" not in metrics
        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(timeout=45) == 0, demo.output()
        demo.reader.join(5)
        demo.assert_cleaned_up(demo.processes)
