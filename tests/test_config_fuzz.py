"""Property-based tests (Hypothesis) of the config loader, DSN handling, URL scrubbing and the
duration parser (issue 13): no input raises anything but the documented one-line error, nothing
accepted is out of its range, and a password or token never shows in what dbperf prints.

Bounded (a fixed number of examples each, about 5 s in all) so they stay in the fast tier."""

from __future__ import annotations

import dataclasses

import datetime as dt
import math
import string
from urllib.parse import quote

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.alerts_cli import UsageError, parse_duration as parse_for
from exporter.config import RANGES, ConfigError, load, parse
from exporter.durations import DurationError, format_duration, parse_duration
from exporter.plan import describe_plan
from exporter.secrets import MAX_URL, describe_dsn, scrub, scrub_url, validate_dsn

pytestmark = [pytest.mark.fast, pytest.mark.timeout(120)]

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_MESSAGE = 1024


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def one_line_error(exc: ConfigError) -> str:
    message = str(exc)
    assert len(message.splitlines()) == 1 and "\r" not in message, message[:300]
    assert len(message) <= MAX_MESSAGE, message[:300]
    return message


def in_range(value, key: str) -> bool:
    low, high = RANGES[key]
    return math.isfinite(value) and low <= value <= high


def check_accepted(config) -> None:
    """A config that loads has nothing out of its documented range."""
    assert in_range(config.scrape_timeout, "scrape_timeout")
    assert in_range(config.scrape_timeout_offset, "scrape_timeout_offset")
    for t in config.targets:
        assert in_range(t.connect_timeout, "connect_timeout")
        if t.kind == "postgres":
            assert in_range(t.max_connections, "max_connections") and in_range(t.table_limit, "table_limit")
            assert in_range(t.max_series, "max_series")
        for settings_ in t.collectors.values():
            assert settings_.timeout is None or in_range(settings_.timeout, "collectors.timeout")
            assert settings_.ttl is None or in_range(settings_.ttl, "collectors.ttl")
        for key, value in dataclasses.asdict(t.statements).items():
            if f"statements.{key}" in RANGES:
                assert in_range(value, f"statements.{key}")


def load_bytes(workdir, data: bytes):
    path = workdir / "fuzz.yaml"
    path.write_bytes(data)
    try:
        check_accepted(load(str(path), env={}, secrets=False))
    except ConfigError as exc:
        assert one_line_error(exc).startswith(f"{path}: ")


# -- the config loader ---------------------------------------------------------------------------

TOKENS = ["\n", "  ", "- ", ": ", "? ", "&a ", "*a", "&b ", "*b", "<<: ", "!!str ", "!!int ", "!!python/name:os.system ",
          "[", "]", "{", "}", ",", "'", '"', "#", "|", ">", "---", "...", "%YAML 1.1", "\t", "\\", "\x00", "\xff",
          "targets", "name", "dsn", "dsn_file", "dsn_env", "listen", "scrape_timeout", "connect_timeout", "table_limit",
          "max_connections", "collectors", "statements", "databases", "pipelines", "include", "ttl", "timeout", ".inf",
          ".nan", "-.inf", "1e400", "99999999999999999999", "0x7fffffffffffffff", "1:30", "2001-13-45", "10s", "1h30m",
          "-1", "~", "null", "yes", "(", "(?", "a{9999999999}", "main", "host=x", "/dev/zero", ".", "/",
          "targets:\n  - name: main\n    dsn: host=x\n", "    connect_timeout: ", "    table_limit: ",
          "    max_connections: ", "    statements: {limit: ", "scrape_timeout: ", "    databases: {include: "]


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes_give_a_config_or_one_line(workdir, data):
    load_bytes(workdir, data)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=120))
def test_yaml_ish_text_gives_a_config_or_one_line(workdir, tokens):
    load_bytes(workdir, "".join(tokens).encode("utf-8", "surrogatepass"))


NUMBERS = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["1e400", "99999999999999999999h", "-1s", "0s", "1ms", "25h", "1w", "1h30m", ".5s",
                                     "3601s", "100001", "nan", "inf"]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, NUMBERS, st.text(max_size=30))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=12)
TARGET = st.fixed_dictionaries(
    {"name": st.one_of(st.just("main"), st.text(max_size=12))},
    optional={
        "dsn": st.one_of(st.just("host=db dbname=app"), st.text(max_size=30)),
        "dsn_env": st.text(max_size=10), "kind": st.sampled_from(["postgres", "pgbouncer", "mysql", ""]),
        "connect_timeout": NUMBERS, "max_connections": NUMBERS, "table_limit": NUMBERS,
        "collectors": st.dictionaries(st.sampled_from(["tables", "settings", "statements", "nosuch"]),
                                      st.one_of(st.booleans(), st.fixed_dictionaries(
                                          {}, optional={"timeout": NUMBERS, "ttl": NUMBERS, "enabled": SCALARS})),
                                      max_size=3),
        "statements": st.fixed_dictionaries({}, optional={k: NUMBERS for k in (
            "limit", "sticky", "query_text_length", "query_text_ttl", "slow_threshold")}),
        "databases": st.fixed_dictionaries({}, optional={"include": st.text(max_size=20), "exclude": VALUES}),
        "pipelines": st.fixed_dictionaries({"sources": st.just([{"type": "airflow"}])},
                                           optional={"late_window": NUMBERS}),
        "extra": VALUES,
    })
DOCUMENT = st.fixed_dictionaries(
    {"targets": st.one_of(st.lists(TARGET, min_size=1, max_size=3), VALUES)},
    optional={"listen": st.one_of(st.text(max_size=20), NUMBERS), "scrape_timeout": NUMBERS,
              "scrape_timeout_offset": NUMBERS, "log_level": SCALARS, "host_metrics": SCALARS})


# a valid config with a few of its values replaced (most random documents fail on their first key)
BASE = {"targets": [{"name": "main", "dsn": "host=db dbname=app", "statements": {}, "databases": {},
                     "collectors": {"tables": {}}}], "collectors": {"settings": {}}}
PATHS = ["scrape_timeout", "scrape_timeout_offset", "listen", "log_level", "collectors.settings.ttl",
         "collectors.settings.timeout", *(f"targets.0.{key}" for key in (
             "connect_timeout", "max_connections", "table_limit", "name", "kind", "dsn", "collectors.tables.ttl",
             "collectors.tables.timeout", "collectors.tables.enabled", "statements.limit", "statements.sticky",
             "statements.query_text_length", "statements.query_text_ttl", "statements.slow_threshold",
             "statements.rank_by", "databases.include", "databases.exclude", "databases.discover"))]


def replaced(changes: dict) -> dict:
    document = yaml.safe_load(yaml.safe_dump(BASE))
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return document


@FUZZ
@given(st.one_of(DOCUMENT, st.dictionaries(st.sampled_from(PATHS), VALUES, min_size=1, max_size=3).map(replaced)))
def test_random_documents_give_a_config_in_range_or_one_line(workdir, document):
    load_bytes(workdir, yaml.safe_dump(document, allow_unicode=True).encode())
    try:  # the same data handed over directly (as tests and from_env do)
        check_accepted(parse(document, source="fuzz", env={}, secrets=False))
    except ConfigError as exc:
        one_line_error(exc)


# -- DSNs: the password never shows ---------------------------------------------------------------

PASSWORDS = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=24).map(
    lambda tail: "Pw9" + tail)  # "Pw9" shows nowhere else, so the password shows only if leaked


def dsn_forms(password: str) -> list[str]:
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    encoded = quote(password, safe="")
    return [
        f"postgresql://dbperf:{encoded}@db.example:5432/app",
        f"postgres://dbperf@db.example/app?password={encoded}&sslmode=prefer",
        f"host=db.example port=5432 dbname=app user=dbperf password='{quoted}'",
        f"password='{quoted}' host=db.example",
        f"host=db.example user=dbperf password='{quoted}' junk",  # unparsable
        f"host=db.example password='{quoted}",                   # unterminated quote
        f"postgresql://dbperf:{encoded}@db.example:notaport/app",  # unparsable
    ]


@settings(FUZZ, max_examples=60)  # each example: 7 DSN forms, 4 ways to give them
@given(PASSWORDS)
def test_a_password_never_shows_in_dsn_errors_or_descriptions(workdir, password):
    secrets = (password, quote(password, safe=""))
    (workdir / "secret.dsn").write_text("x")
    for dsn in dsn_forms(password):
        shown = [describe_dsn(dsn), validate_dsn(dsn) or "", scrub(f"FATAL: {dsn} {password}", password)]
        (workdir / "secret.dsn").write_text(dsn)
        for target in ({"dsn": dsn}, {"dsn_env": "PG_DSN"}, {"dsn_file": str(workdir / "secret.dsn")},
                       {"dsn": dsn, "kind": "pgbouncer"}):
            try:
                shown.append(describe_plan(parse({"targets": [{"name": "t", **target}]}, source="c.yaml",
                                                 env={"PG_DSN": dsn})))
            except ConfigError as exc:
                shown.append(one_line_error(exc))
        for text in shown:
            assert not any(secret in text for secret in secrets), (dsn, text)


# -- URLs: user information and tokens never show ------------------------------------------------

SAFE = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%"  # raw in a password, no ? # or space
SECRET_NAMES = ["token", "access_token", "api_key", "apikey", "key", "password", "secret", "client_secret",
                "signature", "X-Amz-Signature", "X-Amz-Credential", "sig", "auth", "passwd", "pwd", "session_id"]
LOWER = st.text(alphabet=string.ascii_lowercase + string.digits + "-.", max_size=12)


@st.composite
def urls(draw):
    password = "Pw9" + draw(st.text(min_size=1, max_size=16))
    raw = draw(st.booleans()) and all(ch in SAFE for ch in password)
    userinfo = f"{draw(LOWER)}:{password if raw else quote(password, safe='')}@"
    token = "Tk7" + draw(st.text(alphabet=string.ascii_letters + string.digits + "-_.~", max_size=20))
    name = draw(st.sampled_from(SECRET_NAMES))
    name = draw(st.sampled_from([name, name.upper(), name.title()]))
    query = "&".join(draw(st.permutations([f"{name}={token}", f"{draw(LOWER)}={draw(LOWER)}"])))
    sep = draw(st.sampled_from(["?", "#", "?x=1&", "?x=1;"]))
    scheme = draw(st.sampled_from(["http://", "https://", ""]))
    url = f"{scheme}{userinfo if draw(st.booleans()) else ''}{draw(LOWER)}:9093/{draw(LOWER)}{sep}{query}"
    return url, (password, quote(password, safe=""), quote(password)) if "@" in url else (), token


@FUZZ
@given(urls())
def test_scrub_url_hides_the_password_and_tokens(case):
    url, passwords, token = case
    for shown in (scrub_url(url), scrub_url(url, path=False)):
        assert len(shown.splitlines()) == 1 and len(shown) <= MAX_URL
        for secret in (*passwords, token):
            assert secret not in shown, (url, shown)


@FUZZ
@given(st.text(max_size=300))
def test_scrub_url_takes_any_text(text):
    for shown in (scrub_url(text), scrub_url(text, path=False)):
        assert len(shown.splitlines()) <= 1 and len(shown) <= MAX_URL


# -- the one duration parser -------------------------------------------------------------------

DURATION_TEXT = st.one_of(st.text(max_size=30), st.lists(st.sampled_from(
    ["1", "0", "99999999999999999999", ".", "5", "ms", "s", "m", "h", "d", "w", " ", "-", "e", "inf", "nan"]),
    max_size=10).map("".join))


@FUZZ
@given(st.one_of(DURATION_TEXT, NUMBERS, SCALARS), st.booleans())
def test_durations_are_in_range_or_a_duration_error(value, bare):
    try:
        seconds = parse_duration(value, minimum=0.001, maximum=3600.0, bare_seconds=bare)
    except DurationError as exc:
        assert "\n" not in str(exc) and exc.kind in ("syntax", "range")
    else:
        assert math.isfinite(seconds) and 0.001 <= seconds <= 3600.0


@FUZZ
@given(st.integers(min_value=0, max_value=366 * 86400 * 1000))
def test_format_duration_reads_back(millis):
    assert round(parse_duration(format_duration(millis / 1000)) * 1000) == millis


@FUZZ
@given(DURATION_TEXT)
def test_alerts_for_is_a_bounded_timedelta_or_a_usage_error(text):
    try:
        duration = parse_for(text)
    except UsageError as exc:
        assert str(exc).startswith("--for ") and "\n" not in str(exc) and len(str(exc)) < 300
    else:
        assert dt.timedelta(seconds=1) <= duration <= dt.timedelta(days=365)
