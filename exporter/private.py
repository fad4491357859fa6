"""The private endpoints of ``dbperf serve``: JSON that holds query text, client addresses and
user names (``/samples``, ``/events``), served only with a bearer token.

Off unless the config's top-level ``private_endpoints`` gives a token (``{token_file: PATH}`` or
``{token_env: VARIABLE}``; at least 16 printable characters): without it those paths answer 404
with the key to set. With it, a request needs ``Authorization: Bearer <token>`` (compared in
constant time, :class:`exporter.instrument.auth.Credentials`, the application library's one
mechanism), or, where the web configuration's basic auth takes the Authorization header,
``X-Dbperf-Token: <token>``; a credential in the URL's query is refused (URLs end up in access
logs). The web configuration's TLS and basic auth apply before, as for every path.

Each endpoint is one function ``(exporter, target_name, params) -> JSON-able``, named in
:data:`ENDPOINTS` and imported on first use; ``target`` is required and checked here."""

from __future__ import annotations

import importlib
import json
from urllib.parse import parse_qs

from exporter.instrument.auth import Credentials, check_token, token_in_query

# path -> "module:function"
ENDPOINTS: dict[str, str] = {
    "/samples": "exporter.postgres.samples:endpoint",
    "/events": "exporter.serverlog.events:events",
}

MAX_BODY_ITEMS = 1000  # no endpoint returns more items than this, whatever it is asked


def credentials(token: str) -> Credentials | None:
    return Credentials(bearer_token=token, what="private_endpoints") if token else None


def read_token(reader, source_dir, env, secrets: bool = True) -> str:
    """The token of ``private_endpoints`` (a config ``_Reader``), "" when the key is absent; a
    one-line ConfigError naming the key (never the token) when it is unusable."""
    from pathlib import Path

    from exporter.configfile import MAX_DSN_BYTES, FileProblem, read_text

    if not reader.data:
        return ""
    reader.allow("token_file", "token_env")
    given = [k for k in ("token_file", "token_env") if reader.data.get(k) is not None]
    if len(given) != 1:
        reader.fail("token_file", "exactly one of token_file, token_env is required")
    key = given[0]
    value = reader.get(key, str)
    if key == "token_file":
        path = Path(value) if Path(value).is_absolute() else Path(source_dir) / value
        try:
            token = read_text(path, MAX_DSN_BYTES).strip()
        except FileProblem as exc:
            if not secrets:
                return ""
            reader.fail(key, f"cannot read the token file {path}: {exc}")
    else:
        token = env.get(value, "").strip()
        if not token:
            if not secrets:
                return ""
            reader.fail(key, f"environment variable {value} (the private endpoints' token) is not set or empty")
    try:
        check_token(token, "the private endpoints' token")
    except (TypeError, ValueError) as exc:
        reader.fail(key, str(exc))
    return token


def answer(exporter, path: str, query: str, authorization: str | None,
           token_header: str | None = None) -> tuple[int, bytes, tuple]:
    """``(status, body, headers)`` of a request to a private endpoint ``path``. The token comes in
    ``Authorization: Bearer``, or in ``X-Dbperf-Token`` (``token_header``) where the web config's
    basic auth already takes the Authorization header."""
    creds = getattr(exporter, "private_credentials", None)
    if creds is None:
        return 404, _error(f"{path} is off: set private_endpoints.token_file (or token_env) in the config to "
                           "serve it"), ()
    if token_in_query(query):
        return 400, _error("credentials go in the Authorization header, never in the URL"), ()
    granted = creds.allows(authorization) if authorization and authorization.lower().startswith("bearer") else False
    if not granted and token_header:
        granted = creds.allows("Bearer " + token_header)
    if not granted:
        return 401, _error("unauthorized: send Authorization: Bearer <token>"), (("WWW-Authenticate", creds.challenge),)
    try:
        params = parse_qs(query, max_num_fields=20)
    except ValueError:
        return 400, _error("too many query parameters"), ()
    names = params.get("target", [])
    if len(names) != 1:
        return 400, _error(f"{path} needs exactly one target parameter, e.g. {path}?target=main"), ()
    if names[0] not in exporter.scrapers:
        return 404, _error(f"unknown target {names[0]!r} (configured: {', '.join(sorted(exporter.scrapers))})"), ()
    module, _, function = ENDPOINTS[path].partition(":")
    try:
        body = getattr(importlib.import_module(module), function)(exporter, names[0], params)
    except ValueError as exc:  # a bad parameter: the endpoint's one-line reason
        return 400, _error(str(exc)), ()
    return 200, json.dumps(body, default=str).encode() + b"\n", ()


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode() + b"\n"
