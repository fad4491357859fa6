"""``dbperf setup-sql`` without a server: its options and their one-line errors, the quoting of
names and literals, SASLprep (RFC 4013's examples), the managed services' admin databases left out
of discovery, and the grant each failure's log line names. tests/test_least_privilege.py runs the
script on real servers."""

from __future__ import annotations

import psycopg
import pytest

from exporter.cli import main
from exporter.config import MANAGED_ADMIN_DATABASES, parse
from exporter.postgres.privileges import grant_hint, role_of
from exporter.setupsql import do_block, quote_literal, saslprep, scram_verifier, script

pytestmark = pytest.mark.fast


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["setup-sql", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_default_script_creates_a_passwordless_login_role_with_what_dbperf_needs(capsys):
    code, out, err = run(capsys)
    assert code == 0 and not err
    assert "WHERE rolname = 'dbperf') THEN\n    CREATE ROLE dbperf LOGIN;" in out  # only when missing
    assert "ALTER ROLE dbperf WITH LOGIN;" in out and "PASSWORD" not in out
    assert "GRANT pg_monitor TO dbperf;" in out
    assert "GRANT CONNECT ON DATABASE %I TO %I', d, 'dbperf'" in out
    assert "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;" in out
    assert "--   shared_preload_libraries = 'pg_stat_statements'" in out  # a comment, for postgresql.conf
    for admin in MANAGED_ADMIN_DATABASES:  # never granted on (they refuse connections anyway)
        assert f"'{admin}'" in out


def test_the_password_file_gives_a_scram_verifier_never_the_password(capsys, tmp_path):
    (tmp_path / "pw").write_text("hunter2\n")
    code, out, err = run(capsys, "--role", "mon", "--password-file", str(tmp_path / "pw"))
    assert code == 0 and not err
    assert "hunter2" not in out
    (line,) = [x for x in out.splitlines() if x.startswith("ALTER ROLE mon WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:")]
    # a new salt each time: the same password gives another verifier
    assert scram_verifier("hunter2") != scram_verifier("hunter2")
    assert line.endswith("';")


@pytest.mark.parametrize("content,reason", [
    ("", "empty"), ("\n", "empty"), ("one\ntwo\n", "more than one line"), ("a\x00b", "NUL"),
])
def test_a_bad_password_file_is_one_line_naming_the_option(capsys, tmp_path, content, reason):
    (tmp_path / "pw").write_text(content)
    code, out, err = run(capsys, "--password-file", str(tmp_path / "pw"))
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("dbperf setup-sql: --password-file: ") and reason in err, err


def test_a_missing_password_file_or_a_fifo_is_one_line(capsys, tmp_path):
    import os

    code, out, err = run(capsys, "--password-file", str(tmp_path / "nope"))
    assert code == 2 and not out and "No such file" in err and err.count("\n") == 1
    os.mkfifo(tmp_path / "fifo")  # refused at once, never a wait for a writer
    code, out, err = run(capsys, "--password-file", str(tmp_path / "fifo"))
    assert code == 2 and "not a regular file (a FIFO)" in err


@pytest.mark.parametrize("role,reason", [("", "1 to 63 bytes"), ("x" * 64, "1 to 63 bytes"),
                                         ("pg_mine", "reserved")])
def test_a_bad_role_name_is_one_line(capsys, role, reason):
    code, out, err = run(capsys, "--role", role)
    assert code == 2 and not out and err.startswith("dbperf setup-sql: --role: ") and reason in err, err


def test_names_and_literals_are_quoted():
    sql = script('we"ird $dbperf$ Role', "it's \\ here")
    assert 'CREATE ROLE "we""ird $dbperf$ Role" LOGIN;' in sql
    assert "rolname = 'we\"ird $dbperf$ Role'" in sql
    assert "GRANT pg_monitor TO \"we\"\"ird $dbperf$ Role\";" in sql
    # the role's name holds the block's usual dollar tag: another one is chosen
    assert "DO $dbperf1$\nBEGIN\n  IF NOT EXISTS" in sql and "DO $dbperf1$\nDECLARE" in sql
    assert quote_literal("it's") == "'it''s'"
    assert quote_literal("a\\b'c") == "E'a\\\\b''c'"  # the same with standard_conforming_strings off
    assert do_block("BEGIN NULL; END").startswith("DO $dbperf$\nBEGIN")


@pytest.mark.parametrize("given,prepared", [
    ("I\u00adX", "IX"), ("user", "user"), ("USER", "USER"), ("\u00aa", "a"), ("\u2168", "IX"),
    ("\u0007", "\u0007"),                    # ASCII: as is (PostgreSQL does not prepare it)
    ("\u0627\u0031", "\u0627\u0031"),        # bidi rule broken: the raw password, as PostgreSQL
    ("a\u00a0b", "a b"),                     # a non-ASCII space is a space
])
def test_saslprep_rfc4013_examples(given, prepared):
    assert saslprep(given) == prepared


def test_managed_admin_databases_are_not_discovered_unless_included():
    def wanted(databases: dict | None = None):
        target = {"name": "t", "dsn": "host=localhost dbname=postgres"}
        if databases is not None:
            target["databases"] = databases
        dbs = parse({"targets": [target]}).targets[0].databases
        return {d for d in [*MANAGED_ADMIN_DATABASES, "app", "postgres"] if dbs.wanted(d)}

    assert wanted() == {"app", "postgres"}
    assert wanted({"exclude": "app"}) == {"postgres"}  # the user's exclude adds to it
    assert wanted({"include": "azure_sys|app"}) == {"azure_sys", "app"}  # named: covered


def test_the_managed_services_page_names_every_excluded_database():
    from conftest import ROOT

    page = (ROOT / "docs" / "managed-services.md").read_text()
    for name in MANAGED_ADMIN_DATABASES:
        assert f"`{name}`" in page, name
    for service in ("RDS", "Aurora", "Cloud SQL", "Azure"):
        assert service in page


def test_the_grant_each_failure_names():
    dsn = "host=db user=Mon"
    denied = psycopg.errors.InsufficientPrivilege("permission denied for view pg_stat_secret")
    assert grant_hint(denied, dsn) == ': GRANT pg_monitor TO "Mon"'
    waldir = psycopg.errors.InsufficientPrivilege("permission denied for function pg_ls_waldir")
    assert grant_hint(waldir, dsn).startswith(': GRANT pg_monitor TO "Mon" (on Aurora')
    refused = RuntimeError('cannot connect: FATAL: permission denied for database "a b" DETAIL: User does not have '
                           'CONNECT privilege.')
    assert grant_hint(refused, dsn) == ': GRANT CONNECT ON DATABASE "a b" TO "Mon", or leave it out with databases.exclude'
    hba = RuntimeError('FATAL: pg_hba.conf rejects connection for host "127.0.0.1", user "Mon", database "x"')
    assert "pg_hba.conf" in grant_hint(hba, dsn) and "databases.exclude" in grant_hint(hba, dsn)
    settings = RuntimeError('must be superuser or have privileges of pg_read_all_settings to examine "x"')
    assert grant_hint(settings, dsn) == ': GRANT pg_monitor TO "Mon"'  # as text (the sampler's last error)
    assert grant_hint(TimeoutError("canceling statement due to statement timeout"), dsn) == ""
    assert role_of("postgresql://u%40x@h/db") == "u@x"


def test_the_script_lists_the_server_log_settings_as_comments_to_choose_from():
    text = script()
    from exporter.serverlog.settings import LOG_SETTINGS

    for name, value, *_ in LOG_SETTINGS:
        assert f"--   ALTER SYSTEM SET {name} = '{value}';" in text
    assert not any(line.startswith("ALTER SYSTEM") for line in text.splitlines())  # nothing changed unasked
