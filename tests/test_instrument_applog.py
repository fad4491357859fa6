"""The application log handler (exporter/instrument/applog.py): app_log_messages_total and the last
WARNING+ records in the slow log. Real apps first (the shop app under uvicorn against PostgreSQL,
the Flask example under a threaded WSGI server), then the handler's own guarantees on plain loggers:
bounded labels, no formatting when not kept, never raising, thread safety, the application's other
handlers and Python's last-resort stderr output untouched."""

from __future__ import annotations

import logging
import threading

import pytest

from conftest import promtool_check_metrics
from exporter.instrument import Instrumentation, LogHandler
from exporter.instrument.applog import level_name
from test_instrument_support import ASGIServer, WSGIThreadServer, samples, value

pytestmark = pytest.mark.fast

TOKEN = "applog-token-for-tests-0123"
SHOP_DB = "dbperf_shop"


@pytest.fixture
def root_handler():
    """Install on the root logger as an application would; removed afterwards."""
    installed = []

    def install(inst, **options):
        handler = inst.install_log_handler(**options)
        installed.append(handler)
        return handler
    yield install
    for handler in installed:
        logging.getLogger().removeHandler(handler)


@pytest.mark.pg
def test_shop_app_counts_and_keeps_its_warnings_and_errors(pg, root_handler):
    from examples.shop_app.app import create_app

    if not pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(SHOP_DB,)):
        pg.execute(f"CREATE DATABASE {SHOP_DB}")
    inst = Instrumentation()
    app = create_app(pg.dsn(SHOP_DB), inst, slowlog_token=TOKEN)
    root_handler(inst)
    shop_logger = logging.getLogger("examples.shop")
    level = shop_logger.level
    shop_logger.setLevel(logging.WARNING)  # whatever an earlier test left on the root logger
    server = ASGIServer(app, inst)
    try:
        for product in (901, 902, 903):
            assert server.get(f"/products/{product}").status_code == 404
        assert server.get("/products/2").status_code == 200
        assert server.get("/fail").status_code == 500
        shop_logger.info("outside any request")  # below WARNING: not counted (the logger's level)
        s = samples(inst)
        assert value(s, "app_log_messages_total", level="WARNING", logger="examples.shop") == 3
        assert value(s, "app_log_messages_total", level="ERROR", logger="examples.shop") == 1
        assert value(s, "app_log_messages_total", level="INFO", logger="examples.shop") == 0
        assert promtool_check_metrics(s.text) == ""
        assert server.get("/debug/slowlog").status_code == 401
        data = server.get("/debug/slowlog", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    finally:
        shop_logger.setLevel(level)
        server.close()
        app.state.engine.dispose()
    mine = [r for r in data["log_records"] if r["logger"] == "examples.shop"]
    assert [(r["level"], r["message"], r["handler"], r["method"]) for r in mine] == [
        ("WARNING", f"product {p} not found", "/products/{product_id}", "GET") for p in (901, 902, 903)] + [
        ("ERROR", "listing failed", "/fail", "GET")]
    assert mine[-1]["exception"] == "ProgrammingError"  # psycopg's UndefinedTable, wrapped by SQLAlchemy
    assert all(r["exception"] is None for r in mine[:3])
    assert all(isinstance(r["time"], float) for r in mine)


@pytest.mark.pg
def test_flask_app_exception_log_inside_the_request(pg, root_handler):
    from examples.flask_app import create_app

    inst = Instrumentation()
    app = create_app(pg.dsn("postgres"), inst, slowlog_token=TOKEN)
    _ = app.logger  # Flask's own stderr handler, added when the app's logger is first used
    root_handler(inst)
    server = WSGIThreadServer(app, inst)
    try:
        for _ in range(2):
            assert server.get("/boom").status_code == 500
        s = samples(inst)
        assert value(s, "app_log_messages_total", level="ERROR", logger=app.logger.name) == 2
        data = server.get("/debug/slowlog", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    finally:
        server.close()
    kept = [r for r in data["log_records"] if r["logger"] == app.logger.name]
    assert [(r["level"], r["handler"], r["exception"]) for r in kept] == [("ERROR", "/boom", "RuntimeError")] * 2
    assert kept[0]["message"] == "Exception on /boom [GET]"


def _logger(name: str, level=logging.DEBUG) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    logger.handlers.clear()
    return logger


def test_levels_and_logger_names_are_bounded():
    inst = Instrumentation()
    handler = LogHandler(inst, max_loggers=3)
    base = _logger("applog.t1", level=1)
    base.addHandler(handler)
    for i in range(10):  # ten child loggers, all reaching the handler on their parent
        child = logging.getLogger(f"applog.t1.c{i}")
        child.warning("w")
        child.info("i")
    base.log(25, "custom level between INFO and WARNING")
    base.log(5, "below DEBUG")
    base.critical("c")
    s = samples(inst)
    series = s.series("app_log_messages_total")
    assert {x.labels["level"] for x in series} <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    loggers = {x.labels["logger"] for x in series}
    assert loggers == {"applog.t1.c0", "applog.t1.c1", "applog.t1.c2", "other"}
    assert value(s, "app_log_messages_total", level="WARNING", logger="other") == 7
    assert value(s, "app_log_messages_total", level="INFO", logger="other") == 8  # 7 children + level 25
    assert value(s, "app_log_messages_total", level="DEBUG", logger="other") == 1
    assert value(s, "app_log_messages_total", level="CRITICAL", logger="other") == 1
    assert sum(x.value for x in series) == 23
    assert level_name(45) == "ERROR" and level_name(0) == "DEBUG" and level_name(60) == "CRITICAL"


class _Counted:
    def __init__(self):
        self.calls = 0

    def __str__(self):
        self.calls += 1
        return "formatted"


def test_formats_only_what_it_keeps_and_cuts_long_messages():
    inst = Instrumentation(slowlog_size=5)
    logger = _logger("applog.t2")
    logger.addHandler(LogHandler(inst, max_message=20))
    logger.addHandler(logging.NullHandler())  # no last-resort stderr output formatting it again
    arg = _Counted()
    logger.info("info %s", arg)
    logger.debug("debug %s", arg)
    assert arg.calls == 0
    logger.warning("warning %s", arg)
    assert arg.calls == 1
    logger.error("x" * 100)
    for i in range(10):
        logger.error("ring %d", i)
    kept = inst.slowlog.snapshot()["log_records"]
    assert [r["message"] for r in kept] == [f"ring {i}" for i in range(5, 10)]  # the last slowlog_size
    assert all(r["handler"] is None and r["method"] is None for r in kept)  # outside any request
    inst2 = Instrumentation()
    logger.handlers.clear()
    logger.addHandler(LogHandler(inst2, max_message=20))
    logger.error("x" * 100)
    assert inst2.slowlog.snapshot()["log_records"][0]["message"] == "x" * 20 + "…"


def test_never_raises_and_leaves_other_handlers_alone(capsys):
    inst = Instrumentation()
    logger = _logger("applog.t3")
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):  # as logging's own handlers do: a failure goes to handleError
            try:
                seen.append(record.getMessage())
            except Exception:
                self.handleError(record)
    logger.addHandler(LogHandler(inst))
    logger.addHandler(Collect())
    logger.error("two %s", "args", "but one placeholder")  # logging's own handlers print a traceback
    logger.error("fine %s", "here")
    capsys.readouterr()
    s = samples(inst)
    assert value(s, "app_log_messages_total", level="ERROR", logger="applog.t3") == 2
    kept = inst.slowlog.snapshot()["log_records"]
    assert kept[0]["message"] == "<unformattable> two %s" and kept[1]["message"] == "fine here"
    assert seen == ["fine here"]  # the other handler got both records; the first failed in it, as always
    assert logger.level == logging.DEBUG and len(logger.handlers) == 2


def test_last_resort_stderr_output_kept_when_it_is_the_only_handler(capsys):
    inst = Instrumentation()
    logger = _logger("applog.t4")
    logger.addHandler(LogHandler(inst))
    logger.warning("nobody else listens")
    logger.info("not for stderr")
    assert capsys.readouterr().err == "nobody else listens\n"  # what Python prints without any handler
    logger.addHandler(logging.NullHandler())
    logger.warning("someone else listens")
    assert capsys.readouterr().err == ""


def test_thread_safe_exact_counts():
    inst = Instrumentation(slowlog_size=10)
    handler = LogHandler(inst, max_loggers=4)
    logger = _logger("applog.t5")
    logger.addHandler(handler)
    loggers = [logging.getLogger(f"applog.t5.n{i}") for i in range(8)]
    start = threading.Barrier(8)

    def work(i):
        start.wait()
        for j in range(2000):
            loggers[(i + j) % 8].info("n")
        loggers[i].error("e")
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = samples(inst)
    series = s.series("app_log_messages_total")
    assert sum(x.value for x in series) == 8 * 2001
    assert len({x.labels["logger"] for x in series}) == 5  # four names and other
    assert len(inst.slowlog.snapshot()["log_records"]) == 8


def test_install_once_per_logger_and_bad_options():
    inst = Instrumentation()
    logger = _logger("applog.t6")
    first = inst.install_log_handler("applog.t6")
    assert inst.install_log_handler(logger) is first and logger.handlers == [first]
    other = Instrumentation()
    assert other.install_log_handler("applog.t6") is not first  # another Instrumentation's counter
    assert inst.install_log_handler("applog.t6.child") is not first  # another logger
    with pytest.raises(ValueError, match="log handler: max_loggers must be an integer of at least 1, got 0"):
        LogHandler(inst, max_loggers=0)
    with pytest.raises(TypeError, match="LogHandler needs an Instrumentation"):
        LogHandler(object())
    LogHandler(inst)  # a second handler shares the Instrumentation's counter family
    assert len([f for f in inst.registry.collect() if f.name == "app_log_messages"]) == 1
