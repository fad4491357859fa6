"""``dbperf advise --config FILE --target NAME [--format table|json] [--explain SQL [--analyze]]
[--sample-seconds N]``.

``--sample-seconds N`` first samples ``pg_stat_activity`` for N seconds with the session sampler's
own code (:class:`exporter.postgres.sampler.Sampler`, every :data:`SAMPLE_INTERVAL`): the real
texts of running statements, with their literals, are checked for what pg_stat_statements' ``$1``
hides (a leading-wildcard LIKE, a large OFFSET); the findings show them redacted unless the
target's ``samples.redact`` is false, and the output says how many samples were taken.

Exit codes (docs/exit-codes.md): 0 advice printed (with or without findings); 2 bad input
(:class:`~exporter.advisor.AdviseError`: config error, unknown target, SQL that does not parse or is
over the advisor's bounds, a statement --explain does not take, a call --analyze refuses, a
statement the role may not explain or run) and 1 when the server cannot be reached or a query
fails (:class:`~exporter.errors.UnavailableError`). Every error is one line on stderr (printed by
``exporter.cli.main``) and never shows the password, nor the text of a statement that carries a
secret. Every session is set up by :func:`session_settings`, whatever
the DSN's ``options`` say."""

from __future__ import annotations

import argparse
import sys

APPLICATION_NAME = "dbperf-advise"
SAMPLE_INTERVAL = 0.1    # seconds between two samples of --sample-seconds
MAX_SAMPLE_SECONDS = 600.0
DATABASES_SQL = """
SELECT datname FROM pg_database
WHERE datallowconn AND NOT datistemplate AND has_database_privilege(oid, 'CONNECT') ORDER BY 1
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML config file (default: $DBPERF_CONFIG, or $DBPERF_DSN alone)")
    parser.add_argument("--target", "-t", help="target name from the config (optional when there is only one)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--explain", metavar="SQL", help="EXPLAIN this one statement and warn about its plan")
    parser.add_argument("--analyze", action="store_true",
                        help="with --explain: EXPLAIN ANALYZE, BUFFERS: runs the statement, in a read-only "
                             "transaction that is rolled back; data modifications and functions with side "
                             "effects are refused")
    parser.add_argument("--database", help="with --explain: the database to run it in (default: the target's)")
    parser.add_argument("--top", type=int, default=50, help="how many top statements to examine (default 50)")
    parser.add_argument("--sample-seconds", type=float, default=0.0, metavar="N",
                        help="first sample pg_stat_activity for N seconds (0 to 600) and check the real texts of the "
                             "running statements, with their literals (default 0: no sampling)")
    parser.add_argument("--timeout", default="30s", help="statement_timeout: 30s, 2m or seconds, 1ms to 1d (default 30s)")
    parser.set_defaults(func=run)


def _timeout(value) -> float:
    """Seconds of ``--timeout`` (dbperf's one duration syntax, exporter/durations.py), 1ms to 1d."""
    from exporter.advisor import AdviseError
    from exporter.durations import DAY, DurationError, parse_duration
    from exporter.secrets import one_line

    try:
        return parse_duration(value, minimum=0.001, maximum=DAY, bare_seconds=True)
    except DurationError as exc:
        raise AdviseError(f"--timeout {one_line(repr(value), 80)}: {exc}") from None


def run(args) -> int:
    from exporter.advisor import AdviseError
    from exporter.errors import DbperfError
    from exporter.secrets import password_of

    target = _target(args)
    try:
        if args.analyze and not args.explain:
            raise AdviseError("--analyze needs --explain SQL")
        if args.top < 1:
            raise AdviseError("--top must be positive")
        if not 0 <= args.sample_seconds <= MAX_SAMPLE_SECONDS:  # NaN fails too
            raise AdviseError(f"--sample-seconds must be from 0 to {MAX_SAMPLE_SECONDS:g}")
        if args.sample_seconds and args.explain:
            raise AdviseError("--sample-seconds does not go with --explain")
        args.timeout = _timeout(args.timeout)
        if target.kind == "mysql":
            if args.explain:
                raise AdviseError(f"--explain is for PostgreSQL targets; {target.name!r} is kind: mysql")
            from exporter.advisor.mysql import advise as advise_mysql

            meta, findings = advise_mysql(target, args.top, args.timeout)
        else:
            meta, findings = _explain(args, target) if args.explain else _advise(args, target)
    except DbperfError as exc:  # a server's message may quote the DSN's password
        raise exc.hide(password_of(target.dsn))
    from exporter.advisor.report import render_json, render_table

    sys.stdout.write(render_json(meta, findings) if args.format == "json" else render_table(meta, findings))
    return 0


def _target(args):
    from exporter.advisor import AdviseError
    from exporter.config import resolve

    config = resolve(args.config)
    if args.target is None:
        if len(config.targets) != 1:
            raise AdviseError(f"--target is required: the config has {len(config.targets)} targets "
                              f"({', '.join(t.name for t in config.targets)})")
        return config.targets[0]
    target = config.target(args.target)
    if target is None:
        raise AdviseError(f"unknown target {args.target!r} (known: {', '.join(t.name for t in config.targets)})")
    return target


def session_settings(timeout: float) -> tuple[str, ...]:
    """What every advise session sets after connecting, whatever the DSN's ``options``, the
    role's or the database's settings say: SQL is read as pglast reads it (standard strings),
    nothing writes, and nothing waits long."""
    ms = max(1, int(timeout * 1000))
    return ("standard_conforming_strings = on", "client_encoding = 'UTF8'", "default_transaction_read_only = on",
            f"statement_timeout = {ms}", f"lock_timeout = {min(ms, 1000)}",
            f"idle_in_transaction_session_timeout = {ms + 5000}")


def connect(target, dbname: str | None, timeout: float, autocommit: bool = True):
    """A session of the advisor (:func:`exporter.postgres.session.open_session`, the one connection
    factory), set up by :func:`session_settings`; :class:`~exporter.errors.UnavailableError` (exit
    code 1) when it cannot be opened."""
    from exporter.postgres.session import ConnectError, open_session

    try:
        conn = Marked(open_session(target.dsn, dbname=dbname, application_name=APPLICATION_NAME,
                                   connect_timeout=target.connect_timeout, settings=session_settings(timeout)))
    except ConnectError as exc:
        from exporter.errors import UnavailableError

        raise UnavailableError(str(exc)) from None
    conn.autocommit = autocommit
    return conn


class Marked:
    """A psycopg connection whose ``execute`` sends dbperf's mark (``exporter.advisor.OWN_MARK``)
    with each of the advisor's own statements, so that no later advice is about them."""

    def __init__(self, conn):
        object.__setattr__(self, "_conn", conn)

    def execute(self, sql: str, params=None):
        from exporter.advisor import mark

        return self._conn.execute(mark(sql), params)

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def __setattr__(self, name, value):
        setattr(self._conn, name, value)


def _server(conn) -> str:
    row = conn.execute("SELECT current_setting('server_version'), current_database()").fetchone()
    return f"PostgreSQL {row[0]}", row[1]


def _explain(args, target):
    from exporter.advisor import dedupe
    from exporter.advisor.explain import plan_findings, run_explain, validate

    validate(args.explain, args.analyze)  # before connecting: bad SQL touches nothing
    conn = connect(target, args.database, args.timeout, autocommit=False)
    try:
        server, dbname = _server(conn)
        conn.rollback()
        plan = run_explain(conn, args.explain, args.analyze)
        findings = plan_findings(conn, dbname, plan, args.analyze)
    finally:
        conn.close()
    from exporter.advisor.guard import carries_secret

    meta = {"target": target.name, "server": server, "database": dbname, "analyze": bool(args.analyze),
            "sql": carries_secret(args.explain) or " ".join(args.explain.split())}
    return meta, dedupe(findings)


def _advise(args, target):
    import psycopg

    from exporter.advisor.connections import connection_findings
    from exporter.advisor.indexes import index_findings
    from exporter.advisor.maintenance import cluster_wraparound, maintenance_findings
    from exporter.advisor import AdviseError, dedupe
    from exporter.advisor.statements import StatementsUnavailable, statement_findings, top_statements
    from exporter.errors import UnavailableError
    from exporter.secrets import password_of, scrub

    secret = password_of(target.dsn)
    samples, sample_meta = take_samples(target, args.sample_seconds) if args.sample_seconds else ([], None)
    main = connect(target, None, args.timeout)
    findings, skipped, own = [], [], "the target"
    try:
        try:
            server, own = _server(main)
            databases = [own]
            if target.databases.discover:
                databases += [d for (d,) in main.execute(DATABASES_SQL).fetchall()
                              if d != own and target.databases.wanted(d)]
            wanted = set(databases)
            try:
                statements, own_statements = top_statements(main, databases, args.top)
            except StatementsUnavailable as exc:  # every other check still runs
                stmt_meta = {"checked": False, "reason": f"statement checks skipped: {exc}"}
                statements = []
            else:
                found, not_checked = statement_findings(statements)
                findings += found
                stmt_meta = {"checked": True, "examined": len(statements), "unparsable": not_checked["unparsable"],
                             "too_long": not_checked["too_long"], "dbperf_own_skipped": own_statements}
            if sample_meta is not None:
                from exporter.advisor.statements import sample_findings

                found, not_checked = sample_findings(samples, statements, target.samples.redact,
                                                     lambda d: d in wanted)
                findings += found
                sample_meta.update(checked=not_checked["checked"],
                                   unparsable=not_checked["unparsable"] + not_checked["too_long"])
            findings += connection_findings(main)
            findings += [f for f in cluster_wraparound(main) if f.database in wanted]
            findings += _database_findings(main, own, statements, index_findings, maintenance_findings)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise AdviseError(scrub(f"permission denied: {exc.diag.message_primary or exc}", secret)) from None
        except psycopg.Error as exc:
            raise UnavailableError(scrub(f"query failed on {own}: {exc}", secret)) from None
    finally:
        main.close()
    for datname in databases[1:]:
        try:
            conn = connect(target, datname, args.timeout)
        except UnavailableError as exc:
            skipped.append(f"{datname}: {exc}")
            continue
        try:
            findings += _database_findings(conn, datname, statements, index_findings, maintenance_findings)
        except psycopg.Error as exc:
            skipped.append(scrub(f"{datname}: {exc}", secret))
        finally:
            conn.close()
    meta = {"target": target.name, "server": server, "databases": databases, "statements": stmt_meta,
            "note": "connection findings are a point-in-time sample of pg_stat_activity"}
    if sample_meta is not None:
        meta["samples"] = sample_meta
    if skipped:
        meta["skipped"] = skipped
    return meta, dedupe(findings)


def take_samples(target, seconds: float) -> tuple[list, dict]:
    """Sample ``pg_stat_activity`` for ``seconds`` with the session sampler's code; the samples
    kept (the slowest of each statement, :class:`exporter.postgres.samples.SampleStore`) and what
    to say about them. :class:`~exporter.errors.UnavailableError` when no sample could be taken."""
    import time

    from exporter.errors import UnavailableError
    from exporter.postgres.sampler import Sampler

    sampler = Sampler(target, interval=SAMPLE_INTERVAL)
    try:
        sampler.sample_once()  # the server's settings (the statement depends on its version)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            sampler.sample_once()
            time.sleep(max(0.0, min(end, started + SAMPLE_INTERVAL) - time.monotonic()))
    finally:
        sampler.close()
    if not sampler.samples:
        raise UnavailableError(f"could not sample pg_stat_activity: {sampler.last_error}")
    samples = sampler.store.recent(sampler.store.limit)
    return samples, {"seconds": seconds, "taken": sampler.samples, "failed": sampler.failures,
                     "statements_seen": len(samples), "redacted": target.samples.redact}


def _database_findings(conn, datname, statements, index_findings, maintenance_findings) -> list:
    return index_findings(conn, datname, statements) + maintenance_findings(conn, datname)
