"""dbperf's own SQL, as planned for every supported server version (13 to 18), without a server:
none of it has an anti-pattern dbperf's advisor flags, and every statement of every batch carries
``/*application='dbperf'*/`` inside its own text (what pg_stat_statements keeps of it), as
pglast -- PostgreSQL's own parser -- splits the batch. tests/test_sqlmark_server.py checks the
same on a real server, after real scrapes."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from exporter.advisor.indexes import INDEX_SQL, SEQ_SQL
from exporter.advisor.maintenance import TABLES_SQL
from exporter.advisor.statements import check_sql, parse
from exporter.collector import Context, ServerInfo
from exporter.config import parse as parse_config
from exporter.postgres import catalog, connection, live, settings, statements
from exporter.postgres.sqlmark import MARK, batch, is_own, mark, sql_literal
from exporter.postgres.kind import PROBE_SQL

pytestmark = pytest.mark.fast

VERSIONS = (130000, 140000, 150000, 160000, 170000, 180000)


def target(**extra):
    data = {"name": "t", "dsn": "host=localhost dbname=app", **extra}
    return parse_config({"targets": [data]}, source="test").targets[0]


def ctx(version: int, **extra) -> Context:
    return Context(target="t", datname="app", options=target(**extra),
                   server=ServerInfo(version=version, in_recovery=False, dbname="app",
                                     extensions=frozenset({"pg_stat_statements"})))


def pipelines_sql() -> list[str]:
    from exporter.pipelines.collector import SourceState, scrape_sql
    from exporter.pipelines.sources import (AIRFLOW_DAG_RUN, AIRFLOW_TASK_INSTANCE, COLUMNS, catalog_sql, ident,
                                            resolve)

    config = target(pipelines={"sources": [
        {"type": "table", "name": "runs"},
        {"type": "table", "name": "mapped", "table": "etl.jobs",
         "columns": {"pipeline": "job", "rows_processed": None, "errors": None},
         "statuses": {"success": "ok", "failed": ["ko", "error"], "running": "busy"}},
        {"type": "airflow", "name": "airflow"}]})
    out = []
    for source in config.pipelines.sources:
        if source.type == "table":
            relation = f"{ident(source.schema)}.{ident(source.table)}"
            found = {relation: [source.columns.get(c, c) for c in COLUMNS if source.columns.get(c, c)]}
        else:
            found = {f"{ident(source.schema)}.dag_run": list(AIRFLOW_DAG_RUN) + ["logical_date"],
                     f"{ident(source.schema)}.task_instance": list(AIRFLOW_TASK_INSTANCE)}
        resolved = resolve(source, found, "app")
        out.append(mark(catalog_sql(source)))  # the collector marks it where it sends it
        out.append(scrape_sql(resolved, SourceState(), 60.0))
        out.append(scrape_sql(resolved, SourceState(closed_until=datetime(2024, 1, 1, tzinfo=timezone.utc)), 60.0))
    return out


def every_batch() -> list[tuple[str, str]]:
    """``(where, sql)`` for every batch dbperf's exporter sends to PostgreSQL."""
    out = [("probe", PROBE_SQL), ("settings", settings.SQL),
           ("connection setup", connection.SETUP_SQL.format(lock=1000))]
    collector = statements.StatementsCollector()
    for version in VERSIONS:
        for c in catalog.load():
            if c.plan(version):
                out.append((f"{c.name} on {version}", c.sql(ctx(version))))
        out.append((f"statements on {version}", collector.sql(version)))
        for options in ({}, {"slowest_query_info": True, "slow_threshold": "2s"}):
            out.append((f"live_queries {options} on {version}",
                        live.LiveQueriesCollector().sql(ctx(version, statements=options))))
    out += [("statements text", statements.TEXT_SQL.format(ids="1,-2")),
            ("statements text (13)", statements.TEXT_SQL_PG13.format(ids="1,-2")),
            ("statements classify", statements.CLASSIFY_SQL.replace("{ids}", "1,-2")),
            ("statements classify (none)", statements.CLASSIFY_SQL.replace("{ids}", ""))]
    out += [(f"pipelines {i}", sql) for i, sql in enumerate(pipelines_sql())]
    # the advisor collector's (opt-in) statements, with the integers it passes as parameters
    out += [("advisor indexes", INDEX_SQL), ("advisor seq scans", SEQ_SQL % {"rows": 10000, "scans": 50}),
            ("advisor maintenance", TABLES_SQL)]
    return out


BATCHES = every_batch()


def test_the_inventory_covers_every_collector_and_version():
    names = {where.split(" on ")[0] for where, _ in BATCHES}
    assert {c.name for c in catalog.load()} <= names
    assert len([w for w, _ in BATCHES if w.startswith("statements on ")]) == len(VERSIONS)
    # the catalog plans something different where the server changed: 14 (pg_stat_wal), 17 (checkpointer)
    assert dict(BATCHES)["wal on 130000"] != dict(BATCHES)["wal on 140000"]
    assert dict(BATCHES)["checkpointer on 160000"] != dict(BATCHES)["checkpointer on 170000"]


@pytest.mark.parametrize("where,sql", BATCHES, ids=[w for w, _ in BATCHES])
def test_no_anti_pattern_the_advisor_flags(where, sql):
    issues = check_sql(sql)
    assert not issues, [f"{i.check}: {i.message}" for i in issues]


@pytest.mark.parametrize("where,sql", [(w, s) for w, s in BATCHES if not w.startswith("advisor")],
                         ids=[w for w, _ in BATCHES if not w.startswith("advisor")])
def test_every_statement_of_every_batch_carries_the_marker(where, sql):
    statements_ = parse(sql)
    assert statements_
    for raw in statements_:
        end = raw.stmt_location + raw.stmt_len if raw.stmt_len else None
        text = sql[raw.stmt_location:end]
        assert is_own(text), f"{where}: no {MARK} in {text!r}"
        assert text.rstrip().endswith(MARK), text  # trailing: nothing of the statement after it


def test_mark_puts_the_marker_inside_the_statement():
    assert mark("SELECT 1;  ") == "SELECT 1 " + MARK
    assert mark(mark("SELECT 1")) == mark("SELECT 1")
    # a "--" comment on the last line would swallow a marker on the same line
    assert mark("SELECT 1 -- one") == "SELECT 1 -- one\n" + MARK
    assert batch(["SELECT 1;", "SELECT 2"]) == f"SELECT 1 {MARK};\nSELECT 2 {MARK}"
    assert parse(batch(["SELECT 1 -- x", "SELECT 2"]))[1].stmt_location > 0
    assert sql_literal() == "'/*application=''dbperf''*/'"
    assert not is_own(None) and not is_own("") and not is_own("SELECT 1 /* application='dbperf' */")


@pytest.mark.parametrize("text,command", [
    ("BEGIN", "begin"), ("begin isolation level serializable", "begin"), ("BEGIN WORK", "begin"),
    ("START TRANSACTION READ ONLY", "begin"), ("COMMIT", "commit"), ("commit work", "commit"),
    ("END", "commit"), ("END TRANSACTION", "commit"), ("COMMIT AND CHAIN", "commit"),
    ("ROLLBACK", "rollback"), ("ABORT", "rollback"), ("rollback work", "rollback"),
    ("ROLLBACK AND NO CHAIN", "rollback"), ("SAVEPOINT sp1", "savepoint"), ("RELEASE SAVEPOINT sp1", "release"),
    ("RELEASE sp1", "release"), ("ROLLBACK TO SAVEPOINT sp1", "rollback_to_savepoint"),
    ("ROLLBACK TO sp1", "rollback_to_savepoint"), ("ROLLBACK TRANSACTION TO SAVEPOINT a", "rollback_to_savepoint"),
    ("PREPARE TRANSACTION 'x'", "prepare_transaction"), ("PREPARE TRANSACTION $1", "prepare_transaction"),
    ("COMMIT PREPARED 'x'", "commit_prepared"), ("ROLLBACK PREPARED $1", "rollback_prepared"),
    ("/* app:checkout */ COMMIT", "commit"), ("-- pool reset\nROLLBACK", "rollback"),
    ("  \n\tBEGIN", "begin"),
    ("SELECT 1", None), ("PREPARE q AS SELECT 1", None), ("START_REPLICATION", None),
    ("ENDPOINT", None), ("release_notes", None), ("UPDATE t SET committed = true", None),
    ("DO $$ BEGIN PERFORM 1; END $$", None), ("", None), ("/* BEGIN */ SELECT 1", None),
])
def test_transaction_commands(text, command):
    assert statements.transaction_command(text) == command


def test_every_command_is_one_of_the_documented_names():
    texts = ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT a", "RELEASE a", "ROLLBACK TO a", "PREPARE TRANSACTION 'x'",
             "COMMIT PREPARED 'x'", "ROLLBACK PREPARED 'x'"]
    assert [statements.transaction_command(t) for t in texts] == list(statements.TRANSACTION_COMMANDS)
    family = next(f for f in statements.StatementsCollector.describe()
                  if f.name == "pg_stat_statements_transaction_control_calls_total")
    assert family.labelnames == ("datname", "command") and family.type == "counter"
    assert all(c in family.help for c in statements.TRANSACTION_COMMANDS)
    assert 'queryid="transaction_control"' in family.help
