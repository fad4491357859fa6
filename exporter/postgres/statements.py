"""``pg_stat_statements_*``: per-statement counters with bounded cardinality, and a workload
latency histogram built from every statement.

What is read
    One batch per scrape: ``pg_stat_statements(false)`` (never the query-text file) summed per
    ``(dbid, userid, queryid)`` -- PostgreSQL 14+ returns a ``toplevel`` and a nested row for the
    same statement and both are kept, summed (postgres_exporter drops one of them). Query text is
    read with ``pg_stat_statements(true)`` only when ``statements.query_text`` is on, only for the
    statements exposed, and at most once per ``statements.query_text_ttl`` (plus once for a
    statement that has no text yet). A text that carries a secret (``ALTER ROLE ... PASSWORD``,
    ``CREATE SERVER``/``USER MAPPING ... OPTIONS``, ``pgp_sym_encrypt(...)``, a secret setting ...:
    :mod:`exporter.instrument.redact`'s rules; pg_stat_statements keeps utility statements'
    literals as typed) is served as its leading keywords and ``<redacted: statement carries a
    secret>``. Only statements of databases that exist are read: pg_stat_statements keeps a
    dropped database's statements until they are deallocated, and they leave no series (nor
    histogram, nor sticky membership).

Bounded cardinality
    Per database, the ``statements.limit`` statements (default 50) ranked by ``statements.rank_by``
    (``total_time`` by default) are exposed with labels ``{datname, user, queryid}``. The ranking
    uses the increase since this collector's previous read (the cumulative value on the first
    read). A statement that leaves the top N stays exposed for ``statements.sticky`` seconds
    (default 600) so that series do not flap; at most ``2 * limit`` statements per database are
    exposed in all (the stalest sticky ones go first). Everything else of the database is summed
    in one remainder series ``{datname, user="", queryid="other"}``, so that for every counter the
    sum over a database's series equals the database total in pg_stat_statements exactly.
    The price: when a statement enters the exposed set, its cumulative value leaves ``other``,
    which then goes down -- Prometheus' ``rate()`` sees that as a counter reset (and when a
    statement leaves, ``other`` jumps up by its value). Sticky membership keeps that rare; use
    the per-statement series, not ``other``, for rates over membership changes.

Pseudo rows: dbperf's own statements and transaction control
    Two kinds of statements never enter the top N; each is summed, like ``other``, into one
    series per database, so the sums still equal the totals:

    - ``{queryid="dbperf"}``: the monitor's own statements, those whose text carries
      ``/*application='dbperf'*/`` (:mod:`exporter.postgres.sqlmark`; every statement dbperf sends
      does). A monitor must not rank in the workload it watches.
    - ``{queryid="transaction_control"}``: ``BEGIN``/``START TRANSACTION``, ``COMMIT``/``END``,
      ``ROLLBACK``/``ABORT``, ``SAVEPOINT``, ``RELEASE``, ``ROLLBACK TO SAVEPOINT``, ``PREPARE
      TRANSACTION``, ``COMMIT PREPARED`` and ``ROLLBACK PREPARED``: a pool's ``ROLLBACK`` on every
      connection return would otherwise top every list by calls. Their calls are also counted per
      database and command in ``pg_stat_statements_transaction_control_calls_total{datname,
      command}`` (summed over users; ``command`` one of ``begin``, ``commit``, ``rollback``,
      ``savepoint``, ``release``, ``rollback_to_savepoint``, ``prepare_transaction``,
      ``commit_prepared``, ``rollback_prepared``).

    Telling them apart needs the query text, which the counters' read leaves out. The text is read
    on the server only for statements not classified yet (``pg_stat_statements(true)`` filtered to
    their queryids, the matching done by ``strpos`` and an anchored regex there, so only the few
    candidates' first 200 characters come back) and the kind is cached per ``(dbid, userid,
    queryid)``: once warm, a scrape reads no text at all. That read costs about as much as
    loading pg_stat_statements' text file once (it is read whole whatever the filter), so it runs at
    most for ``CLASSIFY_SHARE`` (2%) of the time (after a read that took *d*, the next waits 49 *d*);
    a statement first seen in between counts as an ordinary one until it is classified, and then
    moves into its pseudo row (a drop in the series it leaves, as for top-N membership). No text is
    exported by this. Another role's text needs ``pg_read_all_stats`` (``pg_monitor``): without it
    such statements stay ordinary.

Without ``pg_read_all_stats``
    pg_stat_statements hides the queryid (and text) of other roles' statements: their counters
    arrive summed per database and role with a NULL queryid. They are never ranked and go to
    ``other``, so the sums stay exact, and one warning per target names the grant. In the
    histogram such a group counts like one statement (its new calls at the group's mean); when
    its calls go down (one of them was deallocated) that interval counts nothing for it.

Workload latency histogram (``pg_statement_duration_seconds{datname}``)
    pg_stat_statements has no per-call durations, only cumulative calls and time per statement.
    Between two reads, each statement's new calls (``calls`` delta) are all counted in the bucket
    of that statement's mean execution time over the interval (``total_exec_time`` delta / calls
    delta), and ``_sum`` grows by the time delta. This covers every statement, not only the top N.
    It is an approximation: a statement whose calls vary widely within one interval contributes
    all its calls at their mean, so the histogram is narrower than the true per-call distribution;
    quantiles are exact only for statements whose calls take about the same time. The counters live
    in this process (they start at 0 when dbperf starts, as Prometheus expects of counters). A
    statement whose calls went down (reset, or deallocated and back) counts its current values
    as new, never a negative amount; a statement first seen after the first read counts all its
    calls. Each target has its own collector object (``exporter.registry.collectors_for``), which
    keeps that state itself (:attr:`StatementsCollector.state`).

Metric names
    ``pg_stat_statements_seconds_total`` is the execution time under postgres_exporter's name, so
    that community dashboards keep working; blocks are converted into bytes (``block_size``).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field

from exporter.advisor import quote_ident
from exporter.collector import CLUSTER, Collector, Context
from exporter.config import StatementsOptions
from exporter.instrument.redact import redact
from exporter.metrics import Family, pairs_formatter
from exporter.postgres.privileges import role_of
from exporter.postgres.sqlmark import MARK, batch, mark, sql_literal

LOG = logging.getLogger("dbperf.statements")


BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LABELS = ("datname", "user", "queryid")

OTHER = "other"
OWN = "dbperf"                              # the pseudo row of dbperf's own statements
TRANSACTION_CONTROL = "transaction_control"  # the pseudo row of BEGIN, COMMIT, ROLLBACK ...
PSEUDO_ROWS = (OTHER, OWN, TRANSACTION_CONTROL)
_SHOWN = object()  # a statement exposed with its own series

TRANSACTION_COMMANDS = ("begin", "commit", "rollback", "savepoint", "release", "rollback_to_savepoint",
                        "prepare_transaction", "commit_prepared", "rollback_prepared")

CLASSIFY_SHARE = 0.02  # at most this share of the time goes into reading texts to classify
CLASSIFY_RETRY = 300.0  # seconds before a failed classifying read is tried again
TC_HELP = ("Calls of transaction-control statements (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ...) per database and "
           "command, summed over users; command is one of " + ", ".join(TRANSACTION_COMMANDS) + ". These "
           "statements are left out of the per-statement series and summed in queryid=\"transaction_control\".")

SETTINGS_SQL = """SELECT coalesce(current_setting('pg_stat_statements.track_planning', true), 'off') = 'on',
  current_setting('block_size')::int"""

# columns, in this order: calls, exec ms, plan ms, rows, shared hit, shared read, temp written,
# wal bytes, block read ms, block write ms, JIT ms, parallel workers planned and launched (the
# last three NULL where the extension's version has no such column). The bigint and numeric
# columns are summed as float8 (exact below 2^53): sum(bigint) adds numerics, a third of the
# statement's time at 5,000 entries
MAIN_SQL = """SELECT s.dbid, s.userid, s.queryid::text, coalesce(d.datname, '') AS datname,
  coalesce(r.rolname, '') AS rolname,
  sum(s.calls::float8), sum(s.total_exec_time)::float8, sum(s.total_plan_time)::float8,
  sum(s.rows::float8), sum(s.shared_blks_hit::float8), sum(s.shared_blks_read::float8),
  sum(s.temp_blks_written::float8), sum(s.wal_bytes::float8),
  sum(s.{blk_read_time})::float8, sum(s.{blk_write_time})::float8,
  {jit}, {parallel}
FROM pg_stat_statements(false) s
JOIN pg_database d ON d.oid = s.dbid
LEFT JOIN pg_roles r ON r.oid = s.userid
GROUP BY s.dbid, s.userid, s.queryid, d.datname, r.rolname"""

INFO_SQL = "SELECT dealloc, extract(epoch FROM stats_reset)::float8 FROM pg_stat_statements_info"

TEXT_SQL = mark("""SELECT DISTINCT ON (s.dbid, s.queryid) s.dbid, s.queryid::text, s.query
FROM pg_stat_statements(true) s
WHERE s.queryid = ANY ('{{{ids}}}'::bigint[]) AND s.query IS NOT NULL
ORDER BY s.dbid, s.queryid, s.toplevel DESC""")

TEXT_SQL_PG13 = mark("""SELECT DISTINCT ON (s.dbid, s.queryid) s.dbid, s.queryid::text, s.query
FROM pg_stat_statements(true) s
WHERE s.queryid = ANY ('{{{ids}}}'::bigint[]) AND s.query IS NOT NULL
ORDER BY s.dbid, s.queryid""")

# Which of the given statements are dbperf's own or transaction control. Filtered on the server to
# the candidates (the marker anywhere, or a transaction-control keyword after leading blanks and
# comments): only their first 200 characters come back. No backslashes, so that the patterns mean
# the same with standard_conforming_strings off.
_CANDIDATE = "^([[:space:]]|/[*]|--)*(begin|start|commit|end|rollback|abort|savepoint|release|prepare)"
_MARKED = MARK.replace("*", "[*]").replace("'", "''")  # the marker as a regular expression
CLASSIFY_SQL = mark(f"""SELECT s.dbid, s.userid, s.queryid::text, strpos(s.query, {sql_literal()}) > 0 AS own,
  CASE WHEN s.query ~* '{_CANDIDATE}' THEN left(s.query, 200) END
FROM pg_stat_statements(true) s
WHERE s.queryid IN (SELECT unnest('{{{{ids}}}}'::bigint[])) AND s.query ~* '{_CANDIDATE}|{_MARKED}'""")

_INTEGER = re.compile(r"-?\d+")
_COMMENT = re.compile(r"/\*.*?\*/|--[^\n]*", re.S)
_WORD = re.compile(r"[A-Za-z_]+")


def transaction_command(text: str) -> str | None:
    """The transaction-control command ``text`` (a pg_stat_statements text) is, as one of
    :data:`TRANSACTION_COMMANDS`, or None for any other statement."""
    words = [w.upper() for w in _WORD.findall(_COMMENT.sub(" ", text[:200]))[:4]]
    if not words:
        return None
    first, after = words[0], words[1:2]
    if first == "BEGIN" or (first == "START" and after == ["TRANSACTION"]):
        return "begin"
    if first in ("COMMIT", "END"):
        return "commit_prepared" if first == "COMMIT" and after == ["PREPARED"] else "commit"
    if first in ("ROLLBACK", "ABORT"):
        if first == "ROLLBACK" and after == ["PREPARED"]:
            return "rollback_prepared"
        rest = words[2:] if after in (["WORK"], ["TRANSACTION"]) else words[1:]
        return "rollback_to_savepoint" if first == "ROLLBACK" and rest[:1] == ["TO"] else "rollback"
    if first == "SAVEPOINT":
        return "savepoint"
    if first == "RELEASE":
        return "release"
    if first == "PREPARE" and after == ["TRANSACTION"]:
        return "prepare_transaction"
    return None

# index of each value column in a row of MAIN_SQL
CALLS, EXEC, PLAN, ROWS, HIT, READ, TEMP, WAL, BLK_READ, BLK_WRITE, JIT, PAR_PLANNED, PAR_LAUNCHED = range(5, 18)

# The columns follow the extension's version (pg_extension.extversion), not the server's: after
# pg_upgrade the extension keeps its old version, and its columns, until ALTER EXTENSION UPDATE.
# 1.8 ships with PostgreSQL 13, 1.9 with 14, 1.10 with 15 and 16, 1.11 with 17, 1.12 with 18.
MIN_API = (1, 8)           # total_exec_time, total_plan_time, wal_bytes
BUNDLED = {13: (1, 8), 14: (1, 9), 15: (1, 10), 16: (1, 10), 17: (1, 11), 18: (1, 12)}
SINCE = {JIT: (1, 10), PAR_PLANNED: (1, 12), PAR_LAUNCHED: (1, 12)}  # columns newer than MIN_API
_JIT_MS = "s.jit_generation_time + s.jit_inlining_time + s.jit_optimization_time + s.jit_emission_time"

# (family, column, factor: "ms" to seconds, "block" to bytes, 1 as is, help)
COUNTERS = (
    ("pg_stat_statements_calls_total", CALLS, 1, "Times the statement was executed."),
    ("pg_stat_statements_seconds_total", EXEC, "ms",
     "Time spent executing the statement (total_exec_time; postgres_exporter's name)."),
    ("pg_stat_statements_plan_seconds_total", PLAN, "ms",
     "Time spent planning the statement (only when pg_stat_statements.track_planning is on)."),
    ("pg_stat_statements_rows_total", ROWS, 1, "Rows retrieved or affected by the statement."),
    ("pg_stat_statements_shared_hit_bytes_total", HIT, "block",
     "Shared buffer cache hits of the statement, in bytes (shared_blks_hit * block_size)."),
    ("pg_stat_statements_shared_read_bytes_total", READ, "block",
     "Shared blocks read by the statement, in bytes (shared_blks_read * block_size)."),
    ("pg_stat_statements_temp_bytes_total", TEMP, "block",
     "Temporary file bytes written by the statement (temp_blks_written * block_size)."),
    ("pg_stat_statements_wal_bytes_total", WAL, 1, "WAL bytes generated by the statement."),
    ("pg_stat_statements_block_read_seconds_total", BLK_READ, "ms",
     "Time the statement spent reading data file blocks (needs track_io_timing)."),
    ("pg_stat_statements_block_write_seconds_total", BLK_WRITE, "ms",
     "Time the statement spent writing data file blocks (needs track_io_timing)."),
    ("pg_stat_statements_jit_seconds_total", JIT, "ms",
     "Time JIT compilation took for the statement: generation, inlining, optimization, emission and "
     "(pg_stat_statements 1.11+, PostgreSQL 17) tuple deforming (pg_stat_statements 1.10+, PostgreSQL 15+)."),
    ("pg_stat_statements_parallel_workers_to_launch_total", PAR_PLANNED, 1,
     "Parallel workers the statement's plans asked for (pg_stat_statements 1.12+, PostgreSQL 18+)."),
    ("pg_stat_statements_parallel_workers_launched_total", PAR_LAUNCHED, 1,
     "Parallel workers launched for the statement; fewer than asked for: max_parallel_workers or "
     "max_worker_processes ran out (pg_stat_statements 1.12+, PostgreSQL 18+)."),
)


def bundled(version: int) -> tuple:
    """The pg_stat_statements version a server of ``version`` ships (the newest known above)."""
    major = version // 10000
    return BUNDLED.get(major, BUNDLED[max(BUNDLED)] if major > max(BUNDLED) else MIN_API)


def api_version(server) -> tuple:
    """The installed pg_stat_statements' version as a tuple (``(1, 10)``); the bundled one when the
    server did not say (a ServerInfo built without extension versions)."""
    text = server.extension_version("pg_stat_statements")
    try:
        return tuple(int(part) for part in text.split(".")) if text else bundled(server.version)
    except ValueError:
        return bundled(server.version)


def _help(name: str) -> str:
    return next(f.help for f in StatementsCollector.describe() if f.name == name)


class StatementsUnavailable(RuntimeError):
    """pg_stat_statements cannot be read on the target; the message says how to fix it."""


ENABLE = "add pg_stat_statements to shared_preload_libraries in postgresql.conf and restart PostgreSQL"


def not_installed(dbname: str) -> str:
    """The message of a target whose own database has no ``CREATE EXTENSION pg_stat_statements``."""
    return (f"pg_stat_statements is not installed in database {dbname!r} (the database of the target's DSN); "
            f"to enable it: {ENABLE} (unless it is there already), "
            f"then run CREATE EXTENSION pg_stat_statements in database {dbname!r}")


def not_loaded(dbname: str) -> str:
    """The message of a target where the extension is created but the library is not preloaded."""
    return f"pg_stat_statements is installed in database {dbname!r} but not loaded; to enable it: {ENABLE}"


def normalise_text(text: str, length: int) -> str:
    return " ".join(text.split())[:length]


def _rank_value(rank_by: str, row, before) -> float:
    """The rank of a statement: its increase since ``before`` in the ``rank_by`` measure."""
    if rank_by == "calls":
        return row[CALLS] - before[CALLS]
    if rank_by == "mean_time":
        calls = row[CALLS] - before[CALLS]
        return (row[EXEC] - before[EXEC]) / calls if calls > 0 else 0.0
    if rank_by == "rows":
        return row[ROWS] - before[ROWS]
    if rank_by == "io_time":
        return row[BLK_READ] - before[BLK_READ] + row[BLK_WRITE] - before[BLK_WRITE]
    return row[EXEC] - before[EXEC] + row[PLAN] - before[PLAN]  # total_time


def top_and_sticky(ranked_by_group: dict, members: dict, now: float, limit: int, sticky: float, present,
                   eligible) -> set:
    """The keys to expose, per group (a database, a MySQL schema): its ``limit`` best ranked
    eligible keys, and up to ``limit`` more that were in a top N less than ``sticky`` seconds ago
    (the most recent first). ``ranked_by_group``: group -> ``[(rank, key)]``; ``members``: key ->
    when it was last in a top N (updated here; keys gone from ``present`` or stale are dropped);
    ``eligible(key)``: False for keys that never rank (they go to the group's pseudo rows)."""
    chosen = set()
    for ranked in ranked_by_group.values():
        ranked.sort(key=lambda item: item[0], reverse=True)
        top, i = [], 0
        while len(top) < limit and i < len(ranked):  # the ineligible are few: skip them here only
            key = ranked[i][1]
            i += 1
            if eligible(key):
                top.append(key)
        for key in top:
            members[key] = now
        held = [(members[key], key) for _, key in ranked[i:]
                if key in members and now - members[key] < sticky and eligible(key)]
        held.sort(reverse=True)  # most recently in the top N first
        chosen.update(top)
        chosen.update(key for _, key in held[:limit])
    for key in [k for k, at in members.items() if k not in present or now - at >= sticky]:
        if key not in chosen:
            del members[key]
    return chosen


@dataclass
class Histogram:
    counts: list = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # per bucket, not cumulative
    total: float = 0.0

    def observe(self, mean: float, calls: int, seconds: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if mean <= bound:
                break
        else:
            i = len(BUCKETS)
        self.counts[i] += calls
        self.total += seconds

    def cumulative(self) -> list:
        out, running = [], 0
        for bound, count in zip(BUCKETS + (math.inf,), self.counts):
            running += count
            out.append((bound, running))
        return out


@dataclass
class TargetState:
    """What the collector remembers of one target between reads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    previous: dict | None = None      # (dbid, userid, queryid) -> row values of the last read
    members: dict = field(default_factory=dict)  # key -> monotonic time it was last in the top N
    histograms: dict = field(default_factory=dict)  # datname -> Histogram
    texts: dict = field(default_factory=dict)       # (dbid, queryid) -> normalised text
    textless: set = field(default_factory=set)      # asked for since texts_at, but no text came back
    texts_at: float = -math.inf
    chosen: set = field(default_factory=set)        # (dbid, userid, queryid) shown in the last read
    excluded: dict = field(default_factory=dict)    # key -> OWN or a transaction command: never ranked
    pending: set = field(default_factory=set)       # keys not classified yet (new since the last read)
    classify_next: float = -math.inf                # monotonic time the next classifying read may run
    classify_reads: int = 0                         # classifying reads so far (for tests and benchmarks)
    hidden_said: bool = False                       # the missing pg_read_all_stats was logged


class StatementsCollector(Collector):
    def __init__(self, clock=time.monotonic):
        super().__init__(
            name="statements", scope=CLUSTER, min_version=130000, default_timeout=5.0, own_session=True,
            help="pg_stat_statements per statement (top N per database by statements.rank_by, sticky, "
                 "plus an `other` remainder per database so sums equal totals; dbperf's own statements "
                 "and transaction control (BEGIN, COMMIT, ROLLBACK, ...) never rank: they are summed in "
                 "`queryid=\"dbperf\"` and `queryid=\"transaction_control\"` per database), a workload latency "
                 "histogram from every statement, and opt-in query text. Needs the pg_stat_statements "
                 "extension (shared_preload_libraries and CREATE EXTENSION): without it the collector "
                 "fails with a message saying how to enable it.",
            families=tuple(f.name for f in self.describe()))
        self.clock = clock
        self.state = TargetState()  # what this target's collector remembers between reads

    # -- description ---------------------------------------------------------------------
    @staticmethod
    def describe() -> list[Family]:
        out = [Family(name, "counter", help_, LABELS) for name, _, _, help_ in COUNTERS]
        out.append(Family("pg_stat_statements_transaction_control_calls_total", "counter", TC_HELP,
                          ("datname", "command")))
        out.append(Family("pg_stat_statements_query_info", "gauge",
                          "Normalised, truncated text of an exposed statement (only with statements.query_text); a statement that carries a secret shows only its leading keywords and <redacted: statement carries a secret>.",
                          ("datname", "queryid", "query")))
        out.append(Family("pg_stat_statements_dealloc_total", "counter",
                          "Times pg_stat_statements deallocated the least-executed statements (PostgreSQL 14+)."))
        out.append(Family("pg_stat_statements_stats_reset_timestamp_seconds", "gauge",
                          "Unix time pg_stat_statements was last reset (PostgreSQL 14+; 0 when never)."))
        out.append(Family("pg_statement_duration_seconds", "histogram",
                          "Statement execution time per database, every statement's new calls counted at "
                          "its mean time over the scrape interval (an approximation; counts since dbperf started).",
                          ("datname",)))
        return out

    @staticmethod
    def options(ctx: Context) -> StatementsOptions:
        return getattr(ctx.options, "statements", None) or StatementsOptions()

    # -- collecting ----------------------------------------------------------------------
    def sql(self, version: int, api: tuple | None = None) -> str:
        """The batch for a server of ``version`` with pg_stat_statements ``api`` (default: the
        version bundled with that server)."""
        api = bundled(version) if api is None else api
        blk = "shared_blk" if api >= (1, 11) else "blk"
        jit = _JIT_MS + (" + s.jit_deform_time" if api >= (1, 11) else "")
        main = MAIN_SQL.format(
            blk_read_time=f"{blk}_read_time", blk_write_time=f"{blk}_write_time",
            jit=f"sum({jit})::float8" if api >= SINCE[JIT] else "NULL::float8",
            parallel=("sum(s.parallel_workers_to_launch::float8), sum(s.parallel_workers_launched::float8)"
                      if api >= SINCE[PAR_PLANNED] else "NULL::float8, NULL::float8"))
        parts = [SETTINGS_SQL, main]
        if api >= (1, 9):
            parts.append(INFO_SQL)
        return batch(parts)

    def collect(self, conn, ctx: Context, timeout: float = 5.0) -> list[Family]:
        dbname = ctx.server.dbname or ctx.datname
        if "pg_stat_statements" not in ctx.server.extensions:
            raise StatementsUnavailable(not_installed(dbname))
        api = api_version(ctx.server)
        if api < MIN_API:
            raise StatementsUnavailable(
                f"pg_stat_statements {'.'.join(map(str, api))} in database {dbname!r} is older than "
                f"{'.'.join(map(str, MIN_API))}: run ALTER EXTENSION pg_stat_statements UPDATE there")
        try:
            results = conn.query(self.sql(ctx.server.version, api), timeout)
        except Exception as exc:
            if "shared_preload_libraries" in str(exc):
                raise StatementsUnavailable(not_loaded(dbname)) from None
            raise
        (_, settings), (_, rows) = results[0], results[1]
        track_planning, block_size = settings[0]
        info = results[2][1] if len(results) > 2 else None
        opts = self.options(ctx)
        state = self.state
        with state.lock:
            # one lookup of every statement's previous read, shared by the ranking and the histogram
            keys = [row[:3] for row in rows]  # (dbid, userid, queryid)
            previous = state.previous or {}
            befores = [previous.get(key) for key in keys]
            first = state.previous is None
            current = dict(zip(keys, rows))
            self._say_hidden(ctx, state, keys)
            self._classify_new(conn, timeout, state, keys, befores, current)
            families = self._families(rows, keys, befores, current, opts, state, track_planning, block_size, api)
            self._histograms(rows, befores, state, first)
            self._forget_databases(state, rows, ctx.server.databases)
            families.append(self._histogram_family(state))
            if opts.query_text:
                families.append(self._texts(conn, ctx, timeout, state, families[0], rows, opts))
            else:
                state.texts.clear()
            state.previous = current
        if info:
            dealloc, reset = info[0]
            families.append(Family("pg_stat_statements_dealloc_total", "counter",
                                   "Times pg_stat_statements deallocated the least-executed statements (PostgreSQL 14+).",
                                   samples=[("", (), dealloc)]))
            families.append(Family("pg_stat_statements_stats_reset_timestamp_seconds", "gauge",
                                   "Unix time pg_stat_statements was last reset (PostgreSQL 14+; 0 when never).",
                                   samples=[("", (), reset or 0)]))
        return families

    def select(self, rows: list, keys: list, befores: list, present, opts: StatementsOptions, state: TargetState) -> set:
        """Keys of the statements to expose: per database, the top N and the sticky ones, among the
        ordinary statements (those in ``state.excluded`` go to the pseudo rows)."""
        rank_by, excluded = opts.rank_by, state.excluded
        by_db: dict = {}
        zero = [0] * len(rows[0]) if rows else []
        for row, key, before in zip(rows, keys, befores):
            if before is None or before[CALLS] > row[CALLS]:
                before = zero  # new, or reset since the last read: rank on what it has
            by_db.setdefault(row[0], []).append((_rank_value(rank_by, row, before), key))
        # hidden statements (no queryid) stay in other
        return top_and_sticky(by_db, state.members, self.clock(), opts.limit, opts.sticky, present,
                              lambda key: key not in excluded and key[2] is not None)

    def _families(self, rows, keys, befores, present, opts, state, track_planning, block_size,
                  api: tuple = BUNDLED[max(BUNDLED)]) -> list[Family]:
        chosen = state.chosen = self.select(rows, keys, befores, present, opts, state)
        counters = [(name, col, factor, help_) for name, col, factor, help_ in COUNTERS
                    if (col != PLAN or track_planning) and api >= SINCE.get(col, MIN_API)]
        families = [Family(name, "counter", help_, LABELS) for name, _, _, help_ in counters]
        scale = {"ms": 0.001, "block": float(block_size), 1: 1}
        factors = [(col, scale[factor]) for _, col, factor, _ in counters]
        # where each statement goes, for the few that do not go to ``other``: one lookup per row
        place = dict.fromkeys(chosen, _SHOWN)
        place.update(state.excluded)
        get = place.get
        shown, rest, pseudo_rows, commands = [], {}, {}, {}
        for row, key in zip(rows, keys):
            kind = get(key)
            if kind is None:
                rest.setdefault(row[3], []).append(row)
            elif kind is _SHOWN:
                shown.append(row)
            elif kind == OWN:
                pseudo_rows.setdefault((row[3], OWN), []).append(row)
            else:
                pseudo_rows.setdefault((row[3], TRANSACTION_CONTROL), []).append(row)
                commands[(row[3], kind)] = commands.get((row[3], kind), 0) + (row[CALLS] or 0)
        pseudo = {}  # (datname, pseudo queryid) -> sums of its statements, per counter
        for group, members in [((datname, OTHER), members) for datname, members in rest.items()] + list(
                pseudo_rows.items()):
            columns = list(zip(*members))
            pseudo[group] = [sum(filter(None, columns[col])) for col, _ in factors]
        # column-wise (see exporter.metrics.Family.columns): labels rendered once per statement
        render = pairs_formatter(LABELS)
        pairs = [render((row[3], row[4], row[2])) for row in shown]
        pairs += [render((datname, "", queryid)) for datname, queryid in pseudo]
        for i, (family, (col, f)) in enumerate(zip(families, factors)):
            values = [(row[col] or 0) * f for row in shown] if f != 1 else [row[col] or 0 for row in shown]
            values += [sums[i] * f for sums in pseudo.values()]
            family.columns.append((pairs, values))
        tc = Family("pg_stat_statements_transaction_control_calls_total", "counter", TC_HELP, ("datname", "command"))
        for labels in sorted(commands):
            tc.add(labels, commands[labels])
        families.append(tc)
        return families

    # -- dbperf's own statements and transaction control ---------------------------------
    def _classify_new(self, conn, timeout: float, state: TargetState, keys: list, befores: list, current: dict):
        """Classify the statements not seen in the last read (and those left pending), reading text
        at most for CLASSIFY_SHARE of the time. A statement seen in the last read was classified
        then or is pending, so a warm read costs one scan of ``befores`` and nothing else."""
        pending = state.pending
        if None in befores:
            pending.update(key for key, before in zip(keys, befores) if before is None and key[2] is not None)
        if pending:
            if self.clock() >= state.classify_next:
                unknown = [key for key in pending if key in current]
                if self._classify(conn, timeout, state, unknown):
                    pending.clear()
            elif len(pending) > len(keys):  # statements gone while waiting
                state.pending = {key for key in pending if key in current}
        excluded = state.excluded
        if any(key not in current for key in excluded):
            state.excluded = {key: kind for key, kind in excluded.items() if key in current}

    def _classify(self, conn, timeout: float, state: TargetState, unknown: list) -> bool:
        ids = ",".join(sorted({queryid for _, _, queryid in unknown if _INTEGER.fullmatch(queryid)}))
        start = self.clock()
        try:
            (_, found), = conn.query(CLASSIFY_SQL.replace("{ids}", ids), timeout)
        except Exception as exc:
            state.classify_next = self.clock() + CLASSIFY_RETRY
            LOG.warning("statements: reading the text of %d new statements to tell dbperf's own and "
                        "transaction control apart failed (%s); they rank as ordinary statements, next try "
                        "in %.0fs", len(unknown), conn.scrub(" ".join(str(exc).split())), CLASSIFY_RETRY)
            return False
        end = self.clock()
        state.classify_next = end + (end - start) * (1 / CLASSIFY_SHARE - 1)
        state.classify_reads += 1
        matched = {}
        for dbid, userid, queryid, own, text in found:
            key = (dbid, userid, queryid)
            if own:
                matched[key] = OWN
            elif key not in matched and text is not None:
                matched[key] = transaction_command(text)
        excluded = state.excluded
        for key in unknown:
            kind = matched.get(key)
            if kind:
                excluded[key] = kind
            else:
                excluded.pop(key, None)
        return True

    # -- histogram -----------------------------------------------------------------------
    def _histograms(self, rows, befores, state: TargetState, first: bool) -> None:
        histograms = state.histograms
        for row, before in zip(rows, befores):
            histogram = histograms.get(row[3])
            if histogram is None:
                histogram = histograms[row[3]] = Histogram()
            if first or (before is not None and before[CALLS] == row[CALLS]):
                continue  # the first read, or no new calls since the last one
            calls, ms = row[CALLS] or 0, row[EXEC] or 0
            if before is not None and before[CALLS] <= calls and (before[EXEC] or 0) <= ms:
                calls, ms = calls - before[CALLS], ms - (before[EXEC] or 0)
            elif before is not None and row[2] is None:
                continue  # hidden statements summed: one of them left, the others' increase is unknown
            calls = int(round(calls))
            if calls <= 0:
                continue
            seconds = ms / 1000.0
            histogram.observe(seconds / calls, calls, seconds)

    @staticmethod
    def _forget_databases(state: TargetState, rows, databases) -> None:
        """Forget the histograms of databases that are gone: neither in this read (which joins
        pg_database, so a dropped database's statements, kept by pg_stat_statements until they are
        deallocated, are left out) nor among the server's databases (one without statements now
        keeps its counts). Every other state is per statement and goes with the statement."""
        histograms = state.histograms
        known = set(databases)
        gone = [datname for datname in histograms if datname not in known]
        if gone:
            present = {row[3] for row in rows}
            for datname in gone:
                if datname not in present:
                    del histograms[datname]

    def _say_hidden(self, ctx: Context, state: TargetState, keys: list) -> None:
        """Once per target (again after the grant came and went): other roles' statements have no
        queryid without pg_read_all_stats; they are summed in ``other`` (see ``select``)."""
        hidden = sum(1 for key in keys if key[2] is None)
        if not hidden:
            state.hidden_said = False
        elif not state.hidden_said:
            state.hidden_said = True
            role = quote_ident(role_of(ctx.options.dsn)) if getattr(ctx.options, "dsn", None) else "..."
            LOG.warning("target=%s statements: the monitoring role lacks pg_read_all_stats, so pg_stat_statements "
                        "hides the queryid of other roles' statements (%d user and database pairs now); they are "
                        "summed in queryid=\"other\" of their database (the sums stay exact) and never ranked: "
                        "GRANT pg_read_all_stats TO %s (or GRANT pg_monitor TO %s)", ctx.target, hidden, role, role,
                        extra={"target": ctx.target, "collector": "statements"})

    def _histogram_family(self, state: TargetState) -> Family:
        family = Family("pg_statement_duration_seconds", "histogram", _help("pg_statement_duration_seconds"),
                        ("datname",))
        for datname in sorted(state.histograms):
            histogram = state.histograms[datname]
            family.add_histogram((datname,), histogram.cumulative(), histogram.total)
        return family

    # -- query text ----------------------------------------------------------------------
    def _texts(self, conn, ctx, timeout, state, calls_family, rows, opts) -> Family:
        dbids = {}
        wanted = set()
        for row in rows:
            dbids[row[3]] = row[0]
        for dbid, _, queryid in state.chosen:  # the statements shown in this scrape
            wanted.add((dbid, queryid))
        now = self.clock()
        stale = now - state.texts_at >= opts.query_text_ttl
        if stale:
            state.textless.clear()
        missing = {key for key in wanted if key not in state.texts and key not in state.textless}
        fetch = wanted if stale else missing
        if fetch:
            ids = ",".join(sorted({queryid for _, queryid in fetch if _INTEGER.fullmatch(queryid)}))
            sql = (TEXT_SQL if api_version(ctx.server) >= (1, 9) else TEXT_SQL_PG13).format(ids=ids)
            (_, text_rows), = conn.query(sql, timeout)
            length = opts.query_text_length
            if stale:
                state.texts.clear()
                state.texts_at = now
            for dbid, queryid, text in text_rows:
                if (dbid, queryid) in fetch:
                    state.texts[(dbid, queryid)] = normalise_text(redact(text), length)
            state.textless |= {key for key in fetch if key not in state.texts}
        for key in [k for k in state.texts if k not in wanted]:
            del state.texts[key]
        state.textless &= wanted
        names = {dbid: datname for datname, dbid in dbids.items()}
        family = Family("pg_stat_statements_query_info", "gauge", _help("pg_stat_statements_query_info"),
                        ("datname", "queryid", "query"))
        for (dbid, queryid), text in sorted(state.texts.items(), key=lambda item: (item[0][0], item[0][1])):
            family.add((names.get(dbid, ""), queryid, text), 1)
        return family
