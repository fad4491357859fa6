"""``mysql_statements_*``: per-digest counters from ``performance_schema.events_statements_summary_by_digest``,
with the contract of PostgreSQL's ``pg_stat_statements_*`` (:mod:`exporter.postgres.statements`).

What is read
    One batch per scrape: every row of the digest table (without its text), the table's size
    (``performance_schema_digests_size``) and ``Performance_schema_digest_lost``. The digest text
    is read only with ``statements.query_text`` on, for the exposed digests, at most once per
    ``statements.query_text_ttl``.

Bounded cardinality
    Per schema (``schema_name``; ``""`` for statements run without a default database), the
    ``statements.limit`` digests ranked by ``statements.rank_by`` over the increase since the last
    read are exposed with labels ``{schema, digest}``; a digest that leaves the top N stays for
    ``statements.sticky`` seconds (the ranking of :func:`exporter.postgres.statements.top_and_sticky`).
    The rest of the schema is summed in ``{schema, digest="other"}``, so that for every counter the
    sum over a schema's series equals the schema's total in the digest table. ``rank_by``:
    ``total_time`` (sum_timer_wait), ``calls``, ``mean_time``, ``rows`` (rows sent and affected);
    ``io_time`` has no MySQL counterpart and ranks as ``total_time``.

A full digest table
    The table holds ``performance_schema_digests_size`` digests; once full, the server counts
    every new digest in one row whose ``digest`` is NULL (and ``Performance_schema_digest_lost``
    rises). That row is summed in ``{schema="", digest="other"}`` (the sums stay exact), and
    ``mysql_statements_digest_table_full`` is 1 with one warning per target saying what to do
    (``TRUNCATE performance_schema.events_statements_summary_by_digest``, or a larger
    ``performance_schema_digests_size`` at the next restart).

Query text
    ``DIGEST_TEXT`` is the server's normalised text: literals are replaced by ``?``, comments
    removed. It is still served only with ``statements.query_text`` on, through
    :func:`exporter.instrument.redact.redact`, cut to ``statements.query_text_length``.

Workload latency histogram (``mysql_statement_duration_seconds{schema}``)
    As PostgreSQL's ``pg_statement_duration_seconds``, from digest deltas: between two reads each
    digest's new calls are counted in the bucket of its mean time over the interval, and ``_sum``
    grows by its time; every digest counts (not only the top N), the NULL-digest row of a full
    table as one. An approximation (a digest's calls at their mean), counted since dbperf started.
    A digest whose calls went down (the table was truncated) counts its current values as new.
    (MySQL 8's ``events_statements_histogram_global`` has true per-call buckets: not read yet.)

Not done here (yet): dbperf's own statements in a pseudo row (the digest text has no comments to
mark them).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from exporter.collector import Collector, Context
from exporter.instrument.redact import redact
from exporter.metrics import Family, pairs_formatter
from exporter.postgres.sqlmark import batch, mark
from exporter.postgres.statements import Histogram, normalise_text, top_and_sticky
from exporter.target import StatementsOptions

LOG = logging.getLogger("dbperf.statements")

LABELS = ("schema", "digest")
OTHER = "other"
PS = 1e12  # performance_schema timers are in picoseconds (a divisor: v / 1e12 is the nearest double to the seconds)

# (family, column, divisor, help); the columns are read in this order after schema_name and digest
COUNTERS = (
    ("mysql_statements_calls_total", "count_star", 1, "Times statements of the digest were executed."),
    ("mysql_statements_seconds_total", "sum_timer_wait", PS, "Time spent executing statements of the digest."),
    ("mysql_statements_lock_seconds_total", "sum_lock_time", PS, "Time statements of the digest waited for table locks."),
    ("mysql_statements_errors_total", "sum_errors", 1, "Executions of the digest that raised an error."),
    ("mysql_statements_warnings_total", "sum_warnings", 1, "Warnings the digest's executions raised."),
    ("mysql_statements_rows_affected_total", "sum_rows_affected", 1, "Rows the digest's executions changed."),
    ("mysql_statements_rows_sent_total", "sum_rows_sent", 1, "Rows the digest's executions returned."),
    ("mysql_statements_rows_examined_total", "sum_rows_examined", 1,
     "Rows the digest's executions read in storage engines (far above rows sent: a missing index)."),
    ("mysql_statements_tmp_disk_tables_total", "sum_created_tmp_disk_tables", 1,
     "Internal temporary tables the digest's executions created on disk."),
    ("mysql_statements_tmp_tables_total", "sum_created_tmp_tables", 1,
     "Internal temporary tables the digest's executions created."),
    ("mysql_statements_full_joins_total", "sum_select_full_join", 1, "Joins without an index (SELECT_FULL_JOIN)."),
    ("mysql_statements_full_scans_total", "sum_select_scan", 1, "Full scans of a join's first table (SELECT_SCAN)."),
    ("mysql_statements_sort_merge_passes_total", "sum_sort_merge_passes", 1, "Sort merge passes (a sort too big for sort_buffer_size)."),
    ("mysql_statements_no_index_used_total", "sum_no_index_used", 1, "Executions that used no index for a table scan."),
)
CALLS, TIME, ROWS_AFFECTED, ROWS_SENT = 2, 3, 7, 8  # indices in a row of MAIN_SQL

MAIN_SQL = ("SELECT schema_name, digest, " + ", ".join(column for _, column, _, _ in COUNTERS)
            + " FROM performance_schema.events_statements_summary_by_digest")
SIZE_SQL = "SELECT @@GLOBAL.performance_schema_digests_size, @@GLOBAL.performance_schema"
LOST_SQL = "SHOW GLOBAL STATUS LIKE 'Performance_schema_digest_lost'"
TEXT_SQL = mark("SELECT schema_name, digest, digest_text FROM performance_schema.events_statements_summary_by_digest "
                "WHERE digest IN ({digests})")

DIGESTS = ("mysql_statements_digests", "Digests in performance_schema.events_statements_summary_by_digest now.")
SIZE = ("mysql_statements_digests_size", "Digests the table holds at most (performance_schema_digests_size).")
FULL = ("mysql_statements_digest_table_full", "1 when the digest table is full: new digests are summed in its NULL-digest "
        "row (served in schema=\"\", digest=\"other\") and no longer told apart.")
LOST = ("mysql_statements_digest_lost_total", "Digests that could not be kept because the table was full "
        "(Performance_schema_digest_lost).")
HISTOGRAM = ("mysql_statement_duration_seconds", "Statement execution time per schema, every digest's new calls "
             "counted at its mean time over the scrape interval (an approximation; counts since dbperf started).")
TEXT = ("mysql_statements_query_info", "Normalised text (literals replaced by ?) of an exposed digest, cut to "
        "statements.query_text_length (only with statements.query_text).")


def _rank(rank_by: str, row, before) -> float:
    calls = (row[CALLS] or 0) - (before[CALLS] or 0)
    if rank_by == "calls":
        return calls
    seconds = (row[TIME] or 0) - (before[TIME] or 0)
    if rank_by == "mean_time":
        return seconds / calls if calls > 0 else 0.0
    if rank_by == "rows":
        return (row[ROWS_AFFECTED] or 0) + (row[ROWS_SENT] or 0) - (before[ROWS_AFFECTED] or 0) - (before[ROWS_SENT] or 0)
    return seconds  # total_time (and io_time, which MySQL does not count per digest)


@dataclass
class DigestState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    previous: dict = field(default_factory=dict)  # (schema, digest) -> row of the last read
    members: dict = field(default_factory=dict)   # key -> monotonic time it was last in a top N
    texts: dict = field(default_factory=dict)     # key -> normalised text
    texts_at: float = float("-inf")
    chosen: set = field(default_factory=set)      # keys exposed in the last read
    histograms: dict = field(default_factory=dict)  # schema -> Histogram
    read: bool = False                            # a read happened (the first one only sets the baseline)
    full_said: bool = False


class MySQLStatementsCollector(Collector):
    """Per-digest counters: top N per schema, sticky, an ``other`` remainder; the table's fill."""

    def __init__(self, clock=time.monotonic):
        super().__init__(name="statements", default_timeout=5.0,
                         help="performance_schema statement digests per schema (top N by statements.rank_by, "
                              "sticky, plus an `other` remainder per schema so sums equal totals), opt-in digest "
                              "text, and whether the digest table is full. Needs performance_schema = ON.")
        self.families = tuple(f.name for f in self.describe())
        self.clock = clock
        self.state = DigestState()

    def applies(self, server) -> str | None:
        return None

    @staticmethod
    def describe() -> list[Family]:
        out = [Family(name, "counter", help_, LABELS) for name, _, _, help_ in COUNTERS]
        out += [Family(TEXT[0], "gauge", TEXT[1], LABELS + ("query",)), Family(DIGESTS[0], "gauge", DIGESTS[1]),
                Family(SIZE[0], "gauge", SIZE[1]), Family(FULL[0], "gauge", FULL[1]), Family(LOST[0], "counter", LOST[1]),
                Family(HISTOGRAM[0], "histogram", HISTOGRAM[1], ("schema",))]
        return out

    def collect(self, conn, ctx: Context, timeout: float = 5.0) -> list[Family]:
        opts = getattr(ctx.options, "statements", None) or StatementsOptions()
        (_, size_rows), (_, rows), (_, lost_rows) = conn.query(batch([SIZE_SQL, MAIN_SQL, LOST_SQL]), timeout)
        size, enabled = size_rows[0]
        if not int(enabled or 0):
            raise RuntimeError("performance_schema is OFF: set performance_schema = ON in the server's "
                               "configuration and restart it (the statements collector reads its digest table)")
        rows = [(schema or "", digest, *(float(v or 0) for v in values)) for schema, digest, *values in rows]
        state = self.state
        with state.lock:
            self._observe(rows, state)
            families = self._counters(rows, opts, state)
            families.append(self._histogram_family(state))
            full = any(row[1] is None for row in rows) or (size is not None and 0 < int(size) <= len(rows))
            self._say_full(ctx, state, full, size)
            if opts.query_text:
                families.append(self._texts(conn, timeout, opts, state))
            else:
                state.texts.clear()
        for (name, help_), value in ((DIGESTS, len(rows)), (SIZE, size), (FULL, 1 if full else 0)):
            families.append(Family(name, "gauge", help_, samples=[("", (), float(value if value is not None else "nan"))]))
        if lost_rows:
            families.append(Family(LOST[0], "counter", LOST[1], samples=[("", (), float(lost_rows[0][1]))]))
        return families

    def _counters(self, rows: list, opts: StatementsOptions, state: DigestState) -> list[Family]:
        keys = [row[:2] for row in rows]
        current = dict(zip(keys, rows))
        previous = state.previous
        zero = (None, None) + (0.0,) * len(COUNTERS)
        ranked: dict = {}
        for row, key in zip(rows, keys):
            before = previous.get(key)
            if before is None or before[CALLS] > row[CALLS]:
                before = zero  # new, or reset since the last read
            ranked.setdefault(row[0], []).append((_rank(opts.rank_by, row, before), key))
        chosen = top_and_sticky(ranked, state.members, self.clock(), opts.limit, opts.sticky, current,
                                lambda key: key[1] is not None)  # the NULL-digest row stays in other
        state.previous = current
        shown = [row for row, key in zip(rows, keys) if key in chosen]
        other: dict = {}
        for row, key in zip(rows, keys):
            if key not in chosen:
                sums = other.setdefault(row[0], [0.0] * len(COUNTERS))
                for i, value in enumerate(row[2:]):
                    sums[i] += value
        render = pairs_formatter(LABELS)
        pairs = [render((row[0], row[1])) for row in shown] + [render((schema, OTHER)) for schema in other]
        families = []
        for i, (name, _, divisor, help_) in enumerate(COUNTERS):
            values = [row[2 + i] / divisor for row in shown] + [sums[i] / divisor for sums in other.values()]
            family = Family(name, "counter", help_, LABELS)
            family.columns.append((pairs, values))
            families.append(family)
        state.chosen = chosen
        return families

    @staticmethod
    def _observe(rows: list, state: DigestState) -> None:
        """Count each digest's new calls since the last read at their mean time (see the module)."""
        previous, histograms, first = state.previous, state.histograms, not state.read
        state.read = True
        for row in rows:
            histogram = histograms.get(row[0])
            if histogram is None:
                histogram = histograms[row[0]] = Histogram()
            if first:
                continue
            calls, ps = row[CALLS], row[TIME]
            before = previous.get(row[:2])
            if before is not None and before[CALLS] <= calls and before[TIME] <= ps:
                calls, ps = calls - before[CALLS], ps - before[TIME]
            calls = int(round(calls))
            if calls > 0:
                seconds = ps / PS
                histogram.observe(seconds / calls, calls, seconds)

    @staticmethod
    def _histogram_family(state: DigestState) -> Family:
        family = Family(HISTOGRAM[0], "histogram", HISTOGRAM[1], ("schema",))
        for schema in sorted(state.histograms):
            histogram = state.histograms[schema]
            family.add_histogram((schema,), histogram.cumulative(), histogram.total)
        return family

    def _say_full(self, ctx: Context, state: DigestState, full: bool, size) -> None:
        if not full:
            state.full_said = False
        elif not state.full_said:
            state.full_said = True
            LOG.warning("target=%s statements: the digest table is full (performance_schema_digests_size=%s): new "
                        "statements are summed in its NULL-digest row (served as schema=\"\", digest=\"other\"); "
                        "empty it with TRUNCATE performance_schema.events_statements_summary_by_digest, or raise "
                        "performance_schema_digests_size (at the next restart)", ctx.target, size,
                        extra={"target": ctx.target, "collector": self.name})

    def _texts(self, conn, timeout: float, opts: StatementsOptions, state: DigestState) -> Family:
        wanted = set(state.chosen)
        now = self.clock()
        stale = now - state.texts_at >= opts.query_text_ttl
        fetch = wanted if stale else {key for key in wanted if key not in state.texts}
        digests = sorted({digest for _, digest in fetch if digest and digest.isalnum()})
        if digests:
            (_, rows), = conn.query(TEXT_SQL.replace("{digests}", ", ".join(f"'{d}'" for d in digests)), timeout)
            if stale:
                state.texts.clear()
                state.texts_at = now
            for schema, digest, text in rows:
                if (schema or "", digest) in fetch and text is not None:
                    state.texts[(schema or "", digest)] = normalise_text(redact(text), opts.query_text_length)
        for key in [k for k in state.texts if k not in wanted]:
            del state.texts[key]
        family = Family(TEXT[0], "gauge", TEXT[1], LABELS + ("query",))
        for (schema, digest), text in sorted(state.texts.items()):
            family.add((schema, digest, text), 1)
        return family
