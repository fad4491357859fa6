"""The server settings that make the log worth reading, what each gives and costs, and which of
them a server has off: ``dbperf setup-sql`` prints them (as ``ALTER SYSTEM`` lines to choose
from), ``dbperf check-config --connect`` says which are off for a target with ``server_log:``."""

from __future__ import annotations

# (setting, recommended value, the metrics it feeds, its cost)
LOG_SETTINGS = (
    ("log_connections", "on", "pg_log_connections_total",
     "one line per connection (two on 14+: authenticated, authorized); cheap unless thousands of connections a second"),
    ("log_disconnections", "on", "pg_log_disconnections_total, pg_log_session_duration_seconds",
     "one line per session"),
    ("log_lock_waits", "on", "pg_log_lock_waits_total, pg_log_lock_wait_seconds",
     "a line per wait longer than deadlock_timeout (1s): only waits already slow"),
    ("log_temp_files", "0", "pg_log_temp_files_total, pg_log_temp_file_bytes",
     "a line per temporary file (a size such as '10MB' logs only larger ones)"),
    ("log_checkpoints", "on", "pg_log_checkpoints_total{reason}, pg_log_checkpoint_*_seconds_total",
     "two lines per checkpoint (on by default since PostgreSQL 15)"),
    ("log_autovacuum_min_duration", "0", "pg_log_autovacuum_*",
     "a multi-line entry per autovacuum/autoanalyze run ('1s' logs only the slower ones)"),
    ("log_min_duration_statement", "1s", "pg_log_statement_duration_seconds, /events?kind=slow",
     "a line per statement slower than it (with its text and parameters): set it to what slow means for you"),
    ("log_statement", "ddl", "pg_log_ddl_total, /events?kind=ddl", "a line per schema change"),
    ("auto_explain.log_min_duration", "1s", "the plans in /events?kind=slow",
     "auto_explain in shared_preload_libraries (a restart); the plan of each statement slower than it "
     "(auto_explain.log_analyze adds timing overhead to every statement: leave it off)"),
    ("lc_messages", "C", "every message dbperf recognises (it reads them in English)", "none"),
)
OFF_VALUES = {"log_connections": ("off", ""), "log_disconnections": ("off",), "log_lock_waits": ("off",),
              "log_temp_files": ("-1",), "log_checkpoints": ("off",), "log_autovacuum_min_duration": ("-1",),
              "log_min_duration_statement": ("-1",), "log_statement": ("none",),
              "auto_explain.log_min_duration": ("-1", None)}

SETTINGS_SQL = ("SELECT name, setting FROM pg_settings WHERE name IN ("
                + ", ".join(f"'{name}'" for name, *_ in LOG_SETTINGS) + ", 'logging_collector', 'log_destination')")


def setup_lines() -> list[str]:
    """SQL comments for ``dbperf setup-sql``: the settings, each with what it feeds and costs."""
    out = ["-- the server log as metrics (server_log: in dbperf's config; docs/server-log.md): the settings that",
           "-- make the log useful, to choose from (uncomment; ALTER SYSTEM needs a superuser, then",
           "-- SELECT pg_reload_conf(); auto_explain in shared_preload_libraries needs a restart):"]
    for name, value, feeds, cost in LOG_SETTINGS:
        out.append(f"--   ALTER SYSTEM SET {name} = '{value}';  -- {feeds}; cost: {cost}")
    out.append("--   ALTER SYSTEM SET log_destination = 'jsonlog';  -- or csvlog (PostgreSQL 13, 14), with "
               "logging_collector = on")
    return out


def off(settings: dict, fmt: str) -> list[str]:
    """One line per setting that is off (``settings``: name -> value, None when unknown: a library
    not loaded), for the log format ``fmt``."""
    out = []
    for name, value, feeds, _ in LOG_SETTINGS:
        current = settings.get(name)
        if name == "lc_messages":
            if current and current != "C" and not current.lower().startswith(("en_", "en.", "posix")):
                out.append(f"lc_messages is {current!r}: dbperf reads messages in English; set lc_messages = 'C'")
            continue
        if current in OFF_VALUES.get(name, ()):
            what = "auto_explain is not loaded" if current is None else f"{name} is {current or 'empty'}"
            out.append(f"{what}: {feeds} stay empty; set {name} = '{value}'")
    destination = settings.get("log_destination") or ""
    if fmt != "stderr" and fmt not in destination.replace(" ", "").split(","):
        out.append(f"log_destination is {destination!r}: add {fmt} (with logging_collector = on)")
    return out


def read(conn, timeout: float = 5.0) -> dict:
    """The settings of a :class:`~exporter.postgres.connection.Connection` (auto_explain's is None
    when the library is not loaded)."""
    import time

    from exporter.postgres.sqlmark import mark

    (_, rows), = conn.query(mark(SETTINGS_SQL), timeout, deadline=time.monotonic() + timeout)
    settings = {name: None for name, *_ in LOG_SETTINGS}
    settings.update(dict(rows))
    return settings


def throwaway_settings(major: int, slow: str = "200ms", lock_wait: str = "200ms") -> tuple[str, dict]:
    """``(format, postgresql.conf settings)`` for a throwaway cluster (the demo, the tests) that logs
    everything of LOG_SETTINGS: jsonlog on PostgreSQL 15+, csvlog on 13 and 14, through the logging
    collector into ``log`` under the data directory (a standby copied from it logs into its own);
    statements slower than ``slow`` with their plans, lock waits longer than ``lock_wait`` (the
    deadlock_timeout), a checkpoint every 30 s that completes within seconds."""
    fmt = "jsonlog" if major >= 15 else "csvlog"
    values = {name: value for name, value, *_ in LOG_SETTINGS}
    values.update(log_min_duration_statement=slow, **{"auto_explain.log_min_duration": slow})
    settings = {name: f"'{value}'" for name, value in values.items()}
    settings.update(logging_collector="on", log_destination=f"'{fmt}'", log_directory="'log'",
                    shared_preload_libraries="'pg_stat_statements,auto_explain'", deadlock_timeout=f"'{lock_wait}'",
                    checkpoint_timeout="'30s'", checkpoint_completion_target="0.1", password_encryption="'scram-sha-256'")
    return fmt, settings
