"""``dbperf advise --explain`` on real plans: a leading-wildcard LIKE gets pg_trgm advice (and the
DDL it gives really makes the planner use the index), the unfiltered inputs of a hash join are not
index findings (a selective probe side gets the join-key index, which the planner then uses), and
the plan summary comes first, above the warnings it announces."""

from __future__ import annotations

import json

import pytest

from exporter.cli import main

pytestmark = pytest.mark.pg

DB = "advisor_explain"


@pytest.fixture(scope="module")
def explain_db(pg):
    pg.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {DB}")
    with pg.connect(DB) as conn:
        conn.execute("""
            CREATE TABLE big (id int, cat int, name text);
            INSERT INTO big SELECT g, g % 100, md5(g::text) FROM generate_series(1, 50000) g;
            CREATE TABLE small (cat int PRIMARY KEY, label text);
            INSERT INTO small SELECT g, 'l' || g FROM generate_series(0, 99) g;
        """)
        conn.execute("VACUUM ANALYZE big")
        conn.execute("VACUUM ANALYZE small")
    return pg


def explain(pg, capsys, tmp_path, sql, *extra) -> dict:
    path = tmp_path / "advise.yaml"
    path.write_text(json.dumps({"targets": [{"name": "main", "dsn": pg.dsn(DB)}]}))
    capsys.readouterr()
    code = main(["advise", "--config", str(path), "--target", "main", "--format", "json", "--explain", sql, *extra])
    out, err = capsys.readouterr()
    assert code == 0 and err == "", err
    return json.loads(out)


def plan_of(pg, sql) -> dict:
    (plan,), = pg.execute(f"EXPLAIN (FORMAT JSON) {sql}", dbname=DB)
    return plan[0]["Plan"]


def nodes(plan):
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def run_ddl(pg, recommendation: str) -> str:
    """Runs the CREATE statements of a recommendation (one at a time: CONCURRENTLY needs that)
    and returns the index name."""
    statements = [s.strip() for s in recommendation.split(";") if "CREATE " in s]
    assert statements, recommendation
    with pg.connect(DB) as conn:
        for statement in statements:
            start = statement.index("CREATE ")
            conn.execute(statement[start:])
    index = statements[-1].split("CONCURRENTLY ", 1)[1].split()[0]
    pg.execute("ANALYZE big", dbname=DB)
    return index


def test_leading_wildcard_gets_trigram_advice_that_works(explain_db, capsys, tmp_path):
    sql = "SELECT id FROM big WHERE name LIKE '%abc%'"
    report = explain(explain_db, capsys, tmp_path, sql)
    (seq,) = [f for f in report["findings"] if f["check"] == "seq_scan"]
    rec = seq["recommendation"]
    assert "index on the filtered columns" not in rec
    assert "A B-tree index cannot serve name LIKE '%abc%'" in rec
    assert "CREATE EXTENSION IF NOT EXISTS pg_trgm; CREATE INDEX CONCURRENTLY big_name_trgm_idx ON public.big " \
           "USING gin (name gin_trgm_ops);" in rec
    assert seq["details"]["index"] == "trigram"
    index = run_ddl(explain_db, rec)
    try:
        used = {n.get("Index Name") for n in nodes(plan_of(explain_db, sql))}
        assert index in used, used
    finally:
        explain_db.execute(f"DROP INDEX {index}", dbname=DB)


def test_two_character_pattern_says_a_trigram_index_cannot_narrow_it(explain_db, capsys, tmp_path):
    report = explain(explain_db, capsys, tmp_path, "SELECT id FROM big WHERE name LIKE '%ab%'")
    (seq,) = [f for f in report["findings"] if f["check"] == "seq_scan"]
    assert "fewer than 3 characters" in seq["recommendation"] and "change the query" in seq["recommendation"]
    assert "gin_trgm_ops" in seq["recommendation"]
    assert "index on the filtered columns" not in seq["recommendation"]


def test_mixed_filter_gets_the_btree_and_the_trigram_index(explain_db, capsys, tmp_path):
    report = explain(explain_db, capsys, tmp_path, "SELECT id FROM big WHERE name ILIKE '%abc%' AND cat = 3")
    (seq,) = [f for f in report["findings"] if f["check"] == "seq_scan"]
    assert "CREATE INDEX CONCURRENTLY big_cat_idx ON public.big (cat);" in seq["recommendation"]
    assert "name ILIKE '%abc%'" in seq["recommendation"] and seq["details"]["index"] == "btree+trigram"


def test_unfiltered_hash_join_inputs_are_not_index_findings(explain_db, capsys, tmp_path):
    sql = "SELECT a.name FROM big a JOIN big b ON b.id = a.id"
    plan = plan_of(explain_db, sql)
    assert plan["Node Type"] == "Hash Join", plan  # both inputs: unfiltered scans of 50000 rows
    hashed = next(n for n in nodes(plan) if n["Node Type"] == "Hash")
    assert hashed["Plans"][0]["Node Type"] == "Seq Scan" and "Filter" not in hashed["Plans"][0]
    report = explain(explain_db, capsys, tmp_path, sql)
    assert [f for f in report["findings"] if f["check"] == "seq_scan"] == []
    assert not [f for f in report["findings"] if f["severity"] in ("high", "medium")], report["findings"]


def test_selective_probe_side_gets_the_join_key_index(explain_db, capsys, tmp_path):
    sql = "SELECT b.name FROM small s JOIN big b ON b.cat = s.cat WHERE s.label = 'l3'"
    plan = plan_of(explain_db, sql)
    assert plan["Node Type"] == "Hash Join" and plan["Plans"][0]["Relation Name"] == "big", plan
    report = explain(explain_db, capsys, tmp_path, sql)
    (seq,) = [f for f in report["findings"] if f["check"] == "seq_scan"]
    assert seq["severity"] == "low" and "public.big" in seq["subject"]
    assert "CREATE INDEX CONCURRENTLY big_cat_idx ON public.big (cat);" in seq["recommendation"]
    index = run_ddl(explain_db, seq["recommendation"])
    try:
        used = {n.get("Index Name") for n in nodes(plan_of(explain_db, sql))}
        assert index in used, used
    finally:
        explain_db.execute(f"DROP INDEX {index}", dbname=DB)


@pytest.mark.parametrize("analyze", [False, True])
def test_plan_summary_comes_first_and_announces_the_warnings(explain_db, capsys, tmp_path, analyze):
    sql = "SELECT id FROM big WHERE name LIKE '%abc%' ORDER BY name"
    report = explain(explain_db, capsys, tmp_path, sql, *(["--analyze"] if analyze else []))
    first, *warnings = report["findings"]
    assert first["check"] == "plan_summary" and warnings
    assert len(warnings) >= 2 and first["recommendation"] == f"The {len(warnings)} warnings below say where to look."
    path = tmp_path / "advise.yaml"
    capsys.readouterr()
    assert main(["advise", "--config", str(path), "--target", "main", "--explain", sql,
                 *(["--analyze"] if analyze else [])]) == 0
    out = capsys.readouterr().out
    assert out.index("#1 [info]") < out.index("#2 [")
    assert out.index("plan_summary") < out.index("seq_scan")


def test_clean_plan_says_so(explain_db, capsys, tmp_path):
    report = explain(explain_db, capsys, tmp_path, "SELECT label FROM small WHERE cat = 5")
    assert [(f["check"], f["recommendation"]) for f in report["findings"]] == \
        [("plan_summary", "No warnings: the plan looks fine.")]
