"""The sessions ``dbperf top`` lists, and who blocks whom.

One statement on ``pg_stat_activity`` (readable in full with ``pg_monitor``): the client backends
that are not idle, other than dbperf's own (as the sampler counts them), plus any backend that
blocks one of them (an autovacuum worker, a session idle outside a transaction holding an
advisory lock). ``pg_blocking_pids`` is called only for the sessions waiting on a heavyweight
lock (``wait_event_type = 'Lock'``), which keeps the statement cheap. The query text is shown
redacted as the samples are (:func:`exporter.instrument.redact.redact_literals`: literals
replaced by placeholders that keep their shape, ``'…'``, ``?``, ``LIKE '%…'``; a statement that
carries a secret reduced to its leading keywords).
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.instrument.redact import redact_literals
from exporter.postgres.session import APPLICATION_NAME
from exporter.postgres.sqlmark import mark

MAX_SESSIONS = 500  # rows read per refresh (the longest running first)

SESSIONS_SQL = f"""WITH a AS (
  SELECT a.pid, a.datname::text AS datname, a.usename::text AS usename, a.application_name,
    coalesce(host(a.client_addr), CASE WHEN a.client_port = -1 THEN 'local' END) AS client,
    a.backend_type, a.state, a.wait_event_type, a.wait_event,
    extract(epoch FROM clock_timestamp() - CASE WHEN a.state LIKE 'idle in transaction%' THEN a.xact_start
                                                ELSE a.query_start END)::float8 AS duration,
    {{query_id}} AS query_id, a.query,
    CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) END AS blockers
  FROM pg_stat_activity a
  WHERE a.pid <> pg_backend_pid() AND a.application_name IS DISTINCT FROM '{APPLICATION_NAME}')
SELECT pid, datname, usename, application_name, client, backend_type, state, wait_event_type, wait_event,
  duration, query_id, query, blockers
FROM a
WHERE (backend_type = 'client backend' AND state <> 'idle')
   OR pid IN (SELECT unnest(blockers) FROM a WHERE blockers IS NOT NULL)
ORDER BY duration DESC NULLS LAST
LIMIT {MAX_SESSIONS}"""


def sessions_sql(version: int) -> str:
    """The statement on a server of ``version`` (``query_id`` is PostgreSQL 14+)."""
    return mark(SESSIONS_SQL.format(query_id="a.query_id::text" if version >= 140000 else "NULL::text"))


@dataclass(frozen=True)
class Session:
    pid: int
    datname: str
    user: str
    application: str
    client: str
    state: str
    wait_type: str     # "" when it waits on nothing
    wait_event: str
    duration: float    # seconds: of the statement, or of the transaction when idle in one
    query: str         # redacted
    queryid: str | None = None
    blocked_by: tuple = ()
    backend_type: str = "client backend"

    @property
    def wait(self) -> str:
        return f"{self.wait_type}:{self.wait_event}" if self.wait_type else ""


def shown_text(text: str) -> str:
    """A session's text as top shows it: redacted as the samples are (literals as placeholders that
    keep their shape, ``LIKE '%…'``; wholesale when it carries a secret), on one line."""
    return " ".join(redact_literals(text).split())


class Redactor:
    """:func:`shown_text` with a bounded cache by raw text (the same statements come back every refresh)."""

    LIMIT = 2000

    def __init__(self):
        self._cache: dict[str, str] = {}

    def __call__(self, text: str | None) -> str:
        if not text:
            return ""
        shown = self._cache.get(text)
        if shown is None:
            if len(self._cache) >= self.LIMIT:
                self._cache.clear()
            shown = self._cache[text] = shown_text(text)
        return shown


def sessions_of(rows, redact=shown_text) -> list[Session]:
    """The rows of :data:`SESSIONS_SQL` as sessions."""
    out = []
    for (pid, datname, user, app, client, backend_type, state, wait_type, wait_event, duration, queryid, query,
         blockers) in rows:
        out.append(Session(pid=pid, datname=datname or "", user=user or "", application=app or "", client=client or "",
                           state=state or "", wait_type=wait_type or "", wait_event=wait_event or "",
                           duration=max(0.0, duration or 0.0), query=redact(query), queryid=queryid,
                           blocked_by=tuple(blockers or ()), backend_type=backend_type or ""))
    return out


def chains(sessions: list[Session]) -> list[tuple[int, int, Session | None]]:
    """The blocking chains as a tree walk: ``(depth, pid, session)`` with each chain's root (a
    blocker that waits on no one listed) at depth 0 and those it blocks below it. A waiter blocked
    by several sessions appears under the first listed one; a blocker that is not listed (dbperf's
    own session, a prepared transaction: pid 0) is a root without a session."""
    by_pid = {s.pid: s for s in sessions}
    children: dict[int, list[Session]] = {}
    for s in sessions:
        if s.blocked_by:
            parent = next((p for p in s.blocked_by if p in by_pid), s.blocked_by[0])
            children.setdefault(parent, []).append(s)
    if not children:
        return []
    blocked = {s.pid for s in sessions if s.blocked_by}
    roots = [pid for pid in children if pid not in blocked]
    out: list[tuple[int, int, Session | None]] = []
    seen: set[int] = set()

    def walk(pid: int, depth: int) -> None:
        if pid in seen:
            return
        seen.add(pid)
        out.append((depth, pid, by_pid.get(pid)))
        for child in sorted(children.get(pid, ()), key=lambda s: (-s.duration, s.pid)):
            walk(child.pid, depth + 1)

    for pid in sorted(roots, key=lambda p: (-(by_pid[p].duration if p in by_pid else 0.0), p)):
        walk(pid, 0)
    for pid in sorted(children):  # a cycle (a deadlock not yet detected): shown from its lowest pid
        if pid not in seen:
            walk(pid, 0)
    return out
