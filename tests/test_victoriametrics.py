"""Long-term and fleet storage on an existing engine: a real dbperf (a throwaway cluster with a small
workload), the real Debian Prometheus scraping it every 2 s with alerts/rules/*.yml loaded and
remote-writing everything into the real Debian VictoriaMetrics (its own port and data directory,
removed afterwards). Then, against VictoriaMetrics's Prometheus-compatible API: the recording rules
Prometheus evaluated are there with the same values, every rule expression runs, vmalert (the
store's own ruler) evaluates every rule without error and sends its alerts to a real Alertmanager,
every dashboard variable and panel query runs and returns data (and the same series) wherever the
Prometheus returns data, and ``dbperf report --prometheus`` works (Markdown and JSON). It also prints
what the target costs in series and bytes (docs/scaling.md)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
import time

import psycopg
import pytest
import requests
import yaml

from conftest import ROOT, Prometheus, Served, wait_until
from exporter.config import parse
from exporter.pgcluster import Cluster
from exporter.server import Exporter
from fleetkit import VictoriaMetrics, VMAlert, prom_query, remote_write_to
from test_alerts_support import Alertmanager

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(ROOT / "dashboards"))
from queries import load_all, substitute, targets  # noqa: E402

SCRAPE = 2  # seconds, as the dashboards' macros expect (dashboards/queries.py)
VALUES = {"topn": "10"}  # every other variable: "All" (.+), as Grafana sends it
RULE_FILES = sorted((ROOT / "alerts" / "rules").glob("*.yml"))
WORKLOAD = ["SELECT count(*) FROM orders WHERE v > %s", "UPDATE orders SET v = v + 1 WHERE id = %s",
            "INSERT INTO orders (v) VALUES (%s)", "SELECT * FROM orders WHERE id = %s"]


def workload(dsn: str, stop: threading.Event) -> None:
    """A little steady traffic so that rates move and statements rank."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        i = 0
        while not stop.is_set():
            i += 1
            conn.execute(WORKLOAD[i % len(WORKLOAD)], (i % 200,))
            if i % 20 == 0:
                with conn.transaction():
                    conn.execute("UPDATE orders SET v = 0 WHERE id = %s", (i % 200,))
                stop.wait(0.05)


@pytest.fixture(scope="module")
def stack():
    stop = threading.Event()
    with Cluster() as cluster:
        cluster.psql("CREATE EXTENSION pg_stat_statements")
        cluster.psql("CREATE DATABASE shop")
        for db in ("postgres", "shop"):
            cluster.psql("CREATE TABLE orders (id serial PRIMARY KEY, v int NOT NULL);"
                         "CREATE INDEX ON orders (v); INSERT INTO orders (v) SELECT g FROM generate_series(1, 500) g;"
                         # an index no query of the workload can use: the unused-indexes panel has a
                         # row on both engines (an index scanned a few times before the window is
                         # unused for Prometheus's increase(), not for VictoriaMetrics', which counts
                         # a new series from 0)
                         "CREATE INDEX orders_never_used ON orders ((v * 7 + 3));"
                         "ANALYZE orders", db)
        traffic = [threading.Thread(target=workload, args=(cluster.dsn(db), stop), daemon=True) for db in ("postgres", "shop")]
        for thread in traffic:
            thread.start()
        served = Served(Exporter(parse({"listen": "127.0.0.1:0", "targets": [{"name": "main", "dsn": cluster.dsn(),
                                                             "statements": {"query_text": True}}]},
                                       source="victoriametrics-test")))
        vm = VictoriaMetrics()
        started = [vm]
        try:
            prom = Prometheus([{"job_name": "dbperf", "static_configs": [
                {"targets": [served.url.removeprefix("http://")]}]}],
                rule_files=[str(p) for p in RULE_FILES], interval=f"{SCRAPE}s", remote_write=remote_write_to(vm))
            started.append(prom)
            alertmanager = Alertmanager({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]})
            started.append(alertmanager)
            vmalert = VMAlert(vm, RULE_FILES, alertmanager.url, interval=f"{SCRAPE}s")
            started.append(vmalert)
            yield {"prom": prom.url, "vm": vm, "vmalert": vmalert, "alertmanager": alertmanager, "started": time.time()}
        finally:
            for proc in reversed(started):
                proc.stop()
            stop.set()
            for thread in traffic:
                thread.join(10)
            served.close()


def recorded_names(prom: str) -> set[str]:
    groups = requests.get(prom + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    return {r["name"] for g in groups for r in g["rules"] if r["type"] == "recording"}


def names_in(url: str) -> set[str]:
    return set(requests.get(url + "/api/v1/label/__name__/values", timeout=30).json()["data"])


def query(url: str, expr: str, at: float, instant: bool = True) -> dict:
    if instant:
        params = {"query": expr, "time": f"{at:.3f}"}
    else:
        params = {"query": expr, "start": f"{at - 60:.3f}", "end": f"{at:.3f}", "step": str(SCRAPE)}
    return requests.get(url + ("/api/v1/query" if instant else "/api/v1/query_range"), params=params, timeout=30).json()


def by_labels(result: list, instant: bool = True) -> dict:
    key = lambda r: tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__"))  # noqa: E731
    return {key(r): float(r["value"][1]) for r in result} if instant else {key(r): r["values"] for r in result}


def sent_up_to(prom: str) -> float:
    """The newest sample timestamp Prometheus's remote_write has sent (its own /metrics)."""
    lines = requests.get(prom + "/metrics", timeout=10).text.splitlines()
    return max((float(line.rpartition(" ")[2]) for line in lines
                if line.startswith("prometheus_remote_storage_queue_highest_sent_timestamp_seconds")), default=0.0)


@pytest.fixture(scope="module")
def ready(stack):
    """A moment ``at`` with 30 s of history behind it, everything up to it delivered to VictoriaMetrics."""
    prom, vm = stack["prom"], stack["vm"]
    wait_until(lambda: prom_query(prom, f'count_over_time(pg_up{{target="main"}}[1m]) >= {30 // SCRAPE}')
               and prom_query(prom, "dbperf:pg_stat_database_xact:rate5m"), timeout=60, interval=1,
               message="30 s of scrapes and the recording rules evaluated")
    at = time.time() - 2 * SCRAPE
    wait_until(lambda: sent_up_to(prom) > at + SCRAPE, timeout=30, interval=0.5,
               message="remote_write past the moment compared")
    vm.flush()
    return at


def test_recording_rules_land_in_victoriametrics_with_the_same_values(stack, ready):
    prom, vm, at = stack["prom"], stack["vm"], ready
    recorded = recorded_names(prom) & names_in(prom)
    assert len(recorded) >= 5, f"too few recording rules with data in Prometheus: {sorted(recorded)}"
    differ, nan_only, compared = [], [], 0
    for name in sorted(recorded):
        want = by_labels(prom_query(prom, name, at))
        got = by_labels(prom_query(vm.url, name + '{ruler=""}', at))  # not vmalert's own (below)
        numbers = finite(want)
        if want and not numbers:
            nan_only.append(name)
        compared += len(numbers)
        if set(numbers) != set(got) or any(not math.isclose(v, got[k], rel_tol=1e-9, abs_tol=1e-12)
                                           for k, v in numbers.items()):
            differ.append((name, want, got))
    assert not differ, differ[:3]
    assert compared >= 10, (compared, nan_only)
    print(f"\n{compared} recorded series identical in VictoriaMetrics; NaN in Prometheus, so not stored: {nan_only}")


def test_vmalert_evaluates_the_rules_on_victoriametrics(stack, ready):
    """The other way: the rules loaded into the store's own ruler (vmalert), evaluated on its data."""
    prom, vm, vmalert = stack["prom"], stack["vm"], stack["vmalert"]
    rules = vmalert.rules()
    assert len(rules) == sum(len(g["rules"]) for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"])
    broken = [(r["group"], r["name"], r["lastError"]) for r in rules if r["health"] != "ok" or r["lastError"]]
    assert not broken, broken
    # what Prometheus records with a number, vmalert records too (in VictoriaMetrics, ruler="vmalert")
    want = {name for name in recorded_names(prom) & names_in(prom) if finite(by_labels(prom_query(prom, name, ready)))}
    vm.flush()
    got = {r["metric"]["__name__"] for r in prom_query(vm.url, 'count by (__name__) ({ruler="vmalert"})')}
    assert want and want <= got, sorted(want - got)
    # and its alerts reach Alertmanager: Watchdog always fires
    wait_until(lambda: [a for a in stack["alertmanager"].alerts() if a["labels"].get("alertname") == "Watchdog"
                        and a["labels"].get("ruler") == "vmalert"], timeout=20, message="vmalert's Watchdog in Alertmanager")


def test_every_rule_expression_runs_on_victoriametrics(stack, ready):
    exprs = [(path.name, r.get("record") or r.get("alert"), r["expr"]) for path in RULE_FILES
             for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    assert len(exprs) > 30
    failed = []
    for file, name, expr in exprs:
        body = query(stack["vm"].url, expr, ready)
        if body.get("status") != "success":
            failed.append((file, name, body.get("error")))
    assert not failed, failed


def test_every_dashboard_query_runs_on_victoriametrics_with_data_where_prometheus_has_it(stack, ready):
    prom, vm, at = stack["prom"], stack["vm"].url, ready
    # every variable: label_values(selector, label) through /api/v1/series, as Grafana does
    lacking = []
    for name, dash in load_all().items():
        for v in dash["templating"]["list"]:
            if v["type"] != "query":
                continue
            selector, label = re.fullmatch(r"label_values\((.+), *(\w+)\)", v["query"]["query"]).groups()
            values = {}
            for url in (prom, vm):
                series = requests.get(url + "/api/v1/series", timeout=30, params={
                    "match[]": substitute(selector, VALUES), "start": f"{at - 300:.0f}", "end": f"{at:.0f}"}).json()["data"]
                values[url] = {s[label] for s in series if label in s}
            if values[prom] - values[vm]:
                lacking.append((name, v["name"], sorted(values[prom] - values[vm])))
    assert not lacking, lacking

    errors, empty, lost, with_data, checked = [], [], [], 0, 0
    for file, uid, title, ref, t in targets():
        expr, instant = substitute(t["expr"], VALUES), t.get("instant", False)
        ranked = re.search(r"\b(topk|bottomk)\(", expr)  # near ties rank as each engine's increase() says
        for kind in {True, instant}:  # every query at one moment; the time series as Grafana draws them too
            answers = {url: query(url, expr, at, kind) for url in (prom, vm)}
            checked += 1
            if answers[vm].get("status") != "success":
                errors.append((uid, title, ref, answers[vm].get("error")))
                continue
            assert answers[prom]["status"] == "success", (uid, title, ref, answers[prom])
            want = finite(by_labels(answers[prom]["data"]["result"], kind))
            got = by_labels(answers[vm]["data"]["result"], kind)
            if want:
                with_data += 1
                if not got:
                    empty.append((uid, title, ref, "instant" if kind else "range", expr))
                elif not ranked and set(want) - set(got):
                    lost.append((uid, title, ref, "instant" if kind else "range", sorted(set(want) - set(got))[:2]))
    assert not errors, errors
    assert not empty, f"data on Prometheus, none on VictoriaMetrics: {empty}"
    assert not lost, f"series on Prometheus missing on VictoriaMetrics: {lost}"
    assert checked > 300 and with_data > 150, (checked, with_data)
    print(f"\n{checked} dashboard queries on VictoriaMetrics, {with_data} with data on both")


def finite(series: dict) -> dict:
    """The series with a number: VictoriaMetrics stores no NaN (a 0/0 ratio on a quiet server), so
    what is NaN on Prometheus is absent there."""
    def has_number(v):
        return any(not math.isnan(float(x)) for _, x in v) if isinstance(v, list) else not math.isnan(v)
    return {k: v for k, v in series.items() if has_number(v)}


def report(url: str, fmt: str, end: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "exporter", "report", "--prometheus", url, "--period", "10m",
                             "--end", f"{end:.0f}", "--format", fmt, "--top", "100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def test_dbperf_report_works_against_victoriametrics(stack, ready):
    prom, vm, end = stack["prom"], stack["vm"].url, ready
    runs = {(url, fmt): report(url, fmt, end) for url in (vm, prom) for fmt in ("json", "markdown")}
    out = {}
    for key, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, (key, stderr)
        out[key] = stdout
    on_vm, on_prom = json.loads(out[(vm, "json")]), json.loads(out[(prom, "json")])
    assert on_vm["prometheus"]["url"] == vm
    assert set(on_vm["sections"]) == set(on_prom["sections"])
    for name, section in on_prom["sections"].items():  # what is missing on one is missing on the other
        if isinstance(section, dict) and "missing" in section:
            assert on_vm["sections"][name]["missing"] == section["missing"], name
    assert on_vm["sections"]["summary"]["queries"] > 0
    # the application's statements (each run ~1,000 times here) are the same on both; the figures
    # differ as the engines' increase() does (VictoriaMetrics: no extrapolation, a counter born in
    # the window counts from zero), so one-off statements appear on VictoriaMetrics only
    busy = lambda r: {(s["datname"], s["queryid"]) for s in r["sections"]["statements"]["by_calls"]  # noqa: E731
                      if s["calls"] >= 100}
    assert len(busy(on_prom)) >= len(WORKLOAD) and busy(on_vm) == busy(on_prom)
    texts = {s["query"] for s in on_vm["sections"]["statements"]["by_calls"]}
    assert any(t and t.startswith("UPDATE orders SET v = v +") for t in texts), texts
    md = out[(vm, "markdown")]
    assert md.startswith("# Database performance report") and "UPDATE orders SET v = v +" in md, md


def test_what_one_target_costs_in_victoriametrics(stack, ready):
    """The figures docs/scaling.md extrapolates from (bench/fleet.py measures them over minutes)."""
    prom, vm = stack["prom"], stack["vm"]
    status = vm.get("/api/v1/status/tsdb", match="{job=\"dbperf\"}")
    head = prom_query(prom, 'scrape_series_added{job="dbperf"}')
    series = status["totalSeries"]
    scraped = float(prom_query(prom, 'scrape_samples_scraped{job="dbperf"}')[0]["value"][1])
    assert head and series >= scraped, (series, scraped)  # every scraped series (and the rules') is stored
    vm.force_merge()
    rows, size, index = vm.stored()
    elapsed = time.time() - stack["started"]
    print(f"\none target: {series} series in VictoriaMetrics ({scraped:.0f} per scrape); after {elapsed:.0f} s and a "
          f"merge, {rows:.0f} samples in {size / 1e3:.0f} kB ({size / max(rows, 1):.2f} bytes per sample), index "
          f"{index / 1e3:.0f} kB (bench/fleet.py measures this over minutes)")
