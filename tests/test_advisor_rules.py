"""The advisor's statement rules on parsed SQL (pglast, no server): each anti-pattern is found in the
statement that has it and in no clean statement."""

from __future__ import annotations

import pytest

from exporter.advisor.statements import Unparsable, check_sql, predicate_columns

pytestmark = pytest.mark.fast

CASES = [
    ("select_star", "SELECT * FROM orders WHERE id = 1"),
    ("leading_wildcard_like", "SELECT id FROM customers WHERE name LIKE '%smith'"),
    ("delete_without_where", "DELETE FROM orders"),
    ("update_without_where", "UPDATE orders SET status = 'x'"),
    ("order_by_random", "SELECT id FROM products ORDER BY random() LIMIT 5"),
    ("large_offset", "SELECT id FROM orders ORDER BY id LIMIT 10 OFFSET 50000"),
    ("not_in_subquery", "SELECT id FROM a WHERE a.x NOT IN (SELECT x FROM b)"),
    ("function_on_column", "SELECT id FROM customers WHERE lower(email) = 'a@b.c'"),
]
CLEAN = [
    "SELECT id, total FROM orders WHERE customer_id = $1 ORDER BY id DESC LIMIT 20",
    "SELECT id FROM customers WHERE name LIKE 'smi%'",
    "UPDATE orders SET status = 'paid' WHERE id = $1",
    "DELETE FROM sessions WHERE expires < now()",
    "SELECT a.id FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.x = a.x)",
    "SELECT id FROM orders ORDER BY id LIMIT 10 OFFSET 20",
    "INSERT INTO orders (customer_id, total) VALUES ($1, $2)",
]


def checks(sql: str) -> set[str]:
    return {issue.check for issue in check_sql(sql)}


@pytest.mark.parametrize("check,sql", CASES)
def test_each_anti_pattern_is_found(check, sql):
    assert checks(sql) == {check}


@pytest.mark.parametrize("sql", CLEAN)
def test_clean_statements_have_no_finding(sql):
    assert check_sql(sql) == []


def test_the_same_issue_twice_in_one_statement_is_reported_once():
    sql = "SELECT * FROM a WHERE name LIKE '%x' UNION ALL SELECT * FROM a WHERE name LIKE '%x'"
    issues = check_sql(sql)
    assert len(issues) == len({(i.check, i.message) for i in issues})


def test_unparsable_sql_raises_the_documented_error():
    with pytest.raises(Unparsable):
        check_sql("SELEC id FRM orders")


def test_predicate_columns_names_the_filtered_columns_per_table():
    cols = predicate_columns("SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id "
                             "WHERE o.status = 'x' AND c.country = $1")
    assert cols[(None, "orders")]["eq"] == ["status"]
    assert cols[(None, "customers")]["eq"] == ["country"]
