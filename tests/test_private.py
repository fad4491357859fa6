"""The private endpoints (/samples, /events): off without a token, a bearer token compared in
constant time, never a credential in the URL, one target named, a one-line JSON error otherwise."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from exporter import private
from exporter.config import ConfigError, parse
from exporter.server import Exporter, serve_in_thread

pytestmark = pytest.mark.fast

TOKEN = "s3cret-token-of-length-24"
TARGETS = [{"name": "main", "dsn": "host=127.0.0.1 port=1 dbname=x"}]


def echo(exporter, target, params):
    if params.get("limit") == ["bad"]:
        raise ValueError("limit must be a number")
    return {"target": target, "params": params}


@pytest.fixture
def endpoint(monkeypatch):
    monkeypatch.setitem(private.ENDPOINTS, "/test-private", f"{__name__}:echo")
    return "/test-private"


def exporter_with(token_env=None, env=None):
    data = {"targets": TARGETS}
    if token_env:
        data["private_endpoints"] = {"token_env": token_env}
    return Exporter(parse(data, source="/etc/dbperf/c.yaml", env=env or {}))


def test_off_without_a_token(endpoint):
    status, body, _ = private.answer(exporter_with(), endpoint, "target=main", f"Bearer {TOKEN}")
    assert status == 404 and "private_endpoints.token_file" in json.loads(body)["error"]


@pytest.mark.parametrize("query, auth, status", [
    ("target=main", None, 401),
    ("target=main", "Bearer wrong-token-of-length-24", 401),
    ("target=main", f"Basic {TOKEN}", 401),
    (f"target=main&token={TOKEN}", f"Bearer {TOKEN}", 400),
    ("", f"Bearer {TOKEN}", 400),
    ("target=main&target=x", f"Bearer {TOKEN}", 400),
    ("target=nosuch", f"Bearer {TOKEN}", 404),
    ("target=main&limit=bad", f"Bearer {TOKEN}", 400),
    ("target=main", f"Bearer {TOKEN}", 200),
])
def test_answers(endpoint, query, auth, status):
    exp = exporter_with("TOK", {"TOK": TOKEN})
    got, body, headers = private.answer(exp, endpoint, query, auth)
    assert got == status, body
    data = json.loads(body)
    if status == 200:
        assert data["target"] == "main"
    else:
        assert TOKEN not in body.decode() and data["error"]
    if status == 401:
        assert dict(headers)["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("section, env, message", [
    ({"token_env": "TOK"}, {}, "private_endpoints.token_env: environment variable TOK"),
    ({"token_env": "TOK"}, {"TOK": "short"}, "at least"),
    ({"token_file": "nosuch"}, {}, "cannot read the token file /etc/dbperf/nosuch"),
    ({"token_file": "a", "token_env": "b"}, {}, "exactly one of token_file, token_env"),
    ({"tokn": "x"}, {}, "private_endpoints.tokn"),
])
def test_bad_config_is_one_line(section, env, message):
    with pytest.raises(ConfigError) as err:
        parse({"targets": TARGETS, "private_endpoints": section}, source="/etc/dbperf/c.yaml", env=env)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_token_file_and_repr(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = parse({"targets": TARGETS, "private_endpoints": {"token_file": "token"}},
                   source=str(tmp_path / "c.yaml"))
    assert config.private_token == TOKEN and TOKEN not in repr(config)


def test_over_http(endpoint):
    server, _ = serve_in_thread(exporter_with("TOK", {"TOK": TOKEN}))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}{endpoint}?target=main"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=5)
        assert err.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Type"] == "application/json"
            assert json.loads(response.read())["target"] == "main"
    finally:
        server.shutdown()
        server.server_close()


def test_token_header_beside_basic_auth_and_too_many_fields(monkeypatch):
    monkeypatch.setitem(private.ENDPOINTS, "/t", f"{__name__}:echo")
    exp = exporter_with("TOK", {"TOK": TOKEN})
    basic = "Basic dXNlcjpwYXNz"
    assert private.answer(exp, "/t", "target=main", basic)[0] == 401
    assert private.answer(exp, "/t", "target=main", basic, TOKEN)[0] == 200
    assert private.answer(exp, "/t", "target=main", basic, "wrong-token-of-length-24")[0] == 401
    status, body, _ = private.answer(exp, "/t", "&".join(f"x{i}=1" for i in range(30)), f"Bearer {TOKEN}")
    assert status == 400 and "too many" in json.loads(body)["error"]
