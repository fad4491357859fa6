"""``dbperf demo``: a throwaway PostgreSQL with a shop workload, monitored by dbperf, until Ctrl-C.

Everything it starts is stopped and the cluster's directory removed when it ends, also on errors.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time

import psycopg

from exporter import log
from exporter.config import ConfigError, parse, parse_listen

LOG = logging.getLogger("dbperf.demo")


class _Interrupted(Exception):
    pass


def _port_free(host: str, port: int) -> str | None:
    """None when ``host:port`` can be listened on, else the reason (checked before the slow part)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _say(line: str) -> None:
    print(line, flush=True)


def run_demo(args) -> int:
    from exporter.pgcluster import Cluster, ClusterError
    from exporter.server import Exporter, make_server
    from exporter.workload import Workload, setup_schema

    log.setup("info", "text")
    host, port = parse_listen("dbperf demo", "--listen", args.listen)
    duration = float(getattr(args, "duration", 0) or 0)
    if duration < 0:
        raise ConfigError("dbperf demo", "--duration", f"must be >= 0 seconds, got {duration:g}")
    reason = _port_free(host, port)
    if reason:
        print(f"dbperf demo: --listen {host}:{port}: cannot listen: {reason}", file=sys.stderr)
        return 1

    stop = threading.Event()
    serving = False

    def on_signal(signum, _frame):
        stop.set()
        if not serving:  # still starting up: abandon the start, the finally blocks clean up
            raise _Interrupted()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    cluster = workload = exporter = server = None
    try:
        try:
            cluster = Cluster()
            _say(f"dbperf demo: starting a throwaway PostgreSQL in {cluster.root} (removed on exit)")
            cluster.init().start()
        except ClusterError as exc:
            print(f"dbperf demo: cannot start PostgreSQL: {exc}", file=sys.stderr)
            return 1
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE shop")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        with psycopg.connect(cluster.dsn("shop"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        setup_schema(cluster.dsn("shop"))
        workload = Workload(cluster.dsn("shop")).start()

        config = parse({"listen": args.listen, "targets": [{"name": "demo", "dsn": cluster.dsn("postgres")}]},
                       source="dbperf demo")
        exporter = Exporter(config)
        try:
            server = make_server(exporter, host, port)
        except OSError as exc:
            print(f"dbperf demo: --listen {host}:{port}: cannot listen: {exc.strerror or exc}", file=sys.stderr)
            return 1
        threading.Thread(target=server.serve_forever, name="dbperf-http", daemon=True).start()
        serving = True

        shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
        base = f"http://{shown}:{server.server_address[1]}"
        _say(f"dbperf demo: metrics  {base}/metrics")
        _say(f"dbperf demo: probe    {base}/probe?target=demo")
        _say(f"dbperf demo: psql     psql \"{cluster.dsn('shop')}\"")
        _say("dbperf demo: running " + (f"for {duration:g} s" if duration else "until Ctrl-C"))

        end = time.monotonic() + duration if duration else None
        while not stop.is_set():
            remaining = 0.5 if end is None else end - time.monotonic()
            if remaining <= 0:
                break
            stop.wait(min(0.5, remaining))
        _say("dbperf demo: stopping")
        return 0
    except (_Interrupted, KeyboardInterrupt):
        _say("dbperf demo: interrupted while starting, cleaning up")
        return 130
    except (psycopg.Error, ClusterError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"dbperf demo: failed: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    finally:
        serving = True  # a second Ctrl-C during cleanup must not abort the cleanup
        if server is not None:
            _quietly(server.shutdown)
            _quietly(server.server_close)
        if exporter is not None:
            _quietly(exporter.close)
        if workload is not None:
            _quietly(workload.stop)
        if cluster is not None:
            _quietly(cluster.cleanup)
            _say(f"dbperf demo: removed {cluster.root}")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _quietly(step) -> None:
    try:
        step()
    except Exception as exc:  # one failed step must not skip the others (the cluster removal above all)
        LOG.warning("cleanup: %s failed: %s", getattr(step, "__qualname__", step), exc)
