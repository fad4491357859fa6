"""/events: its parameters, and a target without server_log (no server needed: nothing is scraped)."""

from __future__ import annotations

import json

import pytest

from exporter import private
from exporter.config import parse
from exporter.server import Exporter

pytestmark = pytest.mark.fast

TOKEN = "events-test-token-0123456789"


def exporter(server_log: dict | None):
    target = {"name": "main", "dsn": "host=127.0.0.1 port=1"}
    if server_log is not None:
        target["server_log"] = server_log
    config = parse({"targets": [target], "private_endpoints": {"token_env": "TOK"}}, source="c.yaml",
                   env={"TOK": TOKEN})
    return Exporter(config)


def ask(exp, query):
    status, body, _ = private.answer(exp, "/events", query, f"Bearer {TOKEN}")
    return status, json.loads(body)


def test_events_is_a_private_endpoint():
    assert private.ENDPOINTS["/events"] == "exporter.serverlog.events:events"


@pytest.mark.parametrize("query, reason", [
    ("target=main&kind=audit", "kind must be one of access, error, slow, ddl, lock"),
    ("target=main&limit=-1", "limit must be a positive integer"),
])
def test_bad_parameters_are_400_with_the_reason(tmp_path, query, reason):
    exp = exporter({"path": str(tmp_path)})
    try:
        assert ask(exp, query) == (400, {"error": reason})
    finally:
        exp.close()


def test_a_target_without_server_log_says_so():
    exp = exporter(None)
    try:
        status, body = ask(exp, "target=main")
        assert status == 400 and "has no server_log" in body["error"]
    finally:
        exp.close()


def test_before_the_first_scrape_the_feed_is_empty(tmp_path):
    exp = exporter({"path": str(tmp_path)})
    try:
        status, body = ask(exp, "target=main&kind=slow")
        assert status == 200 and body["events"] == [] and body["kind"] == "slow"
    finally:
        exp.close()
