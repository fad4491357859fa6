"""check-config's plan of a kind: mysql target: its one session and its collectors, not PostgreSQL's."""

from __future__ import annotations

import pytest

from exporter.config import parse
from exporter.plan import describe_plan

pytestmark = pytest.mark.fast


def test_the_plan_lists_the_mysql_collectors():
    config = parse({"targets": [{"name": "my", "kind": "mysql", "dsn": "mysql://mon:hunter2@db/",
                                 "collectors": {"tables": False, "statements": {"timeout": 9}}}]}, source="c.yaml")
    text = describe_plan(config)
    assert "target my: MySQL/MariaDB host=db port=3306 user=mon; one session" in text
    assert "hunter2" not in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert lines["tables"].split()[1] == "disabled"
    assert "9s" in lines["statements"] and lines["innodb"].endswith("MySQL 8.0, MariaDB 10.6")
    assert "stat_database" not in lines and "wraparound" not in lines
