"""``dbperf convert-queries FILE [--output OUT]``: a postgres_exporter queries file as a dbperf
collector file.

Exit codes (docs/exit-codes.md): 0 everything converted; 3 converted, with what could not be
named on stderr (one line each: file, namespace.column, why); 2 FILE refused (unreadable, not
YAML, wrong shape: one line naming the file and the key) or ``--output`` is FILE, nothing written;
1 the output could not be written. Notes (a renamed metric, a label dbperf adds) go to stderr too
and leave the code at 0.
"""

from __future__ import annotations

import argparse
import os
import sys

from exporter.errors import RuntimeFailure, UsageError
from exporter.secrets import one_line

PROG = "dbperf convert-queries"
EXIT_OMISSIONS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Converts a postgres_exporter queries file (--extend.query-path) into a dbperf collector "
                          "file; what cannot be converted is named on stderr (exit code 3). "
                          "See docs/migrating-from-postgres-exporter.md.")
    parser.add_argument("file", metavar="FILE", help="the postgres_exporter queries.yaml")
    parser.add_argument("--output", "-o", metavar="OUT", help="write the collector file to OUT (default: stdout)")
    parser.add_argument("--auto-discover-databases", action=argparse.BooleanOptionalAction, default=True,
                        help="as postgres_exporter's flag of that name (default: on): a query without master: true "
                             "runs on every database (scope: database); --no-auto-discover-databases: every query "
                             "runs once, on the target's own database (scope: cluster), as postgres_exporter runs "
                             "them without the flag")
    parser.set_defaults(func=cmd_convert_queries)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def cmd_convert_queries(args) -> int:
    from exporter.convert import output, queries
    from exporter.convert.mapping import Converter

    namespaces = queries.read(args.file)  # a ConfigError: one line, exit 2 (exporter.cli.main)
    if args.output and _same_file(args.output, args.file):
        raise UsageError(f"--output: {one_line(args.output, 200)} is the queries file itself: choose another file")
    converter = Converter(auto_discover=args.auto_discover_databases)
    text = output.render(converter.convert(namespaces), args.file)
    try:
        if args.output:
            output.write(args.output, text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    except OSError as exc:
        raise RuntimeFailure(f"--output {one_line(args.output or '-', 200)}: cannot write: "
                             f"{exc.strerror or type(exc).__name__}") from None
    source = one_line(args.file, 200)
    for line in converter.report.lines:
        print(f"{PROG}: {source}: {line.key}: {line.text}", file=sys.stderr)
    omitted = converter.report.omissions
    print(f"{PROG}: {source}: {len(converter.collectors)} collectors, {len(converter.metric_owner)} metrics "
          "converted" + (f"; {omitted} not converted (named above)" if omitted else ""), file=sys.stderr)
    return EXIT_OMISSIONS if omitted else 0
