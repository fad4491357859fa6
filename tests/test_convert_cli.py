"""`dbperf convert-queries` as a command: a queries file it refuses is one line naming the file and
the key (exit 2, nothing written); --output; exit codes 0, 3, 1 (docs/exit-codes.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.cli import main

pytestmark = pytest.mark.fast

FIXTURES = Path(__file__).parent / "fixtures" / "postgres_exporter"
GOOD = 'app_x:\n  query: "SELECT 1 AS n"\n  master: true\n  metrics:\n    - n: {usage: GAUGE, description: "N"}\n'


@pytest.mark.parametrize("text, where", [
    ("app_x: [1\n", "invalid YAML: line 2"),
    ("", "the file is empty"),
    ("- query: SELECT 1\n", "must be a mapping of namespaces"),
    ("app_x: SELECT 1\n", "app_x: must be a mapping with query and metrics"),
    ("app_x:\n  query: [1]\n", "app_x.query: must be text"),
    ("app_x:\n  query: SELECT 1\n  master: yes please\n", "app_x.master: must be true or false"),
    ("app_x:\n  query: SELECT 1\n  cache_seconds: -5\n", "app_x.cache_seconds: must be a whole number"),
    ("app_x:\n  query: SELECT 1\n  cache_seconds: 1.5\n", "app_x.cache_seconds: must be a whole number"),
    ("app_x:\n  query: SELECT 1\n  runonserver: [10]\n", "app_x.runonserver: must be text"),
    ("app_x:\n  query: SELECT 1\n  metrics: {n: {usage: GAUGE}}\n", "app_x.metrics: must be a list"),
    ("app_x:\n  query: SELECT 1\n  metrics: [n]\n", "app_x.metrics[0]: must be a mapping of a column"),
    ("app_x:\n  query: SELECT 1\n  metrics: [{n: GAUGE}]\n", "app_x.metrics[0].n: must be a mapping with usage"),
    ("app_x:\n  query: SELECT 1\n  metrics: [{n: {usage: [GAUGE]}}]\n", "app_x.metrics[0].n.usage: must be text"),
    ("app_x:\n  query: SELECT 1\n  metrics: [{n: {usage: MAPPEDMETRIC, metric_mapping: {a: high}}}]\n",
     "app_x.metrics[0].n.metric_mapping.a: must be a number"),
    ("app_x:\n  query: SELECT 1\n  metrics: [{n: {usage: MAPPEDMETRIC, metric_mapping: {on: 1}}}]\n",
     "quote the text to map"),
    ("app_x:\n  query: SELECT 1\napp_x:\n  query: SELECT 2\n", "duplicate key"),
    ("1: {query: SELECT 1}\n", "a namespace name must be text"),
    ("app_x: !!python/object:os.system {}\n", "is not allowed"),
])
def test_a_queries_file_of_the_wrong_shape_is_one_line_naming_the_file_and_key(tmp_path, capsys, text, where):
    path = tmp_path / "queries.yaml"
    path.write_text(text)
    out = tmp_path / "out.yaml"
    assert main(["convert-queries", str(path), "--output", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    (line,) = captured.err.splitlines()
    assert line.startswith(f"dbperf convert-queries: config error: {path}: ") and where in line, line


@pytest.mark.parametrize("make, why", [
    (lambda p: p, "No such file or directory"),
    (lambda p: (p.mkdir(), p)[1], "not a regular file (a directory)"),
    (lambda p: (os.mkfifo(p), p)[1], "not a regular file (a FIFO)"),
    (lambda p: (p.write_bytes(b"app_x: \xff\n"), p)[1], "UTF-8"),
    (lambda p: (p.write_text("a: " + "x" * (2 << 20)), p)[1], "larger than"),
])
def test_a_queries_file_that_cannot_be_read_is_one_line(tmp_path, capsys, make, why):
    path = make(tmp_path / "queries.yaml")
    assert main(["convert-queries", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"dbperf convert-queries: config error: {path}: cannot read queries file") and why in line


def test_everything_converted_is_exit_0_and_the_output_file_is_written(tmp_path, capsys):
    path, out = tmp_path / "queries.yaml", tmp_path / "collectors.yaml"
    path.write_text(GOOD)
    assert main(["convert-queries", str(path), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert yaml.safe_load(out.read_text())["collectors"]["app_x"]["scope"] == "cluster"
    assert captured.err.splitlines() == [f"dbperf convert-queries: {path}: 1 collectors, 1 metrics converted"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dbperf-convert-")]  # no temporary left


def test_omissions_are_exit_3_and_the_rest_is_still_written(tmp_path, capsys):
    out = tmp_path / "collectors.yaml"
    assert main(["convert-queries", str(FIXTURES / "classic.yaml"), "-o", str(out)]) == 3
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].endswith("not converted (named above)")
    assert "pg_replication" in yaml.safe_load(out.read_text())["collectors"]


def test_the_output_may_not_be_the_queries_file(tmp_path, capsys):
    path = tmp_path / "queries.yaml"
    path.write_text(GOOD)
    assert main(["convert-queries", str(path), "--output", str(path)]) == 2
    assert "is the queries file itself" in capsys.readouterr().err
    assert path.read_text() == GOOD


def test_an_output_that_cannot_be_written_is_exit_1(tmp_path, capsys):
    path = tmp_path / "queries.yaml"
    path.write_text(GOOD)
    assert main(["convert-queries", str(path), "--output", str(tmp_path / "missing" / "out.yaml")]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"dbperf convert-queries: --output {tmp_path}/missing/out.yaml: cannot write: "
                    "No such file or directory")


def test_the_command_runs_as_dbperf_does(tmp_path):
    """The real entry point (python -m exporter): exit code and stderr, no traceback."""
    path = tmp_path / "queries.yaml"
    path.write_text("app_x: [")
    proc = subprocess.run([sys.executable, "-m", "exporter", "convert-queries", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
