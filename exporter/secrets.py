"""Keep passwords and tokens out of logs, errors and metrics: DSN descriptions without the
password, :func:`scrub` of a known secret, and :func:`scrub_url`, the one way dbperf prints a URL."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from psycopg.conninfo import conninfo_to_dict

SAFE_KEYS = ("host", "hostaddr", "port", "dbname", "user")
HIDDEN = "***"
# a query or fragment parameter whose name contains one of these has its value hidden
SECRET_PARAMS = ("token", "key", "secret", "pass", "pwd", "sig", "auth", "credential", "session", "code")
MAX_URL = 200  # characters of a URL shown in a message


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


def describe_dsn(dsn: str, kind: str = "postgres") -> str:
    """``host=... port=... dbname=... user=...`` without the password; ``kind``: the target's
    (a MySQL target's DSN is a ``mysql://`` URL or MySQL key=value words: exporter.mysql.dsn)."""
    if kind == "mysql":
        from exporter.mysql.dsn import describe

        return describe(dsn)
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable dsn>"
    return " ".join(f"{k}={params[k]}" for k in SAFE_KEYS if params.get(k))


def _forms(secret: str) -> list[str]:
    """The ways a secret shows up in text: as is, percent-encoded, quoted for libpq."""
    forms = {secret, quote(secret, safe=""), quote(secret), secret.replace("\\", "\\\\").replace("'", "\\'")}
    return sorted(forms, key=len, reverse=True)


def scrub(text: str, *secrets: str | None) -> str:
    """Replace every occurrence of each secret (also percent-encoded or libpq-quoted) in ``text``
    and keep it to one line."""
    text = str(text)
    for secret in secrets:
        if secret:
            for form in _forms(secret):
                text = text.replace(form, HIDDEN)
    return " ".join(text.split())


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line of at most ``limit`` characters: control and other unprintable
    characters (line and paragraph separators too) escaped, the middle cut when too long."""
    text = str(text)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    if len(text) > limit:
        keep = max(limit - 1, 0)
        text = text[: keep - keep // 3] + "…" + (text[-(keep // 3):] if keep // 3 else "")
    return text


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(?://)?")
_PARAM = re.compile(r"(^|[&;?#])([^&;=#?]*)=([^&;#]*)")


def _secret_name(name: str) -> bool:
    name = unquote(name).lower()
    return any(word in name for word in SECRET_PARAMS)


def _scrub_params(text: str) -> str:
    def hide(m: re.Match) -> str:
        value = HIDDEN if m.group(3) and _secret_name(m.group(2)) else m.group(3)
        return f"{m.group(1)}{m.group(2)}={value}"

    return _PARAM.sub(hide, text)


def _userinfo_end(rest: str) -> int:
    """Where the user information of ``rest`` (the URL after ``scheme://``) ends: after the last
    ``@`` before the query, or before the first ``=`` (a password with a raw ``/``, ``?`` or ``#``
    is still hidden); 0 when it has none."""
    before_query = re.split(r"[?#]", rest, maxsplit=1)[0]
    before_params = rest.split("=", 1)[0]
    return max(before_query.rfind("@"), before_params.rfind("@")) + 1


def scrub_url(url: str, path: bool = True) -> str:
    """``url`` fit to print: the user information (``user:password@``) replaced by ``***@``, the
    values of query and fragment parameters that look secret (token, key, secret, password,
    signature, auth, credential, session, code ...) by ``***``; with ``path=False`` only the scheme
    and host are kept (webhook URLs carry their secret in the path). One line, at most
    :data:`MAX_URL` characters. Malformed URLs too (a password with raw ``@ / ? #``, no scheme)."""
    text = str(url).strip()
    scheme = _SCHEME.match(text)
    head = scheme.group(0) if scheme and not text[scheme.end():scheme.end() + 1].isdigit() else ""
    rest = text[len(head):]
    if head and not head.endswith("//"):  # "user:password@host" without a scheme: "user:" is none
        rest, head = text, ""
    end = _userinfo_end(rest)
    if end:
        rest = HIDDEN + "@" + rest[end:]
    host_end = re.search(r"[/?#]", rest)
    if host_end and not path:
        rest = rest[:host_end.start()] + "/…"
    elif host_end:
        rest = rest[:host_end.start()] + _scrub_params(rest[host_end.start():])
    return one_line(head + rest, MAX_URL)
