"""Metric, label and collector names that follow Prometheus's naming rules, as ``promtool check
metrics`` checks them (client_golang's promlint) and dbperf's collector files require them
(exporter.postgres.catalog_schema): base units (a unit word or abbreviation is replaced by its
base unit and the value scaled to match), no type word in the name, ``_total`` on counters and
only there, no ``_bucket``/``_count``/``_sum`` on gauges, lower-case snake_case, no ``:``.

Each function returns the name and the reasons it differs from postgres_exporter's, one short
phrase each, for the converter's report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction as F

from exporter.postgres.catalog_schema import (RESERVED_LABELS, RESERVED_SUFFIXES, TYPE_WORDS, label_name_problem,
                                              metric_name_problem)

BASE_UNITS = frozenset({"seconds", "bytes", "meters", "metres", "grams", "volts", "amperes", "joules",
                        "celsius", "kelvin"})
# non-base unit -> (base unit, factor to the base unit)
UNIT_FACTORS = {
    "minutes": ("seconds", F(60)), "hours": ("seconds", F(3600)), "days": ("seconds", F(86400)),
    "weeks": ("seconds", F(604800)), "bits": ("bytes", F(1, 8)), "kelvins": ("kelvin", F(1)),
    "inches": ("meters", F("0.0254")), "yards": ("meters", F("0.9144")), "miles": ("meters", F("1609.344")),
    "calories": ("joules", F("4.184")), "pounds": ("grams", F("453.59237")), "ounces": ("grams", F("28.349523125")),
}
AFFINE_UNITS = frozenset({"fahrenheit", "rankine"})  # to celsius by an offset too: no factor does it
PREFIXES = {
    "pico": F(1, 10**12), "nano": F(1, 10**9), "micro": F(1, 10**6), "milli": F(1, 1000), "centi": F(1, 100),
    "deci": F(1, 10), "deca": F(10), "hecto": F(100), "kilo": F(1000), "kibi": F(1024), "mega": F(10**6),
    "mebi": F(2**20), "mibi": F(2**20), "giga": F(10**9), "gibi": F(2**30), "tera": F(10**12),
    "tebi": F(2**40), "peta": F(10**15), "pebi": F(2**50),
}
# promtool's unit abbreviations -> (unit, factor); kb, mb ... are PostgreSQL's kB, MB (1024-based)
ABBREVIATIONS = {
    "s": ("seconds", F(1)), "sec": ("seconds", F(1)), "ms": ("seconds", F(1, 1000)),
    "us": ("seconds", F(1, 10**6)), "ns": ("seconds", F(1, 10**9)), "m": ("seconds", F(60)),
    "h": ("seconds", F(3600)), "d": ("seconds", F(86400)), "b": ("bytes", F(1)), "kb": ("bytes", F(1024)),
    "mb": ("bytes", F(2**20)), "gb": ("bytes", F(2**30)), "tb": ("bytes", F(2**40)), "pb": ("bytes", F(2**50)),
}
TIME_WORDS = frozenset({"seconds", "s", "sec", "ms", "us", "ns", "m", "h", "d", "minutes", "hours", "days",
                        "weeks", "milliseconds", "microseconds", "nanoseconds"})
SUFFIXES = tuple(s.lstrip("_") for s in RESERVED_SUFFIXES)  # bucket, count, sum
MAX_COLLECTOR_NAME = 64
_CAMEL = re.compile(r"[a-z][A-Z]")


class NameProblem(ValueError):
    """A name no rename makes fit dbperf's rules (a unit in fahrenheit, a name too long ...)."""


@dataclass
class Name:
    name: str
    factor: F = F(1)                             # multiply the value by it
    reasons: list[str] = field(default_factory=list)


def sanitise(name: str) -> tuple[str, list[str]]:
    """``name`` in dbperf's snake_case (lower-case letters, digits and ``_``; camelCase split at
    its humps), and why it changed."""
    reasons = []
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if out != name:
        reasons.append("only letters, digits and _ are allowed")
    if _CAMEL.search(out):
        out = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", out)
        reasons.append("snake_case, not camelCase")
    if out != out.lower():
        out = out.lower()
        reasons.append("lower-case")
    return out, reasons


def _unit(word: str) -> tuple[str, F] | None:
    """(base unit, factor) of a non-base unit word such as ``milliseconds`` or ``hours``, or of
    one of promtool's abbreviations (``ms``, ``kb``)."""
    if word in UNIT_FACTORS:
        return UNIT_FACTORS[word]
    for prefix, factor in PREFIXES.items():
        rest = word[len(prefix):]
        if word.startswith(prefix) and (rest in BASE_UNITS or rest in UNIT_FACTORS):
            base, more = UNIT_FACTORS.get(rest, (rest, F(1)))
            return base, factor * more
    return ABBREVIATIONS.get(word)


def _fix_units(words: list[str], scale: bool) -> tuple[list[str], F, list[str]]:
    """Unit words and abbreviations replaced by base units, and the factor that converts the
    value. Without ``scale`` (a DURATION, already in seconds) they are dropped instead. An
    abbreviation (``ms``, ``b``, ``d``) is a unit only as the last word (before ``_total``);
    elsewhere, and as the first word (the namespace's), a unit-like word is joined to the next."""
    out, factor, reasons = [], F(1), []
    last = len(words) - 2 if len(words) > 2 and words[-1] == "total" else len(words) - 1
    joined = -1  # the index of a word made by joining two: never read as a unit (no factor from a join)
    i = 0
    while i < len(words):
        word = words[i]
        if word in AFFINE_UNITS:
            raise NameProblem(f"{word} converts to celsius with an offset, not a factor")
        unit = _unit(word)
        if unit is not None and i + 1 < len(words) and (i in (0, joined) or (word in ABBREVIATIONS and i != last)):
            words = words[:i + 1] + [word + words[i + 1]] + words[i + 2:]  # the joined word is read next
            reasons.append(f"'{word}' would read as a unit")
            i, joined = i + 1, i + 1
            continue
        if unit is None or i == joined:
            out.append(word)
        elif not scale:
            reasons.append(f"'{word}' dropped: the value is in seconds")
        else:
            base, f = unit
            if i > 0 and words[i - 1] == "per":
                f = 1 / f
            out.append(base)
            factor *= f
            reasons.append(f"'{word}' in base units: {base}" + (f" (value x {_show(f)})" if f != 1 else ""))
        i += 1
    return out, factor, reasons


def _show(factor: F) -> str:
    return str(factor.numerator) if factor.denominator == 1 else f"{factor.numerator}/{factor.denominator}"


def metric_name(namespace: str, column: str, kind: str) -> Name:
    """The dbperf name of postgres_exporter's ``namespace_column`` metric; ``kind`` is counter,
    gauge or duration (a gauge in seconds). :class:`NameProblem` when no rename makes it fit."""
    original = f"{namespace}_{column}"
    name, reasons = sanitise(original)
    words = [w for w in name.split("_") if w] or ["metric"]
    if kind == "duration":  # postgres_exporter: namespace_column_milliseconds; dbperf: seconds
        while len(words) > 1 and words[-1] in TIME_WORDS:
            words.pop()
        words.append("seconds")
        reasons.append("a DURATION is served in seconds (postgres_exporter: _milliseconds)")
    words, factor, unit_reasons = _fix_units(words, scale=kind != "duration")
    reasons += unit_reasons
    typed = [w for w in words if w not in TYPE_WORDS] or ["metric"]
    if typed != words:
        reasons.append("no type word (gauge, counter, histogram, summary) in a name")
        words = typed
    if kind == "counter":
        if words[-1] != "total":
            words.append("total")
            reasons.append("a counter ends in _total")
    else:
        while len(words) > 1 and words[-1] in ("total", *SUFFIXES):
            word = words.pop()
            reasons.append("_total is for counters" if word == "total" else f"_{word} is for histograms and summaries")
    result = "_".join(words)
    if result[0].isdigit():
        result = "_" + result
    problem = metric_name_problem(result, "counter" if kind == "counter" else "gauge")
    if problem:
        raise NameProblem(f"{result} {problem}")
    return Name(result, factor, reasons if result != original or factor != 1 else [])


def label_name(column: str) -> tuple[str, list[str]]:
    """The label name of a LABEL column, and why it differs from the column's.
    :class:`NameProblem` when no rename makes it fit."""
    name, reasons = sanitise(column)
    if name.startswith("__"):
        name = "exported" + name
        reasons.append("names starting with __ are reserved")
    elif name in RESERVED_LABELS:
        reasons.append(f"{name} is reserved: {RESERVED_LABELS[name]}")
        name = "exported_" + name
    elif name[:1].isdigit():
        name = "_" + name
        reasons.append("a name cannot start with a digit")
    problem = label_name_problem(name)
    if problem:
        raise NameProblem(f"{name} {problem}")
    return name, reasons


def collector_name(namespace: str) -> str:
    """A collector name (lower-case snake_case, starting with a letter, at most 64 characters)."""
    name = sanitise(namespace)[0]
    name = name if name[:1].isalpha() else "q_" + name
    return name[:MAX_COLLECTOR_NAME]
