"""``SHOW GLOBAL STATUS`` as families: the server's counters and gauges, one table of data below.

``SHOW GLOBAL STATUS`` answers on every MySQL and MariaDB version whatever ``performance_schema``
says, in one round trip. A variable a server does not have is skipped; new ones are ignored.
InnoDB's are the innodb collector's (:file:`catalog.yaml`), which reads them per flavour.
"""

from __future__ import annotations

from exporter.collector import Collector
from exporter.metrics import Family
from exporter.postgres.sqlmark import mark

# Variable_name (lower case) -> (metric, type, scale, help); scale None: unscaled
STATUS = {
    "queries": ("mysql_global_status_queries_total", "counter", None,
                "Statements the server executed, including those in stored programs (Queries)."),
    "questions": ("mysql_global_status_questions_total", "counter", None,
                  "Statements clients sent to the server (Questions)."),
    "connections": ("mysql_global_status_connections_total", "counter", None,
                    "Connection attempts, successful or not (Connections)."),
    "aborted_clients": ("mysql_global_status_aborted_clients_total", "counter", None,
                        "Connections aborted because the client died without closing it properly."),
    "aborted_connects": ("mysql_global_status_aborted_connects_total", "counter", None,
                         "Failed attempts to connect (wrong password, no privilege, bad packet)."),
    "threads_connected": ("mysql_global_status_threads_connected", "gauge", None, "Client connections open now."),
    "threads_running": ("mysql_global_status_threads_running", "gauge", None, "Threads not sleeping now."),
    "threads_cached": ("mysql_global_status_threads_cached", "gauge", None, "Threads in the thread cache."),
    "threads_created": ("mysql_global_status_threads_created_total", "counter", None,
                        "Threads created to handle connections (the thread cache missed)."),
    "max_used_connections": ("mysql_global_status_max_used_connections", "gauge", None,
                             "The most connections open at once since the server started."),
    "slow_queries": ("mysql_global_status_slow_queries_total", "counter", None,
                     "Statements that took longer than long_query_time."),
    "bytes_received": ("mysql_global_status_received_bytes_total", "counter", None, "Bytes received from clients."),
    "bytes_sent": ("mysql_global_status_sent_bytes_total", "counter", None, "Bytes sent to clients."),
    "table_locks_waited": ("mysql_global_status_table_locks_waited_total", "counter", None,
                           "Table lock requests that had to wait."),
    "table_locks_immediate": ("mysql_global_status_table_locks_immediate_total", "counter", None,
                              "Table lock requests granted at once."),
    "created_tmp_disk_tables": ("mysql_global_status_created_tmp_disk_tables_total", "counter", None,
                                "Internal temporary tables created on disk while executing statements."),
    "created_tmp_tables": ("mysql_global_status_created_tmp_tables_total", "counter", None,
                           "Internal temporary tables created (in memory or on disk)."),
    "created_tmp_files": ("mysql_global_status_created_tmp_files_total", "counter", None, "Temporary files created."),
    "sort_merge_passes": ("mysql_global_status_sort_merge_passes_total", "counter", None,
                          "Merge passes the sort algorithm had to do (sort_buffer_size too small when it rises)."),
    "sort_rows": ("mysql_global_status_sort_rows_total", "counter", None, "Rows sorted."),
    "select_full_join": ("mysql_global_status_select_full_join_total", "counter", None,
                         "Joins that scanned a table because they use no index."),
    "select_scan": ("mysql_global_status_select_scan_total", "counter", None, "Joins that did a full scan of the first table."),
    "open_tables": ("mysql_global_status_open_tables", "gauge", None, "Tables open now."),
    "opened_tables": ("mysql_global_status_opened_tables_total", "counter", None,
                      "Tables opened (table_open_cache too small when it rises fast)."),
    "open_files": ("mysql_global_status_open_files", "gauge", None, "Files open now."),
    "uptime": ("mysql_global_status_uptime_seconds", "gauge", None, "Seconds since the server started."),
}
# Handler_read_<kind> -> mysql_global_status_handler_reads_total{kind}
HANDLER_READS = ("first", "key", "last", "next", "prev", "rnd", "rnd_next")
HANDLER_READS_FAMILY = ("mysql_global_status_handler_reads_total",
                        "Row reads by the storage engines' handler interface, by kind: key (index lookups), "
                        "next/prev (index scans), rnd_next (table scans), first, last, rnd (by position).")
HANDLER_WRITES = {"handler_write": "write", "handler_update": "update", "handler_delete": "delete"}
HANDLER_WRITES_FAMILY = ("mysql_global_status_handler_writes_total",
                         "Row writes by the storage engines' handler interface, by operation (write, update, delete).")
COMMANDS_FAMILY = ("mysql_global_status_commands_total",
                   "Statements executed, by command (Com_<command>: select, insert, update, delete, commit ...).")

SQL = mark("SHOW GLOBAL STATUS")


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # ON/OFF and text values are not counters


class GlobalStatusCollector(Collector):
    """The server's counters and gauges from ``SHOW GLOBAL STATUS``."""

    def __init__(self):
        super().__init__(name="global_status", default_timeout=2.0, optional=False,
                         help="server counters and gauges from SHOW GLOBAL STATUS: statements, connections, "
                              "threads, slow queries, bytes, table locks, temporary tables, sorts, handler reads")
        self.families = tuple(f.name for f in self.describe())

    def applies(self, server) -> str | None:
        return None

    def describe(self) -> list[Family]:
        out = [Family(name, kind, help_) for name, kind, _, help_ in STATUS.values()]
        out.append(Family(HANDLER_READS_FAMILY[0], "counter", HANDLER_READS_FAMILY[1], ("kind",)))
        out.append(Family(HANDLER_WRITES_FAMILY[0], "counter", HANDLER_WRITES_FAMILY[1], ("operation",)))
        out.append(Family(COMMANDS_FAMILY[0], "counter", COMMANDS_FAMILY[1], ("command",)))
        return out

    def collect(self, conn, ctx=None, timeout: float = 2.0) -> list[Family]:
        families = {f.name: f for f in self.describe()}
        (_, rows), = conn.query(SQL, timeout)
        reads, writes, commands = (families[HANDLER_READS_FAMILY[0]], families[HANDLER_WRITES_FAMILY[0]],
                                   families[COMMANDS_FAMILY[0]])
        for name, raw in rows:
            key = str(name).lower()
            value = _number(raw)
            if value is None:
                continue
            entry = STATUS.get(key)
            if entry is not None:
                metric, _, scale, _ = entry
                families[metric].add((), value if scale is None else value * scale)
            elif key.startswith("handler_read_") and key[len("handler_read_"):] in HANDLER_READS:
                reads.add((key[len("handler_read_"):],), value)
            elif key in HANDLER_WRITES:
                writes.add((HANDLER_WRITES[key],), value)
            elif key.startswith("com_") and not key.startswith("com_stmt_reprepare"):
                commands.add((key[4:],), value)
        return [f for f in families.values() if f.samples]
