"""alerts/alertmanager.yml's inhibitions between the two views of a lagging standby, on a real
Alertmanager: the standby's own PostgreSQLReplicationLag mutes the primary's
PostgreSQLReplicationStandbyLag of the same ``standby`` (and job), a critical both severities, a
warning only the warning; a standby nobody reads, another job, or two standbys of one primary
never mute each other."""

from __future__ import annotations

import pytest

from conftest import wait_until
from test_alerts_alertmanager import am  # noqa: F401  (the real Alertmanager with alerts/alertmanager.yml's rules)

pytestmark = pytest.mark.prom

REPLICA_SIDE, PRIMARY_SIDE = "PostgreSQLReplicationLag", "PostgreSQLReplicationStandbyLag"


def replica_side(standby: str, severity: str, job: str = "dbperf") -> dict:
    return {"alertname": REPLICA_SIDE, "severity": severity, "job": job, "instance": "dbperf-r:9847",
            "target": standby, "standby": standby}


def primary_side(standby: str, severity: str, client_addr: str = "10.0.0.2", job: str = "dbperf") -> dict:
    return {"alertname": PRIMARY_SIDE, "severity": severity, "job": job, "instance": "dbperf-p:9847",
            "target": "main", "application_name": standby, "client_addr": client_addr, "standby": standby}


def test_the_primary_view_of_a_standby_is_muted_by_its_own_alert(am):  # noqa: F811
    posted = [
        replica_side("r1", "warning"), primary_side("r1", "warning"),           # same severity: one page
        replica_side("r2", "warning"), primary_side("r2", "critical"),          # the primary sees worse: kept
        replica_side("r3", "critical"), replica_side("r3", "warning"),
        primary_side("r3", "critical"), primary_side("r3", "warning"),          # critical mutes both
        primary_side("unread", "warning"),                                      # nobody reads it: kept
        replica_side("r4", "warning", job="other"), primary_side("r4", "warning"),  # another job: kept
        # two standbys of one primary, both named walreceiver (the default), no slots: apart by address
        primary_side("walreceiver", "critical", "10.0.0.7"), primary_side("walreceiver", "warning", "10.0.0.8"),
    ]
    am.post_alerts(*posted)
    wait_until(lambda: len(am.alerts()) == len(posted), timeout=10, message=f"{len(posted)} alerts in Alertmanager")

    def muted(labels: dict) -> bool:
        alert = next(a for a in am.alerts() if a["labels"] == labels)
        return alert["status"]["inhibitedBy"] != []

    for labels in (primary_side("r1", "warning"), primary_side("r3", "critical"), primary_side("r3", "warning"),
                   replica_side("r3", "warning")):  # the last by the general rule: its own critical
        wait_until(lambda: muted(labels), timeout=10, message=f"{labels} muted")
    for kept in (replica_side("r1", "warning"), replica_side("r2", "warning"), primary_side("r2", "critical"),
                 replica_side("r3", "critical"), primary_side("unread", "warning"), primary_side("r4", "warning"),
                 primary_side("walreceiver", "critical", "10.0.0.7"), primary_side("walreceiver", "warning", "10.0.0.8")):
        assert not muted(kept), kept
