"""``dbperf_advisor_findings{datname,kind,check,severity}``: how many index and maintenance
findings ``dbperf advise`` would report for each database, for dashboards and alerts.

Opt-in (``collectors: {advisor: true}``) and cached for 15 minutes by default: the catalog queries
are cheap but there is no point running them every scrape. Labels come from fixed sets, so the
series count is bounded. Statement findings need pg_stat_statements text and stay in the CLI, except
those found in the session sampler's real query samples (a leading-wildcard LIKE, a large OFFSET:
:func:`exporter.advisor.statements.sample_findings`), counted for the database they ran in."""

from __future__ import annotations

from exporter.collector import DATABASE, Collector, Context
from exporter.metrics import Family


class _Result:
    def __init__(self, rows):
        self._rows = rows

    def fetchall(self):
        return self._rows

    def fetchone(self):
        return self._rows[0] if self._rows else None


class _Session:
    """The ``execute(sql, params).fetchall()`` the advisor's checks use, over the exporter's
    :class:`exporter.postgres.connection.Connection` (its read-only, time-limited session)."""

    def __init__(self, conn, timeout: float):
        self.conn, self.timeout = conn, timeout

    def execute(self, sql: str, params=None):
        from exporter.advisor import mark

        sql = mark(sql)  # dbperf's own statement: the advisor never judges it
        if params:
            # the checks only pass integers as parameters
            if isinstance(params, dict):
                sql = sql % {k: int(v) for k, v in params.items()}
            else:
                sql = sql % tuple(int(v) for v in params)
        (_, rows), = self.conn.query(sql, self.timeout)
        return _Result(rows)


class AdvisorCollector(Collector):
    def __init__(self, shared=None):
        self.shared = shared  # the target's exporter.postgres.wait_events.SharedSampler: its samples
        super().__init__(name="advisor", scope=DATABASE, enabled_by_default=False, default_ttl=900.0,
                         default_timeout=10.0,
                         help="counts of index and maintenance findings of dbperf advise, and of the statement "
                              "findings in the wait_events sampler's real query samples (a leading-wildcard LIKE, "
                              "a large OFFSET) (dbperf_advisor_findings)",
                         families=("dbperf_advisor_findings",))

    def collect(self, conn, ctx: Context, timeout: float = 10.0) -> list[Family]:
        from exporter.advisor.indexes import index_findings
        from exporter.advisor.maintenance import maintenance_findings

        session = _Session(conn, timeout)
        findings = index_findings(session, ctx.datname, []) + maintenance_findings(session, ctx.datname)
        sampler = getattr(self.shared, "sampler", None)
        if sampler is not None:
            from exporter.advisor.statements import sample_findings

            samples = [s for s in sampler.store.recent(sampler.store.limit) if s.datname == ctx.datname]
            findings += sample_findings(samples)[0]
        counts: dict = {}
        for f in findings:
            key = (ctx.datname, f.kind, f.check, f.severity)
            counts[key] = counts.get(key, 0) + 1
        family = Family("dbperf_advisor_findings", "gauge",
                        "Findings of dbperf advise (index and maintenance checks; statement checks on the sampler's query "
                        "samples) by kind, check and severity",
                        ("datname", "kind", "check", "severity"))
        for key in sorted(counts):
            family.add(key, counts[key])
        return [family]
