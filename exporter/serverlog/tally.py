"""Log entries -> bounded counters, histograms and event rings (the ``pg_log_*`` metrics).

Messages are recognised by their English text (``lc_messages = 'C'`` or ``en_*``, the default of
most servers) and, where PostgreSQL gives one, by SQLSTATE. Every label comes from a bounded set:
databases, users, tables and client networks are capped (:class:`Cap`: the first ``limit``
distinct values keep their own label, the rest are summed in ``other``, so sums stay true and a
password-guessing attack with a million user names makes one more series, not a million);
severities, SQLSTATE classes, methods, reasons and DDL commands come from fixed lists.

Events keep what an operator reads (time, database, user, client, message); statements are
normalised (literals replaced by ``?``) and secrets redacted unless ``redact`` is off (secrets are
redacted even then), and error details (which may hold row values) are kept only with redact off.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections import deque

from exporter.instrument.fingerprint import shown_text
from exporter.instrument.redact import redact as redact_secret_statement

EVENT_KINDS = ("access", "error", "slow", "ddl", "lock")
OTHER = "other"

# the short list of SQLSTATEs counted by code in pg_log_errors_total (server_log.errors overrides)
DEFAULT_ERRORS = {
    "40P01": "deadlock_detected", "40001": "serialization_failure", "23505": "unique_violation",
    "57014": "query_canceled", "55P03": "lock_not_available", "25P03": "idle_in_transaction_session_timeout",
    "53200": "out_of_memory", "53100": "disk_full", "53300": "too_many_connections",
}

SESSION_BUCKETS = (0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0)
LOCK_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
TEMP_BUCKETS = (65536.0, 1048576.0, 8388608.0, 67108864.0, 268435456.0, 1073741824.0, 4294967296.0, 17179869184.0)
STATEMENT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

CHECKPOINT_REASONS = ("shutdown", "end-of-recovery", "wal", "xlog", "time", "immediate", "fast", "force")
AUTH_REASONS = (
    ("password authentication failed", "password"),
    ("no pg_hba.conf entry", "no_hba_entry"),
    ("pg_hba.conf rejects", "rejected"),
    ("does not exist", "unknown_role"),
    ("peer authentication failed", "peer"),
    ("ident authentication failed", "ident"),
    ("certificate", "cert"),
    ("ldap", "ldap"),
    ("radius", "radius"),
    ("gssapi", "gss"),
    ("is not permitted to log in", "login_not_permitted"),
)
METHODS = frozenset({"trust", "reject", "md5", "password", "scram-sha-256", "peer", "ident", "cert", "ldap",
                     "radius", "gss", "sspi", "pam", "bsd", "oauth"})
DDL_VERBS = frozenset({"CREATE", "ALTER", "DROP", "TRUNCATE", "COMMENT", "GRANT", "REVOKE", "SECURITY", "REINDEX"})
DDL_OBJECTS = frozenset({
    "TABLE", "INDEX", "VIEW", "MATERIALIZED", "SEQUENCE", "FUNCTION", "PROCEDURE", "ROUTINE", "SCHEMA", "DATABASE",
    "ROLE", "USER", "GROUP", "EXTENSION", "TYPE", "TRIGGER", "POLICY", "PUBLICATION", "SUBSCRIPTION", "DOMAIN",
    "RULE", "TABLESPACE", "SERVER", "FOREIGN", "AGGREGATE", "OPERATOR", "COLLATION", "CONVERSION", "STATISTICS",
    "EVENT", "LANGUAGE", "CAST", "ACCESS", "TEXT", "DEFAULT", "SYSTEM", "LARGE",
})
_DDL_MODIFIERS = frozenset({"OR", "REPLACE", "UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED", "GLOBAL", "LOCAL",
                            "RECURSIVE", "TRUSTED", "PROCEDURAL", "CONSTRAINT", "IF"})

_AUTHORIZED = re.compile(r"(?:replication )?connection authorized: user=(\S*)(?: database=(\S*))?")
_AUTHENTICATED = re.compile(r'connection authenticated: (?:identity=".*?" )?method=(\S+)')
_DISCONNECTION = re.compile(r"disconnection: session time: (\d+):(\d+):(\d+(?:\.\d+)?) user=(\S*) database=(\S*)")
_FOR_USER = re.compile(r'for user "([^"]*)"')
_LOCK_WAIT = re.compile(r"process \d+ still waiting for \S+ on .* after ([\d.]+) ms")
_LOCK_ACQUIRED = re.compile(r"process \d+ acquired \S+ on .* after ([\d.]+) ms")
_TEMP_FILE = re.compile(r'temporary file: path ".*", size (\d+)')
_CHECKPOINT_START = re.compile(r"(?:checkpoint|restartpoint) starting:(.*)")
_CHECKPOINT_DONE = re.compile(r"(?:checkpoint|restartpoint) complete: wrote (\d+) buffers.*?"
                              r"write=([\d.]+) s, sync=([\d.]+) s, total=([\d.]+) s", re.S)
_AUTOVACUUM = re.compile(r'automatic (?:aggressive )?(vacuum|analyze)(?: to prevent wraparound)? of table "([^"]*)"')
_REMOVED = re.compile(r"tuples: (\d+) removed")
_ELAPSED = re.compile(r"elapsed: ([\d.]+) s")
_DURATION = re.compile(r"duration: ([\d.]+) ms(?:  (statement|execute|parse|bind|plan|fastpath)([^:\n]*):\s?(.*))?\Z",
                       re.S)
_STATEMENT = re.compile(r"statement: (.*)\Z", re.S)
_SQLSTATE = re.compile(r"[0-9A-Z]{5}\Z")
_WORDS = re.compile(r"[A-Za-z_]+")
_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*\n?|/\*.*?\*/)*", re.S)
_DEADLOCK_PROCESS = re.compile(r"^Process (\d+): (.*)$", re.M)
_PLAN_QUERY = re.compile(r"\AQuery Text: (.*?)(?:\n(?=\S)|\Z)", re.S)
_PLAN_LITERALS = re.compile(r"'(?:[^']|'')*'|(?<![\w.$])-?\d+(?:\.\d+)?(?![\w.])")
_PLAN_CONDITION = re.compile(r"(Filter|Cond|Recheck Cond|Index Cond|Hash Cond|Merge Cond|Join Filter|One-Time Filter"
                             r"|Order By|Sort Key|Group Key|Output): ")


class Cap:
    """The first ``limit`` distinct values keep their label; the rest map to ``other``."""

    def __init__(self, limit: int):
        self.limit, self.seen = limit, set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) < self.limit:
            self.seen.add(value)
            return value
        return OTHER


class Histogram:
    """Bucket counts, sum and count per label set."""

    def __init__(self, bounds: tuple):
        self.bounds = bounds
        self.series: dict[tuple, list] = {}

    def observe(self, labels: tuple, value: float) -> None:
        entry = self.series.get(labels)
        if entry is None:
            entry = self.series[labels] = [[0] * len(self.bounds), 0.0, 0]
        counts = entry[0]
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                counts[i] += 1
                break
        entry[1] += value
        entry[2] += 1

    def buckets(self, labels: tuple) -> tuple[list, float]:
        counts, total, count = self.series[labels]
        out, running = [], 0
        for bound, n in zip(self.bounds, counts):
            running += n
            out.append((bound, running))
        out.append((float("inf"), count))
        return out, total


def _inc(series: dict, labels: tuple, value: float = 1.0) -> None:
    series[labels] = series.get(labels, 0.0) + value


def ddl_command(statement: str) -> str:
    """``CREATE TABLE``, ``DROP INDEX``, ``ALTER other`` ... (a bounded set), "" when not DDL."""
    text = _LEADING_COMMENTS.sub("", statement[:400], count=1)
    words = [w.upper() for w in _WORDS.findall(text[:200])[:8]]
    if not words or words[0] not in DDL_VERBS:
        return ""
    verb = words[0]
    if verb in ("GRANT", "REVOKE", "TRUNCATE", "COMMENT", "SECURITY", "REINDEX"):
        return verb
    for word in words[1:]:
        if word in _DDL_MODIFIERS:
            continue
        return f"{verb} {word}" if word in DDL_OBJECTS else f"{verb} {OTHER}"
    return f"{verb} {OTHER}"


_QUOTED = re.compile(r'"[^"]*"')


def redact_plan(plan: str, literals: bool = True) -> str:
    """An auto_explain plan with the literals of its conditions replaced by ``?`` and its query
    text normalised; ``literals=False``: only a query text that carries a secret is redacted."""
    out = []
    for line in plan.split("\n"):
        if line.startswith("Query Text: "):
            text = line[len("Query Text: "):]
            line = "Query Text: " + (shown_text(text) if literals else redact_secret_statement(text))
        elif literals:
            m = _PLAN_CONDITION.search(line)
            if m:
                line = line[:m.end()] + _PLAN_LITERALS.sub("?", line[m.end():])
        out.append(line)
    return "\n".join(out)


class Tally:
    """Everything the log said so far, for one target; :meth:`add` takes parsed entries (the
    reader's thread), :meth:`snapshot` copies the counters (a scrape)."""

    def __init__(self, options):
        self.options = options
        self.errors = dict(options.errors)
        self.redact = options.redact
        self.users = Cap(options.max_users)
        self.databases = Cap(options.max_databases)
        self.tables = Cap(options.max_tables)
        self.networks = Cap(options.max_networks)
        self.failed_users = Cap(options.max_users)      # users and databases of refused connections
        self.failed_databases = Cap(options.max_databases)
        self.lock = threading.Lock()
        self.counters: dict[str, dict] = {name: {} for name in COUNTERS}
        self.histograms = {"session": Histogram(SESSION_BUCKETS), "lock": Histogram(LOCK_BUCKETS),
                           "temp": Histogram(TEMP_BUCKETS), "statement": Histogram(STATEMENT_BUCKETS)}
        self.events = {kind: deque(maxlen=options.events_size) for kind in EVENT_KINDS}
        self._methods: dict[str, str] = {}  # pid -> method of its "connection authenticated" line
        self._plans: dict[str, tuple] = {}  # pid -> (plan event, reads since) waiting for its statement line
        self._reads = 0

    # -- the reader's side ---------------------------------------------------------------
    def add(self, entries) -> None:
        with self.lock:
            for entry in entries:
                self._one(entry)
            self._reads += 1
            for pid, (event, read) in list(self._plans.items()):  # a plan whose statement line never came
                if read < self._reads - 1:
                    del self._plans[pid]
                    self.events["slow"].append(event)

    def _one(self, e) -> None:
        c = self.counters
        severity = e.severity
        state = e.sqlstate if _SQLSTATE.match(e.sqlstate) else ""
        _inc(c["messages"], (severity, state[:2] if state else "unknown"))
        condition = self.errors.get(state) if state else None
        if condition and severity in ("ERROR", "FATAL", "PANIC"):
            _inc(c["errors"], (state, condition))
        msg = e.message
        if severity == "FATAL" and state in ("28P01", "28000"):
            # the user and database of a refused connection are whatever the client sent: capped apart
            # from those of real sessions, so a password-guessing run never takes their labels
            self._auth_failure(e, msg, self.failed_databases(e.database) if e.database else "")
            return
        db = self.databases(e.database) if e.database else ""
        if severity == "LOG":
            self._log_message(e, msg, db)
        if severity in ("ERROR", "FATAL", "PANIC"):
            if state == "40P01" or msg.startswith("deadlock detected"):
                _inc(c["deadlocks"], (db,))
                self._event("lock", e, message=msg, statements=self._deadlock_statements(e.detail),
                            query_ids=[e.query_id] if e.query_id and e.query_id != "0" else [])
            else:
                self._event("error", e, message=msg, statement=e.statement,
                            **({"detail": e.detail} if e.detail and not self.redact else {}))

    def _log_message(self, e, msg: str, db: str) -> None:
        c = self.counters
        first = msg[:12]
        if first.startswith("duration: "):
            self._duration(e, msg, db)
        elif first.startswith("statement: "):
            m = _STATEMENT.match(msg)
            command = ddl_command(m.group(1)) if m else ""
            if command:
                _inc(c["ddl"], (db, self.users(e.user), command))
                self._event("ddl", e, command=command, statement=m.group(1))
        elif first.startswith(("connection a", "replication ")):
            m = _AUTHORIZED.match(msg)
            if m:
                # 14+ logs "connection authenticated" for every method but trust; a log that shows 14+
                # (a query_id field: jsonlog, csvlog of 14+) without one for this process means trust
                method = self._methods.pop(e.pid, None) or ("trust" if e.query_id else "unknown")
                user = e.user or m.group(1)
                database = e.database or m.group(2) or ""
                _inc(c["connections"], (self.databases(database) if database else "", self.users(user), method))
                self._event("access", e, message="connection authorized", method=method, user=user, database=database)
                return
            m = _AUTHENTICATED.match(msg)
            if m:
                method = m.group(1) if m.group(1) in METHODS else OTHER
                if len(self._methods) > 10_000:  # sessions whose "authorized" line never came
                    self._methods.clear()
                self._methods[e.pid] = method
        elif first.startswith("disconnectio"):
            m = _DISCONNECTION.match(msg)
            if m:
                hours, minutes, seconds = m.group(1, 2, 3)
                duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
                database = self.databases(e.database or m.group(5))
                _inc(c["disconnections"], (database, self.users(e.user or m.group(4))))
                self.histograms["session"].observe((database,), duration)
                self._event("access", e, message="disconnection", session_seconds=duration)
        elif first.startswith("process "):
            m = _LOCK_WAIT.match(msg)
            if m:
                _inc(c["lock_waits"], (db,))
                self._event("lock", e, message=msg, statement=e.statement)
                return
            m = _LOCK_ACQUIRED.match(msg)
            if m:
                self.histograms["lock"].observe((db,), float(m.group(1)) / 1000.0)
        elif first.startswith("temporary fi"):
            m = _TEMP_FILE.match(msg)
            if m:
                _inc(c["temp_files"], (db,))
                self.histograms["temp"].observe((db,), float(m.group(1)))
        elif first.startswith(("checkpoint", "restartpoint")):
            m = _CHECKPOINT_START.match(msg)
            if m:
                flags = m.group(1).split()
                reason = next((r for r in CHECKPOINT_REASONS if r in flags), OTHER)
                _inc(c["checkpoints"], ("wal" if reason == "xlog" else reason,))
                return
            m = _CHECKPOINT_DONE.match(msg)
            if m:
                buffers, write, sync, total = m.groups()
                _inc(c["checkpoints_done"], ())
                _inc(c["checkpoint_buffers"], (), float(buffers))
                _inc(c["checkpoint_write"], (), float(write))
                _inc(c["checkpoint_sync"], (), float(sync))
                _inc(c["checkpoint_total"], (), float(total))
        elif first.startswith("automatic "):
            m = _AUTOVACUUM.match(msg)
            if m:
                self._autovacuum(e, msg, m.group(1), m.group(2))

    def _duration(self, e, msg: str, db: str) -> None:
        m = _DURATION.match(msg)
        if m is None:
            return
        seconds = float(m.group(1)) / 1000.0
        kind, text = m.group(2), m.group(4) or ""
        if kind == "plan":  # auto_explain: the statement's line (log_min_duration_statement) follows
            pending = self._plans.pop(e.pid, None)
            if pending is not None:
                self.events["slow"].append(pending[0])
            q = _PLAN_QUERY.match(text)
            event = self._make_event(e, duration_seconds=seconds, statement=q.group(1) if q else "", plan=text)
            if len(self._plans) > 1000:
                self._plans.clear()
            self._plans[e.pid] = (event, self._reads)
            return
        if kind in ("parse", "bind"):
            return  # a step of an extended-protocol statement; its execute line counts it
        self.histograms["statement"].observe((db, self.users(e.user)), seconds)
        if kind is None:
            return  # log_duration: no text
        pending = self._plans.pop(e.pid, None)
        event = self._make_event(e, duration_seconds=seconds, statement=text)
        if e.query_id and e.query_id != "0":
            event["query_id"] = e.query_id
        if pending is not None:
            event["plan"] = pending[0].get("plan", "")
        self.events["slow"].append(event)

    def _auth_failure(self, e, msg: str, db: str) -> None:
        low = msg.lower()
        reason = next((r for phrase, r in AUTH_REASONS if phrase in low), OTHER)
        user = e.user
        if not user:
            m = _FOR_USER.search(msg)
            user = m.group(1) if m else ""
        _inc(self.counters["auth_failures"], (db, self.failed_users(user), reason))
        prefix = self.options.client_network_prefix
        if prefix is not None:
            _inc(self.counters["auth_networks"], (self.networks(client_network(e.client, prefix)),))
        self._event("access", e, message=msg, reason=reason, user=user)

    def _autovacuum(self, e, msg: str, operation: str, name: str) -> None:
        database = e.database
        if database and name.startswith(database + "."):
            rest = name[len(database) + 1:]
        else:
            database, _, rest = name.partition(".")
        schema, _, relname = rest.partition(".")
        table = self.tables((self.databases(database), schema, relname))
        labels = table if table != OTHER else (self.databases(database), OTHER, OTHER)
        _inc(self.counters["autovacuum"], (*labels, operation))
        elapsed = _ELAPSED.search(msg)
        if elapsed:
            _inc(self.counters["autovacuum_seconds"], (*labels, operation), float(elapsed.group(1)))
        removed = _REMOVED.search(msg)
        if removed:
            _inc(self.counters["autovacuum_removed"], labels, float(removed.group(1)))

    def _deadlock_statements(self, detail: str) -> list:
        return [{"pid": pid, "statement": text} for pid, text in _DEADLOCK_PROCESS.findall(detail)[:4]]

    def _text(self, statement: str) -> str:
        return shown_text(statement) if self.redact else redact_secret_statement(statement)

    def _shown(self, event: dict) -> dict:
        """The event as served: statements and plans redacted (done here, for the few events read,
        not for every entry the reader counts)."""
        out = dict(event)
        if self.redact and out.get("message") and out.get("message") not in ("connection authorized", "disconnection"):
            # the server quotes the input it refused ('syntax error at or near "hunter2"', 'invalid
            # input syntax for type integer: "4111..."'): the quoted parts go
            out["message"] = _QUOTED.sub('"\u2026"', out["message"])
        if out.get("statement"):
            out["statement"] = self._text(out["statement"])
        if out.get("plan"):
            out["plan"] = redact_plan(out["plan"], self.redact)
        if "statements" in out:
            out["statements"] = [{**st, "statement": self._text(st["statement"])} for st in out["statements"]]
        return out

    def _make_event(self, e, **extra) -> dict:
        event = {"time": e.time, "database": e.database, "user": e.user, "client": e.client, "pid": e.pid,
                 "application": e.application, "severity": e.severity}
        if e.sqlstate:
            event["sqlstate"] = e.sqlstate
        event.update(extra)
        return event

    def _event(self, kind: str, e, **extra) -> None:
        self.events[kind].append(self._make_event(e, **extra))

    # -- the scrape's side ---------------------------------------------------------------
    def snapshot(self) -> tuple[dict, dict]:
        with self.lock:
            counters = {name: dict(series) for name, series in self.counters.items()}
            histograms = {name: {labels: h.buckets(labels) for labels in h.series}
                          for name, h in self.histograms.items()}
        return counters, histograms

    def recent(self, kind: str | None, limit: int) -> list[dict]:
        with self.lock:
            if kind is not None:
                events = list(self.events[kind])
            else:
                events = sorted((ev for ring in self.events.values() for ev in ring), key=lambda ev: ev["time"])
        return [self._shown(event) for event in events[-limit:]]


def client_network(client: str, prefix: int) -> str:
    """``10.1.2.0/24`` for ``10.1.2.3`` and prefix 24 (IPv6: at most /64 of the same prefix); ``local``
    for a Unix socket; ``unknown`` when there is no address."""
    if not client:
        return "unknown"
    if client == "[local]":
        return "local"
    try:
        address = ipaddress.ip_address(client.strip("[]"))
    except ValueError:
        return "unknown"  # a host name (log_hostname)
    bits = min(prefix, 32) if address.version == 4 else min(prefix * 2 if prefix <= 32 else prefix, 128)
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


# counter name in Tally.counters -> (family, labels, help)
COUNTERS = {
    "connections": ("pg_log_connections_total", ("datname", "user", "method"),
                    "Connections authorised, from the log's \"connection authorized\" lines (log_connections); method "
                    "from the \"connection authenticated\" line before it (PostgreSQL 14+; none there: trust; unknown "
                    "on 13 and in a stderr log)."),
    "disconnections": ("pg_log_disconnections_total", ("datname", "user"),
                       "Sessions ended, from the log's \"disconnection\" lines (log_disconnections)."),
    "auth_failures": ("pg_log_auth_failures_total", ("datname", "user", "reason"),
                      "Connections refused by authentication (FATAL 28P01/28000) by reason; users past "
                      "server_log.max_users are summed in user=\"other\"."),
    "auth_networks": ("pg_log_auth_failures_by_network_total", ("network",),
                      "Authentication failures by client network (server_log.client_network_prefix)."),
    "messages": ("pg_log_messages_total", ("severity", "sqlstate_class"),
                 "Log entries by severity and SQLSTATE class (the code's first two characters; unknown when the log "
                 "gives none)."),
    "errors": ("pg_log_errors_total", ("sqlstate", "condition"),
               "Errors (ERROR, FATAL, PANIC) of the SQLSTATEs of server_log.errors, by code and condition name."),
    "lock_waits": ("pg_log_lock_waits_total", ("datname",),
                   "Lock waits longer than deadlock_timeout (log_lock_waits: \"still waiting for\" lines)."),
    "deadlocks": ("pg_log_deadlocks_total", ("datname",), "Deadlocks detected (ERROR 40P01)."),
    "temp_files": ("pg_log_temp_files_total", ("datname",),
                   "Temporary files written, from log_temp_files lines."),
    "checkpoints": ("pg_log_checkpoints_total", ("reason",),
                    "Checkpoints (and restartpoints) started, by their first reason (log_checkpoints)."),
    "checkpoints_done": ("pg_log_checkpoints_completed_total", (),
                         "Checkpoints (and restartpoints) completed (log_checkpoints \"complete\" lines)."),
    "checkpoint_write": ("pg_log_checkpoint_write_seconds_total", (), "Seconds checkpoints spent writing buffers."),
    "checkpoint_sync": ("pg_log_checkpoint_sync_seconds_total", (), "Seconds checkpoints spent syncing files."),
    "checkpoint_total": ("pg_log_checkpoint_seconds_total", (), "Seconds checkpoints took in all."),
    "checkpoint_buffers": ("pg_log_checkpoint_buffers_written_total", (), "Buffers checkpoints wrote."),
    "autovacuum": ("pg_log_autovacuum_total", ("datname", "schemaname", "relname", "operation"),
                   "Autovacuum and autoanalyze runs logged (log_autovacuum_min_duration), per table; tables past "
                   "server_log.max_tables are summed in schemaname=relname=\"other\"."),
    "autovacuum_seconds": ("pg_log_autovacuum_seconds_total", ("datname", "schemaname", "relname", "operation"),
                           "Seconds the logged autovacuum and autoanalyze runs took (elapsed)."),
    "autovacuum_removed": ("pg_log_autovacuum_tuples_removed_total", ("datname", "schemaname", "relname"),
                           "Dead tuples the logged autovacuum runs removed."),
    "ddl": ("pg_log_ddl_total", ("datname", "user", "command"),
            "Schema changes logged (log_statement = ddl) by command (CREATE TABLE, DROP INDEX, GRANT ...)."),
}
HISTOGRAMS = {
    "session": ("pg_log_session_duration_seconds", ("datname",), "Session durations from disconnection lines."),
    "lock": ("pg_log_lock_wait_seconds", ("datname",),
             "Lock wait time of waits that ended with the lock acquired (log_lock_waits \"acquired\" lines)."),
    "temp": ("pg_log_temp_file_bytes", ("datname",), "Sizes of the temporary files logged."),
    "statement": ("pg_log_statement_duration_seconds", ("datname", "user"),
                  "Durations of the statements logged by log_min_duration_statement (or log_duration)."),
}
