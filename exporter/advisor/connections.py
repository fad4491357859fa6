"""Connection findings: use of max_connections, idle connections held per application, sessions
idle in a transaction, and a pool size per application from its concurrency at this moment.

All of it is a point-in-time sample of pg_stat_activity: there is no history behind it. dbperf's
own sessions (``OWN_APPLICATIONS``) count towards the use of max_connections, but get no advice."""

from __future__ import annotations

import math

from exporter.advisor import OWN_APPLICATIONS, Finding

USAGE_WARN, USAGE_HIGH = 0.6, 0.8
IDLE_WARN = 5

SETTINGS_SQL = """
SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
       current_setting('idle_in_transaction_session_timeout')
"""

ACTIVITY_SQL = """
SELECT coalesce(nullif(application_name, ''), '(none)'), coalesce(state, 'unknown'), count(*),
       coalesce(max(extract(epoch FROM now() - state_change)), 0)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
GROUP BY 1, 2
ORDER BY 1, 2
"""


def pool_size(active: int) -> int:
    """A pool big enough for the concurrency seen, with headroom: twice the active sessions, at least 2."""
    return max(2, math.ceil(active * 2))


def connection_findings(conn) -> list[Finding]:
    max_conn, reserved, iit_timeout = conn.execute(SETTINGS_SQL).fetchone()
    apps: dict = {}
    own = 1  # this session
    for app, state, count, longest in conn.execute(ACTIVITY_SQL).fetchall():
        if app in OWN_APPLICATIONS:
            own += count
            continue
        entry = apps.setdefault(app, {"active": 0, "idle": 0, "idle in transaction": 0, "other": 0, "longest_iit": 0.0})
        if state in ("active", "idle"):
            entry[state] += count
        elif state.startswith("idle in transaction"):
            entry["idle in transaction"] += count
            entry["longest_iit"] = max(entry["longest_iit"], float(longest))
        else:
            entry["other"] += count
    total = sum(e["active"] + e["idle"] + e["idle in transaction"] + e["other"] for e in apps.values()) + own
    usable = max(1, max_conn - reserved)
    usage = total / usable
    severity = "high" if usage >= USAGE_HIGH else "medium" if usage >= USAGE_WARN else "info"
    out = [Finding("connection", "connection_usage", severity, "", "cluster",
                   f"{total} of {usable} usable connections in use ({usage:.0%}; max_connections {max_conn}, "
                   f"{reserved} reserved for superusers; {own} of them dbperf's own) at this moment",
                   "Put a connection pooler (PgBouncer in transaction mode) or smaller application pools in front "
                   "before raising max_connections" if severity != "info" else "Nothing to do.",
                   details={"connections": total, "max_connections": max_conn, "dbperf_connections": own})]
    for app, e in sorted(apps.items()):
        held = e["active"] + e["idle"] + e["idle in transaction"] + e["other"]
        suggested = pool_size(e["active"])
        if e["idle in transaction"]:
            longest = e["longest_iit"]
            sev = "high" if longest > 300 else "medium" if longest > 30 else "low"
            out.append(Finding(
                "connection", "idle_in_transaction", sev, "", app,
                f"application {app!r}: {e['idle in transaction']} sessions idle in transaction, the longest "
                f"for {int(longest)}s; they hold locks and stop VACUUM from cleaning up",
                "Commit or roll back promptly in the application (no network calls inside transactions) and set "
                f"idle_in_transaction_session_timeout (now {iit_timeout}), e.g. ALTER ROLE ... SET "
                "idle_in_transaction_session_timeout = '60s';",
                details={"sessions": e["idle in transaction"]}))
        if held >= 2:
            idle_heavy = e["idle"] >= IDLE_WARN and held > suggested
            out.append(Finding(
                "connection", "idle_connections" if idle_heavy else "pool_size",
                "low" if idle_heavy else "info", "", app,
                f"application {app!r} holds {held} connections ({e['active']} active, {e['idle']} idle, "
                f"{e['idle in transaction']} idle in transaction); point-in-time sample, no history",
                f"A pool of about {suggested} connections covers the concurrency seen now "
                f"({e['active']} active); confirm against its peak before shrinking the pool"
                + (f" (it holds {held - suggested} more than that)" if idle_heavy else ""),
                details={"held": held, "active": e["active"], "idle": e["idle"], "suggested_pool": suggested}))
    return out
