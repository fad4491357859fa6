"""Statements that carry a secret, redacted wholesale wherever dbperf shows SQL text.

    >>> redact_secrets("ALTER ROLE hog PASSWORD 'LeakMe123!'")
    'ALTER ROLE <redacted: statement carries a secret>'
    >>> redact_secrets("SELECT * FROM t WHERE a = $1") is None
    True

``redact_secrets(text) -> str | None``: the redacted form (the statement's leading keywords, then
:data:`REDACTED`) when ``text`` carries a secret, else None. ``redact(text) -> str``: the redacted
form or ``text`` itself. ``secret_reason(text) -> str | None``: why (a fixed phrase such as
``"role password"``, never text of the statement). All three raise TypeError for anything but
``str`` and nothing else; cost is linear in the text (a cheap pre-check makes ordinary statements
one regular-expression search).

A text carries a secret when one of its statements (split at ``;`` outside literals) is, read with
the SQL lexer (:mod:`.sqllex`; comments ignored, both readings of standard_conforming_strings):

- ``CREATE|ALTER USER|ROLE|GROUP ... PASSWORD ...``, or ``PASSWORD`` followed by a literal or a
  parameter anywhere;
- ``CREATE|ALTER USER MAPPING ... OPTIONS``, ``CREATE|ALTER SERVER ... OPTIONS``,
  ``CREATE|ALTER SUBSCRIPTION ... CONNECTION``;
- ``SET`` (also ``ALTER SYSTEM|ROLE|DATABASE ... SET``; not ``UPDATE ... SET``) of a setting
  whose name looks secret (password, secret, token, credential, passphrase, api_key,
  private_key, conninfo ...), or ``set_config(name, ...)`` with such a name or a parameter as
  the name;
- a call of pgcrypto's ``pgp_sym_*``, ``pgp_pub_*``, ``crypt``, ``encrypt``/``decrypt``(``_iv``),
  ``hmac``, or of any ``dblink*`` function;
- a literal holding ``password=`` (a connection string) or a URL with a password
  (``postgresql://u:pw@h``), or a literal whose content is SQL that carries a secret (a ``DO``
  block, ``EXECUTE '...'``, ``dblink_exec``), looked into two levels deep;
- a string literal beside an identifier whose name looks secret (``WHERE api_token = 'abc'``,
  ``INSERT INTO users (name, password) VALUES ('bob', 'x')``).

Normalised text (literals already replaced by ``?`` or ``$n``, as in pg_stat_statements) keeps the
first four rules; the rest matter for raw text (pg_stat_activity, ``advise --explain``).
Imports the standard library only."""

from __future__ import annotations

import re

from . import sqllex

REDACTED = "<redacted: statement carries a secret>"

# Every rule needs one of these words somewhere in the text (literals included): a few substring
# searches of the lower-cased text settle ordinary statements (a regular expression is 10x slower).
_TRIGGERS = ("passw", "passph", "pwd", "pgp_", "crypt", "dblink", "hmac", "mapping", "server", "subscription",
             "set_config", "secret", "token", "credential", "api_key", "apikey", "private", "conninfo", "://",
             "u&")
_SECRET_NAME = re.compile(r"passw|pwd|secret|token|credential|passphrase|api_?key|private_?key|conninfo", re.I)
_CONN_PASSWORD = re.compile(r"\b(?:password|passwd|pwd)\s*=|://[^/\s@:]*:[^/\s@]*@", re.I)
_SECRET_FUNCTIONS = frozenset((
    "PGP_SYM_ENCRYPT", "PGP_SYM_ENCRYPT_BYTEA", "PGP_SYM_DECRYPT", "PGP_SYM_DECRYPT_BYTEA",
    "PGP_PUB_ENCRYPT", "PGP_PUB_ENCRYPT_BYTEA", "PGP_PUB_DECRYPT", "PGP_PUB_DECRYPT_BYTEA",
    "CRYPT", "ENCRYPT", "ENCRYPT_IV", "DECRYPT", "DECRYPT_IV", "HMAC",
))
_HEAD_WORDS = frozenset((
    "CREATE", "ALTER", "DROP", "OR", "REPLACE", "USER", "ROLE", "GROUP", "MAPPING", "SERVER",
    "SUBSCRIPTION", "SYSTEM", "DATABASE", "SET", "RESET", "SESSION", "LOCAL", "SELECT", "INSERT",
    "UPDATE", "DELETE", "MERGE", "DO", "WITH", "CALL", "EXPLAIN", "VALUES", "COPY", "FOREIGN", "BEGIN",
))
_MAX_HEAD = 4
_MAX_DEPTH = 2
_ITEM = re.compile(r"(?P<w>[^\W\d][\w$]*)|(?P<p>[(),;.=?])|\s+|.", re.S)
_UESCAPE = re.compile(r"\\(?:\+([0-9A-Fa-f]{6})|([0-9A-Fa-f]{4}))")


def _quoted_name(text: str) -> str:
    """The name inside a quoted identifier token (``"a""b"``, ``U&"d\\0061t"``)."""
    unicode = text[:1] in "Uu"
    body = text[text.index('"') + 1:]
    if body.endswith('"'):
        body = body[:-1]
    body = body.replace('""', '"')
    if unicode:
        def char(m):
            code = int(m.group(1) or m.group(2), 16)
            return chr(code) if code < 0x110000 else ""
        body = _UESCAPE.sub(char, body)
    return body


def _items(sql: str, backslash_quotes: bool) -> list[tuple]:
    """The statement as items: ("w", WORD), ("q", NAME) quoted, ("lit", content, kind),
    ("param", ""), ("p", punctuation); comments and whitespace dropped."""
    items: list[tuple] = []
    add = items.append
    for kind, start, end in sqllex.tokens(sql, backslash_quotes):
        if kind == sqllex.CODE:
            for m in _ITEM.finditer(sql, start, end):
                group = m.lastgroup
                if group == "w":
                    add(("w", m.group().upper()))
                elif group == "p":
                    add(("param", "") if m.group() == "?" else ("p", m.group()))
        elif kind in sqllex.LITERALS:
            add(("lit", "" if kind == sqllex.NUMBER else sqllex.string_value(sql, kind, start, end), kind))
        elif kind == sqllex.PARAM:
            add(("param", ""))
        elif kind == sqllex.QUOTED:
            add(("q", _quoted_name(sql[start:end]).upper()))
        elif kind == sqllex.OTHER:
            add(("p", sql[start:end]))
    return items


def _setting_name(items: list[tuple], i: int) -> str:
    """The (dotted) setting name starting at items[i], after SESSION/LOCAL."""
    while i < len(items) and items[i][:2] in (("w", "SESSION"), ("w", "LOCAL")):
        i += 1
    parts = []
    while i < len(items) and (items[i][0] in ("w", "q") or items[i][:2] == ("p", ".")):
        parts.append(items[i][1])
        i += 1
    return "".join(parts)


def _statement_reason(items: list[tuple], depth: int) -> str | None:
    n = len(items)
    after_update = False
    secret_named = has_string = False
    for i, item in enumerate(items):
        kind, value = item[0], item[1]
        nxt = items[i + 1] if i + 1 < n else ("", "")
        if kind == "w":
            if value in ("CREATE", "ALTER") and nxt[0] == "w":
                rest = {x[1] for x in items[i + 2:] if x[0] == "w"}
                if nxt[1] == "USER" and i + 2 < n and items[i + 2][:2] == ("w", "MAPPING"):
                    if "OPTIONS" in rest:
                        return "user mapping options"
                elif nxt[1] in ("USER", "ROLE", "GROUP") and "PASSWORD" in rest:
                    return "role password"
                elif nxt[1] == "SERVER" and "OPTIONS" in rest:
                    return "server options"
                elif nxt[1] == "SUBSCRIPTION" and "CONNECTION" in rest:
                    return "subscription connection"
            elif value == "PASSWORD" and nxt[0] in ("lit", "param"):
                return "password"
            elif value == "UPDATE":
                after_update = True
            elif value == "SET" and not after_update and _SECRET_NAME.search(_setting_name(items, i + 1)):
                return "secret setting"
        if kind in ("w", "q"):
            if nxt[:2] == ("p", "("):
                if value in _SECRET_FUNCTIONS or value.startswith("DBLINK"):
                    return f"function {value.lower()}"
                if value == "SET_CONFIG":
                    arg = items[i + 2] if i + 2 < n else ("param", "")
                    if arg[0] == "param" or (arg[0] == "lit" and _SECRET_NAME.search(arg[1])):
                        return "secret setting"
            if not secret_named and _SECRET_NAME.search(value):
                secret_named = True
        elif kind == "lit":
            if _CONN_PASSWORD.search(value):
                return "password in a connection string"
            if depth < _MAX_DEPTH and _may_carry(value):
                inner = _reason(value, depth + 1)
                if inner:
                    return inner
            if item[2] != sqllex.NUMBER:
                has_string = True
    if secret_named and has_string:
        return "literal beside a secret-named identifier"
    return None


def _split(items: list[tuple]) -> list[list[tuple]]:
    statements: list[list[tuple]] = []
    current: list[tuple] = []
    for item in items:
        if item == ("p", ";"):
            statements.append(current)
            current = []
        else:
            current.append(item)
    statements.append(current)
    return statements


def _may_carry(text: str) -> bool:
    low = text.lower()
    return any(word in low for word in _TRIGGERS)


def _reason(text: str, depth: int) -> str | None:
    if not _may_carry(text):
        return None
    readings = [False]
    if any(sqllex.ambiguous(text, *token) for token in sqllex.tokens(text)):
        readings.append(True)  # standard_conforming_strings off: backslashes escape quotes too
    for backslash_quotes in readings:
        for statement in _split(_items(text, backslash_quotes)):
            reason = _statement_reason(statement, depth)
            if reason:
                return reason
    return None


def _check(text) -> None:
    if not isinstance(text, str):
        raise TypeError(f"SQL text must be str, not {type(text).__name__}")


def secret_reason(text: str) -> str | None:
    """Why ``text`` carries a secret (a fixed phrase), or None."""
    _check(text)
    return _reason(text, 0)


def redact_secrets(text: str) -> str | None:
    """``"<leading keywords> <redacted: statement carries a secret>"`` when ``text`` carries a
    secret (see the module docstring), else None."""
    _check(text)
    if _reason(text, 0) is None:
        return None
    head: list[str] = []
    for item in _items(text, False):
        if item[0] != "w" or item[1] not in _HEAD_WORDS or len(head) == _MAX_HEAD:
            break
        head.append(item[1])
    return " ".join(head + [REDACTED])


def redact(text: str) -> str:
    """``text``, or its redacted form when it carries a secret."""
    redacted = redact_secrets(text)
    return text if redacted is None else redacted


# -- literals as placeholders of their type and shape -------------------------------------------------
NUMBER_PLACEHOLDER = "?"
ELLIPSIS = "\u2026"
_EDGE_WILDCARDS = re.compile(r"\A[%_]{0,3}")
_MAX_PASSES = 8


def literal_shape(value: str, number: bool = False) -> str:
    """The placeholder of one literal: ``?`` for a number; for a string ``'…'`` keeping its LIKE
    wildcards at either edge (``'%…'``: a leading wildcard stays visible) and ``''`` for an
    empty one. Nothing else of the literal is kept."""
    if number:
        return NUMBER_PLACEHOLDER
    if not value:
        return "''"
    lead = _EDGE_WILDCARDS.match(value).group()
    if len(lead) == len(value):
        return f"'{lead}'"
    trail = _EDGE_WILDCARDS.match(value[::-1]).group()[::-1]
    return f"'{lead}{ELLIPSIS}{trail}'"


# the sqlcommenter keys a redacted text may keep (their values come from bounded sets: route
# templates, framework and application names); a comment with any other key is masked whole
TAG_KEYS = frozenset({"route", "framework", "application", "controller", "action", "db_driver"})


def _placeholders(sql: str) -> tuple[str, bool]:
    from .sqltags import tags

    out: list[str] = []
    ambiguous = False
    for kind, start, end in sqllex.tokens(sql):
        if kind in sqllex.LITERALS:
            ambiguous = ambiguous or sqllex.ambiguous(sql, kind, start, end)
            out.append(literal_shape(sqllex.string_value(sql, kind, start, end), kind == sqllex.NUMBER))
        elif kind == sqllex.COMMENT:
            comment = sql[start:end]
            found = tags(comment) if comment.startswith("/*") else {}
            kept = found and set(found) <= TAG_KEYS  # a tag comment of known keys only: anything else may hold data
            out.append(comment if kept else "/*" + ELLIPSIS + "*/")
        else:
            out.append(sql[start:end])
    return "".join(out), ambiguous


def redact_literals(text: str) -> str:
    """``text`` as dbperf shows a raw statement (a pg_stat_activity sample): redacted wholesale when
    it carries a secret (:func:`redact_secrets`), else with every literal replaced by
    :func:`literal_shape` (``name LIKE '%…'``, ``OFFSET ?``, ``IN (?, ?, ?)``: lists keep their
    length), every comment but a sqlcommenter tag comment by ``/*…*/``; identifiers, keywords,
    parameters and casts (``'…'::date``) stay. A standard string holding a backslash (whose extent
    depends on standard_conforming_strings) makes whatever is a literal in either reading one
    placeholder. An unterminated literal (a text cut by track_activity_query_size) runs to the end."""
    redacted = redact_secrets(text)
    if redacted is not None:
        return redacted
    shown, ambiguous = _placeholders(text)
    passes = 1
    while ambiguous:
        if passes >= _MAX_PASSES:
            return "'" + ELLIPSIS + "'"
        text = sqllex.both_readings_masked(text, "'" + ELLIPSIS + "'")
        shown, ambiguous = _placeholders(text)
        passes += 1
    return shown
