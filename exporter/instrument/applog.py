"""The application's own log as metrics: a ``logging.Handler`` that counts every record it receives
in ``app_log_messages_total{level, logger}`` and keeps the last records at WARNING and above in the
slow log (``/debug/slowlog``'s ``log_records``), so "the last errors of this service" needs no log
store.

    inst.install_log_handler()          # on the root logger; returns the handler

Bounded: ``level`` is one of the five standard names (a custom level counts under the standard one
at or below it), ``logger`` one of the first ``max_loggers`` names seen (50), ``other`` beyond; a
kept message is cut at ``max_message`` characters. A record is formatted (``getMessage()``) only
when it is kept. The handler never raises into the logging call and never changes levels,
propagation or the application's other handlers; it only sees what the logging configuration lets
through to the logger it is installed on. Thread-safe without the handler lock logging would take
per record. Without any other handler, WARNING and worse still reach stderr as they would without
this one (``logging.lastResort``). Multi-process mode: the counter is in prometheus_client's shared files (summed over
workers); the kept records, like the rest of the slow log, are the answering worker's."""

from __future__ import annotations

import logging
import threading
from prometheus_client import Counter

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: core imports this module lazily, no import back at run time
    from .core import Instrumentation

NAME = "app_log_messages_total"
HELP = "Log records the application emitted, by level and logger (the first max_loggers logger names, other beyond)."
OTHER = "other"
LEVELS = ((logging.CRITICAL, "CRITICAL"), (logging.ERROR, "ERROR"), (logging.WARNING, "WARNING"),
          (logging.INFO, "INFO"))
MAX_LOGGER_NAME = 200  # characters of a logger name kept in a record (labels use the capped set)
_CACHE = 4096  # (logger name, levelno) -> counter inc; cleared when full (custom levels are ints)


def level_name(levelno: int) -> str:
    """The standard level at or below ``levelno`` (DEBUG below INFO)."""
    for number, name in LEVELS:
        if levelno >= number:
            return name
    return "DEBUG"


_made = threading.Lock()


def _counter(inst: Instrumentation) -> Counter:
    """The counter family of ``inst`` (one per Instrumentation, however many handlers)."""
    with _made:
        counter = getattr(inst, "_log_counter", None)
        if counter is None:
            counter = inst._log_counter = Counter(NAME, HELP, ["level", "logger"], registry=inst.registry)
        return counter


class LogHandler(logging.Handler):
    """Counts records in ``app_log_messages_total`` and keeps those at ``keep_level`` and above in
    ``instrumentation``'s slow log. Use ``inst.install_log_handler()``, or
    ``logging.getLogger(name).addHandler(LogHandler(inst))``."""

    def __init__(self, instrumentation: Instrumentation, *, max_loggers: int = 50,
                 keep_level: int = logging.WARNING, max_message: int = 1000, level: int = logging.NOTSET):
        if not callable(getattr(instrumentation, "request_state", None)):
            raise TypeError("LogHandler needs an Instrumentation(...) as its first argument")
        for key, value, least in (("max_loggers", max_loggers, 1), ("max_message", max_message, 16)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"log handler: {key} must be an integer of at least {least}, got {value!r}")
        if not isinstance(keep_level, int) or isinstance(keep_level, bool):
            raise TypeError(f"log handler: keep_level must be a level number (logging.WARNING), got {keep_level!r}")
        super().__init__(level)
        self.instrumentation = instrumentation
        self.max_loggers = max_loggers
        self.keep_level = keep_level
        self.max_message = max_message
        self._labels = _counter(instrumentation).labels
        self._slowlog = instrumentation.slowlog
        self._names: set = set()  # logger names with a label of their own
        self._incs: dict = {}
        self._lock = threading.Lock()

    def _inc_of(self, name: str, levelno: int):
        if name not in self._names:
            with self._lock:
                if name not in self._names and len(self._names) < self.max_loggers:
                    self._names.add(name)
        own = name in self._names
        inc = self._labels(level_name(levelno), name if own else OTHER).inc
        if own:  # only names with a label of their own are cached: the table stays bounded
            if len(self._incs) >= _CACHE:
                self._incs.clear()
            self._incs[(name, levelno)] = inc
        return inc

    def handle(self, record: logging.LogRecord) -> bool:
        """Filters, then ``emit`` without the handler lock (the counter and the ring are thread-safe)."""
        if self.filters:
            rv = self.filter(record)
            if not rv:
                return False
            if isinstance(rv, logging.LogRecord):
                record = rv
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            name, levelno = record.name, record.levelno
            inc = self._incs.get((name, levelno))
            if inc is None:
                inc = self._inc_of(str(name), int(levelno))
            inc()
            if levelno >= self.keep_level:
                self._keep(record)
            last = logging.lastResort
            if last is not None and levelno >= last.level and self._alone(name):
                last.handle(record)
        except Exception:  # noqa: BLE001 - a log call must never fail because of this handler
            pass

    def _alone(self, name: str) -> bool:
        """Whether no other handler sees records of logger ``name``: then Python would have printed
        a WARNING or worse on stderr (``logging.lastResort``) had this handler not been installed,
        so it still does."""
        logger = logging.root.manager.loggerDict.get(name) if name != "root" else None
        if not isinstance(logger, logging.Logger):
            logger = logging.root
        while logger is not None:
            for handler in logger.handlers:
                if handler is not self:
                    return False
            if not logger.propagate:
                break
            logger = logger.parent
        return True

    def _keep(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - bad format arguments: keep the template
            message = f"<unformattable> {record.msg!s}"
        if len(message) > self.max_message:
            message = message[:self.max_message] + "…"
        exc = record.exc_info[0] if record.exc_info and record.exc_info[0] is not None else None
        state = self.instrumentation.request_state()
        self._slowlog.add_log_record({
            "time": record.created, "level": level_name(record.levelno),
            "logger": str(record.name)[:MAX_LOGGER_NAME], "message": message,
            "exception": exc.__name__ if exc is not None else None,
            "handler": state.handler_now() if state is not None else None,
            "method": state.method if state is not None else None})


def install(inst: Instrumentation, logger: str | logging.Logger | None = None, **options) -> LogHandler:
    """Add a LogHandler of ``inst`` to ``logger`` (the root logger by default) unless one of
    ``inst`` is there already; returns the handler (``logger.removeHandler(h)`` takes it away)."""
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    for handler in target.handlers:
        if isinstance(handler, LogHandler) and handler.instrumentation is inst:
            return handler
    handler = LogHandler(inst, **options)
    target.addHandler(handler)
    return handler
