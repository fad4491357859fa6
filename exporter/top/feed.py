"""What ``dbperf top`` shows, refreshed once per interval by one thread of its own.

Each refresh is the session sampler's sample (:meth:`exporter.postgres.sampler.Sampler.sample_once`,
the integration the ``wait_events`` collectors serve, every statement kept by its queryid) and then
the sessions (:mod:`.activity`) on the sampler's own session: one connection, dbperf's session
settings, every statement bounded. Load (average active sessions by database and wait event, and
by statement) is the increase of the sampler's counters over the last ``window`` seconds
(:class:`~.window.Window`). Statement texts come from ``pg_stat_statements`` when the extension
is installed in the database dbperf connects to and the role may read them (``pg_monitor``
includes ``pg_read_all_stats``), else from a session seen running the statement; both redacted.
A failed refresh keeps the last data and says why (:attr:`Snapshot.error`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psycopg

from exporter.background import Worker
from exporter.postgres.privileges import grant_hint
from exporter.postgres.sampler import Sampler
from exporter.postgres.sqlmark import mark
from exporter.postgres.waits import OTHER, Schedule
from exporter.top.activity import Redactor, Session, sessions_of, sessions_sql
from exporter.top.window import Window

PGSS_SCHEMA_SQL = mark("""SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'""")
PGSS_TEXT_SQL = "SELECT queryid::text, query FROM {schema}.pg_stat_statements WHERE queryid IN ({ids})"
ROLE_SQL = mark("SELECT current_user::text, pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')")
TEXT_LOOKUPS = 20  # statements whose text is looked up per refresh at most (the top ones)
ASK_AGAIN = 30.0  # seconds before pg_stat_statements is asked again for a statement it did not have
FORGET_EVERY = 60.0  # seconds between drops of the statements with no load in the window


class Everything:
    """``shown`` for the sampler: every statement keeps its queryid (none is folded into ``other``)."""

    def __contains__(self, item) -> bool:
        return True


EVERYTHING = Everything()


@dataclass(frozen=True)
class Statement:
    datname: str
    queryid: str      # "other": the sessions whose statement has no queryid
    load: float       # average active sessions
    wait_type: str    # where most of its load went
    text: str = ""    # redacted; "" when unknown


@dataclass
class Snapshot:
    target: str
    at: float = 0.0                 # time.time() of the refresh
    version: int | None = None
    span: float = 0.0               # seconds the load is averaged over (up to the window)
    load: dict = field(default_factory=dict)   # (datname, wait_type, wait_event) -> average active sessions
    sessions: list = field(default_factory=list)   # of activity.Session
    statements: list = field(default_factory=list)  # of Statement, the highest load first
    error: str = ""                 # why the last refresh failed ("" when it worked)
    query_ids_off: str = ""         # why statements have no queryid ("" when they have)
    note: str = ""                  # what the role cannot see ("" when it has pg_monitor's pg_read_all_stats)
    refreshes: int = 0


class Feed:
    def __init__(self, target, window: float = 60.0, clock=time.monotonic, wall=time.time):
        self.target = target
        self.interval = target.wait_events.interval
        self.sampler = Sampler(target, shown=lambda: EVERYTHING, clock=clock)
        self.conn = self.sampler.conn
        self.clock, self.wall = clock, wall
        self.sessions_window = Window(window)
        self.statements_window = Window(window)
        self.redact = Redactor()
        self.texts: dict[str, str] = {}       # queryid -> redacted text from pg_stat_statements
        self.seen_texts: dict[str, str] = {}  # queryid -> redacted text of a session running it
        self.asked: dict[str, float] = {}     # queryid -> when pg_stat_statements did not have it
        self.note: str | None = None  # None: the role not checked yet
        self.pgss_schema: str | None = None  # None: not looked up yet; "": not installed (or not readable)
        self._forgot_at = clock()
        self._snapshot = Snapshot(target.name)
        self._sessions: list[Session] = []
        self._lock = threading.Lock()
        self._worker = Worker("dbperf-top-feed", self._loop)
        self._stop = self._worker.stop
        self.changed = threading.Event()  # set after each refresh

    @property
    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def refresh(self) -> Snapshot:
        """One sample and one read of the sessions now; the new snapshot."""
        error = ""
        now = self.clock()
        if not self.sampler.sample_once():
            error = self.sampler.last_error or "the sample failed"
            error += grant_hint(RuntimeError(error), self.target.dsn)
        self._windows(now)
        if not error:
            try:
                self._sessions = self._read_sessions()
                self._look_up_texts()
            except Exception as exc:
                error = self.conn.scrub(" ".join(str(exc).split())) or type(exc).__name__
        snap = self._build(error)
        with self._lock:
            self._snapshot = snap
        self.changed.set()
        return snap

    def _windows(self, now: float) -> None:
        sessions, statements = self.sampler.integrator.snapshot()
        load: dict = {}
        for (datname, _state, wait_type, wait_event), seconds in sessions.items():
            key = (datname, wait_type, wait_event)
            load[key] = load.get(key, 0.0) + seconds
        self.sessions_window.add(now, load)
        self.statements_window.add(now, statements)
        if now - self._forgot_at >= FORGET_EVERY:  # keep the statements table bounded
            self._forgot_at = now
            busy = {queryid for (_d, queryid, _w), rate in self.statements_window.rates().items() if rate > 0}
            self.sampler.integrator.forget(shown_queryids=busy)

    def _read_sessions(self) -> list[Session]:
        if self.sampler.version is None:
            return []
        if self.note is None:
            self.note = self._role_note()
        (_, rows), = self.conn.query(sessions_sql(self.sampler.version), self.sampler.timeout)
        sessions = sessions_of(rows, self.redact)
        wanted = self.target.databases.wanted  # the target's database rules, as for the load
        blockers = {pid for s in sessions for pid in s.blocked_by}
        return [s for s in sessions if not s.datname or wanted(s.datname) or s.pid in blockers]

    def _role_note(self) -> str:
        from exporter.advisor import quote_ident

        (_, ((user, reads_all),)), = self.conn.query(ROLE_SQL, self.sampler.timeout)
        if reads_all:
            return ""
        return (f"role {user} lacks pg_read_all_stats: other roles' sessions and texts are hidden "
                f"(GRANT pg_monitor TO {quote_ident(user)})")

    def _statement_loads(self) -> list[Statement]:
        per: dict[tuple, dict] = {}
        for (datname, queryid, wait_type), rate in self.statements_window.rates().items():
            if rate > 0:
                per.setdefault((datname, queryid), {})[wait_type] = rate
        out = [Statement(datname, queryid, sum(waits.values()), max(waits, key=waits.get),
                         self.texts.get(queryid) or self.seen_texts.get(queryid, ""))
               for (datname, queryid), waits in per.items()]
        return sorted(out, key=lambda s: (-s.load, s.datname, s.queryid))

    def _look_up_texts(self) -> None:
        """Texts of the top statements: a running session's until pg_stat_statements has the
        statement (it records a statement when it ends: one not there is asked again after
        :data:`ASK_AGAIN` seconds)."""
        for s in self._sessions:
            if s.queryid and s.query:
                self.seen_texts[s.queryid] = s.query
        now = self.clock()
        wanted = [s.queryid for s in self._statement_loads()[:TEXT_LOOKUPS]
                  if s.queryid != OTHER and s.queryid.lstrip("-").isdigit() and s.queryid not in self.texts
                  and now - self.asked.get(s.queryid, -ASK_AGAIN) >= ASK_AGAIN]
        if not wanted or self.pgss_schema == "":
            return
        if self.pgss_schema is None:
            rows = self.conn.query(PGSS_SCHEMA_SQL, self.sampler.timeout)[0][1]
            self.pgss_schema = rows[0][0] if rows else ""
            if not self.pgss_schema:
                return
        schema = '"' + self.pgss_schema.replace('"', '""') + '"'
        sql = mark(PGSS_TEXT_SQL.format(schema=schema, ids=", ".join(wanted)))
        for queryid in wanted:
            self.asked[queryid] = now
        try:
            (_, rows), = self.conn.query(sql, self.sampler.timeout)
        except (psycopg.errors.ObjectNotInPrerequisiteState, psycopg.errors.InsufficientPrivilege):
            self.pgss_schema = ""  # not in shared_preload_libraries, or not readable: the sessions' texts only
            return
        except Exception:  # a timeout, a lost connection: asked again later
            return
        for queryid, text in rows:
            if text and not text.startswith("<insufficient privilege>"):
                self.texts[queryid] = self.redact(text)
                self.asked.pop(queryid, None)
        for table in (self.texts, self.seen_texts, self.asked):  # bounded
            if len(table) > Redactor.LIMIT:
                table.clear()

    def _build(self, error: str) -> Snapshot:
        previous = self._snapshot
        return Snapshot(target=self.target.name, at=self.wall(), version=self.sampler.version,
                        span=self.sessions_window.span,
                        load={k: v for k, v in self.sessions_window.rates().items() if v > 0},
                        sessions=list(self._sessions), statements=self._statement_loads(), error=error,
                        query_ids_off=self.sampler.query_ids_off, note=self.note or "", refreshes=previous.refreshes + 1)

    # -- the thread ------------------------------------------------------------------------
    def start(self) -> None:
        self._worker.start()

    def _loop(self) -> None:
        schedule = Schedule(self.interval, self.clock() + self.interval)  # after the refresh made at start
        while not self._stop.is_set():
            delay = schedule.wait(self.clock())
            if delay > 0:
                self._stop.wait(delay)
                continue
            schedule.take(self.clock())
            try:
                self.refresh()
            except Exception as exc:  # never let the view's data thread die silently
                with self._lock:
                    self._snapshot.error = type(exc).__name__ + ": " + self.conn.scrub(str(exc))
                self.changed.set()

    def close(self) -> None:
        self._worker.close(3.0, before_join=self.sampler.close)
