"""``dbperf plans``: the stored plans of a statement from the state directory, without a server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from exporter.postgres.plan_history import PlanHistory, fingerprint
from exporter.state import state_file

pytestmark = pytest.mark.fast

OLD = {"Node Type": "Index Scan", "Relation Name": "orders", "Schema": "public", "Index Name": "orders_customer",
       "Plan Rows": 3}
NEW = {"Node Type": "Seq Scan", "Relation Name": "orders", "Schema": "public", "Plan Rows": 3}


def dbperf(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "dbperf.yml"
    path.write_text(yaml.safe_dump({"state_dir": "state", "targets": [
        {"name": "main", "dsn_env": "UNSET_FOR_THIS_TEST", "plans": {"enabled": True}}]}))
    history = PlanHistory(state_file(tmp_path / "state", "plans", "main"))
    history.record("shop", "-77", OLD, "generic", 1_700_000_000.0)
    history.record("shop", "-77", NEW, "sample", 1_700_003_600.0)
    history.save()
    return path


def test_prints_the_plans_newest_first_with_when_first_seen(config):
    proc = dbperf("plans", "--config", str(config), "--target", "main", "--queryid", "-77")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index(fingerprint(NEW)) < out.index(fingerprint(OLD))
    assert f"plan {fingerprint(NEW)} (current) in database shop: first seen 2023-11-14 23:13:20 UTC" in out
    assert f"plan {fingerprint(OLD)} (earlier) in database shop: first seen 2023-11-14 22:13:20 UTC" in out
    assert "-> Index Scan on public.orders using orders_customer  (rows=3)" in out
    assert "from a sample" in out and "GENERIC_PLAN" in out
    proc = dbperf("plans", "--config", str(config), "--target", "main", "--queryid", "-77", "--format", "json")
    plans = json.loads(proc.stdout)
    assert [p["fingerprint"] for p in plans] == [fingerprint(NEW), fingerprint(OLD)]
    assert plans[0]["plan"]["Node Type"] == "Seq Scan"


@pytest.mark.parametrize("args, code, message", [
    (["--target", "nope", "--queryid", "1"], 2, "dbperf plans: --target: no target 'nope' in "),
    (["--target", "main", "--queryid", "x1"], 2, "dbperf plans: --queryid: must be an integer"),
    (["--target", "main", "--queryid", "78"], 1, "dbperf plans: no stored plans of statement 78 of target main"),
    (["--target", "main", "--queryid", "-77", "--database", "other"], 1, "in database other"),
])
def test_errors_are_one_line(config, args, code, message):
    proc = dbperf("plans", "--config", str(config), *args)
    assert proc.returncode == code and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
