"""sqlcommenter tags (exporter.instrument.sqltags): where the comment may be, what a value may hold,
and hostile text that gives no tags, quickly."""

from __future__ import annotations

import pytest

from exporter.instrument.sqltags import MAX_COMMENT, MAX_VALUE, route, tags

pytestmark = pytest.mark.fast

ROUTE = "route='%2Forders%2F%7Bid%7D',framework='fastapi'"


@pytest.mark.parametrize("sql", [
    f"SELECT * FROM orders WHERE id = 1 /*{ROUTE}*/",
    f"SELECT * FROM orders WHERE id = 1 /*{ROUTE}*/ ; \n",
    f"/*{ROUTE}*/ SELECT * FROM orders WHERE id = 1",
    f"  /* {ROUTE} */\nSELECT 1",
    f"/*{ROUTE}*/ SELECT * FROM orders WHERE name = 'cut by track_activity_query_si",
])
def test_route_at_the_end_or_the_start(sql):
    assert tags(sql) == {"route": "/orders/{id}", "framework": "fastapi"}
    assert route(sql) == "/orders/{id}"


def test_the_end_wins_and_other_comments_are_no_tags():
    assert route("/*route='%2Fa'*/ SELECT 1 /*route='%2Fb'*/") == "/b"
    assert route("SELECT 1 /* just a comment */") is None
    assert route("SELECT 1 -- route='x'") is None
    assert route("SELECT '/*route=''x''*/'") is None  # inside a literal: not a comment at the end
    assert tags("SELECT 1 /*application='dbperf'*/") == {"application": "dbperf"}
    assert route("SELECT 1 /*framework='x'*/") is None


def test_escaped_quote_and_plain_characters():
    assert tags(r"SELECT 1 /*route='it\'s',k.e~y-1='v%20w'*/") == {"route": "it's", "k.e~y-1": "v w"}
    assert tags("SELECT 1 /*route='%E2%82%AC'*/") == {"route": "€"}
    assert tags("SELECT 1 /*route=''*/") == {"route": ""} and route("SELECT 1 /*route=''*/") is None


@pytest.mark.parametrize("sql", [
    "SELECT 1 /*route='%2Forders",                        # unterminated comment
    "/*route='%2Forders' SELECT 1",                       # unterminated at the start
    "SELECT 1 /*route='%2Forders*/",                      # unterminated value
    "SELECT 1 /*route=%2Forders*/",                       # no quotes
    "SELECT 1 /*route=\"%2Forders\"*/",                   # double quotes
    "SELECT 1 /*route='a' framework='b'*/",               # no comma
    "SELECT 1 /*route='a',*/",                            # trailing comma
    "SELECT 1 /*route='%zz'*/",                           # bad percent-encoding
    "SELECT 1 /*route='%2'*/",
    "SELECT 1 /*route='%ff%fe'*/",                        # not UTF-8
    "SELECT 1 /*route='a%0Ab'*/",                         # a control character once decoded
    "SELECT 1 /*route='a\nb'*/",
    f"SELECT 1 /*route='{'x' * (MAX_VALUE + 1)}'*/",      # a huge value
    f"SELECT 1 /*route='a',x='{'y' * MAX_COMMENT}'*/",    # a huge comment
    "SELECT 1 /*route='a' /* nested */ */",
    "SELECT 1 /**/",
    "",
    "*/",
    "/*",
])
def test_hostile_text_gives_no_tags(sql):
    assert tags(sql) == {}


def test_huge_and_pathological_text_gives_no_tags():
    texts = ["/*" + "route='a'," * 100_000 + "*/ SELECT 1",
             "SELECT 1 /*" + "\\'" * 500_000 + "*/",
             "SELECT 1 " + "/*" * 300_000 + "*/",
             "/*" * 300_000,
             "SELECT 1 /*route='" + "%41" * 300_000 + "'*/"]
    for text in texts:
        assert tags(text) == {}


def test_not_a_string():
    with pytest.raises(TypeError):
        tags(b"SELECT 1")
