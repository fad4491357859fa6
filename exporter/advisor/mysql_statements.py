"""SQL anti-patterns in MySQL and MariaDB statements, parsed with sqlglot's MySQL dialect: the
checks of :mod:`exporter.advisor.statements` (same names and severities), on the normalised digest
texts of ``performance_schema.events_statements_summary_by_digest``.

A digest text has its literals replaced by ``?``: ``LIKE '%x'`` becomes ``LIKE ?`` and
``LIMIT 5000, 10`` becomes ``LIMIT ?, ?``, so the leading-wildcard and large-offset checks only see
constants in SQL given directly (tests); a placeholder offset is reported, with low severity, as
OFFSET pagination. A digest text cut at ``performance_schema_max_digest_length`` (it ends with
``...``) does not parse and is counted as such; a list of values written ``(...)`` is read as one
placeholder."""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp

from exporter.advisor.statements import (DEEP_PAGES_FIX, KEYSET_FIX, LARGE_OFFSET, Issue, TooLong, Unparsable,
                                         _one_per_check)

LIST = re.compile(r"\(\s*\.\.\.\s*\)")
COMPARISONS = (exp.EQ, exp.GT, exp.GTE, exp.LT, exp.LTE)
DATE_FUNCTIONS = frozenset(("date", "tsordstodate", "cast", "trycast", "year", "month", "date_format"))


def parse(sql: str) -> list:
    """The statements of ``sql`` (sqlglot expressions), or :class:`Unparsable` (:class:`TooLong`
    over the advisor's bounds: a tree too deep would exhaust the parser's recursion)."""
    from exporter.advisor.guard import TooLong as OverBound, bound

    try:
        bound(sql)
        # a digest writes a list of values as (...): INSERT ... VALUES (...) /* , ... */, IN (...)
        statements = [s for s in sqlglot.parse(LIST.sub("(?)", sql), read="mysql") if s is not None]
    except OverBound as exc:
        raise TooLong(str(exc)) from None
    except RecursionError:
        raise TooLong("statement nested too deeply to parse") from None
    except Exception as exc:  # sqlglot.errors.ParseError, TokenError
        raise Unparsable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if not statements or any(isinstance(s, exp.Command) for s in statements):
        raise Unparsable("not a statement sqlglot's MySQL dialect understands")
    return statements


def _sql(node) -> str:
    try:
        return node.sql(dialect="mysql")
    except Exception:
        return type(node).__name__


def check_sql(sql: str) -> list[Issue]:
    """The anti-patterns in ``sql``; raises :class:`Unparsable` when it does not parse."""
    issues: list[Issue] = []
    for stmt in parse(sql):
        issues += _select_star(stmt) + _unfiltered_write(stmt)
        for select in stmt.find_all(exp.Select):
            issues += _order_random(select) + _offset(select)
        for like in stmt.find_all(exp.Like):
            issues += _leading_wildcard(like)
        for neg in stmt.find_all(exp.Not):
            issues += _not_in(neg)
        for where in stmt.find_all(exp.Where, exp.Join):
            condition = where.this if isinstance(where, exp.Where) else where.args.get("on")
            if condition is not None:
                for cmp in condition.find_all(*COMPARISONS):
                    issues += _function_on_column(cmp)
    return _one_per_check(issues)


def _select_star(stmt) -> list[Issue]:
    for select in stmt.find_all(exp.Select):
        if isinstance(select.parent, exp.Exists) or isinstance(select.parent, exp.Subquery) and \
                isinstance(select.parent.parent, exp.Exists):
            continue
        if any(isinstance(e, exp.Star) or isinstance(e, exp.Column) and isinstance(e.this, exp.Star)
               for e in select.expressions):
            return [Issue("select_star", "low", "SELECT * returns every column",
                          "List only the columns the application uses: less I/O and network, covering "
                          "indexes become possible, and new columns don't break callers.")]
    return []


def _unfiltered_write(stmt) -> list[Issue]:
    if isinstance(stmt, (exp.Update, exp.Delete)) and stmt.args.get("where") is None:
        verb = "UPDATE" if isinstance(stmt, exp.Update) else "DELETE"
        table = _sql(stmt.this) if stmt.this is not None else "the table"
        extra = " (or TRUNCATE TABLE if the whole table is meant to be emptied)" if verb == "DELETE" else ""
        return [Issue(f"{verb.lower()}_without_where", "high", f"{verb} on {table} without WHERE touches every row",
                      f"Add a WHERE clause{extra}; a full-table {verb} locks every row, fills the undo log "
                      "(MySQLHistoryListLong) and replicates as one huge transaction.")]
    return []


def _order_random(select: exp.Select) -> list[Issue]:
    order = select.args.get("order")
    if order is not None and any(isinstance(o.this, exp.Rand) for o in order.expressions):
        return [Issue("order_by_random", "medium", "ORDER BY RAND() sorts the whole result to pick rows",
                      "Pick random keys instead (WHERE id >= FLOOR(RAND() * max_id) ORDER BY id LIMIT n), "
                      "or keep a random column with an index.")]
    return []


def _offset(select: exp.Select) -> list[Issue]:
    offset = select.args.get("offset")
    value = offset.expression if offset is not None else None
    if isinstance(value, exp.Literal) and not value.is_string and int(value.this) > LARGE_OFFSET:
        n = int(value.this)
        return [Issue("large_offset", "medium", f"OFFSET {n} reads and discards {n} rows", KEYSET_FIX)]
    if isinstance(value, exp.Placeholder):
        return [Issue("offset_pagination", "low",
                      "OFFSET pagination (LIMIT ?, ?: the digest replaced the offset by ?, so its size is "
                      "unknown); every page reads and discards all earlier rows", DEEP_PAGES_FIX)]
    return []


def _leading_wildcard(like: exp.Like) -> list[Issue]:
    pattern = like.expression
    if isinstance(pattern, exp.Literal) and pattern.is_string and pattern.this[:1] in ("%", "_"):
        column = _sql(like.this)
        return [Issue("leading_wildcard_like", "medium",
                      f"{column} LIKE '{pattern.this}' starts with a wildcard: no B-tree index can be used",
                      f"Use a FULLTEXT index (ALTER TABLE ... ADD FULLTEXT ({column}); MATCH ... AGAINST) or a "
                      "reversed-string column with an index for suffix searches.",
                      at=f"{column} LIKE '{pattern.this}'")]
    return []


def _not_in(neg: exp.Not) -> list[Issue]:
    inner = neg.this
    if isinstance(inner, exp.Paren):
        inner = inner.this
    if isinstance(inner, exp.In) and inner.args.get("query") is not None:
        tested = _sql(inner.this)
        return [Issue("not_in_subquery", "medium",
                      f"{tested} NOT IN (subquery): one NULL in the subquery makes it return no rows, and "
                      "older servers run it as a dependent subquery per row",
                      "Rewrite as NOT EXISTS (SELECT 1 FROM ... WHERE ... = outer.column) or a LEFT JOIN ... "
                      "WHERE ... IS NULL, which MySQL 8.0.17+ and MariaDB run as an anti-join.",
                      at=f"{tested} NOT IN (subquery)")]
    return []


def _function_on_column(cmp) -> list[Issue]:
    for side, other in ((cmp.this, cmp.expression), (cmp.expression, cmp.this)):
        if not isinstance(side, exp.Func) or isinstance(side, exp.AggFunc) or other is None:
            continue
        if not any(isinstance(a, exp.Column) for a in side.iter_expressions()):
            continue
        if any(True for _ in other.find_all(exp.Column)):
            continue
        text = _sql(side)
        name = type(side).__name__.lower() if not isinstance(side, exp.Anonymous) else str(side.this).lower()
        if name in DATE_FUNCTIONS:
            rewrite = "compare the bare column with a range instead, e.g. col >= '2024-01-01' AND col < '2024-01-02'"
        else:
            rewrite = f"index the expression (MySQL 8.0.13+: CREATE INDEX ... ON <table> (({text})); MariaDB: a " \
                      "virtual column with an index)"
        return [Issue("function_on_column", "medium",
                      f"WHERE {text} {_op(cmp)} ...: a function or cast on the "
                      "filtered column hides it from plain indexes",
                      f"Either {rewrite}, or store the value already transformed.", at=text)]
    return []


def _op(cmp) -> str:
    return {exp.EQ: "=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}[type(cmp)]
