"""dbperf's own SQL, recognisable in ``pg_stat_statements``.

Every statement dbperf's exporter sends ends with the sqlcommenter-style comment
``/*application='dbperf'*/`` (:data:`MARK`), placed inside the statement, before its ``;``.
PostgreSQL keeps, for each statement of a multi-statement batch, the text up to (not including)
its ``;``: a marker placed after a ``;`` would be attached to the following statement, or lost
after the last one, so it goes at the end of every statement.

The comment does not change ``queryid`` (comments are not part of the parse tree), so a statement
that pg_stat_statements already kept with an unmarked text (from a dbperf older than the marker)
keeps that text until it is deallocated or ``pg_stat_statements_reset()`` runs.

``is_own(text)`` is the one test for "this statement is dbperf's own": the statements collector,
the advisor and the report use it.
"""

from __future__ import annotations

from collections.abc import Iterable

MARK = "/*application='dbperf'*/"


def mark(sql: str) -> str:
    """``sql`` (one statement, with or without a trailing ``;``) with :data:`MARK` at its end,
    without the ``;``. Idempotent."""
    body = sql.strip().rstrip(";").rstrip()
    if body.endswith(MARK):
        return body
    # a "--" comment on the last line would swallow a marker appended to that line
    separator = "\n" if "--" in body.rsplit("\n", 1)[-1] else " "
    return body + separator + MARK


def batch(statements: Iterable[str]) -> str:
    """Several statements as one ``;``-separated batch, each carrying :data:`MARK`."""
    return ";\n".join(mark(s) for s in statements)


def is_own(query_text: str | None) -> bool:
    """True when ``query_text`` (e.g. ``pg_stat_statements.query``) is a statement dbperf sent."""
    return bool(query_text) and MARK in query_text


def sql_literal() -> str:
    """:data:`MARK` as an SQL string literal, for server-side matching."""
    return "'" + MARK.replace("'", "''") + "'"
