"""A postgres_exporter query's SQL, kept verbatim inside a SELECT that reads each column as
postgres_exporter read it (``exporter/util.go``, ``exporter/postgres_exporter.go``):

- a metric value: numbers as they are (a ``real`` widened as Go widens a float32); ``true`` and
  ``false`` as 1 and 0; a timestamp or date as its Unix time in whole seconds (Go's
  ``time.Time.Unix``); any other type through its text, read as Go's ``strconv.ParseFloat``
  reads a decimal number (``1.5``, ``-2e3``, ``inf``, ``NaN``); text that is no number gives no
  sample (postgres_exporter: an error and no sample). A NULL gives no sample (postgres_exporter:
  NaN);
- a label: its text, a timestamp as Unix seconds, NULL as the empty string;
- DURATION: text in Go's ``time.ParseDuration`` syntax (``1h2m3.5s``, ``300ms``, ``-1.5h``, ``0``)
  as seconds, in whole milliseconds as postgres_exporter serves it; anything else no sample;
- MAPPEDMETRIC: the number its ``metric_mapping`` gives the column's text, no sample for text
  it does not list.

The expressions type-check whatever the column's type (they go through ``::text`` and dispatch on
``pg_typeof``), use no non-ASCII literal (a LATIN1 database reads them too) and no backslash
outside ``E''`` strings (whatever ``standard_conforming_strings`` is).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pglast
from pglast import ast
from pglast.enums import A_Expr_Kind, SetOperation

from exporter.advisor import quote_ident
from exporter.setupsql import quote_literal

ALIAS = "q"  # the user's query, as a subquery
_NUMBER = "'^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]{1,3})?$'"
_MAX_FLOAT8 = "1.7976931348623157e308"
# types whose text float8 reads exactly as Go's ParseFloat reads it (no regex needed)
_EXACT_TYPES = "'smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'double precision'::regtype, 'oid'::regtype"
# Go's duration units; \u00B5s and \u03BCs are the two micro signs (regex escapes, ASCII text)
_UNITS = r"ns|us|\\u00B5s|\\u03BCs|ms|s|m|h"
_DURATION = "E'^[-+]?(0|(([0-9]+([.][0-9]*)?|[.][0-9]+)(" + _UNITS + "))+)$'"
_DURATION_PART = "E'([0-9]*[.]?[0-9]*)(" + _UNITS + ")'"
_MAX_DURATION = "9223372036.854775807"  # Go's Duration is int64 nanoseconds
_EPOCH_TZ = "floor(extract(epoch FROM {r}::text::timestamptz))"
_EPOCH = "floor(extract(epoch FROM {r}::text::timestamp))"
_IS_TZ = "pg_typeof({r}) = 'timestamptz'::regtype"
_IS_TIMESTAMP = "pg_typeof({r}) IN ('timestamp'::regtype, 'date'::regtype)"


class SqlError(ValueError):
    """SQL that cannot be read (an unterminated string ...)."""


def ref(column: str) -> str:
    return f"{ALIAS}.{quote_ident(column)}"


def statements(sql: str) -> list[str]:
    """The statements of ``sql`` (PostgreSQL's scanner: comments and strings respected), each
    without its ``;``."""
    try:
        return [s for s in pglast.split(sql, with_parser=False) if s.strip()]
    except pglast.parser.ParseError as exc:
        raise SqlError(str(exc)) from None


def parse_select(sql: str):
    """``(is_select, outputs)`` of one statement: ``outputs`` is ``[(name, kind)]`` (kind
    ``"number"``, ``"text"`` or None when the SQL does not say) or None when a column's name is
    not plain (``*``, an unnamed expression). ``(None, None)`` when pglast cannot parse the SQL
    (newer syntax: the server will tell)."""
    try:
        tree = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        return None, None
    if len(tree) != 1:
        return None, None
    stmt = tree[0].stmt
    if not isinstance(stmt, ast.SelectStmt):
        return False, None
    while stmt.op != SetOperation.SETOP_NONE:  # a UNION's names are its first SELECT's
        stmt = stmt.larg
    if stmt.valuesLists or not stmt.targetList:
        return True, None
    outputs = [(_output_name(target), kind_of(target.val)) for target in stmt.targetList]
    return True, (None if any(name is None for name, _ in outputs) else outputs)


def _output_name(target) -> str | None:
    """The column name PostgreSQL gives a select-list item, when it is a plain one."""
    if target.name:
        return target.name
    node = target.val
    while isinstance(node, ast.TypeCast) and not isinstance(node.arg, ast.A_Const):
        node = node.arg
    if isinstance(node, ast.ColumnRef) and isinstance(node.fields[-1], ast.String):
        return node.fields[-1].sval
    if isinstance(node, ast.FuncCall):
        return node.funcname[-1].sval
    if isinstance(node, ast.CaseExpr):
        return "case"
    if isinstance(node, ast.CoalesceExpr):
        return "coalesce"
    return None


NUMBER_TYPES = frozenset({"int2", "int4", "int8", "float4", "float8", "numeric", "oid"})
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name"})
NUMBER_FUNCTIONS = frozenset({
    "count", "extract", "date_part", "length", "char_length", "octet_length", "pg_database_size",
    "pg_relation_size", "pg_table_size", "pg_indexes_size", "pg_total_relation_size", "pg_wal_lsn_diff",
    "pg_xlog_location_diff", "mxid_age", "pg_backend_pid", "random"})
SAME_AS_ARGUMENT = frozenset({"round", "floor", "ceil", "abs", "greatest", "least"})
TEXT_FUNCTIONS = frozenset({"current_database", "current_setting", "version", "current_user", "session_user",
                            "current_schema", "lower", "upper", "concat", "format"})


def kind_of(node) -> str | None:
    """``"number"`` or ``"text"`` when the expression's type is plain from the SQL alone (a cast,
    a literal, count(*), a size function ...), else None: the wrapper then dispatches on
    ``pg_typeof`` at run time."""
    if isinstance(node, ast.A_Const):
        if node.isnull:
            return None
        return "number" if isinstance(node.val, (ast.Integer, ast.Float)) else (
            "text" if isinstance(node.val, ast.String) else None)
    if isinstance(node, ast.TypeCast):
        typ = node.typeName.names[-1].sval
        return "number" if typ in NUMBER_TYPES else "text" if typ in TEXT_TYPES else None
    if isinstance(node, ast.FuncCall):
        name = node.funcname[-1].sval
        if name in SAME_AS_ARGUMENT:
            return "number" if node.args and _same(node.args) == "number" else None
        return "number" if name in NUMBER_FUNCTIONS else "text" if name in TEXT_FUNCTIONS else None
    if isinstance(node, (ast.MinMaxExpr, ast.CoalesceExpr)):
        return _same(node.args)
    if isinstance(node, ast.CaseExpr):
        results = [w.result for w in node.args] + ([node.defresult] if node.defresult is not None else [])
        return _same([r for r in results if not (isinstance(r, ast.A_Const) and r.isnull)])
    if (isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_OP
            and node.name[-1].sval in ("+", "-", "*", "/", "%", "^")):
        return _same([o for o in (node.lexpr, node.rexpr) if o is not None]) if node.rexpr is not None else None
    return None


def _same(nodes) -> str | None:
    kinds = {kind_of(n) for n in nodes}
    return kinds.pop() if len(kinds) == 1 and nodes else None


def value_expr(column: str, kind: str | None = None, factor: Fraction = Fraction(1)) -> str:
    """The column as a sample value, as postgres_exporter's dbToFloat64 reads it (a column the
    SQL shows to be a number is read as it is)."""
    r = ref(column)
    if kind == "number":
        return r if factor == 1 else scaled(f"{r}::float8", factor)
    t = f"{r}::text"
    expr = (f"CASE WHEN pg_typeof({r}) IN ({_EXACT_TYPES}) THEN {t}::float8\n"
            f"            WHEN pg_typeof({r}) = 'real'::regtype THEN {t}::float4::float8\n"
            f"            WHEN pg_typeof({r}) = 'bool'::regtype THEN CASE {t} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END\n"
            f"            WHEN {_IS_TZ.format(r=r)} THEN {_EPOCH_TZ.format(r=r)}\n"
            f"            WHEN {_IS_TIMESTAMP.format(r=r)} THEN {_EPOCH.format(r=r)}\n"
            f"            WHEN pg_typeof({r}) = 'numeric'::regtype OR {t} ~ {_NUMBER} THEN CASE "
            f"WHEN {t} IN ('NaN', 'Infinity', '-Infinity') THEN {t}::float8 "
            f"WHEN abs({t}::numeric) > {_MAX_FLOAT8} THEN NULL "
            f"WHEN abs({t}::numeric) < 1e-300 THEN 0 ELSE {t}::float8 END\n"
            f"            WHEN {t} ~* '^[-+]?inf(inity)?$' THEN CASE WHEN {t} LIKE '-%' THEN '-Infinity' "
            f"ELSE 'Infinity' END::float8\n"
            f"            WHEN lower({t}) = 'nan' THEN 'NaN'::float8 END::float8")
    return scaled(expr, factor)


def label_expr(column: str, kind: str | None = None) -> str:
    """The column as label text, as postgres_exporter's dbToString writes it (NULL: '')."""
    r = ref(column)
    if kind is not None:
        return f"coalesce({r}::text, '')"
    return (f"coalesce(CASE WHEN {_IS_TZ.format(r=r)} THEN {_EPOCH_TZ.format(r=r)}::text\n"
            f"              WHEN {_IS_TIMESTAMP.format(r=r)} THEN {_EPOCH.format(r=r)}::text ELSE {r}::text END, '')")


def duration_expr(column: str) -> str:
    """Go duration text (time.ParseDuration's syntax) as seconds, to the millisecond as
    postgres_exporter serves it (whole milliseconds, truncated); NULL for anything else."""
    t = f"{ref(column)}::text"
    units = ("CASE p[2] WHEN 'h' THEN 3600 WHEN 'm' THEN 60 WHEN 's' THEN 1 WHEN 'ms' THEN 0.001 "
             "WHEN 'ns' THEN 0.000000001 ELSE 0.000001 END")
    total = (f"(SELECT CASE WHEN {t} LIKE '-%' THEN -1 ELSE 1 END * coalesce(sum(p[1]::numeric * {units}), 0) "
             f"FROM regexp_matches({t}, {_DURATION_PART}, 'g') AS p)")
    return (f"CASE WHEN {t} ~ {_DURATION} THEN (SELECT CASE WHEN abs(d) <= {_MAX_DURATION} THEN trunc(d * 1000) / 1000 "
            f"END FROM (SELECT {total} AS d) AS parsed) END::float8")


def _float_literal(value: float) -> str:
    if math.isnan(value):
        return "'NaN'::float8"
    if math.isinf(value):
        return "'Infinity'::float8" if value > 0 else "'-Infinity'::float8"
    return f"{value!r}::float8"


def mapped_expr(column: str, mapping: dict[str, float], factor: Fraction = Fraction(1)) -> str:
    """The number ``mapping`` gives the column's text; NULL for text it does not list."""
    whens = " ".join(f"WHEN {quote_literal(text)} THEN {_float_literal(number)}" for text, number in mapping.items())
    return scaled(f"CASE {ref(column)}::text {whens} END", factor)


def scaled(expr: str, factor: Fraction) -> str:
    if factor == 1:
        return expr
    if factor.denominator == 1:
        return f"({expr}) * {factor.numerator}"
    if factor.numerator == 1:
        return f"({expr}) / {factor.denominator}"
    return f"({expr}) * {factor.numerator} / {factor.denominator}"


def wrap(sql: str, items: list[tuple[str, str]]) -> str:
    """``SELECT expr AS alias, ... FROM (SELECT * FROM (sql) AS source OFFSET 0) AS q``: the
    user's SQL verbatim, on lines of its own (a ``--`` comment on its last line cannot swallow the
    closing parenthesis). ``OFFSET 0`` keeps the planner from folding a constant column into the
    expressions (``'abc'::text::float8`` would fail the query even in a CASE branch not taken)."""
    select = ",\n       ".join(f"{expr} AS {quote_ident(alias)}" for expr, alias in items)
    return f"SELECT {select}\nFROM (SELECT * FROM (\n{sql.strip()}\n) AS source OFFSET 0) AS {ALIAS}\n"
