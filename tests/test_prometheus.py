"""The real ``dbperf serve`` scraped by the real Debian ``prometheus``, in both modes (/metrics
and /probe with relabelling); no password reaches logs, metrics or check-config output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from conftest import ROOT, Prometheus, http_ok, promtool_check_metrics, wait_until
from exporter.pgcluster import Cluster, free_port

pytestmark = pytest.mark.prom

PASSWORD = "Prom-Test-Secret-4242"


@pytest.fixture(scope="module")
def secured_cluster():
    with Cluster() as c:
        c.psql(f"CREATE ROLE monitor LOGIN PASSWORD '{PASSWORD}'; GRANT pg_monitor TO monitor")
        c.require_password("monitor")
        yield c


@pytest.fixture(scope="module")
def dbperf(secured_cluster):
    workdir = Path(tempfile.mkdtemp(prefix="dbperf-prom-"))
    dsn_file = workdir / "main.dsn"
    dsn_file.write_text(f"host=127.0.0.1 port={secured_cluster.port} dbname=postgres user=monitor password={PASSWORD}\n")
    port = free_port()
    config = workdir / "dbperf.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        "targets:\n"
        "  - name: main\n    dsn_file: main.dsn\n"
        f"  - name: wrongpw\n    dsn: host=127.0.0.1 port={secured_cluster.port} dbname=postgres user=monitor password=x{PASSWORD}\n"
    )
    log = open(workdir / "dbperf.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "serve", "--config", str(config), "--log-format", "json"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(url + "/healthz"), timeout=20, message="dbperf /healthz")
    yield {"url": url, "port": port, "log": workdir / "dbperf.log", "config": config, "proc": proc}
    proc.terminate()
    assert proc.wait(timeout=15) == 0, "dbperf did not shut down cleanly on SIGTERM"
    log.close()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def prometheus(dbperf):
    address = f"127.0.0.1:{dbperf['port']}"
    prom = Prometheus([
        {"job_name": "dbperf", "static_configs": [{"targets": [address]}]},
        {"job_name": "dbperf-probe", "metrics_path": "/probe", "static_configs": [{"targets": ["main"]}],
         "relabel_configs": [{"source_labels": ["__address__"], "target_label": "__param_target"},
                             {"source_labels": ["__param_target"], "target_label": "instance"},
                             {"target_label": "__address__", "replacement": address}]},
    ])
    yield prom.url
    prom.stop()


def query(prom: str, expr: str) -> list:
    response = requests.get(prom + "/api/v1/query", params={"query": expr}, timeout=5).json()
    assert response["status"] == "success", response
    return response["data"]["result"]


def test_prometheus_scrapes_both_modes(prometheus):
    wait_until(lambda: query(prometheus, 'pg_up{job="dbperf",target="main"} == 1'), timeout=30,
               message="pg_up 1 through /metrics")
    wait_until(lambda: query(prometheus, 'pg_up{job="dbperf-probe",instance="main"} == 1'), timeout=30,
               message="pg_up 1 through /probe")
    down = query(prometheus, 'pg_up{job="dbperf",target="wrongpw"}')
    assert down and down[0]["value"][1] == "0"
    up = query(prometheus, 'up{job=~"dbperf.*"}')
    assert {r["metric"]["job"] for r in up if r["value"][1] == "1"} == {"dbperf", "dbperf-probe"}
    # a value read back through Prometheus: the connection limit of the real server
    limit = query(prometheus, 'pg_connections_limit{job="dbperf",target="main"}')
    assert float(limit[0]["value"][1]) == 200 - 3
    # Prometheus saw no sample it rejected (duplicates, out of order)
    targets = requests.get(prometheus + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    assert all(t["lastError"] == "" for t in targets), [t["lastError"] for t in targets]


def test_no_password_in_logs_metrics_or_check_config(dbperf, prometheus):
    text = requests.get(dbperf["url"] + "/metrics", timeout=10).text
    probe = requests.get(dbperf["url"] + "/probe?target=wrongpw", timeout=10).text
    check = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(dbperf["config"])],
                           capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert check.returncode == 0, check.stderr
    time.sleep(0.5)
    log = dbperf["log"].read_text()
    for where, content in (("metrics", text), ("probe", probe), ("check-config", check.stdout + check.stderr), ("log", log)):
        assert PASSWORD not in content, f"the password leaked into {where}"
    # the failure was logged, as JSON, once per minute at most, naming the target
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    failures = [entry for entry in lines if entry.get("target") == "wrongpw"]
    assert 1 <= len(failures) <= 2, failures
    assert "password authentication failed" in failures[0]["msg"]


def test_real_output_passes_promtool(dbperf):
    text = requests.get(dbperf["url"] + "/metrics", timeout=10).text
    assert promtool_check_metrics(text) == ""
