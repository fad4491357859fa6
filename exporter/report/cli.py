"""``dbperf report``: a performance report of a period, read from Prometheus's HTTP API.

Every failure is one line on stderr (printed by ``exporter.cli.main``): exit code 2 when the
arguments are refused (:class:`UsageError`, :class:`~exporter.report.period.PeriodError`,
:class:`~exporter.report.prom.OptionError`: before anything is asked of Prometheus), 1 when
Prometheus is unreachable, refuses, or gives replies the report cannot use
(:class:`~exporter.report.prom.PromError`), when the period holds no data
(:class:`~exporter.report.queries.ReportError`), or when the report cannot be delivered
(:class:`~exporter.errors.RuntimeFailure`)."""

from __future__ import annotations

import json
import os
import sys

import requests

from exporter import errors
from exporter.durations import DurationError, parse_duration
from exporter.errors import RuntimeFailure
from exporter.report.period import parse_period, shown
from exporter.report.prom import TIMEOUT_MAX, TIMEOUT_MIN, Prometheus
from exporter.report.queries import build_report
from exporter.secrets import one_line

TOP_MAX = 1000


class UsageError(errors.UsageError):
    """A refused argument of ``dbperf report``; ``str()`` is the one line to print (exit code 2)."""


def add_arguments(parser) -> None:
    parser.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL, e.g. http://prometheus:9090")
    parser.add_argument("--period", default="24h",
                        help="24h, 7d, 1h30m (a duration, 10m to 366d, ending --end or now), "
                             "or START..END (ISO 8601 or Unix seconds)")
    parser.add_argument("--end", help="end of a relative --period (ISO 8601 or Unix seconds; default now)")
    parser.add_argument("--target", metavar="NAME", help="only this dbperf target (the `target` label)")
    parser.add_argument("--format", choices=["markdown", "html", "json"], default="markdown")
    parser.add_argument("--out", metavar="FILE", help="write the report here (default: stdout)")
    parser.add_argument("--top", default="10", help=f"statements per top list, 1 to {TOP_MAX} (default 10)")
    parser.add_argument("--bearer-token-file", metavar="FILE", help="send 'Authorization: Bearer <file content>'")
    parser.add_argument("--basic-auth", metavar="USER:PASSWORD_FILE", help="HTTP basic auth, the password read from a file")
    parser.add_argument("--timeout", default="60s",
                        help="the most one Prometheus query may take, all included: 30s, 2m or seconds "
                             "(1s to 1h; default 60s)")
    parser.add_argument("--webhook", metavar="URL", help='also POST the Markdown summary to a Slack-compatible webhook ({"text": ...})')
    parser.add_argument("--progress", action="store_true", help="show progress on stderr (default: only when stderr is a terminal)")
    parser.set_defaults(func=run)


def parse_timeout(text: str) -> float:
    try:
        return parse_duration(text, minimum=TIMEOUT_MIN, maximum=TIMEOUT_MAX, bare_seconds=True)
    except DurationError as exc:
        raise UsageError(f"--timeout {shown(text)}: {exc}") from None


def parse_top(text: str) -> int:
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit() and len(stripped) <= 7 and 1 <= int(stripped) <= TOP_MAX):
        raise UsageError(f"--top {shown(text)}: must be a whole number from 1 to {TOP_MAX}")
    return int(stripped)


def check_arguments(args) -> None:
    """Everything refused before Prometheus is asked anything."""
    if args.target is not None and (not args.target or len(args.target) > 200 or not args.target.isprintable()):
        raise UsageError(f"--target {shown(args.target)}: must be a target name (printable, 1 to 200 characters)")
    if args.out:
        folder = os.path.dirname(os.path.abspath(args.out))
        if os.path.isdir(args.out) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            why = "is a directory" if os.path.isdir(args.out) else f"cannot write in {one_line(folder, 200)}"
            raise UsageError(f"--out {one_line(args.out, 200)}: {why}")
    if args.webhook:
        scheme = args.webhook.split("://", 1)[0].lower() if "://" in args.webhook else ""
        if scheme not in ("http", "https"):
            raise UsageError(f"--webhook {_redact(args.webhook)}: must be an http:// or https:// URL")


def run(args) -> int:
    period = parse_period(args.period, args.end)
    timeout, top = parse_timeout(args.timeout), parse_top(args.top)
    check_arguments(args)
    prom = Prometheus(args.prometheus, args.bearer_token_file, args.basic_auth, timeout=timeout)
    show = args.progress or sys.stderr.isatty()
    progress = (lambda message: print(f"dbperf report: {message}", file=sys.stderr, flush=True)) if show else None
    report = build_report(prom, period, target=args.target, top=top, progress=progress)
    if args.format == "json":
        text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    elif args.format == "html":
        from exporter.report.render_html import render_html

        text = render_html(report)
    else:
        from exporter.report.render_markdown import render_markdown

        text = render_markdown(report)
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise RuntimeFailure(f"--out {one_line(args.out, 200)}: cannot write: {exc.strerror}") from None
    else:
        sys.stdout.write(text)
    if args.webhook:
        from exporter.report.render_markdown import summary_markdown

        try:
            # the reply is not read: only its status (a webhook of 10 GB stays on the wire)
            with requests.post(args.webhook, json={"text": summary_markdown(report)}, timeout=30, stream=True) as response:
                status = response.status_code
        except (requests.RequestException, ValueError) as exc:
            raise RuntimeFailure(f"--webhook: cannot post to {_redact(args.webhook)}: {type(exc).__name__}") from None
        if status >= 300:
            raise RuntimeFailure(f"--webhook: {_redact(args.webhook)} answered HTTP {status}")
        if progress:
            progress("summary posted to the webhook")
    return 0


def _redact(url: str) -> str:
    """Webhook URLs carry their secret in the path (Slack: /services/T../B../XXXX): keep the host only,
    without user:password@."""
    from exporter.secrets import scrub_url

    return scrub_url(url, path=False)
