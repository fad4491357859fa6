"""sqlcommenter tags in SQL text: ``SELECT ... /*route='%2Forders%2F%7Bid%7D',framework='fastapi'*/``.

``tags(sql) -> dict`` reads the tag comment at the end of the text (where sqlcommenter puts it,
after trailing spaces and ``;``) or, failing that, at its start (where a text truncated by
PostgreSQL still has it); ``route(sql) -> str | None`` is the decoded ``route`` tag. Keys and
values are URL-encoded, each value in single quotes (sqlcommenter escapes a quote in a value as
``\\'``; a raw one ends the value). Pure, standard library only, never raises on a ``str``.

Hostile input gives no tags, never a long scan or a strange value: a comment over
:data:`MAX_COMMENT` characters, an unterminated comment, a pair without quotes, bad
percent-encoding, a decoded value over :data:`MAX_VALUE` characters or holding a control
character: the whole comment is ignored (a half-read tag would be a wrong label)."""

from __future__ import annotations

import re

MAX_COMMENT = 2048   # characters between /* and */
MAX_VALUE = 200      # characters of a decoded key or value
MAX_TAGS = 32

_PAIR = re.compile(r"\s*([A-Za-z0-9_.~%-]+)='((?:[^'\\]|\\.)*)'\s*(,|\Z)", re.S)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _decode(text: str) -> str | None:
    from urllib.parse import unquote

    if _BAD_PERCENT.search(text):
        return None
    try:
        value = unquote(text.replace("\\'", "'"), errors="strict")
    except UnicodeDecodeError:
        return None
    if len(value) > MAX_VALUE or _CONTROL.search(value):
        return None
    return value


def _pairs(body: str) -> dict:
    if not body.strip() or len(body) > MAX_COMMENT or "/*" in body:
        return {}
    out: dict = {}
    pos = 0
    while pos < len(body):
        m = _PAIR.match(body, pos)
        if m is None or len(out) >= MAX_TAGS:
            return {}
        key, value = _decode(m.group(1)), _decode(m.group(2))
        if not key or value is None:
            return {}
        out[key] = value
        pos = m.end()
        if m.group(3) == "," and pos >= len(body):
            return {}  # a trailing comma: not sqlcommenter's format
    return out


def tags(sql: str) -> dict:
    """The sqlcommenter tags of ``sql`` (``{}`` when it has none, or a malformed comment)."""
    if not isinstance(sql, str):
        raise TypeError(f"SQL text must be str, not {type(sql).__name__}")
    end = sql.rstrip().rstrip(";").rstrip()
    if end.endswith("*/"):
        start = end.rfind("/*", max(0, len(end) - MAX_COMMENT - 4))
        if start >= 0:
            found = _pairs(end[start + 2:-2])
            if found:
                return found
    head = sql.lstrip()
    if head.startswith("/*"):
        stop = head.find("*/", 2, MAX_COMMENT + 4)
        if stop > 0:
            return _pairs(head[2:stop])
    return {}


def route(sql: str) -> str | None:
    """The ``route`` tag of ``sql``, decoded; None when there is none."""
    return tags(sql).get("route") or None
