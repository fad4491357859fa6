"""PgBouncer targets against a real PgBouncer (Debian's /usr/sbin/pgbouncer) in front of the test
PostgreSQL: pool saturation seen while it happens, counters in seconds, a PgBouncer that is down or
frozen gives pgbouncer_up 0 within the deadline, and the configuration and docs stay true."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from conftest import ROOT, Samples, promtool_check_metrics, wait_until
from exporter.collector import ServerInfo
from exporter.config import ConfigError, Target, parse
from exporter.pgbouncer import PgBouncerCollector, PgBouncerScraper
from exporter.pgcluster import free_port
from exporter.scrape import Outcome, TargetScraper

pytestmark = pytest.mark.pg

POOL_SIZE = 2
CLIENTS = 6
SLEEP = 2.0


class Bouncer:
    """A PgBouncer process in a temp dir, run as ``nobody`` when the tests run as root (PgBouncer
    refuses root). Database ``app`` points at the test PostgreSQL's ``postgres`` database."""

    def __init__(self, pg_dsn: str):
        self.binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        assert Path(self.binary).exists(), "pgbouncer is not installed: apt-get install pgbouncer"
        backend = conninfo_to_dict(pg_dsn)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="dbperf-pgbouncer-"))
        (self.root / "users.txt").write_text('"postgres" ""\n"dbperf_stats" ""\n')
        (self.root / "pgbouncer.ini").write_text(f"""[databases]
app = host={backend.get('host', '127.0.0.1')} port={backend.get('port', 5432)} dbname=postgres user={backend.get('user', 'postgres')}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.root}/users.txt
admin_users = postgres
stats_users = dbperf_stats
pool_mode = transaction
default_pool_size = {POOL_SIZE}
reserve_pool_size = 0
max_client_conn = 50
stats_period = 1
server_check_delay = 30
logfile = {self.root}/pgbouncer.log
""")
        self.user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        if self.user is not None:
            os.chmod(self.root, 0o755)
            for path in [self.root, *self.root.iterdir()]:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Bouncer":
        user = self.user

        def demote():  # in the child, before exec
            if user is not None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        self.proc = subprocess.Popen([self.binary, str(self.root / "pgbouncer.ini")], cwd=self.root,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=demote)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"pgbouncer exited: {self.log()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"pgbouncer did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text()[-2000:] if path.exists() else "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case a test froze it
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=pgbouncer user=dbperf_stats"  # stats_users only

    def app_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=app user=postgres"


@pytest.fixture
def bouncer(pg):
    b = Bouncer(pg.dsn()).start()
    yield b
    b.cleanup()


def bouncer_config(b: Bouncer, **top):
    data = {"listen": "127.0.0.1:0", "host_metrics": False,
            "targets": [{"name": "bouncer", "kind": "pgbouncer", "dsn": b.admin_dsn(), "connect_timeout": "2s"}]}
    data.update(top)
    return parse(data, source="test-config")


def database_value(samples, metric: str, name: str) -> float:
    """A SHOW DATABASES value; its ``name`` label clashes with ``Samples.value``'s argument."""
    found = [x for x in samples.series(metric, target="bouncer") if x.labels.get("name") == name]
    assert len(found) == 1, f"{metric}{{name={name!r}}}: {found}"
    return found[0].value


def counter(samples, name: str, **labels) -> float:
    """A counter's value, 0 when PgBouncer has no row for it yet."""
    found = samples.series(name, **labels)
    return found[0].value if found else 0.0


def test_pool_saturation_is_visible_while_it_happens_and_counters_add_up(pg, bouncer, serve):
    served = serve(bouncer_config(bouncer))
    probe = "/probe?target=bouncer"
    before = served.metrics(probe)
    assert before.value("pgbouncer_up", target="bouncer") == 1
    (info,) = before.series("pgbouncer_version_info", target="bouncer")
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", info.labels["version"]) and info.value == 1
    assert database_value(before, "pgbouncer_databases_pool_size", "app") == POOL_SIZE
    assert before.value("pgbouncer_config_max_client_connections", target="bouncer") == 50
    assert before.value("dbperf_collector_success", target="bouncer", collector="pgbouncer") == 1
    base = {name: counter(before, name, database="app") for name in (
        "pgbouncer_stats_queries_pooled_total", "pgbouncer_stats_sql_transactions_pooled_total",
        "pgbouncer_stats_queries_duration_seconds_total", "pgbouncer_stats_client_wait_seconds_total",
        "pgbouncer_stats_received_bytes_total", "pgbouncer_stats_sent_bytes_total")}

    errors = []

    def client():
        try:
            with psycopg.connect(bouncer.app_dsn(), autocommit=True, prepare_threshold=None) as conn:
                conn.execute(f"SELECT pg_sleep({SLEEP})")
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()

    def saturated():
        s = served.metrics(probe)
        pool = dict(target="bouncer", database="app", user="postgres")
        if (s.has("pgbouncer_pools_client_waiting_connections", **pool)
                and s.value("pgbouncer_pools_client_waiting_connections", **pool) >= 1
                # PgBouncer opens the pool's server connections one by one: wait for both
                and s.value("pgbouncer_pools_server_active_connections", **pool) == POOL_SIZE):
            return s
        return None

    during = wait_until(saturated, timeout=SLEEP * 2, interval=0.1, message="both server connections busy and clients waiting")
    pool = dict(target="bouncer", database="app", user="postgres")
    assert during.value("pgbouncer_pools_server_active_connections", **pool) == POOL_SIZE
    # cl_active counts clients linked to a server and idle clients that have not sent their query
    active = during.value("pgbouncer_pools_client_active_connections", **pool)
    assert POOL_SIZE <= active and active + during.value("pgbouncer_pools_client_waiting_connections", **pool) <= CLIENTS
    assert during.value("pgbouncer_pools_server_utilization_ratio", **pool) == 1.0
    assert during.value("pgbouncer_pools_client_waiting_connections", **pool) <= CLIENTS - POOL_SIZE
    # seen well within the first second of waiting: maxwait's whole seconds are still 0, so this
    # needs maxwait_us; and it is seconds, never more than the load has run (a µs/s mix-up shows)
    assert 0 < during.value("pgbouncer_pools_client_maxwait_seconds", **pool) < SLEEP * CLIENTS / POOL_SIZE
    assert promtool_check_metrics(during.text) == ""

    for t in threads:
        t.join(timeout=SLEEP * CLIENTS)
    assert not errors, errors

    def settled():
        s = served.metrics(probe)
        done = counter(s, "pgbouncer_stats_queries_pooled_total", database="app") - base["pgbouncer_stats_queries_pooled_total"]
        return s if done >= CLIENTS else None

    after = wait_until(settled, timeout=5, interval=0.2, message=f"{CLIENTS} more pooled queries")
    assert after.value("pgbouncer_pools_client_waiting_connections", **pool) == 0
    assert after.value("pgbouncer_pools_client_maxwait_seconds", **pool) == 0
    assert after.value("pgbouncer_pools_server_active_connections", **pool) == 0

    def grew(name):
        return counter(after, name, database="app") - base[name]

    assert grew("pgbouncer_stats_queries_pooled_total") == CLIENTS
    assert grew("pgbouncer_stats_sql_transactions_pooled_total") == CLIENTS
    # six 2 s queries: at least 12 s of query time, in seconds (not microseconds)
    assert CLIENTS * SLEEP * 0.95 <= grew("pgbouncer_stats_queries_duration_seconds_total") < CLIENTS * SLEEP * 3
    # four clients queued behind the two running ones: 2 x 2 s + 2 x 4 s = 12 s of waiting
    assert 6 <= grew("pgbouncer_stats_client_wait_seconds_total") < 30
    assert grew("pgbouncer_stats_received_bytes_total") > 0
    assert grew("pgbouncer_stats_sent_bytes_total") > 0
    assert database_value(after, "pgbouncer_databases_current_connections", "app") == POOL_SIZE
    assert promtool_check_metrics(after.text) == ""


def test_stopped_pgbouncer_gives_up_0_fast_and_recovers(bouncer, serve):
    served = serve(bouncer_config(bouncer))
    assert served.metrics().value("pgbouncer_up", target="bouncer") == 1
    bouncer.stop()
    start = time.monotonic()
    status, text = served.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "3"})
    assert status == 200
    assert time.monotonic() - start < 3
    down = Samples(text)
    assert down.value("pgbouncer_up", target="bouncer") == 0
    assert down.value("dbperf_collector_success", target="bouncer", collector="pgbouncer") == 0
    assert not down.has("pgbouncer_pools_client_active_connections")
    assert promtool_check_metrics(text) == ""

    bouncer.start()  # same port: dbperf reconnects on its own (after its short backoff)
    wait_until(lambda: served.metrics().value("pgbouncer_up", target="bouncer") == 1, timeout=15,
               message="pgbouncer_up back to 1")


def test_frozen_pgbouncer_gives_up_0_within_the_deadline(bouncer, serve):
    served = serve(bouncer_config(bouncer))
    assert served.metrics().value("pgbouncer_up", target="bouncer") == 1  # connection open
    os.kill(bouncer.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(2):  # the stuck query, then the connect that cannot finish
            start = time.monotonic()
            status, text = served.get("/probe?target=bouncer", headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"})
            took = time.monotonic() - start
            assert status == 200, text
            assert took < 2.5, f"scrape of a frozen PgBouncer took {took:.1f}s"
            assert "pgbouncer_up{target=\"bouncer\"} 0" in text
        # the query stuck on the frozen PgBouncer was broken off: no session is left hanging
        assert "dbperf_target_connections{target=\"bouncer\"} 0" in text
    finally:
        os.kill(bouncer.proc.pid, signal.SIGCONT)
    wait_until(lambda: served.metrics().value("pgbouncer_up", target="bouncer") == 1, timeout=15,
               message="pgbouncer_up back to 1 after SIGCONT")


def test_pgbouncer_and_postgres_targets_side_by_side(pg, bouncer, serve):
    config = parse({"listen": "127.0.0.1:0", "host_metrics": False, "targets": [
        {"name": "main", "dsn": pg.dsn("postgres")},
        {"name": "bouncer", "kind": "pgbouncer", "dsn": bouncer.admin_dsn()}]}, source="test-config")
    samples = serve(config).metrics()
    assert samples.value("pg_up", target="main") == 1
    assert samples.value("pgbouncer_up", target="bouncer") == 1
    assert not samples.has("pg_up", target="bouncer")
    assert not samples.has("pgbouncer_up", target="main")
    assert samples.value("dbperf_scrape_duration_seconds", target="bouncer") > 0
    assert promtool_check_metrics(samples.text) == ""


@pytest.mark.parametrize("target, key, reason", [
    ({"kind": "pgbouncr"}, "targets[0].kind", "must be one of postgres, pgbouncer, mysql"),
    ({"kind": "pgbouncer", "databases": {"discover": False}}, "targets[0].databases", "unknown key"),
    ({"kind": "pgbouncer", "collectors": {}}, "targets[0].collectors", "unknown key"),
    ({"kind": "pgbouncer", "dsn": "host=127.0.0.1 dbname=app"}, "targets[0].dsn", "dbname must be pgbouncer"),
])
def test_config_errors_name_the_key(target, key, reason):
    raw = {"name": "b", "dsn": "host=127.0.0.1 port=6432 dbname=pgbouncer user=stats"}
    raw.update(target)
    with pytest.raises(ConfigError) as err:
        parse({"targets": [raw]}, source="c.yaml")
    assert err.value.key == key and reason in err.value.reason, str(err.value)


def test_config_kind_defaults_to_postgres_and_pgbouncer_dbname_defaults():
    config = parse({"targets": [{"name": "p", "dsn": "host=x"},
                                {"name": "b", "kind": "pgbouncer", "dsn": "host=x port=6432 user=stats",
                                 "connect_timeout": "1s"}]})
    assert [t.kind for t in config.targets] == ["postgres", "pgbouncer"]
    assert config.targets[1].connect_timeout == 1.0
    scraper = PgBouncerScraper(config.targets[1])
    try:
        assert "dbname=pgbouncer" in scraper.main.description
    finally:
        scraper.close()


def test_self_metrics_match_the_postgres_scraper():
    """Families both scrapers emit keep one type, label set and help (they share one header)."""
    pgb = PgBouncerScraper(Target(name="b", dsn="host=127.0.0.1 port=1", kind="pgbouncer"))
    pgs = TargetScraper(Target(name="p", dsn="host=127.0.0.1 port=1"), ())
    try:
        ours = {f.name: f for f in pgb._self_metrics(None, [], 0.0)}
        theirs = {f.name: f for f in pgs._self_metrics(None, [], 0.0)}
    finally:
        pgb.close()
        pgs.close()
    shared = set(ours) & set(theirs)
    assert {"dbperf_collector_success", "dbperf_scrape_duration_seconds", "dbperf_collector_errors_total"} <= shared
    for name in shared:
        assert (ours[name].type, ours[name].labelnames, ours[name].help) == \
            (theirs[name].type, theirs[name].labelnames, theirs[name].help), name


def test_docs_list_every_family():
    doc = (ROOT / "docs" / "pgbouncer.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_:]+)`", doc, flags=re.M))
    pgb = PgBouncerScraper(Target(name="b", dsn="host=127.0.0.1 port=1", kind="pgbouncer"))
    try:
        emitted = [f.name for f in PgBouncerCollector().describe()]
        up = ServerInfo(version=11800, in_recovery=False, version_text="1.18.0")
        emitted += [f.name for f in pgb._self_metrics(up, [Outcome("pgbouncer", "", True)], 0.0)]
    finally:
        pgb.close()
    missing = sorted(set(emitted) - documented)
    assert not missing, f"not in docs/pgbouncer.md: {missing}"
    stale = sorted(n for n in documented - set(emitted))
    assert not stale, f"in docs/pgbouncer.md but never emitted: {stale}"


def test_check_config_connect_reports_pgbouncer_and_its_collector(bouncer):
    import io

    from exporter.checkconnect import check_targets

    out = io.StringIO()
    assert check_targets(bouncer_config(bouncer), out=out) == []
    text = out.getvalue()
    assert re.search(r"target bouncer: connected to PgBouncer \d+\.\d+(\.\d+)? \(host=127\.0\.0\.1 ", text), text
    assert "\n  pgbouncer: runs\n" in text, text
    bouncer.stop()
    out = io.StringIO()
    [failure] = check_targets(bouncer_config(bouncer), out=out)
    assert failure.startswith(f"--connect: target 'bouncer': cannot connect to host=127.0.0.1 port={bouncer.port} "
                              "dbname=pgbouncer user=dbperf_stats"), failure


@pytest.mark.parametrize("text, number", [("1.18.0", 11800), ("1.23.1", 12301), ("1.7", 10700), ("2.0.0-rc1", 20000),
                                          ("unknown", 0)])
def test_show_version_becomes_a_version_number_and_keeps_its_text(text, number):
    from exporter.pgbouncer import PGBOUNCER

    server = PGBOUNCER.server_info([(["version"], [(f"PgBouncer {text}",)])])
    assert (server.version, server.version_text) == (number, text)
