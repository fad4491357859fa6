"""Reading the server's log through SQL (``server_log: {remote: true}``), where dbperf does not run
beside the server: ``pg_ls_logdir()`` lists the logging collector's files (pg_monitor has it) and
``pg_read_binary_file(path, offset, length, missing_ok)`` reads them (superuser, or
``GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO dbperf``; a
``log_directory`` outside the data directory also needs ``pg_read_server_files``).

Its own session (dbperf's session set-up, marked SQL, a statement timeout), never a scrape's. A
server where this cannot work (logging_collector off, the functions missing or not granted, as on
most managed services) raises :class:`~exporter.serverlog.follow.Unavailable` with what is missing:
the collector is then unsupported with that reason; nothing else fails."""

from __future__ import annotations

import time

from exporter.postgres.connection import Connection, Watchdog
from exporter.postgres.sqlmark import mark
from exporter.serverlog.follow import Unavailable, wanted
from exporter.setupsql import quote_literal

TIMEOUT = 5.0
READ_FUNCTION = "pg_read_binary_file(text, bigint, bigint, boolean)"
CHECK_SQL = f"""SELECT current_setting('logging_collector'), current_setting('log_destination'),
  has_function_privilege('pg_ls_logdir()', 'EXECUTE'), has_function_privilege('{READ_FUNCTION}', 'EXECUTE'),
  (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR pg_has_role('pg_read_all_settings', 'USAGE')"""
DIRECTORY_SQL = "SELECT current_setting('log_directory')"  # superuser-only setting: pg_read_all_settings
LIST_SQL = "SELECT name, size, extract(epoch FROM modification)::float8 FROM pg_ls_logdir()"
GRANT_HINT = (f"GRANT pg_monitor TO <role>; GRANT EXECUTE ON FUNCTION {READ_FUNCTION} TO <role> (as a superuser); "
              "a managed service without them: not available, read the log where the service exports it "
              "(docs/server-log.md)")


class RemoteSource:
    def __init__(self, target):
        self.target = target
        self.suffix = target.server_log.suffix
        self.format = target.server_log.format
        self.conn = Connection(target.dsn, None, target.connect_timeout,
                               Watchdog(f"dbperf-serverlog-watchdog-{target.name}"), statement_timeout=TIMEOUT)
        self.directory = ""
        self._checked_at = None

    def _query(self, sql: str) -> list:
        (_, rows), = self.conn.query(mark(sql), TIMEOUT, deadline=time.monotonic() + TIMEOUT + 1)
        return rows

    def check(self) -> None:
        """Raises Unavailable naming what is missing (once a minute at most; kept otherwise)."""
        now = time.monotonic()
        if self._checked_at is not None and now - self._checked_at < 60:
            return
        try:
            collector, destination, can_list, can_read, can_see = self._query(CHECK_SQL)[0]
        except Exception as exc:
            if getattr(exc, "sqlstate", None) in ("42501", "42883", "0A000"):
                raise Unavailable(f"the server's log cannot be read remotely: {' '.join(str(exc).split())[:200]}; "
                                  f"{GRANT_HINT}") from None
            raise
        missing = []
        if collector != "on":
            missing.append("logging_collector is off (the server writes no log files)")
        if self.format not in destination.replace(" ", "").split(","):
            missing.append(f"log_destination is {destination!r}, without {self.format}")
        if not can_list:
            missing.append("no EXECUTE on pg_ls_logdir() (pg_monitor has it)")
        if not can_read:
            missing.append(f"no EXECUTE on {READ_FUNCTION}")
        if not can_see:
            missing.append("log_directory cannot be read (pg_read_all_settings, which pg_monitor has)")
        if missing:
            raise Unavailable(f"the server's log cannot be read remotely: {'; '.join(missing)}; {GRANT_HINT}")
        self.directory = self._query(DIRECTORY_SQL)[0][0]
        self._checked_at = now

    def files(self) -> list[tuple]:
        self.check()
        rows = [(name, size, mtime, name) for name, size, mtime in self._query(LIST_SQL)
                if wanted(name, self.suffix)]
        rows.sort(key=lambda f: (f[2], f[0]))
        return rows

    def _path(self, name: str) -> str:
        return quote_literal(f"{self.directory}/{name}")

    def size(self, name: str) -> int:
        rows = self._query(f"SELECT size FROM pg_ls_logdir() WHERE name = {quote_literal(name)}")
        return rows[0][0] if rows else 0

    def read(self, name: str, offset: int, length: int) -> bytes:
        rows = self._query(f"SELECT pg_read_binary_file({self._path(name)}, {int(offset)}, {int(length)}, true)")
        value = rows[0][0] if rows else None
        return bytes(value) if value is not None else b""

    def close(self) -> None:
        self.conn.close()
