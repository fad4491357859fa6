"""Shared fixtures: a throwaway PostgreSQL cluster (or $DBPERF_TEST_DSN), dbperf served over real
HTTP, and helpers to read metric values. Nothing is mocked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import parse
from exporter.pgcluster import Cluster, free_port
from exporter.server import Exporter, serve_in_thread

pytest_plugins = ["tiers"]  # the test tiers: tests/tiers.py

ROOT = Path(__file__).resolve().parent.parent
SECOND_DB = "dbperf_second"


class PG:
    """Where the test PostgreSQL is: ``dsn(dbname)`` and a ``cluster`` (None for an external DSN,
    whose tests that stop the server are then skipped with the reason)."""

    def __init__(self, cluster: Cluster | None, base_dsn: str | None):
        self.cluster = cluster
        self.base_dsn = base_dsn

    def dsn(self, dbname: str = "postgres", **extra) -> str:
        from psycopg.conninfo import make_conninfo

        base = self.cluster.dsn() if self.cluster else self.base_dsn
        return make_conninfo(base, dbname=dbname, **extra)

    def connect(self, dbname: str = "postgres", **kw) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=True, **kw)

    def execute(self, sql: str, dbname: str = "postgres", params=None):
        with self.connect(dbname) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else None


@pytest.fixture(scope="session")
def pg():
    external = os.environ.get("DBPERF_TEST_DSN")
    if external:
        handle = PG(None, external)
        _prepare(handle)
        yield handle
        return
    # room for every statement the whole suite runs: a test that counts its own statements in
    # pg_stat_statements must not see them evicted by the statements of the tests before it
    with Cluster(settings={"pg_stat_statements.max": "50000"}) as cluster:
        handle = PG(cluster, None)
        _prepare(handle)
        yield handle


MYSQL_USER, MYSQL_PASSWORD = "dbperf", "s3cr%t-pw@x"  # a password with URL-special characters


@pytest.fixture(scope="session")
def mariadb():
    """A throwaway MariaDB (exporter.mysqlcluster, Debian's mariadb-server) for the whole session,
    with a monitoring user ``dbperf`` (MYSQL_PASSWORD) granted what dbperf reads: ``dsn()`` is its
    DSN. Started on first use only."""
    from exporter.mysqlcluster import MariaDB

    with MariaDB() as server:
        for sql in (f"CREATE USER '{MYSQL_USER}'@'127.0.0.1' IDENTIFIED BY '{MYSQL_PASSWORD}'",
                    f"GRANT PROCESS, REPLICATION CLIENT, SLAVE MONITOR ON *.* TO '{MYSQL_USER}'@'127.0.0.1'",
                    # information_schema.tables lists only the tables the user may read
                    f"GRANT SELECT ON *.* TO '{MYSQL_USER}'@'127.0.0.1'",
                    "CREATE DATABASE dbperf_test"):
            server.execute(sql)
        yield server


@pytest.fixture(scope="session")
def mariadb_pair():
    """``(primary, replica)``: two throwaway MariaDB servers, the replica replicating from the
    primary through the connection ``upstream`` (GTID, MASTER_USE_GTID = slave_pos), read-only,
    caught up with the primary's ``CREATE DATABASE replicated``. Started on first use only."""
    from exporter.mysqlcluster import MariaDB

    with MariaDB(settings={"server-id": "1", "log-bin": "mariadb-bin"}) as primary, \
            MariaDB(settings={"server-id": "2", "read-only": "ON"}) as replica:
        primary.execute("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl-pw'")
        primary.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
        replica.execute(f"CHANGE MASTER 'upstream' TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {primary.port}, "
                        "MASTER_USER = 'repl', MASTER_PASSWORD = 'repl-pw', MASTER_USE_GTID = slave_pos")
        replica.execute("START SLAVE 'upstream'")
        primary.execute("CREATE DATABASE replicated")
        wait_until(lambda: replica.execute("SHOW DATABASES LIKE 'replicated'"), timeout=30,
                   message="the replica applying the primary's CREATE DATABASE")
        yield primary, replica


def mysql_dsn(server, password: str = MYSQL_PASSWORD) -> str:
    """The monitoring user's DSN for ``server`` (the password percent-encoded in the URL)."""
    from urllib.parse import quote

    return f"mysql://{MYSQL_USER}:{quote(password, safe='')}@127.0.0.1:{server.port}/"


def _prepare(handle: PG) -> None:
    handle.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    if not handle.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(SECOND_DB,)):
        handle.execute(f"CREATE DATABASE {SECOND_DB}")


def make_config(pg: PG, extra_target: dict | None = None, **top) -> object:
    target = {"name": "main", "dsn": pg.dsn("postgres")}
    target.update(extra_target or {})
    data = {"targets": [target], "listen": "127.0.0.1:0"}
    data.update(top)
    return parse(data, source="test-config")


class Served:
    """A dbperf Exporter behind a real HTTP server on loopback (on ``port``, default any free one)."""

    def __init__(self, exporter: Exporter, port: int = 0):
        self.exporter = exporter
        self.server, self.thread = serve_in_thread(exporter, port=port)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def get(self, path: str = "/metrics", headers: dict | None = None, timeout: float = 30) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self, path: str = "/metrics", **kw) -> "Samples":
        status, text = self.get(path, **kw)
        assert status == 200, text
        return Samples(text)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.exporter.close()


@pytest.fixture
def serve():
    """``serve(config) -> Served``; everything started is stopped after the test."""
    started = []

    def start(config) -> Served:
        served = Served(Exporter(config))
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


class Samples:
    """Parsed exposition text: ``value(name, **labels)`` and ``series(name, **labels)``."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def series(self, name: str, **labels) -> list:
        return [s for s in self.samples if s.name == name
                and all(s.labels.get(k) == str(v) for k, v in labels.items())]

    def value(self, name: str, **labels) -> float:
        found = self.series(name, **labels)
        assert len(found) == 1, f"{name}{labels}: expected one series, found {len(found)}: {found[:5]}"
        return found[0].value

    def has(self, name: str, **labels) -> bool:
        return bool(self.series(name, **labels))

    def names(self) -> set:
        return {s.name for s in self.samples}


class SleepCollector:
    """A test collector whose real query takes a known time (``pg_sleep``)."""

    def __new__(cls, name: str, seconds: float, ttl: float = 0.0, optional: bool = True):
        from exporter.collector import Collector
        from exporter.metrics import Family

        class _Sleep(Collector):
            def collect(self, conn, ctx, timeout):
                (_, rows), = conn.query(f"SELECT pg_sleep({seconds}), 42", timeout)
                fam = Family(f"test_{name}_value", "gauge", "test")
                fam.add((), rows[0][1])
                return [fam]

        return _Sleep(name=name, optional=optional, default_timeout=30, default_ttl=ttl)


def tool_search_path() -> str:
    """Where the tests look for tools: the running interpreter's own bin directory first (the
    venv's gunicorn and uvicorn, whether or not the venv is on ``PATH``), then ``PATH``."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])


def require_tool(name: str) -> str:
    """The path of a tool CI installs; a missing tool fails the test (never a silent skip)."""
    path = shutil.which(name, path=tool_search_path())
    assert path, f"{name} is not installed: run ./scripts/test, which installs it"
    return path


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


def promtool_check_metrics(text: str) -> str:
    proc = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    return (proc.stdout + proc.stderr).strip() if proc.returncode else ""


# -- real processes on loopback --------------------------------------------------------------

def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class Proc:
    """A real server process in ``workdir``, ready when ``ready_url`` answers 200."""

    def __init__(self, args: list[str], workdir: Path, ready_url: str, name: str, timeout: float = 30,
                 remove_workdir: bool = False):
        self.workdir = workdir
        self.remove_workdir = remove_workdir  # the helper made the directory: stop() removes it
        self.log = workdir / f"{name}.log"
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), cwd=workdir)
        self.name = name
        wait_until(lambda: self.proc.poll() is None and http_ok(ready_url), timeout=timeout,
                   message=f"{name} ready ({self.log})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Prometheus(Proc):
    """The real Debian ``prometheus`` with the given scrape configs and rule files."""

    def __init__(self, scrape_configs: list[dict], rule_files: list[str] = (), alertmanager_url: str | None = None,
                 workdir: Path | None = None, interval: str = "1s", extra_args: tuple = (), timeout: float = 30,
                 remote_write: list[dict] = ()):
        owned = workdir is None
        workdir = workdir or Path(tempfile.mkdtemp(prefix="dbperf-prom-"))
        config = {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
                  "rule_files": list(rule_files), "scrape_configs": scrape_configs}
        if remote_write:
            config["remote_write"] = list(remote_write)
        if alertmanager_url:
            config["alerting"] = {"alertmanagers": [{"static_configs": [
                {"targets": [alertmanager_url.removeprefix("http://")]}]}]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([require_tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
                          f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                          *extra_args], workdir, self.url + "/-/ready", "prometheus", timeout, owned)

    def query(self, expr: str) -> list:
        data = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=5).json()
        assert data["status"] == "success", data
        return data["data"]["result"]


def processes_using(path: Path) -> list:
    """Processes whose command line names ``path`` (what a demo or cluster may have left behind)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(str(path) in part for part in proc.info["cmdline"] or ()):
                found.append(proc.info)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found
