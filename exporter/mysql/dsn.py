"""MySQL connection strings: ``mysql://user:password@host:3306/database?param=value`` or
``host=... port=... user=... password=... database=...`` (key=value, libpq-style quoting), parsed
into PyMySQL's ``connect()`` arguments. Errors never quote the string (it may hold a password)."""

from __future__ import annotations

import shlex
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["DsnError", "describe", "parse", "password_of", "problem"]

DEFAULT_PORT = 3306
# key=value and URL parameter names -> PyMySQL's argument names
ALIASES = {"host": "host", "port": "port", "user": "user", "username": "user", "password": "password",
           "database": "database", "dbname": "database", "db": "database", "socket": "unix_socket",
           "unix_socket": "unix_socket", "ssl_ca": "ssl_ca", "ssl_cert": "ssl_cert", "ssl_key": "ssl_key",
           "ssl_mode": "ssl_mode", "charset": "charset"}
SSL_MODES = ("disabled", "preferred", "required", "verify_ca", "verify_identity")


class DsnError(ValueError):
    """The string cannot be parsed; the message never quotes it."""


def _pairs(dsn: str) -> list[tuple[str, str]]:
    text = dsn.strip()
    if "://" in text:
        scheme, _, _ = text.partition("://")
        if scheme.lower() not in ("mysql", "mariadb"):
            raise DsnError(f"the URL scheme must be mysql:// or mariadb://, got {scheme[:20]}://")
        try:
            url = urlsplit(text)
            port = url.port
        except ValueError:
            raise DsnError("the URL cannot be parsed (value not shown, it may hold a password)") from None
        pairs = []
        if url.hostname:
            pairs.append(("host", unquote(url.hostname)))
        if port is not None:
            pairs.append(("port", str(port)))
        if url.username is not None:
            pairs.append(("user", unquote(url.username)))
        if url.password is not None:
            pairs.append(("password", unquote(url.password)))
        if url.path.strip("/"):
            pairs.append(("database", unquote(url.path.strip("/"))))
        return pairs + parse_qsl(url.query, keep_blank_values=True)
    try:
        words = shlex.split(text, posix=True)
    except ValueError:
        raise DsnError("unbalanced quotes in the key=value string (value not shown, it may hold a password)") from None
    out = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise DsnError("expected key=value words or a mysql:// URL (value not shown, it may hold a password)")
        out.append((key, value))
    return out


def parse(dsn: str) -> dict:
    """PyMySQL ``connect()`` keyword arguments (host, port, user, password, database, unix_socket,
    ssl ...); :class:`DsnError` on a string that is not one."""
    if not dsn or not dsn.strip():
        raise DsnError("the connection string is empty")
    out: dict = {}
    for key, value in _pairs(dsn):
        name = ALIASES.get(key.lower())
        if name is None:
            raise DsnError(f"unknown parameter {key[:40]!r} (known: {', '.join(sorted(set(ALIASES)))})")
        out[name] = value
    if "port" in out:
        if not str(out["port"]).isdigit() or not 0 < int(out["port"]) < 65536:
            raise DsnError("port must be a number in 1 .. 65535")
        out["port"] = int(out["port"])
    if out.get("ssl_mode", "preferred").lower() not in SSL_MODES:
        raise DsnError(f"ssl_mode must be one of {', '.join(SSL_MODES)}")
    if "host" not in out and "unix_socket" not in out:
        out["host"] = "localhost"
    return out


def problem(dsn: str) -> str | None:
    """None when ``dsn`` parses, else why not (never quoting it)."""
    try:
        parse(dsn)
    except DsnError as exc:
        return f"MySQL connection string: {exc}"
    return None


def password_of(dsn: str) -> str | None:
    try:
        return parse(dsn).get("password") or None
    except DsnError:
        return None


def describe(dsn: str) -> str:
    """``host=... port=... user=... database=...`` without the password."""
    try:
        params = parse(dsn)
    except DsnError:
        return "<unparsable dsn>"
    params.setdefault("port", DEFAULT_PORT) if "unix_socket" not in params else None
    keys = ("unix_socket", "host", "port", "user", "database")
    return " ".join(f"{'socket' if k == 'unix_socket' else k}={params[k]}" for k in keys if params.get(k))
