"""Replication lag from a heartbeat table (``replication:`` of a ``kind: mysql`` target).

The table is pt-heartbeat's (Percona Toolkit): one row per writing server, ``server_id`` and ``ts``,
the time the server wrote it, ``YYYY-MM-DDTHH:MM:SS.ffffff`` (a DATETIME/TIMESTAMP column works
too). pt-heartbeat ``--update`` rewrites the row on the source every second; the row replicates.
On the replica, the lag of a channel is the replica's clock minus the newest ``ts`` of the server
the channel replicates from (its ``Master_Server_Id``): it grows while the replica applies nothing,
even when ``Seconds_Behind_Source`` says nothing (a stopped SQL thread) or says 0 (a stalled
source). The two clocks are the source's and the replica's: a skew between them is in the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from exporter.postgres.sqlmark import mark

IDENTIFIER = re.compile(r"[A-Za-z0-9_$]{1,64}")
# the server's errors for a table or a column that is not there
NO_TABLE, NO_COLUMN = 1146, 1054


@dataclass(frozen=True)
class HeartbeatOptions:
    """``replication:`` of a MySQL target; ``table`` "" = no heartbeat lag."""

    table: str = ""                 # heartbeat_table: "database.table"
    column: str = "ts"              # heartbeat_column: when the row was written
    server_id_column: str = "server_id"  # server_id_column: the server that wrote it
    utc: bool = False               # heartbeat_utc: ts is UTC (pt-heartbeat --utc), else the replica's time zone


class HeartbeatError(RuntimeError):
    """The heartbeat table cannot be read as configured: fails the replication collector."""


def parse(reader) -> HeartbeatOptions:
    """``replication:`` read by a :class:`exporter.configfile._Reader`; names checked as identifiers."""
    reader.allow("heartbeat_table", "heartbeat_column", "server_id_column", "heartbeat_utc")
    d = HeartbeatOptions
    table = reader.get("heartbeat_table", str, d.table)
    if table and (table.count(".") != 1 or not all(IDENTIFIER.fullmatch(p) for p in table.split("."))):
        reader.fail("heartbeat_table", f"must be database.table (letters, digits, _ and $), got {table!r}")
    names = {}
    for key, default in (("heartbeat_column", d.column), ("server_id_column", d.server_id_column)):
        names[key] = reader.get(key, str, default)
        if not IDENTIFIER.fullmatch(names[key]):
            reader.fail(key, f"must be a column name (letters, digits, _ and $), got {names[key]!r}")
    return HeartbeatOptions(table=table, column=names["heartbeat_column"], server_id_column=names["server_id_column"],
                            utc=reader.get("heartbeat_utc", bool, d.utc))


def sql(options: HeartbeatOptions, server_ids) -> str:
    """The newest heartbeat of each of ``server_ids`` (integers: the channels' sources) and the
    replica's now, in one statement."""
    table = ".".join(f"`{p}`" for p in options.table.split("."))
    now = "UTC_TIMESTAMP(6)" if options.utc else "NOW(6)"
    ids = ", ".join(str(int(i)) for i in sorted(server_ids))
    sid = f"`{options.server_id_column}`"
    return mark(f"SELECT {sid}, MAX(`{options.column}`), {now} FROM {table} WHERE {sid} IN ({ids}) GROUP BY {sid}")


def _when(value) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).strip().replace("T", " "))


def lags(conn, options: HeartbeatOptions, server_ids, timeout: float) -> dict[int, float]:
    """``{server_id: seconds}``: the replica's now minus the newest heartbeat of each of ``server_ids``."""
    import pymysql

    try:
        results = conn.query(sql(options, server_ids), timeout)
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        if code == NO_TABLE:
            raise HeartbeatError(f"replication.heartbeat_table: no table {options.table} on this server "
                                 f"({exc.args[-1]})") from None
        if code == NO_COLUMN:
            key = "server_id_column" if f"'{options.server_id_column}'" in str(exc.args[-1]) else "heartbeat_column"
            raise HeartbeatError(f"replication.{key}: no such column in {options.table} ({exc.args[-1]})") from None
        raise
    (_, rows), = results
    found = {}
    for server_id, ts, now in rows:
        if ts is None:
            continue
        try:
            found[int(server_id)] = (_when(now) - _when(ts)).total_seconds()
        except ValueError:
            raise HeartbeatError(f"replication.heartbeat_column: {options.table}.{options.column} holds "
                                 f"{str(ts)[:40]!r}, not a time (YYYY-MM-DDTHH:MM:SS.ffffff)") from None
    return found
