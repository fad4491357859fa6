"""Route tags in SQL, in the sqlcommenter format: ``SELECT ... /*framework='fastapi',route='%2Forders%2F%7Bid%7D'*/``.

With ``Instrumentation(sql_comments=True)`` the psycopg cursor and the SQLAlchemy hooks append one
comment to each statement sent while an HTTP request is being served, naming the request's route
template (never its raw path), the framework and, when given, ``application=``. The server sees
it in ``pg_stat_activity.query`` (and the log), so the sampler can say which route the database's
time goes to. Keys are sorted; keys and values are URL-encoded (every character but letters,
digits and ``_.-~``), values then single-quoted, as sqlcommenter specifies: a value can hold no
quote, backslash, ``*/`` or newline, whatever the route's name.

The comment goes at the end of the statement, before a trailing ``;``, or on a line of its own
after a trailing ``--`` comment: the last thing in the text but ``;`` and blanks, where
sqlcommenter's readers look. A statement whose tagged text would be longer than PostgreSQL's
default ``track_activity_query_size`` (1024 bytes, what ``pg_stat_activity`` keeps of it) takes
the comment at its start instead, where a truncated text still shows it.

Statements left unchanged: outside a request; empty or comment-only texts; ``COPY``; texts that
already hold a ``/* */`` comment (sqlcommenter's rule: another commenter or an optimiser hint was
there first); texts whose statement end depends on ``standard_conforming_strings``.

``pg_stat_statements``' queryid is computed from the parse tree, without comments: tagged and
untagged executions of a statement share one queryid (checked on a real server by
tests/test_instrument_sqlcomment.py).

Imports the standard library only."""

from __future__ import annotations

import re
from urllib.parse import quote

from . import sqllex

_CACHE = 4096  # statement texts and (route, framework) pairs kept; cleared when full
_UNTAGGED = ()  # cached "leave this text alone"
_MAX_VALUE = 200  # characters of a developer-given value
# pg_stat_activity.query keeps track_activity_query_size - 1 bytes (1024 by default): a longer
# tagged text takes the comment at its start, where the sampler still reads it
SHOWN_BYTES = 1023
_WORD = re.compile(r"[A-Za-z_]+")


def encode(value: str) -> str:
    """A key or value URL-encoded: everything but ASCII letters, digits and ``_.-~`` as ``%XX`` (UTF-8)."""
    return quote(value, safe="")


def format_comment(tags: dict) -> str:
    """``/*k1='v1',k2='v2'*/`` from ``tags`` (empty values dropped, keys sorted); ``""`` when none."""
    items = sorted((encode(str(k)), encode(str(v))) for k, v in tags.items() if v)
    if not items:
        return ""
    return "/*" + ",".join(f"{k}='{v}'" for k, v in items) + "*/"


def _site(sql: str, backslash_quotes: bool):
    """(insertion index, separator) of ``sql`` in one reading of its strings, or None (untaggable)."""
    last = previous = None  # the last two tokens that are neither comments nor blanks
    line_comment_last = False
    for kind, start, end in sqllex.tokens(sql, backslash_quotes):
        if kind == sqllex.COMMENT:
            if sql.startswith("/*", start):
                return None  # a comment of another commenter, or a hint: sqlcommenter leaves it alone
            line_comment_last = True
        elif kind != sqllex.CODE or sql[start:end].strip():
            previous, last = last, (kind, start, end)
            line_comment_last = False
    if last is None:
        return None
    if line_comment_last:  # after it, on a line of its own: the tag stays the last thing in the text
        return len(sql.rstrip()), "\n"
    kind, start, end = last
    text = sql[start:end].rstrip()
    if kind == sqllex.CODE and text.endswith(";"):
        body = text[:-1].rstrip()
        if body:
            return start + len(body), " "
        if previous is None:
            return None  # nothing but ";"
        # the last code is just " ;": the comment goes after the token before it, on a new line
        # when a -- comment is in between (it would swallow the tag)
        return start, "\n" if "--" in sql[previous[2]:start] else " "
    return start + len(text), " "


def _first_word(sql: str) -> str:
    for kind, start, end in sqllex.tokens(sql):
        if kind == sqllex.CODE and sql[start:end].strip():
            word = _WORD.match(sql, start + len(sql[start:end]) - len(sql[start:end].lstrip()))
            return word.group().upper() if word else ""
        if kind != sqllex.COMMENT:
            return ""
    return ""


def split(sql: str):
    """(head, tail, length in bytes): ``head + comment + tail`` is ``sql`` tagged at its end; None
    when ``sql`` is left unchanged."""
    site = _site(sql, False)
    if site is None or site != _site(sql, True):  # unchanged unless both readings agree
        return None
    if _first_word(sql) == "COPY":
        return None
    point, separator = site
    return sql[:point] + separator, sql[point:], len(sql.encode(errors="replace"))


class SqlComments:
    """The tags of one Instrumentation: the comment of each (route, framework), percent-doubled
    for drivers that read ``%`` as a placeholder, and where each statement text takes it."""

    __slots__ = ("application", "_comments", "_sites")

    def __init__(self, application: str | None = None):
        if application is not None:
            if not isinstance(application, str) or not application.strip():
                raise ValueError("application must be a non-empty string")
            if len(application) > _MAX_VALUE or not application.isprintable():
                raise ValueError(f"application must be at most {_MAX_VALUE} printable characters")
        self.application = application
        self._comments: dict = {}
        self._sites: dict = {}

    def comment(self, route: str, framework: str | None) -> tuple[str, str]:
        """(comment, comment with ``%`` doubled) for a request to ``route``."""
        key = (route, framework)
        found = self._comments.get(key)
        if found is None:
            text = format_comment({"route": route, "framework": framework, "application": self.application})
            if len(self._comments) >= _CACHE:
                self._comments.clear()
            found = self._comments[key] = (text, text.replace("%", "%%"))
        return found

    def tag(self, sql: str, route: str, framework: str | None, percent: bool) -> str:
        """``sql`` with the comment of ``route`` (``percent``: doubled ``%``, for a statement the
        driver formats with parameters)."""
        sites = self._sites
        site = sites.get(sql)
        if site is None:
            site = split(sql) or _UNTAGGED
            if len(sites) >= _CACHE:
                sites.clear()
            sites[sql] = site
        if not site:
            return sql
        comment = (self._comments.get((route, framework)) or self.comment(route, framework))[percent]
        if site[2] + len(comment) > SHOWN_BYTES:  # the end would be cut off in pg_stat_activity
            return comment + " " + sql
        return site[0] + comment + site[1]
