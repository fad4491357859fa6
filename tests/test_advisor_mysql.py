"""``dbperf advise`` for a kind: mysql target, against the suite's real throwaway MariaDB: the
statement anti-patterns of a workload's digests, unused, duplicate and redundant indexes, tables
without a primary key and connection use, each against what the test created and ran; and the
command's exits (a report, --explain refused, a wrong password never shown)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import pytest

from conftest import MYSQL_PASSWORD, ROOT, mysql_dsn
from exporter.advisor.mysql import advise
from exporter.config import parse

pytestmark = pytest.mark.pg

SCHEMA = "advise_my"
SETUP = [
    "CREATE TABLE orders (id INT PRIMARY KEY, customer INT, sku VARCHAR(20), note VARCHAR(40), created DATETIME, "
    "KEY by_customer (customer), KEY by_customer_dup (customer), KEY by_customer_created (customer, created), "
    "KEY by_sku (sku), KEY never_read (note), UNIQUE KEY uniq_note_created (note, created)) ENGINE=InnoDB",
    "CREATE TABLE log (line VARCHAR(100)) ENGINE=InnoDB",
    "CREATE TABLE keyed (code VARCHAR(10) NOT NULL, UNIQUE KEY by_code (code)) ENGINE=InnoDB",
    "INSERT INTO orders SELECT seq, seq % 20, CONCAT('sku-', seq), CONCAT('note ', seq), NOW() FROM seq_1_to_300",
    "INSERT INTO log VALUES ('a'), ('b')",
]
WORKLOAD = [
    "SELECT * FROM orders WHERE sku = 'sku-7'",                       # select_star; reads by_sku
    "SELECT line FROM log ORDER BY RAND() LIMIT 1",                   # order_by_random
    "UPDATE log SET line = 'x'",                                      # update_without_where
    "SELECT note FROM orders WHERE DATE(created) = '2024-01-01'",     # function_on_column
    "SELECT id FROM orders WHERE id = 5",                             # clean
]


@pytest.fixture(scope="module")
def server(mariadb):
    mariadb.execute(f"DROP DATABASE IF EXISTS {SCHEMA}")
    mariadb.execute(f"CREATE DATABASE {SCHEMA}")
    conn = mariadb.connect(database=SCHEMA)
    try:
        with conn.cursor() as cur:
            for sql in SETUP + WORKLOAD:
                cur.execute(sql)
                cur.fetchall()
    finally:
        conn.close()
    return mariadb


def target(server, password=MYSQL_PASSWORD):
    config = parse({"targets": [{"name": "my", "kind": "mysql", "dsn": mysql_dsn(server, password)}]}, source="test")
    return config.targets[0]


@pytest.fixture(scope="module")
def report(server):
    meta, findings = advise(target(server), top=5000, timeout=10.0)
    by_check = defaultdict(set)
    for f in findings:
        if f.database == SCHEMA:
            by_check[(f.kind, f.check)].add(f.subject)
    return meta, findings, by_check


def test_statement_anti_patterns_of_the_workload(report):
    meta, findings, by_check = report
    assert meta["statements"]["checked"] and meta["statements"]["examined"] >= len(WORKLOAD)
    assert meta["server"].startswith("MariaDB ")
    mine = [f for f in findings if f.kind == "statement" and f.database == SCHEMA]
    assert sorted(f.check for f in mine) == ["function_on_column", "order_by_random", "select_star",
                                             "update_without_where"]
    star, = [f for f in mine if f.check == "select_star"]
    assert star.details["query"] == "SELECT * FROM `orders` WHERE `sku` = ?"  # the digest: no literal
    assert star.details["calls"] == 1 and star.time_ms > 0 and star.subject.startswith("digest ")
    assert not any("`id` = ?" in f.details["query"] for f in mine)  # the clean statement


def test_index_findings(report):
    _, _, by_check = report
    t = f"`{SCHEMA}`.`orders`"
    assert by_check[("index", "duplicate_index")] == {f"{t}.`by_customer_dup`"}
    assert by_check[("index", "redundant_index")] == {f"{t}.`by_customer`", f"{t}.`never_read`"}
    unused = by_check[("index", "unused_index")]
    assert {f"{t}.`by_customer_dup`", f"{t}.`never_read`"} <= unused
    assert f"{t}.`by_sku` " not in unused and f"{t}.`by_sku`" not in unused  # read by the workload
    assert not any("uniq_note_created" in s or "by_code" in s or "PRIMARY" in s for s in unused)  # constraints


def test_tables_without_a_primary_key(report):
    _, findings, by_check = report
    assert by_check[("maintenance", "no_primary_key")] == {f"`{SCHEMA}`.`log`", f"`{SCHEMA}`.`keyed`"}
    severity = {f.subject: f.severity for f in findings if f.check == "no_primary_key" and f.database == SCHEMA}
    assert severity == {f"`{SCHEMA}`.`log`": "medium", f"`{SCHEMA}`.`keyed`": "low"}  # keyed has a unique key


def test_connection_use(report, server):
    _, findings, _ = report
    usage, = [f for f in findings if f.check == "connection_usage"]
    assert usage.details["max_connections"] == 100  # the fixture's setting
    assert 1 <= usage.details["connections"] <= usage.details["max_used_connections"] <= 100
    assert usage.severity == "info"


def run_advise(tmp_path, dsn, *args):
    config = tmp_path / "advise.yaml"
    config.write_text(json.dumps({"targets": [{"name": "my", "kind": "mysql", "dsn": dsn}]}))
    proc = subprocess.run([sys.executable, "-m", "exporter", "advise", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_the_command_reports_json(server, tmp_path):
    code, out, err = run_advise(tmp_path, mysql_dsn(server), "--format", "json", "--top", "5000")
    assert code == 0, err
    data = json.loads(out)
    checks = {(f["check"], f["subject"]) for f in data["findings"]}
    assert ("no_primary_key", f"`{SCHEMA}`.`log`") in checks
    assert MYSQL_PASSWORD not in out + err


def test_explain_is_refused_and_a_wrong_password_never_shown(server, tmp_path):
    code, out, err = run_advise(tmp_path, mysql_dsn(server), "--explain", "SELECT 1")
    assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1 and "--explain" in err, err
    wrong = "Wr0ng-pw-123"
    code, out, err = run_advise(tmp_path, mysql_dsn(server, wrong))
    assert (code, out) == (1, ""), err
    assert len(err.strip().splitlines()) == 1 and wrong not in err and "Access denied" in err, err


def test_a_server_that_is_down_is_exit_1(tmp_path):
    from exporter.pgcluster import free_port

    code, out, err = run_advise(tmp_path, f"mysql://dbperf:{MYSQL_PASSWORD}@127.0.0.1:{free_port()}/")
    assert (code, out) == (1, ""), err
    assert len(err.strip().splitlines()) == 1 and "cannot connect" in err and MYSQL_PASSWORD not in err, err
