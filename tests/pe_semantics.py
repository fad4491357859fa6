"""What postgres_exporter serves for a column, computed in Python from the row psycopg returns:
the oracle the converter's SQL is compared with (written from postgres_exporter's Go code,
exporter/util.go and exporter/postgres_exporter.go, and Go's strconv.ParseFloat and
time.ParseDuration; none of it shares code with exporter.convert).

None means no sample. Where postgres_exporter serves NaN for NULL, dbperf serves no sample (the
converter's documented difference), so NULL is None here too."""

from __future__ import annotations

import calendar
import datetime
import math
import re
import struct
from decimal import Decimal
from fractions import Fraction

_GO_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_GO_DURATION_UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6, "s": 10**9,
                      "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_float(text: str) -> float | None:
    """Go's strconv.ParseFloat(text, 64) for decimal text; None where it returns an error."""
    low = text.lower()
    if low in ("inf", "+inf", "infinity", "+infinity"):
        return math.inf
    if low in ("-inf", "-infinity"):
        return -math.inf
    if low == "nan":
        return math.nan
    if not _GO_FLOAT.fullmatch(text):
        return None
    value = float(text)
    return None if math.isinf(value) else value  # out of range: Go's ErrRange


def unix(value) -> int:
    """Go's time.Time.Unix() of what lib/pq makes of a timestamp, timestamptz or date."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # timestamp without time zone: lib/pq reads it as UTC
            value = value.replace(tzinfo=datetime.timezone.utc)
        return math.floor(value.timestamp())
    return calendar.timegm(value.timetuple())  # a date: midnight UTC


def value(v, float4: bool = False) -> float | None:
    """dbToFloat64; ``float4``: the column is a ``real``, which lib/pq reads with
    ``strconv.ParseFloat(text, 32)`` (the float32 nearest, widened)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if float4:
        return struct.unpack("f", struct.pack("f", v))[0]
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, Decimal):  # numeric: lib/pq hands over its text
        return parse_float(str(v))
    if isinstance(v, (datetime.datetime, datetime.date)):
        return float(unix(v))
    return parse_float(str(v))


def label(v) -> str:
    """dbToString."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (datetime.datetime, datetime.date)):
        return str(unix(v))
    return str(v)


def duration_seconds(text) -> float | None:
    """A DURATION column: Go's time.ParseDuration, then postgres_exporter's whole milliseconds
    (``float64(d / time.Millisecond)``), here in seconds."""
    if not isinstance(text, str):
        return None
    s, neg = text, False
    if s[:1] in ("+", "-"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    if not s:
        return None
    total = Fraction(0)
    while s:
        i = 0
        while i < len(s) and s[i] in "0123456789":
            i += 1
        whole, s = s[:i], s[i:]
        fraction = ""
        if s.startswith("."):
            j = 1
            while j < len(s) and s[j] in "0123456789":
                j += 1
            fraction, s = s[1:j], s[j:]
        if not whole and not fraction:
            return None
        k = 0
        while k < len(s) and s[k] != "." and s[k] not in "0123456789":
            k += 1
        unit, s = s[:k], s[k:]
        if unit not in _GO_DURATION_UNITS:
            return None
        amount = Fraction(int(whole or "0")) + (Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0)
        total += amount * _GO_DURATION_UNITS[unit]
        if total > 2**63 - 1:
            return None
    nanoseconds = -int(total) if neg else int(total)  # Go keeps whole nanoseconds
    milliseconds = abs(nanoseconds) // 10**6 * (-1 if nanoseconds < 0 else 1)  # Go's / truncates to zero
    return milliseconds / 1000


def mapped(v, mapping: dict) -> float | None:
    """MAPPEDMETRIC as its metric_mapping means it (postgres_exporter drops the mapping of a
    queries file's column and serves nothing; the converter applies it)."""
    return mapping.get(v) if isinstance(v, str) else None
