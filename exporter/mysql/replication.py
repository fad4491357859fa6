"""Replication state of a MySQL or MariaDB replica: one series per channel (MySQL) or connection
(MariaDB multi-source), from ``SHOW REPLICA STATUS`` (MySQL 8.0.22+), ``SHOW SLAVE STATUS`` (older
MySQL) or ``SHOW ALL SLAVES STATUS`` (MariaDB). A primary has no rows: no series."""

from __future__ import annotations

from exporter.collector import Collector
from exporter.metrics import Family
from exporter.postgres.sqlmark import mark

# the column in each spelling (new MySQL, old MySQL and MariaDB) -> the family
IO_RUNNING = ("Replica_IO_Running", "Slave_IO_Running")
SQL_RUNNING = ("Replica_SQL_Running", "Slave_SQL_Running")
BEHIND = ("Seconds_Behind_Source", "Seconds_Behind_Master")
SOURCE_HOST = ("Source_Host", "Master_Host")
FAMILIES = {
    "io": ("mysql_replication_io_thread_running", "1 when the replica's I/O thread (receiving from the source) "
           "runs; 0 when stopped, connecting or failed."),
    "sql": ("mysql_replication_sql_thread_running", "1 when the replica's SQL thread (applying the relay log) runs."),
    "behind": ("mysql_replication_lag_seconds", "Seconds_Behind_Source: how far the SQL thread is behind the source "
               "(no sample while the SQL thread does not run: unknown)."),
    "io_errno": ("mysql_replication_last_io_error_number", "The I/O thread's last error number (0: none)."),
    "sql_errno": ("mysql_replication_last_sql_error_number", "The SQL thread's last error number (0: none)."),
}
LABELS = ("channel", "source_host")


def _first(row: dict, names: tuple, default=None):
    return next((row[n] for n in names if n in row), default)


class ReplicationCollector(Collector):
    """I/O and SQL threads running, seconds behind and last errors of each replication channel."""

    def __init__(self):
        super().__init__(name="replication", default_timeout=2.0,
                         help="replica I/O and SQL threads, seconds behind the source and last errors, per "
                              "channel (SHOW REPLICA STATUS on MySQL, SHOW ALL SLAVES STATUS on MariaDB)")
        self.families = tuple(name for name, _ in FAMILIES.values())

    def applies(self, server) -> str | None:
        return None

    def describe(self) -> list[Family]:
        return [Family(name, "gauge", help_, LABELS) for name, help_ in FAMILIES.values()]

    @staticmethod
    def sql(flavour: str, version: int) -> str:
        if flavour == "mariadb":
            return mark("SHOW ALL SLAVES STATUS")
        return mark("SHOW REPLICA STATUS" if version >= 80022 else "SHOW SLAVE STATUS")

    def collect(self, conn, ctx, timeout: float = 2.0) -> list[Family]:
        families = {key: Family(name, "gauge", help_, LABELS) for key, (name, help_) in FAMILIES.items()}
        results = conn.query(self.sql(ctx.server.flavour, ctx.server.version), timeout)
        columns, rows = results[0] if results else ([], [])
        for values in rows:
            row = dict(zip(columns, values))
            channel = str(row.get("Channel_Name", row.get("Connection_name", "")) or "")
            labels = (channel, str(_first(row, SOURCE_HOST, "") or ""))
            io, sql = _first(row, IO_RUNNING), _first(row, SQL_RUNNING)
            families["io"].add(labels, 1 if io == "Yes" else 0)
            families["sql"].add(labels, 1 if sql == "Yes" else 0)
            behind = _first(row, BEHIND)
            if behind is not None:
                families["behind"].add(labels, float(behind))
            families["io_errno"].add(labels, int(row.get("Last_IO_Errno") or 0))
            families["sql_errno"].add(labels, int(row.get("Last_SQL_Errno") or 0))
        return [f for f in families.values() if f.samples]
