"""Run sources: where pipeline runs are read from.

- ``table``: the generic runs table (``dbperf pipelines init-sql``) or a user's own table through
  a column mapping (and a status mapping when its statuses are not ours).
- ``airflow``: Airflow's metadata DB (``dag_run`` + ``task_instance``), 2.x or 3.x, told apart by
  their columns (3.x renamed ``execution_date`` to ``logical_date``).

Each source is turned into one SQL row set with the canonical columns ``pipeline, run_id,
status, started_at, finished_at, rows_processed, errors`` that the collector aggregates. This
module also parses the target's ``pipelines:`` config key into typed objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from exporter.pipelines.schema import ACTIVE, FINISHED, SCHEMA, STATUSES, TABLE

TYPES = ("table", "airflow")
COLUMNS = ("pipeline", "run_id", "status", "started_at", "finished_at", "rows_processed", "errors")
OPTIONAL_COLUMNS = ("rows_processed", "errors")  # may be mapped to null: not stored
DEFAULT_LATE_WINDOW = 900.0  # seconds
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_QUALIFIED = re.compile(r"^(?:([A-Za-z_][A-Za-z0-9_$]*)\.)?([A-Za-z_][A-Za-z0-9_$]*)$")
# Airflow: the columns every version since 2.0 has, and those the version is told by
AIRFLOW_DAG_RUN = ("dag_id", "run_id", "state", "start_date", "end_date")
AIRFLOW_TASK_INSTANCE = ("dag_id", "run_id", "state")


class SourceError(RuntimeError):
    """A source cannot be read as configured; ``str()`` is one line naming the table/column."""


@dataclass(frozen=True)
class Source:
    type: str
    name: str                  # the ``source`` label
    database: str | None       # None: the target's own database
    schema: str                # table sources: the table's schema; airflow: the metadata schema
    table: str = TABLE         # table sources only
    columns: dict = field(default_factory=dict)   # canonical -> column name, or None (not stored)
    statuses: dict = field(default_factory=dict)  # stored value -> canonical status
    expected_intervals: dict = field(default_factory=dict)  # pipeline -> seconds

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.table}" if self.type == "table" else f"{self.schema}.dag_run"


@dataclass(frozen=True)
class Pipelines:
    sources: tuple = ()
    late_window: float = DEFAULT_LATE_WINDOW  # finishes older than this are folded into totals


# -- config ------------------------------------------------------------------------------------
def parse(reader) -> Pipelines:
    """``pipelines:`` of one target (a ``exporter.config._Reader``) -> :class:`Pipelines`."""
    reader.allow("sources", "late_window")
    late_window = reader.get("late_window", float, DEFAULT_LATE_WINDOW)
    if late_window <= 0:
        reader.fail("late_window", "must be greater than 0")
    raw = reader.data.get("sources")
    if not isinstance(raw, list) or not raw:
        reader.fail("sources", "must be a non-empty list of run sources (type: table or airflow)")
    sources, names = [], set()
    for i, item in enumerate(raw):
        source = _source(type(reader)(reader.source, item, reader.key(f"sources[{i}]")))
        if source.name in names:
            reader.fail(f"sources[{i}].name", f"duplicate source name {source.name!r}; give each source a name")
        names.add(source.name)
        sources.append(source)
    return Pipelines(sources=tuple(sources), late_window=late_window)


def _source(reader) -> Source:
    kind = reader.get("type", str)
    if kind not in TYPES:
        reader.fail("type", f"must be one of {', '.join(TYPES)}, got {kind!r}")
    common = ("type", "name", "database", "expected_intervals")
    if kind == "table":
        reader.allow(*common, "table", "columns", "statuses")
    else:
        reader.allow(*common, "schema")
    database = reader.get("database", str)
    intervals = _intervals(reader.sub("expected_intervals"))
    if kind == "airflow":
        schema = reader.get("schema", str, "public")
        if not _IDENT.match(schema):
            reader.fail("schema", f"must be a plain identifier, got {schema!r}")
        return Source("airflow", reader.get("name", str, "airflow"), database, schema,
                      expected_intervals=intervals)
    table = reader.get("table", str, f"{SCHEMA}.{TABLE}")
    match = _QUALIFIED.match(table)
    if not match:
        reader.fail("table", f"must be TABLE or SCHEMA.TABLE (plain identifiers), got {table!r}")
    schema, name = match.group(1) or "public", match.group(2)
    return Source("table", reader.get("name", str, f"{schema}.{name}"), database, schema, name,
                  columns=_columns(reader.sub("columns")), statuses=_statuses(reader.sub("statuses")),
                  expected_intervals=intervals)


def _intervals(reader) -> dict:
    out = {}
    for pipeline in reader.data:
        seconds = reader.duration(str(pipeline), reader.data[pipeline])
        if seconds <= 0:
            reader.fail(str(pipeline), "must be greater than 0")
        out[str(pipeline)] = seconds
    return out


def _columns(reader) -> dict:
    reader.allow(*COLUMNS)
    out = {c: c for c in COLUMNS}
    for canonical, value in reader.data.items():
        if value is None:
            if canonical not in OPTIONAL_COLUMNS:
                reader.fail(canonical, f"is required (only {', '.join(OPTIONAL_COLUMNS)} may be null)")
            out[canonical] = None
        elif not isinstance(value, str) or not _IDENT.match(value):
            reader.fail(canonical, f"must be a column name (a plain identifier), got {value!r}")
        else:
            out[canonical] = value
    return out


def _statuses(reader) -> dict:
    reader.allow(*STATUSES)
    out = {}
    for canonical, values in reader.data.items():
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            reader.fail(canonical, f"must be a status value or a list of them, got {values!r}")
        for value in values:
            if value in out:
                reader.fail(canonical, f"status value {value!r} is mapped twice")
            out[value] = canonical
    return out


# -- SQL ---------------------------------------------------------------------------------------
def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def in_list(values) -> str:
    return ", ".join(literal(v) for v in values)


@dataclass(frozen=True)
class Resolved:
    """A source checked against the database: the canonical row set and what it stores."""

    rows_sql: str             # SELECT pipeline, ..., errors FROM ... r WHERE {where}  (raw columns as r.x)
    finished_col: str         # the raw finish column, for index-friendly range predicates
    status_col: str           # the raw status column
    finished_values: tuple    # stored status values meaning finished
    active_values: tuple      # stored status values meaning queued or running
    has_rows: bool
    has_errors: bool
    version: str              # airflow "2" / "3"; "" for tables


def catalog_sql(source: Source) -> str:
    """One statement: ``(relation, columns)`` per relation the source reads (columns NULL when the
    relation does not exist)."""
    if source.type == "table":
        relations = [f"{ident(source.schema)}.{ident(source.table)}"]
    else:
        relations = [f"{ident(source.schema)}.dag_run", f"{ident(source.schema)}.task_instance"]
    parts = [f"SELECT {literal(r)} AS rel, (SELECT array_agg(attname::text) FROM pg_attribute "
             f"WHERE attrelid = to_regclass({literal(r)}) AND attnum > 0 AND NOT attisdropped) AS cols"
             for r in relations]
    return " UNION ALL ".join(parts)


def resolve(source: Source, found: dict, datname: str) -> Resolved:
    """``found``: relation -> column names (None when missing) from :func:`catalog_sql`."""
    where = f"database {datname}"
    if source.type == "table":
        rel = f"{ident(source.schema)}.{ident(source.table)}"
        cols = found.get(rel)
        if cols is None:
            hint = " (create it with: dbperf pipelines init-sql | psql)" if source.table == TABLE else ""
            raise SourceError(f"pipelines source {source.name!r}: table {source.relation} does not exist "
                              f"in {where} or is not visible to dbperf's role{hint}")
        for canonical in COLUMNS:
            column = source.columns.get(canonical, canonical)
            if column is not None and column not in cols:
                mapped = "" if column == canonical else f" (columns.{canonical})"
                raise SourceError(f"pipelines source {source.name!r}: table {source.relation} in {where} "
                                  f"has no column {column!r}{mapped}")
        c = {k: (f"r.{ident(v)}" if v else None) for k, v in ((k, source.columns.get(k, k)) for k in COLUMNS)}
        status = c["status"]
        finished_values, active_values = tuple(FINISHED), tuple(ACTIVE)
        status_expr = f"{status}::text"
        if source.statuses:
            whens = []
            for canonical in STATUSES:
                values = [v for v, s in source.statuses.items() if s == canonical]
                if values:
                    whens.append(f"WHEN {status}::text IN ({in_list(values)}) THEN {literal(canonical)}")
            status_expr = f"CASE {' '.join(whens)} ELSE {status}::text END"
            unmapped = [s for s in STATUSES if s not in source.statuses]
            finished_values = tuple(v for v, s in source.statuses.items() if s in FINISHED) + tuple(
                s for s in unmapped if s in FINISHED)
            active_values = tuple(v for v, s in source.statuses.items() if s in ACTIVE) + tuple(
                s for s in unmapped if s in ACTIVE)
        rows = f"{c['rows_processed']}::numeric" if c["rows_processed"] else "NULL::numeric"
        errors = f"{c['errors']}::numeric" if c["errors"] else "NULL::numeric"
        rows_sql = (f"SELECT {c['pipeline']}::text AS pipeline, {c['run_id']}::text AS run_id, "
                    f"{status_expr} AS status, {c['started_at']} AS started_at, "
                    f"{c['finished_at']} AS finished_at, {rows} AS rows_processed, {errors} AS errors "
                    f"FROM {rel} r WHERE {{where}}")
        return Resolved(rows_sql, c["finished_at"], f"{status}::text", finished_values, active_values,
                        c["rows_processed"] is not None, c["errors"] is not None, "")
    # airflow
    dag_run, task_instance = f"{ident(source.schema)}.dag_run", f"{ident(source.schema)}.task_instance"
    for rel, needed in ((dag_run, AIRFLOW_DAG_RUN), (task_instance, AIRFLOW_TASK_INSTANCE)):
        cols = found.get(rel)
        short = f"{source.schema}.{rel.rsplit('.', 1)[1]}"
        if cols is None:
            raise SourceError(f"pipelines source {source.name!r}: table {short} does not exist in {where} "
                              "(is this Airflow's metadata database? set schema: if it is not public)")
        for column in needed:
            if column not in cols:
                raise SourceError(f"pipelines source {source.name!r}: table {short} in {where} has no column "
                                  f"{column!r}; not an Airflow 2.x/3.x metadata database?")
    cols = found[dag_run]
    version = "3" if "logical_date" in cols else "2" if "execution_date" in cols else "unknown"
    errors = (f"(SELECT count(*) FROM {task_instance} ti WHERE ti.dag_id = r.dag_id AND ti.run_id = r.run_id "
              "AND ti.state = 'failed')::numeric")
    rows_sql = (f"SELECT r.dag_id::text AS pipeline, r.run_id::text AS run_id, r.state::text AS status, "
                f"r.start_date AS started_at, r.end_date AS finished_at, NULL::numeric AS rows_processed, "
                f"{errors} AS errors FROM {dag_run} r WHERE {{where}}")
    return Resolved(rows_sql, "r.end_date", "r.state::text", FINISHED, ACTIVE, False, True, version)
