"""SQL fingerprints: normalise a statement (literals, parameters and IN lists removed), name its
operation, and hash it into a short stable label value from a bounded table.

Normalisation is a handful of regular expressions, not a parser: it must cost microseconds per
statement, and results are cached by the raw text (ORMs send the same parameterised text again and
again)."""

from __future__ import annotations

import hashlib
import re
import threading

OTHER = "other"

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_STRINGS = re.compile(r"(?:[EeBbXxNn]|[Uu]&)?'(?:[^']|'')*'")
_DOLLAR = re.compile(r"\$((?:[A-Za-z_]\w*)?)\$.*?\$\1\$", re.S)
_PARAMS = re.compile(r"%\(\w+\)s|%s|\$\d+|(?<![\w:]):\w+|\?")
_NUMBERS = re.compile(r"(?<![\w$.])-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)(?![\w.])")
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_VALUES_LIST = re.compile(r"(\(\s*\?(?:\s*,\s*\?)*\s*\))(?:\s*,\s*\(\s*\?(?:\s*,\s*\?)*\s*\))+")
_SPACE = re.compile(r"\s+")
_FIRST_WORD = re.compile(r"\s*\(*\s*([A-Za-z]+)")

# Statements whose first keyword does not say what they do.
_OPERATIONS = {
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "COPY", "CALL", "BEGIN", "COMMIT",
    "ROLLBACK", "SAVEPOINT", "RELEASE", "SET", "SHOW", "CREATE", "ALTER", "DROP", "TRUNCATE",
    "GRANT", "REVOKE", "VACUUM", "ANALYZE", "EXPLAIN", "LOCK", "DO", "DECLARE", "FETCH", "CLOSE",
    "PREPARE", "EXECUTE", "DEALLOCATE", "LISTEN", "NOTIFY", "UNLISTEN", "DISCARD", "RESET",
    "VALUES", "TABLE", "REFRESH", "CLUSTER", "REINDEX", "COMMENT", "START", "END", "ABORT",
}
_WITH_BODY = re.compile(r"\)\s*(SELECT|INSERT|UPDATE|DELETE|MERGE)\b", re.I)


def normalise(sql: str) -> str:
    """The statement with comments, literals and parameters replaced by ``?``, IN and VALUES lists
    collapsed to one element, whitespace squeezed. Identifiers and keywords keep their case."""
    text = _COMMENTS.sub(" ", sql)
    text = _DOLLAR.sub("?", text)
    text = _STRINGS.sub("?", text)
    text = _PARAMS.sub("?", text)
    text = _NUMBERS.sub("?", text)
    text = _SPACE.sub(" ", text).strip().rstrip(";").strip()
    text = _IN_LIST.sub("(?)", text)
    text = _VALUES_LIST.sub(r"\1", text)
    return text


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
    return hashlib.blake2b(normalised.encode(), digest_size=6).hexdigest()


class Fingerprints:
    """Raw SQL -> (operation, fingerprint, normalised text), with at most ``max_fingerprints``
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
        text = normalise(sql)
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
