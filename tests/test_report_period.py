"""``dbperf report --period / --end / --timeout / --top`` (issue 13, item 9): the period is read
with dbperf's one duration parser (exporter/durations.py), every period lies in 1970 .. now + 1 day
and lasts 10 minutes to 366 days, and any text gives a period or the documented one-line error
naming its option (property-based, Hypothesis, bounded), never a traceback. Pure logic, and the
command run in-process against a closed port (it refuses before connecting)."""

from __future__ import annotations

import datetime as dt
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exporter.cli import main
from exporter.durations import UNITS, format_duration
from exporter.report.period import PeriodError, parse_period, parse_time

pytestmark = [pytest.mark.fast, pytest.mark.timeout(120)]

NOW = 1795132800.0  # 2026-11-20T00:00:00Z
MIN_SECONDS, MAX_SECONDS = 600, 366 * 86400  # docs/reports.md: from 10 minutes to 366 days
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# the documented errors (docs/reports.md), by their start or their end
DOCUMENTED = ("is not a duration (e.g. 24h, 7d, 90m)", "is not a time (Unix seconds or ISO 8601",
              "must not be negative", "is before 1970-01-01", "is more than a day after now",
              "the period is shorter than 10 minutes", "the period is longer than 366 days",
              "the period starts before 1970-01-01", "the period ends before it starts",
              "--end goes with a relative --period")


def check_period(text: str, end: str | None = None):
    """parse_period(text, end) is a period within the bounds, or a documented one-line PeriodError."""
    try:
        period = parse_period(text, end, now=NOW)
    except PeriodError as exc:
        message = str(exc)
        assert message.isprintable() and len(message) <= 300, message[:400]
        assert any(d in message for d in DOCUMENTED), message
        assert exc.option in ("--period", "--end")
        return None
    assert 0 <= period.start < period.end <= NOW + 86400
    assert MIN_SECONDS <= period.end - period.start <= MAX_SECONDS
    assert period.label.isprintable() and len(period.label) <= 120, period.label
    assert 60 <= period.step <= 86400 and period.window == f"[{period.seconds}s]"
    return period


PERIODISH = st.text(alphabet="0123456789.smhdwy-+eE :TZ", max_size=30)


@FUZZ
@given(st.one_of(st.text(max_size=80), PERIODISH), st.one_of(st.none(), st.text(max_size=40), PERIODISH))
@example("99999999999w", None)
@example("9" * 400 + "s", None)
@example("24h", "99999999999999")
@example("24h", "1e30")
@example("0001-01-01T00:00:00Z..0001-01-02T00:00:00Z", None)
@example("0..99999999999999", None)
@example("\x00\u2028..", None)
def test_any_text_gives_a_period_or_the_documented_error(text, end):
    check_period(text, end)


@FUZZ
@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNITS)))
def test_durations_in_range_are_periods_of_that_length(count, unit):
    seconds = count * UNITS[unit]
    period = check_period(f"{count}{unit}")
    if MIN_SECONDS <= seconds <= MAX_SECONDS:
        assert period is not None and period.end == NOW and period.end - period.start == pytest.approx(seconds)
    else:
        assert period is None


@FUZZ
@given(st.integers(min_value=MIN_SECONDS, max_value=int(MAX_SECONDS)))
def test_the_shared_syntax_reads_back_what_format_duration_writes(seconds):
    period = check_period(format_duration(seconds))  # 1h30m, 2d3h ...: dbperf's one duration syntax
    assert period is not None and period.end - period.start == seconds


@FUZZ
@given(st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9999, 12, 30),
                    timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30))])))
def test_iso_times_read_back_or_are_refused_when_after_tomorrow(when):
    text = when.isoformat()
    if when.timestamp() <= NOW + 86400:
        assert parse_time(text, now=NOW) == pytest.approx(when.timestamp(), abs=1e-6)
    else:
        with pytest.raises(PeriodError, match="is more than a day after now"):
            parse_time(text, now=NOW)


@pytest.mark.parametrize("text, end, option, message", [
    ("99999999999w", None, "--period", "the period is longer than 366 days"),
    ("367d", None, "--period", "the period is longer than 366 days"),
    ("9" * 60 + "h", None, "--period", "the period is longer than 366 days"),
    ("24h", "99999999999999", "--end", "'99999999999999' is more than a day after now"),
    ("24h", "1e30", "--end", "'1e30' is not a time"),
    ("24h", "2026-11-22T00:00:00Z", "--end", "is more than a day after now"),
    ("1d", "3600", "--period", "the period starts before 1970-01-01"),
    ("0001-01-01T00:00:00Z..0001-02-01T00:00:00Z", None, "--period", "'0001-01-01T00:00:00Z' is before 1970-01-01"),
    ("2020-01-01T00:00:00Z..2026-01-01T00:00:00Z", None, "--period", "the period is longer than 366 days"),
    ("-24h", None, "--period", "'-24h' must not be negative"),
    ("5m", None, "--period", "the period is shorter than 10 minutes"),
    ("x" * 100_000, None, "--period", "is not a duration (e.g. 24h, 7d, 90m)"),
    ("24h", "\u0663\u0663", "--end", "is not a time"),  # Arabic-Indic digits are no Unix seconds
])
def test_out_of_range_periods_are_refused(text, end, option, message):
    with pytest.raises(PeriodError) as caught:
        parse_period(text, end, now=NOW)
    assert caught.value.option == option and message in str(caught.value)
    assert len(str(caught.value)) <= 300


def test_durations_of_the_shared_syntax_are_periods():
    assert parse_period("1h30m", now=NOW).seconds == 5400  # once refused: one unit only
    assert parse_period("1w2d", now=NOW).seconds == 9 * 86400
    assert parse_period("600000ms", now=NOW).seconds == 600
    period = parse_period("24h", "2026-11-19T12:00:00+01:00", now=NOW)
    assert period.end == NOW - 13 * 3600 and period.label == "24h ending 2026-11-19T11:00:00Z"


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main(["report", "--prometheus", "http://127.0.0.1:9", *argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, expected", [
    (["--period", "99999999999w"], "--period: the period is longer than 366 days"),
    (["--end", "99999999999999"], "--end: '99999999999999' is more than a day after now"),
    (["--end", "1e30"], "--end: '1e30' is not a time (Unix seconds or ISO 8601, e.g. 2026-11-20T00:00:00Z)"),
    (["--timeout", "0"], "--timeout '0': must be at least 1s"),
    (["--timeout", "-1"], "--timeout '-1': must be at least 1s"),
    (["--timeout", "nan"], "--timeout 'nan': must be a duration like 500ms, 10s, 5m, 1h30m or 2d"),
    (["--timeout", "inf"], "--timeout 'inf': must be a duration like 500ms, 10s, 5m, 1h30m or 2d"),
    (["--timeout", "1e400"], "--timeout '1e400': must be a duration like 500ms, 10s, 5m, 1h30m or 2d"),
    (["--timeout", "2h"], "--timeout '2h': must be at most 1h"),
    (["--top", "-1"], "--top '-1': must be a whole number from 1 to 1000"),
    (["--top", "0"], "--top '0': must be a whole number from 1 to 1000"),
    (["--top", "9" * 5000], "must be a whole number from 1 to 1000"),
    (["--target", ""], "--target '': must be a target name (printable, 1 to 200 characters)"),
    (["--target", "a\nb"], "--target 'a\\nb': must be a target name"),
    (["--format", "pdf"], "argument --format: invalid choice: 'pdf'"),
    (["--webhook", "file:///etc/passwd"], "--webhook file://"),
    (["--out", "/nonexistent-dir/report.md"], "--out /nonexistent-dir/report.md: cannot write in /nonexistent-dir"),
])
def test_bad_arguments_are_one_line_exit_2(capsys, argv, expected):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dbperf report: ") and expected in lines[0], err


@pytest.mark.parametrize("url", ["prometheus:9090", "ftp://prom:21", "http://", "http://[::1", "http://h:99999",
                                 "http://admin:Pw-s3cret@", "http://a\tb:9090"])
def test_a_bad_prometheus_url_is_refused_before_connecting(capsys, url):
    try:
        code = main(["report", "--prometheus", url])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("dbperf report: --prometheus: must be an http:// or https:// URL with a host, got ")
    assert "Pw-s3cret" not in err


def test_timeouts_in_the_shared_syntax(capsys):
    for value in ("30", "1.5", "90s", "2m", "1h"):  # a bare number is seconds, as before
        code, _, err = run(capsys, "--timeout", value, "--period", "24h")
        assert code == 1 and "Prometheus unreachable at http://127.0.0.1:9" in err, (value, err)


@FUZZ
@given(st.text(alphabet=string.printable, max_size=20))
def test_any_timeout_or_top_is_accepted_or_one_line(value):
    from exporter.report.cli import UsageError, parse_timeout, parse_top

    for parse in (parse_timeout, parse_top):
        try:
            got = parse(value)
        except UsageError as exc:
            assert len(str(exc).splitlines()) == 1 and len(str(exc)) <= 200
        else:
            assert (1 <= got <= 3600) if parse is parse_timeout else (1 <= got <= 1000)
