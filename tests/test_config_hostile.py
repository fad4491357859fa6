"""Hostile or broken config files (issue 13, item 5): whatever the file holds, the loader gives one
line of bounded length naming the file (and the key), at once: no traceback, no hang, no value
accepted that crashes serve later. Every number has a range."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.config import ConfigError, load, parse

pytestmark = [pytest.mark.fast, pytest.mark.timeout(30)]  # a hang fails the test instead of the run

MAX_MESSAGE = 1024
MAX_CONFIG_BYTES, MAX_DEPTH, MAX_NODES = 1024 * 1024, 32, 100_000  # the documented limits
TARGET = "targets:\n  - name: main\n    dsn: host=127.0.0.1 dbname=postgres\n"


def refused(tmp_path: Path, content: bytes | str, name: str = "dbperf.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError) as err:
        load(str(path), env={})
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "\r" not in message, message[:300]
    assert len(message) <= MAX_MESSAGE, f"{len(message)} characters: {message[:300]}"
    assert message.startswith(f"{path}: "), message
    return message


def bomb(levels: int) -> str:
    """The billion-laughs value: each level 9 aliases of the one before, 9 ** levels strings."""
    parts = ['&l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    parts += [f"&l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


@pytest.mark.parametrize("content, expected", [
    # tracebacks on today's main
    (b"targets:\n  - name: caf\xe9\n", "not UTF-8: byte 0xe9 at byte offset 22 (line 2)"),
    (b"\xff\xfe" + "targets: []\n".encode("utf-16-le"), "not UTF-8: byte 0xff at byte offset 0 (line 1)"),
    ("x: " + "[" * 1000 + "]" * 1000 + "\n", "invalid YAML: line 1, column"),
    ("a:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(1000)), f"nested deeper than {MAX_DEPTH} levels"),
    (TARGET + "    collectors: {tables: {ttl: " + "9" * 400 + "}}\n", "targets[0].collectors.tables.ttl: must be at most 1d"),
    (TARGET + "    table_limit: " + "9" * 5000 + "\n", "targets[0].table_limit: must be an integer in 1 .. 100000"),
    (TARGET + "    databases: {include: '" + "(" * 480 + ")" * 480 + "'}\n", "bad regular expression"),
    (TARGET + "    databases: {include: 'a{4294967296}'}\n", "targets[0].databases.include: bad regular expression"),
    ("listen: ':²'\n" + TARGET, "listen: must be HOST:PORT"),
    ("targets: 2001-13-45\n", "targets: must be a non-empty list"),
    ("targets: !!int abc\n", "tag 'tag:yaml.org,2002:int' is not allowed"),
    ("targets: !!python/object/apply:os.system ['true']\n", "is not allowed"),
    # the alias bombs: a multi-megabyte one-line error on today's main (a hang with more levels)
    (f"listen: {bomb(6)}\n" + TARGET, f"more than {MAX_NODES} values once aliases are expanded"),
    (TARGET + f"    max_connections: {bomb(7)}\n", f"more than {MAX_NODES} values once aliases are expanded"),
    ("a: &a [x, *a]\n" + TARGET, "alias *a refers to a value that contains it"),
    # accepted on today's main, fatal later
    (TARGET + "    connect_timeout: .inf\n", "targets[0].connect_timeout: must be at most 1h, got inf"),
    ("scrape_timeout: .nan\n" + TARGET, "scrape_timeout: must be a number of seconds, not NaN"),
    ("scrape_timeout: .inf\n" + TARGET, "scrape_timeout: must be at most 1h"),
    ("scrape_timeout: 99999999999999999999h\n" + TARGET, "scrape_timeout: must be at most 1h, got '99999999999999999999h'"),
    (TARGET + "    table_limit: 9999999999999999999\n", "targets[0].table_limit: must be an integer in 1 .. 100000"),
    # a 7 MB "one-line" error on today's main
    ("log_level: " + "x" * 7_000_000 + "\n" + TARGET, "cannot read config file: larger than 1024 KiB"),
    ("log_level: " + "x" * 700_000 + "\n" + TARGET, "log_level: must be debug, info, warning or error, got 'xxx"),
    ("k" * 500_000 + ": 1\n" + TARGET, "invalid YAML"),
    (TARGET + "    collectors:\n      ? " + "x" * 600_000 + "\n      : true\n", "unknown collector"),
    ('targets:\n  - name: "a\\u2028b\\x85c\\nd"\n    dsn: host=x\n', "targets[0].name: must match"),
    ("targets: []\ntargets: []\n", "duplicate key 'targets'"),
])
def test_a_hostile_file_is_refused_in_one_bounded_line(tmp_path, content, expected):
    assert expected in refused(tmp_path, content)


def test_a_fifo_as_dsn_file_is_an_error_not_a_hang(tmp_path):
    os.mkfifo(tmp_path / "dsn.fifo")
    message = refused(tmp_path, "targets:\n  - name: main\n    dsn_file: dsn.fifo\n")
    assert message.endswith("targets[0].dsn_file: target 'main': cannot read the DSN file "
                            f"{tmp_path / 'dsn.fifo'}: not a regular file (a FIFO)")


def test_a_fifo_or_device_as_config_file_is_an_error(tmp_path):
    os.mkfifo(tmp_path / "config.fifo")
    for path, kind in ((tmp_path / "config.fifo", "a FIFO"), (Path("/dev/zero"), "a device"), (tmp_path, "a directory")):
        with pytest.raises(ConfigError) as err:
            load(str(path), env={})
        assert str(err.value) == f"{path}: cannot read config file: not a regular file ({kind})"


@pytest.mark.parametrize("content, reason", [
    (b"host=db password=caf\xe9\n", "not UTF-8: byte 0xe9 at byte offset 20 (line 1)"),
    (b"host=db " + b"x" * (64 * 1024), "larger than 64 KiB"),
])
def test_a_dsn_file_is_read_with_limits(tmp_path, content, reason):
    (tmp_path / "secret.dsn").write_bytes(content)
    message = refused(tmp_path, "targets:\n  - name: main\n    dsn_file: secret.dsn\n")
    assert message.endswith(f"cannot read the DSN file {tmp_path / 'secret.dsn'}: {reason}")
    assert "caf" not in message  # nothing of the file's content


def test_the_config_size_limit_is_the_documented_one(tmp_path):
    body = TARGET.encode()
    path = tmp_path / "padded.yaml"
    path.write_bytes(body + b"#" * (MAX_CONFIG_BYTES - len(body)))
    assert load(str(path), env={}).targets[0].name == "main"
    path.write_bytes(body + b"#" * (MAX_CONFIG_BYTES - len(body) + 1))
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load(str(path), env={})


def test_bounded_anchors_and_merge_keys_still_work(tmp_path):
    (tmp_path / "dbperf.yaml").write_text(
        "targets:\n"
        "  - &common {name: a, dsn: host=a, max_connections: 2, statements: {limit: 20}}\n"
        "  - {<<: *common, name: b, dsn: host=b}\n")
    config = load(str(tmp_path / "dbperf.yaml"), env={})
    assert [(t.name, t.max_connections, t.statements.limit) for t in config.targets] == [("a", 2, 20), ("b", 2, 20)]


def target(**settings) -> dict:
    return {"targets": [{"name": "t", "dsn": "host=x", **settings}]}


# (config, key, a value at each end of the range, the first value out on each side)
RANGES = [
    ({"top": {"max_scrape_timeout": "1h"}}, "scrape_timeout", ("1ms", "1h"), ("0s", "1h1ms")),
    ({"top": {"scrape_timeout": "1s"}}, "max_scrape_timeout", ("1s", "1h"), ("999ms", "1h1ms")),
    ({}, "scrape_timeout_offset", ("0s", "1m"), ("-1s", "61s")),
    ({"targets": 1}, "connect_timeout", ("1ms", "1h"), (0, "3601s")),
    ({"targets": 1}, "max_connections", (1, 100), (0, 101)),
    ({"targets": 1}, "table_limit", (1, 100_000), (0, 100_001)),
    ({"targets": 1}, "max_series", (100, 100_000_000), (99, 100_000_001)),
    ({"targets": 1, "under": "statements"}, "limit", (0, 10_000), (-1, 10_001)),
    ({"targets": 1, "under": "statements"}, "query_text_length", (1, 10_000), (0, 10_001)),
    ({"targets": 1, "under": "statements"}, "sticky", ("0s", "1d"), ("-1ms", "25h")),
    ({"targets": 1, "under": "statements"}, "query_text_ttl", ("0s", "24h"), (-1, "1d1ms")),
    ({"targets": 1, "under": "statements"}, "slow_threshold", (0, "1d"), ("-1s", "2d")),
    ({"targets": 1, "under": "collectors.tables"}, "timeout", ("1ms", "1h"), ("0ms", "2h")),
    ({"targets": 1, "under": "collectors.tables"}, "ttl", ("0s", "1d"), ("-1s", "1w")),
]


def _config(where: dict, key: str, value) -> tuple[dict, str]:
    inner: dict = {key: value}
    path = key
    for part in reversed(where.get("under", "").split(".") if where.get("under") else []):
        inner = {part: inner}
        path = f"{part}.{path}"
    if where.get("targets"):
        return target(**inner), f"targets[0].{path}"
    return {**where.get("top", {}), **inner, **target()}, path


@pytest.mark.parametrize("where, key, inside, outside", RANGES, ids=[r[1] for r in RANGES])
def test_every_number_has_a_range(where, key, inside, outside):
    for value in inside:
        parse(_config(where, key, value)[0], source="c.yaml")
    for value in outside:
        data, path = _config(where, key, value)
        with pytest.raises(ConfigError) as err:
            parse(data, source="c.yaml")
        assert err.value.key == path, str(err.value)
        reason = err.value.reason
        assert any(words in reason for words in ("must be at most", "must be at least", "must not be negative",
                                                 "must be an integer in")), reason


def test_durations_take_the_one_syntax_everywhere():
    config = parse({"scrape_timeout": "1m30s", **target(
        connect_timeout="1500ms", statements={"sticky": "1h30m"},
        pipelines={"sources": [{"type": "airflow", "expected_intervals": {"weekly": "1w", "daily": "1d2h"}}]})})
    t = config.targets[0]
    assert (config.scrape_timeout, t.connect_timeout, t.statements.sticky) == (90.0, 1.5, 5400.0)
    assert t.pipelines.sources[0].expected_intervals == {"weekly": 604800.0, "daily": 93600.0}
