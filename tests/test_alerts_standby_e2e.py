"""End to end on real streaming standbys: a primary, two standbys copied from it with
``pg_basebackup -R`` through physical slots, and a real ``pg_receivewal`` (a WAL archiver, as Barman
runs it) -> dbperf -> the real Prometheus (rules of the `test` profile, 1 s scrapes and evaluations)
-> the real Alertmanager (alerts/alertmanager.yml's routes and inhibitions, every receiver a webhook
into this test).

dbperf reads the primary and the standby ``replica`` (its target named as its application_name);
nobody reads the standby ``hidden``. Replay paused on both while the primary writes fires
PostgreSQLReplicationLag on ``replica`` (resumed, it resolves) and PostgreSQLReplicationStandbyLag
for each from the primary's pg_stat_replication: ``hidden``'s is sent, ``replica``'s is muted by its
own PostgreSQLReplicationLag; ``pg_receivewal``, whose replay_lag grows with the clock, never fires.
``replica`` stopped while its slot retains more WAL than the test threshold fires
PostgreSQLReplicationSlotInactive on the primary, started again it resolves. Then ``hidden`` stops
while its slot is capped by max_slot_wal_keep_size: WAL written past the cap fires
PostgreSQLReplicationSlotLost's warning (unreserved), a checkpoint its critical (lost: no
retained-WAL series any more, so PostgreSQLReplicationSlotInactive cannot see it), and dropping the
slot resolves it. Bounded: every wait polls with a deadline; about 40 s."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import Served, wait_until
from exporter.config import parse
from exporter.pgcluster import Cluster, free_port
from exporter.registry import all_collectors
from exporter.server import Exporter
from test_alerts_support import alerting_stack, e2e_workdir

pytestmark = pytest.mark.e2e

STANDBYS = ("replica", "hidden")  # each one's cluster_name (application_name) and slot


@pytest.fixture(scope="module")
def stack():
    with e2e_workdir("dbperf-standby-e2e-") as (workdir, rules, started):
        port = free_port()  # dbperf's, known to Prometheus before it starts
        hook, am, prom = alerting_stack(f"http://127.0.0.1:{port}", rules, workdir, started)
        # no timed checkpoint during the module: an unreserved slot stays unreserved until the test's CHECKPOINT
        primary = Cluster(settings={"checkpoint_timeout": "1h"})
        started.append(primary.cleanup)
        primary.__enter__()
        standbys = {}
        for name in STANDBYS:
            standbys[name] = Cluster(settings={"cluster_name": f"'{name}'", "wal_receiver_status_interval": "1s"})
            started.append(standbys[name].cleanup)
            standbys[name].init_standby(primary, slot=name).start()
        (workdir / "wal").mkdir()
        receivewal = subprocess.Popen([str(primary.bindir / "pg_receivewal"), "-d", primary.dsn(), "-D",
                                       str(workdir / "wal"), "-s", "1", "--no-sync"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(lambda: stop_process(receivewal))
        collectors = {c.name: c.name in ("server", "replication") for c in all_collectors()}
        config = parse({"listen": "127.0.0.1:0", "targets": [
            {"name": "main", "dsn": primary.dsn(), "collectors": collectors},
            {"name": "replica", "dsn": standbys["replica"].dsn(), "collectors": collectors}]}, source="e2e-config")
        served = Served(Exporter(config), port)
        started.append(served.close)
        wait_until(lambda: len(prom.query("pg_up == 1")) == 2, timeout=30, message="Prometheus scraping both servers")
        yield {"primary": primary, "standbys": standbys, "prom": prom, "hook": hook, "am": am}


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def am_status(am, alertname: str, **labels) -> dict | None:
    for alert in am.alerts():
        if alert["labels"]["alertname"] == alertname and all(alert["labels"].get(k) == v for k, v in labels.items()):
            return alert["status"]
    return None


def test_paused_replay_fires_the_replicas_lag_and_the_primarys_view_muted_for_the_read_standby(stack):
    hook, am, prom, primary, standbys = stack["hook"], stack["am"], stack["prom"], stack["primary"], stack["standbys"]
    wait_until(lambda: prom.query('pg_replication_lag_seconds{target="replica"} == 0'), timeout=30,
               message="the standby replica caught up, no lag")
    for name in STANDBYS:
        wait_until(lambda: prom.query(f'pg_stat_replication_replay_lag_seconds{{target="main", application_name="{name}"}}'
                                      f' and pg_stat_replication_lag_bytes == 0'),
                   timeout=30, message=f"the primary seeing {name} caught up")
    for name in STANDBYS:
        standbys[name].psql("SELECT pg_wal_replay_pause()")
    try:
        primary.psql("CREATE TABLE lagging AS SELECT g FROM generate_series(1, 100000) g")
        alert = wait_until(lambda: [a for a in hook.notifications("PostgreSQLReplicationStandbyLag", "firing", path="/warning")
                                    if a["labels"]["standby"] == "hidden"], timeout=45,
                           message="hidden's PostgreSQLReplicationStandbyLag at the webhook")[0]
        assert alert["labels"]["target"] == "main" and alert["labels"]["application_name"] == "hidden"
        assert alert["labels"]["slot_name"] == "hidden"
        assert alert["annotations"]["description"].startswith("Standby hidden (127.0.0.1, slot hidden) of main replays ")
        # the standby dbperf reads: its own alert is sent, the primary's view of it is muted by it
        own = wait_until(lambda: hook.notifications("PostgreSQLReplicationLag", "firing", path="/warning"), timeout=45,
                         message="PostgreSQLReplicationLag of replica at the webhook")[0]
        assert own["labels"]["target"] == "replica" and "Replica replica is" in own["annotations"]["description"]
        assert prom.query('pg_replication_replay_lag_bytes{target="replica"} > 1000000')  # megabytes behind
        assert prom.query('pg_replication_replay_paused{target="replica"} == 1')
        muted = wait_until(lambda: (am_status(am, "PostgreSQLReplicationStandbyLag", standby="replica") or {})
                           .get("inhibitedBy"), timeout=45, message="replica's PostgreSQLReplicationStandbyLag inhibited")
        assert len(muted) == 1
        assert am_status(am, "PostgreSQLReplicationLag", standby="replica")["inhibitedBy"] == []
        assert am_status(am, "PostgreSQLReplicationStandbyLag", standby="hidden")["inhibitedBy"] == []
        # a WAL archiver never replays: PostgreSQL shows it a replay_lag growing with the clock and no
        # replay position; dbperf serves it (it is a sender: its flush lag is there) without a replay lag
        wait_until(lambda: prom.query('pg_stat_replication_flush_lag_seconds{application_name="pg_receivewal"}'),
                   timeout=45, message="pg_receivewal's sender series scraped")
        assert not prom.query('pg_stat_replication_replay_lag_seconds{application_name="pg_receivewal"}')
        assert not prom.query('pg_stat_replication_lag_bytes{application_name="pg_receivewal"}')
        assert not prom.query('ALERTS{alertname="PostgreSQLReplicationStandbyLag", application_name="pg_receivewal"}')
        assert not hook.notifications("PostgreSQLReplicationStandbyLag", "firing", path="/critical")
    finally:
        for name in STANDBYS:
            standbys[name].psql("SELECT pg_wal_replay_resume()")
    wait_until(lambda: [a for a in hook.notifications("PostgreSQLReplicationStandbyLag", "resolved", path="/warning")
                        if a["labels"]["standby"] == "hidden"], timeout=45,
               message="hidden's PostgreSQLReplicationStandbyLag resolved")
    wait_until(lambda: hook.notifications("PostgreSQLReplicationLag", "resolved", path="/warning"), timeout=45,
               message="PostgreSQLReplicationLag of replica resolved")
    assert prom.query('pg_replication_lag_seconds{target="replica"} == 0')
    assert not [a for a in hook.notifications("PostgreSQLReplicationStandbyLag")
                if a["labels"].get("application_name") == "pg_receivewal"]


def test_slot_of_a_stopped_standby_fires_and_resolves_when_it_is_back(stack):
    hook, primary, replica, prom = stack["hook"], stack["primary"], stack["standbys"]["replica"], stack["prom"]
    replica.stop()
    try:
        # 4 WAL segments (64 MiB) written while the slot's consumer is away: > the test's 32 MiB
        for _ in range(4):
            primary.psql("SELECT pg_logical_emit_message(false, 'e2e', 'x'), pg_switch_wal()")
        sent = wait_until(lambda: [a for a in hook.notifications("PostgreSQLReplicationSlotInactive", "firing")
                                   if a["labels"]["slot_name"] == "replica"], timeout=45,
                          message="PostgreSQLReplicationSlotInactive of replica's slot at the webhook")
        alert = sent[0]
        assert alert["labels"]["target"] == "main" and alert["_path"] == "/warning"
        retained = re.search(r"retains ([\d.]+)MiB of WAL", alert["annotations"]["description"])
        assert retained and 32 < float(retained.group(1)) <= 4 * 16 + 1, alert["annotations"]
    finally:
        replica.start()
    wait_until(lambda: [a for a in hook.notifications("PostgreSQLReplicationSlotInactive", "resolved", path="/warning")
                        if a["labels"]["slot_name"] == "replica"],
               timeout=45, message="PostgreSQLReplicationSlotInactive of replica's slot resolved")
    assert prom.query('pg_replication_slots_active{target="main", slot_name="replica"} == 1')


def test_slot_past_max_slot_wal_keep_size_warns_and_lost_pages_until_dropped(stack):
    hook, prom, primary, hidden = stack["hook"], stack["prom"], stack["primary"], stack["standbys"]["hidden"]

    def wal_status() -> str:
        return primary.psql("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'hidden'").strip()

    def slot_alerts(status: str, path: str) -> list[dict]:
        return [a for a in hook.notifications("PostgreSQLReplicationSlotLost", status, path=path)
                if a["labels"]["slot_name"] == "hidden"]

    primary.psql("ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'")
    primary.psql("SELECT pg_reload_conf()")
    try:
        hidden.stop()
        wait_until(lambda: prom.query('pg_replication_slots_active{target="main", slot_name="hidden"} == 0'),
                   timeout=30, message="hidden's slot inactive")
        # 4 WAL segments (64 MiB) past the slot, more than the 32 MB cap, and no checkpoint yet
        for _ in range(4):
            primary.psql("SELECT pg_logical_emit_message(false, 'e2e', 'x'), pg_switch_wal()")
        assert wal_status() == "unreserved"
        warning = wait_until(lambda: slot_alerts("firing", "/warning"), timeout=45,
                             message="PostgreSQLReplicationSlotLost's warning at the webhook")[0]
        assert warning["labels"]["wal_status"] == "unreserved" and warning["labels"]["target"] == "main"
        assert "past max_slot_wal_keep_size" in warning["annotations"]["description"]

        primary.psql("CHECKPOINT")
        wait_until(lambda: wal_status() == "lost", timeout=30, message="hidden's slot lost")
        critical = wait_until(lambda: slot_alerts("firing", "/critical"), timeout=45,
                              message="PostgreSQLReplicationSlotLost's critical at the webhook")[0]
        assert critical["labels"]["wal_status"] == "lost"
        assert critical["annotations"]["description"].startswith("Slot hidden on main is lost: ")
        # what PostgreSQLReplicationSlotInactive reads is gone with the WAL
        wait_until(lambda: not prom.query('pg_replication_slots_retained_wal_bytes{slot_name="hidden"}'), timeout=30,
                   message="the lost slot's retained-WAL series gone")

        primary.psql("SELECT pg_drop_replication_slot('hidden')")
        wait_until(lambda: slot_alerts("resolved", "/critical"), timeout=45,
                   message="PostgreSQLReplicationSlotLost resolved after the slot was dropped")
    finally:
        primary.psql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'hidden'")
        primary.psql("ALTER SYSTEM RESET max_slot_wal_keep_size")
        primary.psql("SELECT pg_reload_conf()")
