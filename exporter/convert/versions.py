"""postgres_exporter's ``runonserver``, a range of its semver reading of the server's version
(blang/semver's syntax: ``>=10.0.0 <14.0.0 || >=16.0.0``, ``=9.6.x``), as half-open ranges
``[min_version, max_version)`` of ``server_version_num``, the ranges dbperf's collector files use.

postgres_exporter reads ``PostgreSQL 16.2 ...`` as the semver 16.2.0 and ``9.6.24`` as 9.6.24, so
a server version is M.m.0 from 10 on (``server_version_num`` M*10000+m) and A.B.C before
(A*10000+B*100+C). A bound between two server versions (``>=13.1.5``) is rounded to the next
server version, which is exactly what the comparison means for real servers.

Syntax, as blang/semver's ``ParseRange``: comparisons ``<``, ``<=``, ``>``, ``>=``, ``=``/``==``
or none (equal), ``!``/``!=``, each with a full ``MAJOR.MINOR.PATCH`` version (a ``-prerelease``
sorts just below its release, ``+build`` is ignored) or a wildcard ``M.x``, ``M.x.x``, ``M.m.x``;
space-separated comparisons all hold (AND), ``||`` separates alternatives (OR). A space after an
operator is allowed (``>= 10.0.0``).
"""

from __future__ import annotations

import re

MAX_TEXT = 500  # a longer runonserver is refused, not parsed
_VERSION = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
_WILDCARD = re.compile(r"(0|[1-9][0-9]*)\.(?:x(?:\.x)?|(0|[1-9][0-9]*)\.x)")
_OPERATORS = {"": "=", "=": "=", "==": "=", ">": ">", ">=": ">=", "<": "<", "<=": "<=", "!": "!=", "!=": "!="}


class RangeError(ValueError):
    """A ``runonserver`` that blang/semver would not parse; ``str()`` says why."""


def first_at_least(major: int, minor: int, patch: int) -> int:
    """The smallest ``server_version_num`` whose semver (as postgres_exporter reads it) is at
    least ``major.minor.patch``."""
    if major >= 10:
        if minor > 9999:
            return first_at_least(major + 1, 0, 0)
        return major * 10000 + minor + (1 if patch > 0 else 0)
    if minor > 99:
        return first_at_least(major + 1, 0, 0)
    if patch > 99:
        return first_at_least(major, minor + 1, 0)
    return major * 10000 + minor * 100 + patch


def first_above(major: int, minor: int, patch: int) -> int:
    """The smallest ``server_version_num`` whose semver is above ``major.minor.patch``."""
    if major >= 10:
        return first_at_least(major, minor + 1, 0)
    return first_at_least(major, minor, patch + 1)


def _bounds(version: str) -> tuple[int, int]:
    """``(first server >= version, first server > version)``; for a wildcard, the first server
    of the wildcard's span and the first after it."""
    wildcard = _WILDCARD.fullmatch(version)
    if wildcard:
        major = int(wildcard.group(1))
        if wildcard.group(2) is None:  # M.x, M.x.x
            return first_at_least(major, 0, 0), first_at_least(major + 1, 0, 0)
        minor = int(wildcard.group(2))
        return first_at_least(major, minor, 0), first_at_least(major, minor + 1, 0)
    match = _VERSION.fullmatch(version)
    if not match:
        raise RangeError(f"{version!r} is not a version (MAJOR.MINOR.PATCH, e.g. 13.0.0, or a wildcard 13.x)")
    major, minor, patch = (int(match.group(i)) for i in (1, 2, 3))
    if match.group(4):  # a prerelease sorts just below its release, and no server has one
        low = first_at_least(major, minor, patch)
        return low, low
    return first_at_least(major, minor, patch), first_above(major, minor, patch)


def _comparison(token: str) -> list[tuple[int, int | None]]:
    digit = re.search(r"[0-9]", token)
    if not digit:
        raise RangeError(f"{token!r} has no version")
    operator, version = token[:digit.start()], token[digit.start():]
    if operator not in _OPERATORS:
        raise RangeError(f"{token!r}: unknown comparison {operator!r} (<, <=, >, >=, =, !=)")
    low, high = _bounds(version)
    return {
        ">=": [(low, None)], ">": [(high, None)], "<": [(0, low)], "<=": [(0, high)],
        "=": [(low, high)], "!=": [(0, low), (high, None)],
    }[_OPERATORS[operator]]


def normalise(ranges) -> list[tuple[int, int | None]]:
    """Sorted, non-empty, non-overlapping ranges (adjacent ones merged)."""
    out: list[list] = []
    for low, high in sorted((r for r in ranges if r[1] is None or r[1] > r[0]), key=lambda r: r[0]):
        if out and (out[-1][1] is None or low <= out[-1][1]):
            if out[-1][1] is not None and (high is None or high > out[-1][1]):
                out[-1][1] = high
        else:
            out.append([low, high])
    return [(low, high) for low, high in out]


def intersect(a, b) -> list[tuple[int, int | None]]:
    out = []
    for low1, high1 in a:
        for low2, high2 in b:
            low = max(low1, low2)
            high = high1 if high2 is None else high2 if high1 is None else min(high1, high2)
            out.append((low, high))
    return normalise(out)


def parse_range(text: str) -> list[tuple[int, int | None]]:
    """The ``server_version_num`` ranges ``[low, high)`` (``high`` None: no upper bound) that
    ``text`` admits; ``[(0, None)]`` for every version, ``[]`` for none. :class:`RangeError`
    when blang/semver would refuse ``text``."""
    if len(text) > MAX_TEXT:
        raise RangeError(f"longer than {MAX_TEXT} characters")
    tokens = re.sub(r"([<>=])\s+", r"\1", text.strip()).split()
    if not tokens:
        raise RangeError("empty")
    groups: list[list[str]] = [[]]
    for token in tokens:
        if token == "||":
            if not groups[-1]:
                raise RangeError("'||' without a comparison on its left")
            groups.append([])
        else:
            groups[-1].append(token)
    if not groups[-1]:
        raise RangeError("'||' without a comparison on its right")
    result = []
    for group in groups:
        admitted = [(0, None)]
        for token in group:
            admitted = intersect(admitted, normalise(_comparison(token)))
        result.extend(admitted)
    return normalise(result)


def describe(ranges) -> str:
    """``>= 10.0 and < 14.0, >= 16.0``: the ranges in PostgreSQL's version terms (for messages)."""
    parts = []
    for low, high in ranges:
        words = ([f">= {show_version(low)}"] if low else []) + ([f"< {show_version(high)}"] if high else [])
        parts.append(" and ".join(words) or "every version")
    return ", ".join(parts) or "no version"


def show_version(num: int) -> str:
    """``server_version_num`` as PostgreSQL writes the version: 160002 -> 16.2, 90624 -> 9.6.24."""
    if num >= 100000:
        return f"{num // 10000}.{num % 10000}"
    return f"{num // 10000}.{num // 100 % 100}.{num % 100}"
