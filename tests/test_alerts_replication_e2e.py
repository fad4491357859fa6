"""End to end on a real streaming standby: a primary and a standby copied from it with
``pg_basebackup -R`` through a physical slot -> dbperf (both targets) -> the real Prometheus (rules of
the `test` profile, 1 s scrapes and evaluations) -> the real Alertmanager (alerts/alertmanager.yml's
routes, every receiver a webhook into this test).

Replay paused while the primary writes fires PostgreSQLReplicationLag on the standby, resumed it
resolves; the standby stopped while its slot retains more WAL than the test threshold fires
PostgreSQLReplicationSlotInactive on the primary, the standby started again resolves it.
Bounded: every wait polls with a deadline; the module takes about a minute."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import Served, wait_until
from exporter.config import parse
from exporter.pgcluster import Cluster
from exporter.registry import all_collectors
from exporter.server import Exporter
from test_alerts_support import alerting_stack, generate

pytestmark = pytest.mark.e2e

SLOT = "standby"


@pytest.fixture(scope="module")
def stack():
    workdir = Path(tempfile.mkdtemp(prefix="dbperf-repl-e2e-"))
    rules = workdir / "rules"
    assert generate.main(["--profile", "test", "--out", str(rules)]) == 0
    started = [lambda: shutil.rmtree(workdir, ignore_errors=True)]  # runs last
    try:
        primary = Cluster()
        primary.__enter__()
        started.append(primary.cleanup)
        standby = Cluster(settings={"cluster_name": f"'{SLOT}'", "wal_receiver_status_interval": "1s"})
        started.append(standby.cleanup)
        standby.init_standby(primary, slot=SLOT).start()
        collectors = {c.name: c.name in ("server", "replication") for c in all_collectors()}
        config = parse({"listen": "127.0.0.1:0", "targets": [
            {"name": "main", "dsn": primary.dsn(), "collectors": collectors},
            {"name": "replica", "dsn": standby.dsn(), "collectors": collectors}]}, source="e2e-config")
        served = Served(Exporter(config))
        started.append(served.close)
        hook, _, prom = alerting_stack(served.url, rules, workdir, started)
        wait_until(lambda: len(prom.query("pg_up == 1")) == 2, timeout=30, message="Prometheus scraping both servers")
        yield {"primary": primary, "standby": standby, "prom": prom, "hook": hook}
    finally:
        for stop in reversed(started):
            stop()


def test_replication_lag_fires_while_replay_is_paused_and_resolves(stack):
    hook, primary, standby, prom = stack["hook"], stack["primary"], stack["standby"], stack["prom"]
    wait_until(lambda: prom.query('pg_replication_lag_seconds{target="replica"} == 0'), timeout=30,
               message="the standby caught up, no lag")
    standby.psql("SELECT pg_wal_replay_pause()")
    try:
        primary.psql("CREATE TABLE lagging AS SELECT g FROM generate_series(1, 100000) g")
        sent = wait_until(lambda: hook.notifications("PostgreSQLReplicationLag", "firing"), timeout=45,
                          message="PostgreSQLReplicationLag at the webhook")
        alert = sent[0]
        assert alert["labels"]["target"] == "replica" and alert["_path"] == "/warning"
        assert "Replica replica is" in alert["annotations"]["description"]
        assert prom.query('pg_replication_replay_lag_bytes{target="replica"} > 1000000')  # megabytes behind
        assert prom.query('pg_replication_replay_paused{target="replica"} == 1')
    finally:
        standby.psql("SELECT pg_wal_replay_resume()")
    wait_until(lambda: hook.notifications("PostgreSQLReplicationLag", "resolved", path="/warning"), timeout=45,
               message="PostgreSQLReplicationLag resolved")
    assert prom.query('pg_replication_lag_seconds{target="replica"} == 0')


def test_slot_of_a_stopped_standby_fires_and_resolves_when_it_is_back(stack):
    hook, primary, standby, prom = stack["hook"], stack["primary"], stack["standby"], stack["prom"]
    standby.stop()
    try:
        # 4 WAL segments (64 MiB) written while the slot's consumer is away: > the test's 32 MiB
        for _ in range(4):
            primary.psql("SELECT pg_logical_emit_message(false, 'e2e', 'x'), pg_switch_wal()")
        sent = wait_until(lambda: hook.notifications("PostgreSQLReplicationSlotInactive", "firing"), timeout=45,
                          message="PostgreSQLReplicationSlotInactive at the webhook")
        alert = sent[0]
        assert alert["labels"]["target"] == "main" and alert["labels"]["slot_name"] == SLOT
        assert alert["_path"] == "/warning"
        retained = re.search(r"retains ([\d.]+)MiB of WAL", alert["annotations"]["description"])
        assert retained and 32 < float(retained.group(1)) <= 4 * 16 + 1, alert["annotations"]
    finally:
        standby.start()
    wait_until(lambda: hook.notifications("PostgreSQLReplicationSlotInactive", "resolved", path="/warning"),
               timeout=45, message="PostgreSQLReplicationSlotInactive resolved")
    assert prom.query(f'pg_replication_slots_active{{target="main", slot_name="{SLOT}"}} == 1')
