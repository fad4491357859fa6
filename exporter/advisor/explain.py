"""``--explain "SQL"``: EXPLAIN (FORMAT JSON) one statement and warn about its plan.

The SQL is bounded and parsed with pglast first (:mod:`exporter.advisor.guard`): exactly one
SELECT, INSERT, UPDATE, DELETE, VALUES or WITH statement, without parameters. It reaches the
server on its own, never inside a string dbperf builds: a protocol-level Parse (a prepared
statement, which PostgreSQL refuses to make of several statements), in a session dbperf set up
(standard_conforming_strings on, as pglast reads SQL; a READ ONLY transaction; statement, lock
and idle-in-transaction timeouts), then ``EXPLAIN (...) EXECUTE`` of it. ``--analyze`` runs it
(EXPLAIN ANALYZE, BUFFERS) in that read-only transaction, always rolled back, after refusing data
modifications and calls with side effects (:func:`exporter.advisor.guard.refused_call`)."""

from __future__ import annotations

import psycopg

from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType

from exporter.advisor import AdviseError, Finding, mark, qualified, quote_ident
from exporter.advisor import guard
from exporter.advisor.statements import COMPARISONS, TooLong, Unparsable, parse, walk
from exporter.errors import UnavailableError

BIG_RELATION = 10_000
MISESTIMATE = 10.0
MIN_MISESTIMATE_ROWS = 100
HOT_SHARE = 0.5
MIN_HOT_COST = 1000.0
MAX_INDEX_COLUMNS = 3
PREPARED = "dbperf_explain"


def validate(sql: str, analyze: bool = False) -> None:
    """Refuse (:class:`AdviseError`, one line) what ``--explain`` does not send: before connecting."""
    if "\x00" in sql:  # C strings end there: the parser and the server would read less than was given
        raise AdviseError("--explain: the SQL contains a NUL character")
    secret = guard.carries_secret(sql) if len(sql) <= guard.MAX_CHARS else None
    try:
        statements = parse(sql)
    except TooLong as exc:
        raise AdviseError(f"--explain: {exc}") from None
    except Unparsable as exc:
        if secret:  # the parser's message may quote the statement
            raise AdviseError("--explain: SQL does not parse (the parser's message is not shown: the statement "
                              "carries a secret)") from None
        raise AdviseError(f"--explain: SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise AdviseError(f"--explain: give exactly one SQL statement (got {len(statements)})")
    problem = guard.statement_problem(statements[0], sql, analyze)
    if problem:
        raise AdviseError(problem)


# SQLSTATE classes of a server that failed, not of a statement it refused: connection exceptions,
# insufficient resources, operator intervention (shutdown, terminated session), system and internal errors
SERVER_FAILED = ("08", "53", "57P", "58", "XX")


def _server_error(exc: psycopg.Error, secret: bool) -> AdviseError | UnavailableError:
    """The statement refused (exit 2: its SQLSTATE says why, a timeout too), or the server failed
    (the connection lost, no SQLSTATE, or one of :data:`SERVER_FAILED`: exit 1)."""
    message = exc.diag.message_primary or (str(exc).splitlines() or [type(exc).__name__])[0]
    hidden = f"SQLSTATE {exc.sqlstate}; the message is not shown: the statement carries a secret"
    if exc.sqlstate is None or exc.sqlstate.startswith(SERVER_FAILED):
        return UnavailableError(f"--explain: the server failed: {f'({hidden})' if secret else message}")
    label = "permission denied" if isinstance(exc, psycopg.errors.InsufficientPrivilege) else None
    if secret:  # the server's message may quote the statement's literals
        return AdviseError(f"--explain: {label or 'the server refused the statement'} ({hidden})")
    return AdviseError(f"--explain: {label}: {message}" if label else f"--explain: {message}")


def _prepare(conn, sql: str) -> None:
    """``sql`` as the prepared statement :data:`PREPARED`: one Parse message of the extended query
    protocol, which carries one statement (PostgreSQL: "cannot insert multiple commands into a
    prepared statement"); dbperf's mark is a comment at its end (sqlmark.mark)."""
    from psycopg import pq

    encoding = conn.info.encoding
    result = conn.pgconn.prepare(PREPARED.encode(), mark(sql).encode(encoding))
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(result, encoding=encoding)


def _plan(conn, options: str):
    with conn.cursor() as cur:
        cur.execute(mark(f"EXPLAIN ({options}) EXECUTE {PREPARED}"))
        (plan,) = cur.fetchone()
    return plan


def run_explain(conn: psycopg.Connection, sql: str, analyze: bool) -> dict:
    """The JSON plan of ``sql`` on ``conn`` (a non-autocommit connection from
    :func:`exporter.advisor.cli.connect`), in a READ ONLY transaction that is rolled back.
    ``sql`` has passed :func:`validate`. A statement that carries a secret gets a plan with every
    literal masked, and errors without the server's message."""
    secret = guard.carries_secret(sql) is not None
    try:
        conn.read_only = True
        state = conn.execute("SELECT current_setting('transaction_read_only'), "
                             "current_setting('standard_conforming_strings')").fetchone()
        if tuple(state) != ("on", "on"):  # connect() set both: never expected
            raise AdviseError(f"--explain: the session is not read-only with standard strings ({state})")
        # under --analyze the calls are checked twice: those the statement names, before the
        # server sees it; then those of its plan (views, rules and policies expanded)
        refused = guard.refused_call(conn, sql) if analyze else None
        if refused:
            raise AdviseError(refused)
        _prepare(conn, sql)
        plan = _plan(conn, "VERBOSE, FORMAT JSON")  # plans, runs nothing
        if analyze:
            refused = guard.refused_call(conn, "", plan)
            if refused:
                raise AdviseError(refused)
            plan = _plan(conn, "ANALYZE, BUFFERS, VERBOSE, FORMAT JSON")
    except psycopg.Error as exc:
        raise _server_error(exc, secret) from None
    except RecursionError:
        raise AdviseError("--explain: the plan is nested too deep to read") from None
    finally:
        _close(conn)
    plan = plan[0] if isinstance(plan, list) else plan
    return guard.mask_plan(plan) if secret else plan


def _close(conn) -> None:
    """Roll back, and drop the prepared statement (it outlives transactions)."""
    try:
        conn.rollback()
        try:
            conn.execute(f"DEALLOCATE {PREPARED}")
        finally:
            conn.rollback()
    except psycopg.Error:
        pass  # never prepared, or a broken session (closed by the caller)


def _nodes(node, parents=()):
    """Every plan node with its ancestors (nearest last), depth first (without recursion: a plan
    can be deep)."""
    stack = [(node, parents)]
    while stack:
        current, above = stack.pop()
        yield current, above
        stack.extend((child, above + (current,)) for child in reversed(current.get("Plans", ())))


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
    hottest = None
    for position, (node, parents) in enumerate(_nodes(root)):
        label = f"{_label(node)} (node {position})"
        loops = node.get("Actual Loops", 1) or 0
        node_ms = float(node.get("Actual Total Time", 0.0)) * loops if analyze else 0.0
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name"):
            rows = max(float(node.get("Plan Rows", 0)), _relation_rows(conn, node.get("Schema"), node["Relation Name"]))
            if rows > BIG_RELATION:
                out += _seq_scan(datname, node, parents, label, rows, node_ms, analyze)
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
    summary = f"{_label(root)}, estimated total cost {total_cost:.2f}"
    if analyze:
        summary += f", execution time {explained.get('Execution Time', 0.0):.3f} ms"
    follow = ("No warnings: the plan looks fine." if not out else "The warning below says where to look."
              if len(out) == 1 else f"The {len(out)} warnings below say where to look.")
    # the summary is sorted first (Finding.sort_key), above the warnings it introduces
    return [Finding("explain", "plan_summary", "info", datname, _label(root), summary, follow,
                    details={"total_cost": total_cost, "warnings": len(out)})] + out


# -- sequential scans -------------------------------------------------------------------------------
PASS_THROUGH = frozenset(("Gather", "Gather Merge", "Materialize", "Memoize"))
SELECTIVE_JOIN = 10.0  # the join keeps a tenth of the scanned rows or fewer
LIKE_OPS = {"~~": "LIKE", "~~*": "ILIKE"}


def _consumer(node, parents):
    """The nearest ancestor that does more than pass rows on, and which of its inputs ``node``
    feeds (``Outer`` / ``Inner``): (ancestor or None, relationship)."""
    child = node
    for parent in reversed(parents):
        if parent.get("Node Type") not in PASS_THROUGH:
            return parent, child.get("Parent Relationship", "")
        child = parent
    return None, ""


def _seq_scan(datname, node, parents, label, rows, node_ms, analyze) -> list[Finding]:
    name = qualified(node.get("Schema") or "public", node["Relation Name"])
    details = {"rows": int(rows), "filter": node.get("Filter", "")}
    if node.get("Filter"):
        rec, index = _filter_advice(node, name)
        details["index"] = index
        return [Finding("explain", "seq_scan", "high", datname, label,
                        f"sequential scan of {int(rows)} rows filtering on {node['Filter']}", rec,
                        time_ms=node_ms, details=details)]
    consumer, relationship = _consumer(node, parents)
    kind = consumer.get("Node Type") if consumer else None
    if kind == "Hash":
        # The build (inner) side of a hash join: the join reads this input once and in full, by
        # design; with no filter there is nothing an index could skip, and a sequential read is the
        # cheapest way to read every row. A slow join shows up as a misestimate, a spill or a hot spot.
        return []
    if kind == "Hash Join" and relationship == "Outer":
        joined = _rows_out(consumer, analyze)
        if joined * SELECTIVE_JOIN > rows:
            return []  # the join keeps most of the rows it probes with: they are all needed
        keys = _columns(consumer.get("Hash Cond", ""), node.get("Alias") or node["Relation Name"])
        table = node["Relation Name"]
        create = (f"CREATE INDEX CONCURRENTLY {_index_name(table, keys)} ON {name} "
                  f"({', '.join(quote_ident(k) for k in keys)});" if keys else f"CREATE INDEX CONCURRENTLY ... ON {name} (...);")
        details.update(join_rows=int(joined), join_keys=keys)
        return [Finding("explain", "seq_scan", "low", datname, label,
                        f"sequential scan of {int(rows)} rows, all probed into a hash join that keeps {int(joined)}",
                        f"An index on the join key could let a nested loop fetch only the matching rows: {create} "
                        "(the planner then chooses; ANALYZE first if the estimates are off).",
                        time_ms=node_ms, details=details)]
    return [Finding("explain", "seq_scan", "low", datname, label,
                    f"sequential scan of all {int(rows)} rows of {name}, with no filter",
                    "The query reads the whole table, which no index makes cheaper; if it needs fewer rows, say so "
                    "(a WHERE clause, a LIMIT), and for counts consider an estimate (pg_class.reltuples).",
                    time_ms=node_ms, details=details)]


def _rows_out(node, analyze: bool) -> float:
    if analyze and "Actual Rows" in node:
        return float(node["Actual Rows"]) * float(node.get("Actual Loops", 1) or 1)
    return float(node.get("Plan Rows", 0))


def _index_name(table: str, columns, suffix: str = "idx") -> str:
    return quote_ident(f"{table}_{'_'.join(columns)}_{suffix}"[:63])


def _conjuncts(expression: str):
    """The AND-ed terms of a plan's expression (a Filter, a Hash Cond), parsed; [] when it does not parse."""
    try:
        (raw,) = parse(f"SELECT {expression}")
    except (Unparsable, ValueError):
        return []
    top = raw.stmt.targetList[0].val
    if isinstance(top, ast.BoolExpr) and top.boolop == BoolExprType.AND_EXPR:
        return list(top.args)
    return [top]


TEXT_TYPES = frozenset(("text", "varchar", "bpchar"))


def _column(node, alias: str) -> str | None:
    """The column name of ``node`` when it is a column of the scanned relation (``alias``); a cast
    to text (as plans show varchar columns) is looked through: an index on the column serves it."""
    while isinstance(node, ast.TypeCast) and node.typeName.names[-1].sval in TEXT_TYPES:
        node = node.arg
    if not isinstance(node, ast.ColumnRef) or not all(isinstance(f, ast.String) for f in node.fields):
        return None
    names = [f.sval for f in node.fields]
    if len(names) == 1 or names[-2] == alias:
        return names[-1]
    return None


def _constant(node):
    """The value of a constant (``'x'::text`` included), else None."""
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.A_Const) and not getattr(node, "isnull", False):
        val = node.val
        return getattr(val, "sval", None) if isinstance(val, ast.String) else getattr(val, "ival", getattr(val, "fval", None))
    return None


def _columns(expression: str, alias: str) -> list[str]:
    """Columns of ``alias`` in ``expression``, in order, each once."""
    out = []
    for term in _conjuncts(expression):
        for node in walk(term):
            col = _column(node, alias)
            if col and col not in out:
                out.append(col)
    return out


def filter_terms(expression: str, alias: str) -> dict:
    """What of a scan's Filter an index could serve: ``eq`` and ``range`` columns (a B-tree) and
    ``wildcard`` (column, LIKE/ILIKE, pattern) for leading-wildcard patterns (only a trigram index)."""
    out = {"eq": [], "range": [], "wildcard": []}
    for term in _conjuncts(expression):
        if not isinstance(term, ast.A_Expr) or not term.name:
            continue
        op = term.name[-1].sval if isinstance(term.name[-1], ast.String) else ""
        col = _column(term.lexpr, alias)
        value = _constant(term.rexpr)
        if col is None and op in COMPARISONS:  # 5 < t.a
            col, value = _column(term.rexpr, alias), _constant(term.lexpr)
        if col is None or value is None:
            continue
        if term.kind == A_Expr_Kind.AEXPR_OP and op in LIKE_OPS and isinstance(value, str):
            if value[:1] in ("%", "_"):
                out["wildcard"].append((col, LIKE_OPS[op], value))
        elif term.kind == A_Expr_Kind.AEXPR_OP and op in COMPARISONS:
            bucket = out["eq"] if op == "=" else out["range"]
            if col not in bucket:
                bucket.append(col)
        elif term.kind == A_Expr_Kind.AEXPR_OP_ANY and op == "=" and col not in out["eq"]:
            out["eq"].append(col)  # IN (...) lists
    out["range"] = [c for c in out["range"] if c not in out["eq"]]
    return out


def _longest_literal(pattern: str) -> int:
    longest = run = 0
    escaped = False
    for ch in pattern:
        if escaped or ch not in "%_\\":
            run, escaped = run + 1, False
        elif ch == "\\":
            escaped = True
        else:
            run = 0
        longest = max(longest, run)
    return longest


def trigram_advice(name: str, table: str, column: str, op: str, pattern: str) -> str:
    """What serves ``column LIKE '%...'``: pg_trgm (GIN or GiST), with the DDL, or another query."""
    col = quote_ident(column)
    ddl = (f"CREATE EXTENSION IF NOT EXISTS pg_trgm; CREATE INDEX CONCURRENTLY {_index_name(table, [column], 'trgm_idx')} "
           f"ON {name} USING gin ({col} gin_trgm_ops);")
    head = f"A B-tree index cannot serve {col} {op} '{pattern}' (a leading wildcard). "
    if _longest_literal(pattern) < 3:
        return (head + f"'{pattern}' has fewer than 3 characters between its wildcards, so a trigram index cannot "
                f"narrow it either: change the query (a prefix match such as '{pattern.strip('%_')}%', full-text "
                f"search, or a stored column to compare); for patterns of 3 or more characters, a pg_trgm index "
                f"serves it: {ddl}")
    return (head + f"A trigram index serves it: {ddl} (or USING gist ({col} gist_trgm_ops): smaller, slower to "
            "search); or change the query (a prefix match, full-text search).")


def _filter_advice(node, name: str) -> tuple[str, str]:
    """The recommendation for a filtered sequential scan, and which index it proposes
    (``btree``, ``trigram``, ``btree+trigram`` or ``unknown``)."""
    table = node["Relation Name"]
    terms = filter_terms(node["Filter"], node.get("Alias") or table)
    parts, kinds = [], []
    cols = (terms["eq"] + terms["range"][:1])[:MAX_INDEX_COLUMNS]
    if cols:
        parts.append(f"Add an index on the filtered column{'s' if len(cols) > 1 else ''}: CREATE INDEX CONCURRENTLY "
                     f"{_index_name(table, cols)} ON {name} ({', '.join(quote_ident(c) for c in cols)}); if one "
                     "exists, check why it is not used (low selectivity, a type mismatch).")
        kinds.append("btree")
    for column, op, pattern in terms["wildcard"]:
        parts.append(trigram_advice(name, table, column, op, pattern))
        if "trigram" not in kinds:
            kinds.append("trigram")
    if not parts:
        return ("Add an index on the filtered columns (CREATE INDEX CONCURRENTLY ...), or check why an existing "
                "one is not used (a function or cast on the column, a type mismatch, low selectivity).", "unknown")
    return " ".join(parts), "+".join(kinds)
