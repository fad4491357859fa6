"""The screen of ``dbperf top`` as lines: a pure function of a :class:`~.feed.Snapshot`, the
:class:`View` (sort, database filter, pause, scroll) and the terminal's size.

From the top: a title line; the load (average active sessions over the window) with one bar per
wait event type and its largest events; the blocking chains (a blocker, then those waiting on it,
indented); the sessions table; the top statements by load; a line of keys. Given a height, every
section gets a share and says how many of its lines did not fit; columns that do not fit the
width are dropped (client first, the query text last). ``height=None`` (``--once``): everything.
Each line is ``(style, text)``, the style one of :data:`STYLES`; no line is wider than ``width``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from exporter.durations import format_duration
from exporter.top.activity import Session, chains

SORTS = ("duration", "database", "wait")
STYLES = ("", "title", "header", "error")
MIN_WIDTH, MIN_HEIGHT = 30, 6
STATEMENT_ROWS = 5


@dataclass
class View:
    sort: str = "duration"
    database: str | None = None  # None: every database
    paused: bool = False
    offset: int = 0              # the first session row shown (arrow keys scroll)

    def cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]

    def cycle_database(self, databases) -> None:
        """All, then each database in turn, then all again."""
        names = sorted(databases)
        if self.database not in names:
            self.database = names[0] if names else None
        else:
            i = names.index(self.database) + 1
            self.database = names[i] if i < len(names) else None
        self.offset = 0


def databases_of(snap) -> set[str]:
    """The databases the filter cycles through: those with sessions or load now."""
    return {s.datname for s in snap.sessions if s.datname} | {d for d, _, _ in snap.load if d} | \
        {s.datname for s in snap.statements if s.datname}


def duration_text(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


STATE_TEXT = {"idle in transaction": "idle-tx", "idle in transaction (aborted)": "idle-tx!",
              "fastpath function call": "fastpath"}


def state_text(s: Session) -> str:
    if s.backend_type != "client backend":
        return s.backend_type.replace("autovacuum worker", "autovacuum")
    return STATE_TEXT.get(s.state, s.state)


def sorted_sessions(sessions, sort: str) -> list[Session]:
    if sort == "database":
        return sorted(sessions, key=lambda s: (s.datname, -s.duration, s.pid))
    if sort == "wait":
        return sorted(sessions, key=lambda s: (not s.wait_type, s.wait, -s.duration, s.pid))
    return sorted(sessions, key=lambda s: (-s.duration, s.pid))


# column, width, priority (the lowest is dropped first when the terminal is narrow)
COLUMNS = (("PID", 7, 9), ("DATABASE", 12, 7), ("USER", 10, 4), ("APP", 12, 3), ("CLIENT", 15, 1),
           ("STATE", 10, 8), ("WAIT", 22, 6), ("DURATION", 8, 9), ("BLOCKED BY", 11, 5))
QUERY_MIN = 12


def _columns(width: int) -> list[tuple[str, int]]:
    cols = list(COLUMNS)
    while cols and sum(w + 1 for _, w, _ in cols) + QUERY_MIN > width:
        cols.remove(min(cols, key=lambda c: c[2]))
    return [(name, w) for name, w, _ in cols]


def _cell(text: str, width: int) -> str:
    text = str(text)
    return (text if len(text) <= width else text[:width - 1] + "~").ljust(width)


def _session_cells(s: Session) -> dict:
    return {"PID": s.pid, "DATABASE": s.datname, "USER": s.user, "APP": s.application, "CLIENT": s.client,
            "STATE": state_text(s), "WAIT": s.wait, "DURATION": duration_text(s.duration),
            "BLOCKED BY": ",".join(str(p) for p in s.blocked_by)}


def _load_lines(snap, database, width: int) -> list[tuple[str, str]]:
    by_type: dict[str, dict[str, float]] = {}
    for (datname, wait_type, wait_event), rate in snap.load.items():
        if database is None or datname == database:
            events = by_type.setdefault(wait_type, {})
            events[wait_event] = events.get(wait_event, 0.0) + rate
    totals = {t: sum(e.values()) for t, e in by_type.items()}
    top = max(totals.values(), default=0.0)
    bar_width = max(0, min(30, width // 4))
    lines = []
    for wait_type in sorted(totals, key=lambda t: (-totals[t], t)):
        events = by_type[wait_type]
        bar = "#" * (round(totals[wait_type] / top * bar_width) if top > 0 else 0)
        named = ", ".join(f"{e} {r:.2f}" for e, r in sorted(events.items(), key=lambda i: (-i[1], i[0]))[:3]
                          if e and e != wait_type)
        lines.append(("", f"  {wait_type:<10} {totals[wait_type]:6.2f} {bar:<{bar_width}}  {named}".rstrip()))
    return lines


def _summary(snap, sessions, database) -> str:
    total = sum(r for (d, _, _), r in snap.load.items() if database is None or d == database)
    if snap.span <= 0:
        load = "load: measuring (needs two samples)"
    else:
        load = f"load {total:.2f} average active sessions over {format_duration(round(snap.span, 1))}"
    active = sum(1 for s in sessions if s.state == "active")
    locks = sum(1 for s in sessions if s.wait_type == "Lock")
    idle_tx = sum(1 for s in sessions if s.state.startswith("idle in transaction"))
    return f"{load} | sessions: {active} active, {locks} waiting on locks, {idle_tx} idle in transaction"


def _chain_lines(sessions, database) -> list[tuple[str, str]]:
    walk = chains(sessions)
    groups: list[list] = []
    for depth, pid, s in walk:
        if depth == 0:
            groups.append([])
        groups[-1].append((depth, pid, s))
    lines = []
    for group in groups:
        if database is not None and not any(s is not None and s.datname == database for _, _, s in group):
            continue
        for depth, pid, s in group:
            lead = "  " + "   " * max(0, depth - 1) + ("+- " if depth else "")
            if s is None:
                lines.append(("", f"{lead}{pid} (not listed)"))
                continue
            what = s.wait if s.wait_type == "Lock" else state_text(s)
            blocked = f" blocked by {','.join(map(str, s.blocked_by))}" if depth else f" blocks {_count(walk, pid)}"
            lines.append(("", f"{lead}{pid} {what} {duration_text(s.duration)}{blocked} [{s.datname}] {s.query}"))
    return lines


def _count(walk, root: int) -> int:
    """How many sessions wait behind ``root`` in its chain."""
    n, inside = 0, False
    for depth, pid, _ in walk:
        if depth == 0:
            inside = pid == root
        elif inside:
            n += 1
    return n


def _session_lines(sessions, width: int) -> tuple[tuple[str, str], list[tuple[str, str]]]:
    cols = _columns(width)
    header = " ".join(_cell(name, w) for name, w in cols) + " QUERY"
    rows = []
    for s in sessions:
        cells = _session_cells(s)
        rows.append(("", " ".join(_cell(cells[name], w) for name, w in cols) + " " + s.query))
    return ("header", header), rows


def _statement_lines(snap, database) -> tuple[tuple[str, str], list[tuple[str, str]]]:
    header = ("header", f"{'LOAD':>6} {'DATABASE':<12} {'WAIT':<10} {'QUERYID':<20} TEXT")
    rows = []
    for st in snap.statements:
        if database is not None and st.datname != database:
            continue
        text = st.text or ("(statements without a queryid: " + snap.query_ids_off + ")" if st.queryid == "other"
                           and snap.query_ids_off else "")
        rows.append(("", f"{st.load:6.2f} {_cell(st.datname, 12)} {_cell(st.wait_type, 10)} {_cell(st.queryid, 20)} "
                         f"{text}".rstrip()))
    return header, rows


def _fit(lines: list, room: int, what: str) -> list:
    """At most ``room`` lines of ``lines``, the last saying how many more there are."""
    if len(lines) <= room:
        return lines
    if room <= 0:
        return []
    return lines[:room - 1] + [("", f"  ... {len(lines) - room + 1} more {what}")]


def render(snap, view: View, width: int, height: int | None = None, interval: float = 1.0,
           clock=time.localtime) -> list[tuple[str, str]]:
    """The screen's lines (see the module's docstring). The only state it changes: ``view.offset``
    is kept within the sessions (scrolled past the end, the last rows)."""
    if width < MIN_WIDTH or (height is not None and height < MIN_HEIGHT):
        text = f"terminal too small ({width}x{height}): dbperf top needs {MIN_WIDTH}x{MIN_HEIGHT}; q quits"
        return [("error", text[:max(1, width)])]
    database = view.database
    sessions = [s for s in snap.sessions if database is None or s.datname == database]
    version = f"PostgreSQL {snap.version // 10000}.{snap.version % 10000}" if snap.version else "PostgreSQL ?"
    title = (f"dbperf top - {snap.target} - {version} - {time.strftime('%H:%M:%S', clock(snap.at))} - "
             f"every {format_duration(interval)}" + (" - PAUSED (p resumes)" if view.paused else ""))
    top = [("title", title), ("", _summary(snap, sessions, database))]
    if snap.error:
        top.append(("error", f"error: {snap.error}"))
    if snap.note:
        top.append(("error", f"note: {snap.note}"))
    keys = (f"s sort: {view.sort} | d database: {database or 'all'} | p {'resume' if view.paused else 'pause'} | "
            "q quit | up/down scroll")
    load = _load_lines(snap, database, width)
    chain = _chain_lines(snap.sessions, database)
    chain = [("header", "BLOCKING CHAINS (blocker, then who waits on it)")] + chain if chain else []
    s_header, s_rows = _session_lines(sorted_sessions(sessions, view.sort), width)
    st_header, st_rows = _statement_lines(snap, database)
    statements = [("header", "TOP STATEMENTS BY LOAD"), st_header, *st_rows] if st_rows else []
    if height is None:
        body = load + chain + [s_header, *s_rows] + statements
        lines = top + body + [("title", keys)]
    else:
        room = height - len(top) - 1
        load = _fit(load, min(len(load), max(1, room // 4)), "wait event types")
        room -= len(load)
        chain = _fit(chain, min(len(chain), max(3, room // 3)), "sessions in chains")
        room -= len(chain)
        fits = min(len(statements), 2 + STATEMENT_ROWS, room - 6)  # the sessions keep 6 lines at least
        statements = _fit(statements, fits, "statements") if fits >= 3 else []
        room -= len(statements)
        offset = max(0, min(view.offset, len(s_rows) - max(1, room - 1)))
        view.offset = offset
        shown = s_rows[offset:]
        rows = _fit(shown, room - 1, "sessions (down scrolls)") if room > 1 else []
        body = load + chain + ([s_header] + rows if room > 0 else []) + statements
        lines = (top + body)[:height - 1] + [("title", keys)]
    return [(style, printable(text)[:width]) for style, text in lines]


def printable(text: str) -> str:
    """Control characters (a query may hold any) shown as ``?``: nothing reaches the terminal as a command."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def plain(lines) -> str:
    """The frame as text (``--once``)."""
    return "".join(text.rstrip() + "\n" for _, text in lines)
