"""The plans dbperf has seen of each statement, per target, kept in the state directory
(:func:`exporter.state.state_file` ``(dir, "plans", target)``) so that ``dbperf plans`` reads them
without the running server and they survive restarts.

A plan's fingerprint (:func:`fingerprint`) is a short stable hash of the plan tree's shape, node
types, relations and indexes, without costs, row estimates or literals: the same plan gives the
same fingerprint on every run and every dbperf; a different access path (an index scan become a
sequential scan, another join order or method) gives another.

Bounded: :data:`MAX_PLANS` plans per statement (the oldest dropped), :data:`MAX_STATEMENTS`
statements per target (those seen longest ago dropped), a plan's JSON of more than
:data:`MAX_PLAN_CHARS` characters kept as its fingerprint only. Plans are stored with every literal
masked (:func:`exporter.advisor.guard.mask_plan`) and without output column lists."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from exporter.state import read_json, state_dir, state_file, write_json

PURPOSE = "plans"
FORMAT = 1
MAX_PLANS = 10
MAX_STATEMENTS = 2000
MAX_PLAN_CHARS = 100_000
FINGERPRINT_CHARS = 12


def _nodes_with_depth(plan: dict):
    """``(depth, node)`` of every node, depth first, children in order (without recursion)."""
    stack = [(0, plan)]
    while stack:
        depth, node = stack.pop()
        yield depth, node
        stack.extend((depth + 1, child) for child in reversed(node.get("Plans") or ()))


def _node_key(node: dict) -> str:
    parts = [str(node.get("Node Type", "?"))]
    if node.get("Relation Name"):
        schema = node.get("Schema")
        parts.append("rel=" + (f"{schema}.{node['Relation Name']}" if schema else str(node["Relation Name"])))
    if node.get("Index Name"):
        parts.append("idx=" + str(node["Index Name"]))
    return " ".join(parts)


def fingerprint(plan: dict) -> str:
    """The plan tree's (``EXPLAIN (FORMAT JSON)``'s ``Plan``) fingerprint: node types, relations and
    indexes with their depth, hashed (the first :data:`FINGERPRINT_CHARS` hex digits of SHA-256)."""
    canonical = "\n".join(f"{depth}:{_node_key(node)}" for depth, node in _nodes_with_depth(plan))
    return hashlib.sha256(canonical.encode()).hexdigest()[:FINGERPRINT_CHARS]


def describe(plan: dict) -> list[str]:
    """The plan as indented lines, one per node (node type, relation, index, estimated rows)."""
    lines = []
    for depth, node in _nodes_with_depth(plan):
        label = _node_key(node).replace(" rel=", " on ").replace(" idx=", " using ")
        rows = node.get("Plan Rows")
        lines.append(f"{'  ' * depth}-> {label}" + (f"  (rows={rows})" if rows is not None else ""))
    return lines


def strip_outputs(node):
    """The plan without its ``Output`` lists (column lists of VERBOSE: bulk, no shape)."""
    if isinstance(node, dict):
        return {k: strip_outputs(v) for k, v in node.items() if k != "Output"}
    if isinstance(node, list):
        return [strip_outputs(v) for v in node]
    return node


def _valid_plan(plan) -> bool:
    """Whether a stored plan has what dbperf reads (a damaged or hand-edited one is skipped)."""
    return (isinstance(plan, dict) and isinstance(plan.get("fingerprint"), str)
            and all(isinstance(plan.get(k), (int, float)) and not isinstance(plan.get(k), bool)
                    for k in ("first_seen", "last_seen")))


class PlanHistory:
    """One target's plans, in memory and in its state file. Thread-safe; :meth:`save` writes the
    file when something changed."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._dirty = False
        self.statements: dict = {}  # (datname, queryid) -> {"changes": int, "plans": [newest first]}
        data = read_json(path, {}) if path is not None else {}
        if isinstance(data, dict) and data.get("format") == FORMAT:
            for entry in data.get("statements") or ():
                try:
                    key = (str(entry["datname"]), str(entry["queryid"]))
                    plans = [p for p in entry["plans"] if _valid_plan(p)]
                    if plans:
                        self.statements[key] = {"changes": int(entry.get("changes", 0)), "plans": plans}
                except (KeyError, TypeError, ValueError):
                    continue  # a damaged entry: the others still count

    @classmethod
    def for_target(cls, configured_dir: str, target: str) -> "PlanHistory":
        return cls(state_file(state_dir(configured_dir), PURPOSE, target))

    def record(self, datname: str, queryid: str, plan: dict, source: str, now: float) -> tuple[str, str | None]:
        """Keep ``plan`` (the ``Plan`` of EXPLAIN, literals masked) seen at ``now`` (Unix time);
        returns ``(fingerprint, the previous fingerprint when the plan changed, else None)``."""
        fp = fingerprint(plan)
        with self._lock:
            entry = self.statements.setdefault((datname, queryid), {"changes": 0, "plans": []})
            plans = entry["plans"]
            if plans and plans[0]["fingerprint"] == fp:
                plans[0]["last_seen"] = now
                self._dirty = True
                return fp, None
            previous = plans[0]["fingerprint"] if plans else None
            earlier = next((p for p in plans if p["fingerprint"] == fp), None)
            if earlier is not None:  # an older plan is back: it moves to the front, first seen kept
                plans.remove(earlier)
            kept = strip_outputs(plan)
            text = json.dumps(kept, separators=(",", ":"))
            plans.insert(0, {"fingerprint": fp, "first_seen": earlier["first_seen"] if earlier else now,
                             "last_seen": now, "source": source,
                             "plan": kept if len(text) <= MAX_PLAN_CHARS else None})
            del plans[MAX_PLANS:]
            if previous is not None:
                entry["changes"] += 1
            self._dirty = True
            return fp, previous

    def current(self, datname: str, queryid: str) -> tuple[str, int] | None:
        """``(current fingerprint, changes)`` of a statement, or None when it has no plan."""
        with self._lock:
            entry = self.statements.get((datname, queryid))
            if not entry or not entry["plans"]:
                return None
            return entry["plans"][0]["fingerprint"], entry["changes"]

    def save(self) -> None:
        with self._lock:
            if not self._dirty or self.path is None:
                return
            ordered = sorted(self.statements.items(), key=lambda item: -max(
                (p.get("last_seen", 0) for p in item[1]["plans"]), default=0))[:MAX_STATEMENTS]
            self.statements = dict(ordered)
            data = {"format": FORMAT, "statements": [
                {"datname": d, "queryid": q, "changes": e["changes"], "plans": e["plans"]} for (d, q), e in ordered]}
            self._dirty = False
        write_json(self.path, data)


def plans_by_statement(configured_dir: str, target: str) -> dict[tuple[str, str], list[dict]]:
    """Every stored plan of ``target``, by ``(datname, queryid)``, newest first: ``{"datname",
    "queryid", "fingerprint", "first_seen", "last_seen" (Unix times), "source" ("generic" or
    "sample"), "plan" (EXPLAIN's JSON plan, literals masked; None when too large to keep)}``. Reads
    the state file only, once (what ``dbperf plans`` and ``/samples`` show)."""
    history = PlanHistory.for_target(configured_dir, target)
    out = {}
    for (db, qid), entry in history.statements.items():
        plans = [{"datname": db, "queryid": qid, **plan} for plan in entry["plans"]]
        out[(db, qid)] = sorted(plans, key=lambda p: -float(p.get("last_seen") or 0))
    return out


def statement_plans(configured_dir: str, target: str, queryid: str, datname: str | None = None) -> list[dict]:
    """The stored plans of statement ``queryid`` of ``target`` (in database ``datname``, or in any),
    newest first (see :func:`plans_by_statement`)."""
    out = [plan for (db, qid), plans in plans_by_statement(configured_dir, target).items()
           if qid == str(queryid) and (datname is None or db == datname) for plan in plans]
    out.sort(key=lambda p: -float(p.get("last_seen") or 0))
    return out
