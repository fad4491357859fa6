"""Credentials of the application library's own endpoints (exporter.instrument.auth) and the
Accept-Encoding parser of its /metrics apps: pure logic. The real-server tests are in
test_instrument_exposition.py."""

from __future__ import annotations

import base64

import pytest

from exporter.instrument import Instrumentation
from exporter.instrument.auth import Credentials, check_token, token_in_query
from exporter.instrument.exposition import gzip_accepted

pytestmark = pytest.mark.fast

GOOD = "Zq3-long-enough-token_01"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("token, message", [
    ("", "the token is empty or whitespace only"),
    ("                    ", "the token is empty or whitespace only"),
    ("\t\n \u00a0\u2003 ", "the token is empty or whitespace only"),
    ("short-token", "the token has 11 characters, at least 16 are needed"),
    ("a token with spaces in it", "printable ASCII without spaces"),
    (" leading-space-token-x", "printable ASCII without spaces"),
    ("sixteen-chars-and-ünïcode", "printable ASCII without spaces"),
])
def test_weak_tokens_are_refused_at_construction_with_one_line(token, message):
    inst = Instrumentation()
    for make in (inst.slowlog_asgi_app, inst.slowlog_wsgi_app,
                 lambda t: inst.metrics_asgi_app(bearer_token=t), lambda t: inst.metrics_wsgi_app(bearer_token=t)):
        with pytest.raises(ValueError, match=message) as err:
            make(token)
        text = str(err.value)
        assert "\n" not in text and (not token.strip() or token not in text)


def test_non_string_tokens_and_bad_users_are_refused():
    with pytest.raises(TypeError, match="slow log: the token must be a string, got bytes"):
        Instrumentation().slowlog_asgi_app(b"0123456789abcdefgh")
    with pytest.raises(ValueError, match="password of basic_auth user 'prom' is empty"):
        Credentials(basic_auth=("prom", "   "))
    with pytest.raises(ValueError, match="without spaces or ':'"):
        Credentials(basic_auth={"a:b": "pw"})
    with pytest.raises(TypeError, match="a \\(user, password\\) pair or a non-empty dict"):
        Credentials(basic_auth={})
    with pytest.raises(ValueError, match="gzip_level must be an integer from 0"):
        Instrumentation().metrics_asgi_app(gzip_level=11)


def test_bearer_and_basic_credentials():
    creds = Credentials(bearer_token=GOOD, basic_auth={"prom": "pw-1", "ops": "pw-2"})
    assert creds.allows(f"Bearer {GOOD}") and creds.allows(f"bearer   {GOOD}  ")
    assert creds.allows(basic("prom", "pw-1")) and creds.allows(basic("ops", "pw-2"))
    for bad in (None, "", "Bearer", "Bearer ", f"Bearer {GOOD}x", f"Bearer {GOOD[:-1]}", f"Token {GOOD}",
                basic("prom", "pw-2"), basic("ops", "pw-1"), basic("nobody", "pw-1"), basic("prom", ""),
                "Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"no-colon").decode(), GOOD,
                "Bearer " + " " * 20):
        assert not creds.allows(bad), bad
    assert 'Basic realm="metrics"' in Credentials(basic_auth=("a", "b"), realm="metrics").challenge
    assert Credentials().open and Credentials().allows(None)


def test_tokens_in_query_strings_are_recognised():
    for query in ("token=abc", "a=1&token=", "access_token=x", "x=1&Password=y", "api_key=1&auth=2", "TOKEN"):
        assert token_in_query(query), query
    for query in ("", "name[]=http_requests_total", "a=1&b=2"):
        assert not token_in_query(query), query


def test_check_token_returns_bytes():
    assert check_token(GOOD, "x") == GOOD.encode()


@pytest.mark.parametrize("header, wanted", [
    ("gzip", True), ("GZIP", True), ("x-gzip", True), ("deflate, gzip;q=0.5", True), ("*", True),
    ("identity, *;q=0.1", True), ("gzip, deflate, br", True),
    (None, False), ("", False), ("identity", False), ("br", False), ("gzip;q=0", False), ("gzip; q=0.0", False),
    ("*;q=0", False), ("gzip;q=0, *", False), ("gzip;q=nan", False), ("gzip;q=junk", False),
])
def test_accept_encoding(header, wanted):
    assert gzip_accepted(header) is wanted
