"""``dbperf demo``: the whole stack on one machine, without Docker, until Ctrl-C.

A throwaway PostgreSQL with a shop workload and pipeline runs, logging what docs/server-log.md asks
for (jsonlog on 15+, csvlog on 13 and 14) and read by dbperf (``server_log:``), with the incidents
of exporter/incidents.py (logins, wrong passwords, lock waits, deadlocks, temporary files, DDL,
unique violations, a checkpoint); a streaming standby of it (through a physical replication slot);
where Debian's MariaDB binaries are installed, a MariaDB source and a replica of it with a shop
workload (exporter/mysqlworkload.py), scraped as ``kind: mysql`` targets; the example application
(examples/shop_app, FastAPI) with a load generator, PgBouncer in front of it, dbperf, and, where the
``prometheus`` and ``prometheus-alertmanager`` binaries are installed, both of them with the shipped
rules (alerts/rules) and a demo Alertmanager configuration whose receivers send nothing. Every
part that is missing is skipped with one line saying why; every URL is printed.

Everything it starts is stopped and its directories removed when it ends: after ``--duration``, on
Ctrl-C, SIGTERM, SIGHUP (its terminal hung up, as on an SSH drop), when its parent process dies, and
on errors. Started with SIGHUP ignored (``nohup``), it outlives both the hangup and its parent.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import yaml

from exporter import incidents, log
from exporter.config import ConfigError, parse, parse_listen, show
from exporter.durations import DAY, DurationError, parse_duration
from exporter.errors import RuntimeFailure
from exporter.serverlog.settings import throwaway_settings

LOG = logging.getLogger("dbperf.demo")
ROOT = Path(__file__).resolve().parent.parent          # a checkout: examples/, alerts/, dashboards/
RULES = ROOT / "alerts" / "rules"
ALERTMANAGER_CONFIG = ROOT / "alerts" / "alertmanager.yml"
PIPELINES = {  # name: (expected interval, chance of success, typical duration)
    "orders_export": ("1m", 0.95, 1.0),
    "daily_sales": ("2m", 1.0, 0.5),
    "flaky_import": ("2m", 0.6, 1.5),
}
STANDBY_SLOT = "demo_standby"  # the standby's physical replication slot on the demo PostgreSQL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:9847", help="HOST:PORT for dbperf (default 127.0.0.1:9847)")
    parser.add_argument("--duration", default="0",
                        help="stop after this long: 90 (seconds), 10m, 1h (default: run until Ctrl-C)")
    parser.add_argument("--scrape-interval", default="5s",
                        help="Prometheus scrape and rule evaluation interval (default 5s)")
    parser.add_argument("--no-app", action="store_true", help="do not start the example application and its load")
    parser.add_argument("--no-pgbouncer", action="store_true", help="do not put PgBouncer in front of the application")
    parser.add_argument("--no-prometheus", action="store_true", help="start neither Prometheus nor Alertmanager")
    parser.add_argument("--no-standby", action="store_true",
                        help="do not start a streaming standby of the demo PostgreSQL (nor scrape it)")
    parser.add_argument("--no-mysql", action="store_true",
                        help="do not start the MariaDB source and replica (started when MariaDB is installed)")
    parser.add_argument("--any-ports", action="store_true",
                        help="free ports for the other parts instead of 8000, 6432, 9090, 9093 (tests, several demos)")


class _Interrupted(Exception):
    pass


class DemoError(Exception):
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


ANY_PORTS = False


def _pick_port(preferred: int) -> int:
    """``preferred`` on 127.0.0.1 when it is free (the tools' usual ports), else any free port."""
    if not ANY_PORTS and _port_free("127.0.0.1", preferred) is None:
        return preferred
    from exporter.pgcluster import free_port

    return free_port()


def _seconds(text) -> float | None:
    """Seconds of ``90``, ``5s``, ``10m``, ``1h30m`` (dbperf's one duration syntax, exporter/durations.py;
    a bare number is seconds), from 0 to 366 days; None otherwise."""
    try:
        return parse_duration(str(text), maximum=366 * DAY)
    except DurationError:
        return None


def _say(line: str, stream=None) -> None:
    """One line to the terminal; once the terminal is gone (an SSH drop), the lines go to /dev/null
    and the demo goes on, above all with its cleanup."""
    stream = stream or sys.stdout
    try:
        stream.write(line + "\n")
        stream.flush()
    except (OSError, ValueError):
        try:  # what is still buffered is flushed there too, so even the exit is quiet
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, stream.fileno())
            os.close(null)
        except (OSError, ValueError):
            pass


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


class Process:
    """A child process with its log file, stopped with SIGTERM (then SIGKILL) and its group."""

    def __init__(self, name: str, args: list[str], workdir: Path, *, env: dict | None = None,
                 cwd: Path | None = None, user: pwd.struct_passwd | None = None):
        self.name, self.args, self.workdir = name, args, workdir
        self.logfile = workdir / f"{name}.log"
        self.env, self.cwd, self.user = env, cwd or workdir, user
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Process":
        user = self.user

        def child():  # in the child, before exec: own process group; drop root where asked
            os.setsid()
            if user is not None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)
            _die_with_parent()  # after setuid, which clears it

        with open(self.logfile, "ab") as logfile:
            self.proc = subprocess.Popen(self.args, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.cwd, env=self.env, preexec_fn=child)
        return self

    def wait_ready(self, ready, timeout: float, what: str, stop: threading.Event | None = None) -> None:
        """Returns once ``ready()``; otherwise stops the process and raises DemoError."""
        try:
            self._wait_ready(ready, timeout, what, stop)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, ready, timeout: float, what: str, stop: threading.Event | None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise DemoError("stopped while starting")
            if self.proc.poll() is not None:
                raise DemoError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise DemoError(f"{self.name}: {what} not ready after {timeout:g}s: {self.tail()}")

    def tail(self) -> str:
        try:
            lines = [line for line in self.logfile.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])[-600:] or "(empty log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the demo dies, even by SIGKILL (no orphaned Prometheus)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _watch_parent(stop: threading.Event, on_death) -> None:
    """Calls ``on_death()`` once the process that started the demo has exited (it was re-parented)."""
    parent = os.getppid()

    def watch():
        while not stop.wait(0.5):
            if os.getppid() != parent:
                on_death()
                return

    threading.Thread(target=watch, name="demo-parent", daemon=True).start()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# -- the parts --------------------------------------------------------------------------------
def start_pgbouncer(workdir: Path, pg_port: int, stop: threading.Event) -> tuple[Process, int]:
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if not binary:
        raise DemoError("pgbouncer is not installed (apt-get install pgbouncer)")
    root = workdir / "pgbouncer"
    root.mkdir()
    port = _pick_port(6432)
    (root / "users.txt").write_text('"postgres" ""\n"dbperf_stats" ""\n')
    (root / "pgbouncer.ini").write_text(f"""[databases]
shopapp = host=127.0.0.1 port={pg_port} dbname=shopapp user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {root}/users.txt
admin_users = postgres
stats_users = dbperf_stats
pool_mode = session
default_pool_size = 10
max_client_conn = 100
stats_period = 5
""")
    user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None   # PgBouncer refuses to run as root
    if user is not None:
        for path in (root, *root.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
    proc = Process("pgbouncer", [binary, str(root / "pgbouncer.ini")], root, user=user).start()
    if user is not None:
        os.chown(proc.logfile, user.pw_uid, user.pw_gid)
    proc.wait_ready(lambda: _listening(port), 15, f"port {port}", stop)
    return proc, port


def start_standby(primary, workdir: Path):
    """A streaming standby of the demo PostgreSQL: ``pg_basebackup -R`` through the physical slot
    STANDBY_SLOT, in a directory under ``workdir``, application_name ``standby``."""
    from exporter.pgcluster import Cluster, ClusterError

    standby = Cluster(settings={"cluster_name": "'standby'", "hot_standby_feedback": "on"}, base_dir=str(workdir))
    try:
        standby.init_standby(primary, slot=STANDBY_SLOT).start()
    except ClusterError as exc:
        standby.cleanup()
        raise DemoError(str(exc)) from None
    return standby


def start_mariadb(workdir: Path) -> list:
    """A MariaDB source and a replica applying its binary log (exporter.mysqlcluster), under
    ``workdir`` (started in the background while PostgreSQL starts)."""
    from exporter.mysqlcluster import REPLICA_SETTINGS, SOURCE_SETTINGS, MariaDB, replicate

    servers = []
    try:
        for settings in (SOURCE_SETTINGS, REPLICA_SETTINGS):
            servers.append(MariaDB(settings=settings, base_dir=str(workdir)))
            servers[-1].init().start()
        replicate(*servers)
    except Exception as exc:  # noqa: BLE001 - MariaDBError, a MySQL error, a timeout: one line, nothing left
        for server in servers:
            server.cleanup()
        raise DemoError(_first_line(exc)) from None
    return servers


def start_mysql_workload(servers: list, stop: threading.Event):
    """exporter.mysqlworkload's shop workload on the source and the replica of start_mariadb."""
    import pymysql

    from exporter.mysqlworkload import MySQLWorkload

    try:
        return MySQLWorkload(*servers, stop).start()
    except (pymysql.err.MySQLError, OSError) as exc:
        raise DemoError(_first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def start_app(workdir: Path, dsn: str, stop: threading.Event) -> tuple[Process, int]:
    if not (ROOT / "examples" / "shop_app" / "app.py").exists():
        raise DemoError(f"examples/shop_app not found under {ROOT} (run the demo from a checkout)")
    for module in ("fastapi", "uvicorn", "sqlalchemy"):
        try:
            __import__(module)
        except ImportError:
            raise DemoError(f"Python package {module} is missing (pip install -e '.[test]')") from None
    port = _pick_port(8000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = Process("shop-app", [sys.executable, "-m", "examples.shop_app", "--dsn", dsn, "--port", str(port)],
                   workdir, env=env, cwd=ROOT).start()
    proc.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), 60, "/healthz", stop)
    return proc, port


class Load:
    """Requests to the shop app from a few threads, paced, with the weights of examples/shop_app/load.py."""

    def __init__(self, base: str, stop: threading.Event, threads: int = 2, pause: float = 0.1):
        sys.path.insert(0, str(ROOT))
        from examples.shop_app.load import PATHS, hit

        self.paths, self.hit, self.base, self.stop, self.pause = PATHS, hit, base, stop, pause
        self.threads = [threading.Thread(target=self._run, args=(random.Random(i),), name=f"demo-load-{i}",
                                         daemon=True) for i in range(threads)]
        self.requests = 0

    def start(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def _run(self, rng: random.Random) -> None:
        weights = [w for w, _ in self.paths]
        while not self.stop.is_set():
            path = rng.choices(self.paths, weights)[0][1]()
            self.hit(self.base, path)
            self.requests += 1
            self.stop.wait(self.pause)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(35)


class PipelineRuns:
    """Records runs of three pipelines into dbperf.pipeline_runs with ``record_run``, one every few seconds."""

    def __init__(self, dsn: str, stop: threading.Event):
        from exporter.pipelines.schema import SQL

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SQL)
        self.dsn, self.stop = dsn, stop
        self.thread = threading.Thread(target=self._run, name="demo-pipelines", daemon=True)

    def start(self) -> "PipelineRuns":
        self.thread.start()
        return self

    def _run(self) -> None:
        from exporter.pipelines import record_run

        rng = random.Random(7)
        names = list(PIPELINES)
        i = 0
        while not self.stop.is_set():
            name = names[i % len(names)]
            i += 1
            _, success, seconds = PIPELINES[name]
            try:
                with record_run(name, dsn=self.dsn, trigger="demo") as run:
                    self.stop.wait(seconds * rng.uniform(0.5, 1.5))
                    run.rows += rng.randint(100, 5000)
                    if rng.random() > success:
                        run.errors += 1
                        raise RuntimeError(f"{name}: upstream file missing (demo failure)")
            except RuntimeError:
                pass
            self.stop.wait(1.0)

    def join(self) -> None:
        self.thread.join(10)


def demo_alertmanager_config() -> dict:
    """alerts/alertmanager.yml with its routing and inhibition, but receivers that send nothing."""
    shipped = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config = {"route": shipped["route"], "receivers": [{"name": r["name"]} for r in shipped["receivers"]]}
    for key in ("inhibit_rules", "time_intervals", "mute_time_intervals", "templates"):
        if key in shipped and key != "templates":
            config[key] = shipped[key]
    return config


def start_alertmanager(workdir: Path, stop: threading.Event) -> tuple[Process, int]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not binary:
        raise DemoError("prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")
    if not ALERTMANAGER_CONFIG.exists():
        raise DemoError(f"{ALERTMANAGER_CONFIG} not found (run the demo from a checkout)")
    port = _pick_port(9093)
    config = workdir / "alertmanager.yml"
    config.write_text("# dbperf demo: alerts/alertmanager.yml's routes with receivers that send nothing\n"
                      + yaml.safe_dump(demo_alertmanager_config(), sort_keys=False))
    proc = Process("alertmanager", [binary, f"--config.file={config}", f"--storage.path={workdir / 'am-data'}",
                                    f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                   workdir).start()
    proc.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{port}/-/ready"), 30, "/-/ready", stop)
    return proc, port


def prometheus_config(interval: str, dbperf: str, app: str | None, am: str | None, prom: str) -> dict:
    scrape = [{"job_name": "dbperf", "static_configs": [{"targets": [dbperf]}]},
              {"job_name": "prometheus", "static_configs": [{"targets": [prom]}]}]
    if app:
        scrape.append({"job_name": "shop-app", "static_configs": [{"targets": [app]}]})
    if am:
        scrape.append({"job_name": "alertmanager", "static_configs": [{"targets": [am]}]})
    config = {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
              "scrape_configs": scrape}
    if RULES.is_dir():
        config["rule_files"] = [str(RULES / "*.yml")]
    if am:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [am]}]}]}
    return config


def start_prometheus(workdir: Path, interval: str, dbperf: str, app: str | None, am: str | None,
                     stop: threading.Event) -> tuple[Process, int]:
    binary = shutil.which("prometheus")
    if not binary:
        raise DemoError("prometheus is not installed (apt-get install prometheus)")
    port = _pick_port(9090)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(interval, dbperf, app, am, f"127.0.0.1:{port}"),
                                     sort_keys=False))
    proc = Process("prometheus", [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'prom-data'}",
                                  f"--web.listen-address=127.0.0.1:{port}"], workdir).start()
    proc.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{port}/-/ready"), 60, "/-/ready", stop)
    return proc, port


def alerts_page(base: str) -> str | None:
    """Prometheus's alerts page: ``/alerts`` in its React UI, ``/classic/alerts`` where only the
    classic UI is built in (Debian's package: its ``/alerts`` is a 404)."""
    for path in ("/alerts", "/classic/alerts"):
        if _http_ok(base + path):
            return base + path
    return None


# -- the demo ---------------------------------------------------------------------------------
def run_demo(args) -> int:
    from exporter.pgcluster import Cluster, ClusterError
    from exporter.server import Exporter, make_server
    from exporter.workload import Workload, setup_schema

    log.setup("info", "text")
    host, port = parse_listen("dbperf demo", "--listen", args.listen)
    duration = _seconds(getattr(args, "duration", 0) or 0)
    if duration is None:
        raise ConfigError("dbperf demo", "--duration", "must be a duration from 0 to 366d (90 for seconds, 10m, 1h), "
                          f"got {show(args.duration)}")
    interval = getattr(args, "scrape_interval", "5s") or "5s"
    seconds = _seconds(interval)
    if seconds is None or seconds < 1 or seconds != int(seconds):
        raise ConfigError("dbperf demo", "--scrape-interval", f"must be whole seconds, at least 1s, got {interval!r}")
    interval = f"{int(seconds)}s"
    with_app = not getattr(args, "no_app", False)
    with_bouncer = with_app and not getattr(args, "no_pgbouncer", False)
    with_prometheus = not getattr(args, "no_prometheus", False)
    with_standby = not getattr(args, "no_standby", False)
    with_mysql = not getattr(args, "no_mysql", False)
    global ANY_PORTS
    ANY_PORTS = bool(getattr(args, "any_ports", False))
    reason = _port_free(host, port)
    if reason:  # before anything starts: one line, exit 1 (exporter.cli.main prints it)
        raise RuntimeFailure(f"--listen {host}:{port}: cannot listen: {reason}")

    stop = threading.Event()
    stopped_by: list[tuple[int, str]] = []  # (exit code if still starting, why)

    def request_stop(code: int, why: str) -> None:
        if not stop.is_set():
            stopped_by.append((code, why))
            stop.set()

    def on_signal(signum, _frame):  # only asks: each step of the start checks, the cleanup is never cut short
        request_stop(128 + signum, signal.Signals(signum).name)

    def check() -> None:
        if stop.is_set():
            raise _Interrupted()

    signals = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # under nohup the demo is meant to outlive both
        signals.append(signal.SIGHUP)
        _watch_parent(stop, lambda: request_stop(128 + signal.SIGHUP, "its parent process exited"))
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    cluster = standby = workload = exporter = server = workdir = None
    mariadb: list = []
    mysql_start: concurrent.futures.Future | None = None
    processes: list[Process] = []
    threads: list = []

    def say(name: str, url: str) -> None:
        _say(f"dbperf demo: {name.ljust(12)} {url}")

    def optional(what: str, start):
        """Start an optional part; when it cannot start, say why in one line and go on without it."""
        if stop.is_set():
            return None
        try:
            return start()
        except DemoError as exc:
            if not stop.is_set():
                _say(f"dbperf demo: {what}: not started: {exc}")
            return None

    try:
        workdir = Path(tempfile.mkdtemp(prefix="dbperf-demo-"))
        os.chmod(workdir, 0o755)
        _say(f"dbperf demo: logs and data of the other parts in {workdir} (removed on exit)")
        if with_mysql:  # in the background, while PostgreSQL starts
            mysql_starter = concurrent.futures.ThreadPoolExecutor(1, "demo-mariadb")
            mysql_start = mysql_starter.submit(start_mariadb, workdir)
            mysql_starter.shutdown(wait=False)  # its one job still runs; the thread ends after it
        try:
            cluster = Cluster(settings={"autovacuum_naptime": "5s", "autovacuum_vacuum_scale_factor": "0.02",
                                        "autovacuum_analyze_scale_factor": "0.02"})
            log_format, log_settings = throwaway_settings(cluster.major())  # docs/server-log.md's settings
            cluster.settings.update(log_settings)
            _say(f"dbperf demo: starting a throwaway PostgreSQL in {cluster.root} (removed on exit)")
            check()
            cluster.init()
            check()
            cluster.start()
        except ClusterError as exc:
            _say(f"dbperf demo: cannot start PostgreSQL: {exc}", sys.stderr)
            return 1
        check()
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE shop")
            conn.execute("CREATE DATABASE shopapp")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        with psycopg.connect(cluster.dsn("shop"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        setup_schema(cluster.dsn("shop"))
        login_password = secrets.token_urlsafe(12)
        incidents.setup(cluster.dsn("shop"), login_password)
        cluster.require_password(incidents.LOGIN_ROLE)
        check()
        if with_standby:
            _say(f"dbperf demo: starting a streaming standby of it (replication slot {STANDBY_SLOT}) under {workdir}")
            standby = optional("standby", lambda: start_standby(cluster, workdir))
            check()
        workload = Workload(cluster.dsn("shop")).start()
        pipeline_runs = PipelineRuns(cluster.dsn("shop"), stop).start()
        threads.append(pipeline_runs)
        if mysql_start is not None:
            mariadb = optional("mariadb", mysql_start.result) or []
            load = mariadb and optional("mariadb", lambda: start_mysql_workload(mariadb, stop))
            if load:
                threads.append(load)
            elif mariadb:
                for mysql in mariadb:
                    mysql.cleanup()
                mariadb = []
            check()

        bouncer_port = None
        if with_bouncer:
            started = optional("pgbouncer", lambda: start_pgbouncer(workdir, cluster.port, stop))
            if started:
                processes.append(started[0])
                bouncer_port = started[1]

        targets = [{"name": "demo", "dsn": cluster.dsn("postgres"),
                    "statements": {"query_text": True, "slowest_query_info": True, "slow_threshold": 0.5},
                    # livelier than the defaults, for a demo watched for minutes, not days (the advisor's
                    # first run comes with the scrape below, as the workload starts: a short cache lets
                    # its findings follow the workload; the schema has a deliberate duplicate index)
                    "collectors": {"advisor": {"enabled": True, "ttl": "15s"}, "tables": {"ttl": "10s"},
                                   "indexes": {"ttl": "10s"}, "table_sizes": {"ttl": "1m"},
                                   "pipelines": {"ttl": "5s"}},
                    "server_log": {"path": str(cluster.datadir / "log"), "format": log_format, "interval": "1s",
                                   "client_network_prefix": 24},
                    "pipelines": {"sources": [{"type": "table", "database": "shop",
                                               "expected_intervals": {k: v[0] for k, v in PIPELINES.items()}}]}}]
        if standby is not None:
            targets.append({"name": "standby", "dsn": standby.dsn("postgres"),
                            "collectors": {"tables": {"ttl": "10s"}, "indexes": {"ttl": "10s"}}})
        if bouncer_port:
            targets.append({"name": "bouncer", "kind": "pgbouncer", "connect_timeout": "2s",
                            "dsn": f"host=127.0.0.1 port={bouncer_port} dbname=pgbouncer user=dbperf_stats"})
        for name, mysql in zip(("mysql-source", "mysql-replica"), mariadb):
            targets.append({"name": name, "kind": "mysql", "dsn": mysql.dsn(), "connect_timeout": "2s"})
        config = parse({"listen": args.listen, "state_dir": str(workdir / "state"), "targets": targets},
                       source="dbperf demo")
        exporter = Exporter(config)
        try:
            server = make_server(exporter, host, port)
        except OSError as exc:
            _say(f"dbperf demo: --listen {host}:{port}: cannot listen: {exc.strerror or exc}", sys.stderr)
            return 1
        threading.Thread(target=server.serve_forever, name="dbperf-http", daemon=True).start()
        exporter.probe("demo", 10.0)  # the first scrape starts the log reader: the incidents are all read
        threads.append(incidents.Incidents(cluster.dsn("shop"), cluster.dsn("shop", user=incidents.LOGIN_ROLE),
                                           login_password, stop).start())
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
        dbperf_address = f"{shown}:{server.server_address[1]}"
        base = f"http://{dbperf_address}"
        check()  # from here on a stop is the demo's normal end: parts not started yet are skipped
        say("metrics", f"{base}/metrics")
        say("probe", f"{base}/probe?target=demo")
        if standby is not None:
            say("probe", f"{base}/probe?target=standby")
        if bouncer_port:
            say("probe", f"{base}/probe?target=bouncer")
        for name, _ in zip(("mysql-source", "mysql-replica"), mariadb):
            say("probe", f"{base}/probe?target={name}")
        say("psql", f"psql \"{cluster.dsn('shop')}\"")
        if standby is not None:
            say("standby", f"psql \"{standby.dsn('shop')}\"  (read-only, streaming from the one above)")
        if bouncer_port:
            say("pgbouncer", f'psql "host=127.0.0.1 port={bouncer_port} dbname=shopapp user=postgres"')
        if mariadb:
            say("mariadb", f"mysql -h 127.0.0.1 -P {mariadb[0].port} -u root shop  (the source; its replica: "
                           f"-P {mariadb[1].port})")

        app_address = None
        if with_app:
            app_dsn = (f"host=127.0.0.1 port={bouncer_port} dbname=shopapp user=postgres" if bouncer_port
                       else cluster.dsn("shopapp"))
            started = optional("shop app", lambda: start_app(workdir, app_dsn, stop))
            if started:
                processes.append(started[0])
                app_address = f"127.0.0.1:{started[1]}"
                threads.append(Load(f"http://{app_address}", stop).start())
                say("shop app", f"http://{app_address}/products  (load running; its metrics: "
                                f"http://{app_address}/metrics)")

        if with_prometheus:
            am_address = None
            started = optional("alertmanager", lambda: start_alertmanager(workdir, stop))
            if started:
                processes.append(started[0])
                am_address = f"127.0.0.1:{started[1]}"
            started = optional("prometheus", lambda: start_prometheus(workdir, interval, dbperf_address,
                                                                       app_address, am_address, stop))
            if started:
                processes.append(started[0])
                rules = f"rules from {RULES.relative_to(ROOT)}" if RULES.is_dir() else "no rules found"
                prom = f"http://127.0.0.1:{started[1]}"
                say("prometheus", f"{prom}  (scrapes every {interval}; {rules})")
                page = alerts_page(prom)
                if page:
                    say("alerts", page)
            if am_address:
                say("alertmanager", f"http://{am_address}  (demo receivers: nothing is sent)")
        if not stop.is_set():
            _say("dbperf demo: grafana not started: `docker-compose up` runs Grafana with the dashboards, "
                 "or import dashboards/json/*.json (docs/dashboards.md)")
        _say("dbperf demo: running " + (f"for {duration:g} s" if duration else "until Ctrl-C"))

        end = time.monotonic() + duration if duration else None
        while not stop.is_set():
            remaining = 0.5 if end is None else end - time.monotonic()
            if remaining <= 0:
                break
            stop.wait(min(0.5, remaining))
        _say("dbperf demo: stopping" + (f": {stopped_by[0][1]}" if stopped_by else ""))
        return 0
    except _Interrupted:
        _say(f"dbperf demo: interrupted while starting ({stopped_by[0][1]}), cleaning up")
        return stopped_by[0][0]
    except (psycopg.Error, ClusterError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        _say(f"dbperf demo: failed: {type(exc).__name__}: {first}", sys.stderr)
        return 1
    finally:
        stop.set()
        for proc in reversed(processes):     # Prometheus first: nothing scrapes what is stopping
            if proc.name == "shop-app":
                for thread in threads:       # the load stops before the application it calls
                    _quietly(thread.join)
            _quietly(proc.stop)
        for thread in threads:
            _quietly(thread.join)
        if server is not None:
            _quietly(server.shutdown)
            _quietly(server.server_close)
        if exporter is not None:
            _quietly(exporter.close)
        if workload is not None:
            _quietly(workload.stop)
        if standby is not None:              # inside workdir: before it is removed
            _quietly(standby.cleanup)
        if mysql_start is not None and not mariadb:  # stopped while it started: wait for it, then clean up
            try:
                mariadb = mysql_start.result(timeout=120)
            except Exception:  # it failed: it removed what it had started
                pass
        for mysql in reversed(mariadb):
            _quietly(mysql.cleanup)
        if cluster is not None:
            _quietly(cluster.cleanup)
            _say(f"dbperf demo: removed {cluster.root}")
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
            _say(f"dbperf demo: removed {workdir}")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _quietly(step) -> None:
    try:
        step()
    except Exception as exc:  # one failed step must not skip the others (the cluster removal above all)
        LOG.warning("cleanup: %s failed: %s", getattr(step, "__qualname__", step), exc)
