"""The server-log reader against real servers that log what the docs ask for: jsonlog and stderr on the
machine's PostgreSQL (15+), csvlog on PostgreSQL 13 (tests/pgdist.py); one cluster per format.
Counts are checked against what the test did, as deltas of the metrics dbperf serves."""

from __future__ import annotations

import json
from pathlib import Path
import threading

import psycopg
import pytest
import requests

from conftest import Samples, promtool_check_metrics, wait_until
from exporter import private
from exporter.config import parse
from exporter.pgcluster import Cluster
from exporter.server import Exporter
from exporter.serverlog.collector import ServerLogCollector
from exporter.serverlog.follow import wanted
from exporter.serverlog.options import SUFFIXES

pytestmark = pytest.mark.pg

TOKEN = "serverlog-test-token-0123456789"
PASSWORD = "right-horse-battery"
SETTINGS = {
    "logging_collector": "on", "log_rotation_age": "0", "log_rotation_size": "0",
    "log_filename": "'postgresql-%Y%m%d_%H%M%S'", "lc_messages": "'C'",
    "log_connections": "on", "log_disconnections": "on", "log_lock_waits": "on", "deadlock_timeout": "'100ms'",
    "log_temp_files": "0", "log_checkpoints": "on", "log_autovacuum_min_duration": "0", "autovacuum_naptime": "1",
    "log_min_duration_statement": "'200ms'", "log_statement": "'ddl'",
    "password_encryption": "'scram-sha-256'",
    "shared_preload_libraries": "'pg_stat_statements,auto_explain'", "auto_explain.log_min_duration": "'200ms'",
}


PREFIX = "%m [%p] %q%u@%d %h %e "


@pytest.fixture(scope="module", params=[("jsonlog", None), ("csvlog", 13), ("stderr", None)],
                ids=["jsonlog", "csvlog13", "stderr"])
def logged(request, tmp_path_factory):
    fmt, major = request.param
    bindir = None
    if major is not None:
        from pgdist import bindir as dist_bindir

        bindir = dist_bindir(major)
    settings = dict(SETTINGS, log_destination=f"'{fmt}'", log_line_prefix=f"'{PREFIX}'")
    if major is None or major >= 14:
        settings["compute_query_id"] = "on"
    cluster = Cluster(settings=settings, bindir=bindir)
    settings["log_directory"] = f"'{cluster.root / 'log'}'"
    cluster.settings.update(settings)
    with cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
            conn.execute("CREATE TABLE locked (id int PRIMARY KEY, v int)")
            conn.execute("INSERT INTO locked VALUES (1, 0), (2, 0)")
            conn.execute("GRANT ALL ON locked TO app")
        cluster.require_password("app")
        yield cluster, fmt, tmp_path_factory.mktemp(f"state-{fmt}")


def exporter_for(logged, remote: bool = False, user: str = "postgres", state=None) -> Exporter:
    cluster, fmt, module_state = logged
    state = state or module_state
    where = {"remote": True} if remote else {"path": str(cluster.root / "log")}
    config = parse({"targets": [{"name": "main", "dsn": cluster.dsn(user=user),
                                 "server_log": {**where, "format": fmt, "interval": 0.1, "client_network_prefix": 24,
                                                **({"prefix": PREFIX} if fmt == "stderr" else {})}}],
                    "state_dir": str(state / ("remote" if remote else "local")),
                    "private_endpoints": {"token_env": "TOK"}},
                   source="test-config", env={"TOK": TOKEN})
    return Exporter(config, collectors=(ServerLogCollector(),))


@pytest.fixture(scope="module")
def exp(logged):
    box = {"exporter": exporter_for(logged)}
    started(box["exporter"])
    yield box
    box["exporter"].close()


def started(exporter) -> None:
    """The first scrape starts the reader; its first read puts it at the end of the log."""
    scrape(exporter)
    wait_until(lambda: exporter.scrapers["main"].collectors[0].shared.reader.reads > 0, message="a first read")


def scrape(exporter) -> Samples:
    return Samples(exporter.probe("main", 10.0).decode())


def total(samples: Samples, name: str, **labels) -> float:
    return sum(s.value for s in samples.series(name, **labels))


def settled(exporter, name: str, expected: float, **labels) -> Samples:
    """The scrape where ``name`` (summed over ``labels``) reached ``expected`` with nothing left to read."""
    def done():
        samples = scrape(exporter)
        if total(samples, name, **labels) >= expected and samples.value("dbperf_log_reader_lag_bytes") == 0:
            return samples
        return None
    samples = wait_until(done, timeout=30, message=f"{name}{labels} >= {expected}")
    assert total(samples, name, **labels) == expected
    return samples


def login(cluster, password: str) -> None:
    with psycopg.connect(cluster.dsn(user="app") + f" password={password}", autocommit=True) as conn:
        conn.execute("SELECT 1")


def events(exporter, kind: str) -> list:
    status, body, _ = private.answer(exporter, "/events", f"target=main&kind={kind}", f"Bearer {TOKEN}")
    assert status == 200, body
    return json.loads(body)["events"]


def test_logins_and_wrong_passwords(logged, exp):
    cluster, fmt, _ = logged
    e = exp["exporter"]
    before = scrape(e)
    psycopg.connect(cluster.dsn(), autocommit=True).close()  # postgres: trust
    for _ in range(3):
        login(cluster, PASSWORD)
    for _ in range(2):
        with pytest.raises(psycopg.OperationalError):
            login(cluster, "wrong")
    s = settled(e, "pg_log_auth_failures_total", total(before, "pg_log_auth_failures_total", user="app") + 2,
                user="app", reason="password")
    s = settled(e, "pg_log_connections_total", total(before, "pg_log_connections_total", user="app") + 3, user="app")
    assert s.value("pg_log_connections_total", user="app", datname="postgres",
                   method="unknown" if cluster.bindir.parent.parent.name.startswith("13") else "scram-sha-256") >= 3
    assert total(s, "pg_log_auth_failures_by_network_total", network="127.0.0.0/24") >= 2
    if fmt != "stderr" and not cluster.bindir.parent.parent.name.startswith("13"):
        assert total(s, "pg_log_connections_total", user="postgres", method="trust") >= 1
    s = settled(e, "pg_log_disconnections_total", total(before, "pg_log_disconnections_total", user="app") + 3,
                user="app")
    assert total(s, "pg_log_session_duration_seconds_count") >= 3
    access = events(e, "access")
    assert any(ev.get("reason") == "password" and ev["user"] == "app" and ev["client"] == "127.0.0.1" for ev in access)


def test_deadlocks_and_lock_waits(logged, exp):
    cluster, _, _ = logged
    e = exp["exporter"]
    before = scrape(e)
    with psycopg.connect(cluster.dsn()) as holder, psycopg.connect(cluster.dsn(), autocommit=True) as waiter:
        holder.execute("UPDATE locked SET v = v + 1 WHERE id = 1")
        blocked = threading.Thread(target=lambda: waiter.execute("UPDATE locked SET v = v + 1 WHERE id = 1"))
        blocked.start()
        settled(e, "pg_log_lock_waits_total", total(before, "pg_log_lock_waits_total") + 1)
        holder.commit()
        blocked.join(10)
    s = settled(e, "pg_log_lock_wait_seconds_count", total(before, "pg_log_lock_wait_seconds_count") + 1)
    deadlocks = 2
    for _ in range(deadlocks):
        deadlock(cluster)
    s = settled(e, "pg_log_deadlocks_total", total(before, "pg_log_deadlocks_total") + deadlocks)
    assert total(s, "pg_log_errors_total", sqlstate="40P01", condition="deadlock_detected") == \
        total(before, "pg_log_errors_total", sqlstate="40P01") + deadlocks
    lock = [ev for ev in events(e, "lock") if ev.get("sqlstate") == "40P01"]
    assert len(lock) >= deadlocks
    assert any("UPDATE locked SET v = v + ? WHERE id = ?" in st["statement"] for st in lock[-1]["statements"])


def deadlock(cluster) -> None:
    with psycopg.connect(cluster.dsn()) as a, psycopg.connect(cluster.dsn()) as b:
        a.execute("UPDATE locked SET v = v + 1 WHERE id = 1")
        b.execute("UPDATE locked SET v = v + 1 WHERE id = 2")
        failures = []

        def second(conn, row):
            try:
                conn.execute(f"UPDATE locked SET v = v + 1 WHERE id = {row}")
            except psycopg.errors.DeadlockDetected:
                failures.append(row)
            conn.rollback()
        threads = [threading.Thread(target=second, args=(a, 2)), threading.Thread(target=second, args=(b, 1))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(failures) == 1


def test_checkpoint_temp_file_errors_ddl(logged, exp):
    cluster, _, _ = logged
    e = exp["exporter"]
    before = scrape(e)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        conn.execute("SET work_mem = '64kB'")
        conn.execute("SELECT count(*) FROM (SELECT g FROM generate_series(1, 200000) g ORDER BY g DESC) s")
        conn.execute("CREATE TABLE ddl_probe (id int PRIMARY KEY)")
        conn.execute("INSERT INTO ddl_probe VALUES (1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO ddl_probe VALUES (1)")
        conn.execute("DROP TABLE ddl_probe")
    s = settled(e, "pg_log_checkpoints_total", total(before, "pg_log_checkpoints_total", reason="immediate") + 1,
                reason="immediate")
    # "complete" is a line of its own, which may come after the CHECKPOINT returned
    s = settled(e, "pg_log_checkpoints_completed_total", total(before, "pg_log_checkpoints_completed_total") + 1)
    assert total(s, "pg_log_checkpoint_seconds_total") >= total(before, "pg_log_checkpoint_seconds_total")
    assert s.value("pg_log_checkpoint_write_seconds_total") >= 0 and s.value("pg_log_checkpoint_sync_seconds_total") >= 0
    s = settled(e, "pg_log_ddl_total", total(before, "pg_log_ddl_total", command="DROP TABLE") + 1, command="DROP TABLE")
    assert total(s, "pg_log_ddl_total", command="CREATE TABLE") == total(before, "pg_log_ddl_total",
                                                                         command="CREATE TABLE") + 1
    assert total(s, "pg_log_temp_files_total", datname="postgres") >= total(before, "pg_log_temp_files_total") + 1
    assert total(s, "pg_log_temp_file_bytes_sum") > total(before, "pg_log_temp_file_bytes_sum")
    assert total(s, "pg_log_errors_total", sqlstate="23505") == total(before, "pg_log_errors_total", sqlstate="23505") + 1
    assert total(s, "pg_log_messages_total", severity="ERROR", sqlstate_class="23") >= 1
    ddl = events(e, "ddl")
    assert ddl[-1]["command"] == "DROP TABLE" and ddl[-1]["statement"] == "DROP TABLE ddl_probe"


def test_slow_statement_with_plan(logged, exp):
    cluster, _, _ = logged
    e = exp["exporter"]
    before = scrape(e)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(0.3), 'secret literal'")
    settled(e, "pg_log_statement_duration_seconds_count",
            total(before, "pg_log_statement_duration_seconds_count", datname="postgres") + 1, datname="postgres")
    slow = wait_until(lambda: [ev for ev in events(e, "slow") if "pg_sleep" in ev.get("statement", "")], timeout=10)
    event = slow[-1]
    assert event["statement"] == "SELECT pg_sleep(?), ?" and event["duration_seconds"] >= 0.3
    assert "Result" in event["plan"] and "secret literal" not in json.dumps(event)


def test_events_over_http_need_the_token(logged, exp):
    from exporter.server import serve_in_thread

    cluster, _, _ = logged
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(0.25), 'over http'")
    server, _ = serve_in_thread(exp["exporter"], port=0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/events?target=main&kind=slow"
        assert requests.get(url, timeout=10).status_code == 401

        def served():
            answer = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
            return [ev for ev in answer.json()["events"] if ev["statement"] == "SELECT pg_sleep(?), ?"]
        assert wait_until(served, message="the slow statement over HTTP")
    finally:
        server.shutdown()
        server.server_close()


def test_autovacuum(logged, exp):
    cluster, _, _ = logged
    e = exp["exporter"]
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE vac_probe (id int)")
        conn.execute("INSERT INTO vac_probe SELECT generate_series(1, 2000)")
        conn.execute("DELETE FROM vac_probe")
    s = wait_until(lambda: (lambda s: s if total(s, "pg_log_autovacuum_total", relname="vac_probe", operation="vacuum")
                            else None)(scrape(e)), timeout=60, message="an autovacuum of vac_probe")
    assert total(s, "pg_log_autovacuum_tuples_removed_total", relname="vac_probe", schemaname="public") > 0


def rotate(cluster, fmt: str) -> None:
    """A new log file of the format: log_filename has a resolution of one second, so a rotation
    within the second of the last one reopens the same file; ask again until a new one is there."""
    def files():
        return {p for p in (cluster.root / "log").iterdir() if wanted(p.name, SUFFIXES[fmt])}
    before = files()

    def rotated():
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_rotate_logfile()")
        return files() - before
    wait_until(rotated, message="a new log file")


def test_restart_and_rotation_count_every_line_once(logged, exp):
    """dbperf stops (storing its position), logins happen, the server rotates its log, more logins:
    the new dbperf counts exactly those after its position, in both files."""
    cluster, fmt, _ = logged
    first = exp["exporter"]
    before = total(scrape(first), "pg_log_connections_total", user="app")
    login(cluster, PASSWORD)
    settled(first, "pg_log_connections_total", before + 1, user="app")
    reader = first.scrapers["main"].collectors[0].shared.reader
    first.close()
    assert not reader.running  # the reader's thread stops with the exporter
    for _ in range(2):
        login(cluster, PASSWORD)
    rotate(cluster, fmt)
    for _ in range(3):
        login(cluster, PASSWORD)
    exp["exporter"] = second = exporter_for(logged)
    s = settled(second, "pg_log_connections_total", 5, user="app")
    assert s.value("dbperf_log_reader_rotations_total") >= 1
    assert s.value("dbperf_log_parse_errors_total") == 0 and s.value("dbperf_log_lines_dropped_total") == 0
    rotations = s.value("dbperf_log_reader_rotations_total")
    login(cluster, PASSWORD)  # and a rotation while it runs
    rotate(cluster, fmt)
    wait_until(lambda: scrape(second).value("dbperf_log_reader_rotations_total") > rotations, message="a rotation")
    login(cluster, PASSWORD)
    settled(second, "pg_log_connections_total", 7, user="app")


@pytest.mark.prom
def test_exposition_passes_promtool(exp):
    text = exp["exporter"].probe("main", 10.0).decode()
    assert "pg_log_messages_total" in text
    assert promtool_check_metrics(text) == ""


def test_remote_reading_through_sql_with_the_documented_grants(logged):
    """remote: true as a role with pg_monitor and EXECUTE on pg_read_binary_file (no superuser)
    reads the same log."""
    cluster, _, _ = logged
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'logreader') THEN "
                     "CREATE ROLE logreader LOGIN; END IF; END $$")
        conn.execute("GRANT pg_monitor TO logreader")
        conn.execute("GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO logreader")
    e = exporter_for(logged, remote=True, user="logreader")
    try:
        started(e)
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE remote_probe (id int)")
            conn.execute("DROP TABLE remote_probe")
        s = settled(e, "pg_log_ddl_total", 1, command="DROP TABLE")
        assert s.value("dbperf_log_reader_up") == 1
    finally:
        e.close()


def test_remote_reading_without_the_grants_is_unsupported_with_the_reason(logged):
    cluster, _, _ = logged
    e = exporter_for(logged, remote=True, user="app_nogrant")
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_nogrant') THEN "
                     "CREATE ROLE app_nogrant LOGIN; END IF; END $$")
    try:
        def unsupported():
            s = scrape(e)
            return s if s.has("dbperf_collector_supported", collector="server_log") and \
                s.value("dbperf_collector_supported", collector="server_log") == 0 else None
        s = wait_until(unsupported, timeout=20, message="server_log unsupported")
        assert s.value("pg_up") == 1
        reader = e.scrapers["main"].collectors[0].shared.reader
        assert "pg_ls_logdir()" in reader.unavailable and "pg_read_binary_file" in reader.unavailable
    finally:
        e.close()


def test_check_config_connect_says_which_logging_settings_are_off(logged):
    from exporter.checkconnect import _server_log

    cluster, _, _ = logged
    e = exporter_for(logged)
    target = e.scrapers["main"].target
    e.close()
    assert _server_log(target) == ["server log settings: every setting the server_log metrics need is on"]
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET log_lock_waits = off")
        conn.execute("SELECT pg_reload_conf()")
        try:
            lines = wait_until(lambda: (lambda lines: lines if len(lines) > 1 else None)(_server_log(target)))
            assert lines[1] == ("  - log_lock_waits is off: pg_log_lock_waits_total, pg_log_lock_wait_seconds stay "
                                "empty; set log_lock_waits = 'on'")
        finally:
            conn.execute("ALTER SYSTEM RESET log_lock_waits")
            conn.execute("SELECT pg_reload_conf()")


def test_check_config_connect_never_moves_the_stored_position(logged, tmp_path):
    from exporter.checkconnect import check_target

    cluster, _, _ = logged
    e = exporter_for(logged, state=tmp_path)  # a state directory of its own (the module's exporter runs)
    e.close()
    position = Path(e.config.state_dir) / "serverlog-main.json"
    position.parent.mkdir(parents=True)
    position.write_text('{"sentinel": 1}')
    login(cluster, PASSWORD)
    lines, failure = check_target(e.scrapers["main"].target, 10.0, e.config)
    assert failure == "" and any("server_log" in line for line in lines)
    assert position.read_text() == '{"sentinel": 1}'
