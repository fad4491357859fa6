"""Multi-target mode: one dbperf serving 20 targets through /probe, found by the real Prometheus
with file-based service discovery (the targets are databases of one throwaway cluster)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from conftest import Prometheus, Served, wait_until
from exporter.config import parse
from exporter.pgcluster import Cluster
from exporter.server import Exporter

pytestmark = pytest.mark.e2e

TARGETS = 20


@pytest.fixture(scope="module")
def twenty(tmp_path_factory):
    with Cluster() as cluster:
        cluster.psql("CREATE EXTENSION pg_stat_statements")
        for i in range(TARGETS):
            cluster.psql(f"CREATE DATABASE app_{i:02d}")
        config = parse({"listen": "127.0.0.1:0", "targets": [
            {"name": f"app-{i:02d}", "dsn": cluster.dsn(f"app_{i:02d}"), "databases": {"discover": False},
             "collectors": {"statements": False}}
            for i in range(TARGETS)]}, source="scale-out-test")
        served = Served(Exporter(config))
        yield cluster, served
        served.close()


def test_twenty_targets_scraped_by_prometheus_with_file_sd(twenty):
    cluster, served = twenty
    port = served.server.server_address[1]
    workdir = Path(tempfile.mkdtemp(prefix="dbperf-sd-"))
    (workdir / "targets.json").write_text(json.dumps([
        {"targets": [f"app-{i:02d}" for i in range(TARGETS)], "labels": {"env": "test"}}]))
    prom = Prometheus([{
        "job_name": "postgres", "metrics_path": "/probe",
        "file_sd_configs": [{"files": [str(workdir / "targets.json")], "refresh_interval": "1s"}],
        "relabel_configs": [{"source_labels": ["__address__"], "target_label": "__param_target"},
                            {"source_labels": ["__param_target"], "target_label": "instance"},
                            {"target_label": "__address__", "replacement": f"127.0.0.1:{port}"}]}],
        interval="2s")
    api = prom.url + "/api/v1/query"

    def up_count():
        try:
            result = requests.get(api, params={"query": 'count(pg_up{job="postgres",env="test"} == 1)'}, timeout=2).json()
        except requests.RequestException:
            return 0
        data = result.get("data", {}).get("result", [])
        return int(float(data[0]["value"][1])) if data else 0

    try:
        wait_until(lambda: up_count() == TARGETS, timeout=40, interval=0.5, message="all 20 targets up")
        # every target was scraped without error (no timeout, no rejected sample)
        targets = requests.get(api.replace("/query", "/targets"), timeout=2).json()["data"]["activeTargets"]
        assert len(targets) == TARGETS
        assert all(t["health"] == "up" and t["lastError"] == "" for t in targets), \
            [(t["labels"]["instance"], t["lastError"]) for t in targets if t["lastError"]]
        result = requests.get(api, params={"query": 'count by (instance) (pg_stat_database_xact_commit_total{job="postgres",datname="app_07"})'},
                              timeout=2).json()
        assert len(result["data"]["result"]) == TARGETS  # every target sees the cluster-wide view
        # one session per target: discovery is off, so no per-database sessions are added
        sessions = int(cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbperf'"))
        assert sessions == TARGETS
    finally:
        prom.stop()
        shutil.rmtree(workdir, ignore_errors=True)
