"""SQL anti-patterns, found by parsing statements with pglast (PostgreSQL's own parser).

``check_sql(sql)`` returns the issues of one statement; ``predicate_columns(sql)`` the columns its
WHERE clauses compare with constants, per table (used to propose indexes); ``statement_findings``
applies both to the top statements of ``pg_stat_statements``.

pg_stat_statements replaces constants with ``$n``: a leading-wildcard ``LIKE '%x'`` becomes
``LIKE $1`` and ``OFFSET 5000`` becomes ``OFFSET $1``, so those two checks only see constants in
SQL given directly (``--explain``, tests) and in real samples of ``pg_stat_activity`` (the session
sampler's, :func:`sample_findings`); a parameterised OFFSET is reported, with low severity, as
OFFSET pagination.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType, SubLinkType
from pglast.stream import RawStream

from exporter.advisor import Finding
from exporter.advisor.sqltree import children, walk

LARGE_OFFSET = 1000
TOP_STATEMENTS = 50
COMPARISONS = frozenset(("=", "<", ">", "<=", ">="))


@dataclass(frozen=True)
class Issue:
    check: str
    severity: str
    message: str
    recommendation: str
    at: str = ""          # where in the statement (a column, an expression), to merge repeats


class StatementsUnavailable(RuntimeError):
    """pg_stat_statements cannot be read: the message (one line) says why and how to enable it."""


class Unparsable(ValueError):
    pass


class TooLong(Unparsable):
    """Over the advisor's bounds (exporter.advisor.guard.bound): never given to the parser."""


def parse(sql: str) -> tuple:
    """The statements of ``sql`` (pglast RawStmt nodes), or :class:`Unparsable` (:class:`TooLong`
    for a text over the bounds: a tree too deep would crash the process inside the parser)."""
    from exporter.advisor.guard import TooLong as OverBound, bound

    try:
        bound(sql)
        return parse_sql(sql)
    except OverBound as exc:
        raise TooLong(str(exc)) from None
    except Exception as exc:  # pglast.parser.ParseError and friends
        raise Unparsable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def deparse(node) -> str:
    try:
        return RawStream()(node)
    except Exception:
        return type(node).__name__


def _op(expr: ast.A_Expr) -> str:
    names = expr.name or ()
    return names[-1].sval if names and isinstance(names[-1], ast.String) else ""


def _funcname(call: ast.FuncCall) -> str:
    names = call.funcname or ()
    return names[-1].sval.lower() if names and isinstance(names[-1], ast.String) else ""


def _has_column(node) -> bool:
    return any(isinstance(n, ast.ColumnRef) for n in walk(node))


def _where_clauses(stmt):
    """(owning statement, where clause) for every SELECT/UPDATE/DELETE in ``stmt``, with JOIN ... ON."""
    for node in walk(stmt):
        if isinstance(node, (ast.SelectStmt, ast.UpdateStmt, ast.DeleteStmt)) and node.whereClause is not None:
            yield node, node.whereClause
        elif isinstance(node, ast.JoinExpr) and node.quals is not None:
            yield node, node.quals


# -- the checks -----------------------------------------------------------------------------------
def check_sql(sql: str, redact: bool = False) -> list[Issue]:
    """The anti-patterns in ``sql``; raises :class:`Unparsable` when it does not parse. ``redact``:
    messages show a literal only as its placeholder (``'%…'``: exporter.instrument.redact), for raw
    text whose literals are private."""
    issues: list[Issue] = []
    for raw in parse(sql):
        stmt = raw.stmt
        issues += _select_star(stmt)
        issues += _unfiltered_write(stmt)
        for node in walk(stmt):
            if isinstance(node, ast.SelectStmt):
                issues += _order_random(node) + _offset(node, redact)
            elif isinstance(node, ast.A_Expr):
                issues += _leading_wildcard(node, redact)
            elif isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.NOT_EXPR:
                issues += _not_in(node)
        for _owner, where in _where_clauses(stmt):
            for node in walk(where):
                if isinstance(node, ast.A_Expr):
                    issues += _function_on_column(node)
    return _one_per_check(issues)


def _one_per_check(issues: list[Issue]) -> list[Issue]:
    """One issue per check: the first (in the statement's order), naming the other places."""
    by_check: dict = {}
    for issue in issues:
        by_check.setdefault(issue.check, []).append(issue)
    out = []
    for check, found in by_check.items():
        first, others = found[0], []
        for issue in found[1:]:
            if issue.at and issue.at != first.at and issue.at not in others:
                others.append(issue.at)
        if others:
            first = Issue(check, first.severity, f"{first.message} (also: {', '.join(others)})",
                          first.recommendation, first.at)
        out.append(first)
    return out


def _select_lists(stmt):
    """The target lists of the SELECTs whose rows are returned (set operations and CTEs included,
    EXISTS subqueries excluded: ``EXISTS (SELECT * ...)`` is fine). Without recursion: a chain of
    thousands of UNIONs is a tree that deep."""
    stack = [stmt]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.SelectStmt):
            if current.op is not None and int(current.op) != 0:  # UNION / INTERSECT / EXCEPT
                stack.extend((current.rarg, current.larg))
            elif current.targetList:
                yield current.targetList
        with_clause = getattr(current, "withClause", None)
        if with_clause is not None:
            stack.extend(cte.ctequery for cte in reversed(with_clause.ctes or ()))


def _select_star(stmt) -> list[Issue]:
    for targets in _select_lists(stmt):
        for target in targets:
            val = getattr(target, "val", None)
            if isinstance(val, ast.ColumnRef) and val.fields and isinstance(val.fields[-1], ast.A_Star):
                return [Issue("select_star", "low", "SELECT * returns every column",
                              "List only the columns the application uses: less I/O and network, "
                              "index-only scans become possible, and new columns don't break callers.")]
    return []


def _unfiltered_write(stmt) -> list[Issue]:
    if isinstance(stmt, (ast.UpdateStmt, ast.DeleteStmt)) and stmt.whereClause is None:
        verb = "UPDATE" if isinstance(stmt, ast.UpdateStmt) else "DELETE"
        table = deparse(stmt.relation)
        extra = " (or TRUNCATE if the whole table is meant to be emptied)" if verb == "DELETE" else ""
        return [Issue(f"{verb.lower()}_without_where", "high", f"{verb} on {table} without WHERE touches every row",
                      f"Add a WHERE clause{extra}; a full-table {verb} rewrites every row, bloats the "
                      "table and holds row locks on all of it.")]
    return []


def _order_random(select: ast.SelectStmt) -> list[Issue]:
    for sortby in select.sortClause or ():
        node = getattr(sortby, "node", None)
        if isinstance(node, ast.FuncCall) and _funcname(node) == "random":
            return [Issue("order_by_random", "medium", "ORDER BY random() sorts the whole result to pick rows",
                          "Sample with TABLESAMPLE SYSTEM/BERNOULLI, or pick random keys (e.g. WHERE id >= "
                          "random value ORDER BY id LIMIT n) instead of sorting every row.")]
    return []


# the fixes of the pagination findings, for PostgreSQL and MySQL alike (exporter.advisor.mysql_statements)
KEYSET_FIX = ("Use keyset pagination: WHERE (sort_key, id) > (last_seen_key, last_seen_id) "
              "ORDER BY sort_key, id LIMIT n, backed by an index on (sort_key, id).")
DEEP_PAGES_FIX = ("If deep pages are requested, switch to keyset pagination: WHERE (sort_key, id) > "
                  "(last_seen_key, last_seen_id) ORDER BY sort_key, id LIMIT n.")


def _offset(select: ast.SelectStmt, redact: bool = False) -> list[Issue]:
    offset = select.limitOffset
    if isinstance(offset, ast.A_Const) and isinstance(offset.val, ast.Integer) and offset.val.ival > LARGE_OFFSET:
        rows = f"over {LARGE_OFFSET}" if redact else str(offset.val.ival)
        return [Issue("large_offset", "medium", f"OFFSET {'?' if redact else rows} reads and discards {rows} rows",
                      KEYSET_FIX)]
    if isinstance(offset, ast.ParamRef):
        return [Issue("offset_pagination", "low",
                      "OFFSET pagination (the offset is a parameter, or a constant normalised to $n by "
                      "pg_stat_statements, so its size is unknown); every page reads and discards all earlier rows",
                      DEEP_PAGES_FIX)]
    return []


def _leading_wildcard(expr: ast.A_Expr, redact: bool = False) -> list[Issue]:
    if expr.kind not in (A_Expr_Kind.AEXPR_LIKE, A_Expr_Kind.AEXPR_ILIKE):
        return []
    pattern = expr.rexpr
    if isinstance(pattern, ast.A_Const) and isinstance(pattern.val, ast.String) and pattern.val.sval[:1] in ("%", "_"):
        from exporter.instrument.redact import literal_shape

        op = "ILIKE" if expr.kind == A_Expr_Kind.AEXPR_ILIKE else "LIKE"
        column = deparse(expr.lexpr)
        shown = literal_shape(pattern.val.sval) if redact else "'" + pattern.val.sval + "'"
        return [Issue("leading_wildcard_like", "medium",
                      f"{column} {op} {shown} starts with a wildcard: no B-tree index can be used",
                      f"Use a trigram index (CREATE EXTENSION IF NOT EXISTS pg_trgm; CREATE INDEX CONCURRENTLY ... "
                      f"USING gin ({column} gin_trgm_ops)) or full-text search instead of a leading-wildcard {op}.",
                      at=f"{column} {op} {shown}")]
    return []


def _not_in(expr: ast.BoolExpr) -> list[Issue]:
    args = expr.args or ()
    if len(args) == 1 and isinstance(args[0], ast.SubLink) and args[0].subLinkType == SubLinkType.ANY_SUBLINK \
            and args[0].testexpr is not None:
        tested = deparse(args[0].testexpr)
        return [Issue("not_in_subquery", "medium",
                      f"{tested} NOT IN (subquery): cannot become an anti-join, and one NULL "
                      "in the subquery makes it return no rows",
                      "Rewrite as NOT EXISTS (SELECT 1 FROM ... WHERE ... = outer.column), which PostgreSQL "
                      "runs as a hash or merge anti-join and which has the expected NULL semantics.",
                      at=f"{tested} NOT IN (subquery)")]
    return []


def _function_on_column(expr: ast.A_Expr) -> list[Issue]:
    if expr.kind != A_Expr_Kind.AEXPR_OP or _op(expr) not in COMPARISONS:
        return []
    for side, other in ((expr.lexpr, expr.rexpr), (expr.rexpr, expr.lexpr)):
        wrapped = None
        if isinstance(side, ast.FuncCall) and not side.agg_star and any(
                isinstance(a, ast.ColumnRef) for a in side.args or ()):
            wrapped = side
        elif isinstance(side, ast.TypeCast) and isinstance(side.arg, ast.ColumnRef):
            wrapped = side
        if wrapped is not None and other is not None and not _has_column(other):
            text = deparse(wrapped)
            name = _funcname(wrapped) if isinstance(wrapped, ast.FuncCall) else "cast"
            if name in ("date", "cast", "date_trunc"):
                rewrite = ("compare the bare column with a range instead, e.g. col >= '2024-01-01' AND "
                           "col < '2024-01-02'")
            else:
                rewrite = f"create an expression index: CREATE INDEX CONCURRENTLY ... ON <table> (({text}))"
            return [Issue("function_on_column", "medium",
                          f"WHERE {text} {_op(expr)} ...: a function or cast on the filtered column hides it from "
                          "plain indexes",
                          f"Either {rewrite}, or store the value already transformed.", at=text)]
    return []


# -- columns compared with constants, per table, for index proposals -----------------------------
def _relations(stmt) -> dict:
    """id(node) -> {alias or name: (schema or None, relname)} of the tables read under each node
    of ``stmt`` (the last one seen wins a name), computed once, bottom up, without recursion: a
    per-clause walk would be quadratic in a chain of joins."""
    out: dict = {}
    stack = [(stmt, False)]
    while stack:
        node, done = stack.pop()
        if not done:
            stack.append((node, True))
            stack.extend((child, False) for child in children(node))
            continue
        own = {}
        if isinstance(node, ast.RangeVar):
            own[node.alias.aliasname if node.alias is not None else node.relname] = (node.schemaname, node.relname)
        parts = [out[id(child)] for child in children(node) if out.get(id(child))]
        if not own and len(parts) <= 1:
            out[id(node)] = parts[0] if parts else {}
        else:
            for part in parts:
                own.update(part)
            out[id(node)] = own
    return out


def predicate_columns(sql: str) -> dict:
    """``{(schema or None, table): {"eq": [cols], "range": [cols]}}`` for columns compared with a
    constant or parameter in WHERE/ON clauses (first seen first). Unparsable SQL gives ``{}``."""
    try:
        statements = parse(sql)
    except Unparsable:
        return {}
    out: dict = {}
    for raw in statements:
        scopes = None
        for owner, where in _where_clauses(raw.stmt):
            scopes = scopes if scopes is not None else _relations(raw.stmt)
            rels = scopes[id(owner)]
            for node in walk(where):
                if not isinstance(node, ast.A_Expr):
                    continue
                kind = None
                if node.kind == A_Expr_Kind.AEXPR_OP and _op(node) in COMPARISONS:
                    kind = "eq" if _op(node) == "=" else "range"
                elif node.kind == A_Expr_Kind.AEXPR_IN:
                    kind = "eq"
                elif node.kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_NOT_BETWEEN):
                    kind = "range"
                if kind is None:
                    continue
                for side, other in ((node.lexpr, node.rexpr), (node.rexpr, node.lexpr)):
                    if not isinstance(side, ast.ColumnRef) or other is None or _has_column(other):
                        continue
                    names = [f.sval for f in side.fields if isinstance(f, ast.String)]
                    if not names or len(names) != len(side.fields):
                        continue
                    if len(names) == 1 and len(rels) == 1:
                        rel = next(iter(rels.values()))
                    elif len(names) >= 2 and names[-2] in rels:
                        rel = rels[names[-2]]
                    else:
                        continue
                    cols = out.setdefault(rel, {"eq": [], "range": []})
                    if names[-1] not in cols[kind]:
                        cols[kind].append(names[-1])
    return out


# -- pg_stat_statements ------------------------------------------------------------------------------
# pg_stat_statements keeps one row per (user, database, queryid, top level or nested): the advisor
# judges a statement once per database and queryid, with the calls and time of all its rows and the
# text of its most called row. Rows whose text carries dbperf's mark are dbperf's own: counted, not
# judged. Row by row, because a queryid can be both: the statement inside dbperf's
# ``EXPLAIN ... /*mark*/`` shares its queryid with the application's own runs of that statement.
STATEMENTS_SQL = """
WITH r AS (
  SELECT s.queryid, d.datname, s.query, s.calls, s.total_exec_time, s.rows, strpos(s.query, %(mark)s) > 0 AS own
  FROM pg_stat_statements(true) s JOIN pg_database d ON d.oid = s.dbid
  WHERE s.query IS NOT NULL AND d.datname = ANY(%(databases)s)
), s AS (
  SELECT queryid, datname, (array_agg(query ORDER BY calls DESC, query))[1] AS query, sum(calls) AS calls,
         sum(total_exec_time) AS total_ms, sum(rows) AS rows
  FROM r WHERE NOT own
  GROUP BY queryid, datname
)
SELECT own.n, top.queryid, top.datname, top.query, top.calls, top.total_ms, top.rows
FROM (SELECT count(DISTINCT (datname, queryid)) AS n FROM r WHERE own) own
LEFT JOIN LATERAL (SELECT * FROM s ORDER BY total_ms DESC, datname, queryid LIMIT %(limit)s) top ON true
ORDER BY top.total_ms DESC, top.datname, top.queryid
"""

ENABLE = "add pg_stat_statements to shared_preload_libraries in postgresql.conf and restart PostgreSQL"


def top_statements(conn, databases: list[str], limit: int = TOP_STATEMENTS) -> tuple[list[dict], int]:
    """The top statements by total execution time in ``databases`` (dbperf's own left out) and
    how many of dbperf's own there were. :class:`StatementsUnavailable` when pg_stat_statements
    is not created in the connection's database or not loaded."""
    import psycopg

    from exporter.advisor import OWN_MARK

    dbname = conn.execute("SELECT current_database()").fetchone()[0]
    if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone():
        raise StatementsUnavailable(
            f"pg_stat_statements is not installed in database {dbname!r}; to enable it: {ENABLE}, "
            f"then run CREATE EXTENSION pg_stat_statements in database {dbname!r}")
    try:
        rows = conn.execute(STATEMENTS_SQL, {"mark": OWN_MARK, "databases": list(databases),
                                             "limit": limit}).fetchall()
    except psycopg.errors.ObjectNotInPrerequisiteState as exc:  # created, but not preloaded
        if "shared_preload_libraries" not in str(exc):
            raise
        conn.rollback()  # a no-op in autocommit; a caller's transaction stays usable otherwise
        raise StatementsUnavailable(
            f"pg_stat_statements is installed in database {dbname!r} but not loaded; to enable it: {ENABLE}") \
            from None
    statements = [{"queryid": r[1], "datname": r[2], "query": r[3], "calls": int(r[4]), "total_ms": float(r[5]),
                   "rows": int(r[6])} for r in rows if r[2] is not None]
    return statements, int(rows[0][0])


def _checked(sql: str, skipped: dict, redact: bool = False) -> list[Issue] | None:
    """:func:`check_sql`, or None with ``skipped`` counting why (``too_long``, ``unparsable``)."""
    try:
        return check_sql(sql, redact=redact)
    except TooLong:
        skipped["too_long"] += 1
    except Unparsable:
        skipped["unparsable"] += 1
    return None


def statement_findings(statements: list[dict], wanted=lambda datname: True) -> tuple[list[Finding], dict]:
    """Findings for ``statements`` (from :func:`top_statements`) and the counts of those not
    checked: ``{"unparsable": n, "too_long": n}`` (too long: over exporter.advisor.guard's bounds,
    never given to the parser).

    A statement that carries a secret (exporter.instrument.redact: a password, server or user
    mapping options, pgcrypto calls ...) is shown in its redacted form, and checked with every
    literal masked, so no finding quotes a piece of it."""
    from exporter.advisor.guard import MAX_CHARS, carries_secret, mask_literals

    findings, skipped = [], {"unparsable": 0, "too_long": 0}
    for st in statements:
        if not wanted(st["datname"]):
            continue
        query = st["query"]
        redacted = carries_secret(query) if len(query) <= MAX_CHARS else None
        issues = _checked(mask_literals(query) if redacted else query, skipped)
        if issues is None:
            continue
        text = redacted or " ".join(query.split())
        for issue in issues:
            findings.append(Finding(
                kind="statement", check=issue.check, severity=issue.severity, database=st["datname"],
                subject=f"queryid {st['queryid']}", message=issue.message, recommendation=issue.recommendation,
                time_ms=st["total_ms"],
                details={"query": text[:300], "calls": st["calls"],
                         "mean_ms": round(st["total_ms"] / st["calls"], 3) if st["calls"] else 0.0}))
    return findings, skipped


# -- real samples of pg_stat_activity ------------------------------------------------------------------
# The checks whose finding depends on a literal's value: pg_stat_statements' $n text never shows them.
LITERAL_CHECKS = frozenset(("leading_wildcard_like", "large_offset"))


def sample_findings(samples, statements=(), redact: bool = True, wanted=lambda datname: True) -> tuple[list, dict]:
    """Findings from real samples (exporter.postgres.samples.Sample: raw text with its literals)
    for the checks that need a literal's value (:data:`LITERAL_CHECKS`): a leading-wildcard LIKE or
    a large OFFSET that pg_stat_statements only shows as ``$1``. The RAW text is analysed; what
    the finding shows (message, query) is redacted unless ``redact`` is False. ``statements``
    (from :func:`top_statements`) give a sampled statement its total time. Returns the findings
    and the counts of samples ``checked`` and not (``unparsable``: a truncated text mostly;
    ``too_long``); a sample of a database not ``wanted``, or whose text carries a secret, is neither."""
    from exporter.advisor import is_own
    from exporter.advisor.guard import MAX_CHARS, carries_secret

    totals = {(st["datname"], str(st["queryid"])): st for st in statements}
    findings, skipped = [], {"checked": 0, "unparsable": 0, "too_long": 0}
    for sample in samples:
        if not wanted(sample.datname) or len(sample.text) > MAX_CHARS or carries_secret(sample.text) \
                or is_own(sample.text):
            continue  # a statement that carries a secret is never quoted, even redacted; dbperf's own never judged
        issues = _checked(sample.text, skipped, redact)
        if issues is None:
            continue
        skipped["checked"] += 1
        issues = [i for i in issues if i.check in LITERAL_CHECKS]
        known = totals.get((sample.datname, str(sample.queryid)))
        text = " ".join(sample.shown(redact).split())
        subject = f"queryid {sample.queryid}" if sample.queryid is not None else f"sample {sample.key}"
        for issue in issues:
            details = {"query": text[:300], "source": "sample of pg_stat_activity",
                       "sample_duration_s": round(sample.duration, 3), "application": sample.application}
            if sample.route:
                details["route"] = sample.route
            if known:
                details.update(calls=known["calls"], mean_ms=round(known["total_ms"] / known["calls"], 3)
                               if known["calls"] else 0.0)
            findings.append(Finding(
                kind="statement", check=issue.check, severity=issue.severity, database=sample.datname,
                subject=subject, message=f"{issue.message} (seen in a sample of a running statement)",
                recommendation=issue.recommendation,
                time_ms=known["total_ms"] if known else sample.duration * 1000, details=details))
    return findings, skipped
