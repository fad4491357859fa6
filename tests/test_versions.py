"""The version matrix: one real PostgreSQL of every major (13..18, tests/pgdist.py's binaries),
started together, each scraped by dbperf over HTTP as a user would (as a role with pg_monitor only,
never a superuser), and checked against what that
server really has: every collector runs or says it is unsupported, every family a collector
documents is served where PostgreSQL has the data, promtool accepts the output, and the committed
per-version family table (docs/postgres-versions.json, README) is what the servers served.

A major that cannot be installed or started fails its tests; nothing here skips."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo
import pytest

import pgdist
from conftest import ROOT, Samples, Served, promtool_check_metrics
from exporter.collector import ServerInfo
from exporter.config import parse
from exporter.docs import README, SETTINGS, VERSIONS_FILE, documented, dump_versions, load_versions, \
    readme_versions_section, versions_table
from exporter.pgcluster import Cluster
from exporter.postgres.catalog import CatalogCollector
from exporter.postgres.statements import StatementsCollector
from exporter.registry import all_collectors
from exporter.scrape import TargetScraper
from exporter.server import Exporter

pytestmark = pytest.mark.pg

MAJORS = pgdist.MAJORS
RESULT = Path(tempfile.gettempdir()) / "dbperf-postgres-versions.json"  # a changed result, for --versions
# opt-in collectors the matrix does not run, with the reason the version table gives
DISABLED = {
    "pipelines": "opt-in: needs pipelines sources, see docs/pipelines.md",
    "plans": "opt-in (plans.enabled): EXPLAINs top statements in the background; 16+ plans the normalised text, "
             "13-15 need a session sample, see docs/plans.md",
    "server_log": "opt-in: needs server_log: (the server's log), see docs/server-log.md",
}

# families one throwaway primary cannot serve, by name prefix or help text, with the reason the
# README gives; everything else a collector documents must be served where PostgreSQL has it
NOT_IN_MATRIX_PREFIX = {
    "pg_stat_replication_": "needs a connected standby",
    "pg_stat_progress_": "only while a VACUUM, ANALYZE, CLUSTER or CREATE INDEX runs",
    "pg_active_sessions_": "needs client sessions seen by two samples of the wait_events sampler",
    "pg_statement_active_": "needs client sessions seen by two samples of the wait_events sampler",
    "pg_route_active_": "needs client sessions seen by two samples of the wait_events sampler",
    "pg_route_statement_active_": "needs client sessions seen by two samples of the wait_events sampler",
}
REPLICA_ONLY = "replica only"

# families of code collectors that need a newer PostgreSQL (the catalog's follow from its SQL)
CODE_SINCE = {
    "pg_stat_statements_dealloc_total": 14, "pg_stat_statements_stats_reset_timestamp_seconds": 14,
    "pg_stat_activity_slowest_query_info": 14,  # needs compute_query_id
    "pg_stat_statements_jit_seconds_total": 15,
    "pg_stat_statements_parallel_workers_to_launch_total": 18,
    "pg_stat_statements_parallel_workers_launched_total": 18,
}

# the version changes the issue names, each checked on the real server: family -> majors serving it
CHANGES = {
    **{f"pg_stat_wal_{k}": range(14, 19) for k in (
        "records_total", "fpi_total", "bytes_total", "buffers_full_total", "write_total", "sync_total",
        "write_time_seconds_total", "sync_time_seconds_total")},
    **{f"pg_stat_checkpointer_{k}": range(13, 19) for k in (
        "num_timed_total", "num_requested_total", "write_time_seconds_total", "sync_time_seconds_total",
        "buffers_written_bytes_total")},
    **{f"pg_stat_checkpointer_restartpoints_{k}_total": range(17, 19) for k in ("timed", "req", "done")},
    "pg_stat_checkpointer_num_done_total": [18], "pg_stat_checkpointer_slru_written_bytes_total": [18],
    "pg_stat_bgwriter_buffers_backend_bytes_total": range(13, 17),
    "pg_stat_bgwriter_buffers_backend_fsync_total": range(13, 17),
    "pg_stat_bgwriter_buffers_alloc_bytes_total": range(13, 19),
    "pg_stat_statements_block_read_seconds_total": range(13, 19),
    "pg_stat_statements_jit_seconds_total": range(15, 19),
    "pg_stat_statements_parallel_workers_to_launch_total": [18],
    "pg_stat_statements_parallel_workers_launched_total": [18],
    "pg_stat_database_parallel_workers_to_launch_total": [18],
    "pg_stat_database_parallel_workers_launched_total": [18],
    "pg_stat_database_session_time_seconds_total": range(14, 19),
    **{f"pg_stat_user_tables_{k}_time_seconds_total": [18] for k in ("vacuum", "autovacuum", "analyze", "autoanalyze")},
}


class Server:
    """One major of the matrix: its cluster, what dbperf served from it, or why it failed."""

    def __init__(self, major: int):
        self.major = major
        self.cluster: Cluster | None = None
        self.error: str = ""
        self.version = ""        # server_version, e.g. "17.10"
        self.version_num = 0
        self.text = ""           # the second /probe of it
        self.seconds = 0.0       # time to install, start and prepare it

    def need(self) -> "Server":
        if self.error:
            pytest.fail(f"PostgreSQL {self.major}: {self.error}")
        return self

    @property
    def samples(self) -> Samples:
        return Samples(self.text)


def settings_for(major: int, root: Path) -> dict:
    flag = root / "archived-once"
    settings = {
        "archive_mode": "on",  # the first archive fails, the next succeed: both archiver timestamps
        "archive_command": f"'if [ -f {flag} ]; then exit 0; fi; touch {flag}; exit 1'",
        "autovacuum_naptime": "1",
        "pg_stat_statements.track_planning": "on",
        "max_slot_wal_keep_size": "'1GB'",
    }
    if major >= 14:
        settings["track_wal_io_timing"] = "on"
    return settings


MONITOR_ROLE = "dbperf_monitor"  # LOGIN, pg_monitor, nothing else


def prepare(server: Server) -> None:
    """Install, start and give the server the data each family needs."""
    start = time.monotonic()
    cluster = Cluster(bindir=pgdist.bindir(server.major), initdb_args=("--data-checksums",))
    cluster.settings.update(settings_for(server.major, cluster.root))
    server.cluster = cluster
    cluster.init().start()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        run = conn.execute
        run("SELECT pg_stat_reset()")  # the database's stats_reset (NULL until a reset on 15+)
        if server.major >= 16:
            run("SELECT pg_stat_reset_shared('io')")
        run("CREATE EXTENSION pg_stat_statements")
        # dbperf reads every major as a least-privilege role: pg_monitor, not a superuser
        run(f"CREATE ROLE {MONITOR_ROLE} LOGIN")
        run(f"GRANT pg_monitor TO {MONITOR_ROLE}")
        run("CREATE TABLE matrix_t (id int PRIMARY KEY, v text)")
        run("CREATE INDEX matrix_t_v ON matrix_t (v)")
        run("CREATE INDEX matrix_t_v_again ON matrix_t (v)")  # a duplicate index: an advisor finding
        run("INSERT INTO matrix_t SELECT g, 'v' || g FROM generate_series(1, 2000) g")
        run("DELETE FROM matrix_t WHERE id <= 1200")  # autovacuum and autoanalyze take it up
        run("CREATE TABLE matrix_m AS SELECT 1 AS x")
        run("VACUUM ANALYZE matrix_m")
        run("SELECT count(*) FROM matrix_t WHERE v = 'v1500'")
        run("BEGIN")  # transaction control for pg_stat_statements
        run("COMMIT")
        run("SELECT pg_create_physical_replication_slot('matrix_slot', true)")
        run("SELECT pg_switch_wal()")
        server.version, server.version_num = run(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int").fetchone()
        server.version = server.version.split()[0]
        deadline = time.monotonic() + 60
        pending = {
            "archiving": "SELECT last_archived_time IS NOT NULL AND last_failed_time IS NOT NULL FROM pg_stat_archiver",
            "autovacuum": "SELECT last_autovacuum IS NOT NULL AND last_autoanalyze IS NOT NULL "
                          "FROM pg_stat_user_tables WHERE relname = 'matrix_t'",
        }
        while pending and time.monotonic() < deadline:
            pending = {k: sql for k, sql in pending.items() if not run(sql).fetchone()[0]}
            if pending:
                time.sleep(0.2)
        if pending:
            raise RuntimeError(f"no {' and no '.join(pending)} within 60 s")
    # a session waiting in pg_sleep while dbperf scrapes: waiting and slow sessions, slowest query
    sleeper = psycopg.connect(cluster.dsn(), autocommit=True)
    sleeper.pgconn.send_query(b"SELECT pg_sleep(600)")
    server.sleeper = sleeper
    server.seconds = time.monotonic() - start


def config_for(servers: list[Server]):
    targets = [{"name": f"pg{s.major}", "dsn": make_conninfo(s.cluster.dsn(), user=MONITOR_ROLE),
                "collectors": {"advisor": True},
                "statements": {"query_text": True, "slowest_query_info": True}}
               for s in servers if not s.error]
    return parse({"targets": targets, "listen": "127.0.0.1:0", "host_metrics": False, "scrape_timeout": 30},
                 source="version-matrix")


def _probe(served: Served, server: Server) -> str:
    status, text = served.get(f"/probe?target=pg{server.major}", timeout=60)
    if status != 200:
        raise RuntimeError(f"/probe answered {status}: {text[:300]}")
    return text


@pytest.fixture(scope="module")
def matrix():
    started = time.monotonic()
    servers = [Server(m) for m in MAJORS]

    def bring_up(server: Server) -> None:
        try:
            prepare(server)
        except Exception as exc:  # the major's tests fail with it
            server.error = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=bring_up, args=(s,), name=f"matrix-{s.major}") for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    up = time.monotonic()
    served = Served(Exporter(config_for(servers)))
    try:
        live = [s for s in servers if not s.error]
        with ThreadPoolExecutor(len(MAJORS)) as pool:
            for _ in range(2):  # the first read of pg_stat_statements has no interval yet
                for server, result in zip(live, pool.map(lambda s: _capture(served, s), live)):
                    if isinstance(result, Exception):
                        server.error = f"{type(result).__name__}: {result}"
                    else:
                        server.text = result
        timing = {"start_and_prepare": round(up - started, 1), "scrapes": round(time.monotonic() - up, 1),
                  **{str(s.major): round(s.seconds, 1) for s in servers}}
        print(f"\nversion matrix: {json.dumps(timing)}")
        yield {s.major: s for s in servers}
    finally:
        served.close()
        for s in servers:
            sleeper = getattr(s, "sleeper", None)
            if sleeper is not None:
                sleeper.pgconn.finish()
        with ThreadPoolExecutor(len(MAJORS)) as pool:
            list(pool.map(lambda s: s.cluster and s.cluster.cleanup(), servers))


def _capture(served: Served, server: Server):
    try:
        return _probe(served, server)
    except Exception as exc:  # noqa: BLE001 - reported by that major's tests
        return exc


def info(server: Server) -> ServerInfo:
    return ServerInfo(version=server.version_num, in_recovery=False, extensions=frozenset({"pg_stat_statements"}),
                      dbname="postgres")


def enabled_collectors():
    return [c for c in all_collectors() if c.name not in DISABLED and (c.enabled_by_default or c.name == "advisor")]


def served_families(text: str) -> set[str]:
    """The families with at least one sample, named as the reference writes them (counters with
    ``_total``); a family rendered without samples (HELP and TYPE only) is not served."""
    return {f.name + "_total" if f.type == "counter" else f.name
            for f in Samples(text).families.values() if f.samples}


def not_in_matrix(name: str, help_: str) -> str | None:
    if help_.lower().startswith(REPLICA_ONLY):
        return REPLICA_ONLY
    return next((why for prefix, why in NOT_IN_MATRIX_PREFIX.items() if name.startswith(prefix)), None)


def expected_families(collector, server: Server) -> set[str]:
    """What ``collector`` must serve on ``server``: its documented families that this major has."""
    if isinstance(collector, CatalogCollector):
        planned = set(collector.families_for(server.version_num))
    else:
        planned = {name for name, *_ in documented(collector)
                   if server.major >= CODE_SINCE.get(name, 0) and not name.endswith("*")}
    helps = {name: help_ for name, _, _, help_ in documented(collector)}
    return {name for name in planned if not not_in_matrix(name, helps.get(name, ""))}


# -- the tests ---------------------------------------------------------------------------------
def test_the_matrix_runs_every_major(matrix):
    assert tuple(matrix) == (13, 14, 15, 16, 17, 18)
    failed = {m: s.error for m, s in matrix.items() if s.error}
    assert not failed, failed
    for major, server in matrix.items():
        assert server.version_num // 10000 == major, (major, server.version)
        assert server.samples.value("pg_up", target=f"pg{major}") == 1


@pytest.mark.parametrize("major", MAJORS)
def test_every_collector_runs_or_says_it_is_unsupported(matrix, major):
    server = matrix[major].need()
    samples = server.samples
    problems = []
    for c in enabled_collectors():
        why_not = c.applies(info(server))
        supported = {s.labels.get("datname"): s.value for s in samples.series("dbperf_collector_supported", collector=c.name)}
        success = {s.labels.get("datname"): s.value for s in samples.series("dbperf_collector_success", collector=c.name)}
        if why_not:
            if set(supported.values()) != {0} or success:
                problems.append(f"{c.name} ({why_not}): supported {supported}, success {success}")
        elif set(supported.values()) != {1} or set(success.values()) != {1}:
            problems.append(f"{c.name}: supported {supported}, success {success}")
    assert not problems, f"PostgreSQL {server.version}:\n" + "\n".join(problems)


@pytest.mark.parametrize("major", MAJORS)
def test_every_documented_family_is_served_where_postgresql_has_the_data(matrix, major):
    server = matrix[major].need()
    served = served_families(server.text)
    missing = {}
    for c in enabled_collectors():
        if c.applies(info(server)):
            continue
        absent = expected_families(c, server) - served
        if absent:
            missing[c.name] = sorted(absent)
    assert not missing, f"PostgreSQL {server.version} does not serve: {missing}"
    documented_names = {name for c in all_collectors() for name, *_ in documented(c)}
    undocumented = sorted(n for n in served - documented_names
                          if not n.startswith(("pg_settings_", "dbperf_", "pg_up")))
    assert not undocumented, f"PostgreSQL {server.version} serves families the reference lacks: {undocumented}"
    assert any(n.startswith("pg_settings_") for n in served)


@pytest.mark.parametrize("major", MAJORS)
def test_the_version_changes_on_the_real_server(matrix, major):
    """pg_stat_checkpointer (17), pg_stat_wal's write/sync in pg_stat_io (18), pg_stat_statements
    1.8 to 1.12, 18's vacuum times and parallel workers: served exactly by the majors that have them."""
    server = matrix[major].need()
    served = served_families(server.text)
    wrong = {name: ("missing" if major in majors else "served") for name, majors in CHANGES.items()
             if (name in served) != (major in majors)}
    assert not wrong, f"PostgreSQL {server.version}: {wrong}"
    samples = server.samples
    if major >= 14:  # the WAL this server wrote is counted, also where pg_stat_io counts it (18)
        assert samples.value("pg_stat_wal_bytes_total", target=f"pg{major}") > 0
        assert samples.value("pg_stat_wal_write_total", target=f"pg{major}") > 0
    assert samples.value("pg_stat_database_checksum_failures_total", target=f"pg{major}", datname="postgres") == 0


@pytest.mark.prom
@pytest.mark.parametrize("major", MAJORS)
def test_promtool_accepts_what_every_major_serves(matrix, major):
    server = matrix[major].need()
    assert promtool_check_metrics(server.text) == "", f"PostgreSQL {server.version}"


def matrix_result(matrix) -> dict:
    """What the servers served, in docs/postgres-versions.json's form."""
    families: dict[str, list[int]] = {}
    settings = {}
    documented_names = {}
    for c in all_collectors():
        for name, _, _, help_ in documented(c):
            documented_names[name] = help_
    why = {name: reason for name, help_ in documented_names.items()
           if name != SETTINGS and (reason := not_in_matrix(name, help_))}
    why.update({name: DISABLED[c.name] for c in all_collectors() if c.name in DISABLED for name, *_ in documented(c)})
    for major, server in matrix.items():
        served = served_families(server.need().text)
        settings[str(major)] = sum(1 for n in served if n.startswith("pg_settings_"))
        for name in sorted(served):
            # what the matrix cannot show is left out even when served by chance (an autovacuum
            # running during the scrape has progress rows): the table never flaps
            if name in documented_names and name not in why:
                families.setdefault(name, []).append(major)
    return {"servers": {str(m): s.version for m, s in matrix.items()},
            "families": dict(sorted(families.items())), "settings": settings,
            "not_in_matrix": dict(sorted(why.items()))}


def test_the_committed_version_table_is_what_the_servers_served(matrix):
    live = matrix_result(matrix)
    committed = load_versions()
    if live != committed:
        RESULT.write_text(dump_versions(live))
        changed = sorted(n for n in set(live["families"]) | set(committed.get("families", {}))
                         if live["families"].get(n) != committed.get("families", {}).get(n))
        pytest.fail(f"the servers served another table than {VERSIONS_FILE.name} ({len(changed)} families "
                    f"differ: {changed[:12]}; servers {live['servers']} vs {committed.get('servers')}); if the "
                    f"change is right: python -m exporter.docs --versions {RESULT}")


@pytest.mark.fast
def test_readme_has_the_version_table_of_the_committed_result():
    text = README.read_text()
    assert "<!-- versions:begin -->" in text, "README lacks the <!-- versions:begin/end --> markers"
    assert readme_versions_section(text) == versions_table(), "run: python -m exporter.docs --write"


def statements_with_extension(cluster: Cluster, dbname: str, version: str, scrapes: int) -> tuple:
    """Scrape the statements collector alone on a new database of ``cluster`` whose
    pg_stat_statements is at ``version``: ``(the last scrape's samples, the scraper)``."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        conn.execute(f"CREATE EXTENSION pg_stat_statements VERSION '{version}'")
    target = parse({"targets": [{"name": "old", "dsn": cluster.dsn(dbname)}]}, source="t").targets[0]
    scraper = TargetScraper(target, (StatementsCollector(),))
    try:
        for _ in range(scrapes):
            samples = Samples(scraper.scrape(20).encode().decode())
    finally:
        scraper.close()
    return samples, scraper


@pytest.mark.parametrize("major", [17, 18])
def test_statements_follow_the_installed_extension_not_the_server(matrix, major):
    """After pg_upgrade the extension keeps its old version (and columns) until ALTER EXTENSION
    UPDATE: pg_stat_statements 1.8 on a 17 or 18 server has blk_read_time, no JIT, no workers."""
    samples, scraper = statements_with_extension(matrix[major].need().cluster, "matrix_old_extension", "1.8", 2)
    assert samples.value("dbperf_collector_success", collector="statements", datname="") == 1, samples.text[-2000:]
    assert scraper.server.extension_version("pg_stat_statements") == "1.8"
    names = samples.names()
    assert "pg_stat_statements_calls_total" in names and "pg_stat_statements_block_read_seconds_total" in names
    assert not {"pg_stat_statements_jit_seconds_total", "pg_stat_statements_parallel_workers_launched_total",
                "pg_stat_statements_dealloc_total"} & names


def test_check_config_connect_lists_what_the_server_serves(matrix, tmp_path):
    """On PostgreSQL 13: the collectors that cannot run there say why, and what the running ones
    document but 13 lacks (pg_stat_wal, session statistics) is listed under the families served."""
    server = matrix[13].need()
    config = tmp_path / "dbperf.yaml"
    config.write_text(f"targets:\n  - name: old\n    dsn: {server.cluster.dsn()}\n")
    proc = subprocess.run([sys.executable, "-m", "exporter", "check-config", "--connect", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    part = proc.stdout.split("connected to PostgreSQL 13.", 1)[1]
    lines = {line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in part.splitlines()[1:]
             if line.startswith("  ")}
    for c in enabled_collectors():
        if c.name == "advisor":
            continue  # off by default
        why_not = c.applies(info(server))
        assert lines[c.name] == (f"not available: {why_not}" if why_not else "runs"), (c.name, lines[c.name])
    served = next(line for line in part.splitlines() if line.startswith("families served: "))
    assert "not in PostgreSQL 13" in served
    wal = next(line for line in part.splitlines() if line.startswith("- wal: "))
    assert "pg_stat_wal_bytes_total" in wal and "pg_wal_lsn_bytes_total" not in wal


def test_statements_older_than_1_8_say_how_to_update(matrix, caplog):
    """pg_stat_statements 1.7 (PostgreSQL 12's) left in place by pg_upgrade to 13: no
    total_exec_time; the collector fails with the ALTER EXTENSION line, not a column error."""
    with caplog.at_level(logging.WARNING, logger="dbperf"):
        samples, _ = statements_with_extension(matrix[13].need().cluster, "matrix_ext_17", "1.7", 1)
    assert samples.value("dbperf_collector_success", collector="statements", datname="") == 0
    message = next(r.getMessage() for r in caplog.records if "collector=statements" in r.getMessage())
    assert "pg_stat_statements 1.7 in database 'matrix_ext_17' is older than 1.8: run ALTER EXTENSION " \
           "pg_stat_statements UPDATE there" in message, message
