"""exporter/incidents.py against a real PostgreSQL with the logging settings of
exporter.serverlog.settings.throwaway_settings (what the demo runs): each incident once, and the log
dbperf reads shows each of them, counted as the incident happened: jsonlog on the machine's
PostgreSQL, csvlog on PostgreSQL 13 (tests/pgdist.py)."""

from __future__ import annotations

import threading

import pytest

from conftest import Samples, wait_until
from exporter import incidents
from exporter.config import parse
from exporter.pgcluster import Cluster
from exporter.server import Exporter
from exporter.serverlog.collector import ServerLogCollector
from exporter.workload import setup_schema

pytestmark = pytest.mark.pg

PASSWORD = "incidents-pw"


@pytest.fixture(scope="module", params=[None, 13], ids=["machine", "pg13"])
def logged(request, tmp_path_factory):
    from exporter.serverlog.settings import throwaway_settings

    bindir = None
    if request.param is not None:
        from pgdist import bindir as dist_bindir

        bindir = dist_bindir(request.param)
    cluster = Cluster(bindir=bindir)
    fmt, settings = throwaway_settings(cluster.major())
    cluster.settings.update(settings)
    with cluster:
        setup_schema(cluster.dsn())
        incidents.setup(cluster.dsn(), PASSWORD)
        cluster.require_password(incidents.LOGIN_ROLE)
        config = parse({"state_dir": str(tmp_path_factory.mktemp("state")), "targets": [
            {"name": "main", "dsn": cluster.dsn(), "server_log": {"path": str(cluster.datadir / "log"), "format": fmt,
                                                                   "interval": 0.1, "client_network_prefix": 24}}]},
                       source="test-config")
        exporter = Exporter(config, collectors=(ServerLogCollector(),))
        try:
            exporter.probe("main", 10.0)  # starts the reader; its first read puts it at the end of the log
            wait_until(lambda: exporter.scrapers["main"].collectors[0].shared.reader.reads > 0, message="a first read")
            yield cluster, exporter, fmt
        finally:
            exporter.close()


def scrape(exporter) -> Samples:
    return Samples(exporter.probe("main", 10.0).decode())


def total(samples: Samples, name: str, **labels) -> float:
    return sum(s.value for s in samples.series(name, **labels))


def test_each_incident_is_in_the_log(logged):
    cluster, exporter, fmt = logged
    assert fmt == ("jsonlog" if cluster.major() >= 15 else "csvlog")
    method = "scram-sha-256" if cluster.major() >= 14 else "unknown"  # 13 logs no "connection authenticated"
    events = incidents.Incidents(cluster.dsn(), cluster.dsn(user=incidents.LOGIN_ROLE), PASSWORD, threading.Event())
    events.run_each_once()
    assert events.stats == {name: 1 for name, *_ in incidents.SCHEDULE}
    expected = {  # (metric, labels): at least this many
        ("pg_log_connections_total", (("user", incidents.LOGIN_ROLE), ("method", method))): 1,
        ("pg_log_auth_failures_total", (("user", incidents.LOGIN_ROLE), ("reason", "password"))): 1,
        ("pg_log_auth_failures_by_network_total", (("network", "127.0.0.0/24"),)): 1,
        ("pg_log_errors_total", (("condition", "unique_violation"),)): 1,
        ("pg_log_errors_total", (("condition", "deadlock_detected"),)): 1,
        ("pg_log_deadlocks_total", ()): 1,
        ("pg_log_lock_waits_total", ()): 1,
        ("pg_log_lock_wait_seconds_count", ()): 1,
        ("pg_log_temp_files_total", ()): 1,
        ("pg_log_ddl_total", (("command", "DROP TABLE"),)): 1,
        ("pg_log_ddl_total", (("command", "CREATE TABLE"),)): 1,
        ("pg_log_checkpoints_total", ()): 1,
        ("pg_log_checkpoints_completed_total", ()): 1,
    }

    def missing():
        samples = scrape(exporter)
        return {key: total(samples, key[0], **dict(key[1])) for key, least in expected.items()
                if total(samples, key[0], **dict(key[1])) < least}
    wait_until(lambda: not missing(), timeout=30, message="every incident counted")
    samples = scrape(exporter)
    # once each: one wrong password, one duplicate SKU, one deadlock, one DDL of each kind
    assert total(samples, "pg_log_auth_failures_total") == 1
    assert total(samples, "pg_log_errors_total", condition="unique_violation") == 1
    assert total(samples, "pg_log_deadlocks_total") == 1
    assert total(samples, "pg_log_ddl_total") == 2
