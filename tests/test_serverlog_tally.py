"""Log entries -> metrics and events: recognised messages, bounded labels, redaction."""

from __future__ import annotations

import pytest

from exporter.serverlog.options import ServerLogOptions
from exporter.serverlog.records import Entry
from exporter.serverlog.tally import Tally, client_network, ddl_command, redact_plan

pytestmark = pytest.mark.fast


def entry(message, severity="LOG", **fields):
    base = {"time": "2026-01-01 10:00:00.000 UTC", "user": "bob", "database": "shop", "pid": "17",
            "client": "10.1.2.3", "severity": severity, "message": message}
    base.update(fields)
    return Entry(**base)


def tally(**options) -> Tally:
    return Tally(ServerLogOptions(path="x", **options))


def counters(t: Tally) -> dict:
    return t.snapshot()[0]


def test_connection_with_its_method_and_disconnection():
    t = tally()
    t.add([entry('connection authenticated: identity="bob" method=scram-sha-256 (/pg_hba.conf:3)'),
           entry("connection authorized: user=bob database=shop application_name=psql"),
           entry("connection authorized: user=bob database=shop", pid="18"),
           entry("connection authorized: user=bob database=shop", pid="19", query_id="0"),  # 14+: no line = trust
           entry("replication connection authorized: user=rep application_name=standby1", pid="20", user="rep",
                 database=""),
           entry("disconnection: session time: 1:02:03.500 user=bob database=shop host=10.1.2.3 port=5000")])
    c = counters(t)
    assert c["connections"] == {("shop", "bob", "scram-sha-256"): 1, ("shop", "bob", "unknown"): 1,
                                ("shop", "bob", "trust"): 1, ("", "rep", "unknown"): 1}
    assert c["disconnections"] == {("shop", "bob"): 1}
    buckets, total = t.snapshot()[1]["session"][("shop",)]
    assert total == 3723.5 and buckets[-1] == (float("inf"), 1)


def test_auth_failures_cap_users_and_count_networks():
    t = tally(max_users=2, client_network_prefix=24)
    failures = [entry(f'password authentication failed for user "u{i}"', "FATAL", sqlstate="28P01", user=f"u{i}",
                      client=f"10.1.2.{i}") for i in range(5)]
    failures.append(entry('no pg_hba.conf entry for host "10.9.9.9", user "u0", database "shop"', "FATAL",
                          sqlstate="28000", user="u0", client="10.9.9.9"))
    t.add(failures)
    c = counters(t)
    assert c["auth_failures"] == {("shop", "u0", "password"): 1, ("shop", "u1", "password"): 1,
                                  ("shop", "other", "password"): 3, ("shop", "u0", "no_hba_entry"): 1}
    assert c["auth_networks"] == {("10.1.2.0/24",): 5, ("10.9.9.0/24",): 1}
    assert c["messages"] == {("FATAL", "28"): 6}
    assert len(t.recent("access", 100)) == 6


def test_network_counting_is_off_by_default_and_addresses_are_bucketed():
    t = tally()
    t.add([entry("password authentication failed", "FATAL", sqlstate="28P01")])
    assert counters(t)["auth_networks"] == {}
    assert client_network("2001:db8::1", 24) == "2001:db8::/48"
    assert client_network("[local]", 24) == "local" and client_network("db.example", 24) == "unknown"


def test_errors_by_code_and_deadlock_with_statements():
    t = tally()
    detail = ("Process 17 waits for ShareLock on transaction 5; blocked by process 18.\n"
              "Process 18 waits for ShareLock on transaction 6; blocked by process 17.\n"
              "Process 17: UPDATE t SET v = 1 WHERE id = 2\nProcess 18: UPDATE t SET v = 'x' WHERE id = 1")
    t.add([entry("deadlock detected", "ERROR", sqlstate="40P01", detail=detail, query_id="-123"),
           entry('duplicate key value violates unique constraint "t_pkey"', "ERROR", sqlstate="23505",
                 detail="Key (id)=(42) already exists.", statement="INSERT INTO t VALUES (42)"),
           entry("some warning", "WARNING", sqlstate="01000")])
    c = counters(t)
    assert c["deadlocks"] == {("shop",): 1}
    assert c["errors"] == {("40P01", "deadlock_detected"): 1, ("23505", "unique_violation"): 1}
    lock, = t.recent("lock", 10)
    assert [s["statement"] for s in lock["statements"]] == ["UPDATE t SET v = ? WHERE id = ?"] * 2
    assert lock["query_ids"] == ["-123"]
    error, = t.recent("error", 10)
    assert error["statement"] == "INSERT INTO t VALUES (?)" and "detail" not in error  # row values are private


def test_redact_off_keeps_literals_but_never_secrets():
    t = tally(redact=False)
    t.add([entry("statement: ALTER ROLE bob PASSWORD 'hunter2'"),
           entry("duration: 1500.0 ms  statement: SELECT * FROM t WHERE name = 'ann'")])
    ddl, = t.recent("ddl", 10)
    assert "hunter2" not in str(ddl) and ddl["command"] == "ALTER ROLE"
    slow, = t.recent("slow", 10)
    assert slow["statement"] == "SELECT * FROM t WHERE name = 'ann'"


def test_lock_wait_temp_file_checkpoint_autovacuum():
    t = tally()
    t.add([entry("process 17 still waiting for ShareLock on transaction 9 after 1000.123 ms"),
           entry("process 17 acquired ShareLock on transaction 9 after 2500.5 ms"),
           entry('temporary file: path "base/pgsql_tmp/pgsql_tmp17.0", size 1048576'),
           entry("checkpoint starting: immediate force wait", user="", database=""),
           entry("checkpoint complete: wrote 12 buffers (0.1%); 0 WAL file(s) added, 0 removed, 0 recycled; "
                 "write=0.101 s, sync=0.002 s, total=0.120 s; sync files=3", user="", database=""),
           entry("checkpoint starting: time", user="", database=""),
           entry("restartpoint starting: xlog", user="", database=""),
           entry('automatic vacuum of table "shop.public.orders": index scans: 0\npages: 0 removed\n'
                 "tuples: 2000 removed, 0 remain\nsystem usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.25 s"),
           entry('automatic analyze of table "shop.public.orders"\nsystem usage: CPU: user: 0.01 s, elapsed: 0.05 s')])
    c = counters(t)
    assert c["lock_waits"] == {("shop",): 1} and c["temp_files"] == {("shop",): 1}
    assert t.snapshot()[1]["lock"][("shop",)][1] == 2.5005
    assert c["checkpoints"] == {("immediate",): 1, ("time",): 1, ("wal",): 1}
    assert (c["checkpoint_buffers"][()], c["checkpoint_write"][()], c["checkpoint_total"][()]) == (12, 0.101, 0.12)
    assert c["checkpoints_done"] == {(): 1}
    assert c["autovacuum"] == {("shop", "public", "orders", "vacuum"): 1, ("shop", "public", "orders", "analyze"): 1}
    assert c["autovacuum_removed"] == {("shop", "public", "orders"): 2000}
    assert c["autovacuum_seconds"][("shop", "public", "orders", "vacuum")] == 0.25


def test_tables_past_the_cap_are_other():
    t = tally(max_tables=1)
    t.add([entry(f'automatic vacuum of table "shop.public.t{i}": tuples: 1 removed') for i in range(3)])
    assert counters(t)["autovacuum"] == {("shop", "public", "t0", "vacuum"): 1, ("shop", "other", "other", "vacuum"): 2}


def test_slow_statement_gets_the_plan_logged_before_it():
    t = tally()
    t.add([entry("duration: 300.0 ms  plan:\nQuery Text: SELECT * FROM t WHERE a = 5\n"
                 "Seq Scan on t  (cost=0.00..1.10 rows=1 width=4)\n  Filter: (a = 5)"),
           entry("duration: 300.5 ms  statement: SELECT * FROM t WHERE a = 5"),
           entry("duration: 2.0 ms  parse <unnamed>: SELECT 1"),
           entry("duration: 50.0 ms  execute S_1: SELECT $1", pid="18"),
           entry("duration: 400.0 ms  plan:\nQuery Text: SELECT 2\nResult", pid="19")])
    slow = t.recent("slow", 10)
    assert slow[0]["statement"] == "SELECT * FROM t WHERE a = ?" and "Filter: (a = ?)" in slow[0]["plan"]
    assert "cost=0.00..1.10" in slow[0]["plan"] and slow[0]["duration_seconds"] == 0.3005
    assert slow[1]["statement"] == "SELECT ?" and "plan" not in slow[1]
    assert t.snapshot()[1]["statement"][("shop", "bob")][0][-1] == (float("inf"), 2)  # parse and plan lines not counted
    t.add([])  # a plan whose statement line did not come by the next read is an event of its own
    assert len(t.recent("slow", 10)) == 3 and t.recent("slow", 10)[-1]["statement"] == "SELECT ?"


@pytest.mark.parametrize("statement, command", [
    ("CREATE TABLE t (id int)", "CREATE TABLE"), ("create unique index concurrently i on t (a)", "CREATE INDEX"),
    ("CREATE OR REPLACE FUNCTION f() ...", "CREATE FUNCTION"), ("/* x */ DROP TABLE IF EXISTS t", "DROP TABLE"),
    ("ALTER TABLE t ADD COLUMN b int", "ALTER TABLE"), ("GRANT SELECT ON t TO u", "GRANT"),
    ("CREATE MATERIALIZED VIEW v AS SELECT 1", "CREATE MATERIALIZED"), ("ALTER zzz", "ALTER other"),
    ("SELECT 1", ""), ("", ""), ("-- only a comment", ""),
])
def test_ddl_commands_are_a_bounded_set(statement, command):
    assert ddl_command(statement) == command


def test_plan_literals_redacted_outside_costs():
    plan = "Query Text: SELECT * FROM t WHERE name = 'ann'\nIndex Scan using i on t  (cost=0.29..8.30 rows=1)\n  Index Cond: (name = 'ann'::text)"
    out = redact_plan(plan)
    assert "ann" not in out and "cost=0.29..8.30" in out and "Index Cond: (name = ?::text)" in out


def test_events_ring_is_bounded():
    t = tally(events_size=3)
    t.add([entry(f"statement: DROP TABLE t{i}") for i in range(10)])
    assert [e["statement"] for e in t.recent("ddl", 100)] == ["DROP TABLE t7", "DROP TABLE t8", "DROP TABLE t9"]
    assert counters(t)["ddl"] == {("shop", "bob", "DROP TABLE"): 10}


def test_redact_off_still_redacts_a_secret_in_a_plan_query_text():
    t = tally(redact=False)
    t.add([entry("duration: 300.0 ms  plan:\nQuery Text: ALTER ROLE bob PASSWORD 'hunter2'\nUtility", pid="5"),
           entry("duration: 300.0 ms  plan:\nQuery Text: SELECT 'ann'\nResult", pid="6")])
    t.add([])
    t.add([])
    plans = [e["plan"] for e in t.recent("slow", 10)]
    assert "hunter2" not in "".join(plans) and any("SELECT 'ann'" in p for p in plans)


def test_a_password_guessing_run_does_not_take_the_labels_of_real_users():
    t = tally(max_users=3, max_databases=3)
    t.add([entry(f'password authentication failed for user "guess{i}"', "FATAL", sqlstate="28P01",
                 user=f"guess{i}", database=f"db{i}") for i in range(1000)])
    t.add([entry("connection authorized: user=bob database=shop")])
    c = counters(t)
    assert c["connections"] == {("shop", "bob", "unknown"): 1}
    assert len(c["auth_failures"]) == 4 and c["auth_failures"][("other", "other", "password")] == 997
    assert sum(c["auth_failures"].values()) == 1000


def test_a_malformed_sqlstate_is_unknown():
    t = tally()
    t.add([entry("x", "ERROR", sqlstate="a\nb;c")])
    assert counters(t)["messages"] == {("ERROR", "unknown"): 1}


def test_events_mask_what_the_server_quoted():
    from exporter.serverlog.tally import Tally

    shown = Tally.__dict__["_shown"]

    class Redacting:
        redact = True
        _text = staticmethod(lambda text: text)

    event = {"message": 'syntax error at or near "hunter2"', "statement": None}
    assert shown(Redacting(), event)["message"] == 'syntax error at or near "\u2026"'
    Redacting.redact = False
    assert shown(Redacting(), event)["message"] == 'syntax error at or near "hunter2"'
