"""Which logging settings are off, in the words check-config --connect prints."""

from __future__ import annotations

import pytest

from exporter.serverlog.settings import LOG_SETTINGS, SETTINGS_SQL, off

pytestmark = pytest.mark.fast

ALL_ON = {"log_connections": "on", "log_disconnections": "on", "log_lock_waits": "on", "log_temp_files": "0",
          "log_checkpoints": "on", "log_autovacuum_min_duration": "0", "log_min_duration_statement": "1000",
          "log_statement": "ddl", "auto_explain.log_min_duration": "1000", "lc_messages": "C",
          "log_destination": "jsonlog", "logging_collector": "on"}


def test_nothing_off_when_everything_is_on():
    assert off(ALL_ON, "jsonlog") == []


def test_defaults_of_a_fresh_server_are_named_with_what_they_cost_the_metrics():
    fresh = dict(ALL_ON, log_connections="off", log_temp_files="-1", log_statement="none", log_destination="stderr",
                 lc_messages="de_DE.UTF-8", **{"auto_explain.log_min_duration": None})
    lines = off(fresh, "csvlog")
    assert lines[0] == "log_connections is off: pg_log_connections_total stay empty; set log_connections = 'on'"
    assert any(line.startswith("log_temp_files is -1") for line in lines)
    assert any(line.startswith("log_statement is none") for line in lines)
    assert any(line.startswith("auto_explain is not loaded") for line in lines)
    assert any("lc_messages is 'de_DE.UTF-8'" in line for line in lines)
    assert lines[-1] == "log_destination is 'stderr': add csvlog (with logging_collector = on)"


def test_postgresql_18_log_connections_list_empty_is_off():
    assert off(dict(ALL_ON, log_connections=""), "jsonlog")[0].startswith("log_connections is empty")
    assert off(dict(ALL_ON, log_connections="receipt,authentication,authorization"), "jsonlog") == []


def test_every_setting_is_read():
    assert all(f"'{name}'" in SETTINGS_SQL for name, *_ in LOG_SETTINGS)
