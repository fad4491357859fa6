"""Index findings for one database: missing-index candidates (tables read by big sequential
scans, with the columns their top statements filter on), unused, duplicate, redundant and invalid
indexes, each with the statement that fixes it."""

from __future__ import annotations

from exporter.advisor import Finding, qualified, quote_ident
from exporter.advisor.statements import predicate_columns

MIN_ROWS = 10_000        # tables smaller than this are fine to scan
MIN_SEQ_SCANS = 3
MAX_INDEX_COLUMNS = 3
BIG_INDEX = 100 * 1024 * 1024

SEQ_SQL = """
SELECT s.relid, s.schemaname, s.relname, s.seq_scan, s.seq_tup_read, coalesce(s.idx_scan, 0),
       s.n_live_tup, pg_table_size(s.relid),
       array(SELECT attname::text FROM pg_attribute WHERE attrelid = s.relid AND attnum > 0
             AND NOT attisdropped ORDER BY attnum)
FROM pg_stat_user_tables s
WHERE s.n_live_tup >= %(rows)s AND s.seq_scan >= %(scans)s AND s.seq_scan > coalesce(s.idx_scan, 0)
  AND s.seq_tup_read / s.seq_scan >= %(rows)s
"""

INDEX_SQL = """
SELECT x.indexrelid, n.nspname, t.relname, c.relname, am.amname, x.indisunique, x.indisprimary,
       x.indisvalid, EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid),
       coalesce(s.idx_scan, 0), pg_relation_size(x.indexrelid), x.indnkeyatts,
       array(SELECT pg_get_indexdef(x.indexrelid, k, true) FROM generate_series(1, x.indnatts) k),
       x.indclass::text, x.indoption::text, x.indcollation::text,
       pg_get_expr(x.indpred, x.indrelid, true), pg_get_indexdef(x.indexrelid)
FROM pg_index x
JOIN pg_class c ON c.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = c.relam
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = x.indexrelid
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
ORDER BY n.nspname, t.relname, c.relname
"""


def _indexes(conn) -> list[dict]:
    keys = ("oid", "schema", "table", "name", "am", "unique", "primary", "valid", "constraint", "scans",
            "size", "nkey", "columns", "opclass", "options", "collation", "predicate", "definition")
    out = []
    for row in conn.execute(INDEX_SQL).fetchall():
        ix = dict(zip(keys, row))
        ix["keys"] = list(ix["columns"][:ix["nkey"]])
        ix["include"] = list(ix["columns"][ix["nkey"]:])
        ix["opclass"] = ix["opclass"].split()
        ix["options"] = ix["options"].split()
        ix["collation"] = ix["collation"].split()
        out.append(ix)
    return out


def _signature(ix: dict) -> tuple:
    return (ix["schema"], ix["table"], ix["am"], tuple(ix["keys"]), tuple(ix["include"]), tuple(ix["opclass"]),
            tuple(ix["options"]), tuple(ix["collation"]), ix["predicate"])


def index_findings(conn, datname: str, statements: list[dict]) -> list[Finding]:
    indexes = _indexes(conn)
    findings = _missing(conn, datname, statements, indexes)
    findings += _unused(datname, indexes) + _duplicates(datname, indexes) + _invalid(datname, indexes)
    return findings


# -- missing indexes ---------------------------------------------------------------------------------
def _filtered_columns(schema: str, table: str, columns: list, statements: list[dict], datname: str):
    """Columns of ``schema.table`` compared with constants in this database's top statements,
    weighted by the statements' total time: (equality columns, range columns, time spent)."""
    eq, rng, spent = {}, {}, 0.0
    for st in statements:
        if st["datname"] != datname:
            continue
        touched = False
        for (rel_schema, rel_name), cols in predicate_columns(st["query"]).items():
            if rel_name != table or rel_schema not in (None, schema):
                continue
            for kind, bucket in (("eq", eq), ("range", rng)):
                for col in cols[kind]:
                    if col in columns:
                        bucket[col] = bucket.get(col, 0.0) + st["total_ms"]
                        touched = True
        if touched:
            spent += st["total_ms"]
    order = lambda d: [c for c, _ in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))]
    eq_cols = order(eq)
    return eq_cols, [c for c in order(rng) if c not in eq_cols], spent


def _missing(conn, datname, statements, indexes) -> list[Finding]:
    rows = conn.execute(SEQ_SQL, {"rows": MIN_ROWS, "scans": MIN_SEQ_SCANS}).fetchall()
    findings = []
    for relid, schema, table, seq_scan, seq_read, idx_scan, live, size, columns in rows:
        name = qualified(schema, table)
        eq, rng, spent = _filtered_columns(schema, table, columns, statements, datname)
        # a column that already leads a valid index is served by it (e.g. primary-key lookups)
        leading = {ix["keys"][0] for ix in indexes if ix["schema"] == schema and ix["table"] == table
                   and ix["valid"] and ix["keys"] and not ix["predicate"]}
        eq, rng = [c for c in eq if c not in leading], [c for c in rng if c not in leading]
        cols = (eq + rng[:1])[:MAX_INDEX_COLUMNS]
        details = {"seq_scan": seq_scan, "seq_tup_read": seq_read, "idx_scan": idx_scan, "n_live_tup": live}
        message = (f"{name} is read by sequential scans ({seq_scan} scans, {seq_read} rows read, "
                   f"{idx_scan} index scans, {live} live rows)")
        if cols:
            existing = [ix for ix in indexes if ix["schema"] == schema and ix["table"] == table and ix["valid"]
                        and ix["keys"][:len(cols)] == cols]
            if existing:
                continue  # an index already covers these columns: the scans are the planner's choice
            index_name = f"{table}_{'_'.join(cols)}_idx"[:63]
            rec = (f"CREATE INDEX CONCURRENTLY {quote_ident(index_name)} ON {name} "
                   f"({', '.join(quote_ident(c) for c in cols)});")
            message += f"; its top statements filter on {', '.join(cols)}"
            details["columns"] = cols
        else:
            rec = ("No parsed statement in pg_stat_statements filters this table on a column: find the "
                   f"columns its queries filter on and CREATE INDEX CONCURRENTLY ... ON {name} (...);")
        findings.append(Finding("index", "missing_index", "high" if cols else "medium", datname, name, message,
                                rec, time_ms=spent, size_bytes=size, details=details))
    return findings


# -- unused, duplicate, redundant, invalid ---------------------------------------------------------
def _unused(datname, indexes) -> list[Finding]:
    out = []
    for ix in indexes:
        if ix["scans"] or ix["unique"] or ix["primary"] or ix["constraint"] or not ix["valid"]:
            continue
        name = qualified(ix["schema"], ix["name"])
        out.append(Finding(
            "index", "unused_index", "medium" if ix["size"] >= BIG_INDEX else "low", datname, name,
            f"index {name} on {qualified(ix['schema'], ix['table'])} has never been scanned since statistics were "
            f"reset ({ix['size']} bytes); it still slows every write",
            f"Check replicas and rare jobs use it neither, then: DROP INDEX CONCURRENTLY {name};",
            size_bytes=ix["size"], details={"definition": ix["definition"]}))
    return out


def _keep_rank(ix: dict) -> tuple:
    """Which of equal indexes to keep: constraint-backing first, then the most scanned, then name."""
    return (not (ix["primary"] or ix["unique"] or ix["constraint"]), -ix["scans"], ix["name"])


def _droppable(ix: dict) -> bool:
    return not (ix["primary"] or ix["unique"] or ix["constraint"])


def _duplicates(datname, indexes) -> list[Finding]:
    out = []
    groups: dict = {}
    for ix in indexes:
        if ix["valid"]:
            groups.setdefault(_signature(ix), []).append(ix)
    duplicated = set()
    for group in groups.values():
        if len(group) < 2:
            continue
        group.sort(key=_keep_rank)
        keep = group[0]
        for ix in group[1:]:
            duplicated.add(ix["oid"])
            name = qualified(ix["schema"], ix["name"])
            rec = (f"DROP INDEX CONCURRENTLY {name};" if _droppable(ix) else
                   f"Both enforce constraints: drop the constraint using {name} and keep {keep['name']}.")
            out.append(Finding("index", "duplicate_index", "medium", datname, name,
                               f"index {name} duplicates {qualified(keep['schema'], keep['name'])} "
                               f"({', '.join(ix['keys'])}); {ix['size']} bytes and write cost for nothing",
                               rec, size_bytes=ix["size"],
                               details={"definition": ix["definition"], "duplicate_of": keep["definition"]}))
    for ix in indexes:
        if ix["oid"] in duplicated or not ix["valid"] or ix["am"] != "btree" or not _droppable(ix) \
                or ix["predicate"] or ix["include"]:
            continue
        n = len(ix["keys"])
        for other in indexes:
            if other is ix or other["oid"] in duplicated or not other["valid"] or other["am"] != "btree" \
                    or other["schema"] != ix["schema"] or other["table"] != ix["table"] or other["predicate"] \
                    or len(other["keys"]) <= n:
                continue
            if other["keys"][:n] == ix["keys"] and other["opclass"][:n] == ix["opclass"] \
                    and other["options"][:n] == ix["options"] and other["collation"][:n] == ix["collation"]:
                name = qualified(ix["schema"], ix["name"])
                out.append(Finding("index", "redundant_index", "low", datname, name,
                                   f"index {name} ({', '.join(ix['keys'])}) is a leading prefix of "
                                   f"{qualified(other['schema'], other['name'])} ({', '.join(other['keys'])})",
                                   f"The longer index serves the same lookups: DROP INDEX CONCURRENTLY {name};",
                                   size_bytes=ix["size"],
                                   details={"definition": ix["definition"], "covered_by": other["definition"]}))
                break
    return out


def _invalid(datname, indexes) -> list[Finding]:
    out = []
    for ix in indexes:
        if ix["valid"]:
            continue
        name = qualified(ix["schema"], ix["name"])
        out.append(Finding("index", "invalid_index", "high", datname, name,
                           f"index {name} is invalid (a failed CREATE INDEX CONCURRENTLY or REINDEX): it is "
                           "maintained on every write but never used",
                           f"Unless a CREATE INDEX CONCURRENTLY is running now: REINDEX INDEX CONCURRENTLY {name}; "
                           f"(or DROP INDEX CONCURRENTLY {name}; and create it again)",
                           size_bytes=ix["size"], details={"definition": ix["definition"]}))
    return out
