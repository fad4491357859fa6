"""``dbperf advise`` for a ``kind: mysql`` target (MySQL 8, MariaDB 10.6+): the statement
anti-patterns of the top digests (:mod:`exporter.advisor.mysql_statements`), unused indexes
(performance_schema's index I/O since the server started), duplicate and redundant indexes and
tables without a primary key (information_schema), and the use of max_connections (now and the
peak since the start). The findings are :class:`~exporter.advisor.Finding` as for PostgreSQL, with
the same check names where the concept is the same; ``database`` is the schema.

Everything is read through one read-only :class:`~exporter.mysql.connection.MySQLConnection`
session (a statement timeout per query, KILL QUERY at the deadline)."""

from __future__ import annotations

from exporter.advisor import Finding
from exporter.advisor.statements import StatementsUnavailable, TooLong, Unparsable

SYSTEM = "('mysql', 'information_schema', 'performance_schema', 'sys')"
USAGE_WARN, USAGE_HIGH = 0.6, 0.8
BIG_INDEX = 100 * 1024 * 1024

DIGESTS_SQL = f"""
SELECT COALESCE(schema_name, ''), digest, digest_text, count_star, sum_timer_wait / 1e9, sum_rows_sent,
       sum_rows_examined
FROM performance_schema.events_statements_summary_by_digest
WHERE digest IS NOT NULL AND digest_text IS NOT NULL
  AND (schema_name IS NULL OR schema_name NOT IN {SYSTEM})
ORDER BY sum_timer_wait DESC LIMIT {{limit}}
"""
# dbperf's own statements (its mark is a comment, which digests drop) and the server's
# administration read the system schemas or are SHOW/SET: counted, not judged
OWN_WORDS = ("performance_schema", "information_schema", "`mysql` .", "@@")
OWN_STARTS = ("SHOW ", "SET ", "KILL ", "SELECT VERSION", "SELECT CONNECTION_ID", "USE ")

UNUSED_SQL = f"""
SELECT u.object_schema, u.object_name, u.index_name, MAX(s.non_unique)
FROM performance_schema.table_io_waits_summary_by_index_usage u
JOIN information_schema.statistics s
  ON s.table_schema = u.object_schema AND s.table_name = u.object_name AND s.index_name = u.index_name
WHERE u.index_name IS NOT NULL AND u.index_name <> 'PRIMARY' AND u.count_star = 0
  AND u.object_schema NOT IN {SYSTEM}
GROUP BY u.object_schema, u.object_name, u.index_name
ORDER BY 1, 2, 3
"""
INDEX_COLUMNS_SQL = f"""
SELECT table_schema, table_name, index_name, non_unique, index_type, seq_in_index, column_name,
       COALESCE(sub_part, 0)
FROM information_schema.statistics
WHERE table_schema NOT IN {SYSTEM}
ORDER BY table_schema, table_name, index_name, seq_in_index
"""
INDEX_SIZES_SQL = f"""
SELECT database_name, table_name, index_name, stat_value * @@innodb_page_size
FROM mysql.innodb_index_stats WHERE stat_name = 'size' AND database_name NOT IN {SYSTEM}
"""
# information_schema.statistics, not table_constraints: MariaDB shows a user with SELECT on the
# tables no row of table_constraints
NO_PK_SQL = f"""
SELECT t.table_schema, t.table_name, COALESCE(t.engine, ''), COALESCE(t.table_rows, 0),
       COALESCE(t.data_length, 0) + COALESCE(t.index_length, 0),
       (SELECT COUNT(DISTINCT s.index_name) FROM information_schema.statistics s
        WHERE s.table_schema = t.table_schema AND s.table_name = t.table_name AND s.non_unique = 0)
FROM information_schema.tables t
WHERE t.table_type = 'BASE TABLE' AND t.table_schema NOT IN {SYSTEM}
  AND NOT EXISTS (SELECT 1 FROM information_schema.statistics p
                  WHERE p.table_schema = t.table_schema AND p.table_name = t.table_name AND p.index_name = 'PRIMARY')
ORDER BY 1, 2
"""
CONNECTIONS_SQL = """
SELECT @@GLOBAL.max_connections,
       (SELECT variable_value FROM information_schema.global_status WHERE variable_name = 'THREADS_CONNECTED'),
       (SELECT variable_value FROM information_schema.global_status WHERE variable_name = 'MAX_USED_CONNECTIONS'),
       (SELECT variable_value FROM information_schema.global_status WHERE variable_name = 'UPTIME')
"""
# MySQL 8 keeps status in performance_schema (information_schema.global_status is MariaDB's)
CONNECTIONS_SQL_MYSQL = CONNECTIONS_SQL.replace("information_schema.global_status", "performance_schema.global_status")


def ident(name: str) -> str:
    return "`" + str(name).replace("`", "``") + "`"


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def _rows(conn, sql: str, timeout: float) -> list:
    from exporter.postgres.sqlmark import mark

    results = conn.query(mark(sql), timeout)
    return list(results[0][1]) if results else []


def is_own(text: str) -> bool:
    upper = text.lstrip().upper()
    return any(w in text for w in OWN_WORDS) or upper.startswith(OWN_STARTS)


# -- statements ---------------------------------------------------------------------------------
def top_digests(conn, limit: int, timeout: float) -> tuple[list[dict], int]:
    """The top digests by total time and how many of dbperf's own (or the server's administration)
    were left out; :class:`StatementsUnavailable` when performance_schema is off."""
    (on,), = _rows(conn, "SELECT @@GLOBAL.performance_schema", timeout)
    if not int(on):
        raise StatementsUnavailable("performance_schema is off: set performance_schema = ON in the server's "
                                    "configuration file and restart it")
    statements, own = [], 0
    for schema, digest, text, calls, total_ms, sent, examined in _rows(conn, DIGESTS_SQL.format(limit=int(limit)),
                                                                       timeout):
        if is_own(text):
            own += 1
            continue
        statements.append({"schema": schema, "digest": digest, "query": text, "calls": int(calls),
                           "total_ms": float(total_ms), "rows_sent": int(sent), "rows_examined": int(examined)})
    return statements, own


def statement_findings(statements: list[dict]) -> tuple[list[Finding], dict]:
    from exporter.advisor.mysql_statements import check_sql

    findings, skipped = [], {"unparsable": 0, "too_long": 0}
    for st in statements:
        try:
            issues = check_sql(st["query"])
        except TooLong:
            skipped["too_long"] += 1
            continue
        except Unparsable:
            skipped["unparsable"] += 1
            continue
        text = " ".join(st["query"].split())
        for issue in issues:
            findings.append(Finding(
                kind="statement", check=issue.check, severity=issue.severity, database=st["schema"],
                subject=f"digest {st['digest'][:16]}", message=issue.message, recommendation=issue.recommendation,
                time_ms=st["total_ms"],
                details={"query": text[:300], "calls": st["calls"], "digest": st["digest"],
                         "mean_ms": round(st["total_ms"] / st["calls"], 3) if st["calls"] else 0.0,
                         "rows_examined_per_sent": round(st["rows_examined"] / st["rows_sent"], 1)
                         if st["rows_sent"] else None}))
    return findings, skipped


# -- indexes and tables -----------------------------------------------------------------------------
def _index_sizes(conn, timeout: float) -> dict:
    try:
        return {(s, t, i): int(size) for s, t, i, size in _rows(conn, INDEX_SIZES_SQL, timeout)}
    except Exception:  # no SELECT on mysql.innodb_index_stats, or no persistent statistics: sizes unknown
        return {}


def unused_indexes(conn, timeout: float, uptime: float, sizes: dict) -> list[Finding]:
    days = uptime / 86400
    out = []
    for schema, table, index, non_unique in _rows(conn, UNUSED_SQL, timeout):
        if not int(non_unique):
            continue  # a unique index enforces a constraint, read or not
        size = sizes.get((schema, table, index), 0)
        severity = "info" if days < 7 else "medium" if size >= BIG_INDEX else "low"
        out.append(Finding(
            "index", "unused_index", severity, schema, f"{qualified(schema, table)}.{ident(index)}",
            f"index {ident(index)} on {qualified(schema, table)} has not been read since the server started "
            f"{days:.1f} days ago (performance_schema index I/O); it still slows every write",
            f"Check replicas and rare jobs use it neither (MySQL 8: ALTER TABLE {qualified(schema, table)} ALTER "
            f"INDEX {ident(index)} INVISIBLE first; MariaDB 10.6+: IGNORED), then: ALTER TABLE "
            f"{qualified(schema, table)} DROP INDEX {ident(index)};",
            size_bytes=size, details={"uptime_days": round(days, 2)}))
    return out


def _indexes(conn, timeout: float) -> dict:
    """``{(schema, table): {index: {"unique": bool, "type": str, "keys": [(column, sub_part)]}}}``."""
    tables: dict = {}
    for schema, table, index, non_unique, kind, _seq, column, sub_part in _rows(conn, INDEX_COLUMNS_SQL, timeout):
        ix = tables.setdefault((schema, table), {}).setdefault(
            index, {"unique": not int(non_unique), "type": kind, "keys": []})
        ix["keys"].append((column, int(sub_part)))
    return tables


def _keys_text(ix: dict) -> str:
    return ", ".join(f"{c}({n})" if n else c for c, n in ix["keys"])


def duplicate_indexes(tables: dict, sizes: dict) -> list[Finding]:
    out = []
    for (schema, table), indexes in sorted(tables.items()):
        names = sorted(indexes, key=lambda n: (n != "PRIMARY", not indexes[n]["unique"], n))  # keep the first
        seen: dict = {}
        for name in names:
            ix = indexes[name]
            key = (ix["type"], tuple(ix["keys"]))
            where = qualified(schema, table)
            if key in seen:
                keep = seen[key]
                rec = (f"ALTER TABLE {where} DROP INDEX {ident(name)};" if not ix["unique"] else
                       f"Both enforce uniqueness: drop {ident(name)} and keep {ident(keep)}.")
                out.append(Finding("index", "duplicate_index", "medium", schema, f"{where}.{ident(name)}",
                                   f"index {ident(name)} on {where} duplicates {ident(keep)} ({_keys_text(ix)}); "
                                   "write cost and space for nothing", rec,
                                   size_bytes=sizes.get((schema, table, name), 0), details={"duplicate_of": keep}))
                continue
            seen[key] = name
        for name in names:
            ix = indexes[name]
            if ix["unique"] or ix["type"] != "BTREE" or (ix["type"], tuple(ix["keys"])) not in seen \
                    or seen[(ix["type"], tuple(ix["keys"]))] != name:
                continue
            n = len(ix["keys"])
            for other_name in names:
                other = indexes[other_name]
                if other_name != name and other["type"] == "BTREE" and len(other["keys"]) > n \
                        and other["keys"][:n] == ix["keys"]:
                    where = qualified(schema, table)
                    out.append(Finding("index", "redundant_index", "low", schema, f"{where}.{ident(name)}",
                                       f"index {ident(name)} ({_keys_text(ix)}) on {where} is a leading prefix of "
                                       f"{ident(other_name)} ({_keys_text(other)})",
                                       f"The longer index serves the same lookups: ALTER TABLE {where} DROP INDEX "
                                       f"{ident(name)};", size_bytes=sizes.get((schema, table, name), 0),
                                       details={"covered_by": other_name}))
                    break
    return out


def tables_without_primary_key(conn, timeout: float) -> list[Finding]:
    out = []
    for schema, table, engine, rows, size, uniques in _rows(conn, NO_PK_SQL, timeout):
        where = qualified(schema, table)
        severity = "low" if int(uniques) else "medium"
        out.append(Finding(
            "maintenance", "no_primary_key", severity, schema, where,
            f"table {where} ({engine or 'no engine'}, about {int(rows)} rows) has no primary key"
            + (" (it has a unique key InnoDB may cluster on)" if int(uniques) else ""),
            f"Add one (ALTER TABLE {where} ADD COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, or "
            "a natural key): without it InnoDB clusters rows on a hidden key, row-based replication scans the "
            "table for every changed row (replica lag), and Group Replication / Galera refuse or misbehave.",
            size_bytes=int(size), details={"engine": engine, "rows": int(rows)}))
    return out


# -- connections --------------------------------------------------------------------------------------
def connection_findings(conn, timeout: float, flavour: str) -> tuple[list[Finding], float]:
    """The use of max_connections now and at its peak since the start; and the server's uptime."""
    sql = CONNECTIONS_SQL if flavour == "mariadb" else CONNECTIONS_SQL_MYSQL
    (max_conn, connected, peak, uptime), = _rows(conn, sql, timeout)
    max_conn, connected, peak, uptime = int(max_conn), int(connected), int(peak), float(uptime)
    usage, peak_usage = connected / max(1, max_conn), peak / max(1, max_conn)
    worst = max(usage, peak_usage)
    severity = "high" if worst >= USAGE_HIGH else "medium" if worst >= USAGE_WARN else "info"
    finding = Finding(
        "connection", "connection_usage", severity, "", "server",
        f"{connected} of max_connections {max_conn} in use now ({usage:.0%}, dbperf's session included); the peak "
        f"since the server started {uptime / 86400:.1f} days ago was {peak} ({peak_usage:.0%}, Max_used_connections)",
        "Shrink the application pools or put a pooler (ProxySQL, MaxScale) in front before raising "
        "max_connections (each connection costs memory: thread stack and per-session buffers)"
        if severity != "info" else "Nothing to do.",
        details={"connections": connected, "max_connections": max_conn, "max_used_connections": peak})
    return [finding], uptime


# -- the command ------------------------------------------------------------------------------------
def advise(target, top: int, timeout: float) -> tuple[dict, list[Finding]]:
    """``(meta, findings)`` of ``dbperf advise`` for a kind: mysql target; UnavailableError (exit 1)
    when the server cannot be reached or a query fails, AdviseError (exit 2) when access is denied."""
    import pymysql

    from exporter.advisor import AdviseError, dedupe
    from exporter.errors import UnavailableError
    from exporter.mysql.connection import MySQLConnection, flavour_of
    from exporter.postgres.connection import ConnectError, DeadlineExceeded

    conn = MySQLConnection(target.dsn, connect_timeout=target.connect_timeout, statement_timeout=timeout)
    findings: list[Finding] = []
    try:
        try:
            (version,), = _rows(conn, "SELECT VERSION()", timeout)
            flavour = flavour_of(version)
            found, uptime = connection_findings(conn, timeout, flavour)
            findings += found
            try:
                statements, own = top_digests(conn, top, timeout)
            except StatementsUnavailable as exc:
                stmt_meta = {"checked": False, "reason": f"statement checks skipped: {exc}"}
            else:
                found, not_checked = statement_findings(statements)
                findings += found
                stmt_meta = {"checked": True, "examined": len(statements), "unparsable": not_checked["unparsable"],
                             "too_long": not_checked["too_long"], "dbperf_own_skipped": own}
            sizes = _index_sizes(conn, timeout)
            if stmt_meta["checked"]:  # the index I/O is performance_schema's too
                findings += unused_indexes(conn, timeout, uptime, sizes)
            findings += duplicate_indexes(_indexes(conn, timeout), sizes)
            findings += tables_without_primary_key(conn, timeout)
        except (ConnectError, DeadlineExceeded) as exc:
            raise UnavailableError(conn.scrub(str(exc))) from None
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            message = conn.scrub(str(exc.args[-1] if exc.args else exc))
            if code in (1044, 1045, 1142, 1143, 1227):  # access denied
                raise AdviseError(f"permission denied on {conn.description}: {message}") from None
            raise UnavailableError(f"query failed on {conn.description}: {message}") from None
    finally:
        conn.close()
    server = f"{'MariaDB' if flavour == 'mariadb' else 'MySQL'} {version}"
    meta = {"target": target.name, "server": server, "statements": stmt_meta,
            "note": "unused indexes count reads since the server started; connection use is now and the peak"}
    return meta, dedupe(findings)
