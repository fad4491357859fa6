"""The one duration syntax of dbperf, for the config file and the command line.

A duration is a number with a unit, or several in decreasing order (Prometheus style, with
decimals allowed): ``500ms``, ``10s``, ``1.5m``, ``1h30m``, ``2d``, ``1w``; no spaces inside. Units: ms, s, m, h, d, w. A bare number
is seconds where the caller allows it (the config file does; YAML numbers are taken as seconds).
Every caller gives a range, so nothing infinite, NaN or absurdly large gets through."""

from __future__ import annotations

import math
import re

UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
ORDER = ("w", "d", "h", "m", "s", "ms")
EXAMPLES = "500ms, 10s, 5m, 1h30m or 2d"
MAX_TEXT = 64  # characters; a longer text is no duration
HOUR, DAY = 3600.0, 86400.0
MAX = 366 * DAY  # the ceiling of every duration unless the caller gives a lower one

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)", re.ASCII)
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


class DurationError(ValueError):
    """``str()`` is a reason that never quotes the value (callers quote it, bounded); ``kind`` is
    ``syntax`` (no duration, or no unit where one is needed) or ``range`` (NaN, too small or large)."""

    def __init__(self, reason: str, kind: str = "syntax"):
        super().__init__(reason)
        self.kind = kind


def _seconds_of(text: str, bare_seconds: bool) -> float:
    text = stripped = text.strip()  # no spaces inside: "1h30m", not "1h 30m" or "10 s"
    if stripped.startswith("-") and stripped[1:2] in tuple("0123456789"):  # say "negative", not "no duration"
        return -_seconds_of(stripped[1:], bare_seconds)
    if _NUMBER.fullmatch(text):  # any length: 400 digits are too large, not "no duration"
        if not bare_seconds:
            raise DurationError(f"needs a unit (like {EXAMPLES})")
        return float(text)
    if len(text) > MAX_TEXT or not stripped:
        raise DurationError(f"must be a duration like {EXAMPLES}")
    total, pos, last = 0.0, 0, -1
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match:
            raise DurationError(f"must be a duration like {EXAMPLES}")
        rank = ORDER.index(match.group(2))
        if rank <= last:
            raise DurationError(f"must be a duration like {EXAMPLES} (units from the largest down, each once)")
        last, pos = rank, match.end()
        total += float(match.group(1)) * UNITS[match.group(2)]
    return total


def parse_duration(value, minimum: float = 0.0, maximum: float = MAX, bare_seconds: bool = True) -> float:
    """Seconds of ``value`` (a text as above, or an int or float of seconds when ``bare_seconds``),
    within ``minimum`` .. ``maximum``; :class:`DurationError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DurationError(f"must be a duration like {EXAMPLES}")
    if isinstance(value, str):
        seconds = _seconds_of(value, bare_seconds)
    elif not bare_seconds:
        raise DurationError(f"needs a unit (like {EXAMPLES})")
    else:
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    if math.isnan(seconds):
        raise DurationError("must be a number of seconds, not NaN", "range")
    if seconds < minimum:
        raise DurationError(f"must be at least {format_duration(minimum)}" if minimum > 0
                            else "must not be negative", "range")
    if seconds > maximum:
        raise DurationError(f"must be at most {format_duration(maximum)}", "range")
    return seconds + 0.0  # -0s is 0


def format_duration(seconds: float) -> str:
    """``3600`` -> ``1h``, ``0.001`` -> ``1ms``, ``90`` -> ``1m30s``: the shortest text that
    :func:`parse_duration` reads back as the same whole number of milliseconds."""
    if not math.isfinite(seconds):
        return str(seconds)
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    out, sign = [], "-" if millis < 0 else ""
    millis = abs(millis)
    for unit in ORDER if millis % round(UNITS["w"] * 1000) == 0 else ORDER[1:]:  # 365d, not 52w1d
        size = round(UNITS[unit] * 1000)
        count, millis = divmod(millis, size)
        if count:
            out.append(f"{count}{unit}")
    return sign + "".join(out)
