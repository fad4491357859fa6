"""Performance advice from PostgreSQL's own statistics: SQL anti-patterns in the top statements
(parsed with pglast, PostgreSQL's real parser), index, maintenance and connection findings, and
``EXPLAIN`` warnings. ``dbperf advise`` (``exporter.advisor.cli``) is the command."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.errors import UsageError

# The monitor never advises on itself: every statement dbperf sends ends with OWN_MARK (the mark
# that mark() appends and is_own() looks for), and OWN_APPLICATIONS are the application_name of
# its own sessions (serve, advise, the pipelines recorder).
from exporter.postgres.sqlmark import MARK as OWN_MARK, is_own, mark  # noqa: F401 (the advisor's names for them)

SEVERITIES = ("high", "medium", "low", "info")
KINDS = ("statement", "index", "maintenance", "connection", "explain")

OWN_APPLICATIONS = ("dbperf", "dbperf-advise", "dbperf-recorder")


class AdviseError(UsageError):
    """Bad input or a refused request (a statement the role may not explain or run): the message
    is one line, the command exits 2."""


@dataclass(frozen=True)
class Finding:
    kind: str            # one of KINDS
    check: str           # e.g. select_star, missing_index, unused_index, needs_vacuum
    severity: str        # one of SEVERITIES
    database: str        # "" for cluster-wide findings
    subject: str         # what it is about: schema.table, an index, an application, a queryid
    message: str
    recommendation: str
    time_ms: float = 0.0     # time spent (pg_stat_statements total time), the first sort key
    size_bytes: int = 0      # size involved, the second sort key
    details: dict = field(default_factory=dict)

    def sort_key(self):
        # the plan summary heads the EXPLAIN warnings it introduces
        return (self.check != "plan_summary", -round(self.time_ms, 3), -self.size_bytes, SEVERITIES.index(self.severity),
                KINDS.index(self.kind), self.check, self.database, self.subject, self.message)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "check": self.check, "severity": self.severity,
                "database": self.database, "subject": self.subject, "message": self.message,
                "recommendation": self.recommendation, "time_ms": round(self.time_ms, 3),
                "size_bytes": self.size_bytes, "details": dict(sorted(self.details.items()))}


def sort_findings(findings) -> list:
    return sorted(findings, key=Finding.sort_key)


def _worst_first(f: Finding) -> tuple:
    return (SEVERITIES.index(f.severity), -round(f.time_ms, 3), -f.size_bytes, f.message, f.recommendation)


def dedupe(findings) -> list:
    """One finding per (kind, check, database, subject): the worst (severity, then time, then size;
    ties broken by the text, so the choice is deterministic), sorted."""
    best: dict = {}
    for f in findings:
        key = (f.kind, f.check, f.database, f.subject)
        if key not in best or _worst_first(f) < _worst_first(best[key]):
            best[key] = f
    return sort_findings(best.values())


def quote_ident(name: str) -> str:
    """Quote an identifier only when PostgreSQL needs it."""
    import re

    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) and name not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


_RESERVED = frozenset("""all analyse analyze and any array as asc asymmetric both case cast check collate
column constraint create current_catalog current_date current_role current_time current_timestamp
current_user default deferrable desc distinct do else end except false fetch for foreign from grant
group having in initially intersect into lateral leading limit localtime localtimestamp not null
offset on only or order placing primary references returning select session_user some symmetric
table then to trailing true union unique user using variadic when where window with""".split())
