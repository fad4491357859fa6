"""Sharding past one dbperf process, as docs/scaling.md describes: two ``dbperf serve`` processes with
the same config, two real Prometheus servers reading the same file_sd target list, each keeping
its ``hashmod`` share and sending it to its own dbperf, both remote-writing into one real
VictoriaMetrics, which then holds the whole fleet. The split is exactly Prometheus's hashmod, and
each dbperf opens sessions only for the targets it is asked for (it is stateless)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import Prometheus, wait_until
from exporter.pgcluster import Cluster
from fleetkit import Dbperf, VictoriaMetrics, probe_job, prom_query, remote_write_to, up_count, write_sd

pytestmark = pytest.mark.e2e

TARGETS = 12
SHARDS = 2
NAMES = [f"app-{i:02d}" for i in range(TARGETS)]


def hashmod(value: str, modulus: int) -> int:
    """Prometheus's relabel action hashmod: the low 8 bytes of the MD5 of the value, big-endian."""
    return int.from_bytes(hashlib.md5(value.encode()).digest()[8:], "big") % modulus


@pytest.mark.fast
def test_hashmod_matches_prometheus_on_known_values():
    # the expected values of Prometheus's own relabel tests (model/relabel/relabel_test.go)
    assert hashmod("baz", 1000) == 976 and hashmod("foo\nbar", 1000) == 734
    assert {hashmod(name, SHARDS) for name in NAMES} == set(range(SHARDS))  # both shards get targets here


def test_two_shards_split_the_targets_and_victoriametrics_holds_them_all():
    with Cluster() as cluster:
        for i in range(TARGETS):
            cluster.psql(f"CREATE DATABASE app_{i:02d}")
        config = {"targets": [{"name": name, "dsn": cluster.dsn(name.replace("-", "_")), "databases": {"discover": False},
                               "collectors": {"statements": False}} for name in NAMES]}
        workdir = Path(tempfile.mkdtemp(prefix="dbperf-shards-"))
        sd = workdir / "targets.json"
        write_sd(sd, NAMES, env="test")
        started = []
        try:
            vm = VictoriaMetrics()
            started.append(vm)
            dbperfs, proms = [], []
            for k in range(SHARDS):
                dbperfs.append(Dbperf(config))  # the same config in every copy
                started.append(dbperfs[-1])
                remote = remote_write_to(vm)
                remote[0]["write_relabel_configs"] = [{"target_label": "shard", "replacement": str(k)}]
                proms.append(Prometheus([probe_job("postgres", sd, dbperfs[k].address, shard=(k, SHARDS))],
                                        interval="2s", remote_write=remote))
                started.append(proms[-1])
            expected = {k: sorted(n for n in NAMES if hashmod(n, SHARDS) == k) for k in range(SHARDS)}
            for k, prom in enumerate(proms):
                wait_until(lambda: up_count(prom.url, "postgres") == len(expected[k]), timeout=40, interval=0.5,
                           message=f"shard {k}'s targets up")
                scraped = sorted(r["metric"]["instance"] for r in prom_query(prom.url, 'up{job="postgres"} == 1'))
                assert scraped == expected[k]
                # each copy holds sessions only for its share: per target, the scrape's and the
                # wait-event sampler's
                wait_until(lambda: dbperfs[k].connections_to(cluster.port) == 2 * len(expected[k]), timeout=10,
                           message=f"dbperf {k} with two sessions per target of its shard")

            def fleet():
                vm.flush()
                return {r["metric"]["instance"]: r["metric"]["shard"]
                        for r in prom_query(vm.url, 'max by (instance, shard) (pg_up{job="postgres"} == 1)')}
            everything = wait_until(lambda: len(fleet()) == TARGETS and fleet(), timeout=30, interval=1,
                                    message="the whole fleet in VictoriaMetrics")
            assert everything == {n: str(hashmod(n, SHARDS)) for n in NAMES}
            # a fleet-wide query across both shards, as a central dashboard runs it
            commits = prom_query(vm.url, 'count(count by (instance) (pg_stat_database_xact_commit_total{datname="app_03"}))')
            assert commits and int(float(commits[0]["value"][1])) == TARGETS
        finally:
            for proc in reversed(started):
                proc.stop()
            shutil.rmtree(workdir, ignore_errors=True)
