"""The MySQL advisor's statement rules on SQL parsed with sqlglot's MySQL dialect (no server): each
anti-pattern found in the digest text (or plain SQL) that has it and in no clean statement, with
the check names of the PostgreSQL rules."""

from __future__ import annotations

import pytest

from exporter.advisor.mysql_statements import Unparsable, check_sql
from exporter.advisor.statements import TooLong

pytestmark = pytest.mark.fast

CASES = [  # digest texts as performance_schema writes them, and plain SQL for the literal-only checks
    ("select_star", "SELECT * FROM `shop` . `orders` WHERE `id` = ?"),
    ("leading_wildcard_like", "SELECT id FROM customers WHERE name LIKE '%smith'"),
    ("delete_without_where", "DELETE FROM `orders`"),
    ("update_without_where", "UPDATE `orders` SET `status` = ?"),
    ("order_by_random", "SELECT `id` FROM `products` ORDER BY `RAND` ( ) LIMIT ?"),
    ("large_offset", "SELECT id FROM orders ORDER BY id LIMIT 50000, 10"),
    ("offset_pagination", "SELECT `id` FROM `orders` ORDER BY `id` LIMIT ?, ?"),
    ("not_in_subquery", "SELECT `id` FROM `a` WHERE `a` . `x` NOT IN ( SELECT `x` FROM `b` )"),
    ("function_on_column", "SELECT `id` FROM `customers` WHERE LOWER ( `email` ) = ?"),
    ("function_on_column", "SELECT `id` FROM `orders` WHERE DATE ( `created` ) = ?"),
]
CLEAN = [
    "SELECT `id` , `total` FROM `orders` WHERE `customer_id` = ? ORDER BY `id` DESC LIMIT ?",
    "SELECT id FROM customers WHERE name LIKE 'smi%'",
    "UPDATE `orders` SET `status` = ? WHERE `id` = ?",
    "DELETE FROM `sessions` WHERE `expires` < NOW ( )",
    "SELECT `a` . `id` FROM `a` WHERE NOT EXISTS ( SELECT * FROM `b` WHERE `b` . `x` = `a` . `x` )",
    "SELECT id FROM orders ORDER BY id LIMIT 20, 10",
    "INSERT INTO `orders` ( `customer_id` , `total` ) VALUES (...)",
    "SELECT COUNT ( * ) FROM `orders` WHERE `created` >= NOW ( ) - INTERVAL ? DAY",
    "SELECT `id` FROM `orders` WHERE `id` IN (...)",
    "BEGIN", "COMMIT", "SHOW GLOBAL STATUS",
]


def checks(sql: str) -> set[str]:
    return {issue.check for issue in check_sql(sql)}


@pytest.mark.parametrize("check,sql", CASES)
def test_each_anti_pattern_is_found(check, sql):
    assert checks(sql) == {check}


@pytest.mark.parametrize("sql", CLEAN)
def test_clean_statements_have_no_findings(sql):
    assert checks(sql) == set()


def test_the_messages_name_what_they_found():
    (issue,) = check_sql("SELECT id FROM customers WHERE name LIKE '%smith'")
    assert "name LIKE '%smith'" in issue.message and "FULLTEXT" in issue.recommendation
    (issue,) = check_sql("SELECT `id` FROM `orders` WHERE DATE ( `created` ) = ?")
    assert "DATE(`created`) =" in issue.message and "range" in issue.recommendation
    (issue,) = check_sql("SELECT id FROM orders LIMIT 50000, 10")
    assert issue.message == "OFFSET 50000 reads and discards 50000 rows"


def test_repeats_are_one_issue_naming_the_other_places():
    (issue,) = check_sql("SELECT `id` FROM `c` WHERE LOWER ( `a` ) = ? AND UPPER ( `b` ) = ?")
    assert issue.check == "function_on_column" and "(also: UPPER(`b`))" in issue.message


@pytest.mark.parametrize("sql", [
    "SELECT `a` FROM `t` WHERE `b` IN ( SELECT `c` FROM `u` WHERE `d` = ... ",  # cut at max_digest_length
    "SELEC id FROM t"])
def test_unparsable_and_unsupported_text(sql):
    with pytest.raises(Unparsable):
        check_sql(sql)


def test_a_text_over_the_bounds_is_never_parsed():
    with pytest.raises(TooLong):
        check_sql("SELECT " + "(" * 5000 + "1" + ")" * 5000)
