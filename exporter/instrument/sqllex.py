"""A small lexer for PostgreSQL's SQL: it finds where each literal, comment, parameter and quoted
identifier starts and ends, so the normaliser and the secret redaction never mistake the inside of
a literal for code (``E'it\\'s'``, ``'a''b'``, ``$tag$...$tag$``, ``/* nested /* */ */``).

It follows PostgreSQL's scanner (src/backend/parser/scan.l) for token boundaries, not for token
values: standard strings ``'...'`` (``''`` is a quote), escape strings ``E'...'`` (backslash
escapes), ``B''``/``X''``/``N''``/``U&''`` strings, dollar quotes ``$$...$$`` and ``$tag$...$tag$``,
quoted identifiers ``"..."`` and ``U&"..."``, ``--`` and nested ``/* */`` comments, numbers
(decimal, ``1.5e3``, ``0x1F``, ``0o17``, ``0b101``, ``1_000``), parameters (``$1``, ``%s``,
``%(name)s``, ``:name``). Anything unterminated runs to the end of the text. It never raises on a
``str``; other types raise TypeError.

``backslash_quotes=True`` lexes as a session with ``standard_conforming_strings = off`` would,
where a backslash escapes a quote in a standard string too. Used with and without it, callers can
cover both readings of a text whose standard strings hold backslashes.

Imports the standard library only (the application library and the daemon both use it)."""

from __future__ import annotations

import re

# Token kinds. CODE is a run of identifiers, keywords, whitespace and safe punctuation (kept as is
# by the normaliser); the literal kinds are replaced by a placeholder.
CODE = "code"
STRING = "string"        # '...', N'...', U&'...', B'...', X'...' (and ''-doubling)
ESTRING = "estring"      # E'...' (backslash escapes)
DOLLAR = "dollar"        # $$...$$, $tag$...$tag$
NUMBER = "number"
MINUS = "minus"          # a '-' right before a number: unary or binary, the caller decides
PARAM = "param"          # $1, %s, %(name)s, :name
COMMENT = "comment"      # -- ... and /* ... */ (nested)
QUOTED = "quoted"        # "identifier", U&"identifier"
OTHER = "other"          # any other single character or '::'
LITERALS = frozenset((STRING, ESTRING, DOLLAR, NUMBER))

# plain greedy loops, not possessive ones (*+, ++): Python before 3.11.5 matches possessive
# quantifiers over alternations wrongly; these loops never need to give anything back anyway
_STD_BODY = r"(?:[^']|'')*(?:'|\Z)"
_BSQ_BODY = r"(?:[^'\\]|\\.|'')*(?:'|\\?\Z)"  # backslash escapes; a trailing lone backslash too


def _pattern(std_body: str) -> re.Pattern:
    return re.compile(
        # identifiers (not a string prefix right before its quote), whitespace, safe punctuation
        r"(?P<code>(?:\s+|(?![EeBbXxNn]'|[Uu]&['\"])[^\W\d][\w$]*|[(),;\[\]*=<>+|&^~!@#?]|\.(?!\d))+)"
        rf"|(?P<string>(?:[BbXxNn]|[Uu]&)?'{std_body})"
        rf"|(?P<estring>[Ee]'{_BSQ_BODY})"
        r"|(?P<dollar>\$(?P<tag>(?:[^\W\d]\w*)?)\$(?:.*?\$(?P=tag)\$|.*))"
        r"|(?P<number>(?:0[xXoObB]\w*|(?:\d[\d_]*(?:\.(?!\.)[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?)[\w$]*)"
        r"|(?P<minus>-(?=\.?\d))"
        r"|(?P<line>--[^\n]*)"
        r"|(?P<block>/\*)"
        r"|(?P<param>\$\d+|%\([^)]*\)s|%s(?!\w)|:[^\W\d]\w*)"
        r"|(?P<quoted>(?:[Uu]&)?\"(?:[^\"]|\"\")*(?:\"|\Z))"
        r"|(?P<other>::|.)",
        re.S)


_TOKEN = _pattern(_STD_BODY)
_TOKEN_BSQ = _pattern(_BSQ_BODY)
_NEST = re.compile(r"/\*|\*/")


def _block_end(sql: str, pos: int) -> int:
    """End of the block comment whose ``/*`` ends at ``pos`` (comments nest, as in PostgreSQL)."""
    depth = 1
    search = _NEST.search
    while True:
        found = search(sql, pos)
        if found is None:
            return len(sql)
        pos = found.end()
        depth += 1 if found.group() == "/*" else -1
        if not depth:
            return pos


def tokens(sql: str, backslash_quotes: bool = False):
    """Yield ``(kind, start, end)`` for every token of ``sql``, covering it without gaps."""
    if not isinstance(sql, str):
        raise TypeError(f"SQL text must be str, not {type(sql).__name__}")
    match = (_TOKEN_BSQ if backslash_quotes else _TOKEN).match
    pos, n = 0, len(sql)
    while pos < n:
        m = match(sql, pos)
        assert m is not None  # the token pattern matches at every position (its last branch: any character)
        kind, end = m.lastgroup, m.end()
        if kind == "line":
            kind = COMMENT
        elif kind == "block":
            kind, end = COMMENT, _block_end(sql, end)
        yield kind, pos, end
        pos = end


def ambiguous(sql: str, kind: str, start: int, end: int) -> bool:
    """True for a standard string holding a backslash: its extent depends on
    standard_conforming_strings."""
    return kind == STRING and sql[start] in "'Nn" and "\\" in sql[start:end]


def both_readings_masked(sql: str, placeholder: str = "?") -> str:
    """``sql`` with every span that is a literal in either reading of standard_conforming_strings
    replaced by `` ? ``, and every other span that is a comment in either reading by a space: what
    is left is code in both readings, kept for lexing again."""
    spans = sorted((start, end, kind in LITERALS)
                   for backslash_quotes in (False, True)
                   for kind, start, end in tokens(sql, backslash_quotes) if kind in LITERALS or kind == COMMENT)
    merged: list[list] = []
    for start, end, literal in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            merged[-1][2] = merged[-1][2] or literal
        else:
            merged.append([start, end, literal])
    out, pos = [], 0
    for start, end, literal in merged:
        out.append(sql[pos:start])
        out.append(f" {placeholder} " if literal else " ")
        pos = end
    out.append(sql[pos:])
    return "".join(out)


def string_value(sql: str, kind: str, start: int, end: int) -> str:
    """The approximate content of a literal token (quotes and escapes undone), for inspection."""
    text = sql[start:end]
    if kind == DOLLAR:
        tag_end = text.index("$", 1) + 1
        tag = text[:tag_end]
        body = text[tag_end:]
        return body[:-len(tag)] if body.endswith(tag) and len(body) >= len(tag) else body
    if kind in (STRING, ESTRING):
        body = text[text.index("'") + 1:]
        if body.endswith("'"):
            body = body[:-1]
        if kind == ESTRING:
            body = re.sub(r"\\(.)", r"\1", body, flags=re.S)
        return body.replace("''", "'")
    return text
