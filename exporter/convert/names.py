"""Metric, label and collector names that follow Prometheus's naming rules, as ``promtool check
metrics`` checks them (client_golang's promlint): base units (a unit word or abbreviation is
replaced by its base unit and the value scaled to match), no type word in the name, ``_total``
on counters and only there, no ``_bucket``/``_count``/``_sum`` on gauges, snake_case, no ``:``.

Each function returns the name and the reasons it differs from postgres_exporter's, one short
phrase each, for the converter's report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction as F

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
AMBIGUOUS = frozenset({"m", "h", "d"})  # a time unit only at the end of a name
TIME_COMPONENTS = frozenset({"seconds", "s", "sec", "ms", "us", "ns", "m", "h", "d", "minutes", "hours", "days",
                             "weeks", "milliseconds", "microseconds", "nanoseconds"})
TYPE_WORDS = frozenset({"gauge", "counter", "histogram", "summary"})
RESERVED_SUFFIXES = ("bucket", "count", "sum")
RESERVED_LABELS = {"le": "histograms' bucket bound", "quantile": "summaries' quantile",
                   "target": "the label dbperf puts on every series"}
_CAMEL = re.compile(r"[a-z][A-Z]")


class UnitError(ValueError):
    """A unit no factor converts to its base unit (fahrenheit)."""


@dataclass
class Name:
    name: str
    factor: F = F(1)                             # multiply the value by it
    reasons: list[str] = field(default_factory=list)


def sanitise(name: str) -> tuple[str, list[str]]:
    """``name`` with only ``[a-zA-Z0-9_]``, snake_case instead of camelCase, not starting with a
    digit; and why it changed."""
    reasons = []
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if out != name:
        reasons.append("only letters, digits and _ are allowed")
    if _CAMEL.search(out):
        out = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", out).lower()
        reasons.append("snake_case, not camelCase")
    if not out or out[0].isdigit():
        out = "_" + out
        reasons.append("a name cannot start with a digit")
    return out, reasons


def _unit(component: str) -> tuple[str, F] | None:
    """(base unit, factor) of a non-base unit word such as ``milliseconds`` or ``hours``."""
    if component in UNIT_FACTORS:
        return UNIT_FACTORS[component]
    for prefix, factor in PREFIXES.items():
        rest = component[len(prefix):]
        if component.startswith(prefix) and (rest in BASE_UNITS or rest in UNIT_FACTORS):
            base, more = UNIT_FACTORS.get(rest, (rest, F(1)))
            return base, factor * more
    return None


def _fix_units(parts: list[str], scale: bool) -> tuple[list[str], F, list[str]]:
    """Unit words and abbreviations replaced by base units, and the factor that converts the
    value. Without ``scale`` (a DURATION, already in seconds) they are dropped instead."""
    out, factor, reasons = [parts[0]], F(1), []  # the namespace's first word (pg) is no unit
    last = len(parts) - 2 if len(parts) > 2 and parts[-1] == "total" else len(parts) - 1
    i = 1
    while i < len(parts):
        part, low = parts[i], parts[i].lower()
        if low in AFFINE_UNITS:
            raise UnitError(f"{low} converts to celsius with an offset, not a factor")
        unit = _unit(low) or ABBREVIATIONS.get(low)
        if low in AMBIGUOUS and i != last:  # m, h, d inside a name: no unit, but promtool reads one
            out.append(part + parts[i + 1])
            reasons.append(f"'_{part}_' would read as an abbreviated unit")
            i += 1
        elif unit is None:
            out.append(part)
        elif not scale:
            reasons.append(f"{part!r} dropped: the value is in seconds")
        else:
            base, f = unit
            if parts[i - 1].lower() == "per":
                f = 1 / f
            out.append(base)
            factor *= f
            reasons.append(f"{part!r} in base units: {base}" + (f" (value x {_show(f)})" if f != 1 else ""))
        i += 1
    return out, factor, reasons


def _show(factor: F) -> str:
    return str(factor.numerator) if factor.denominator == 1 else f"{factor.numerator}/{factor.denominator}"


def metric_name(namespace: str, column: str, kind: str) -> Name:
    """The dbperf name of postgres_exporter's ``namespace_column`` metric; ``kind`` is counter,
    gauge or duration (a gauge in seconds). :class:`UnitError` when no factor converts its unit."""
    original = f"{namespace}_{column}"
    name, reasons = sanitise(original)
    parts = [p for p in name.split("_") if p] or ["_"]
    if name.startswith("_"):
        parts[0] = "_" + parts[0]
    if kind == "duration":  # postgres_exporter: namespace_column_milliseconds; dbperf: seconds
        while len(parts) > 1 and parts[-1].lower() in TIME_COMPONENTS:
            parts.pop()
        parts.append("seconds")
        reasons.append("a DURATION is served in seconds (postgres_exporter: _milliseconds)")
    parts, factor, unit_reasons = _fix_units(parts, scale=kind != "duration")
    reasons += unit_reasons
    typed = [p for i, p in enumerate(parts) if i == 0 or p.lower() not in TYPE_WORDS]
    if typed != parts:
        reasons.append("no type word (gauge, counter, histogram, summary) in a name")
        parts = typed
    if kind == "counter":
        if parts[-1] != "total":
            parts.append("total")
            reasons.append("a counter ends in _total")
    else:
        while len(parts) > 1 and (parts[-1] == "total" or parts[-1] in RESERVED_SUFFIXES):
            reasons.append(f"_{parts.pop()} is for counters" if parts[-1] == "total"
                           else f"_{parts.pop()} is for histograms and summaries")
    result = "_".join(parts)
    return Name(result, factor, reasons if result != original or factor != 1 else [])


def label_name(column: str) -> tuple[str, list[str]]:
    """The label name of a LABEL column, and why it differs from the column's."""
    name, reasons = sanitise(column)
    if name.startswith("__"):
        name = "exported" + name
        reasons.append("names starting with __ are reserved")
    elif name in RESERVED_LABELS:
        reasons.append(f"{name} is {RESERVED_LABELS[name]}")
        name = "exported_" + name
    return name, reasons


def collector_name(namespace: str) -> str:
    """A collector name (lower-case snake_case) for a namespace."""
    name = re.sub(r"[^a-z0-9_]", "_", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", namespace).lower())
    return name if name[:1].isalpha() else "q_" + name
