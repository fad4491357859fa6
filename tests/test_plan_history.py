"""Plan fingerprints and the stored plan history (exporter.postgres.plan_history), and the guard on
what is EXPLAINed (exporter.postgres.plans.explain_sql, mask_plan): pure logic on plans and texts."""

from __future__ import annotations

import json

import pytest

from exporter.postgres.plan_history import MAX_PLANS, PlanHistory, fingerprint, statement_plans
from exporter.postgres.plans import Refused, explain_sql, mask_plan
from exporter.state import state_file

pytestmark = pytest.mark.fast


def index_scan(cost=8.3, rows=1, index="t_x"):
    return {"Node Type": "Index Scan", "Relation Name": "t", "Schema": "public", "Index Name": index,
            "Total Cost": cost, "Plan Rows": rows, "Index Cond": "(t.x = 42)"}


def seq_scan(cost=1693.0, rows=50):
    return {"Node Type": "Seq Scan", "Relation Name": "t", "Schema": "public", "Total Cost": cost, "Plan Rows": rows,
            "Filter": "(t.x = 42)"}


def test_fingerprint_ignores_costs_rows_and_literals_but_not_the_access_path():
    assert fingerprint(index_scan()) == fingerprint(index_scan(cost=99.0, rows=1000) | {"Index Cond": "(t.x = 7)"})
    assert fingerprint(index_scan()) != fingerprint(seq_scan())
    assert fingerprint(index_scan()) != fingerprint(index_scan(index="t_x2"))
    assert len(fingerprint(seq_scan())) == 12 and fingerprint(seq_scan()) == fingerprint(seq_scan())
    # the tree's shape counts: the same nodes under another parent are another plan
    join = {"Node Type": "Nested Loop", "Plans": [seq_scan(), index_scan()]}
    nested = {"Node Type": "Nested Loop", "Plans": [{"Node Type": "Materialize", "Plans": [seq_scan()]}, index_scan()]}
    assert fingerprint(join) != fingerprint(nested)


def test_fingerprint_of_a_deep_plan_without_recursion():
    plan = node = {"Node Type": "Result"}
    for _ in range(5000):
        child = {"Node Type": "Result"}
        node["Plans"] = [child]
        node = child
    assert len(fingerprint(plan)) == 12


def test_history_counts_changes_and_survives_a_restart(tmp_path):
    path = state_file(tmp_path, "plans", "main")
    history = PlanHistory(path)
    first, previous = history.record("app", "42", index_scan(), "generic", 1000.0)
    assert previous is None
    assert history.record("app", "42", index_scan(cost=9.0), "generic", 1100.0) == (first, None)
    second, previous = history.record("app", "42", seq_scan(), "generic", 1200.0)
    assert previous == first and second != first
    # an earlier plan coming back is a change too, and keeps when it was first seen
    assert history.record("app", "42", index_scan(), "generic", 1300.0) == (first, second)
    history.save()
    again = PlanHistory(path)  # a restart
    assert again.current("app", "42") == (first, 2)
    plans = statement_plans(str(tmp_path), "main", "42")
    assert [(p["fingerprint"], p["first_seen"], p["last_seen"]) for p in plans] == [
        (first, 1000.0, 1300.0), (second, 1200.0, 1200.0)]
    assert statement_plans(str(tmp_path), "main", "42", datname="other") == []
    assert statement_plans(str(tmp_path), "main", "43") == []


def test_history_is_bounded_and_drops_output_lists(tmp_path):
    history = PlanHistory(state_file(tmp_path, "plans", "main"))
    for i in range(MAX_PLANS + 5):
        history.record("app", "1", index_scan(index=f"i{i}") | {"Output": ["t.x", "t.y"]}, "generic", float(i))
    history.save()
    plans = statement_plans(str(tmp_path), "main", "1")
    assert len(plans) == MAX_PLANS and plans[0]["plan"]["Index Name"] == f"i{MAX_PLANS + 4}"
    assert "Output" not in plans[0]["plan"]
    huge = seq_scan() | {"Filter": "x" * 200_000}
    history.record("app", "2", huge, "generic", 1.0)
    history.save()
    stored = statement_plans(str(tmp_path), "main", "2")[0]
    assert stored["plan"] is None and stored["fingerprint"] == fingerprint(huge)


def test_a_damaged_state_file_is_no_reason_not_to_start(tmp_path):
    path = state_file(tmp_path, "plans", "main")
    path.write_text("{not json")
    assert PlanHistory(path).statements == {}
    path.write_text(json.dumps({"format": 1, "statements": [{"datname": "a"}, {
        "datname": "a", "queryid": "5", "changes": 1, "plans": [{"fingerprint": "abc", "first_seen": 1, "last_seen": 2,
                                                                 "source": "sample", "plan": None}]}]}))
    assert PlanHistory(path).current("a", "5") == ("abc", 1)


@pytest.mark.parametrize("text, reason", [
    ("SELECT 1; DROP TABLE t", "2 statements"),
    ("VACUUM t", "not a SELECT, INSERT, UPDATE or DELETE (Vacuum)"),
    ("CREATE TABLE x AS SELECT 1", "not a SELECT, INSERT, UPDATE or DELETE (CreateTableAs)"),
    ("SELECT * INTO x FROM t", "SELECT ... INTO creates a table"),
    ("EXPLAIN ANALYZE DELETE FROM t", "not a SELECT, INSERT, UPDATE or DELETE (Explain)"),
    ("SELECT 1 FROM", "does not parse"),
    ("SELECT 1\x00; DROP TABLE t", "NUL"),
    ("SELECT * FROM t WHERE id = $1", "parameters"),  # a sample: its values are not known
])
def test_refused_texts(text, reason):
    with pytest.raises(Refused, match=reason.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")) as refused:
        explain_sql(text, "sample")
    # refused for what the statement is (never tried again), or for this text only (another sample may do)
    assert refused.value.kind == (reason.startswith(("not a", "2 statements", "SELECT ... INTO")))


def test_explain_sql_is_one_explain_of_the_statement_never_analyze():
    sql = explain_sql("SELECT * FROM t WHERE id = $1 -- a trailing comment", "generic")
    assert sql.startswith("EXPLAIN (GENERIC_PLAN, VERBOSE, FORMAT JSON) SELECT") and "ANALYZE" not in sql
    assert sql.endswith("/*application='dbperf'*/")  # dbperf's mark, on a line of its own after the comment
    assert explain_sql("UPDATE t SET x = 1 WHERE id = 2", "sample").startswith("EXPLAIN (VERBOSE, FORMAT JSON) UPDATE")
    assert explain_sql("WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d", "sample")


def test_mask_plan_masks_literals_keeps_names():
    plan = mask_plan({"Node Type": "Index Scan", "Relation Name": "sales_2024", "Index Name": "sales_2024_pkey",
                      "Index Cond": "(s.id = 42)", "Filter": "(s.name = 'bob'::text)",
                      "Plans": [{"Node Type": "Seq Scan", "Filter": "(x.y = $1)"}]})
    assert plan["Relation Name"] == "sales_2024" and plan["Index Name"] == "sales_2024_pkey"
    assert "42" not in plan["Index Cond"] and "bob" not in plan["Filter"] and "<redacted>" in plan["Filter"]
    assert plan["Plans"][0]["Filter"] == "(x.y = $1)"


def test_damaged_stored_plans_are_skipped(tmp_path):
    from exporter.postgres.plan_history import FORMAT, PlanHistory
    from exporter.state import write_json

    path = tmp_path / "plans.json"
    good = {"fingerprint": "abc", "first_seen": 1.0, "last_seen": 2.0, "source": "generic", "plan": None}
    write_json(path, {"format": FORMAT, "statements": [
        {"datname": "d", "queryid": "1", "plans": ["junk", {"fingerprint": 3}, {**good, "last_seen": "x"}]},
        {"datname": "d", "queryid": "2", "plans": [good, {"no": "fingerprint"}]}]})
    history = PlanHistory(path)
    assert list(history.statements) == [("d", "2")]
    assert history.current("d", "2")[0] == "abc"
    history.record("d", "2", {"Node Type": "Seq Scan"}, "generic", 3.0)
    history.save()  # no TypeError from a damaged entry
    assert PlanHistory(path).statements[("d", "2")]["changes"] == 1


@pytest.mark.parametrize("sql", ["SELECT 1 INTO x UNION SELECT 2", "(SELECT 1 INTO x) UNION SELECT 2",
                                 "SELECT 1 INTO x"])
def test_select_into_anywhere_is_refused(sql):


    with pytest.raises(Refused, match="INTO"):
        explain_sql(sql, "generic")
