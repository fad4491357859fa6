"""The session sampler's pure logic: integrating what ``pg_stat_activity`` shows into seconds, and
the sampler's schedule. No I/O, no threads of its own, a clock passed in: tested with a fake one.

Integration
    Each successful sample adds, for every counted session it sees, the time since the previous
    successful sample: a session seen in one sample and the next is counted for the time between
    them, so the rate of the counters is the average number of sessions in each state and wait
    event ("database load", average active sessions). Bounded:

    - the first sample, and the first after a failed one, is a baseline: it adds nothing (the
      sessions of an outage are never integrated as if they had been there all along);
    - the time added is at most :data:`MAX_GAP` sampling intervals (a sampler delayed by a busy
      machine counts at most that much for what it saw).

Sessions counted
    Client backends (``backend_type = 'client backend'``) other than dbperf's own, in the states
    of :data:`COUNTED_STATES`: ``active`` and ``fastpath function call`` (the database works for
    them), ``idle in transaction`` and ``idle in transaction (aborted)`` (they hold a snapshot and
    their locks; PostgreSQL shows them waiting on ``Client:ClientRead``). ``idle`` sessions and
    ``disabled`` (track_activities off) are not counted. A session that waits on nothing (NULL
    wait event) is counted as ``wait_event_type="CPU", wait_event="CPU"``: on CPU, or in code
    PostgreSQL does not instrument. Per statement, only the active states count.

Routes
    Active sessions (the active states) by the sqlcommenter ``route`` tag of their statement's text
    (:mod:`exporter.instrument.sqltags`): ``routes[(datname, route, wait_event_type)]``. A session
    whose text has no route tag counts as ``route=""``, so the routes of a database sum to its
    active sessions; past ``max_routes`` distinct routes per target, a new one counts as
    ``route="other"``.

Routes and statements
    The same active, tagged sessions (``route != ""``) by route and statement:
    ``route_statements[(datname, route, queryid)]``, ``route`` as in the route counter (``other``
    past ``max_routes``), ``queryid`` that of a statement the statements collector shows, else
    ``other`` (a statement not shown, or no query_id). At most ``max_route_statements`` distinct
    ``(datname, route, queryid)`` with a shown queryid per target; a new one past the cap counts in
    ``(datname, route, "other")``. So the statements of a route sum to its tagged time:
    ``sum by (datname, route)`` of it equals ``sum by (datname, route)`` of the route counter
    (``route != ""``), whatever is folded. A statement no longer shown loses its series (as in the
    statement counter; its past seconds go with it), which frees its room under the cap.
"""

from __future__ import annotations

import math
import threading

CPU = "CPU"
OTHER = "other"
COUNTED_STATES = ("active", "idle in transaction", "idle in transaction (aborted)", "fastpath function call")
ACTIVE_STATES = ("active", "fastpath function call")
MAX_GAP = 2.0  # sampling intervals: the most one sample adds


class Integrator:
    """The counters of one target: ``sessions[(datname, state, wait_event_type, wait_event)]`` and
    ``statements[(datname, queryid, wait_event_type)]``, in seconds."""

    def __init__(self, interval: float, max_routes: int = 100, max_route_statements: int = 500):
        self.interval = interval
        self.max_routes = max_routes
        self.max_route_statements = max_route_statements
        self.sessions: dict[tuple, float] = {}
        self.statements: dict[tuple, float] = {}
        self.routes: dict[tuple, float] = {}
        self.route_names: set = set()  # the distinct routes admitted (at most max_routes)
        self.route_statements: dict[tuple, float] = {}
        self.route_pairs: set = set()  # the (datname, route, queryid) admitted with a shown queryid
        self.last: float | None = None  # time of the previous successful sample; None: the next is a baseline
        self.lock = threading.Lock()

    def failed(self) -> None:
        """A sample failed or was skipped: the next successful one is a baseline."""
        self.last = None

    def step(self, at: float) -> float:
        """The seconds a successful sample taken at ``at`` adds (see the module's docstring)."""
        previous, self.last = self.last, at
        if previous is None:
            return 0.0
        return min(max(0.0, at - previous), MAX_GAP * self.interval)

    def add(self, at: float, rows, shown=frozenset(), wanted=lambda datname: True) -> float:
        """Integrate one sample taken at ``at``: ``rows`` of ``(datid, datname, state,
        wait_event_type, wait_event, queryid, sessions)``; ``shown``: the ``(datid, queryid)``
        of the statements shown with their own series (the others are ``queryid="other"``);
        ``wanted(datname)``: the target's database rules. Returns the seconds added per session."""
        dt = self.step(at)
        if dt <= 0:
            return 0.0
        sessions, statements = self.sessions, self.statements
        with self.lock:
            for datid, datname, state, wait_type, wait_event, queryid, count in rows:
                if datname is None or state not in COUNTED_STATES or not wanted(datname):
                    continue
                if wait_type is None:
                    wait_type, wait_event = CPU, CPU
                seconds = count * dt
                key = (datname, state, wait_type, wait_event or "")
                sessions[key] = sessions.get(key, 0.0) + seconds
                if state in ACTIVE_STATES:
                    label = queryid if queryid is not None and (datid, queryid) in shown else OTHER
                    key = (datname, label, wait_type)
                    statements[key] = statements.get(key, 0.0) + seconds
        return dt

    def add_routes(self, dt: float, sessions, shown=frozenset()) -> None:
        """Add ``dt`` seconds (what :meth:`add` returned for the same sample) for each active session
        of ``sessions``: ``(datname, route or None, wait_event_type[, datid, queryid])``, already
        filtered by the target's database rules; ``shown`` as in :meth:`add`."""
        if dt <= 0:
            return
        routes, names = self.routes, self.route_names
        with self.lock:
            for datname, route, wait_type, *statement in sessions:
                route = route or ""
                if route and route not in names:
                    if len(names) >= self.max_routes:
                        route = OTHER
                    else:
                        names.add(route)
                key = (datname, route, wait_type or CPU)
                routes[key] = routes.get(key, 0.0) + dt
                if route:
                    self._add_route_statement(dt, datname, route, *(statement or (None, None)), shown)

    def _add_route_statement(self, dt: float, datname: str, route: str, datid, queryid, shown) -> None:
        label = queryid if queryid is not None and (datid, queryid) in shown else OTHER
        key = (datname, route, label)
        if label != OTHER and key not in self.route_pairs:
            if len(self.route_pairs) >= self.max_route_statements:
                key = (datname, route, OTHER)
            else:
                self.route_pairs.add(key)
        self.route_statements[key] = self.route_statements.get(key, 0.0) + dt

    def forget(self, databases=None, shown_queryids=None) -> None:
        """Drop the series of databases not in ``databases`` (dropped, renamed) and the statements
        no longer shown (``shown_queryids``; ``other`` stays): the label sets stay bounded."""
        with self.lock:
            if databases is not None:
                keep = set(databases)
                for table in (self.sessions, self.statements, self.routes, self.route_statements):
                    for key in [k for k in table if k[0] not in keep]:
                        del table[key]
            if shown_queryids is not None:
                for key in [k for k in self.statements if k[1] != OTHER and k[1] not in shown_queryids]:
                    del self.statements[key]
                for key in [k for k in self.route_statements if k[2] != OTHER and k[2] not in shown_queryids]:
                    del self.route_statements[key]
            self.route_pairs.intersection_update(self.route_statements)

    def snapshot(self) -> tuple[dict, dict]:
        with self.lock:
            return dict(self.sessions), dict(self.statements)

    def routes_snapshot(self) -> dict:
        with self.lock:
            return dict(self.routes)

    def route_statements_snapshot(self) -> dict:
        with self.lock:
            return dict(self.route_statements)


class Schedule:
    """When the sampler samples: at ``start + k * interval``. A sample that overran makes the
    slots it covered skipped (counted), never a burst of late samples."""

    def __init__(self, interval: float, start: float):
        self.interval = interval
        self.next = start
        self.skipped = 0

    def wait(self, now: float) -> float:
        """Seconds to wait before the next sample (0: take it now)."""
        return max(0.0, self.next - now)

    def take(self, now: float) -> int:
        """A sample starts at ``now`` (not before :meth:`wait` said 0): the slots missed since the
        last one (counted in :attr:`skipped`); the next slot is the first after ``now``."""
        missed = max(0, math.floor((now - self.next) / self.interval))
        self.skipped += missed
        self.next += (missed + 1) * self.interval
        return missed


def sample_timeout(interval: float) -> float:
    """Each sample's statement timeout: half the interval, between 0.1 s and 1 s."""
    return min(1.0, max(0.1, interval / 2))
