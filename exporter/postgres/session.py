"""The one way dbperf opens a PostgreSQL (or PgBouncer) session: :func:`open_session`.

The scrape engine's connections (:mod:`exporter.postgres.connection`), ``dbperf advise`` and the
pipeline recorder all connect through it: the same connection string (the DSN, dbperf's
``application_name``, ``connect_timeout`` in whole seconds, an optional database), an autocommit
session without prepared statements (PgBouncer's admin console takes no other), then the
session's settings as ``SET`` statements sent in one round trip, each carrying dbperf's mark.
Errors are :class:`ConnectError` with the password scrubbed.

It imports psycopg and the standard library only (and exporter's own modules that do the same):
the recorder runs in a user's job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from exporter.postgres.sqlmark import batch
from exporter.secrets import describe_dsn, password_of, scrub

APPLICATION_NAME = "dbperf"


class ConnectError(RuntimeError):
    """The database cannot be reached now; the message is scrubbed of passwords."""


def session_conninfo(dsn: str, dbname: str | None, connect_timeout: float,
                     application_name: str = APPLICATION_NAME) -> str:
    """The DSN with dbperf's ``application_name``, ``connect_timeout`` (libpq's whole seconds,
    rounded up, at least 1) and, when given, ``dbname``."""
    from psycopg.conninfo import make_conninfo

    extra = {"application_name": application_name, "connect_timeout": max(1, math.ceil(connect_timeout))}
    if dbname is not None:
        extra["dbname"] = dbname
    return make_conninfo(dsn, **extra)


def settings_sql(settings: Iterable[str]) -> str:
    """``SET`` statements for ``settings`` (``"lock_timeout = 1000"``, ...) as one marked batch."""
    return batch(f"SET {setting}" for setting in settings)


def _execute(conn, sql: str) -> None:
    conn.execute(sql)


def open_session(dsn: str, *, dbname: str | None = None, application_name: str = APPLICATION_NAME,
                 connect_timeout: float = 3.0, settings: Iterable[str] = (),
                 setup: Callable[[object, str], None] | None = None):
    """A new psycopg connection (autocommit, no prepared statements) to ``dsn`` (``dbname``
    instead of the DSN's database when given), with ``settings`` applied in one round trip:
    ``setup(conn, sql)`` sends that batch when given (the scrape engine bounds it by its
    watchdog), else it is executed plainly. Raises :class:`ConnectError` ("cannot connect to
    ...", or "cannot set up the session on ..." when a setting is refused; the connection is
    then closed), never showing the password."""
    import psycopg

    conninfo = session_conninfo(dsn, dbname, connect_timeout, application_name)
    description, password = describe_dsn(conninfo), password_of(dsn)
    try:
        conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)
    except Exception as exc:
        raise ConnectError(scrub(f"cannot connect to {description}: {exc}", password)) from None
    settings = tuple(settings)
    if settings:
        try:
            (setup or _execute)(conn, settings_sql(settings))
        except Exception as exc:
            try:
                conn.close()
            except Exception:
                pass
            reason = " ".join(str(exc).split())
            raise ConnectError(scrub(f"cannot set up the session on {description}: {reason}", password)) from None
    return conn
