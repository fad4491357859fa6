"""With ``statements.query_text: true``, a statement that carries a secret is served redacted in
pg_stat_statements_query_info (exporter.instrument.redact's rules), on the real server: the secret
never appears in /metrics. pg_stat_statements keeps utility statements (ALTER ROLE, CREATE SERVER,
CREATE USER MAPPING) verbatim, literals included."""

from __future__ import annotations

import uuid

import pytest

from conftest import make_config, promtool_check_metrics
from exporter.instrument.redact import REDACTED

pytestmark = pytest.mark.pg


@pytest.fixture
def secrets_db(pg):
    suffix = uuid.uuid4().hex[:8]
    name, role, server = f"secrets_{suffix}", f"hog_{suffix}", f"srv_{suffix}"
    pg.execute(f"CREATE DATABASE {name}")
    pg.execute(f"CREATE ROLE {role}")
    yield name, role, server
    pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.execute(f"DROP ROLE IF EXISTS {role}")


def query_info(samples, datname: str) -> dict:
    return {s.labels["queryid"]: s.labels["query"] for s in samples.series("pg_stat_statements_query_info",
                                                                           datname=datname)}


def queryids(pg, datname: str, like: str) -> list:
    return [r[0] for r in pg.execute(
        """SELECT DISTINCT s.queryid::text FROM pg_stat_statements(true) s JOIN pg_database d ON d.oid = s.dbid
           WHERE d.datname = %s AND s.query ILIKE %s""", params=(datname, like))]


def test_statements_with_secrets_are_redacted_in_query_info(pg, secrets_db, serve):
    name, role, server = secrets_db
    secrets = {  # secret -> the statement that carries it
        "LeakMe123!": f"ALTER ROLE {role} PASSWORD 'LeakMe123!'",
        "SrvSecret9": f"CREATE SERVER {server} FOREIGN DATA WRAPPER postgres_fdw "
                      "OPTIONS (host 'db.internal', dbname 'SrvSecret9')",
        "MapSecret7": f"CREATE USER MAPPING FOR {role} SERVER {server} OPTIONS (user 'app', password 'MapSecret7')",
        "CfgSecret3": "SELECT set_config('app.password', 'CfgSecret3', false)",
    }
    pgcrypto = bool(pg.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto'"))
    with pg.connect(name) as conn:
        conn.execute("CREATE EXTENSION postgres_fdw")
        if pgcrypto:
            conn.execute("CREATE EXTENSION pgcrypto")
            secrets["CryptSecret5"] = "SELECT pgp_sym_encrypt('x', 'CryptSecret5')"
        for statement in secrets.values():
            conn.execute(statement)
        conn.execute("SELECT count(*) AS plain_statement FROM pg_class WHERE relkind = 'r'")
    if not pgcrypto:  # the machine's contrib lacks it: the pgp_sym_encrypt case cannot run here
        assert not pg.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto'")
    # pg_stat_statements keeps the utility statements' secrets as typed
    kept = pg.execute("SELECT query FROM pg_stat_statements(true) s JOIN pg_database d ON d.oid = s.dbid "
                      "WHERE d.datname = %s", params=(name,))
    assert any("LeakMe123!" in q for q, in kept) and any("MapSecret7" in q for q, in kept)

    served = serve(make_config(pg, {"name": "redact_" + name, "databases": {"discover": False},
                                    "statements": {"query_text": True, "limit": 100}}))
    samples = served.metrics()
    for secret in secrets:
        assert secret not in samples.text, secret
    texts = query_info(samples, name)
    for like in ("ALTER ROLE%PASSWORD%", "CREATE SERVER%", "CREATE USER MAPPING%", "%set_config%",
                 *(["%pgp_sym_encrypt%"] if pgcrypto else [])):
        ids = queryids(pg, name, like)
        assert ids, like
        for queryid in ids:
            assert REDACTED in texts[queryid], (like, texts[queryid])
    # an ordinary statement keeps its text
    (plain,) = queryids(pg, name, "%plain_statement%")
    assert texts[plain] == "SELECT count(*) AS plain_statement FROM pg_class WHERE relkind = $1"
    assert REDACTED not in texts[plain]
    assert promtool_check_metrics(samples.text) == ""
    # a second scrape (texts cached) serves the same redacted text
    again = served.metrics()
    assert query_info(again, name) == texts
    assert not any(secret in again.text for secret in secrets)
