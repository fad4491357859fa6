"""``log_line_prefix`` as a regular expression, for the stderr format.

:func:`compile_prefix` turns a prefix such as ``'%m [%p] %q%u@%d '`` into a pattern whose named
groups are the fields an :class:`~exporter.serverlog.records.Entry` takes, followed by the severity
(``LOG:  ``). ``%q`` makes the rest optional (processes without a session write nothing after it).
Padding (``%-10u``) is accepted. A free-text field (user, database, application, host ...) runs
up to the literal character that follows it in the prefix (``%u@%d `` : the user up to ``@``, the
database up to the space), so matching never backtracks; a name holding that character makes the
line unreadable (counted as a parse error). The pattern is matched against the line's first
:data:`PREFIX_WINDOW` characters only."""

from __future__ import annotations

import re

PREFIX_WINDOW = 1024

_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [^\s\]]+)?"
# escape -> (group name or None, pattern)
ESCAPES = {
    "a": ("application", None),
    "u": ("user", None),
    "d": ("database", None),
    "r": ("client", r"[^\s(]*(?:\(\d+\))?"),
    "h": ("client", None),
    "L": (None, None),
    "b": ("backend_type", None),
    "p": ("pid", r"\d+"),
    "P": (None, r"\d*"),
    "t": ("time", _TIME),
    "m": ("time", _TIME),
    "n": ("time", r"\d+(?:\.\d+)?"),
    "i": (None, None),
    "e": ("sqlstate", r"[0-9A-Z]{5}"),
    "c": ("session", r"[0-9a-f]+\.[0-9a-f]+"),
    "l": (None, r"\d+"),
    "s": (None, _TIME),
    "v": (None, None),
    "x": (None, r"\d+"),
    "Q": ("query_id", r"-?\d+"),
}
SEVERITIES = ("DEBUG5", "DEBUG4", "DEBUG3", "DEBUG2", "DEBUG1", "DEBUG", "LOG", "INFO", "NOTICE", "WARNING",
              "ERROR", "FATAL", "PANIC", "DETAIL", "HINT", "QUERY", "CONTEXT", "STATEMENT", "LOCATION")
_SEVERITY = r"(?P<severity>" + "|".join(SEVERITIES) + r"):  "
_ESCAPE = re.compile(r"%(-?\d+)?(.)")


class PrefixError(ValueError):
    """A ``log_line_prefix`` dbperf cannot read (the reason names the escape)."""


def compile_prefix(prefix: str) -> re.Pattern:
    out, used, optional, pos = [], set(), False, 0
    for m in _ESCAPE.finditer(prefix):
        out.append(re.escape(prefix[pos:m.start()]))
        pos = m.end()
        pad, code = m.group(1), m.group(2)
        if code == "%":
            out.append("%")
            continue
        if code == "q":
            if not optional:
                out.append("(?:")
                optional = True
            continue
        if code not in ESCAPES:
            raise PrefixError(f"unknown escape %{code} in log_line_prefix")
        name, pattern = ESCAPES[code]
        if pattern is None:  # free text: up to the literal character that follows it in the prefix
            follows = prefix[m.end():m.end() + 1]
            pattern = rf"[^{re.escape(follows)}\n]*" if follows and follows != "%" else r"\S*"
        if pad:
            pattern = rf"\s*{pattern}\s*"
        if name and name not in used:
            used.add(name)
            out.append(f"(?P<{name}>{pattern})")
        else:
            out.append(f"(?:{pattern})")
    out.append(re.escape(prefix[pos:]))
    if optional:
        out.append(")??")
    return re.compile("".join(out) + _SEVERITY)
