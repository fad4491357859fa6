"""Secret-carrying statements (exporter.instrument.redact): which are redacted, which are not, and
property-based tests that a password never shows, whatever its form (Hypothesis, bounded)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exporter.instrument.fingerprint import shown_text
from exporter.instrument.redact import REDACTED, redact, redact_secrets, secret_reason

pytestmark = pytest.mark.fast

PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.parametrize("sql, head, reason", [
    ("ALTER ROLE hog PASSWORD 'LeakMe123!'", "ALTER ROLE", "role password"),
    ("create user app with login encrypted password 'x' valid until 'infinity'", "CREATE USER", "role password"),
    ("ALTER /* c */ USER app PASSWORD $1", "ALTER USER", "role password"),
    ("ALTER GROUP g PASSWORD NULL", "ALTER GROUP", "role password"),
    ("CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password 'pw')", "CREATE USER MAPPING",
     "user mapping options"),
    ("ALTER USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (SET password 'pw')", "ALTER USER MAPPING",
     "user mapping options"),
    ("CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'h', dbname 'd')", "CREATE SERVER",
     "server options"),
    ("CREATE SUBSCRIPTION sub CONNECTION 'host=h user=u' PUBLICATION p", "CREATE SUBSCRIPTION",
     "subscription connection"),
    ("SELECT pgp_sym_encrypt('card 4111', 'k3y')", "SELECT", "function pgp_sym_encrypt"),
    ("SELECT public.pgp_sym_decrypt(data, $1) FROM cards", "SELECT", "function pgp_sym_decrypt"),
    ("SELECT pgp_pub_decrypt(d, dearmor(?)) FROM t", "SELECT", "function pgp_pub_decrypt"),
    ("UPDATE users SET pw = crypt(?, gen_salt(?))", "UPDATE", "function crypt"),
    ('SELECT "dblink_connect"(?)', "SELECT", "function dblink_connect"),
    ("SELECT * FROM dblink('host=h', 'SELECT 1') AS t(a int)", "SELECT", "function dblink"),
    ("SELECT set_config('app.db_password', 'x', false)", "SELECT", "secret setting"),
    ("SELECT set_config($1, $2, false)", "SELECT", "secret setting"),
    ("SET app.api_token = 'abc'", "SET", "secret setting"),
    ("SET SESSION myapp.secret TO 'abc'", "SET SESSION", "secret setting"),
    ("ALTER SYSTEM SET primary_conninfo = 'host=p user=r'", "ALTER SYSTEM SET", "secret setting"),
    ("SELECT 1 FROM t WHERE c = 'host=h password=pw'", "SELECT", "password in a connection string"),
    ("SELECT 'postgresql://u:pw@h/db'", "SELECT", "password in a connection string"),
    ("DO $$BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', 'r', 'pw'); END$$", "DO", "role password"),
    ("INSERT INTO users (name, password) VALUES ('bob', 'hunter2')", "INSERT",
     "literal beside a secret-named identifier"),
    ("BEGIN; ALTER ROLE x PASSWORD 'y'; COMMIT", "BEGIN", "role password"),
    (r"SELECT 'a\' , pgp_sym_encrypt(x, y) -- '", "SELECT", "function pgp_sym_encrypt"),  # scs off reading
    ('SELECT U&"pgp\\005Fsym_encrypt"(x, y)', "SELECT", "function pgp_sym_encrypt"),
])
def test_secret_statements_are_redacted(sql, head, reason):
    assert secret_reason(sql) == reason
    assert redact_secrets(sql) == f"{head} {REDACTED}"
    assert redact(sql) == f"{head} {REDACTED}"


@pytest.mark.parametrize("sql", [
    "SELECT 1",
    "UPDATE users SET password = %s WHERE id = %s",
    "UPDATE users SET password = ? WHERE id = ?",
    "INSERT INTO users (name, password_hash) VALUES (?)",
    "INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO UPDATE SET password = EXCLUDED.password",
    "SELECT id, password FROM users WHERE name = $1",
    "CREATE ROLE app LOGIN",
    "ALTER ROLE app SET work_mem = '64MB'",
    "SELECT * FROM servers WHERE id = 1",
    "SELECT 1 -- password 'x' in a comment only",
    "SET statement_timeout = '5s'",
    "SELECT set_config('search_path', 'public', false)",
    "SELECT 'no secret here'",
])
def test_ordinary_statements_are_kept(sql):
    assert secret_reason(sql) is None
    assert redact_secrets(sql) is None and redact(sql) == sql


def test_the_issue_statement_in_the_application_library():
    assert shown_text("ALTER ROLE hog PASSWORD 'LeakMe123!'") == f"ALTER ROLE {REDACTED}"


def test_non_text_is_a_type_error():
    for call in (redact_secrets, redact, secret_reason):
        with pytest.raises(TypeError, match="must be str"):
            call(None)


# -- properties -------------------------------------------------------------------------------------

SECRET = st.text(st.characters(exclude_categories=("Cs",)), min_size=4, max_size=30)
NAME = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
SPACE = st.sampled_from([" ", "  ", "\n", "\t", " /* x */ ", " -- c\n"])


def _quote(secret: str, form: str) -> str | None:
    if form == "standard":
        return "'" + secret.replace("'", "''") + "'"
    if form == "escape":
        return "E'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if "$$" in "$" + secret + "$":
        return None
    return "$$" + secret + "$$"


@PROPERTY
@given(SECRET, st.sampled_from(["standard", "escape", "dollar"]), NAME, SPACE, SPACE,
       st.sampled_from(["ALTER ROLE", "alter user", "CREATE ROLE", "create user", "Alter Group"]),
       st.sampled_from(["", " WITH", " LOGIN", " WITH ENCRYPTED", " NOSUPERUSER INHERIT"]))
def test_a_role_password_never_shows(secret, form, name, sp1, sp2, verb, options):
    literal = _quote(secret, form)
    assume(literal is not None)
    sql = f"{verb.replace(' ', sp1)} {name}{options}{sp2}PASSWORD {literal}"
    assume(secret.upper() not in f"{verb} {REDACTED}".upper())  # e.g. "ROLE", "cret": in the output anyway
    for text in (redact_secrets(sql), shown_text(sql)):
        assert text is not None and text.endswith(REDACTED) and secret not in text


SQLISH = st.lists(st.one_of(st.sampled_from(["'", "''", "\\", "E'", "$$", "$a$", "--", "/*", "*/", "\n", ";",
                                             "(", ")", " ", "PASSWORD", "ALTER ROLE", "SET", "UPDATE",
                                             "pgp_sym_encrypt", "set_config", "dblink", "OPTIONS", "U&\"",
                                             "\\0070", "password=", "://u:p@", "\ud800"]),
                            st.text(max_size=4)), max_size=40).map("".join)


# code around PASSWORD that opens no literal, comment or quoted identifier
CODE = st.lists(st.one_of(st.sampled_from(["SELECT", "UPDATE t SET", "ALTER ROLE x", "(", ")", ";", ",", " ", "\n",
                                           "=", "::", "1", "x.y", "WITH", "OPTIONS"]),
                          st.text(st.characters(exclude_characters="'\"$-/\\", exclude_categories=("Cs",)),
                                  max_size=4)),
                max_size=20).map(" ".join)


@PROPERTY
@given(CODE, CODE, SECRET, st.sampled_from(["standard", "escape", "dollar"]))
def test_password_followed_by_a_literal_never_shows(prefix, suffix, secret, form):
    literal = _quote(secret, form)
    assume(literal is not None)
    sql = f"{prefix} PASSWORD {literal} {suffix}"
    assume(secret.upper() not in f"{prefix} {REDACTED}".upper())  # the head keywords come from the prefix
    text = redact_secrets(sql)
    assert text is not None and secret not in text


@PROPERTY
@given(st.one_of(SQLISH, st.text(st.characters(exclude_categories=()), max_size=200)))
def test_any_text_is_redacted_or_kept_without_error(sql):
    reason = secret_reason(sql)
    text = redact_secrets(sql)
    assert (reason is None) == (text is None)
    assert text is None or text.endswith(REDACTED)
    assert redact(sql) == (sql if text is None else text)
