"""Cost per log record of exporter.instrument's log handler (exporter/instrument/applog.py).

The application's logger already has a handler of its own (a ``NullHandler``, the cheapest: what
the application's handling costs is not ours); variants add the LogHandler beside it. Measured:
a counted record (INFO, not kept), a kept record (WARNING: formatted and stored in the slow log),
the same inside a request (the route read from the request context), a record below the logger's
level (never reaches any handler), and, for scale, a plain ``StreamHandler`` with a formatter
writing to memory, which is what an application's own handler costs at least.

CPU time of this process (``time.process_time``), alternating rounds; an overhead is the median
over the rounds of (variant - baseline) within one round, as in bench/instrument.py.

    python bench/applog.py [--records 200000] [--write]

--write puts the table at the end of bench/INSTRUMENT_RESULTS.md (replacing the former one;
bench/instrument.py --write keeps it).
"""

from __future__ import annotations

import argparse
import io
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.instrument import Instrumentation, LogHandler  # noqa: E402

MARK = "<!-- bench/applog.py writes from here on -->"
ROUND = 2000
CLOCK = time.process_time


def _logger(name: str, *handlers) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [logging.NullHandler(), *handlers]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def variants() -> dict:
    """name -> (baseline callable, variant callable), each logging ROUND records."""
    inst = Instrumentation(slowlog_size=100)
    bare = _logger("bench.bare")
    counted = _logger("bench.counted", LogHandler(inst))
    stream = logging.StreamHandler(io.StringIO())
    stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    streamed = _logger("bench.streamed", stream)

    def loop(log, level):
        def run():
            for i in range(ROUND):
                log(level, "order %s for customer %d", "A-17", i)
        return run

    def in_request(log, level):
        def run():
            state, token = inst.start_request("GET", "/orders/{id}")
            try:
                loop(log, level)()
            finally:
                inst.end_context(token)
        return run

    return {
        "INFO record, counted": (loop(bare.log, logging.INFO), loop(counted.log, logging.INFO)),
        "WARNING record, counted and kept": (loop(bare.log, logging.WARNING), loop(counted.log, logging.WARNING)),
        "WARNING record inside a request (route kept)": (in_request(bare.log, logging.WARNING),
                                                        in_request(counted.log, logging.WARNING)),
        "DEBUG record below the logger's level": (loop(bare.log, logging.DEBUG), loop(counted.log, logging.DEBUG)),
        "for scale: a StreamHandler with a formatter, INFO": (loop(bare.log, logging.INFO),
                                                             loop(streamed.log, logging.INFO)),
    }


def measure(records: int) -> dict:
    rounds = max(10, records // ROUND)
    out = {}
    for name, (base, variant) in variants().items():
        base_us, var_us, diffs = [], [], []
        for r in range(rounds):
            pair = []
            for run in ((base, variant) if r % 2 == 0 else (variant, base)):
                start = CLOCK()
                run()
                pair.append((CLOCK() - start) / ROUND * 1e6)
            b, v = pair if r % 2 == 0 else pair[::-1]
            base_us.append(b)
            var_us.append(v)
            diffs.append(v - b)
        q = statistics.quantiles(diffs, n=4)
        out[name] = (statistics.median(base_us), statistics.median(var_us), statistics.median(diffs), q[2] - q[0])
    return out


def render(results: dict, records: int) -> str:
    lines = [MARK, "", "## Application log handler (`inst.install_log_handler()`)", "",
             f"`python bench/applog.py --records {records}` on {platform.python_implementation()} "
             f"{platform.python_version()}, {platform.machine()}; rounds of {ROUND} records, alternating. "
             "The logger has a NullHandler of its own; the variant adds the LogHandler beside it.", "",
             "| record | µs, without | µs, with | overhead, median of paired rounds | noise (IQR) |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {b:.2f} | {v:.2f} | {d:+.2f} | {n:.2f} |" for name, (b, v, d, n) in results.items()]
    lines += ["", "A counted record is a dictionary look-up and a counter increment; a kept one also formats",
              "the message (`getMessage()`), reads the request context and appends to the slow log's ring.",
              "Records below the logger's level never reach a handler: no cost.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200000, help="per variant, over all rounds")
    parser.add_argument("--write", action="store_true", help="append the table to bench/INSTRUMENT_RESULTS.md")
    args = parser.parse_args(argv)
    report = render(measure(args.records), args.records)
    print(report)
    if args.write:
        path = ROOT / "bench" / "INSTRUMENT_RESULTS.md"
        text = path.read_text() if path.exists() else ""
        text = text.split(MARK)[0].rstrip("\n")
        path.write_text(text + "\n\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
