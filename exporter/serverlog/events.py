"""``/events?target=NAME[&kind=access|error|slow|ddl|lock][&limit=N]``: the most recent events of
the target's server log, newest last (a private endpoint: :mod:`exporter.private`)."""

from __future__ import annotations

import re

from exporter.serverlog.tally import EVENT_KINDS


def events(exporter, target: str, params: dict) -> dict:
    kinds = params.get("kind", [])
    kind = kinds[0] if kinds else None
    if kind is not None and (len(kinds) > 1 or kind not in EVENT_KINDS):
        raise ValueError(f"kind must be one of {', '.join(EVENT_KINDS)}")
    from exporter.private import MAX_BODY_ITEMS

    limit_text = params.get("limit", [str(MAX_BODY_ITEMS)])[0]
    if len(params.get("limit", [])) > 1 or not re.fullmatch(r"[0-9]{1,6}", limit_text):
        raise ValueError("limit must be a positive integer")
    limit = max(1, min(int(limit_text), MAX_BODY_ITEMS))
    scraper = exporter.scrapers[target]
    if getattr(scraper.target, "server_log", None) is None:
        raise ValueError(f"target {target!r} has no server_log: configured (docs/server-log.md)")
    collector = next((c for c in scraper.collectors if c.name == "server_log"), None)
    reader = collector.shared.reader if collector is not None else None
    if reader is None:
        return {"target": target, "kind": kind, "events": [], "reader": "not started (no scrape yet)"}
    return {"target": target, "kind": kind, "events": reader.tally.recent(kind, limit),
            "reader": "ok" if not reader.last_error else reader.last_error}
