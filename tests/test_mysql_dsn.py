"""exporter.mysql.dsn and the config of kind: mysql targets: URL and key=value DSNs, one-line errors
that never quote the DSN, descriptions without the password."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from exporter.config import ConfigError, parse
from exporter.mysql import dsn
from exporter.secrets import describe_dsn

pytestmark = pytest.mark.fast

SECRET = "pa:ss@w/rd?#"
QUOTED = quote(SECRET, safe="")  # a URL's password is percent-encoded


def test_url_and_key_value_forms():
    assert dsn.parse("mysql://mon:p%40ss@db.example:3307/shop?ssl_mode=required") == {
        "host": "db.example", "port": 3307, "user": "mon", "password": "p@ss", "database": "shop", "ssl_mode": "required"}
    assert dsn.parse("mariadb://mon@10.0.0.5/") == {"host": "10.0.0.5", "user": "mon"}
    assert dsn.parse("host=db port=3306 user=mon password='a b' dbname=shop") == {
        "host": "db", "port": 3306, "user": "mon", "password": "a b", "database": "shop"}
    assert dsn.parse("socket=/run/mysqld/mysqld.sock user=mon") == {"unix_socket": "/run/mysqld/mysqld.sock", "user": "mon"}
    assert dsn.parse("user=mon")["host"] == "localhost"


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    (f"postgres://u:{SECRET}@h/", "scheme must be mysql://"),
    (f"mysql://u:{QUOTED}@h:99999/", "cannot be parsed"),
    (f"host=h password='{SECRET}", "unbalanced quotes"),
    (f"host=h {SECRET}", "key=value"),
    (f"host=h passwd={SECRET}", "unknown parameter 'passwd'"),
    ("host=h port=x", "port must be a number"),
    ("host=h ssl_mode=maybe", "ssl_mode must be one of"),
])
def test_errors_name_the_problem_and_never_the_password(text, reason):
    problem = dsn.problem(text)
    assert problem is not None and reason in problem, problem
    assert SECRET not in problem and QUOTED not in problem and "ss@w" not in problem


def test_description_has_no_password():
    text = f"mysql://mon:{QUOTED}@db:3306/shop"
    assert dsn.password_of(text) == SECRET
    assert describe_dsn(text, "mysql") == "host=db port=3306 user=mon database=shop"
    assert dsn.describe("socket=/tmp/m.sock user=mon") == "socket=/tmp/m.sock user=mon"


def config(target: dict, **top):
    return parse({"targets": [{"name": "my", "kind": "mysql", **target}], **top}, source="c.yaml", env={"MY_DSN": "mysql://mon:pw@db/"})


def test_a_mysql_target():
    target = config({"dsn": "mysql://mon:pw@db/", "table_limit": 50, "connect_timeout": 2,
                     "collectors": {"tables": {"ttl": 60}, "table_io": False}}).targets[0]
    assert (target.kind, target.table_limit, target.connect_timeout) == ("mysql", 50, 2.0)
    assert target.collector("tables", True).ttl == 60 and not target.collector("table_io", True).enabled
    assert config({"dsn_env": "MY_DSN"}).targets[0].dsn == "mysql://mon:pw@db/"
    assert config({"dsn": "mysql://db/", "statements": {"limit": 5, "query_text": True}}).targets[0].statements.limit == 5
    # the top-level collectors: apply to a MySQL target's collector of that name
    assert not config({"dsn": "mysql://db/"}, collectors={"global_status": False}).targets[0].collector(
        "global_status", True).enabled


@pytest.mark.parametrize("target, key, reason", [
    ({"dsn": f"mysql://mon:{QUOTED}@db:0/"}, "targets[0].dsn", "port must be a number in 1 .. 65535"),
    ({"dsn": "mysql://db/", "databases": {"discover": False}}, "targets[0].databases", "unknown key"),
    ({"dsn": "mysql://db/", "collectors": {"statements_pg": True}}, "targets[0].collectors.statements_pg",
     "unknown collector"),
    ({"dsn": "mysql://db/", "collectors": {"wait_events": True}}, "targets[0].collectors.wait_events",
     "unknown collector"),
    ({"dsn_env": "UNSET"}, "targets[0].dsn_env", "is not set"),
    ({"dsn": "mysql://db/", "kind": "oracle"}, "targets[0].kind", "must be one of postgres, pgbouncer, mysql"),
])
def test_config_errors_name_the_key(target, key, reason):
    with pytest.raises(ConfigError) as caught:
        config(target)
    assert caught.value.key == key and reason in caught.value.reason, str(caught.value)
    assert SECRET not in str(caught.value) and QUOTED not in str(caught.value) and "\n" not in str(caught.value)
