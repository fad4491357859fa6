"""exporter.advisor.sqltree: every node of a pglast tree, lists of lists included."""

from __future__ import annotations

import pytest
from pglast import ast, parse_sql

from exporter.advisor.sqltree import walk

pytestmark = pytest.mark.fast


def functions(sql: str) -> set[str]:
    return {".".join(n.sval for n in node.funcname) for node in walk(parse_sql(sql)[0].stmt)
            if isinstance(node, ast.FuncCall)}


@pytest.mark.parametrize("sql, names", [
    ("SELECT lower(x) FROM t", {"lower"}),
    # a FROM clause's functions are a list of lists (RangeFunction.functions): looked into
    ("SELECT * FROM pg_terminate_backend(1)", {"pg_terminate_backend"}),
    ("SELECT * FROM ROWS FROM (generate_series(1, 2), upper('a')) AS r", {"generate_series", "upper"}),
    ("SELECT * FROM t, LATERAL pg_catalog.set_config('a', 'b', false) s", {"pg_catalog.set_config"}),
])
def test_walk_finds_every_function_call(sql, names):
    assert functions(sql) == names


def test_walk_has_no_recursion_limit():
    sql = "SELECT " + "(" * 900 + "1" + ")" * 900
    assert sum(1 for _ in walk(parse_sql(sql)[0].stmt)) > 1
