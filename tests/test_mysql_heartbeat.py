"""The ``replication:`` key of a MySQL target (the heartbeat table) and the SQL it gives; reading it
on a real replica is in tests/test_mysql_replication.py."""

from __future__ import annotations

import pytest

from exporter.config import ConfigError, parse
from exporter.mysql import heartbeat

pytestmark = pytest.mark.fast


def target(replication=None, kind="mysql"):
    t = {"name": "r", "kind": kind, "dsn": "mysql://u@h/" if kind == "mysql" else "host=h"}
    if replication is not None:
        t["replication"] = replication
    return parse({"targets": [t]}, source="f.yml").targets[0]


def test_defaults_follow_pt_heartbeat():
    assert target().replication == heartbeat.HeartbeatOptions() and not heartbeat.HeartbeatOptions().table
    options = target({"heartbeat_table": "percona.heartbeat", "heartbeat_utc": True}).replication
    assert (options.table, options.column, options.server_id_column, options.utc) == (
        "percona.heartbeat", "ts", "server_id", True)
    assert "UTC_TIMESTAMP(6)" in heartbeat.sql(options, {1})
    assert "FROM `percona`.`heartbeat` WHERE `server_id` IN (1, 7) GROUP BY `server_id`" in heartbeat.sql(options, {7, 1})
    assert "NOW(6)" in heartbeat.sql(target({"heartbeat_table": "a.b"}).replication, {1})


@pytest.mark.parametrize("replication, key", [
    ({"heartbeat_table": "heartbeat"}, "targets[0].replication.heartbeat_table"),
    ({"heartbeat_table": "a.b`; DROP TABLE x"}, "targets[0].replication.heartbeat_table"),
    ({"heartbeat_table": "a.b.c"}, "targets[0].replication.heartbeat_table"),
    ({"heartbeat_table": "a.b", "heartbeat_column": "ts`"}, "targets[0].replication.heartbeat_column"),
    ({"heartbeat_table": "a.b", "server_id_column": ""}, "targets[0].replication.server_id_column"),
    ({"heartbeat_table": "a.b", "heartbeat_utc": "yes"}, "targets[0].replication.heartbeat_utc"),
    ({"interval": 1}, "targets[0].replication.interval"),
])
def test_bad_values_are_one_line_naming_the_key(replication, key):
    with pytest.raises(ConfigError) as exc:
        target(replication)
    assert str(exc.value).startswith(f"f.yml: {key}: ") and "\n" not in str(exc.value)


def test_a_postgres_target_refuses_the_key():
    with pytest.raises(ConfigError, match=r"targets\[0\].replication: is a key of kind: mysql targets only"):
        target({"heartbeat_table": "a.b"}, kind="postgres")
