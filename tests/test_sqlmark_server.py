"""dbperf's own SQL on a real server: after scrapes with every collector on, every statement that
pg_stat_statements kept for dbperf's role -- each statement of each multi-statement batch, the
SETs of the session included -- carries ``/*application='dbperf'*/``, and the statements collector
folds them into ``queryid="dbperf"``."""

from __future__ import annotations

import uuid

import pytest

from conftest import make_config, wait_until
from exporter.pipelines.schema import SQL as PIPELINES_SCHEMA_SQL
from exporter.postgres.sqlmark import MARK, is_own

pytestmark = pytest.mark.pg


@pytest.fixture
def own_role_and_db(pg):
    """A role used only by the dbperf under test (so pg_stat_statements' rows of that role are
    exactly dbperf's statements) and a database of its own with a pipelines runs table."""
    suffix = uuid.uuid4().hex[:8]
    role, db = f"dbperf_mark_{suffix}", f"mark_test_{suffix}"
    pg.execute(f"CREATE ROLE {role} LOGIN IN ROLE pg_monitor")
    pg.execute(f"CREATE DATABASE {db}")
    pg.execute("CREATE EXTENSION pg_stat_statements", dbname=db)
    pg.execute(PIPELINES_SCHEMA_SQL, dbname=db)
    pg.execute(f"GRANT USAGE ON SCHEMA dbperf TO {role}; GRANT SELECT ON ALL TABLES IN SCHEMA dbperf TO {role}",
               dbname=db)
    pg.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 50) g",
               dbname=db)
    yield role, db
    pg.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    pg.execute(f"DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}", dbname="postgres")


def own_statements(pg, role: str) -> list[tuple]:
    return pg.execute(
        """SELECT d.datname, s.queryid::text, s.query FROM pg_stat_statements(true) s
           JOIN pg_roles r ON r.oid = s.userid LEFT JOIN pg_database d ON d.oid = s.dbid
           WHERE r.rolname = %s""", params=(role,))


def test_every_statement_dbperf_sends_carries_the_marker(pg, own_role_and_db, serve):
    role, db = own_role_and_db
    config = make_config(pg, {
        "name": "mark_" + db, "dsn": pg.dsn(db, user=role),
        "databases": {"include": f"{db}|dbperf_second"},
        # every collector on, opt-in ones included; no cache, so each scrape runs each of them
        "collectors": {"advisor": {"enabled": True, "ttl": 0}, "table_sizes": {"ttl": 0},
                       "database_size": {"ttl": 0}, "settings": {"ttl": 0}, "tables": {"ttl": 0},
                       "indexes": {"ttl": 0}},
        "statements": {"query_text": True, "slowest_query_info": True},
        "pipelines": {"sources": [{"type": "table"}]},
    })
    served = serve(config)
    for _ in range(3):
        samples = served.metrics()
    failed = [s.labels for s in samples.series("dbperf_collector_success") if s.value != 1]
    assert not failed, failed
    rows = own_statements(pg, role)
    unmarked = [(datname, query) for datname, _, query in rows if not is_own(query)]
    assert not unmarked, f"{len(unmarked)} of {len(rows)} statements without {MARK}: {unmarked[:5]}"
    texts = [query for _, _, query in rows]
    # the batches' statements are each there: the session's SET, and the three statements of
    # stat_database's batch (the second and third follow a ";" in the batch)
    assert any(t.startswith("SET statement_timeout") for t in texts), texts
    assert any("pg_stat_database_conflicts" in t for t in texts)
    assert any("sessions_abandoned" in t for t in texts)
    assert len(rows) >= 30, len(rows)
    assert {datname for datname, _, _ in rows} >= {db, "dbperf_second"}
    # the statements collector shows none of them: all are in the dbperf pseudo row (a statement
    # first seen within 49 times the last classifying read's duration waits for the next one)
    def none_ranked():
        scraped = served.metrics()
        return None if scraped.series("pg_stat_statements_calls_total", datname=db, user=role) else scraped

    samples = wait_until(none_ranked, timeout=30, message="no statement of dbperf's role among the ranked ones")
    own_calls = samples.value("pg_stat_statements_calls_total", datname=db, queryid="dbperf")
    truth = pg.execute("""SELECT sum(s.calls)::float8 FROM pg_stat_statements(false) s
                          JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.userid
                          WHERE d.datname = %s AND r.rolname = %s""", params=(db, role))[0][0]
    # the scrape's own statements run after the collector's read: at most one scrape's worth later
    assert 0 < own_calls <= truth
