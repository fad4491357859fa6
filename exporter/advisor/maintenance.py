"""Maintenance findings: tables that need VACUUM or ANALYZE, and transaction-ID wraparound."""

from __future__ import annotations

from exporter.advisor import Finding, qualified

DEAD_SHARE = 0.20
MIN_DEAD = 1000
MIN_MODIFIED = 1000
ANALYZE_SHARE = 0.20
FREEZE_WARN = 0.75        # of autovacuum_freeze_max_age
WRAPAROUND_LIMIT = 2_000_000_000  # PostgreSQL stops assigning XIDs a little below 2^31

TABLES_SQL = """
SELECT s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       greatest(s.last_vacuum, s.last_autovacuum), greatest(s.last_analyze, s.last_autoanalyze),
       pg_table_size(s.relid), age(c.relfrozenxid), current_setting('autovacuum_freeze_max_age')::bigint
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
ORDER BY s.schemaname, s.relname
"""


def _when(ts) -> str:
    return "never" if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def maintenance_findings(conn, datname: str) -> list[Finding]:
    out = []
    for schema, table, live, dead, modified, vacuumed, analyzed, size, xid_age, freeze_max in \
            conn.execute(TABLES_SQL).fetchall():
        name = qualified(schema, table)
        live, dead, modified = live or 0, dead or 0, modified or 0
        share = dead / (live + dead) if live + dead else 0.0
        if dead > MIN_DEAD and share > DEAD_SHARE:
            out.append(Finding(
                "maintenance", "needs_vacuum", "high" if share > 0.5 else "medium", datname, name,
                f"{name}: {dead} dead tuples ({share:.0%} of rows), last vacuum {_when(vacuumed)}",
                f"VACUUM (ANALYZE) {name}; and, if autovacuum keeps falling behind, ALTER TABLE {name} "
                "SET (autovacuum_vacuum_scale_factor = 0.05); (look for long transactions holding back cleanup)",
                size_bytes=size, details={"n_dead_tup": dead, "n_live_tup": live, "last_vacuum": _when(vacuumed)}))
        never = analyzed is None and (live >= MIN_MODIFIED or modified >= MIN_MODIFIED)
        stale = analyzed is not None and modified >= MIN_MODIFIED and modified > ANALYZE_SHARE * max(live, 1)
        if never or stale:
            why = ("has never been analyzed" if never else
                   f"had {modified} rows modified since its last analyze ({_when(analyzed)})")
            out.append(Finding(
                "maintenance", "needs_analyze", "medium", datname, name,
                f"{name} {why}: the planner estimates from stale statistics ({live} live rows)",
                f"ANALYZE {name};", size_bytes=size,
                details={"n_mod_since_analyze": modified, "n_live_tup": live, "last_analyze": _when(analyzed)}))
        if xid_age is not None and freeze_max and xid_age >= FREEZE_WARN * freeze_max:
            over = xid_age >= freeze_max
            out.append(Finding(
                "maintenance", "wraparound", "high" if over else "medium", datname, name,
                f"{name}: age(relfrozenxid) {xid_age} is {xid_age / freeze_max:.0%} of autovacuum_freeze_max_age "
                f"({freeze_max})" + ("; an anti-wraparound autovacuum should already be running" if over else ""),
                f"VACUUM (FREEZE, VERBOSE) {name}; and check nothing blocks autovacuum (long transactions, "
                "abandoned replication slots or prepared transactions)",
                size_bytes=size, details={"xid_age": xid_age, "autovacuum_freeze_max_age": freeze_max}))
    return out


def cluster_wraparound(conn) -> list[Finding]:
    out = []
    for datname, xid_age in conn.execute(
            "SELECT datname, age(datfrozenxid) FROM pg_database ORDER BY datname").fetchall():
        if xid_age >= WRAPAROUND_LIMIT // 2:
            out.append(Finding(
                "maintenance", "wraparound", "high", datname, datname,
                f"database {datname}: age(datfrozenxid) {xid_age} is {xid_age / WRAPAROUND_LIMIT:.0%} of the way "
                "to transaction-ID wraparound, when PostgreSQL stops accepting writes",
                f"Connect to {datname} and run VACUUM (FREEZE) on its oldest tables "
                "(ORDER BY age(relfrozenxid) DESC); check for long transactions and stale replication slots",
                details={"xid_age": xid_age}))
    return out
