"""What the monitoring role may read, and the grant that fixes a failure.

dbperf needs no superuser: ``pg_monitor`` (PostgreSQL 10+; ``dbperf setup-sql`` prints the SQL)
is enough for every default collector. Without it the server does not refuse everything: other
roles' sessions in ``pg_stat_activity`` lose their state and backend type (the activity collector
then undercounts them: a calm dashboard over a busy server), pg_stat_statements hides their
statements' ids, pg_stat_replication its positions and lags, pg_settings a few settings, and
``pg_ls_waldir()`` is denied (the wal collector fails). So:

- the ``privileges`` collector checks what ``pg_monitor`` grants and fails, naming the missing
  grants and the one ``GRANT`` that fixes them, when the role lacks any (its
  ``dbperf_collector_success`` is 0 and the engine logs the reason, at most once a minute);
- :func:`grant_hint` appends the fix to the engine's log line of a collector that failed for a
  privilege (``permission denied for function pg_ls_waldir: GRANT pg_monitor TO mon ...``) or of a
  database that refused the connection (pg_hba.conf, CONNECT).
"""

from __future__ import annotations

import getpass
import os
import re

from exporter.advisor import quote_ident
from exporter.collector import CLUSTER, Collector, Context
from exporter.metrics import Family
from exporter.postgres.sqlmark import mark

# what pg_monitor grants whose lack degrades collectors silently, as (what, how the SQL checks it).
# EXECUTE on pg_ls_waldir() (also pg_monitor's) is not checked here: its lack fails the wal
# collector with its own line, and Aurora grants it to no role at all (docs/managed-services.md).
NEEDED = (
    ("pg_read_all_stats", "pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')"),
    ("pg_read_all_settings", "pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')"),
)

SQL = mark("SELECT current_user::text, r.rolsuper, " + ", ".join(check for _, check in NEEDED)
           + " FROM pg_roles r WHERE r.rolname = current_user")

HIDDEN = ("other roles' sessions lose their state in pg_stat_activity (connections and oldest transactions are "
          "undercounted), their statements in pg_stat_statements, replication positions, running maintenance "
          "and a few settings are hidden")

INSUFFICIENT_PRIVILEGE = "42501"
_DATABASE = re.compile(r'database "((?:[^"]|"")*)"')


class MissingPrivileges(RuntimeError):
    """The monitoring role lacks some of what pg_monitor grants; the message names the fix."""


def role_of(dsn: str) -> str:
    """The role a DSN connects as: its ``user``, else ``$PGUSER``, else the OS user (as libpq)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        user = conninfo_to_dict(dsn).get("user")
    except Exception:  # noqa: BLE001 - a DSN psycopg cannot parse fails elsewhere, with its own message
        user = None
    return user or os.environ.get("PGUSER") or getpass.getuser()


def grant_hint(exc: BaseException, dsn: str) -> str:
    """``": GRANT ... TO role"`` (or how else to fix it) for a failure a grant or the configuration
    fixes, else ``""``."""
    text = " ".join(str(exc).split())
    role = quote_ident(role_of(dsn))
    if "pg_hba.conf rejects connection" in text or "no pg_hba.conf entry" in text:
        return "; allow it in pg_hba.conf, or leave the database out with databases.exclude"
    if "User does not have CONNECT privilege" in text or "permission denied for database" in text:
        found = _DATABASE.search(text)
        database = quote_ident(found.group(1).replace('""', '"')) if found else "..."
        return f": GRANT CONNECT ON DATABASE {database} TO {role}, or leave it out with databases.exclude"
    if (getattr(exc, "sqlstate", None) == INSUFFICIENT_PRIVILEGE or text.startswith("permission denied")
            or text.startswith("must be superuser or have privileges of pg_")):  # a message kept as text
        if "pg_ls_waldir" in text:  # Aurora grants it to no role, pg_monitor or not
            return f": GRANT pg_monitor TO {role} (on Aurora no role may: turn the wal collector off there)"
        return f": GRANT pg_monitor TO {role}"
    return ""


class PrivilegesCollector(Collector):
    def __init__(self):
        super().__init__(
            name="privileges", scope=CLUSTER, default_ttl=300.0,
            help="checks that the monitoring role has what pg_monitor grants and other collectors need to see "
                 "other roles' sessions, statements and settings (pg_read_all_stats, pg_read_all_settings); fails "
                 "naming the missing grants and the GRANT that fixes them",
            families=("dbperf_monitoring_role_info",))

    @staticmethod
    def describe() -> list[Family]:
        return [Family("dbperf_monitoring_role_info", "gauge",
                       "The role dbperf connects to the target as, and whether it is a superuser (dbperf needs only "
                       "pg_monitor); always 1, served while the role has what pg_monitor grants.",
                       ("role", "superuser"))]

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        (_, rows), = conn.query(SQL, timeout)
        role, superuser, *granted = rows[0]
        missing = [what for (what, _), ok in zip(NEEDED, granted) if not ok]
        if missing:
            raise MissingPrivileges(f"role {role} lacks {', '.join(missing)} (granted by pg_monitor): {HIDDEN}; "
                                    f"GRANT pg_monitor TO {quote_ident(role)}")
        (family,) = self.describe()
        family.add((role, "true" if superuser else "false"), 1)
        return [family]
