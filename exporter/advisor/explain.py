"""``--explain "SQL"``: EXPLAIN (FORMAT JSON) one statement and warn about its plan.

The SQL is parsed with pglast first and must be exactly one statement. ``--analyze`` runs it
(EXPLAIN ANALYZE, BUFFERS) inside a read-only transaction that is always rolled back."""

from __future__ import annotations

import psycopg

from exporter.advisor import AdviseError, Finding
from exporter.advisor.statements import Unparsable, parse

BIG_RELATION = 10_000
MISESTIMATE = 10.0
MIN_MISESTIMATE_ROWS = 100
HOT_SHARE = 0.5
MIN_HOT_COST = 1000.0


def validate(sql: str) -> None:
    try:
        statements = parse(sql)
    except Unparsable as exc:
        raise AdviseError(f"--explain: SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise AdviseError(f"--explain: give exactly one SQL statement (got {len(statements)})")


def run_explain(conn: psycopg.Connection, sql: str, analyze: bool) -> dict:
    """The JSON plan of ``sql`` on ``conn`` (a non-autocommit, read-only connection)."""
    options = "ANALYZE, BUFFERS, VERBOSE, FORMAT JSON" if analyze else "VERBOSE, FORMAT JSON"
    try:
        with conn.cursor() as cur:
            cur.execute(f"EXPLAIN ({options}) {sql.strip().rstrip(';')}")
            (plan,) = cur.fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise AdviseError(f"--explain: permission denied: {exc.diag.message_primary or exc}") from None
    except psycopg.Error as exc:
        raise AdviseError(f"--explain: {exc.diag.message_primary or str(exc).splitlines()[0]}") from None
    finally:
        conn.rollback()
    return plan[0] if isinstance(plan, list) else plan


def _nodes(node, depth=0):
    yield node, depth
    for child in node.get("Plans", ()):
        yield from _nodes(child, depth + 1)


def _label(node) -> str:
    label = node.get("Node Type", "?")
    if node.get("Relation Name"):
        rel = node["Relation Name"]
        if node.get("Schema"):
            rel = f"{node['Schema']}.{rel}"
        label += f" on {rel}"
    elif node.get("Index Name"):
        label += f" using {node['Index Name']}"
    return label


def _relation_rows(conn, schema: str | None, name: str) -> float:
    row = conn.execute(
        "SELECT greatest(c.reltuples, coalesce(s.n_live_tup, 0)) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid "
        "WHERE c.relname = %s AND (%s::text IS NULL OR n.nspname = %s) ORDER BY n.nspname LIMIT 1",
        (name, schema, schema)).fetchone()
    conn.rollback()
    return float(row[0]) if row else 0.0


def plan_findings(conn, datname: str, explained: dict, analyze: bool) -> list[Finding]:
    root = explained["Plan"]
    out = []
    total_cost = float(root.get("Total Cost", 0.0))
    summary = f"{_label(root)}, estimated total cost {total_cost:.2f}"
    if analyze:
        summary += f", execution time {explained.get('Execution Time', 0.0):.3f} ms"
    out.append(Finding("explain", "plan_summary", "info", datname, _label(root), summary,
                       "See the warnings below (none means the plan looks fine).",
                       details={"total_cost": total_cost}))
    hottest = None
    for position, (node, depth) in enumerate(_nodes(root)):
        label = f"{_label(node)} (node {position})"
        loops = node.get("Actual Loops", 1) or 0
        node_ms = float(node.get("Actual Total Time", 0.0)) * loops if analyze else 0.0
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name"):
            rows = max(float(node.get("Plan Rows", 0)), _relation_rows(conn, node.get("Schema"), node["Relation Name"]))
            if rows > BIG_RELATION:
                where = f" filtering on {node['Filter']}" if node.get("Filter") else ""
                out.append(Finding(
                    "explain", "seq_scan", "high" if node.get("Filter") else "medium", datname, label,
                    f"sequential scan of {int(rows)} rows{where}",
                    "Add an index on the filtered columns (CREATE INDEX CONCURRENTLY ...), or check why an existing "
                    "one is not used (a function or cast on the column, a type mismatch, low selectivity).",
                    time_ms=node_ms, details={"rows": int(rows), "filter": node.get("Filter", "")}))
        if analyze and loops:
            actual, planned = float(node.get("Actual Rows", 0)), float(node.get("Plan Rows", 0))
            high, low = max(actual, planned), max(min(actual, planned), 1.0)
            if high >= MIN_MISESTIMATE_ROWS and high / low >= MISESTIMATE:
                out.append(Finding(
                    "explain", "row_misestimate", "medium", datname, label,
                    f"planned {int(planned)} rows, got {int(actual)} ({high / low:.0f}x off)",
                    "ANALYZE the tables involved; for correlated columns CREATE STATISTICS ... (dependencies, "
                    "ndistinct); raise the column's statistics target if the distribution is skewed.",
                    time_ms=node_ms, details={"plan_rows": int(planned), "actual_rows": int(actual)}))
            if node.get("Sort Space Type") == "Disk" or "external" in str(node.get("Sort Method", "")):
                out.append(Finding(
                    "explain", "sort_spill", "medium", datname, label,
                    f"sort spilled to disk ({node.get('Sort Method')}, {node.get('Sort Space Used')} kB)",
                    "Raise work_mem for this query (SET LOCAL work_mem = ...), sort fewer rows, or provide the order "
                    "from an index.", time_ms=node_ms, details={"sort_space_kb": node.get("Sort Space Used")}))
            if int(node.get("Hash Batches", 1) or 1) > 1:
                out.append(Finding(
                    "explain", "hash_spill", "medium", datname, label,
                    f"hash split into {node['Hash Batches']} batches: it spilled to disk",
                    "Raise work_mem (or hash_mem_multiplier) for this query, or hash the smaller input.",
                    time_ms=node_ms, details={"hash_batches": node["Hash Batches"]}))
        child_cost = sum(float(c.get("Total Cost", 0.0)) for c in node.get("Plans", ()))
        self_cost = float(node.get("Total Cost", 0.0)) - child_cost
        if hottest is None or self_cost > hottest[0]:
            hottest = (self_cost, label, node_ms)
    if hottest and total_cost >= MIN_HOT_COST and hottest[0] >= HOT_SHARE * total_cost:
        out.append(Finding("explain", "cost_hot_spot", "low", datname, hottest[1],
                           f"{hottest[1]} carries {hottest[0] / total_cost:.0%} of the plan's estimated cost "
                           f"({hottest[0]:.2f} of {total_cost:.2f})",
                           "Start optimising here: fewer rows into this node (better filters, an index) or a cheaper "
                           "operation.", time_ms=hottest[2], details={"self_cost": round(hottest[0], 2)}))
    return out
