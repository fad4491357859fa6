"""The reader over real files: rotation, truncation, restarts from the stored position, the rate
limit, a missing log; and the server_log config key."""

from __future__ import annotations

import json
import os

import pytest

from exporter.config import ConfigError, parse
from exporter.serverlog.reader import LogReader

pytestmark = pytest.mark.fast


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def line(n: int) -> str:
    return json.dumps({"timestamp": f"t{n}", "user": "bob", "dbname": "shop", "pid": n, "error_severity": "LOG",
                       "message": "connection authorized: user=bob database=shop"}) + "\n"


def target(tmp_path, **server_log):
    config = parse({"state_dir": str(tmp_path / "state"),
                    "targets": [{"name": "main", "dsn": "host=127.0.0.1",
                                 "server_log": {"path": str(tmp_path / "log"), **server_log}}]},
                   source=str(tmp_path / "dbperf.yaml"))
    return config.targets[0]


def append(path, first: int, count: int) -> None:
    with open(path, "a") as f:
        f.write("".join(line(n) for n in range(first, first + count)))


def connections(reader) -> float:
    return sum(reader.tally.snapshot()[0]["connections"].values())


def touch_later(path, seconds: float) -> None:
    st = os.stat(path)
    os.utime(path, (st.st_atime, st.st_mtime + seconds))


@pytest.fixture
def logdir(tmp_path):
    (tmp_path / "log").mkdir()
    first = tmp_path / "log" / "postgresql-1.json"
    append(first, 0, 5)  # the past: not counted
    return tmp_path


def test_starts_at_the_end_then_counts_new_lines(logdir):
    reader = LogReader(target(logdir))
    assert reader.tick() and connections(reader) == 0
    append(logdir / "log" / "postgresql-1.json", 5, 3)
    assert reader.tick() and connections(reader) == 3 and reader.follower.lag == 0


def test_rotation_reads_the_old_file_to_its_end_then_the_new_one(logdir):
    reader = LogReader(target(logdir))
    reader.tick()
    append(logdir / "log" / "postgresql-1.json", 5, 2)
    newer = logdir / "log" / "postgresql-2.json"
    append(newer, 7, 4)
    touch_later(newer, 5)
    (logdir / "log" / "postgresql-2.log").write_text("stderr file beside it: not read\n")
    reader.tick()
    reader.tick()
    assert connections(reader) == 6 and reader.follower.rotations == 1 and reader.parser.errors == 0


def test_restart_continues_from_the_stored_position_across_a_rotation(logdir):
    first = LogReader(target(logdir))
    first.tick()
    append(logdir / "log" / "postgresql-1.json", 5, 2)
    first.tick()
    first.close()
    assert connections(first) == 2
    append(logdir / "log" / "postgresql-1.json", 7, 3)  # while dbperf is down
    newer = logdir / "log" / "postgresql-2.json"
    append(newer, 10, 4)
    touch_later(newer, 5)
    second = LogReader(target(logdir))
    second.tick()
    second.tick()
    assert connections(second) == 7  # 3 + 4: nothing read twice, nothing lost


def test_restart_after_the_old_file_was_removed_reads_the_newer_ones_whole(logdir):
    first = LogReader(target(logdir))
    first.tick()
    first.close()
    newer = logdir / "log" / "postgresql-2.json"
    append(newer, 10, 4)
    touch_later(newer, 5)
    os.unlink(logdir / "log" / "postgresql-1.json")
    second = LogReader(target(logdir))
    second.tick()
    assert connections(second) == 4


def test_truncation_starts_the_file_again(logdir):
    path = logdir / "log" / "postgresql-1.json"
    reader = LogReader(target(logdir))
    reader.tick()
    path.write_text(line(100))  # truncated (copytruncate), then written
    reader.tick()
    assert connections(reader) == 1 and reader.follower.truncations == 1


def test_a_burst_over_the_rate_limit_is_dropped_and_counted(logdir):
    clock = Clock()
    reader = LogReader(target(logdir, max_lines_per_second=10), clock=clock)
    reader.tick()
    append(logdir / "log" / "postgresql-1.json", 5, 25)
    clock.now += 1
    reader.tick()
    assert connections(reader) == 10 and reader.dropped == 15 and reader.follower.lag == 0
    append(logdir / "log" / "postgresql-1.json", 30, 5)
    clock.now += 0.5  # half a second: 5 more lines allowed
    reader.tick()
    assert connections(reader) == 15 and reader.dropped == 15


def test_a_missing_path_fails_the_read_with_the_reason(tmp_path):
    reader = LogReader(target(tmp_path))
    assert not reader.tick()
    assert "No such file" in reader.last_error and reader.failures == 1


def test_an_unreadable_state_file_is_no_reason_not_to_start(logdir):
    (logdir / "state").mkdir()
    (logdir / "state" / "serverlog-main.json").write_text("{not json")
    reader = LogReader(target(logdir))
    assert reader.tick()


@pytest.mark.parametrize("section, message", [
    ({}, "targets[0].server_log.path: is required"),
    ({"path": "x", "remote": True}, "targets[0].server_log.path: path and remote: true exclude each other"),
    ({"path": "x", "format": "xml"}, "targets[0].server_log.format: must be one of jsonlog, csvlog, stderr"),
    ({"path": "x", "format": "stderr"}, "targets[0].server_log.prefix: is required"),
    ({"path": "x", "format": "stderr", "prefix": "%m %Z "}, "targets[0].server_log.prefix: unknown escape %Z"),
    ({"path": "x", "prefix": "%m "}, "targets[0].server_log.prefix: applies to format: stderr only"),
    ({"path": "x", "max_line_bytes": 10}, "targets[0].server_log.max_line_bytes: must be an integer in 256"),
    ({"path": "x", "events": {"size": -1}}, "targets[0].server_log.events.size: must be an integer"),
    ({"path": "x", "errors": {"4001": "x"}}, "targets[0].server_log.errors: '4001': must be a 5-character SQLSTATE"),
    ({"path": "x", "colour": 1}, "targets[0].server_log.colour: unknown key"),
])
def test_config_errors_name_the_key(section, message):
    with pytest.raises(ConfigError) as err:
        parse({"targets": [{"name": "m", "dsn": "host=x", "server_log": section}]}, source="c.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_resolves_the_path_beside_the_config_and_turns_the_collector_on(tmp_path):
    t = target(tmp_path, format="csvlog", errors={"40P01": "deadlock_detected"}, client_network_prefix=16)
    assert t.server_log.path == str(tmp_path / "log") and t.collectors["server_log"].enabled
    assert t.server_log.errors == (("40P01", "deadlock_detected"),) and t.server_log.suffix == ".csv"
    off = parse({"targets": [{"name": "m", "dsn": "host=x", "collectors": {"server_log": False},
                              "server_log": {"remote": True}}]}, source="c.yaml").targets[0]
    assert not off.collectors["server_log"].enabled


def test_stderr_last_entry_waits_one_read_for_its_continuation_lines(tmp_path):
    (tmp_path / "log").mkdir()
    path = tmp_path / "log" / "postgresql.log"
    path.write_text("")
    reader = LogReader(target(tmp_path, format="stderr", prefix="%m [%p] "))
    reader.tick()
    with open(path, "a") as f:
        f.write("2026-01-01 10:00:00.000 UTC [7] LOG:  duration: 300.0 ms  plan:\n\tQuery Text: SELECT 1\n")
    reader.tick()
    assert reader.tally.recent("slow", 10) == [] and reader.lines == 0  # might go on
    with open(path, "a") as f:
        f.write("\tResult  (cost=0.00..0.01 rows=1 width=4)\n")  # the same message's next write
    reader.tick()
    assert reader.lines == 0
    reader.tick()  # the file did not grow: the entry is complete
    reader.tick()
    reader.tick()  # and the plan, waiting for its statement line, becomes an event of its own
    event, = reader.tally.recent("slow", 10)
    assert event["plan"].endswith("Result  (cost=0.00..0.01 rows=1 width=4)") and reader.parser.errors == 0


def test_stderr_last_entry_of_a_rotated_file_is_not_lost(tmp_path):
    (tmp_path / "log").mkdir()
    old = tmp_path / "log" / "postgresql-1.log"
    old.write_text("")
    reader = LogReader(target(tmp_path, format="stderr", prefix="%m [%p] "))
    reader.tick()
    old.write_text("2026-01-01 10:00:00.000 UTC [7] LOG:  statement: DROP TABLE a\n")
    new = tmp_path / "log" / "postgresql-2.log"
    new.write_text("2026-01-01 10:00:01.000 UTC [7] LOG:  statement: DROP TABLE b\n")
    touch_later(new, 5)
    for _ in range(3):
        reader.tick()
    assert [e["statement"] for e in reader.tally.recent("ddl", 10)] == ["DROP TABLE a", "DROP TABLE b"]
