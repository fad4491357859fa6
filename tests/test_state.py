"""The state directory: where it is, atomic JSON writes, unreadable files treated as absent."""

from __future__ import annotations

import json
import os

import pytest

from exporter.config import parse
from exporter.state import read_json, state_dir, state_file, write_json

pytestmark = pytest.mark.fast


def test_state_dir_order(tmp_path):
    assert state_dir("/srv/x", env={"DBPERF_STATE_DIR": "/a"}) == type(tmp_path)("/srv/x")
    assert str(state_dir("", env={"DBPERF_STATE_DIR": "/a", "XDG_STATE_HOME": "/b"})) == "/a"
    assert str(state_dir("", env={"XDG_STATE_HOME": "/b"})) == "/b/dbperf"
    assert str(state_dir("", env={"HOME": "/h"})) == "/h/.local/state/dbperf"


def test_config_state_dir_is_relative_to_the_file(tmp_path):
    data = {"state_dir": "state", "targets": [{"name": "a", "dsn": "host=x dbname=y"}]}
    assert parse(data, source=str(tmp_path / "c.yaml")).state_dir == str(tmp_path / "state")
    assert parse({**data, "state_dir": "/abs"}, source=str(tmp_path / "c.yaml")).state_dir == "/abs"
    assert parse({"targets": data["targets"]}).state_dir == ""


def test_write_then_read_and_no_temporary_left(tmp_path):
    path = state_file(tmp_path / "d", "logs", "prod/db 1")
    assert path.name == "logs-prod_db_1.json"
    write_json(path, {"offset": 12})
    write_json(path, {"offset": 13})
    assert read_json(path) == {"offset": 13}
    assert os.listdir(path.parent) == [path.name]
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_unreadable_file_is_absent(tmp_path, caplog):
    path = tmp_path / "x.json"
    assert read_json(path, {"none": 1}) == {"none": 1}
    path.write_text("{not json")
    assert read_json(path, []) == []
    assert "cannot be read" in caplog.text
    path.write_text(json.dumps([1]))
    assert read_json(path) == [1]
