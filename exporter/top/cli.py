"""``dbperf top [--config FILE --target NAME | --dsn DSN] [--interval 1s] [--window 60s] [--once]``.

A live view in the terminal (:mod:`.screen`); ``--once`` prints one frame as plain text instead
(two samples, one interval apart, so the load is measured) and works without a terminal. The
first refresh must reach the server (else one line and exit 1); after that a failed refresh is
shown on the screen, which keeps retrying."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import replace

from exporter.durations import DurationError, parse_duration
from exporter.errors import UnavailableError, UsageError

MAX_WINDOW = 3600.0


def add_arguments(parser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", "-c", help="YAML config file (default: $DBPERF_CONFIG, or $DBPERF_DSN alone)")
    where.add_argument("--dsn", help="connect to this DSN instead of a config's target (a password is better "
                                     "kept in $PGPASSWORD or ~/.pgpass than on the command line)")
    parser.add_argument("--target", "-t", help="target name from the config (optional when there is only one)")
    parser.add_argument("--interval", default=None,
                        help="time between refreshes, 0.1s .. 60s (default: the target's wait_events.interval, 1s)")
    parser.add_argument("--window", default="60s", help="load is averaged over this last period (default 60s)")
    parser.add_argument("--once", action="store_true",
                        help="print one frame as plain text and exit (no terminal needed)")
    parser.set_defaults(func=run)


def _seconds(option: str, value: str, minimum: float, maximum: float) -> float:
    try:
        return parse_duration(value, minimum=minimum, maximum=maximum)
    except DurationError as exc:
        raise UsageError(f"{option}: {exc}, got {value[:40]!r}") from None


def target_of(args):
    """The target to watch, with ``--interval`` as its sampler's interval."""
    from exporter.config import resolve
    from exporter.target import Target, WaitEventsOptions

    if args.dsn is not None:
        if args.target is not None:
            raise UsageError("--target names a target of a config: it cannot go with --dsn")
        if "\0" in args.dsn or not args.dsn.strip():
            raise UsageError("--dsn: must be a PostgreSQL connection string or URL")
        target = Target(name="dsn", dsn=args.dsn)
    else:
        config = resolve(args.config)
        if args.target is None:
            if len(config.targets) != 1:
                raise UsageError(f"--target is required: the config has {len(config.targets)} targets "
                                 f"({', '.join(t.name for t in config.targets)})")
            target = config.targets[0]
        else:
            target = config.target(args.target)
            if target is None:
                raise UsageError(f"--target: unknown target {args.target[:60]!r} "
                                 f"(known: {', '.join(t.name for t in config.targets)})")
        if target.kind != "postgres":
            raise UsageError(f"--target {target.name}: dbperf top watches PostgreSQL, not a {target.kind} target")
    if args.interval is not None:
        target = replace(target, wait_events=WaitEventsOptions(interval=_seconds("--interval", args.interval, 0.1, 60)))
    return target


def run(args) -> int:
    from exporter.secrets import password_of
    from exporter.top.feed import Feed

    target = target_of(args)
    # the sampler's log lines would draw over the screen: its errors are shown in the frame instead
    logging.getLogger("dbperf").addHandler(logging.NullHandler())
    window = _seconds("--window", args.window, 1.0, MAX_WINDOW)
    if not args.once and not (sys.stdout.isatty() and sys.stdin.isatty()):
        raise UsageError("stdout is not a terminal: dbperf top draws a live screen (--once prints one frame "
                         "as plain text)")
    feed = Feed(target, window)
    try:
        first = feed.refresh()
        if first.error:
            raise UnavailableError(f"target {target.name}: {first.error}").hide(password_of(target.dsn))
        if args.once:
            return _once(feed)
        from exporter.top import screen

        feed.start()
        return screen.run(feed, feed.interval)
    finally:
        feed.close()


def _once(feed) -> int:
    from exporter.secrets import password_of
    from exporter.top.frame import View, plain, render

    time.sleep(feed.interval)  # the second sample measures the load over one interval
    snap = feed.refresh()
    if snap.error:
        raise UnavailableError(f"target {feed.target.name}: {snap.error}").hide(password_of(feed.target.dsn))
    width = shutil.get_terminal_size((120, 40)).columns  # $COLUMNS, else the terminal, else 120
    sys.stdout.write(plain(render(snap, View(), width, None, feed.interval)))
    sys.stdout.flush()
    return 0
