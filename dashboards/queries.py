"""Reading the generated dashboards back: every panel's PromQL, with Grafana's variables replaced by
concrete values, for the tests (promtool parsing, a real Prometheus answering every panel)."""

from __future__ import annotations

import json
import re
from pathlib import Path

JSON_DIR = Path(__file__).resolve().parent / "json"

# Grafana's built-in macros, as a real Prometheus with a 1-2 s scrape interval needs them in a
# test that has run for a minute or two.
MACROS = {"$__rate_interval": "20s", "$__interval": "2s", "$__range": "5m"}


def load_all(directory: Path = JSON_DIR) -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def panels(dashboard: dict):
    """Every panel (rows' nested panels too), rows excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def substitute(expr: str, values: dict[str, str] | None = None, default: str = ".+") -> str:
    """``expr`` with the macros and ``$var``/``${var}`` replaced (unknown variables by ``default``)."""
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    values = values or {}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), default), expr)


def targets(directory: Path = JSON_DIR):
    """(file, dashboard uid, panel title, refId, target) for every query of every panel."""
    for name, dash in load_all(directory).items():
        for panel in panels(dash):
            for t in panel.get("targets", []):
                yield name, dash["uid"], panel["title"], t.get("refId"), t
