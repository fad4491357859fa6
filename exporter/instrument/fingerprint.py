"""SQL fingerprints: normalise a statement (literals, parameters and IN lists removed), name its
operation, and hash it into a short stable label value from a bounded table.

Normalisation runs a small SQL lexer (:mod:`.sqllex`), so nothing of a literal survives: escape
strings, doubled quotes, dollar quotes, nested comments. Statements that carry a secret (a role's
password, user-mapping options, pgcrypto calls ...) are redacted wholesale (:mod:`.redact`). Results
are cached by the raw text (ORMs send the same parameterised text again and again)."""

from __future__ import annotations

import hashlib
import re
import threading

from . import sqllex
from .redact import redact_secrets

OTHER = "other"

_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_VALUES_LIST = re.compile(r"(\(\s*\?(?:\s*,\s*\?)*\s*\))(?:\s*,\s*\(\s*\?(?:\s*,\s*\?)*\s*\))+")
_SPACE = re.compile(r"\s+")
_FIRST_WORD = re.compile(r"\s*\(*\s*([A-Za-z]+)")
_LAST_WORD = re.compile(r"(\w+)\s*$")

# Statements whose first keyword does not say what they do.
_OPERATIONS = {
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "COPY", "CALL", "BEGIN", "COMMIT",
    "ROLLBACK", "SAVEPOINT", "RELEASE", "SET", "SHOW", "CREATE", "ALTER", "DROP", "TRUNCATE",
    "GRANT", "REVOKE", "VACUUM", "ANALYZE", "EXPLAIN", "LOCK", "DO", "DECLARE", "FETCH", "CLOSE",
    "PREPARE", "EXECUTE", "DEALLOCATE", "LISTEN", "NOTIFY", "UNLISTEN", "DISCARD", "RESET",
    "VALUES", "TABLE", "REFRESH", "CLUSTER", "REINDEX", "COMMENT", "START", "END", "ABORT",
}
_WITH_BODY = re.compile(r"\)\s*(SELECT|INSERT|UPDATE|DELETE|MERGE)\b", re.I)
# After these keywords a '-' before a number is a sign (folded into the placeholder), not a minus.
_SIGN_AFTER = frozenset((
    "SELECT", "WHERE", "AND", "OR", "NOT", "ON", "WHEN", "THEN", "ELSE", "BY", "LIMIT", "OFFSET",
    "VALUES", "IN", "IS", "BETWEEN", "SET", "RETURN", "RETURNING", "HAVING", "LIKE", "ILIKE", "AS",
    "DEFAULT", "ARRAY", "INTERVAL", "FETCH", "TO", "FROM", "CASE", "ALL", "ANY", "SOME", "EXISTS",
))
_MAX_PASSES = 8


def _binary_minus(previous: str) -> bool:
    """A '-' after ``previous`` (the text so far) is a binary minus: it follows an operand."""
    text = previous.rstrip()
    if not text or not (text[-1].isalnum() or text[-1] in "_$)]?\""):
        return False
    word = _LAST_WORD.search(text)
    return not (word and word.group(1).upper() in _SIGN_AFTER)


def _lex(sql: str) -> tuple[str, bool]:
    """One pass: the text with literals and parameters as ``?``, comments as spaces; and whether a
    standard string holds a backslash (its extent then depends on standard_conforming_strings)."""
    out: list[str] = []
    append = out.append
    ambiguous = False
    for kind, start, end in sqllex.tokens(sql):
        if kind == "code":
            append(sql[start:end])
        elif kind in sqllex.LITERALS or kind == "param":
            if kind == "string" and not ambiguous:
                ambiguous = sqllex.ambiguous(sql, kind, start, end)
            append("?")
        elif kind == "comment":
            append(" ")
        elif kind == "minus":
            if _binary_minus("".join(out[-3:])):
                append("-")
        else:
            append(sql[start:end])
    return "".join(out), ambiguous


def normalise(sql: str) -> str:
    """The statement with comments, literals and parameters replaced by ``?``, IN and VALUES lists
    collapsed to one element, whitespace squeezed. Identifiers and keywords keep their case.

    A standard string holding a backslash is read both ways (with and without
    standard_conforming_strings): whatever is a literal in either reading is removed. Raises
    TypeError for anything but ``str``, nothing else."""
    text, ambiguous = _lex(sql)
    passes = 1
    while ambiguous:
        if passes >= _MAX_PASSES:  # each pass masks more of the text; give up on showing any of it
            return "?"
        sql = sqllex.both_readings_masked(sql)
        text, ambiguous = _lex(sql)
        passes += 1
    text = _SPACE.sub(" ", text).strip().rstrip(";").strip()
    text = _IN_LIST.sub("(?)", text)
    text = _VALUES_LIST.sub(r"\1", text)
    return text


def shown_text(sql: str) -> str:
    """The text dbperf shows for a statement: normalised, and redacted wholesale when it carries a
    secret (``ALTER ROLE <redacted: statement carries a secret>``)."""
    text = normalise(sql)
    redacted = redact_secrets(text)
    return text if redacted is None else redacted


def operation(normalised: str) -> str:
    """The statement's operation (``SELECT``, ``INSERT`` ...); ``WITH`` resolves to the main
    statement's verb when it can be seen; anything unknown is ``OTHER``."""
    match = _FIRST_WORD.match(normalised)
    if not match:
        return "OTHER"
    word = match.group(1).upper()
    if word == "WITH":
        bodies = _WITH_BODY.findall(normalised)
        return bodies[-1].upper() if bodies else "WITH"
    return word if word in _OPERATIONS else "OTHER"


def digest(normalised: str) -> str:
    """A short stable hash (12 hex digits) of a normalised statement."""
    return hashlib.blake2b(normalised.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


class Fingerprints:
    """Raw SQL -> (operation, fingerprint, shown text), with at most ``max_fingerprints``
    distinct fingerprints per process; statements past the cap share ``"other"``. A raw-text cache
    (bounded too) makes the repeat cost one dict lookup."""

    def __init__(self, max_fingerprints: int = 500, cache_size: int = 4096):
        if max_fingerprints < 1:
            raise ValueError(f"max_fingerprints must be at least 1, got {max_fingerprints}")
        self.max_fingerprints = max_fingerprints
        self.cache_size = cache_size
        self._known: dict[str, str] = {}  # fingerprint -> normalised text
        self._cache: dict[str, tuple[str, str, str]] = {}
        self._lock = threading.Lock()

    def lookup(self, sql: str) -> tuple[str, str, str]:
        found = self._cache.get(sql)
        if found is not None:
            return found
        text = shown_text(sql)
        fp = digest(text)
        with self._lock:
            if fp not in self._known:
                if len(self._known) >= self.max_fingerprints:
                    fp = OTHER
                else:
                    self._known[fp] = text
            result = (operation(text), fp, text)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[sql] = result
        return result

    def text(self, fingerprint: str) -> str | None:
        """The normalised statement behind a fingerprint (None for ``other`` or unknown)."""
        return self._known.get(fingerprint)

    def __len__(self) -> int:
        return len(self._known)
