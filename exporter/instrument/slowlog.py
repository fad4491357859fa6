"""The slow log endpoint: the last slow requests and slow statements (normalised SQL, literals
removed) as JSON. It needs a token (``Authorization: Bearer <token>`` or ``?token=<token>``) and
must not be exposed publicly: handlers, timings and statement shapes describe the application."""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs

from .core import Instrumentation


def _check_token(token) -> bytes:
    if not isinstance(token, str) or len(token) < 8:
        raise ValueError("the slow log needs a token of at least 8 characters (it must not be public)")
    return token.encode()


def _authorised(expected: bytes, authorization: str | None, query: str) -> bool:
    given = None
    if authorization and authorization[:7].lower() == "bearer ":
        given = authorization[7:].strip()
    else:
        values = parse_qs(query).get("token")
        if values:
            given = values[0]
    return given is not None and hmac.compare_digest(given.encode(), expected)


def _body(inst: Instrumentation) -> bytes:
    data = inst.slowlog.snapshot()
    data["slow_request_seconds"] = inst.slow_request_seconds
    data["slow_statement_seconds"] = inst.slow_statement_seconds
    return json.dumps(data).encode()


_DENIED = json.dumps({"error": "a valid token is required (Authorization: Bearer or ?token=)"}).encode()


def slowlog_asgi_app(inst: Instrumentation, token: str):
    """An ASGI app serving the slow log; mount it, e.g. ``app.mount("/debug/slowlog", ...)``."""
    expected = _check_token(token)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        headers = dict(scope.get("headers") or ())
        auth = headers.get(b"authorization", b"").decode("latin-1") or None
        ok = _authorised(expected, auth, scope.get("query_string", b"").decode("latin-1"))
        body = _body(inst) if ok else _DENIED
        extra = [] if ok else [(b"www-authenticate", b'Bearer realm="slowlog"')]
        await send({"type": "http.response.start", "status": 200 if ok else 401,
                    "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store"), *extra]})
        await send({"type": "http.response.body", "body": body})

    from .exposition import ASGIApp
    return ASGIApp(app)


def slowlog_wsgi_app(inst: Instrumentation, token: str):
    """A WSGI app serving the slow log (mount with werkzeug's DispatcherMiddleware or route to it)."""
    expected = _check_token(token)

    def app(environ, start_response):
        ok = _authorised(expected, environ.get("HTTP_AUTHORIZATION"), environ.get("QUERY_STRING", ""))
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        if not ok:
            headers.append(("WWW-Authenticate", 'Bearer realm="slowlog"'))
        start_response("200 OK" if ok else "401 Unauthorized", headers)
        return [_body(inst) if ok else _DENIED]
    return app
