"""psycopg 3 statement timing: a cursor factory whose ``execute``/``executemany`` are timed.
``instrument_connection(inst, conn)`` sets it on a connection (sync or async); ``conn.execute()``
goes through it too. Server-side (named) cursors are not timed (nor tagged).

With ``sql_comments`` on, ``execute``/``executemany`` send the statement with the request's SQL
comment (:mod:`.sqlcomment`); the metrics keep the statement as the application wrote it. Bytes
are sent unchanged; a ``psycopg.sql`` composition is rendered (``as_string``) and tagged."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: core imports this module lazily, no import back at run time
    from .core import Instrumentation

_classes: dict = {}


def _text(query, conn) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, (bytes, bytearray)):
        return query.decode(errors="replace")
    as_string = getattr(query, "as_string", None)  # psycopg.sql.Composable
    if as_string is not None:
        try:
            return as_string(conn)
        except Exception:
            pass
    return str(query)


def _namespace(conn) -> str:
    """The connection's database name, cached on the connection (libpq's PQdb costs a few µs)."""
    try:
        return conn._dbperf_namespace
    except AttributeError:
        name = conn.info.dbname
        try:
            conn._dbperf_namespace = name
        except AttributeError:  # a connection class with __slots__
            pass
        return name


def _tagger(inst: Instrumentation):
    """``tag(cursor, query, percent)``: the query to send, with the request's SQL comment."""
    tagged, current_request = inst.tagged, inst.request_state

    def tag(cursor, query, percent):
        if type(query) is str:
            return tagged(query, percent)
        if isinstance(query, (bytes, bytearray)) or current_request() is None:
            return query
        try:
            text = query.as_string(cursor.connection)  # psycopg.sql.Composable
        except Exception:  # not a composition, or one that cannot render here: send it as it is
            return query
        return tagged(text, percent) if isinstance(text, str) else query
    return tag


def cursor_factories(inst: Instrumentation, pool: str = "default") -> tuple[type, type]:
    """(sync cursor class, async cursor class) recording into ``inst`` with ``pool`` as label."""
    key = (id(inst), pool)
    found = _classes.get(key)
    if found is not None and found[0] is inst:
        return found[1], found[2]
    import psycopg

    record = inst.record_statement
    perf = time.perf_counter
    rows_wanted = inst.db_rows is not None
    sync_execute, sync_many = psycopg.Cursor.execute, psycopg.Cursor.executemany
    async_execute, async_many = psycopg.AsyncCursor.execute, psycopg.AsyncCursor.executemany
    tag = _tagger(inst) if inst.sql_comments is not None else None

    # The per-statement path is kept short (bench/instrument.py): the base methods called
    # directly, no keyword arguments into record_statement, a plain str passed through untouched.
    def done(cursor, query, seconds, error=None, many=False):
        conn = cursor.connection
        try:
            namespace = conn._dbperf_namespace
        except AttributeError:
            namespace = _namespace(conn)
        record(query if type(query) is str else _text(query, conn), seconds, namespace, pool, error,
               cursor.rowcount if rows_wanted and error is None and not many else None)

    class TimedCursor(psycopg.Cursor):
        def execute(self, query, params=None, **kw):
            sent = query if tag is None else tag(self, query, params is not None)
            start = perf()
            try:
                result = sync_execute(self, sent, params, **kw)
            except Exception as exc:
                done(self, query, perf() - start, exc)
                raise
            done(self, query, perf() - start)
            return result

        def executemany(self, query, params_seq, **kw):
            sent = query if tag is None else tag(self, query, True)
            start = perf()
            try:
                result = sync_many(self, sent, params_seq, **kw)
            except Exception as exc:
                done(self, query, perf() - start, exc)
                raise
            done(self, query, perf() - start, None, True)
            return result

    class AsyncTimedCursor(psycopg.AsyncCursor):
        async def execute(self, query, params=None, **kw):
            sent = query if tag is None else tag(self, query, params is not None)
            start = perf()
            try:
                result = await async_execute(self, sent, params, **kw)
            except Exception as exc:
                done(self, query, perf() - start, exc)
                raise
            done(self, query, perf() - start)
            return result

        async def executemany(self, query, params_seq, **kw):
            sent = query if tag is None else tag(self, query, True)
            start = perf()
            try:
                result = await async_many(self, sent, params_seq, **kw)
            except Exception as exc:
                done(self, query, perf() - start, exc)
                raise
            done(self, query, perf() - start, None, True)
            return result

    _classes[key] = (inst, TimedCursor, AsyncTimedCursor)
    return TimedCursor, AsyncTimedCursor


def instrument_connection(inst: Instrumentation, conn, pool: str = "default"):
    """Time every statement run through ``conn`` (a psycopg Connection or AsyncConnection)."""
    import psycopg

    sync_cls, async_cls = cursor_factories(inst, pool)
    if isinstance(conn, psycopg.AsyncConnection):
        conn.cursor_factory = async_cls
    elif isinstance(conn, psycopg.Connection):
        conn.cursor_factory = sync_cls
    else:
        raise TypeError(f"instrument_connection needs a psycopg connection, got {type(conn).__name__}")
    return conn
