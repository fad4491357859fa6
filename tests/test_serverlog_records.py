"""Framing and parsing of the three log formats, with hostile input: cut records, broken quotes,
binary noise, huge lines, records split across reads."""

from __future__ import annotations

import json

import pytest

from exporter.serverlog.prefix import PrefixError, compile_prefix
from exporter.serverlog.records import Framer, Parser

pytestmark = pytest.mark.fast


def csv_line(severity="LOG", message="hello", sqlstate="00000", detail="", statement="", columns=26) -> bytes:
    row = ["2026-01-01 10:00:00.123 UTC", "bob", "shop", "4242", "10.0.0.7:51000", "65a1.1092", "1", "idle",
           "2026-01-01 10:00:00 UTC", "3/7", "0", severity, sqlstate, message, detail, "", "", "", "", statement,
           "", "", "psql", "client backend", "", "77"][:columns]
    return (",".join('"' + f.replace('"', '""') + '"' if f else "" for f in row) + "\n").encode()


def json_line(**fields) -> bytes:
    base = {"timestamp": "2026-01-01 10:00:00.123 UTC", "user": "bob", "dbname": "shop", "pid": 4242,
            "remote_host": "10.0.0.7", "session_id": "65a1.1092", "error_severity": "LOG", "message": "hello"}
    base.update(fields)
    return json.dumps(base).encode() + b"\n"


def parse_all(fmt, data, prefix="", max_bytes=65536, at_eof=True):
    framer, parser = Framer(fmt, max_bytes), Parser(fmt, prefix)
    records, consumed = framer.split(data, at_eof)
    return parser.parse(records), consumed, framer, parser


def test_csvlog_quoted_newlines_and_quotes_are_one_entry():
    data = csv_line(message='duration: 301.2 ms  plan:\nQuery Text: select "x"\nResult  (cost=0.00..0.01 rows=1)') + csv_line()
    entries, consumed, _, parser = parse_all("csvlog", data)
    assert consumed == len(data) and parser.errors == 0
    assert entries[0].message.startswith("duration: 301.2 ms  plan:\nQuery Text: select \"x\"\n")
    assert (entries[0].user, entries[0].database, entries[0].client, entries[0].query_id) == ("bob", "shop", "10.0.0.7", "77")


def test_csvlog_of_postgresql_13_has_24_columns():
    entries, _, _, parser = parse_all("csvlog", csv_line(columns=24))
    assert parser.errors == 0 and entries[0].backend_type == "client backend" and entries[0].query_id == ""


def test_a_record_split_across_reads_waits_for_its_end():
    data = csv_line(message="first\nsecond")
    framer = Framer("csvlog", 65536)
    records, consumed = framer.split(data[:40], at_eof=True)
    assert records == [] and consumed == 0
    records, consumed = framer.split(data, at_eof=True)
    assert len(records) == 1 and consumed == len(data)


def test_jsonlog_fields_and_hostile_lines():
    data = (json_line(error_severity="FATAL", state_code="28P01", message='password authentication failed for user "x"')
            + b"not json at all\n" + b"\xff\xfe\x00garbage\n" + b'{"error_severity": 5}\n' + b"[1,2]\n" + json_line())
    entries, consumed, _, parser = parse_all("jsonlog", data)
    assert consumed == len(data)
    assert [e.severity for e in entries] == ["FATAL", "LOG"] and parser.errors == 4
    assert entries[0].sqlstate == "28P01" and entries[0].pid == "4242"


def test_a_line_longer_than_the_limit_is_cut_and_its_fields_kept():
    long = json_line(message="duration: 5000.0 ms  statement: SELECT '" + "x" * 5000 + "'")
    entries, consumed, framer, parser = parse_all("jsonlog", long + json_line(), max_bytes=1000)
    assert consumed == len(long) + len(json_line()) and framer.cut == 1 and parser.errors == 0
    assert entries[0].message.startswith("duration: 5000.0 ms") and len(entries[0].message) < 1000
    assert entries[0].user == "bob" and entries[1].message == "hello"


def test_a_record_longer_than_a_whole_read_is_skipped_to_its_end():
    framer = Framer("csvlog", 1000)
    huge = csv_line(message="x" * 3000 + "\n" + "y" * 3000)
    records, consumed = framer.split(huge[:2000], at_eof=False)  # no end in sight: its start, the rest skipped
    assert len(records) == 1 and len(records[0]) == 1000 and consumed == 2000 and framer.skipping
    records, consumed = framer.split(huge[2000:] + csv_line(), at_eof=True)
    assert records == [csv_line().rstrip(b"\n")] and not framer.skipping  # the huge one's rest skipped


def test_stderr_prefix_continuations_and_auxiliary_lines():
    prefix = "%m [%p] %q%u@%d %r "
    data = (b"2026-01-01 10:00:00.123 UTC [17] bob@shop 10.0.0.7(51000) LOG:  duration: 300.1 ms  plan:\n"
            b"\tQuery Text: select 1\n\tResult  (cost=0.00..0.01 rows=1 width=4)\n"
            b"2026-01-01 10:00:00.124 UTC [17] bob@shop 10.0.0.7(51000) ERROR:  deadlock detected\n"
            b"2026-01-01 10:00:00.124 UTC [17] bob@shop 10.0.0.7(51000) DETAIL:  Process 17 waits\n\tProcess 18: x\n"
            b"2026-01-01 10:00:00.124 UTC [17] bob@shop 10.0.0.7(51000) STATEMENT:  update t set v = 1\n"
            b"2026-01-01 10:00:00.200 UTC [9] LOG:  checkpoint starting: time\n"
            b"garbage line\n")
    entries, consumed, _, parser = parse_all("stderr", data, prefix)
    assert consumed == len(data) and parser.errors == 1
    plan, deadlock, checkpoint = entries
    assert plan.message == "duration: 300.1 ms  plan:\nQuery Text: select 1\nResult  (cost=0.00..0.01 rows=1 width=4)"
    assert (plan.user, plan.database, plan.client, plan.pid) == ("bob", "shop", "10.0.0.7", "17")
    assert deadlock.detail == "Process 17 waits\nProcess 18: x" and deadlock.statement == "update t set v = 1"
    assert checkpoint.user == "" and checkpoint.message == "checkpoint starting: time"


def test_stderr_last_line_waits_for_possible_continuations_unless_at_eof():
    line = b"2026-01-01 10:00:00.123 UTC [17] LOG:  hello\n"
    framer = Framer("stderr", 65536)
    assert framer.split(line, at_eof=False) == ([], 0)
    assert framer.split(line, at_eof=True) == ([line.rstrip()], len(line))


@pytest.mark.parametrize("prefix", ["%t %p %c %l %a %u %d %h %e %x %v %i %s %n %b %Q %P %L %% ", "%-10u|%5p ", ""])
def test_known_prefixes_compile(prefix):
    assert compile_prefix(prefix).pattern


def test_an_unknown_escape_is_named():
    with pytest.raises(PrefixError, match="%z"):
        compile_prefix("%m %z ")


def test_hostile_prefix_match_is_bounded():
    parser = Parser("stderr", "%u@%d@%a ")
    entries = parser.parse([b"@" * 200_000 + b" LOG:  x"])
    assert entries == [] and parser.errors == 1  # the prefix is looked for in the first 2 KiB only


@pytest.mark.parametrize("fmt", ["jsonlog", "csvlog", "stderr"])
def test_random_bytes_never_raise_and_stay_bounded(fmt):
    import random

    rng = random.Random(18)
    alphabet = b'{}[]",:\\\n\t "LOG:  ERROR:  DETAIL:  2026-01-01 10:00:00.000 UTC [1] \xff\x00abc'
    framer, parser = Framer(fmt, 512), Parser(fmt, "%m [%p] %q%u@%d ")
    for _ in range(300):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 3000)))
        records, consumed = framer.split(data, at_eof=rng.random() < 0.5)
        assert 0 <= consumed <= len(data) and all(len(r) <= 512 for r in records)
        for e in parser.parse(records):
            assert isinstance(e.message, str) and len(e.message) <= 512
