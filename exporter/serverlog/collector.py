"""The ``server_log`` collector: renders the target's log reader (:mod:`exporter.serverlog.reader`)
at scrape time, without SQL and without waiting for the reader. On for targets with a
``server_log:`` key; the reader starts at the first scrape and stops when the exporter closes."""

from __future__ import annotations

import threading

from exporter.collector import CLUSTER, Collector, Context
from exporter.metrics import Family
from exporter.serverlog.tally import COUNTERS, HISTOGRAMS

SELF = (
    ("dbperf_log_lines_total", "counter", (), "Log entries dbperf parsed."),
    ("dbperf_log_lines_dropped_total", "counter", ("reason",),
     "Log entries skipped: rate_limit (over server_log.max_lines_per_second)."),
    ("dbperf_log_lines_cut_total", "counter", (), "Log entries longer than server_log.max_line_bytes, cut to it."),
    ("dbperf_log_parse_errors_total", "counter", (), "Log records that could not be read as entries of the format."),
    ("dbperf_log_reader_up", "gauge", (), "1 when the reader's last read of the log succeeded."),
    ("dbperf_log_reader_lag_bytes", "gauge", (), "Bytes of the log not read yet."),
    ("dbperf_log_reader_rotations_total", "counter", (), "Moves to a newer log file (rotation)."),
    ("dbperf_log_reader_truncations_total", "counter", (), "Log files that shrank under the read position."),
    ("dbperf_log_reader_failures_total", "counter", (), "Reads of the log that failed."),
)


class SharedReader:
    """The target's one reader, made at the first scrape."""

    def __init__(self):
        self.reader = None
        self._lock = threading.Lock()
        self._closed = False

    def get(self, target):
        from exporter.serverlog.reader import LogReader

        with self._lock:
            if self.reader is None and not self._closed:
                self.reader = LogReader(target)
            if self.reader is None:
                raise RuntimeError("the server_log reader was stopped (the exporter is closing)")
            self.reader.start()
            return self.reader

    def close(self) -> None:
        with self._lock:
            self._closed = True
            reader = self.reader
        if reader is not None:
            reader.close()


class ServerLogCollector(Collector):
    def __init__(self):
        super().__init__(
            name="server_log", scope=CLUSTER, optional=False, enabled_by_default=False,
            help="the server's log as metrics (targets with server_log:): a reader thread follows the log file or "
                 "directory (jsonlog, csvlog or stderr; or remotely through pg_read_binary_file) and counts "
                 "connections, authentication failures, errors by SQLSTATE, lock waits, deadlocks, temporary files, "
                 "checkpoints, autovacuum runs, slow statements and DDL; served without SQL (docs/server-log.md)",
            families=tuple(f.name for f in self.describe()))
        self.shared = SharedReader()

    @staticmethod
    def describe() -> list[Family]:
        out = [Family(name, "counter", help_, labels) for name, labels, help_ in COUNTERS.values()]
        out += [Family(name, "histogram", help_, labels) for name, labels, help_ in HISTOGRAMS.values()]
        out += [Family(name, kind, help_, labels) for name, kind, labels, help_ in SELF]
        return out

    def collect(self, conn, ctx: Context, timeout: float = 2.0) -> list[Family]:
        target = ctx.options
        if getattr(target, "server_log", None) is None:
            raise RuntimeError("server_log is enabled but the target has no server_log: key (path or remote)")
        reader = self.shared.get(target)
        if reader.unavailable:
            from exporter.serverlog.follow import Unavailable

            raise Unavailable(reader.unavailable)
        if reader.reads == 0 and reader.last_error:
            raise RuntimeError(f"cannot read the server log: {reader.last_error}")
        counters, histograms = reader.tally.snapshot()
        families = []
        for key, (name, labels, help_) in COUNTERS.items():
            family = Family(name, "counter", help_, labels)
            for values in sorted(counters[key]):
                family.add(values, counters[key][values])
            families.append(family)
        for key, (name, labels, help_) in HISTOGRAMS.items():
            family = Family(name, "histogram", help_, labels)
            for values in sorted(histograms[key]):
                buckets, total = histograms[key][values]
                family.add_histogram(values, buckets, total)
            families.append(family)
        f = reader.follower
        values = {"dbperf_log_lines_total": [((), reader.lines)],
                  "dbperf_log_lines_dropped_total": [(("rate_limit",), reader.dropped)],
                  "dbperf_log_lines_cut_total": [((), reader.framer.cut)],
                  "dbperf_log_parse_errors_total": [((), reader.parser.errors)],
                  "dbperf_log_reader_up": [((), 0 if reader.last_error else 1)],
                  "dbperf_log_reader_lag_bytes": [((), f.lag)],
                  "dbperf_log_reader_rotations_total": [((), f.rotations)],
                  "dbperf_log_reader_truncations_total": [((), f.truncations)],
                  "dbperf_log_reader_failures_total": [((), reader.failures)]}
        for name, kind, labels, help_ in SELF:
            family = Family(name, kind, help_, labels)
            for labelvalues, value in values[name]:
                family.add(labelvalues, value)
            families.append(family)
        return families

    def close(self) -> None:
        self.shared.close()
