"""Replication state of a MySQL or MariaDB replica: one series per channel (MySQL) or connection
(MariaDB multi-source), from ``SHOW REPLICA STATUS`` (MySQL 8.0.22+), ``SHOW SLAVE STATUS`` (older
MySQL) or ``SHOW ALL SLAVES STATUS`` (MariaDB). A primary has no rows: no series.

GTID: whether each channel replicates by GTID, and the transactions it received but has not applied
per domain (:mod:`.gtid`; MariaDB's ``@@gtid_slave_pos`` read in the same round trip). Heartbeat
lag (:mod:`.heartbeat`) when the target's ``replication.heartbeat_table`` is set: one more query,
on a replica only."""

from __future__ import annotations

import time

from exporter.collector import Collector
from exporter.metrics import Family
from exporter.mysql import gtid, heartbeat
from exporter.postgres.sqlmark import mark

# the column in each spelling (new MySQL, old MySQL and MariaDB) -> the family
IO_RUNNING = ("Replica_IO_Running", "Slave_IO_Running")
SQL_RUNNING = ("Replica_SQL_Running", "Slave_SQL_Running")
BEHIND = ("Seconds_Behind_Source", "Seconds_Behind_Master")
SOURCE_HOST = ("Source_Host", "Master_Host")
SOURCE_ID = ("Source_Server_Id", "Master_Server_Id")
FAMILIES = {
    "io": ("mysql_replication_io_thread_running", "1 when the replica's I/O thread (receiving from the source) "
           "runs; 0 when stopped, connecting or failed."),
    "sql": ("mysql_replication_sql_thread_running", "1 when the replica's SQL thread (applying the relay log) runs."),
    "behind": ("mysql_replication_lag_seconds", "Seconds_Behind_Source: how far the SQL thread is behind the source "
               "(no sample while the SQL thread does not run: unknown)."),
    "io_errno": ("mysql_replication_last_io_error_number", "The I/O thread's last error number (0: none)."),
    "sql_errno": ("mysql_replication_last_sql_error_number", "The SQL thread's last error number (0: none)."),
    "using_gtid": ("mysql_replication_using_gtid", "1 when the channel replicates by GTID (MariaDB: Using_Gtid "
                   "Slave_Pos or Current_Pos; MySQL: Auto_Position 1)."),
    "heartbeat": ("mysql_replication_heartbeat_lag_seconds", "The replica's clock minus the newest heartbeat row "
                  "the channel's source wrote (replication.heartbeat_table, pt-heartbeat's layout); clock skew "
                  "between the two servers is in the value."),
}
GTID_BEHIND = ("mysql_replication_gtid_transactions_behind", "Transactions the replica received but has not "
               "applied, per GTID domain (MariaDB: Gtid_IO_Pos minus gtid_slave_pos; MySQL: Retrieved_Gtid_Set "
               "minus Executed_Gtid_Set, per source UUID).")
LABELS = ("channel", "source_host")
GTID_LABELS = (*LABELS, "domain")


def _first(row: dict, names: tuple, default=None):
    return next((row[n] for n in names if n in row), default)


class ReplicationCollector(Collector):
    """I/O and SQL threads running, seconds behind and last errors of each replication channel."""

    def __init__(self):
        super().__init__(name="replication", default_timeout=2.0,
                         help="replica I/O and SQL threads, seconds behind the source, last errors, GTID "
                              "transactions received but not applied, heartbeat-table lag when configured, per "
                              "channel (SHOW REPLICA STATUS on MySQL, SHOW ALL SLAVES STATUS on MariaDB)")
        self.families = (*(name for name, _ in FAMILIES.values()), GTID_BEHIND[0])

    def applies(self, server) -> str | None:
        return None

    def describe(self) -> list[Family]:
        return [*(Family(name, "gauge", help_, LABELS) for name, help_ in FAMILIES.values()),
                Family(GTID_BEHIND[0], "gauge", GTID_BEHIND[1], GTID_LABELS)]

    @staticmethod
    def sql(flavour: str, version: int) -> str:
        if flavour == "mariadb":
            return mark("SHOW ALL SLAVES STATUS; SELECT @@GLOBAL.gtid_slave_pos")
        return mark("SHOW REPLICA STATUS" if version >= 80022 else "SHOW SLAVE STATUS")

    def collect(self, conn, ctx, timeout: float = 2.0) -> list[Family]:
        families = {key: Family(name, "gauge", help_, LABELS) for key, (name, help_) in FAMILIES.items()}
        behind_family = Family(GTID_BEHIND[0], "gauge", GTID_BEHIND[1], GTID_LABELS)
        started = time.monotonic()
        results = conn.query(self.sql(ctx.server.flavour, ctx.server.version), timeout)
        columns, rows = results[0] if results else ([], [])
        applied = str(results[1][1][0][0] or "") if len(results) > 1 and results[1][1] else ""
        channels = [dict(zip(columns, values)) for values in rows]
        sources = {int(_first(row, SOURCE_ID, 0) or 0) for row in channels} - {0}
        options = getattr(ctx.options, "replication", None) or heartbeat.HeartbeatOptions()
        lags = {}
        if options.table and sources:  # the heartbeat query gets what the status query left of the timeout
            lags = heartbeat.lags(conn, options, sources, max(0.05, timeout - (time.monotonic() - started)))
        for row in channels:
            channel = str(row.get("Channel_Name", row.get("Connection_name", "")) or "")
            labels = (channel, str(_first(row, SOURCE_HOST, "") or ""))
            io, sql = _first(row, IO_RUNNING), _first(row, SQL_RUNNING)
            families["io"].add(labels, 1 if io == "Yes" else 0)
            families["sql"].add(labels, 1 if sql == "Yes" else 0)
            seconds = _first(row, BEHIND)
            if seconds is not None:
                families["behind"].add(labels, float(seconds))
            families["io_errno"].add(labels, int(row.get("Last_IO_Errno") or 0))
            families["sql_errno"].add(labels, int(row.get("Last_SQL_Errno") or 0))
            lag = lags.get(int(_first(row, SOURCE_ID, 0) or 0))
            if lag is not None:
                families["heartbeat"].add(labels, lag)
            if "Using_Gtid" in row:  # MariaDB
                families["using_gtid"].add(labels, 0 if str(row["Using_Gtid"] or "No") == "No" else 1)
                behind = gtid.mariadb_behind(row.get("Gtid_IO_Pos"), applied)
            else:
                families["using_gtid"].add(labels, 1 if str(row.get("Auto_Position") or 0) == "1" else 0)
                behind = gtid.mysql_behind(row.get("Retrieved_Gtid_Set"), row.get("Executed_Gtid_Set"))
            for domain, count in sorted(behind.items()):
                behind_family.add((*labels, domain), count)
        return [f for f in (*families.values(), behind_family) if f.samples]
