"""``server_log:`` of a target, parsed once into :class:`ServerLogOptions`.

::

    server_log:
      path: /var/log/postgresql        # a file, or the directory of the logging collector
      format: jsonlog                  # jsonlog (15+), csvlog, stderr (then prefix: is required)
      prefix: '%m [%p] %q%u@%d '       # stderr only: the server's log_line_prefix
      max_lines_per_second: 2000       # lines parsed at most; the rest are counted as dropped
      max_line_bytes: 65536            # a longer entry is cut to this
      events: {size: 100}              # events kept per kind for /events
      client_network_prefix: 24        # pg_log_auth_failures_by_network_total (off without it)
      redact: true                     # statements in /events normalised (literals -> ?)

or ``server_log: {remote: true, format: csvlog}``: read through ``pg_ls_logdir()`` and
``pg_read_binary_file()`` on the target's own connection (see docs/server-log.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from exporter.serverlog.records import FORMATS
from exporter.serverlog.tally import DEFAULT_ERRORS

SUFFIXES = {"jsonlog": ".json", "csvlog": ".csv", "stderr": ""}  # stderr: any file but .csv and .json
MAX_READ_BYTES = 1024 * 1024  # bytes read from the log at a time; max_line_bytes is at most this
_SQLSTATE = re.compile(r"^[0-9A-Z]{5}$")
_CONDITION = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class ServerLogOptions:
    path: str = ""               # a file or a directory ("" with remote)
    format: str = "jsonlog"
    prefix: str = ""             # log_line_prefix (stderr)
    remote: bool = False
    max_lines_per_second: int = 2000
    max_line_bytes: int = 65536
    events_size: int = 100
    client_network_prefix: int | None = None
    redact: bool = True
    interval: float = 1.0        # seconds between two reads of the log
    max_users: int = 50
    max_databases: int = 50
    max_tables: int = 100
    max_networks: int = 100
    errors: tuple = tuple(sorted(DEFAULT_ERRORS.items()))  # (sqlstate, condition) counted by code
    state_dir: str = ""          # the config's state_dir (exporter.state resolves "")
    suffix: str = field(default="")  # the files of a directory that are read (by format)
    keep_position: bool = True   # store the read position (False: check-config's one scrape)


def parse(reader, source_dir, state_dir: str = "") -> ServerLogOptions:
    """A target's ``server_log:`` (a config ``_Reader``)."""
    reader.allow("path", "format", "prefix", "remote", "max_lines_per_second", "max_line_bytes", "events",
                 "client_network_prefix", "redact", "interval", "max_users", "max_databases", "max_tables",
                 "max_networks", "errors")
    fmt = reader.get("format", str, "jsonlog")
    if fmt not in FORMATS:
        reader.fail("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}"[:200])
    remote = reader.get("remote", bool, False)
    path = reader.get("path", str, "")
    if remote and path:
        reader.fail("path", "path and remote: true exclude each other (remote reads the server's log_directory)")
    if not remote and not path:
        reader.fail("path", "is required (the log file or the logging collector's directory), or set remote: true")
    if path and not Path(path).is_absolute():
        path = str(Path(source_dir) / path)
    prefix = reader.get("prefix", str, "")
    if fmt == "stderr":
        if not prefix:
            reader.fail("prefix", "is required with format: stderr (the server's log_line_prefix)")
        from exporter.serverlog.prefix import PrefixError, compile_prefix

        try:
            compile_prefix(prefix)
        except PrefixError as exc:
            reader.fail("prefix", str(exc))
    elif prefix:
        reader.fail("prefix", f"applies to format: stderr only ({fmt} entries carry their fields)")
    events = reader.sub("events")
    events.allow("size")
    errors = reader.data.get("errors")
    if errors is not None:
        if not isinstance(errors, dict) or len(errors) > 100:
            reader.fail("errors", "must be a mapping of at most 100 SQLSTATE: condition_name pairs")
        for code, name in errors.items():
            if not isinstance(code, str) or not _SQLSTATE.match(code) or not isinstance(name, str) \
                    or not _CONDITION.match(name):
                reader.fail("errors", f"{str(code)[:20]!r}: must be a 5-character SQLSTATE mapped to a condition "
                            "name such as deadlock_detected")
        errors = tuple(sorted(errors.items()))
    return ServerLogOptions(
        path=path, format=fmt, prefix=prefix, remote=remote,
        max_lines_per_second=reader.get("max_lines_per_second", int, 2000, 1, 1_000_000),
        max_line_bytes=reader.get("max_line_bytes", int, 65536, 256, MAX_READ_BYTES),
        events_size=events.get("size", int, 100, 0, 10_000),
        client_network_prefix=reader.get("client_network_prefix", int, None, 0, 128),
        redact=reader.get("redact", bool, True),
        interval=reader.get("interval", float, 1.0, 0.1, 60.0),
        max_users=reader.get("max_users", int, 50, 1, 10_000),
        max_databases=reader.get("max_databases", int, 50, 1, 10_000),
        max_tables=reader.get("max_tables", int, 100, 1, 10_000),
        max_networks=reader.get("max_networks", int, 100, 1, 10_000),
        errors=errors if errors is not None else ServerLogOptions.errors,
        state_dir=state_dir, suffix=SUFFIXES[fmt])
