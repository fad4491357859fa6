"""The run recorder (``record_run``) and ``dbperf pipelines run`` on the real PostgreSQL, and what
happens to the job when the database cannot be reached (nothing: it warns and goes on)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, make_config, wait_until
from exporter.pipelines import record_run
from exporter.pipelines.schema import SQL as SCHEMA_SQL

pytestmark = pytest.mark.pg

DB = "pipelines_recorder_test"
UNREACHABLE = "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2"


@pytest.fixture(scope="module")
def rec(pg):
    pg.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {DB}")
    pg.execute(SCHEMA_SQL, dbname=DB)
    return pg


def run_row(pg, pipeline):
    rows = pg.execute("SELECT status, rows_processed, errors, error_message, trigger, started_at IS NOT NULL, "
                      "extract(epoch FROM finished_at - started_at)::float8 FROM dbperf.pipeline_runs "
                      "WHERE pipeline = %s", dbname=DB, params=(pipeline,))
    assert len(rows) == 1, rows
    return rows[0]


def dbperf(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "exporter.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=dict(os.environ, **(env or {})))


# -- record_run ---------------------------------------------------------------------------------
def test_context_manager_records_start_rows_and_success(rec):
    dsn = rec.dsn(DB)
    with record_run("cm_ok", dsn=dsn, trigger="manual") as run:
        status, *_ = run_row(rec, "cm_ok")
        assert status == "running"  # the start is visible while the job works
        run.rows += 41
        run.rows += 1
    status, rows, errors, message, trigger, started, _ = run_row(rec, "cm_ok")
    assert (status, rows, errors, message, trigger, started) == ("success", 42, 0, None, "manual", True)
    assert run.recorded


def test_an_exception_is_recorded_as_failed_and_still_raised(rec):
    with pytest.raises(KeyError):
        with record_run("cm_fail", dsn=rec.dsn(DB)) as run:
            run.rows = 5
            run.errors = 2
            raise KeyError("customer 17")
    status, rows, errors, message, *_ = run_row(rec, "cm_fail")
    assert (status, rows, errors) == ("failed", 5, 2)
    assert message == "KeyError: 'customer 17'"


def test_decorator_records_one_run_per_call(rec, monkeypatch):
    monkeypatch.setenv("DBPERF_PIPELINES_DSN", rec.dsn(DB))

    @record_run("decorated")
    def job(x):
        return x * 2

    assert job(21) == 42
    assert job(1) == 2
    (count,), = rec.execute("SELECT count(*) FROM dbperf.pipeline_runs WHERE pipeline = 'decorated' "
                            "AND status = 'success'", dbname=DB)
    assert count == 2
    assert job.__name__ == "job"


def test_an_unreachable_database_never_fails_the_job(capsys):
    with record_run("unreachable", dsn=UNREACHABLE) as run:
        run.rows = 3
        result = "done"
    assert result == "done" and not run.recorded and run.status == "success"
    err = capsys.readouterr().err
    assert err.count("dbperf pipelines: warning: could not record") == 2  # the start and the end
    assert "'unreachable'" in err
    with pytest.raises(ZeroDivisionError):  # the job's own exception is still the one raised
        with record_run("unreachable", dsn=UNREACHABLE):
            1 / 0


def test_recorder_does_not_import_the_daemon():
    """Only the SQL mark (standard library only) is shared with the daemon."""
    code = ("import sys; from exporter.pipelines import record_run; record_run; "
            "bad = [m for m in sys.modules if m.startswith('exporter.') and m not in "
            "('exporter.pipelines', 'exporter.pipelines.recorder', 'exporter.postgres', "
            "'exporter.postgres.sqlmark')]; print(bad); assert not bad, bad; "
            "assert 'yaml' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- dbperf pipelines ---------------------------------------------------------------------------
def test_init_sql_is_what_the_tests_use():
    proc = dbperf("pipelines", "init-sql")
    assert proc.returncode == 0 and proc.stdout == SCHEMA_SQL


def test_run_a_command_that_succeeds_with_a_row_count(rec):
    proc = dbperf("pipelines", "run", "--name", "cli_ok", "--dsn", rec.dsn(DB), "--trigger", "cron", "--",
                  "sh", "-c", 'echo working; echo 1234 > "$DBPERF_PIPELINE_ROWS_FILE"')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "working\n" and proc.stderr == ""
    status, rows, _, message, trigger, *_ = run_row(rec, "cli_ok")
    assert (status, rows, message, trigger) == ("success", 1234, None, "cron")


def test_run_a_command_that_fails_keeps_its_exit_code(rec):
    proc = dbperf("pipelines", "run", "--name", "cli_exit3", "--dsn-env", "ETL_DSN", "--",
                  "sh", "-c", "exit 3", env={"ETL_DSN": rec.dsn(DB)})
    assert proc.returncode == 3
    status, _, _, message, *_ = run_row(rec, "cli_exit3")
    assert (status, message) == ("failed", "command exited with status 3")


def test_a_killed_command_is_failed_with_the_signal(rec):
    proc = dbperf("pipelines", "run", "--name", "cli_killed", "--dsn", rec.dsn(DB), "--",
                  "sh", "-c", "kill -9 $$")
    assert proc.returncode == 128 + 9
    status, _, _, message, *_ = run_row(rec, "cli_killed")
    assert (status, message) == ("failed", "killed by signal SIGKILL (9)")


def test_a_terminated_wrapper_forwards_the_signal_and_records(rec):
    import time

    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "pipelines", "run", "--name", "cli_term",
                             "--dsn", rec.dsn(DB), "--", "sleep", "30"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if rec.execute("SELECT 1 FROM dbperf.pipeline_runs WHERE pipeline = 'cli_term'", dbname=DB):
            break
        time.sleep(0.1)
    time.sleep(0.3)  # the child has been started after the start row was written
    proc.terminate()
    assert proc.wait(timeout=20) == 128 + 15
    status, _, _, message, *_ = run_row(rec, "cli_term")
    assert (status, message) == ("failed", "killed by signal SIGTERM (15)")


def test_a_missing_command_is_recorded_failed(rec):
    proc = dbperf("pipelines", "run", "--name", "cli_missing", "--dsn", rec.dsn(DB), "--", "no-such-command-xyz")
    assert proc.returncode == 127
    assert "cannot run 'no-such-command-xyz'" in proc.stderr
    assert run_row(rec, "cli_missing")[0] == "failed"


def test_run_with_the_database_unreachable_still_runs_the_command():
    proc = dbperf("pipelines", "run", "--name", "cli_down", "--dsn", UNREACHABLE, "--", "sh", "-c", "echo ran; exit 4")
    assert proc.returncode == 4
    assert proc.stdout == "ran\n"
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("dbperf pipelines: warning:")]
    assert len(warnings) == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_run_without_a_command_is_a_usage_error():
    proc = dbperf("pipelines", "run", "--name", "x")
    assert proc.returncode == 2 and "no command given" in proc.stderr


# -- recorded runs seen by dbperf ---------------------------------------------------------------
def test_recorded_runs_are_served(rec, serve):
    with pytest.raises(RuntimeError):
        with record_run("served_job", dsn=rec.dsn(DB)) as run:
            run.rows = 9
            raise RuntimeError("boom")
    with record_run("served_job", dsn=rec.dsn(DB)) as run:
        run.rows = 10
    config = make_config(rec, {"pipelines": {"sources": [{"type": "table", "database": DB, "name": "jobs"}]}})
    samples = serve(config).metrics()
    labels = {"source": "jobs", "pipeline": "served_job"}
    assert samples.value("pipeline_runs_total", status="failed", **labels) == 1
    assert samples.value("pipeline_runs_total", status="success", **labels) == 1
    assert samples.value("pipeline_rows_processed_total", **labels) == 19
    assert samples.value("pipeline_last_run_status", status="success", **labels) == 1


def test_run_without_a_dsn_runs_the_command_unrecorded_with_one_warning():
    env = {k: v for k, v in os.environ.items() if k != "DBPERF_PIPELINES_DSN"}
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "pipelines", "run", "--name", "nodsn",
                           "--dsn-env", "UNSET_ETL_DSN", "--", "sh", "-c", "exit 5"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 5
    assert proc.stderr.strip() == ("dbperf pipelines: warning: run of 'nodsn' not recorded: no DSN "
                                   "(pass dsn= or set $UNSET_ETL_DSN)")


# -- issue 13: the job starts at once whatever the recording side does; bad arguments refused first --
class LockedRunsTable:
    """Another session holds ``LOCK TABLE dbperf.pipeline_runs IN ACCESS EXCLUSIVE MODE`` until
    ``release()`` or, at the latest, ``release_after`` seconds (so old code waits and fails, never hangs)."""

    def __init__(self, pg, release_after: float = 15.0):
        import threading

        self.conn = pg.connect(DB)
        self.conn.execute("BEGIN")
        self.conn.execute("LOCK TABLE dbperf.pipeline_runs IN ACCESS EXCLUSIVE MODE")
        self.timer = threading.Timer(release_after, self.release)
        self.timer.start()

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.execute("COMMIT")
            self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        self.release()


def test_run_starts_the_command_at_once_with_the_runs_table_locked(rec, tmp_path):
    import time

    stamp = tmp_path / "started"
    with LockedRunsTable(rec):
        launched = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "pipelines", "run", "--name", "cli_locked",
                                 "--dsn", rec.dsn(DB), "--", "sh", "-c", f'date +%s.%N > {stamp}; exit 3'],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=60)  # the lock is held all along
        finished = time.time()
    started = float(stamp.read_text())
    print(f"command started {started - launched:.3f} s after launch; wrapper done after {finished - launched:.3f} s")
    assert started - launched < 2.0  # Python's start-up included (~0.35 s); on main: 24 s, here the 15 s timer
    assert proc.returncode == 3  # the job's exit code is kept
    warnings = err.splitlines()
    assert len(warnings) == 2 and "Traceback" not in err, err  # the start and the end, one line each
    assert all(w.startswith("dbperf pipelines: warning: could not record the") and "lock timeout" in w
               for w in warnings), err
    assert finished - launched < 30  # bounded by lock_timeout, not by the lock
    assert not rec.execute("SELECT 1 FROM dbperf.pipeline_runs WHERE pipeline = 'cli_locked'", dbname=DB)


def test_run_records_a_start_that_waited_for_a_lock_then_the_end(rec, tmp_path):
    """The table is locked while the command runs and released once the recorder waits on it: the
    start lands late but before the end, and the run is recorded with the command's exit status."""
    stamp = tmp_path / "started"
    with LockedRunsTable(rec) as lock:
        proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "pipelines", "run", "--name", "cli_late",
                                 "--dsn", rec.dsn(DB), "--", "sh", "-c", f'echo > {stamp}; exit 5'],
                                cwd=ROOT, stderr=subprocess.PIPE, text=True)
        wait_until(stamp.exists, timeout=20, interval=0.02, message="the command to start")
        wait_until(lambda: rec.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = 'dbperf-recorder' "
                                       "AND wait_event_type = 'Lock'"), timeout=20, interval=0.02,
                   message="the recorder to wait on the lock")
        lock.release()  # within its 2 s lock_timeout
        assert proc.wait(timeout=60) == 5
    assert proc.stderr.read() == ""
    status, _, _, message, _, started, duration = run_row(rec, "cli_late")
    assert (status, message, started) == ("failed", "command exited with status 5", True)
    assert 0 <= duration < 30


def test_a_start_that_lands_after_the_end_does_not_undo_it(rec):
    """The START upsert that waited (its transaction began before the end was written) leaves the
    finished row alone; a later start of the same run id (a re-run) resets it."""
    from psycopg import sql as psql

    from exporter.pipelines.recorder import END_SQL, START_SQL

    table = psql.Identifier("dbperf", "pipeline_runs")
    start = psql.SQL(START_SQL).format(table=table)
    params = {"pipeline": "late_start", "run_id": "r1", "trigger": None}
    with rec.connect(DB) as late, rec.connect(DB) as other:
        late.execute("BEGIN")
        late.execute("SELECT now()")  # the late start's transaction (and now()) began here
        other.execute(psql.SQL(END_SQL).format(table=table), {**params, "status": "success", "elapsed": 1.0,
                                                                "rows": 7, "errors": 0, "error_message": None})
        late.execute(start, params)
        late.execute("COMMIT")
        assert run_row(rec, "late_start")[:2] == ("success", 7)
        other.execute(start, params)  # a re-run of r1 afterwards
    assert run_row(rec, "late_start")[0] == "running"


def test_record_run_enters_at_once_with_the_runs_table_locked(rec, capsys):
    import time

    with LockedRunsTable(rec, release_after=10):
        before = time.monotonic()
        with record_run("lib_locked", dsn=rec.dsn(DB), start_wait=0.2, lock_timeout=1) as run:
            entered = time.monotonic() - before
            run.rows = 1
    assert entered < 2.0  # start_wait; on main the block waited for the lock (10 s here)
    assert not run.recorded and run.status == "success"
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and err.count("lock timeout") == 2, err


@pytest.mark.parametrize("name, problem", [
    ("", "the pipeline name is empty"),
    ("   ", "the pipeline name is only whitespace"),
    ("x" * 201, "the pipeline name is 201 characters long, at most 200 are allowed"),
    ("daily\nsales", "holds a control or other non-printable character ('\\n')"),
    (" daily", "starts or ends with whitespace"),
])
def test_run_with_a_bad_name_is_refused_before_the_command_runs(rec, tmp_path, name, problem):
    ran = tmp_path / "ran"
    proc = dbperf("pipelines", "run", "--name", name, "--dsn", rec.dsn(DB), "--", "touch", str(ran))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("dbperf pipelines run: --name: "), proc.stderr
    assert problem in proc.stderr and "nothing was run" in proc.stderr
    assert not ran.exists()
    assert rec.execute("SELECT count(*) FROM dbperf.pipeline_runs WHERE pipeline = %s", dbname=DB,
                       params=(name,)) == [(0,)]


@pytest.mark.parametrize("args, problem", [
    (["--name", "ok", "--trigger", "cron\x1b[2J"], "--trigger: the trigger 'cron\\x1b[2J' holds a control"),
    (["--name", "ok", "--run-id", "r" * 300], "--run-id: the run id is 300 characters long"),
    (["--name", "ok", "--dsn-env", ""], "--dsn-env: '' is not an environment variable name"),
    (["--name", "ok", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["--name"], "argument --name: expected one argument"),
    ([], "the following arguments are required: --name"),
])
def test_run_with_bad_arguments_is_one_line_and_exit_2(tmp_path, args, problem):
    ran = tmp_path / "ran"
    proc = dbperf("pipelines", "run", *args, "--", "touch", str(ran))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and problem in proc.stderr, proc.stderr
    assert not ran.exists()


def test_record_run_refuses_bad_names_and_timeouts_before_the_job():
    for kwargs, message in [({"pipeline": ""}, "the pipeline name is empty"),
                            ({"pipeline": "a\x00b"}, "non-printable character ('\\x00')"),
                            ({"pipeline": "ok", "run_id": ""}, "the run id is empty"),
                            ({"pipeline": "ok", "lock_timeout": float("nan")}, "lock_timeout must be"),
                            ({"pipeline": "ok", "statement_timeout": 0}, "statement_timeout must be"),
                            ({"pipeline": "ok", "start_wait": -1}, "start_wait must be")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            record_run(**kwargs)


@pytest.mark.fast
def test_recorders_statements_carry_dbperfs_mark():
    """The recorder's INSERTs are dbperf's own: the report and advisor must not list them."""
    from exporter.pipelines import recorder
    from exporter.postgres.session import settings_sql
    from exporter.postgres.sqlmark import is_own

    for sql in (recorder.START_SQL, recorder.END_SQL, settings_sql(recorder.record_run("p").session_settings())):
        assert is_own(sql), sql
