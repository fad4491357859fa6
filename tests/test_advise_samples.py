"""``dbperf advise --sample-seconds N`` on a real server: a leading-wildcard LIKE and a large OFFSET
that only ever reached the server with literals (pg_stat_statements shows ``$1``) are found from a
sample of pg_stat_activity, the RAW text analysed and the finding shown redacted; the serve-side
advisor collector counts them from the sampler's store."""

from __future__ import annotations

import contextlib
import json
import threading

import psycopg
import pytest

from conftest import Samples, make_config, wait_until
from exporter.server import Exporter
from test_advise_cli import advise

pytestmark = pytest.mark.pg

DB = "advise_samples_test"
SECRET = "zq-literal-41c9"
SQL = "SELECT count(*), pg_sleep({sleep}) FROM adv_t WHERE name LIKE '%" + SECRET + "' OFFSET 5000"


@pytest.fixture(scope="module")
def db(pg):
    pg.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {DB}")
    pg.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=DB)
    pg.execute("CREATE TABLE adv_t (id int, name text); INSERT INTO adv_t SELECT i, 'n' || i FROM "
               "generate_series(1, 1000) i", dbname=DB)
    with pg.connect(DB) as conn:
        conn.execute(SQL.format(sleep=0))  # completed once, with its literals: pg_stat_statements shows $n
    (text,) = pg.execute("SELECT query FROM pg_stat_statements WHERE query LIKE %s", dbname=DB,
                         params=("%FROM adv_t WHERE name LIKE%",))[0]
    assert SECRET not in text and "LIKE $" in text and "OFFSET $" in text, text
    return pg


@contextlib.contextmanager
def running(pg, sql: str):
    conn = psycopg.connect(pg.dsn(DB), autocommit=True, application_name="shop")
    pid = conn.info.backend_pid
    worker = threading.Thread(target=_run, args=(conn, sql), daemon=True)
    worker.start()
    try:
        wait_until(lambda: pg.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", params=(pid,))[0][0]
                   == "active", message="the statement runs")
        yield pid
    finally:
        pg.execute("SELECT pg_cancel_backend(%s)", params=(pid,))
        worker.join(10)
        conn.close()


def _run(conn, sql):
    with contextlib.suppress(psycopg.Error):
        conn.execute(sql)


def config_file(tmp_path, pg, **target):
    path = tmp_path / "advise.yaml"
    path.write_text(json.dumps({"targets": [{"name": "main", "dsn": pg.dsn(DB),  # its statements alone
                                             "databases": {"include": DB}, **target}]}))
    return path


def test_advise_finds_the_leading_wildcard_like_from_a_sample_and_shows_it_redacted(db, tmp_path):
    with running(db, SQL.format(sleep=60)):
        code, out, err = advise(config_file(tmp_path, db), "--format", "json", "--sample-seconds", "1")
    assert code == 0, err
    assert SECRET not in out + err
    report = json.loads(out)
    assert report["samples"]["taken"] >= 5 and report["samples"]["checked"] >= 1, report["samples"]
    found = {f["check"]: f for f in report["findings"] if f["details"].get("source") == "sample of pg_stat_activity"}
    like, offset = found["leading_wildcard_like"], found["large_offset"]
    assert like["database"] == DB and like["subject"].startswith("queryid ")
    assert "name LIKE '%\u2026' starts with a wildcard" in like["message"]
    assert like["details"]["query"] == "SELECT count(*), pg_sleep(?) FROM adv_t WHERE name LIKE '%\u2026' OFFSET ?"
    assert like["details"]["application"] == "shop" and like["details"]["calls"] >= 1
    assert "over 1000" in offset["message"]


def test_the_table_says_it_sampled_and_redact_false_shows_the_literal(db, tmp_path):
    with running(db, SQL.format(sleep=60)):
        code, out, err = advise(config_file(tmp_path, db, samples={"redact": False}), "--sample-seconds", "0.5")
    assert code == 0, err
    assert "samples: pg_stat_activity sampled for 0.5 s" in out and "literals shown" in out
    assert f"name LIKE '%{SECRET}' starts with a wildcard" in out and "OFFSET 5000 reads" in out


def test_without_sampling_the_literal_is_not_found(db, tmp_path):
    with running(db, SQL.format(sleep=60)):
        code, out, err = advise(config_file(tmp_path, db), "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert "samples" not in report
    assert "leading_wildcard_like" not in {f["check"] for f in report["findings"]}


@pytest.mark.parametrize("value", ["-1", "601", "nan"])
def test_bad_sample_seconds_is_one_line(db, tmp_path, value):
    code, out, err = advise(config_file(tmp_path, db), "--sample-seconds", value)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "--sample-seconds" in err


def test_the_advisor_collector_counts_findings_from_the_samplers_store(db):
    config = make_config(db, {"databases": {"include": DB}, "wait_events": {"interval": "0.2s"},
                              "collectors": {"advisor": {"enabled": True, "ttl": 0}}})
    exporter = Exporter(config)
    try:
        exporter.probe("main", 10.0)  # starts the sampler
        from exporter.postgres.samples import sampler_of

        sampler = sampler_of(exporter.scrapers["main"])
        with running(db, SQL.format(sleep=60)):
            wait_until(lambda: any(SECRET in s.text for s in sampler.store.recent(50)), message="the sample")
        metrics = Samples(exporter.probe("main", 20.0).decode())
        assert metrics.value("dbperf_advisor_findings", datname=DB, kind="statement", check="leading_wildcard_like",
                             severity="medium") == 1
        assert metrics.value("dbperf_advisor_findings", datname=DB, kind="statement", check="large_offset",
                             severity="medium") == 1
    finally:
        exporter.close()
