"""Keep DSN passwords out of logs, errors and metrics."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

SAFE_KEYS = ("host", "hostaddr", "port", "dbname", "user")


def validate_dsn(dsn: str) -> str | None:
    """None when ``dsn`` parses, else a reason that never quotes the DSN itself."""
    try:
        conninfo_to_dict(dsn)
    except Exception:  # psycopg quotes fragments of the string in its message: don't pass it on
        return "connection string cannot be parsed (value not shown, it may hold a password)"
    return None


def password_of(dsn: str) -> str | None:
    try:
        return conninfo_to_dict(dsn).get("password") or None
    except Exception:
        return None


def describe_dsn(dsn: str) -> str:
    """``host=... port=... dbname=... user=...`` without the password."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable dsn>"
    return " ".join(f"{k}={params[k]}" for k in SAFE_KEYS if params.get(k))


def scrub(text: str, *secrets: str | None) -> str:
    """Replace every occurrence of each secret in ``text`` and keep it to one line."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return " ".join(str(text).split())
