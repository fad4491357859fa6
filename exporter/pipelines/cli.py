"""``dbperf pipelines init-sql`` and ``dbperf pipelines run --name N -- CMD ...``.

Exit codes (docs/exit-codes.md): bad arguments are a :class:`~exporter.errors.UsageError` (exit 2,
one line, before the command starts); otherwise ``run`` exits with the command's own code (126 or
127 when it cannot be run, 128+N when signal N killed it): a failure to record only warns."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile

ROWS_FILE_ENV = "DBPERF_PIPELINE_ROWS_FILE"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
USAGE = "usage: dbperf pipelines run --name N -- CMD ..."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # one-line usage errors, exit 2: exporter.errors.OneLineParser, the class of dbperf's parsers
    sub = parser.add_subparsers(dest="pipelines_command", required=True, metavar="COMMAND")
    init = sub.add_parser("init-sql", help="print the SQL that creates the runs table dbperf.pipeline_runs")
    init.set_defaults(func=cmd_init_sql)
    run = sub.add_parser("run", help="run a command and record it as a pipeline run (exit code kept)",
                         description="Runs CMD, records its start and end in dbperf.pipeline_runs and exits "
                                     "with its exit code (128+N when a signal N killed it). CMD may write a row "
                                     f"count to the file named by ${ROWS_FILE_ENV}. CMD starts at once: the "
                                     "start is recorded beside it, and a failure to record only warns on stderr. "
                                     "Bad arguments are refused before CMD starts (exit 2).")
    run.add_argument("--name", required=True,
                     help="the pipeline's name (the pipeline label): 1 to 200 printable characters, no control "
                          "characters, not starting or ending with a space; --run-id and --trigger alike")
    dsn = run.add_mutually_exclusive_group()
    dsn.add_argument("--dsn", help="where dbperf.pipeline_runs is (default: $DBPERF_PIPELINES_DSN)")
    dsn.add_argument("--dsn-env", help="name of an environment variable holding the DSN")
    run.add_argument("--run-id", help="the run's id (default: a new UUID)")
    run.add_argument("--trigger", help="what started the run, e.g. cron, manual")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command to run")
    run.set_defaults(func=cmd_run)


def cmd_init_sql(args) -> int:
    from exporter.pipelines.schema import SQL

    sys.stdout.write(SQL)
    return 0


def _describe_signal(num: int) -> str:
    try:
        return f"{signal.Signals(num).name} ({num})"
    except ValueError:
        return str(num)


def _read_rows(path: str) -> int | None:
    try:
        text = open(path).read().strip()
    except OSError:
        return None
    try:
        return int(text.split()[-1]) if text else None
    except ValueError:
        print(f"dbperf pipelines: warning: {ROWS_FILE_ENV} holds {text[:40]!r}, not a row count; ignored",
              file=sys.stderr)
        return None


def _argument_problem(args, cmd: list[str]) -> str | None:
    """What is wrong with the arguments of ``pipelines run`` (checked before the job starts)."""
    from exporter.pipelines.recorder import name_problem

    for option, value, what in (("--name", args.name, "pipeline name"), ("--run-id", args.run_id, "run id"),
                                ("--trigger", args.trigger, "trigger")):
        problem = None if value is None else name_problem(value, what)
        if problem:
            return f"{option}: {problem}"
    if args.dsn_env is not None and (not args.dsn_env or "=" in args.dsn_env or "\0" in args.dsn_env):
        return f"--dsn-env: {ascii(args.dsn_env[:40])} is not an environment variable name"
    if args.dsn is not None and "\0" in args.dsn:
        return "--dsn: the DSN holds a NUL character"
    if not cmd or not cmd[0]:
        return f"no command given ({USAGE})"
    for i, arg in enumerate(cmd):
        if "\0" in arg:
            return f"the command's argument {i} holds a NUL character"
    return None


def cmd_run(args) -> int:
    from exporter.pipelines.recorder import DSN_ENV, record_run

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    problem = _argument_problem(args, cmd)
    if problem:
        from exporter.errors import UsageError

        raise UsageError(f"{problem}; nothing was run", command="dbperf pipelines run")
    # no --dsn: the DSN is read from --dsn-env's variable (default $DBPERF_PIPELINES_DSN). The job
    # does not wait for the start to be written (start_wait=0): it starts at once.
    recorder = record_run(args.name, args.dsn, run_id=args.run_id, trigger=args.trigger,
                          dsn_env=args.dsn_env or DSN_ENV, start_wait=0)
    forwarder = _Forwarder()  # from here on, cron/systemd stopping us stops the job and we record it
    previous = {s: signal.signal(s, forwarder) for s in FORWARDED}
    try:
        tmp = tempfile.mkdtemp(prefix="dbperf-run-")
    except OSError as exc:  # no row count then, but the job still runs
        tmp = None
        print(f"dbperf pipelines: warning: no ${ROWS_FILE_ENV} for the command: cannot make a temporary "
              f"directory: {exc.strerror or exc}", file=sys.stderr)
    try:
        rows_file = os.path.join(tmp, "rows") if tmp else None
        env = dict(os.environ, **{ROWS_FILE_ENV: rows_file}) if rows_file else dict(os.environ)
        with recorder as run:
            code = _run_child(cmd, env, run, forwarder)
            rows = _read_rows(rows_file) if rows_file else None
            if rows is not None:
                run.rows = rows
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return code


class _Forwarder:
    """Signal handler: passes the signal to the child, or remembers it until the child exists."""

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.pending: list[int] = []

    def __call__(self, signum, _frame) -> None:
        if self.child is None:
            self.pending.append(signum)
            return
        try:
            self.child.send_signal(signum)
        except OSError:
            pass


def _run_child(cmd: list[str], env: dict, run, forwarder: _Forwarder) -> int:
    if forwarder.pending:  # stopped while the start was being recorded: do not start the job
        signum = forwarder.pending[0]
        run.fail(f"stopped by signal {_describe_signal(signum)} before the command started")
        return 128 + signum
    try:
        child = subprocess.Popen(cmd, env=env)
    except OSError as exc:
        code = 126 if isinstance(exc, PermissionError) else 127
        run.fail(f"cannot run {cmd[0]!r}: {exc.strerror or exc}")
        print(f"dbperf pipelines run: cannot run {cmd[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return code
    forwarder.child = child
    for signum in forwarder.pending:  # arrived between the check and the start
        forwarder(signum, None)
    returncode = child.wait()
    if returncode < 0:
        run.fail(f"killed by signal {_describe_signal(-returncode)}")
        return 128 - returncode
    if returncode != 0:
        run.fail(f"command exited with status {returncode}")
    return returncode
