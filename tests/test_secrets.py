"""``exporter.secrets``: the one way dbperf prints a URL (no ``user:password@``, no token in the
query), secrets scrubbed in their encoded forms too, and one bounded line of any text."""

from __future__ import annotations

import pytest

from exporter.secrets import one_line, scrub, scrub_url

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("url, shown, host_only", [
    ("http://admin:PW@am.example:9093", "http://***@am.example:9093", "http://***@am.example:9093"),
    ("https://TOKEN@prom.example/prometheus", "https://***@prom.example/prometheus", "https://***@prom.example/…"),
    ("http://u:p%40ss@h/x?token=abc&a=1#access_token=zz", "http://***@h/x?token=***&a=1#access_token=***", "http://***@h/…"),
    ("http://h/?X-Amz-Signature=abc;api_key=k&apikey=&q=1", "http://h/?X-Amz-Signature=***;api_key=***&apikey=&q=1",
     "http://h/…"),
    ("http://h/?Password=x&client_secret=y&sig=z&page=2", "http://h/?Password=***&client_secret=***&sig=***&page=2",
     "http://h/…"),
    ("https://hooks.slack.com/services/T1/B2/XXXX", "https://hooks.slack.com/services/T1/B2/XXXX",
     "https://hooks.slack.com/…"),
    # malformed: a raw @ / ? in the password, no scheme
    ("http://admin:p@ss@host/x", "http://***@host/x", "http://***@host/…"),
    ("http://u:pa/ss@host/path?x=a@b", "http://***@host/path?x=a@b", "http://***@host/…"),
    ("http://u:p?w@host", "http://***@host", "http://***@host"),
    ("admin:pw@host:9093", "***@host:9093", "***@host:9093"),
    # nothing to hide
    ("http://host?email=a@b", "http://host?email=a@b", "http://host/…"),
    ("localhost:9093", "localhost:9093", "localhost:9093"),
    ("http://[::1", "http://[::1", "http://[::1"),
])
def test_scrub_url(url, shown, host_only):
    assert scrub_url(url) == shown
    assert scrub_url(url, path=False) == host_only


def test_scrub_url_is_one_bounded_line():
    shown = scrub_url("http://h/" + "x" * 1000 + "\n\u2028?token=abc")
    assert len(shown) == 200 and "\n" not in shown and "\u2028" not in shown and "abc" not in shown


def test_scrub_hides_encoded_and_quoted_forms():
    secret = "p@ss w'rd"
    text = f"a {secret} b p%40ss%20w%27rd c p@ss w\\'rd\nd"
    assert scrub(text, secret) == "a *** b *** c *** d"


def test_one_line():
    assert one_line("a\nb\x85c\u2028d\te") == "a\\nb\\x85c\\u2028d\\te"
    assert one_line("x" * 10, 7) == "xxxx…xx" and len(one_line("y" * 1000, 80)) == 80
