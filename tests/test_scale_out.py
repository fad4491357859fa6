"""Multi-target mode: one ``dbperf serve`` process serving 20 targets through /probe, found by the real
Prometheus with file-based service discovery (the targets are databases of one throwaway cluster).
Every scrape stays within its timeout, and dbperf's CPU per target scrape and memory per target are
measured (bench/fleet.py runs the same with 200 targets at 15 s; bench/FLEET.md has its figures)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psutil
import pytest

from conftest import Prometheus, wait_until
from exporter.pgcluster import Cluster
from fleetkit import Dbperf, cluster_processes, measure, probe_job, prom_query, up_count, write_sd

pytestmark = pytest.mark.e2e

TARGETS = 20
INTERVAL = 2    # seconds; the scrape timeout is the same
WINDOW = 10     # seconds measured (five scrapes of each target), after every target's first (cold) scrapes
# sanity bounds, an order of magnitude above what this machine measures (about 15 ms and 0.5 MB)
MAX_CPU_PER_SCRAPE = 0.25
MAX_RSS_PER_TARGET = 10e6


@pytest.fixture(scope="module")
def twenty():
    with Cluster() as cluster:
        cluster.psql("CREATE EXTENSION pg_stat_statements")
        for i in range(TARGETS):
            cluster.psql(f"CREATE DATABASE app_{i:02d}")
        dbperf = Dbperf({"targets": [
            {"name": f"app-{i:02d}", "dsn": cluster.dsn(f"app_{i:02d}"), "databases": {"discover": False},
             "collectors": {"statements": False}}
            for i in range(TARGETS)]})
        try:
            yield cluster, dbperf
        finally:
            dbperf.stop()


def test_twenty_targets_scraped_by_prometheus_with_file_sd(twenty):
    cluster, dbperf = twenty
    rss_base = dbperf.usage().rss  # no target scraped yet
    workdir = Path(tempfile.mkdtemp(prefix="dbperf-sd-"))
    write_sd(workdir / "targets.json", [f"app-{i:02d}" for i in range(TARGETS)], env="test")
    prom = Prometheus([probe_job("postgres", workdir / "targets.json", dbperf.address)], interval=f"{INTERVAL}s")
    try:
        wait_until(lambda: up_count(prom.url, "postgres") == TARGETS, timeout=40, interval=0.5, message="all 20 targets up")
        wait_until(lambda: len(prom_query(prom.url, 'count_over_time(up{job="postgres"}[1m]) >= 3')) == TARGETS,
                   timeout=30, interval=0.5, message="three scrapes of every target")
        figures = measure(prom.url, "postgres", dbperf, TARGETS, WINDOW, INTERVAL, rss_base,
                          ours=lambda: [psutil.Process(prom.proc.pid), *cluster_processes(cluster)])
        print("\n" + figures.line())
        health = figures.health
        # every target up all along, every scrape without error and within its timeout
        assert health.targets == TARGETS and not health.errors, health.errors
        assert health.down == 0 and health.over_timeout == 0 and health.max_duration < INTERVAL, health
        assert figures.scrapes >= TARGETS * (WINDOW // INTERVAL - 2), figures.scrapes
        assert figures.cpu_per_scrape < MAX_CPU_PER_SCRAPE and figures.rss_per_target < MAX_RSS_PER_TARGET, figures.line()

        result = prom_query(prom.url, 'count by (instance) (pg_stat_database_xact_commit_total{job="postgres",env="test",'
                                      'datname="app_07"})')
        assert len(result) == TARGETS  # every target sees the cluster-wide view
        # two sessions per target, the scrapes' and the wait_events sampler's: discovery is off, so
        # no per-database sessions are added
        sessions = int(cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbperf'"))
        assert sessions == 2 * TARGETS == dbperf.connections_to(cluster.port)
    finally:
        prom.stop()
        shutil.rmtree(workdir, ignore_errors=True)
