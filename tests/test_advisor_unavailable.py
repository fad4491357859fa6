"""``dbperf advise`` on a server where pg_stat_statements cannot be read: created but not in
shared_preload_libraries, then not created at all. Only the statement checks are dropped, one line
says why and how to enable them, and every other check (indexes, maintenance, connections) runs.

A throwaway cluster of its own, started without pg_stat_statements preloaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from exporter.cli import main
from exporter.pgcluster import Cluster

pytestmark = pytest.mark.pg

DB = "nopreload"


@pytest.fixture(scope="module")
def cluster():
    # autovacuum off: the never-analyzed table stays never analyzed while the tests run
    with Cluster(settings={"shared_preload_libraries": "''", "autovacuum": "off"}) as c:
        c.psql("CREATE EXTENSION pg_stat_statements")  # created, but the library is not loaded
        c.psql(f"CREATE DATABASE {DB}")
        c.psql("CREATE EXTENSION pg_stat_statements; CREATE TABLE items (id int, v int); "
               "INSERT INTO items SELECT g, g % 7 FROM generate_series(1, 5000) g; "
               "CREATE INDEX items_v_idx ON items (v); CREATE INDEX items_v_copy ON items (v)", dbname=DB)
        yield c


@pytest.fixture
def config(cluster, tmp_path):
    path = tmp_path / "advise.yaml"
    path.write_text(json.dumps({"targets": [{"name": "main", "dsn": cluster.dsn("postgres"),
                                             "databases": {"include": f"postgres|{DB}"}}]}))
    return path


def advise(config, capsys, *extra):
    capsys.readouterr()
    code = main(["advise", "--config", str(config), "--target", "main", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def assert_other_checks_ran(report: dict) -> None:
    checks = {(f["kind"], f["check"]) for f in report["findings"]}
    assert ("index", "duplicate_index") in checks, checks
    assert ("maintenance", "needs_analyze") in checks, checks
    assert ("connection", "connection_usage") in checks, checks
    assert not any(f["kind"] == "statement" for f in report["findings"])


def test_created_but_not_preloaded(cluster, config, capsys):
    assert cluster.psql("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'").strip() == "1"
    proc = subprocess.run([sys.executable, "-m", "exporter", "advise", "--config", str(config), "--target", "main"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    why = [line for line in proc.stdout.splitlines() if "pg_stat_statements" in line]
    assert why == ["statement checks skipped: pg_stat_statements is installed in database 'postgres' but not "
                   "loaded; to enable it: add pg_stat_statements to shared_preload_libraries in postgresql.conf "
                   "and restart PostgreSQL"], proc.stdout
    assert "duplicate_index" in proc.stdout and "needs_analyze" in proc.stdout

    code, out, err = advise(config, capsys, "--format", "json")
    assert code == 0 and err == ""
    report = json.loads(out)
    assert report["statements"] == {"checked": False, "reason": why[0]}
    assert report["databases"] == ["postgres", DB]
    assert_other_checks_ran(report)


def test_not_created(cluster, config, capsys):
    cluster.psql("DROP EXTENSION pg_stat_statements")
    try:
        code, out, err = advise(config, capsys)
        assert code == 0 and err == ""
        why = [line for line in out.splitlines() if "pg_stat_statements" in line]
        assert why == ["statement checks skipped: pg_stat_statements is not installed in database 'postgres'; "
                       "to enable it: add pg_stat_statements to shared_preload_libraries in postgresql.conf and "
                       "restart PostgreSQL, then run CREATE EXTENSION pg_stat_statements in database 'postgres'"], out
        code, out, err = advise(config, capsys, "--format", "json")
        assert code == 0 and err == ""
        assert_other_checks_ran(json.loads(out))
    finally:
        cluster.psql("CREATE EXTENSION pg_stat_statements")
