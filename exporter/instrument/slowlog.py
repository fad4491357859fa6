"""The slow log endpoint: the last slow requests and slow statements (normalised SQL, literals
removed) as JSON. It needs a token, sent as ``Authorization: Bearer <token>`` only, and must not be
exposed publicly: handlers, timings and statement shapes describe the application.

The token is checked when the app is made (at least 16 printable characters, not blank) and
compared in constant time. A request with a token in its query string (``?token=...``) gets a 400
whatever the token: URLs end up in access logs, so the token is refused there even when right."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from .auth import Credentials, token_in_query

if TYPE_CHECKING:  # annotations only: core imports this module lazily, no import back at run time
    from .core import Instrumentation

log = logging.getLogger("exporter.instrument")

_JSON = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
_DENIED = json.dumps({"error": "a valid token is required (Authorization: Bearer <token>)"}).encode()
_IN_URL = json.dumps({"error": "the slow log token must be sent in the Authorization header, never in "
                               "the URL (URLs end up in access logs): rotate it"}).encode()


def _credentials(token) -> Credentials:
    return Credentials(bearer_token=token, what="slow log", realm="slowlog")


def _body(inst: Instrumentation) -> bytes:
    data = inst.slowlog.snapshot()
    data["slow_request_seconds"] = inst.slow_request_seconds
    data["slow_statement_seconds"] = inst.slow_statement_seconds
    return json.dumps(data).encode()


def _answer(inst: Instrumentation, creds: Credentials, authorization: str | None, query: str):
    """(status, reason, extra headers, body)."""
    if token_in_query(query):
        log.warning("slow log: refused a request with a credential in its URL query string (send it in "
                    "the Authorization header; the URL may be in access logs, rotate the token)")
        return 400, "Bad Request", [], _IN_URL
    if not creds.allows(authorization):
        return 401, "Unauthorized", [("WWW-Authenticate", creds.challenge)], _DENIED
    return 200, "OK", [], _body(inst)


def slowlog_asgi_app(inst: Instrumentation, token: str):
    """An ASGI app serving the slow log; mount it, e.g. ``app.add_route("/debug/slowlog", ...)``."""
    creds = _credentials(token)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        auth = None
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                auth = value.decode("latin-1")
                break
        status, _, extra, body = _answer(inst, creds, auth, scope.get("query_string", b"").decode("latin-1"))
        headers = [(k.lower().encode(), v.encode()) for k, v in _JSON + extra]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    from .exposition import ASGIApp
    return ASGIApp(app)


def slowlog_wsgi_app(inst: Instrumentation, token: str):
    """A WSGI app serving the slow log (mount with werkzeug's DispatcherMiddleware or route to it)."""
    creds = _credentials(token)

    def app(environ, start_response):
        status, reason, extra, body = _answer(inst, creds, environ.get("HTTP_AUTHORIZATION"),
                                              environ.get("QUERY_STRING", ""))
        start_response(f"{status} {reason}", _JSON + extra + [("Content-Length", str(len(body)))])
        return [body]
    return app
