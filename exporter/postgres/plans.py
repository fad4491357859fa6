"""Plans of the top statements, and their changes: the ``plans`` collector (``plans: {enabled:
true}``) and the background source behind it.

What runs
    A thread of the target's own (:class:`PlanSource`), never a scrape: EXPLAIN plans what it is
    given and takes locks on the statement's relations (``lock_timeout`` 1 s), so its time depends
    on the workload's statements and the server's locks, not on dbperf; inside a scrape it would
    spend the scrape's deadline on another collector's behalf, or be cut short by it. The scrape only
    renders the source's last results (no SQL). The source wakes every ``min(plans.interval, 10 s)``;
    from the statements collector's shown statements it picks, per database, the
    ``plans.per_database`` (default 10) with the most execution and planning time since its
    previous pick, and EXPLAINs those whose last EXPLAIN is ``plans.interval`` (default 10 min) old,
    one at a time, each under ``plans.timeout`` (default 2 s) as its ``statement_timeout``, in the
    statement's database, on a session opened for that round and closed after it.

Which text
    - PostgreSQL 16+: ``EXPLAIN (GENERIC_PLAN)`` of the normalised text of pg_stat_statements
      (``$1`` ... in place of the constants): the plan depends on the statement and the statistics
      only, never on which constants a sample happened to carry, so its fingerprint changes when
      the planner's choice changes and not otherwise.
    - Otherwise (PostgreSQL 13-15, or a normalised text whose parameters' types the server cannot
      infer): the text of the slowest sample of the statement the session sampler keeps
      (:class:`SampleStore`), literals included, unless it was truncated
      (``track_activity_query_size``). Without one the statement is skipped (counted).

Guards
    The exact text sent is parsed with pglast (PostgreSQL's own parser) first: one ``EXPLAIN``
    with dbperf's options only (never ANALYZE), of one SELECT, INSERT, UPDATE or DELETE (WITH
    included; not SELECT ... INTO); anything else -- several statements, utility statements, a
    text that does not parse -- is refused and counted. EXPLAIN without ANALYZE executes nothing;
    the session is read-only as well (``default_transaction_read_only``, checked with
    ``standard_conforming_strings`` before the first EXPLAIN of each round), with dbperf's lock and
    statement timeouts. A server that refuses (a replica, a missing privilege: EXPLAIN needs the
    privileges the statement needs) fails that EXPLAIN, counted; it is tried again an interval later.

Metrics
    ``pg_statement_plan_info{datname, queryid, plan}`` (1; ``plan`` the fingerprint of
    :func:`exporter.postgres.plan_history.fingerprint`) and
    ``pg_statement_plan_changes_total{datname, queryid}`` for the statements picked in the last
    ``3 * plans.interval`` (at most ``2 * per_database`` per database), and the source's own
    ``dbperf_plans_*_total`` counters. The plans themselves (literals masked) go to the state
    directory (:mod:`exporter.postgres.plan_history`): ``dbperf plans`` prints them.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from exporter.background import Worker
from exporter.collector import CLUSTER, Collector, Context
from exporter.metrics import Family
from exporter.postgres.plan_history import PlanHistory
from exporter.postgres.sqlmark import mark

LOG = logging.getLogger("dbperf.plans")

WAKE_MAX = 10.0  # seconds between two looks at the top statements, at most
KEEP_INTERVALS = 3  # a statement's series stay this many intervals after it was last picked
GENERIC_SINCE = 160000


class Sample(Protocol):
    text: str        # the statement's text as the session ran it, literals included
    truncated: bool  # cut at track_activity_query_size


class SampleStore(Protocol):
    def slowest(self, datname: str, queryid: str) -> Sample | None: ...


# -- the guard ---------------------------------------------------------------------------------------
class Refused(ValueError):
    """The text is not something dbperf EXPLAINs; the message (one line, no text quoted) says why.
    ``kind``: refused for what the statement is (utility, several statements), which no other text
    of it changes; otherwise for this text only (a sample with parameters)."""

    def __init__(self, message: str, kind: bool = False):
        super().__init__(message)
        self.kind = kind


OPTIONS = {"generic": "GENERIC_PLAN, VERBOSE, FORMAT JSON", "sample": "VERBOSE, FORMAT JSON"}
_ALLOWED_OPTIONS = {"generic": {"generic_plan", "verbose", "format"}, "sample": {"verbose", "format"}}


def explain_sql(text: str, source: str) -> str:
    """The statement dbperf sends to plan ``text`` (``source`` "generic": a normalised text with
    ``$n``; "sample": a sample's text): ``EXPLAIN (...) text`` with dbperf's mark, checked whole
    with pglast. Raises :class:`Refused`."""
    from pglast import ast

    if "\x00" in text:
        raise Refused("the text contains a NUL character")
    statements = _parse(text)
    if len(statements) != 1:
        raise Refused(f"the text is {len(statements)} statements", kind=True)
    inner = statements[0].stmt
    if not isinstance(inner, (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)):
        raise Refused(f"not a SELECT, INSERT, UPDATE or DELETE ({type(inner).__name__.removesuffix('Stmt')})",
                      kind=True)
    from exporter.advisor.sqltree import walk

    if any(isinstance(node, ast.SelectStmt) and node.intoClause is not None for node in (inner, *walk(inner))):
        raise Refused("SELECT ... INTO creates a table", kind=True)
    if source == "sample":
        from exporter.advisor.sqltree import walk

        if any(isinstance(node, ast.ParamRef) for node in walk(inner)):
            raise Refused("the sample has parameters ($1 ...) without their values")
    # and the exact text sent: one EXPLAIN, with dbperf's options only, of that one statement
    sql = mark(f"EXPLAIN ({OPTIONS[source]}) {text}")
    statements = _parse(sql)
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.ExplainStmt):
        raise Refused("the text does not make one EXPLAIN")
    explain = statements[0].stmt
    if {option.defname for option in explain.options or ()} != _ALLOWED_OPTIONS[source]:
        raise Refused("the text adds EXPLAIN options")
    if type(explain.query) is not type(inner):
        raise Refused("the text does not make one EXPLAIN of itself")
    return sql


def _parse(sql: str):
    from pglast import parse_sql

    from exporter.advisor.guard import TooLong, bound

    try:
        bound(sql)
        return parse_sql(sql)
    except TooLong as exc:
        raise Refused(str(exc)) from None
    except Exception:
        raise Refused("the text does not parse") from None


# the normalised texts of some statements (PostgreSQL 16+, where they are planned: toplevel exists)
TEXTS_SQL = mark("""SELECT DISTINCT ON (s.dbid, s.queryid) d.datname::text, s.queryid::text, s.query
FROM pg_stat_statements(true) s JOIN pg_database d ON d.oid = s.dbid
WHERE s.queryid = ANY ('{{ids}}'::bigint[]) AND s.query IS NOT NULL
ORDER BY s.dbid, s.queryid, s.toplevel DESC""")

# plan keys that name things (kept as they are); every other string of a plan has its literals masked
NAMES = frozenset(("Node Type", "Relation Name", "Schema", "Index Name", "Alias", "Join Type", "Strategy",
                   "Parent Relationship", "Subplan Name", "CTE Name", "Function Name", "Operation",
                   "Scan Direction", "Partial Mode", "Command", "Sort Method"))
_MAY_HOLD_LITERAL = re.compile(r"['$0-9]")


def mask_plan(node):
    """An EXPLAIN (FORMAT JSON) plan with every literal of its expressions (strings and numbers)
    replaced by ``'<redacted>'`` (:func:`exporter.advisor.guard.mask_literals`); names are kept."""
    from exporter.advisor.guard import mask_literals

    if isinstance(node, dict):
        return {k: v if k in NAMES else mask_plan(v) for k, v in node.items()}
    if isinstance(node, list):
        return [mask_plan(v) for v in node]
    if isinstance(node, str) and _MAY_HOLD_LITERAL.search(node):
        return mask_literals(node)
    return node


SESSION_CHECK_SQL = mark("SELECT current_setting('default_transaction_read_only'), "
                         "current_setting('standard_conforming_strings')")


# -- the source ----------------------------------------------------------------------------------------
@dataclass
class Counters:
    explained: int = 0  # plans obtained
    failed: int = 0     # EXPLAINs the server refused or did not finish (timeout), or a database not reached
    refused: int = 0    # texts dbperf does not EXPLAIN (see explain_sql)
    no_text: int = 0    # statements without a usable text (no sample on PostgreSQL 13-15, a truncated one)


class PlanSource:
    """EXPLAINs the top statements of ``target`` (an :class:`exporter.target.Target`): ``statements``
    is its StatementsCollector (which statements are shown, their times), ``samples()`` the
    session sampler's store of samples (or None)."""

    def __init__(self, target, statements, samples: Callable[[], SampleStore | None] = lambda: None,
                 clock=time.monotonic, wall=time.time, history: PlanHistory | None = None):
        self.target = target
        self.options = target.plans
        self.statements = statements
        self.samples = samples
        self.clock, self.wall = clock, wall
        self.history = history or PlanHistory.for_target(self.options.state_dir, target.name)
        self.counters = Counters()
        self.server = None           # the ServerInfo of the last scrape
        self._totals: dict = {}      # (dbid, queryid) -> total ms at the previous pick
        self._picked: dict = {}      # (datname, queryid) -> monotonic time last picked
        self._checked: dict = {}     # (datname, queryid) -> monotonic time last EXPLAINed (or tried)
        self._unexplainable: set = set()  # (datname, queryid) whose text dbperf refuses to EXPLAIN
        self._worker = Worker(f"dbperf-plans-{target.name}", self._loop)
        self._stop = self._worker.stop
        from exporter.log import RateLimiter

        self._log_limit = RateLimiter(600.0)

    # -- life ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker.running

    def start(self) -> None:
        self._worker.start()

    def close(self, wait: float = 3.0) -> None:
        self._worker.close(wait)

    def _loop(self) -> None:
        wake = min(self.options.interval, WAKE_MAX)
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # a bug must not end the thread silently
                LOG.exception("target=%s plans: a round failed: %s", self.target.name, type(exc).__name__)
            self._stop.wait(wake)

    # -- picking -------------------------------------------------------------------------
    def pick(self) -> list[tuple[str, str]]:
        """``(datname, queryid)`` of the top ``per_database`` statements of each database by total
        time (execution and planning) since the previous pick, among those the statements collector
        shows (its top N and sticky ones; never dbperf's own or transaction control)."""
        state = getattr(self.statements, "state", None)
        if state is None:
            return []
        with state.lock:
            previous, chosen = state.previous or {}, set(state.chosen)
            rows = [previous[key] for key in chosen if key in previous and key[2] is not None]
        from exporter.postgres.statements import EXEC, PLAN

        totals: dict = {}
        names: dict = {}
        for row in rows:
            key = (row[0], row[2])
            totals[key] = totals.get(key, 0.0) + (row[EXEC] or 0.0) + (row[PLAN] or 0.0)
            names[key] = row[3]
        by_db: dict = {}
        for key, total in totals.items():
            if (names[key], key[1]) in self._unexplainable:
                continue
            before = self._totals.get(key)
            recent = total - before if before is not None and before <= total else total
            by_db.setdefault(key[0], []).append((recent, total, key[1], names[key]))
        self._totals = totals
        out = []
        for ranked in by_db.values():
            ranked.sort(key=lambda item: (-item[0], -item[1], item[2]))  # ties (an idle database): by all-time total
            out += [(datname, queryid) for _, _, queryid, datname in ranked[:self.options.per_database]]
        return out

    # -- one round -----------------------------------------------------------------------
    def run_once(self) -> int:
        """Pick the top statements and EXPLAIN those that are due; returns the EXPLAINs tried."""
        server = self.server
        if server is None:
            return 0
        now = self.clock()
        picked = self.pick()
        for key in picked:
            self._picked[key] = now
        due = [key for key in picked if now - self._checked.get(key, -math.inf) >= self.options.interval]
        self._forget(now)
        if not due:
            return 0
        generic = server.version >= GENERIC_SINCE
        texts = self._normalised_texts(due) if generic else {}
        by_db: dict = {}
        for key in due:
            by_db.setdefault(key[0], []).append(key)
        tried = 0
        for datname, keys in by_db.items():
            if self._stop.is_set():
                break
            tried += self._explain_database(datname, keys, texts, generic)
        self.history.save()
        return tried

    def _forget(self, now: float) -> None:
        horizon = KEEP_INTERVALS * self.options.interval
        for key in [k for k, at in self._picked.items() if now - at > horizon]:
            del self._picked[key]
            self._checked.pop(key, None)
        if len(self._unexplainable) > 100_000:  # a bound on a workload of endless distinct utility statements
            self._unexplainable.clear()

    def _connection(self, datname: str | None):
        from exporter.postgres.connection import Connection

        return Connection(self.target.dsn, datname, self.target.connect_timeout,
                          statement_timeout=self.options.timeout)

    def _normalised_texts(self, due: list) -> dict:
        """(datname, queryid) -> pg_stat_statements' text of the due statements (one read)."""
        from exporter.postgres.statements import _INTEGER

        ids = ",".join(sorted({queryid for _, queryid in due if _INTEGER.fullmatch(queryid)}))
        if not ids:
            return {}
        conn = self._connection(None)
        try:
            (_, rows), = conn.query(TEXTS_SQL.replace("{ids}", ids), max(self.options.timeout, 5.0))
        except Exception as exc:
            self._warn("texts", "reading the statements' texts from pg_stat_statements failed: %s", conn.scrub(_one(exc)))
            return {}
        finally:
            conn.close()
        return {(datname, queryid): text for datname, queryid, text in rows}

    def _explain_database(self, datname: str, keys: list, texts: dict, generic: bool) -> int:
        """EXPLAIN the due statements of one database (those with a text) on a session of its own."""
        now = self.clock()
        work = []
        for key in keys:
            self._checked[key] = now
            candidates = [("generic", texts[key])] if generic and texts.get(key) else []
            sample = self._sample_text(*key)
            if sample:
                candidates.append(("sample", sample))
            if candidates:
                work.append((key, candidates))
            else:
                self.counters.no_text += 1
        if not work:
            return 0  # nothing to plan here: no session opened
        conn = self._connection(datname)
        tried = 0
        try:
            try:
                (_, rows), = conn.query(SESSION_CHECK_SQL, self.options.timeout)
                if tuple(rows[0]) != ("on", "on"):
                    raise RuntimeError(f"the session is not read-only with standard strings ({tuple(rows[0])})")
            except Exception as exc:
                self.counters.failed += len(work)
                self._warn(("db", datname), "cannot plan statements in database %s: %s", datname, conn.scrub(_one(exc)))
                return 0
            for key, candidates in work:
                if self._stop.is_set():
                    break
                tried += 1
                self._explain_one(conn, key, candidates)
        finally:
            conn.close()
        return tried

    def _sample_text(self, datname: str, queryid: str) -> str | None:
        store = self.samples()
        sample = store.slowest(datname, queryid) if store is not None else None
        if sample is None or sample.truncated or not sample.text:
            return None
        return sample.text

    def _explain_one(self, conn, key: tuple, candidates: list) -> None:
        """Plan the first of ``candidates`` (``(source, text)``, the generic one first) that dbperf
        accepts; a generic text whose parameters' types cannot be inferred falls back to the sample."""
        datname, queryid = key
        refusal = None
        for i, (source, text) in enumerate(candidates):
            try:
                sql = explain_sql(text, source)
            except Refused as exc:
                refusal = exc
                continue
            try:
                (_, rows), = conn.query(sql, self.options.timeout)
                document = rows[0][0]
            except Exception as exc:
                if i + 1 < len(candidates) and getattr(exc, "sqlstate", None) == "42P18":
                    continue  # indeterminate_datatype: the parameters' types; try the sample
                self.counters.failed += 1
                # a sample's text has literals the server's message may quote: its SQLSTATE only
                reason = (conn.scrub(_one(exc)) if source == "generic"
                          else f"SQLSTATE {getattr(exc, 'sqlstate', None) or type(exc).__name__}")
                self._warn(("explain", datname, queryid), "EXPLAIN of statement %s in database %s failed: %s",
                           queryid, datname, reason)
                return
            self._keep(datname, queryid, document, source)
            return
        self.counters.refused += 1
        if refusal is not None and refusal.kind:  # what the statement is does not change: never picked again
            self._unexplainable.add(key)
        LOG.debug("target=%s plans: statement %s in database %s is not explained: %s", self.target.name, queryid,
                  datname, refusal)

    def _keep(self, datname: str, queryid: str, document, source: str) -> None:
        plan = (document[0] if isinstance(document, list) else document)["Plan"]
        fp, previous = self.history.record(datname, queryid, mask_plan(plan), source, self.wall())
        self.counters.explained += 1
        if previous is not None:
            LOG.info("target=%s plans: the plan of statement %s in database %s changed from %s to %s",
                     self.target.name, queryid, datname, previous, fp,
                     extra={"target": self.target.name, "collector": "plans"})

    def _warn(self, key, message: str, *args) -> None:
        if self._log_limit.allow(key):
            LOG.warning("target=%s plans: " + message + " (repeats are logged at most every 10 minutes)",
                        self.target.name, *args, extra={"target": self.target.name, "collector": "plans"})

    # -- rendering -----------------------------------------------------------------------
    def exposed(self) -> list[tuple[str, str]]:
        """The statements with series: picked in the last KEEP_INTERVALS intervals, at most
        ``2 * per_database`` per database (the most recently picked)."""
        now = self.clock()
        horizon = KEEP_INTERVALS * self.options.interval
        by_db: dict = {}
        for key, at in list(self._picked.items()):
            if now - at <= horizon:
                by_db.setdefault(key[0], []).append((at, key))
        out = []
        for items in by_db.values():
            items.sort(key=lambda item: (-item[0], item[1]))
            out += [key for _, key in items[:2 * self.options.per_database]]
        return sorted(out)

    def families(self) -> list[Family]:
        families = PlansCollector.describe()
        info, changes = families[0], families[1]
        for datname, queryid in self.exposed():
            current = self.history.current(datname, queryid)
            if current is None:
                continue
            fp, count = current
            info.add((datname, queryid, fp), 1)
            changes.add((datname, queryid), count)
        c = self.counters
        for family, value in zip(families[2:], (c.explained, c.failed, c.refused, c.no_text)):
            family.add((), value)
        return families


def _one(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# -- the collector -------------------------------------------------------------------------------------
class NeedsStatements(RuntimeError):
    """No pg_stat_statements on the target, or its collector off: nothing to pick the statements
    from (the kind's feature_not_supported SQLSTATE reports the collector unsupported)."""

    sqlstate = "0A000"


class PlansCollector(Collector):
    def __init__(self, statements=None, samples: Callable[[], SampleStore | None] = lambda: None):
        super().__init__(
            name="plans", scope=CLUSTER, optional=False, min_version=130000, enabled_by_default=False,
            help="plans of the top statements (plans.per_database per database by total time, among those the "
                 "statements collector shows), EXPLAINed in the background at most once per plans.interval "
                 "(PostgreSQL 16+: EXPLAIN (GENERIC_PLAN) of the normalised text; else a sample's text), never "
                 "ANALYZE; a plan fingerprint per statement and its changes, the plans kept in the state "
                 "directory (dbperf plans). On with plans: {enabled: true}.",
            families=tuple(f.name for f in self.describe()))
        self.statements = statements
        self.samples = samples
        self.source: PlanSource | None = None
        self._lock = threading.Lock()
        self._closed = False

    @staticmethod
    def describe() -> list[Family]:
        return [
            Family("pg_statement_plan_info", "gauge",
                   "The current plan of a top statement: plan is its fingerprint (node types, relations and indexes, "
                   "without costs; dbperf plans --queryid prints the plans); 1.", ("datname", "queryid", "plan")),
            Family("pg_statement_plan_changes_total", "counter",
                   "Times the plan fingerprint of the statement changed (kept across restarts in the state directory).",
                   ("datname", "queryid")),
            Family("dbperf_plans_explained_total", "counter", "Plans the plans source obtained (EXPLAIN, never ANALYZE)."),
            Family("dbperf_plans_failed_total", "counter",
                   "EXPLAINs that failed: the server refused (a privilege, a replica) or ran past plans.timeout, or "
                   "the statement's database could not be reached."),
            Family("dbperf_plans_refused_total", "counter",
                   "Statements not explained because their text is not one SELECT, INSERT, UPDATE or DELETE (or "
                   "does not parse)."),
            Family("dbperf_plans_no_text_total", "counter",
                   "Statements not explained for want of a text: no untruncated sample on PostgreSQL 13-15 (16+ "
                   "plans the normalised text)."),
        ]

    def get(self, target) -> PlanSource:
        with self._lock:
            if self._closed:
                raise RuntimeError("the plans source was stopped (the exporter is closing)")
            if self.source is None:
                self.source = PlanSource(target, self.statements, self.samples)
            self.source.start()
            return self.source

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        if "pg_stat_statements" not in ctx.server.extensions:
            raise NeedsStatements("plans: needs pg_stat_statements (the statements collector picks the statements "
                                  "to explain)")
        collector = getattr(ctx.options, "collector", None)
        if collector is not None and not collector("statements", True).enabled:
            raise NeedsStatements("plans: needs the statements collector (it picks the statements to explain)")
        source = self.get(ctx.options)
        source.server = ctx.server
        return source.families()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            source = self.source
        if source is not None:
            source.close()
