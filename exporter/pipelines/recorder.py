"""Record pipeline runs in ``dbperf.pipeline_runs`` from the job itself.

    from exporter.pipelines import record_run

    with record_run("daily_sales", dsn=...) as run:
        run.rows += load()

    @record_run("nightly_cleanup")          # DSN from $DBPERF_PIPELINES_DSN
    def cleanup(): ...

The start writes a ``running`` row; the end writes the final status (``failed`` when an exception
leaves the block, with its type and message), the rows and errors. Each write uses its own short
connection, so nothing is held open while the job works. Recording never fails the job: when the
database cannot be reached the recorder warns on stderr once per write and the job goes on.
This module imports psycopg and the standard library only, never the exporter daemon.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import uuid

DSN_ENV = "DBPERF_PIPELINES_DSN"
TABLE = ("dbperf", "pipeline_runs")
MAX_MESSAGE = 2000

START_SQL = """INSERT INTO {table} (pipeline, run_id, status, started_at, trigger)
VALUES (%(pipeline)s, %(run_id)s, 'running', now(), %(trigger)s)
ON CONFLICT (pipeline, run_id) DO UPDATE
SET status = 'running', started_at = now(), finished_at = NULL, trigger = EXCLUDED.trigger"""

END_SQL = """INSERT INTO {table} (pipeline, run_id, status, started_at, finished_at, rows_processed, errors,
                     trigger, error_message)
VALUES (%(pipeline)s, %(run_id)s, %(status)s, now() - make_interval(secs => %(elapsed)s), now(), %(rows)s,
        %(errors)s, %(trigger)s, %(error_message)s)
ON CONFLICT (pipeline, run_id) DO UPDATE
SET status = EXCLUDED.status, finished_at = EXCLUDED.finished_at, rows_processed = EXCLUDED.rows_processed,
    errors = EXCLUDED.errors, error_message = EXCLUDED.error_message"""


def _warn(message: str) -> None:
    print(f"dbperf pipelines: warning: {message}", file=sys.stderr, flush=True)


class Run:
    """One run; ``rows`` and ``errors`` may be changed while it runs."""

    def __init__(self, pipeline: str, run_id: str | None = None, trigger: str | None = None):
        if not pipeline:
            raise ValueError("record_run: a pipeline name is required")
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


class record_run:
    """Context manager and decorator that records one run per use (see the module docstring)."""

    def __init__(self, pipeline: str, dsn: str | None = None, *, run_id: str | None = None,
                 trigger: str | None = None, dsn_env: str = DSN_ENV, connect_timeout: float = 5.0,
                 table: tuple[str, str] = TABLE):
        self.pipeline, self.run_id, self.trigger = pipeline, run_id, trigger
        self.dsn = dsn if dsn is not None else os.environ.get(dsn_env)
        self.dsn_env, self.connect_timeout, self.table = dsn_env, connect_timeout, table
        self.run: Run | None = None

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> Run:
        self.run = Run(self.pipeline, self.run_id, self.trigger)
        if not self.dsn:
            _warn(f"run of {self.pipeline!r} not recorded: no DSN (pass dsn= or set ${self.dsn_env})")
        else:
            self._write(START_SQL, {"pipeline": self.run.pipeline, "run_id": self.run.run_id,
                                    "trigger": self.run.trigger}, "start")
        return self.run

    def __exit__(self, exc_type, exc, tb) -> bool:
        run = self.run
        if exc_type is not None:
            text = " ".join(str(exc).split())
            run.fail(f"{exc_type.__name__}: {text}" if text else exc_type.__name__)
        elif run.status == "running":
            run.status = "success"
        if self.dsn:
            run.recorded = self._write(END_SQL, {
                "pipeline": run.pipeline, "run_id": run.run_id, "status": run.status,
                "elapsed": time.monotonic() - run._started, "rows": int(run.rows), "errors": int(run.errors),
                "trigger": run.trigger, "error_message": run.error_message}, "end")
        return False  # never swallow the job's exception

    # -- decorator ---------------------------------------------------------------------------
    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with record_run(self.pipeline, self.dsn, trigger=self.trigger, dsn_env=self.dsn_env,
                            connect_timeout=self.connect_timeout, table=self.table):
                return func(*args, **kwargs)
        return wrapper

    def _write(self, sql: str, params: dict, what: str) -> bool:
        try:
            import psycopg
            from psycopg import sql as psql

            statement = psql.SQL(sql).format(table=psql.Identifier(*self.table))
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(self.connect_timeout)),
                                 application_name="dbperf-recorder") as conn:
                conn.execute(statement, params)
            return True
        except Exception as exc:  # recording must never fail the job
            text = " ".join(str(exc).split()) or type(exc).__name__
            _warn(f"could not record the {what} of run {params['run_id']} of {self.pipeline!r}: {text}")
            return False
