"""``pg_settings_<name>[_seconds|_bytes]``: every numeric and boolean setting, in base units."""

from __future__ import annotations

import re

from exporter.collector import CLUSTER, Collector, Context
from exporter.metrics import Family
from exporter.postgres.sqlmark import mark

# unit -> (suffix, factor to the base unit)
_UNITS = {
    "ms": ("_seconds", 0.001), "s": ("_seconds", 1.0), "min": ("_seconds", 60.0),
    "h": ("_seconds", 3600.0), "d": ("_seconds", 86400.0),
    "B": ("_bytes", 1.0), "kB": ("_bytes", 1024.0), "MB": ("_bytes", 1024.0 ** 2),
    "GB": ("_bytes", 1024.0 ** 3), "TB": ("_bytes", 1024.0 ** 4),
}
_BLOCKS = re.compile(r"^(\d+)(B|kB|MB)$")  # "8kB", "16MB": a number of such blocks

# reset_val, not setting: dbperf's own session SETs jit, lock_timeout, statement_timeout and
# default_transaction_read_only for itself; reset_val is what a session connecting with the DSN
# gets (configuration files, ALTER SYSTEM/DATABASE/ROLE and the DSN's options).
SQL = mark("""SELECT name, reset_val AS setting, unit, vartype, short_desc FROM pg_settings
WHERE vartype IN ('bool', 'integer', 'real')""")


def convert(setting: str, unit: str | None, vartype: str) -> tuple[str, float] | None:
    """``(suffix, value in base units)`` or None when it cannot be expressed as a number."""
    if vartype == "bool":
        return "", 1.0 if setting == "on" else 0.0
    try:
        value = float(setting)
    except ValueError:
        return None
    if not unit:
        return "", value
    if unit in _UNITS:
        suffix, factor = _UNITS[unit]
        # -1 and 0 are sentinels ("disabled", "use the default"): keep them as they are
        return suffix, value * factor if value > 0 else value
    match = _BLOCKS.match(unit)
    if match:
        size = int(match.group(1)) * _UNITS[match.group(2)][1]
        return "_bytes", value * size if value > 0 else value
    return None


# Prometheus reserves these endings for the series of other types (histogram and summary
# `_count`/`_sum`/`_bucket`, counter `_total` and OpenMetrics' `_created`, `_info` for info
# metrics), and promtool rejects a name holding a type word as a whole word (`_summary_`).
RESERVED_SUFFIXES = ("_count", "_sum", "_bucket", "_total", "_info", "_created")
TYPE_WORDS = {"counter": "counters", "gauge": "gauges", "histogram": "histograms", "summary": "summaries"}

NAMING_RULE = ("a setting's name becomes pg_settings_<name> (characters other than letters, digits and _ "
               "become _), then its unit suffix (_seconds, _bytes); a word that names a Prometheus type "
               "(counter, gauge, histogram, summary) is written in the plural "
               "(wal_summary_keep_time: pg_settings_wal_summaries_keep_time_seconds), and a name that would "
               "end in _count, _sum, _bucket, _total, _info or _created gets _value appended "
               "(tcp_keepalives_count: pg_settings_tcp_keepalives_count_value)")


def metric_name(name: str, suffix: str) -> str:
    """``pg_settings_<name><suffix>`` by :data:`NAMING_RULE`: every name passes ``promtool check
    metrics`` and the names that already did are unchanged."""
    words = re.sub(r"[^a-zA-Z0-9_]", "_", name).split("_")
    metric = "pg_settings_" + "_".join(TYPE_WORDS.get(w.lower(), w) for w in words) + suffix
    return metric + "_value" if metric.endswith(RESERVED_SUFFIXES) else metric


class SettingsCollector(Collector):
    def __init__(self):
        super().__init__(name="settings", scope=CLUSTER, default_ttl=60.0,
                         help="every numeric and boolean setting (pg_settings_*), in seconds and bytes; names: " + NAMING_RULE,
                         families=("pg_settings_*",))

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        (_, rows), = conn.query(SQL, timeout)
        out = []
        for name, setting, unit, vartype, desc in rows:
            converted = convert(setting, unit, vartype)
            if converted is None:
                continue
            suffix, value = converted
            family = Family(metric_name(name, suffix), "gauge", f"Server setting {name}: {desc}")
            family.add((), value)
            out.append(family)
        return out
