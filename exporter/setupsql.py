"""``dbperf setup-sql [--role NAME] [--password-file F]``: the SQL that sets up dbperf's
monitoring role, to run once as a superuser (or a managed service's admin role) with psql.

It creates the role (LOGIN; with ``--password-file`` a password, else none, for peer or certificate
authentication), grants it ``pg_monitor`` (all the default collectors need) and ``CONNECT`` on every
connectable database, and creates pg_stat_statements in the database it runs in (the one dbperf's
DSN names: the statements collector reads every database's statements there). The
``shared_preload_libraries`` line pg_stat_statements needs is printed as a comment, and the script
warns when the library is not loaded. Running it again is harmless: the role is created only when
``pg_roles`` has none of that name, grants and ``CREATE EXTENSION IF NOT EXISTS`` are idempotent.

The password never appears in the output, nor on a command line: it is read from the file and
printed as a SCRAM-SHA-256 verifier (as psql's ``\\password`` sends it), so the server, its
statement log and anyone reading the script see only the verifier.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import stringprep
import sys
import unicodedata

from exporter.advisor import quote_ident
from exporter.config import MANAGED_ADMIN_DATABASES
from exporter.configfile import ConfigError, FileProblem, read_text

DEFAULT_ROLE = "dbperf"
SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)
SALT_BYTES = 16
MAX_PASSWORD_FILE = 4096
MAX_NAME_BYTES = 63  # NAMEDATALEN - 1


def quote_literal(text: str) -> str:
    """A SQL string literal of ``text``, the same whatever standard_conforming_strings is (as
    PostgreSQL's own quote_literal: E'' when it holds a backslash)."""
    quoted = "'" + text.replace("'", "''").replace("\\", "\\\\") + "'"
    return "E" + quoted if "\\" in text else quoted


# -- SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL stores it -------------------------------
def saslprep(password: str) -> str:
    """``password`` prepared as PostgreSQL's pg_saslprep does before hashing: ASCII as is; otherwise
    RFC 4013's mapping, NFKC and checks, and the password as is when it has a prohibited or
    unassigned character (PostgreSQL then hashes the raw bytes too)."""
    if password.isascii():
        return password
    mapped = "".join(" " if stringprep.in_table_c12(ch) else ch for ch in password
                     if not stringprep.in_table_b1(ch))
    prepared = unicodedata.normalize("NFKC", mapped)
    prohibited = (stringprep.in_table_a1, stringprep.in_table_c12, stringprep.in_table_c21_c22,
                  stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
                  stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9)
    if any(check(ch) for ch in prepared for check in prohibited):
        return password
    if any(stringprep.in_table_d1(ch) for ch in prepared):  # right-to-left text: RFC 3454 section 6
        if any(stringprep.in_table_d2(ch) for ch in prepared) or not (
                stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            return password
    return prepared


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``, what ``ALTER ROLE ...
    PASSWORD`` accepts as an already hashed password."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


# -- the script --------------------------------------------------------------------------------
def read_password(path: str) -> str:
    """The password in ``path``: its one line, without the line end."""
    try:
        text = read_text(path, MAX_PASSWORD_FILE)
    except FileProblem as exc:
        raise ConfigError("", "--password-file", f"{path}: {exc}") from None
    password = text[:-1] if text.endswith("\n") else text
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise ConfigError("", "--password-file", f"{path}: empty (it holds the role's password, one line)")
    if "\n" in password or "\r" in password:
        raise ConfigError("", "--password-file", f"{path}: more than one line (it holds the password, one line)")
    if "\x00" in password:
        raise ConfigError("", "--password-file", f"{path}: holds a NUL character, which a password cannot")
    return password


def check_role(role: str) -> str:
    if not role or "\x00" in role or len(role.encode("utf-8")) > MAX_NAME_BYTES:
        raise ConfigError("", "--role", f"must be 1 to {MAX_NAME_BYTES} bytes without NUL, got {role!r}")
    if role.startswith("pg_"):
        raise ConfigError("", "--role", f"{role!r}: names starting with pg_ are reserved by PostgreSQL")
    return role


def _dollar_tag(body: str) -> str:
    tag, n = "$dbperf$", 0
    while tag in body:
        n += 1
        tag = f"$dbperf{n}$"
    return tag


def do_block(body: str) -> str:
    tag = _dollar_tag(body)
    return f"DO {tag}\n{body.strip()}\n{tag};\n"


def script(role: str = DEFAULT_ROLE, password: str | None = None) -> str:
    ident, literal = quote_ident(role), quote_literal(role)
    admin = ", ".join(quote_literal(d) for d in sorted(MANAGED_ADMIN_DATABASES))
    auth = ("with the password of the --password-file (sent as a SCRAM-SHA-256 verifier, never in clear)"
            if password is not None else "without a password: for peer, cert or another password-less authentication")
    out = [
        f"-- dbperf setup-sql: the monitoring role {ident} and what dbperf needs. Running it again is harmless.",
        "-- Run it as a superuser (on a managed service: its admin role, e.g. a member of rds_superuser,",
        "-- cloudsqlsuperuser or azure_pg_admin), in the database dbperf's DSN names (it creates",
        "-- pg_stat_statements there):",
        "--   psql -X -v ON_ERROR_STOP=1 -d postgres -f dbperf-setup.sql",
        "--",
        "-- pg_stat_statements (the statements collector) needs this in postgresql.conf, added to any",
        "-- libraries already listed there, and a restart (managed services: their parameter group or flags):",
        "--   shared_preload_libraries = 'pg_stat_statements'",
        "",
        f"-- the role, LOGIN, {auth}",
        do_block(f"""
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {literal}) THEN
    CREATE ROLE {ident} LOGIN;
  END IF;
END"""),
    ]
    if password is not None:
        out.append(f"ALTER ROLE {ident} WITH LOGIN PASSWORD {quote_literal(scram_verifier(password))};")
    else:
        out.append(f"ALTER ROLE {ident} WITH LOGIN;")
    out += [
        "",
        "-- what every default collector reads: pg_read_all_stats, pg_read_all_settings, pg_stat_scan_tables",
        f"GRANT pg_monitor TO {ident};",
        "",
        "-- CONNECT on every database dbperf discovers (PUBLIC has it unless it was revoked)",
        do_block(f"""
DECLARE
  d text;
BEGIN
  FOR d IN SELECT datname FROM pg_catalog.pg_database
           WHERE datallowconn AND NOT datistemplate AND datname NOT IN ({admin}) LOOP
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', d, {literal});
  END LOOP;
END"""),
        "-- pg_stat_statements in this database, and a warning when its library is not loaded",
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;",
        do_block("""
BEGIN
  PERFORM 1 FROM pg_stat_statements LIMIT 1;
EXCEPTION WHEN object_not_in_prerequisite_state THEN
  RAISE WARNING 'pg_stat_statements is not loaded: add it to shared_preload_libraries in postgresql.conf and restart PostgreSQL';
END"""),
    ]
    from exporter.serverlog.settings import setup_lines

    out += ["", *setup_lines(), ""]
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Prints the SQL that creates dbperf's monitoring role (LOGIN, pg_monitor, CONNECT on every "
                          "database) and pg_stat_statements; idempotent. Run it with psql as a superuser.")
    parser.add_argument("--role", default=DEFAULT_ROLE, help=f"the role's name (default {DEFAULT_ROLE})")
    parser.add_argument("--password-file", metavar="FILE",
                        help="a file holding the role's password (one line); without it the role has no password "
                             "(peer or certificate authentication)")
    parser.set_defaults(func=cmd_setup_sql)


def cmd_setup_sql(args) -> int:
    role = check_role(args.role)
    password = read_password(args.password_file) if args.password_file else None
    sys.stdout.write(script(role, password))
    return 0
