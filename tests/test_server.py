"""exporter.server without a server: the scrape budget read from Prometheus's timeout header,
and which request goes where (the HTTP endpoints themselves are tested over real HTTP in
test_smoke.py, test_faults.py and test_hung_server.py)."""

from __future__ import annotations

import pytest

from exporter.config import parse
from exporter.server import MAX_BUDGET, MIN_BUDGET, Exporter, parse_budget, route

pytestmark = pytest.mark.fast

DEFAULT, OFFSET = 10.0, 0.5


@pytest.mark.parametrize("header, budget", [
    (None, DEFAULT),
    ("", DEFAULT),
    ("3", 2.5),
    ("2.75", 2.25),
    (" 4 ", 3.5),
    ("0.3", MIN_BUDGET),       # less than the offset: the least a scrape is given
    ("0.5", MIN_BUDGET),
    ("100000", MAX_BUDGET),    # clamped
    ("1e400", DEFAULT),        # float overflow: inf
    ("inf", DEFAULT),
    ("-inf", DEFAULT),
    ("nan", DEFAULT),
    ("-3", DEFAULT),
    ("0", DEFAULT),
    ("ten", DEFAULT),
    ("3s", DEFAULT),
    ("1" * 100, DEFAULT),      # absurdly long
])
def test_budget_from_the_timeout_header(header, budget):
    assert parse_budget(header, OFFSET, DEFAULT) == pytest.approx(budget)


def test_exporter_budget_uses_the_configured_default_and_offset():
    config = parse({"listen": "127.0.0.1:0", "scrape_timeout": "7s", "scrape_timeout_offset": "1s",
                    "targets": [{"name": "main", "dsn": "host=127.0.0.1 port=1 dbname=x"}]}, source="t")
    exporter = Exporter(config)  # nothing connects until a scrape
    try:
        assert exporter.budget(None) == 7.0
        assert exporter.budget("5") == 4.0
        assert exporter.budget("garbage") == 7.0
        assert exporter.ready() == {"main": {"up": False, "scrapes": 0}}
    finally:
        exporter.close()


TARGETS = {"main": object(), "replica": object()}


@pytest.mark.parametrize("path, query, expected", [
    ("/metrics", "", ("/metrics", None, 200)),
    ("/metrics", "anything=1", ("/metrics", None, 200)),
    ("/probe", "target=main", ("/probe", "main", 200)),
    ("/probe", "target=replica&module=x", ("/probe", "replica", 200)),
    ("/probe", "", ("/probe", None, 400)),
    ("/probe", "target=main&target=replica", ("/probe", None, 400)),
    ("/probe", "target=nope", ("/probe", None, 404)),
    ("/healthz", "", ("/healthz", None, 200)),
    ("/readyz", "", ("/readyz", None, 200)),
    ("/", "", ("/", None, 200)),
    ("/metrics/", "", ("", None, 404)),
    ("/favicon.ico", "", ("", None, 404)),
])
def test_route(path, query, expected):
    endpoint, target, status, error = route(path, query, TARGETS)
    assert (endpoint, target, status) == expected
    assert (error == "") == (status == 200)
    assert error.count("\n") <= 1


def test_route_errors_say_what_to_do():
    assert "exactly one target parameter" in route("/probe", "", TARGETS)[3]
    error = route("/probe", "target=nope", TARGETS)[3]
    assert "unknown target 'nope'" in error and "configured: main, replica" in error
    assert "try /metrics, /probe?target=NAME" in route("/x", "", TARGETS)[3]
