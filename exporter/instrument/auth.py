"""Credentials for the application's own endpoints (``/metrics``, the slow log): a bearer token
and/or basic-auth users, sent in the ``Authorization`` header only and compared in constant time
(``hmac.compare_digest`` on every configured credential, whatever matched first).

Tokens and passwords are refused at construction when they could not protect anything: empty,
whitespace-only, short (tokens: fewer than ``MIN_TOKEN`` characters), or not sendable in an HTTP
header. No error message, log line or response contains a credential."""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import parse_qsl

MIN_TOKEN = 16


def _header_safe(value: str) -> bool:
    """Printable ASCII without whitespace: what survives an HTTP header byte for byte."""
    return all("!" <= c <= "~" for c in value)


def check_token(token, what: str) -> bytes:
    """``token`` as bytes, or a one-line ValueError/TypeError naming ``what`` (never the token)."""
    if not isinstance(token, str):
        raise TypeError(f"{what}: the token must be a string, got {type(token).__name__}")
    if not token.strip():
        raise ValueError(f"{what}: the token is empty or whitespace only; give a random token of at "
                         f"least {MIN_TOKEN} characters")
    if not _header_safe(token):
        raise ValueError(f"{what}: the token must be printable ASCII without spaces (it is sent in an "
                         f"HTTP header)")
    if len(token) < MIN_TOKEN:
        raise ValueError(f"{what}: the token has {len(token)} characters, at least {MIN_TOKEN} are needed")
    return token.encode()


def _check_users(users, what: str) -> tuple[tuple[bytes, bytes], ...]:
    if isinstance(users, tuple) and len(users) == 2 and all(isinstance(x, str) for x in users):
        users = {users[0]: users[1]}
    if not isinstance(users, dict) or not users:
        raise TypeError(f"{what}: basic_auth must be a (user, password) pair or a non-empty dict of "
                        f"user -> password")
    out = []
    for user, password in users.items():
        if not isinstance(user, str) or not isinstance(password, str):
            raise TypeError(f"{what}: basic_auth users and passwords must be strings")
        if not user.strip() or ":" in user or not _header_safe(user):
            raise ValueError(f"{what}: basic_auth user {user[:64]!r} must be printable ASCII, without "
                             f"spaces or ':'")
        if not password.strip():
            raise ValueError(f"{what}: the password of basic_auth user {user!r} is empty or whitespace only")
        out.append((user.encode(), password.encode()))
    return tuple(out)


class Credentials:
    """What an endpoint accepts. ``bearer_token``: ``Authorization: Bearer <token>``;
    ``basic_auth``: ``(user, password)`` or ``{user: password}``, ``Authorization: Basic ...``.
    With neither, ``allows`` lets everything through (an open endpoint)."""

    __slots__ = ("token", "users", "challenge")

    def __init__(self, *, bearer_token: str | None = None, basic_auth=None, what: str = "endpoint",
                 realm: str = "dbperf"):
        self.token = check_token(bearer_token, what) if bearer_token is not None else None
        self.users = _check_users(basic_auth, what) if basic_auth is not None else ()
        schemes = ([f'Basic realm="{realm}", charset="UTF-8"'] if self.users else []) + \
                  ([f'Bearer realm="{realm}"'] if self.token is not None else [])
        self.challenge = ", ".join(schemes)

    @property
    def open(self) -> bool:
        return self.token is None and not self.users

    def allows(self, authorization: str | None) -> bool:
        """Whether the ``Authorization`` header value grants access (constant time per credential)."""
        if self.open:
            return True
        if not authorization:
            return False
        scheme, _, text = authorization.strip().partition(" ")
        scheme = scheme.lower()
        value = text.strip().encode("latin-1", errors="replace")
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(value, self.token)
        if scheme == "basic" and self.users:
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, password = decoded.partition(b":")
            if not sep:
                return False
            granted = False
            for known_user, known_password in self.users:  # every entry, whichever matches
                same_user = hmac.compare_digest(user, known_user)
                same_password = hmac.compare_digest(password, known_password)
                granted |= same_user & same_password
            return granted
        return False


def token_in_query(query: str) -> bool:
    """Whether a URL query string carries something that looks like a credential (``token``,
    ``access_token``, ``password`` ...): such requests are refused, since URLs end up in access logs."""
    if not query:
        return False
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=100)
    except ValueError:  # too many fields: refuse as well
        return True
    return any(any(word in name.lower() for word in ("token", "password", "secret", "auth"))
               for name, _ in pairs)
