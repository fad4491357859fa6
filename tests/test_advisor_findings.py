"""Pure rules of the advisor's findings: one finding per subject, repeats in one statement merged,
dbperf's own statements recognised by their mark, plan filters read for what an index could serve,
and dbperf's own SQL free of the anti-patterns the advisor flags. No server."""

from __future__ import annotations

import re

import pytest

from exporter.advisor import OWN_MARK, Finding, dedupe, is_own, mark
from exporter.advisor.explain import filter_terms, trigram_advice
from exporter.advisor.report import render_table
from exporter.advisor.statements import check_sql

pytestmark = pytest.mark.fast


def finding(severity="medium", time_ms=1.0, subject="queryid 1", message="m", check="not_in_subquery"):
    return Finding("statement", check, severity, "db", subject, message, "fix", time_ms=time_ms)


def test_dedupe_keeps_the_worst_of_each_subject_whatever_the_order():
    low = finding("low", 50.0)
    worst = finding("high", 1.0)
    slower_medium = finding("medium", 9.0, message="b")
    other = finding("medium", 2.0, subject="queryid 2")
    for order in ([low, worst, slower_medium, other], [other, slower_medium, worst, low]):
        assert dedupe(order) == [other, worst]
    tie_a, tie_b = finding(message="a"), finding(message="b")
    assert dedupe([tie_b, tie_a]) == dedupe([tie_a, tie_b]) == [tie_a]


def test_one_issue_per_check_in_one_statement():
    # dbperf's own index collector had two NOT IN (subquery) in one statement: two findings
    issues = check_sql("SELECT CASE WHEN i.indexrelid NOT IN (SELECT relation FROM l) THEN 1 END, "
                       "CASE WHEN i.relid NOT IN (SELECT relation FROM l) THEN 1 END FROM i")
    assert [i.check for i in issues] == ["not_in_subquery"]
    assert issues[0].message.startswith("i.indexrelid NOT IN (subquery)")
    assert "(also: i.relid NOT IN (subquery))" in issues[0].message


def test_own_statements_are_recognised_by_their_mark():
    assert OWN_MARK == "/*application='dbperf'*/"
    marked = mark("SELECT 1")
    assert marked == "SELECT 1 /*application='dbperf'*/" and is_own(marked)
    assert mark(marked) == marked
    assert not is_own("SELECT 1 /*application='shop'*/") and not is_own(None)


@pytest.mark.parametrize("expression, expected", [
    ("(t.name ~~ '%ab%'::text)", {"eq": [], "range": [], "wildcard": [("name", "LIKE", "%ab%")]}),
    ("((t.name ~~* '%abc%'::text) AND (t.cat = 3))", {"eq": ["cat"], "range": [],
                                                       "wildcard": [("name", "ILIKE", "%abc%")]}),
    ("((t.code)::text ~~ '_x%'::text)", {"eq": [], "range": [], "wildcard": [("code", "LIKE", "_x%")]}),
    ("((t.cat = ANY ('{1,2}'::integer[])) AND (5 < t.id))", {"eq": ["cat"], "range": ["id"], "wildcard": []}),
    ("(t.name ~~ 'ab%'::text)", {"eq": [], "range": [], "wildcard": []}),
    ("((t.created)::date = '2024-01-01'::date)", {"eq": [], "range": [], "wildcard": []}),
    ("((lower(t.name) = 'a'::text) OR (t.cat > 5))", {"eq": [], "range": [], "wildcard": []}),
    ("(other.cat = 3)", {"eq": [], "range": [], "wildcard": []}),
    ("this is not an expression (((", {"eq": [], "range": [], "wildcard": []}),
])
def test_filter_terms(expression, expected):
    assert filter_terms(expression, "t") == expected


def test_trigram_advice():
    long = trigram_advice("public.t", "t", "name", "LIKE", "%abc%")
    assert "A B-tree index cannot serve name LIKE '%abc%'" in long
    assert "CREATE EXTENSION IF NOT EXISTS pg_trgm; CREATE INDEX CONCURRENTLY t_name_trgm_idx ON public.t " \
           "USING gin (name gin_trgm_ops);" in long
    assert "gist_trgm_ops" in long
    short = trigram_advice("public.t", "t", "name", "LIKE", "%ab%")
    assert "fewer than 3 characters" in short and "change the query" in short and "gin_trgm_ops" in short


def _own_sql():
    from exporter.advisor import cli, connections, indexes, maintenance, statements

    return {"databases": cli.DATABASES_SQL, "settings": connections.SETTINGS_SQL,
            "activity": connections.ACTIVITY_SQL, "seq": indexes.SEQ_SQL, "index": indexes.INDEX_SQL,
            "tables": maintenance.TABLES_SQL, "statements": statements.STATEMENTS_SQL}


@pytest.mark.parametrize("name", sorted(_own_sql()))
def test_the_advisors_own_sql_has_none_of_the_anti_patterns_it_flags(name):
    sql = re.sub(r"%\(\w+\)s|%s", "$1", _own_sql()[name])
    assert check_sql(sql) == []


def test_unavailable_statements_are_one_line():
    meta = {"target": "main", "server": "PostgreSQL 15", "databases": ["postgres"],
            "statements": {"checked": False, "reason": "statement checks skipped: pg_stat_statements is installed "
                                                       "in database 'postgres' but not loaded; to enable it: x"}}
    out = render_table(meta, [])
    lines = [line for line in out.splitlines() if "pg_stat_statements" in line]
    assert lines == [meta["statements"]["reason"]]
    assert "available" not in out and "checked" not in out
