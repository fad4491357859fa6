"""Least privilege and managed-service databases, on real servers (13, Debian's 15, 18):

- ``dbperf setup-sql``'s output, run twice with psql on a fresh, hardened server (CONNECT revoked
  from PUBLIC on a database), creates a role with a password (SCRAM, checked by the server) and
  pg_monitor; ``dbperf serve`` (the real command) with that role: every default collector succeeds.
- a role with only CONNECT: the collectors that cannot read fail with one log line naming the
  grant (``GRANT pg_monitor TO bare``), every other one succeeds; a database it may not CONNECT to
  is not covered, and logs nothing.
- a database pg_hba.conf rejects: its collectors fail, the other databases keep working, one log
  line (not one per collector), again only after a minute; ``rdsadmin`` (a managed service's admin
  database) is not even tried.
- the SCRAM verifier setup-sql prints is the one PostgreSQL computes itself, for ASCII and
  non-ASCII passwords (SASLprep)."""

from __future__ import annotations

import base64
import io
import logging
import re
import subprocess
import sys

import psycopg
import pytest
import requests
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from conftest import PG, Proc, Samples, make_config, require_tool, wait_until
from exporter.checkconnect import check_targets
from exporter.config import parse
from exporter.log import RateLimiter
from exporter.pgcluster import Cluster, free_port
from exporter.registry import all_collectors
from exporter.scrape import TargetScraper
from exporter.setupsql import scram_verifier
from pgdist import bindir

pytestmark = pytest.mark.pg

PASSWORD = "s3cr'et \\ pa$$ word"  # a quote, a backslash, dollars and spaces: quoted right or it fails
ROLE = "dbperf_mon"
# what only pg_monitor lets a role read: without it these collectors fail, the others work
NEEDS_PG_MONITOR = {"wal", "privileges"}


def psql_file(cluster: Cluster | None, script: str, dsn: str | None = None) -> subprocess.CompletedProcess:
    """``script`` run by psql as a file (``-f -``), stopping at the first error."""
    psql = cluster.psql_path() if cluster else require_tool("psql")
    return subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn or cluster.dsn(), "-f", "-"],
                          input=script, capture_output=True, text=True, timeout=60)


def setup_sql(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "setup-sql", *args], capture_output=True, text=True,
                          timeout=60)


def hba_first(cluster: Cluster, *lines: str) -> None:
    hba = cluster.datadir / "pg_hba.conf"
    hba.write_text("".join(line + "\n" for line in lines) + hba.read_text())
    cluster.psql("SELECT pg_reload_conf()")


def successes(samples: Samples, target: str) -> dict:
    return {(s.labels["collector"], s.labels["datname"]): s.value
            for s in samples.series("dbperf_collector_success", target=target)}


@pytest.mark.parametrize("major", [13, 15, 18])
def test_setup_sql_role_serves_everything_and_a_connect_only_role_degrades_with_one_line(major, tmp_path):
    with Cluster(bindir=None if major == 15 else bindir(major)) as cluster:
        for db in ("app", "refused", "rdsadmin", "closed"):
            cluster.psql(f"CREATE DATABASE {db}")
        cluster.psql("REVOKE CONNECT ON DATABASE app FROM PUBLIC")  # hardened: setup-sql grants it to its role
        (tmp_path / "password").write_text(PASSWORD + "\n")
        out = setup_sql("--role", ROLE, "--password-file", str(tmp_path / "password"))
        assert out.returncode == 0, out.stderr
        assert PASSWORD not in out.stdout and "s3cr" not in out.stdout  # only the verifier
        for _ in range(2):  # idempotent: the second run changes nothing and fails nowhere
            run = psql_file(cluster, out.stdout)
            assert run.returncode == 0, run.stderr
            assert "ERROR" not in run.stderr and "WARNING" not in run.stderr, run.stderr
        cluster.psql("REVOKE CONNECT ON DATABASE closed FROM PUBLIC; CREATE ROLE bare LOGIN")
        hba_first(cluster, f"host refused {ROLE} 127.0.0.1/32 reject", "host rdsadmin all 127.0.0.1/32 reject",
                  f"host all {ROLE} 127.0.0.1/32 scram-sha-256")
        assert cluster.psql(f"SELECT rolsuper, rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
                            f"WHERE rolname = '{ROLE}'").strip() == "f|t"
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(cluster.dsn(user=ROLE) + " password=wrong").close()

        (tmp_path / "dsn").write_text(make_conninfo(cluster.dsn(user=ROLE), password=PASSWORD))
        port = free_port()
        (tmp_path / "dbperf.yaml").write_text(yaml.safe_dump({
            "listen": f"127.0.0.1:{port}",
            "targets": [{"name": "monitor", "dsn_file": str(tmp_path / "dsn")},
                        {"name": "bare", "dsn": cluster.dsn(user="bare")}]}))
        proc = Proc([sys.executable, "-m", "exporter", "serve", "--config", str(tmp_path / "dbperf.yaml")],
                    tmp_path, f"http://127.0.0.1:{port}/healthz", "dbperf")
        try:
            for _ in range(3):
                samples = Samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text)
        finally:
            proc.stop()
        log = proc.log.read_text()
        assert PASSWORD not in log

        # the pg_monitor role: everything, on every database it may connect to but the rejected one
        monitor = successes(samples, "monitor")
        failed = {key for key, ok in monitor.items() if ok != 1}
        assert failed == {(c, "refused") for c in ("tables", "table_sizes", "indexes", "progress")}, failed
        assert {c.name for c in all_collectors() if c.enabled_by_default and c.min_version <= major * 10000} - {"io"} \
            <= {c for c, _ in monitor}
        assert {d for _, d in monitor} == {"", "postgres", "app", "refused", "closed"}  # rdsadmin: excluded
        assert samples.value("dbperf_monitoring_role_info", target="monitor", role=ROLE, superuser="false") == 1
        refused = [line for line in log.splitlines() if "database=refused" in line]
        assert len(refused) == 1, refused  # one line for its four collectors, not one each
        assert "pg_hba.conf rejects connection" in refused[0] and "databases.exclude" in refused[0]
        assert "rdsadmin" not in log

        # CONNECT only: the two collectors that need pg_monitor fail, one line each naming the grant
        bare = successes(samples, "bare")
        assert {c for (c, _), ok in bare.items() if ok != 1} == NEEDS_PG_MONITOR, bare
        assert {d for _, d in bare} == {"", "postgres", "refused"}  # not app nor closed: no CONNECT
        for collector in NEEDS_PG_MONITOR:
            lines = [line for line in log.splitlines() if f"target=bare collector={collector} " in line]
            assert len(lines) == 1 and "GRANT pg_monitor TO bare" in lines[0], lines
        assert "database=app" not in log and "database=closed" not in log


def test_a_role_name_that_needs_quoting(pg):
    role = 'we"ird $dbperf$ Role'
    out = setup_sql("--role", role)
    assert out.returncode == 0, out.stderr
    try:
        for _ in range(2):
            run = psql_file(None, out.stdout, pg.dsn())
            assert run.returncode == 0, run.stderr
        assert pg.execute("SELECT rolcanlogin, pg_has_role(oid, 'pg_monitor', 'USAGE'), rolpassword IS NULL "
                          "FROM pg_authid WHERE rolname = %s", params=(role,)) == [(True, True, True)]
    finally:
        pg.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(role)))


def test_a_refused_database_logs_one_line_a_minute_and_the_others_keep_working(caplog):
    with Cluster() as cluster:
        for db in ("refused", "other"):
            cluster.psql(f"CREATE DATABASE {db}")
        hba_first(cluster, "host refused all 127.0.0.1/32 reject")
        target = make_config(PG(cluster, None)).targets[0]
        scraper = TargetScraper(target, all_collectors())
        now = [0.0]
        scraper._log_limit = RateLimiter(60.0, clock=lambda: now[0])  # the minute, without waiting for it
        caplog.set_level(logging.WARNING, logger="dbperf")
        try:
            def scrape() -> list:
                samples = Samples(scraper.scrape(10).text())
                return [r.getMessage() for r in caplog.records if "database=refused" in r.getMessage()], samples

            for second in (0, 15, 30, 59):
                now[0] = second
                lines, samples = scrape()
                assert len(lines) == 1, lines
                assert samples.value("dbperf_collector_success", collector="tables", datname="refused") == 0
                assert samples.value("dbperf_collector_success", collector="tables", datname="other") == 1
                assert samples.value("pg_up") == 1
            now[0] = 61
            wait_until(lambda: len(scrape()[0]) == 2, timeout=20, interval=0.5, message="the next minute's line")
        finally:
            scraper.close()
        # check-config --connect names the cause for each of its collectors, logged once for them all
        out = io.StringIO()
        assert check_targets(make_config(PG(cluster, None)), out=out) == []  # the target itself is reachable
        lines = [line for line in out.getvalue().splitlines() if "on database refused" in line]
        assert len(lines) == 4 and all("pg_hba.conf rejects connection" in line for line in lines), out.getvalue()


@pytest.mark.parametrize("password", ["pencil", "pässwörd", "ＰＡＳＳ", "a\u00a0b\u00adc", "\u0007bell"])
def test_the_verifier_is_the_one_postgresql_computes(pg, password):
    """The server hashes the password itself (password_encryption = scram-sha-256); the verifier of
    setup-sql with the same salt and iterations is the same string: SASLprep and SCRAM agree."""
    with pg.connect() as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute("DROP ROLE IF EXISTS dbperf_scram_check")
        conn.execute(sql.SQL("CREATE ROLE dbperf_scram_check PASSWORD {}").format(sql.Literal(password)))
        (stored,), = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'dbperf_scram_check'").fetchall()
        conn.execute("DROP ROLE dbperf_scram_check")
    iterations, salt = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$.*", stored).groups()
    assert scram_verifier(password, base64.b64decode(salt), int(iterations)) == stored


def test_default_config_discovers_no_managed_admin_database(pg):
    """The probe lists rdsadmin (it allows connections here); discovery leaves it out."""
    pg.execute("CREATE DATABASE cloudsqladmin")
    try:
        scraper = TargetScraper(make_config(pg).targets[0], all_collectors())
        try:
            scraper.scrape(10)
            assert "cloudsqladmin" in scraper.server.databases
            assert "cloudsqladmin" not in scraper.databases and "postgres" in scraper.databases
        finally:
            scraper.close()
        named = parse({"targets": [{"name": "t", "dsn": pg.dsn(), "databases": {"include": "cloudsqladmin|postgres"}}]})
        scraper = TargetScraper(named.targets[0], all_collectors())
        try:
            scraper.scrape(10)
            assert "cloudsqladmin" in scraper.databases  # named in databases.include: covered
        finally:
            scraper.close()
    finally:
        pg.execute("DROP DATABASE cloudsqladmin")
