"""``pipeline_*``: pipeline runs read from the target's run sources (``pipelines:`` in the config).

Counters and the duration histogram are totals over the finished runs stored in the source, so a
restarted dbperf shows the same values (no loss, no false jump). To keep each scrape cheap as
history grows they are kept incrementally, per database and source, in the target's own collector
object (made per target by ``exporter.registry.collectors_for``; a new exporter starts afresh):

- ``closed``: aggregates of the runs that finished before ``closed_until``, a watermark that trails
  the database clock by ``late_window`` (``now() - late_window``, never moving backwards);
- each scrape reads, in one round trip and one snapshot (``now()`` is the same for all of it), the
  runs that finished in ``[closed_until, new watermark)`` (folded into ``closed``) and those finished
  after the new watermark (the open window, re-aggregated every scrape, so runs that finish out
  of order, commit late or are updated within the window are counted as the table says);
- the first scrape (start or restart) computes ``closed`` over the whole history.

Work per scrape is bounded by the runs that finished within ``late_window`` plus one scrape
interval, read through an index on the finish time. A run that becomes visible with a finish
time already older than the watermark (a late write of more than ``late_window``) is counted at
the next restart of dbperf; see docs/pipelines.md.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from exporter.collector import DATABASE, Collector, Context
from exporter.metrics import Family
from exporter.pipelines.schema import FINISHED
from exporter.pipelines.sources import Resolved, Source, SourceError, catalog_sql, in_list, literal, resolve
from exporter.postgres.sqlmark import batch, mark

BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
LABELS = ("source", "pipeline")


@dataclass
class Agg:
    """Aggregates of the finished runs of one (pipeline, status)."""

    runs: int = 0
    observed: int = 0          # runs with a duration (started_at known)
    duration_ms: int = 0       # sums are exact (integers, Decimals): a recompute gives the same bits
    buckets: list = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # per bucket, not cumulative
    rows: Decimal = Decimal(0)
    errors: Decimal = Decimal(0)
    last_at: float | None = None       # unix time of the latest finish
    last_duration: float | None = None

    @classmethod
    def from_row(cls, row) -> "Agg":
        """``(bucket index or None, runs, observed, duration sum in ms, rows, errors, last finish, its duration)``"""
        bucket, runs, observed, dsum, rows, errors, last_at, last_duration = row
        agg = cls(int(runs), int(observed), int(dsum or 0), rows=Decimal(rows or 0), errors=Decimal(errors or 0),
                  last_at=last_at, last_duration=last_duration)
        if bucket is not None:
            agg.buckets[bucket] = int(observed)
        return agg

    def plus(self, other: "Agg") -> "Agg":
        later = other if (other.last_at or float("-inf")) > (self.last_at or float("-inf")) else self
        return Agg(self.runs + other.runs, self.observed + other.observed, self.duration_ms + other.duration_ms,
                   [a + b for a, b in zip(self.buckets, other.buckets)], self.rows + other.rows,
                   self.errors + other.errors, later.last_at, later.last_duration)

    def cumulative(self) -> list:
        out, total = [], 0
        for bound, count in zip(BUCKETS + (float("inf"),), self.buckets):
            total += count
            out.append((bound, total))
        return out


@dataclass
class SourceState:
    closed_until: datetime | None = None
    closed: dict = field(default_factory=dict)  # (pipeline, status) -> Agg


def _merge(into: dict, rows) -> dict:
    out = dict(into)
    for row in rows:
        key = (row[0], row[1])
        agg = Agg.from_row(row[2:])
        out[key] = out[key].plus(agg) if key in out else agg
    return out


# index of the smallest bound >= d (Prometheus buckets are inclusive): len(BUCKETS) minus the number
# of bounds >= d, which width_bucket counts on the negated, ascending bounds
_NEGATED = "ARRAY[" + ", ".join(f"{-b}" for b in reversed(BUCKETS)) + "]::float8[]"


def aggregate_sql(resolved: Resolved, where: str) -> str:
    """Finished runs matching ``where``, grouped by pipeline, status and duration bucket (grouping
    by bucket is much cheaper than one filtered count per bucket)."""
    finished = (f"{resolved.status_col} IN ({in_list(resolved.finished_values)}) "
                f"AND {resolved.finished_col} IS NOT NULL AND {where}")
    rows = resolved.rows_sql.replace("{where}", finished)
    return (f"SELECT pipeline, status, {len(BUCKETS)} - width_bucket(-d, {_NEGATED}), count(*), count(d), sum(round(d * 1000)::bigint), "
            "sum(rows_processed), sum(errors), max(f), (max(ARRAY[f, d]))[2] "  # the latest finish, its duration
            "FROM (SELECT x.*, date_part('epoch', x.finished_at) AS f, CASE WHEN x.started_at IS NULL THEN NULL "
            f"ELSE greatest(date_part('epoch', x.finished_at - x.started_at), 0) END AS d FROM ({rows}) x) y "
            f"WHERE status IN ({in_list(FINISHED)}) AND pipeline IS NOT NULL GROUP BY 1, 2, 3")


def active_sql(resolved: Resolved) -> str:
    rows = resolved.rows_sql.replace("{where}", f"{resolved.status_col} IN ({in_list(resolved.active_values)})")
    return ("SELECT pipeline, status, count(*), date_part('epoch', now() - min(started_at)) "
            f"FROM ({rows}) x WHERE status IN ('running', 'queued') AND pipeline IS NOT NULL GROUP BY 1, 2")


def scrape_sql(resolved: Resolved, state: SourceState, late_window: float) -> str:
    """Four statements, one snapshot: the new watermark, the slice to fold in, the open window,
    the runs in flight."""
    trailing = f"now() - interval '{late_window:.6f} seconds'"
    fin = resolved.finished_col
    if state.closed_until is None:
        boundary = trailing
        slice_where = f"{fin} < {boundary}"
    else:
        prev = f"{literal(state.closed_until.isoformat())}::timestamptz"
        boundary = f"greatest({trailing}, {prev})"
        slice_where = f"{fin} >= {prev} AND {fin} < {boundary}"
    return batch([f"SELECT {boundary}", aggregate_sql(resolved, slice_where),
                  aggregate_sql(resolved, f"{fin} >= {boundary}"), active_sql(resolved)])


class PipelinesCollector(Collector):
    def __init__(self):
        super().__init__(name="pipelines", scope=DATABASE, enabled_by_default=False, default_ttl=15.0,
                         default_timeout=10.0,
                         help="Pipeline runs from the target's run sources (`pipelines:`: a runs table, "
                              "Airflow's metadata DB); on when sources are configured. Counters are totals "
                              "over the stored history, so they survive restarts.",
                         families=tuple(f.name for f in self.describe()))
        self._lock = threading.Lock()
        self.states: dict[tuple[str, str], SourceState] = {}  # (datname, source name) -> its totals

    def describe(self) -> list[Family]:
        status = LABELS + ("status",)
        return [
            Family("pipeline_runs_total", "counter", "Finished runs stored in the source, by final status "
                   "(success, failed).", status),
            Family("pipeline_run_duration_seconds", "histogram", "Duration (finish - start) of the finished runs "
                   "stored in the source.", LABELS),
            Family("pipeline_rows_processed_total", "counter", "Rows processed by the finished runs (sources that "
                   "store it).", LABELS),
            Family("pipeline_errors_total", "counter", "Errors counted by the finished runs (sources that store them; "
                   "Airflow: failed task instances).", LABELS),
            Family("pipeline_last_run_timestamp_seconds", "gauge", "Unix time the latest finished run finished.",
                   LABELS),
            Family("pipeline_last_success_timestamp_seconds", "gauge", "Unix time the latest successful run "
                   "finished.", LABELS),
            Family("pipeline_last_run_duration_seconds", "gauge", "Duration of the latest finished run.", LABELS),
            Family("pipeline_last_run_status", "gauge", "1 for the final status of the latest finished run, 0 for "
                   "the other.", status),
            Family("pipeline_runs_running", "gauge", "Runs running now.", LABELS),
            Family("pipeline_runs_queued", "gauge", "Runs queued now.", LABELS),
            Family("pipeline_oldest_running_run_age_seconds", "gauge", "Age of the oldest running run (database "
                   "clock; 0 when none runs): stuck-run detection.", LABELS),
            Family("pipeline_expected_interval_seconds", "gauge", "Configured time between runs "
                   "(expected_intervals), for telling a stale pipeline from a slow one.", LABELS),
            Family("pipeline_source_info", "gauge", "A configured run source; always 1.",
                   ("source", "type", "version", "datname")),
        ]

    def _state(self, datname: str, name: str) -> SourceState:
        with self._lock:
            return self.states.setdefault((datname, name), SourceState())

    def collect(self, conn, ctx: Context, timeout: float = 10.0) -> list[Family]:
        config = getattr(ctx.options, "pipelines", None)
        if config is None:
            return []
        own = ctx.server.dbname or ctx.datname
        families = self.describe()
        here = [s for s in config.sources if (s.database or own) == ctx.datname]
        for source in here:
            self._collect_source(conn, ctx, source, config.late_window, timeout, families)
        if ctx.datname == own:
            with self._lock:  # a database dropped (or renamed) since: its totals go with it
                for key in [k for k in self.states if k[0] not in ctx.server.databases and k[0] != own]:
                    del self.states[key]
            self._check_coverage(ctx, config, own)
        return [f for f in families if f.samples]

    @staticmethod
    def _check_coverage(ctx: Context, config, own: str) -> None:
        target = ctx.options
        for source in config.sources:
            db = source.database or own
            if db == own:
                continue
            if db not in ctx.server.databases:
                raise SourceError(f"pipelines source {source.name!r}: database {db} does not exist or dbperf "
                                  "may not connect to it")
            if not target.databases.discover or not target.databases.wanted(db):
                raise SourceError(f"pipelines source {source.name!r}: database {db} is not scraped by this "
                                  "target (databases.discover is off or include/exclude leaves it out)")

    def _collect_source(self, conn, ctx: Context, source: Source, late_window: float, timeout: float,
                        families: list[Family]) -> None:
        (_, found), = conn.query(mark(catalog_sql(source)), timeout)
        resolved = resolve(source, dict(found), ctx.datname)
        state = self._state(ctx.datname, source.name)
        results = conn.query(scrape_sql(resolved, state, late_window), timeout)
        (_, ((boundary,),)), (_, sliced), (_, open_rows), (_, active) = results
        closed = _merge(state.closed, sliced)
        state.closed, state.closed_until = closed, boundary  # only after the whole batch succeeded
        totals = _merge(closed, open_rows)
        self._emit(source, resolved, ctx.datname, totals, active, families)

    @staticmethod
    def _emit(source: Source, resolved: Resolved, datname: str, totals: dict, active, families) -> None:
        (runs, durations, rows, errors, last_run, last_success, last_duration, last_status, running, queued,
         oldest, expected, info) = families
        info.add((source.name, source.type, resolved.version, datname), 1)
        in_flight = {(p, s): (int(n), age) for p, s, n, age in active}
        pipelines = sorted({p for p, _ in totals} | {p for p, _ in in_flight} | set(source.expected_intervals))
        for pipeline in pipelines:
            labels = (source.name, pipeline)
            per_status = {s: totals.get((pipeline, s)) for s in FINISHED}
            done = [a for a in per_status.values() if a is not None]
            for status in FINISHED:
                agg = per_status[status]
                runs.add(labels + (status,), agg.runs if agg else 0)
            merged = Agg()
            for agg in done:
                merged = merged.plus(agg)
            durations.add_histogram(labels, merged.cumulative(), merged.duration_ms / 1000)
            if resolved.has_rows:
                rows.add(labels, merged.rows)
            if resolved.has_errors:
                errors.add(labels, merged.errors)
            if merged.last_at is not None:
                last_run.add(labels, merged.last_at)
                if merged.last_duration is not None:
                    last_duration.add(labels, merged.last_duration)
                latest = max((s for s in FINISHED if per_status[s] is not None),
                             key=lambda s: (per_status[s].last_at, s == "failed"))
                for status in FINISHED:
                    last_status.add(labels + (status,), 1 if status == latest else 0)
            success = per_status["success"]
            if success is not None and success.last_at is not None:
                last_success.add(labels, success.last_at)
            n_running, age = in_flight.get((pipeline, "running"), (0, None))
            running.add(labels, n_running)
            queued.add(labels, in_flight.get((pipeline, "queued"), (0, None))[0])
            oldest.add(labels, max(age, 0.0) if age is not None else 0)
            if pipeline in source.expected_intervals:
                expected.add(labels, source.expected_intervals[pipeline])
