"""GTID positions (MariaDB) and sets (MySQL): the transactions received but not applied. The
MariaDB path also runs on the real replica (tests/test_mysql_replication.py); MySQL's sets are
checked here only (no MySQL server is installable on this machine)."""

from __future__ import annotations

import pytest

from exporter.mysql import gtid

pytestmark = pytest.mark.fast

UUID_A = "3E11FA47-71CA-11E1-9E33-C80AA9429562"
UUID_B = "4c5d8f2a-0b1e-11ef-9a3c-0242ac120002"


def test_mariadb_positions_per_domain():
    assert gtid.mariadb_position("0-1-42,1-2-7") == {"0": 42, "1": 7}
    assert gtid.mariadb_position("") == {} == gtid.mariadb_position(None)
    assert gtid.mariadb_position("0-1-42,\n 0-2-40, garbage") == {"0": 42}


def test_mariadb_behind_is_received_minus_applied_in_domains_applied_knows():
    assert gtid.mariadb_behind("0-1-47,1-2-9", "0-1-42,1-2-9") == {"0": 5, "1": 0}
    assert gtid.mariadb_behind("0-1-47", "0-1-50") == {"0": 0}  # applied ahead (IO position reset): not negative
    assert gtid.mariadb_behind("0-1-47,5-3-2", "0-1-47") == {"0": 0}  # domain 5: no base, left out
    assert gtid.mariadb_behind("", "0-1-1") == {}


def test_mysql_sets_with_intervals_tags_and_line_breaks():
    assert gtid.mysql_set(f"{UUID_A}:1-5:7,\n{UUID_B}:1-3") == {
        UUID_A.lower(): [(1, 5), (7, 7)], UUID_B: [(1, 3)]}
    assert gtid.mysql_set(f"{UUID_A}:1-5:mytag:1-2") == {UUID_A.lower(): [(1, 5)], f"{UUID_A.lower()}:mytag": [(1, 2)]}
    assert gtid.mysql_set("") == {}


def test_mysql_behind_counts_retrieved_not_executed():
    retrieved = f"{UUID_A}:1-100,\n{UUID_B}:1-10"
    executed = f"{UUID_A.lower()}:1-90,\n{UUID_B}:1-10,\nffffffff-0000-0000-0000-000000000000:1-5"
    assert gtid.mysql_behind(retrieved, executed) == {UUID_A.lower(): 10, UUID_B: 0}
    assert gtid.mysql_behind(f"{UUID_A}:1-10:20-30", f"{UUID_A}:1-5:8-25") == {UUID_A.lower(): 7}  # 6-7, 26-30
    assert gtid.mysql_behind(f"{UUID_A}:1-3", "") == {UUID_A.lower(): 3}
