"""``dbperf serve | check-config | demo | advise | report | pipelines | alerts | plans | top | setup-sql | version``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from exporter import __version__
from exporter.config import parse_listen, resolve
from exporter.errors import EXIT_INTERRUPTED, DbperfError, OneLineParser, RuntimeFailure

LOG = logging.getLogger("dbperf")


def cmd_serve(args) -> int:
    from exporter import log, memory
    from exporter.server import Exporter, make_server

    memory.limit_arenas()  # before any thread starts (see exporter.memory)

    config = resolve(args.config)
    log.setup(args.log_level or config.log_level, args.log_format or config.log_format)
    host, port = config.listen_host, config.listen_port
    if args.listen:
        host, port = parse_listen("", "--listen", args.listen)
    web_config = args.web_config_file or config.web_config
    if web_config:
        from exporter import webconfig

        webconfig.load(web_config)  # a bad file: one line and exit 2, before anything starts
    exporter = Exporter(config)
    try:
        server = make_server(exporter, host, port, web_config)
    except OSError as exc:
        exporter.close()
        raise RuntimeFailure(f"--listen {host}:{port}: cannot listen: {exc.strerror}") from None
    LOG.info("dbperf %s listening on %s://%s:%d/metrics (%d targets: %s)%s", __version__, server.scheme, host,
             server.server_address[1], len(config.targets), ", ".join(t.name for t in config.targets),
             f"; web config {web_config}" + (" with basic auth" if server.web.auth else "") if web_config else "")
    stop = threading.Event()

    def shutdown(signum, _frame):
        LOG.info("received signal %d, shutting down", signum)
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    def reload(_signum, _frame):  # the web config only; a bad file keeps the old one (one log line)
        threading.Thread(target=server.reload_web_config, name="dbperf-reload", daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGHUP, reload)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        exporter.close()
    return 0


def cmd_check_config(args) -> int:
    """Checks the file without its secrets (a DSN from an unset variable or a missing file is a
    warning); ``--connect`` also connects to every target and fails when one cannot be reached."""
    from exporter.plan import describe_plan

    config = resolve(args.file, secrets=False)
    print(describe_plan(config), flush=True)
    if not args.connect:
        for line in config.missing_secrets:
            print(f"dbperf check-config: warning: {line} (not needed to check the file; dbperf serve and "
                  "check-config --connect need it)", file=sys.stderr)
        return 0
    from exporter.checkconnect import check_targets

    failures = check_targets(config)
    for line in failures:
        print(f"dbperf check-config: {line}", file=sys.stderr)
    return 1 if failures else 0


def cmd_demo(args) -> int:
    from exporter.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="dbperf", description="PostgreSQL performance monitoring for Prometheus.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the exporter (/metrics, /probe, /healthz, /readyz)")
    serve.add_argument("--config", "-c", help="YAML config file (default: $DBPERF_CONFIG, or $DBPERF_DSN alone)")
    serve.add_argument("--listen", help="HOST:PORT to listen on (overrides the config's listen)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["text", "json"])
    serve.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                       help="web configuration file: TLS, client certificates, basic auth, headers (the "
                            "Prometheus exporter-toolkit format; overrides the config's web_config; "
                            "reloaded on SIGHUP)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and print the planned collectors "
                           "(--connect: also connect to every target)")
    check.add_argument("file", nargs="?", help="YAML config file (default: $DBPERF_CONFIG)")
    check.add_argument("--connect", action="store_true",
                       help="connect to every target and say which collectors run there (exit 1 when a target's "
                            "DSN is missing or the server cannot be reached)")
    check.set_defaults(func=cmd_check_config)

    demo = sub.add_parser("demo", help="the stack without Docker: PostgreSQL, workload, example app, dbperf, Prometheus")
    from exporter.demo import add_arguments as demo_arguments

    demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    from exporter.advisor.cli import add_arguments as add_advise_arguments

    add_advise_arguments(sub.add_parser("advise", help="SQL anti-patterns, index, maintenance and connection advice"))

    from exporter.pipelines.cli import add_arguments as add_pipelines_arguments

    add_pipelines_arguments(sub.add_parser("pipelines", help="pipeline runs: init-sql (the runs table), "
                                           "run (record a command's run)"))

    from exporter.alerts_cli import add_arguments as add_alerts_arguments

    add_alerts_arguments(sub.add_parser("alerts", help="firing alerts from Alertmanager: list, ack (silence), unack"))

    from exporter.report.cli import add_arguments as add_report_arguments

    add_report_arguments(sub.add_parser("report", help="performance report of a period from Prometheus "
                                        "(markdown, html, json)"))

    from exporter.top.cli import add_arguments as add_top_arguments

    add_top_arguments(sub.add_parser(
        "top", help="a live terminal view: load by wait event, sessions, blocking chains, top statements "
                    "(--once: one frame as text)",
        description="A live view of one server: load by wait event, sessions, blocking chains, top statements "
                    "by load; query texts redacted. Keys: s sort, d database filter, p pause, up/down scroll, "
                    "q quit. Needs only pg_monitor (docs/top.md)."))

    from exporter.setupsql import add_arguments as add_setup_sql_arguments

    add_setup_sql_arguments(sub.add_parser("setup-sql", help="print the SQL that creates the monitoring role "
                                           "(pg_monitor, CONNECT) and pg_stat_statements"))

    from exporter.convert.cli import add_arguments as add_convert_arguments

    add_convert_arguments(sub.add_parser("convert-queries", help="convert a postgres_exporter queries.yaml "
                                         "into a dbperf collector file"))

    from exporter.plans_cli import add_arguments as add_plans_arguments

    add_plans_arguments(sub.add_parser("plans", help="the stored plans of a statement, newest first (from the "
                                       "state directory)"))

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=lambda args: print(f"dbperf {__version__}") or 0)
    return parser


def main(argv=None) -> int:
    """Runs one command; every :class:`~exporter.errors.DbperfError` (bad arguments, config, an
    unreachable server ...) is one line ``dbperf COMMAND: message`` on stderr and its exit code
    (docs/exit-codes.md)."""
    command = "dbperf"
    try:
        args = build_parser().parse_args(argv)
        command = f"dbperf {args.command}"
        return args.func(args)
    except DbperfError as exc:
        print_error(exc, command)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def print_error(exc: DbperfError, command: str) -> None:
    """``exc`` as one line on stderr: ``dbperf COMMAND: message``, its secrets hidden."""
    from exporter.secrets import one_line, scrub

    text = exc.describe()
    if exc.secrets:
        text = scrub(text, *exc.secrets)
    print(f"{exc.command or command}: {one_line(text, 2000)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
