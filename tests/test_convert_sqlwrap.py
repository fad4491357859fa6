"""The converter's SQL (exporter.convert.sqlwrap) on a real PostgreSQL: each column read as
postgres_exporter reads it, compared with tests/pe_semantics.py (postgres_exporter's Go code in
Python, applied to the row psycopg returns for the user's own SQL)."""

from __future__ import annotations

import math

import pytest

import pe_semantics as pe
from exporter.convert import sqlwrap

pytestmark = pytest.mark.pg

VALUES = [
    "7::int", "-7::bigint", "3::smallint", "1234::oid", "2.5::float8", "0.1::real", "'NaN'::float8",
    "'-Infinity'::float8", "3.25::numeric", "'1e400'::numeric", "'NaN'::numeric", "true", "false", "NULL::int",
    "'2024-01-02 03:04:05.9+00'::timestamptz", "'1969-12-31 23:59:59.5+00'::timestamptz",
    "'2024-01-02 03:04:05'::timestamp", "'2024-01-02'::date", "'1.5e3'::text", "'+5'::text", "'.5'::text",
    "'5.'::text", "'abc'::text", "' 1'::text", "'1_000'::text", "'0x10'::text", "'inf'::text", "'-Infinity'::text",
    "'NaN'::text", "'+nan'::text", "'1e400'::text", "'1e-400'::text", "''::text", "'5 min'::interval",
    "'5'::jsonb", "'12'::varchar", "'42'::name",
]
LABELS = ["'eu'::text", "NULL::text", "true", "5::int", "3.25::numeric", "'2024-01-02 03:04:05.9+00'::timestamptz",
          "'2024-01-02 03:04:05'::timestamp", "'2024-01-02'::date", "'x\"y'::text", "'ab'::name"]
DURATIONS = ["1h30m", "-1.5ms", "300ms", "1.5h", "2\u00b5s", "2500\u03bcs", "2500us", ".5s", "1.s", "0", "+0",
             "-0", "00", "", "abc", "1h 2m", "5", "1d", "1e3s", "9223372036s", "9223372037s", "1m5s", "1000000ns",
             "-2h45m30.5s", "1.0000000005s", "s", ".s", "1.2.3s", "1hm"]
MAPPING = {"on": 1.0, "off": 0.0, "it's": 2.5, "back\\slash": -1.0, "nan": math.nan}


def rows(pg, sql, db="postgres"):
    with pg.connect(db) as conn:
        conn.execute("SET TimeZone = 'America/New_York'")  # timestamps must not depend on it
        return conn.execute(sql).fetchall()


def same(got, want) -> bool:
    if want is None or got is None:
        return got is want
    return (math.isnan(got) and math.isnan(want)) or got == want


@pytest.mark.parametrize("literal", VALUES)
def test_a_value_column_reads_as_postgres_exporter_reads_it(pg, literal):
    source = f"SELECT {literal} AS x"
    (raw,), = rows(pg, source)
    (got,), = rows(pg, sqlwrap.wrap(source, [(sqlwrap.value_expr("x"), "x")]))
    want = pe.value(raw, float4=literal.endswith("::real"))
    assert same(got, want), f"{literal}: served {got!r}, postgres_exporter {want!r} (row {raw!r})"


@pytest.mark.parametrize("literal", ["7::int", "2.5::float8", "3.25::numeric", "count(*)"])
def test_a_column_the_sql_shows_to_be_a_number_is_read_as_it_is(pg, literal):
    source = f"SELECT {literal} AS x"
    _, outputs = sqlwrap.parse_select(source)
    assert outputs == [("x", "number")]
    expr = sqlwrap.value_expr("x", "number")
    assert expr == "q.x"
    (raw,), = rows(pg, source)
    (got,), = rows(pg, sqlwrap.wrap(source, [(expr, "x")]))
    assert float(got) == pe.value(raw)


@pytest.mark.parametrize("literal", LABELS)
def test_a_label_column_reads_as_postgres_exporter_writes_it(pg, literal):
    source = f"SELECT {literal} AS x"
    (raw,), = rows(pg, source)
    (got,), = rows(pg, sqlwrap.wrap(source, [(sqlwrap.label_expr("x"), "x")]))
    assert got == pe.label(raw)


@pytest.mark.parametrize("text", DURATIONS)
def test_a_duration_column_is_go_duration_text_in_seconds(pg, text):
    (got,), = rows(pg, sqlwrap.wrap("SELECT %s::text AS d" % sqlwrap.quote_literal(text),
                                    [(sqlwrap.duration_expr("d"), "d")]))
    assert same(got, pe.duration_seconds(text)), f"{text!r}: served {got!r}, Go {pe.duration_seconds(text)!r}"


def test_a_null_duration_and_a_number_duration_give_no_sample(pg):
    got = rows(pg, sqlwrap.wrap("SELECT NULL::text AS a, 300 AS b", [(sqlwrap.duration_expr("a"), "a"),
                                                                      (sqlwrap.duration_expr("b"), "b")]))
    assert got == [(None, None)]


@pytest.mark.parametrize("text", [*MAPPING, "other", "ON", None])
def test_a_mapped_column_takes_the_number_its_mapping_gives_its_text(pg, text):
    literal = "NULL" if text is None else sqlwrap.quote_literal(text)
    (got,), = rows(pg, sqlwrap.wrap(f"SELECT {literal}::text AS state", [(sqlwrap.mapped_expr("state", MAPPING), "v")]))
    assert same(got, pe.mapped(text, MAPPING))


def test_a_scale_factor_is_exact_and_keeps_integers_from_integer_division(pg):
    from fractions import Fraction

    source = "SELECT 1500 AS ms, 3 AS kb, 7 AS n"
    got = rows(pg, sqlwrap.wrap(source, [(sqlwrap.value_expr("ms", None, Fraction(1, 1000)), "a"),
                                         (sqlwrap.value_expr("kb", "number", Fraction(1024)), "b"),
                                         (sqlwrap.value_expr("n", "number", Fraction(1, 1000)), "c")]))
    assert got == [(1.5, 3072.0, 0.007)]


def test_the_users_sql_is_kept_whole_a_comment_on_its_last_line_too(pg):
    source = "SELECT 'abc' AS t, 2 AS n -- the last line is a comment"
    wrapped = sqlwrap.wrap(source, [(sqlwrap.value_expr("t"), "t"), (sqlwrap.value_expr("n"), "n")])
    assert source in wrapped
    # 'abc' is a constant: without the OFFSET 0 fence the planner folds 'abc'::float8 and fails
    assert rows(pg, wrapped) == [(None, 2.0)]


@pytest.fixture(scope="module")
def latin1(pg):
    name = "dbperf_convert_latin1"
    pg.execute(f"DROP DATABASE IF EXISTS {name}")
    pg.execute(f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    yield name
    pg.execute(f"DROP DATABASE IF EXISTS {name}")


def test_the_expressions_run_in_a_latin1_database(pg, latin1):
    source = "SELECT '2\u00b5s'::text AS a, '1h30m'::text AS b, '12'::text AS c, 'on'::text AS s, now() AS t"
    got = rows(pg, sqlwrap.wrap(source, [(sqlwrap.duration_expr("a"), "a"), (sqlwrap.duration_expr("b"), "b"),
                                         (sqlwrap.value_expr("c"), "c"), (sqlwrap.mapped_expr("s", MAPPING), "s"),
                                         (sqlwrap.label_expr("t"), "t")]), latin1)
    assert got[0][:4] == (0.0, 5400.0, 12.0, 1.0)
    assert got[0][4].isdigit()
