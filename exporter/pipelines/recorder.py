"""Record pipeline runs in ``dbperf.pipeline_runs`` from the job itself.

    from exporter.pipelines import record_run

    with record_run("daily_sales", dsn=...) as run:
        run.rows += load()

    @record_run("nightly_cleanup")          # DSN from $DBPERF_PIPELINES_DSN
    def cleanup(): ...

The start writes a ``running`` row; the end writes the final status (``failed`` when an exception
leaves the block, with its type and message), the rows and errors. Each write uses its own short
connection, so nothing is held open while the job works. Recording never fails or holds up the job:
each write runs in a thread of its own, with a ``lock_timeout`` and a ``statement_timeout``; the
job waits for the start at most ``start_wait`` seconds (1 s; ``dbperf pipelines run``: 0) and for
the end at most the write's budget (connect_timeout + statement_timeout + 1 s). A write that fails
or runs out of time is one warning line on stderr and the job goes on. A start that lands after its
run's end never overwrites it.

Names are checked when ``record_run`` is made (a ValueError, before the job starts): the pipeline
name, and the run id and trigger when given, are 1 to 200 printable characters (no control
characters, newlines or tabs) that neither start nor end with a space.
This module imports psycopg and the standard library only, never the exporter daemon; a write
opens its session with dbperf's one connection factory (:mod:`exporter.postgres.session`, which
imports no more).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import uuid

DSN_ENV = "DBPERF_PIPELINES_DSN"
from exporter.postgres.sqlmark import mark  # standard library only: no daemon module

TABLE = ("dbperf", "pipeline_runs")
MAX_MESSAGE = 2000
MAX_NAME = 200

# A start that reaches the table after this run's end was written (it waited on a lock, say) leaves
# the finished row alone: its now() is older than that finish. A re-run of a finished run_id resets it.
START_SQL = """INSERT INTO {table} (pipeline, run_id, status, started_at, trigger)
VALUES (%(pipeline)s, %(run_id)s, 'running', now(), %(trigger)s)
ON CONFLICT (pipeline, run_id) DO UPDATE
SET status = 'running', started_at = now(), finished_at = NULL, trigger = EXCLUDED.trigger
WHERE {table}.finished_at IS NULL OR {table}.finished_at < now()"""

END_SQL = """INSERT INTO {table} (pipeline, run_id, status, started_at, finished_at, rows_processed, errors,
                     trigger, error_message)
VALUES (%(pipeline)s, %(run_id)s, %(status)s, now() - make_interval(secs => %(elapsed)s), now(), %(rows)s,
        %(errors)s, %(trigger)s, %(error_message)s)
ON CONFLICT (pipeline, run_id) DO UPDATE
SET status = EXCLUDED.status, finished_at = EXCLUDED.finished_at, rows_processed = EXCLUDED.rows_processed,
    errors = EXCLUDED.errors, error_message = EXCLUDED.error_message"""
# the recorder's statements are dbperf's own: pg_stat_statements, the advisor and the report know them
START_SQL, END_SQL = mark(START_SQL), mark(END_SQL)


def _warn(message: str) -> None:
    print(f"dbperf pipelines: warning: {message}", file=sys.stderr, flush=True)


def _reason(exc: Exception) -> str:
    """One line about a failed write: the server's primary message, without the statement."""
    text = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def name_problem(value, what: str = "pipeline name") -> str | None:
    """Why ``value`` is not a valid name (pipeline, run id, trigger), or None (see the module
    docstring for the rules)."""
    if not isinstance(value, str):
        return f"the {what} must be text, got {type(value).__name__}"
    if not value.strip():
        return f"the {what} is empty" if not value else f"the {what} is only whitespace"
    if len(value) > MAX_NAME:
        return f"the {what} is {len(value)} characters long, at most {MAX_NAME} are allowed"
    bad = next((ch for ch in value if not ch.isprintable()), None)
    if bad is not None:
        return f"the {what} {_shown(value)} holds a control or other non-printable character ({ascii(bad)})"
    if value != value.strip():
        return f"the {what} {_shown(value)} starts or ends with whitespace"
    return None


def _shown(value: str) -> str:
    return ascii(value if len(value) <= 40 else value[:40] + "...")


def check_names(pipeline, run_id=None, trigger=None) -> None:
    """Raise ValueError (one line) when the pipeline name, run id or trigger is not valid."""
    for value, what in ((pipeline, "pipeline name"), (run_id, "run id"), (trigger, "trigger")):
        if value is None and what != "pipeline name":
            continue
        problem = name_problem(value, what)
        if problem:
            raise ValueError(f"record_run: {problem}")


class Run:
    """One run; ``rows`` and ``errors`` may be changed while it runs."""

    def __init__(self, pipeline: str, run_id: str | None = None, trigger: str | None = None):
        check_names(pipeline, run_id, trigger)
        self.pipeline = pipeline
        self.run_id = run_id or str(uuid.uuid4())
        self.trigger = trigger
        self.rows = 0
        self.errors = 0
        self.status = "running"
        self.error_message: str | None = None
        self.recorded = False  # True when the final write reached the database
        self._started = time.monotonic()

    def fail(self, message: str) -> None:
        """Mark the run failed without an exception (e.g. a wrapped command's exit status)."""
        self.status, self.error_message = "failed", message[:MAX_MESSAGE]


class _Write(threading.Thread):
    """One write to the runs table in a thread of its own, so no database can hold the job up."""

    def __init__(self, recorder: "record_run", sql: str, params: dict, what: str):
        super().__init__(name=f"dbperf-record-{what}", daemon=True)
        self.recorder, self.sql, self.params, self.what = recorder, sql, params, what
        self.ok = False
        self.abandoned = False  # the job stopped waiting: say nothing more

    def run(self) -> None:
        self.ok = self.recorder._write(self.sql, self.params, self.what, self)

    def finish(self, timeout: float) -> bool:
        """Wait for the write at most ``timeout`` seconds; True when it reached the database."""
        self.join(timeout)
        if self.is_alive():
            self.abandoned = True
            return False
        return self.ok


class record_run:
    """Context manager and decorator that records one run per use (see the module docstring)."""

    def __init__(self, pipeline: str, dsn: str | None = None, *, run_id: str | None = None,
                 trigger: str | None = None, dsn_env: str = DSN_ENV, connect_timeout: float = 5.0,
                 lock_timeout: float = 2.0, statement_timeout: float = 5.0, start_wait: float = 1.0,
                 table: tuple[str, str] = TABLE):
        check_names(pipeline, run_id, trigger)
        for value, what in ((connect_timeout, "connect_timeout"), (lock_timeout, "lock_timeout"),
                            (statement_timeout, "statement_timeout")):
            if not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise ValueError(f"record_run: {what} must be a number of seconds in (0, 3600], got {value!r}")
        if not isinstance(start_wait, (int, float)) or not 0 <= start_wait <= 3600:
            raise ValueError(f"record_run: start_wait must be a number of seconds in [0, 3600], got {start_wait!r}")
        self.pipeline, self.run_id, self.trigger = pipeline, run_id, trigger
        self.dsn = dsn if dsn is not None else os.environ.get(dsn_env)
        self.dsn_env, self.connect_timeout, self.table = dsn_env, connect_timeout, table
        self.lock_timeout, self.statement_timeout, self.start_wait = lock_timeout, statement_timeout, start_wait
        self.run: Run | None = None
        self._start: _Write | None = None

    @property
    def budget(self) -> float:
        """The longest one write may take before the job stops waiting for it."""
        return max(1, int(self.connect_timeout)) + self.statement_timeout + 1.0

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> Run:
        self.run = Run(self.pipeline, self.run_id, self.trigger)
        if not self.dsn:
            _warn(f"run of {self.pipeline!r} not recorded: no DSN (pass dsn= or set ${self.dsn_env})")
        else:
            self._start = _Write(self, START_SQL, {"pipeline": self.run.pipeline, "run_id": self.run.run_id,
                                                   "trigger": self.run.trigger}, "start")
            self._start.start()
            if self.start_wait:
                self._start.join(self.start_wait)  # visible while the job works, when it can be
        return self.run

    def __exit__(self, exc_type, exc, tb) -> bool:
        run = self.run
        if exc_type is not None:
            text = " ".join(str(exc).split())
            run.fail(f"{exc_type.__name__}: {text}" if text else exc_type.__name__)
        elif run.status == "running":
            run.status = "success"
        if self.dsn:
            end = _Write(self, END_SQL, {
                "pipeline": run.pipeline, "run_id": run.run_id, "status": run.status,
                "elapsed": time.monotonic() - run._started, "rows": int(run.rows), "errors": int(run.errors),
                "trigger": run.trigger, "error_message": run.error_message}, "end")
            start, self._start = self._start, None
            if start is not None:
                start.finish(self.budget)  # the end goes after the start when it can
                if start.abandoned:
                    _warn(f"could not record the start of run {run.run_id} of {self.pipeline!r}: "
                          f"no answer within {self.budget:g} s")
            end.start()
            run.recorded = end.finish(self.budget)
            if end.abandoned:
                _warn(f"could not record the end of run {run.run_id} of {self.pipeline!r}: "
                      f"no answer within {self.budget:g} s")
        return False  # never swallow the job's exception

    # -- decorator ---------------------------------------------------------------------------
    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with record_run(self.pipeline, self.dsn, trigger=self.trigger, dsn_env=self.dsn_env,
                            connect_timeout=self.connect_timeout, lock_timeout=self.lock_timeout,
                            statement_timeout=self.statement_timeout, start_wait=self.start_wait,
                            table=self.table):
                return func(*args, **kwargs)
        return wrapper

    def session_settings(self) -> tuple[str, ...]:
        """What each write's session sets: nothing waits long."""
        return (f"lock_timeout = {max(1, int(self.lock_timeout * 1000))}",
                f"statement_timeout = {max(1, int(self.statement_timeout * 1000))}")

    def _write(self, sql: str, params: dict, what: str, write: _Write | None = None) -> bool:
        try:
            from psycopg import sql as psql

            from exporter.postgres.session import open_session  # psycopg and the standard library only

            statement = psql.SQL(sql).format(table=psql.Identifier(*self.table))
            with open_session(self.dsn, application_name="dbperf-recorder", connect_timeout=self.connect_timeout,
                              settings=self.session_settings()) as conn:
                conn.execute(statement, params)
            return True
        except Exception as exc:  # recording must never fail the job
            if write is None or not write.abandoned:
                _warn(f"could not record the {what} of run {params['run_id']} of {self.pipeline!r}: {_reason(exc)}")
            return False
