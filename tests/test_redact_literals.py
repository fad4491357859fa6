"""Literals as placeholders of their type and shape (exporter.instrument.redact.redact_literals):
what stays visible (wildcards at a string's edges, list lengths, casts, parameters, sqlcommenter
tags), and property-based tests that no literal's content survives."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.instrument.redact import REDACTED, literal_shape, redact_literals

pytestmark = pytest.mark.fast

E = "\u2026"
PROPERTY = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("sql, shown", [
    ("SELECT * FROM t WHERE name LIKE '%abc'", f"SELECT * FROM t WHERE name LIKE '%{E}'"),
    ("SELECT 1 WHERE a ILIKE 'abc%' OR b LIKE '%mid%' OR c LIKE '_x'",
     f"SELECT ? WHERE a ILIKE '{E}%' OR b LIKE '%{E}%' OR c LIKE '_{E}'"),
    ("SELECT * FROM t OFFSET 5000 LIMIT 20", "SELECT * FROM t OFFSET ? LIMIT ?"),
    ("SELECT * FROM t WHERE id IN (1, 2, 3, 4)", "SELECT * FROM t WHERE id IN (?, ?, ?, ?)"),
    ("SELECT '2024-01-01'::date, -1.5e3, x'1F', $1", f"SELECT '{E}'::date, -?, '{E}', $1"),
    ("SELECT E'it\\'s', 'a''b', $$dollar$$, $q$tagged$q$, '', '%'", f"SELECT '{E}', '{E}', '{E}', '{E}', '', '%'"),
    ("SELECT 1 /* user bob@example.com */ -- a note", f"SELECT ? /*{E}*/ /*{E}*/"),
    ("SELECT 1 /*route='%2Forders',framework='fastapi'*/", "SELECT ? /*route='%2Forders',framework='fastapi'*/"),
    ("SELECT * FROM t WHERE name = 'cut by the server at track_activity_qu", f"SELECT * FROM t WHERE name = '{E}'"),
    ('SELECT "col" FROM "My Table"', 'SELECT "col" FROM "My Table"'),
])
def test_placeholders_keep_the_shape(sql, shown):
    assert redact_literals(sql) == shown


def test_a_statement_with_a_secret_is_redacted_wholesale():
    assert redact_literals("ALTER ROLE app PASSWORD 'LeakMe'") == f"ALTER ROLE {REDACTED}"


def test_a_backslash_string_is_masked_in_both_readings():
    shown = redact_literals("SELECT 'a\\' OR name = 'bob' --'")
    assert "bob" not in shown and "a\\" not in shown


def test_literal_shape():
    assert literal_shape("%%%%abc") == f"'%%%{E}'"
    assert literal_shape("12", number=True) == "?"
    assert literal_shape("__") == "'__'"


WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789", min_size=6, max_size=12)


@PROPERTY
@given(secret=WORD, form=st.sampled_from([
    "SELECT * FROM t WHERE a = '{s}'", "SELECT * FROM t WHERE a LIKE '%{s}%'", "SELECT E'\\\\{s}\\''",
    "SELECT $${s}$$", "SELECT $x${s}$x$", "SELECT 'a''{s}'", "SELECT U&'{s}'", "SELECT 1 /* {s} */",
    "SELECT 1 -- {s}", "SELECT 'x\\' AND '{s}'", "SELECT '{s}", "SELECT B'{s}'",
]))
def test_no_literal_content_survives(secret, form):
    assert secret not in redact_literals(form.format(s=secret))


@PROPERTY
@given(digits=st.integers(min_value=100_000, max_value=10**12))
def test_no_number_survives(digits):
    assert str(digits) not in redact_literals(f"SELECT * FROM t WHERE id = {digits} OFFSET {digits}")


def test_only_tag_comments_of_known_keys_survive_redaction():
    assert redact_literals("SELECT 1 /*password='hunter2'*/") == "SELECT ? /*\u2026*/"
    assert "123-45" not in redact_literals("SELECT * FROM t WHERE ssn = '1' /*ssn='123-45-6789'*/ AND x = 1")
    tagged = "SELECT 1 /*framework='fastapi',route='%2Forders%2F%7Bid%7D'*/"
    assert redact_literals(tagged) == "SELECT ? /*framework='fastapi',route='%2Forders%2F%7Bid%7D'*/"
    assert redact_literals("SELECT 1 /*route='%2Fa',email='bob%40x.io'*/") == "SELECT ? /*\u2026*/"
