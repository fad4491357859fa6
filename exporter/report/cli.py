"""``dbperf report``: a performance report of a period, read from Prometheus's HTTP API."""

from __future__ import annotations

import json
import sys

import requests

from exporter.report.period import PeriodError, parse_period
from exporter.report.prom import PromError, Prometheus
from exporter.report.queries import ReportError, build_report

EXIT_ERROR = 2


def add_arguments(parser) -> None:
    parser.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL, e.g. http://prometheus:9090")
    parser.add_argument("--period", default="24h",
                        help="24h, 7d (any N s/m/h/d/w, ending --end or now), or START..END (ISO 8601 or Unix seconds)")
    parser.add_argument("--end", help="end of a relative --period (ISO 8601 or Unix seconds; default now)")
    parser.add_argument("--target", metavar="NAME", help="only this dbperf target (the `target` label)")
    parser.add_argument("--format", choices=["markdown", "html", "json"], default="markdown")
    parser.add_argument("--out", metavar="FILE", help="write the report here (default: stdout)")
    parser.add_argument("--top", type=int, default=10, help="statements per top list (default 10)")
    parser.add_argument("--bearer-token-file", metavar="FILE", help="send 'Authorization: Bearer <file content>'")
    parser.add_argument("--basic-auth", metavar="USER:PASSWORD_FILE", help="HTTP basic auth, the password read from a file")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per Prometheus query (default 60)")
    parser.add_argument("--webhook", metavar="URL", help='also POST the Markdown summary to a Slack-compatible webhook ({"text": ...})')
    parser.add_argument("--progress", action="store_true", help="show progress on stderr (default: only when stderr is a terminal)")
    parser.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"dbperf report: {message}", file=sys.stderr)
    return EXIT_ERROR


def run(args) -> int:
    try:
        period = parse_period(args.period, args.end)
    except PeriodError as exc:
        return _fail(f"--period: {exc}")
    show = args.progress or sys.stderr.isatty()
    progress = (lambda message: print(f"dbperf report: {message}", file=sys.stderr, flush=True)) if show else None
    try:
        prom = Prometheus(args.prometheus, args.bearer_token_file, args.basic_auth, timeout=args.timeout)
        report = build_report(prom, period, target=args.target, top=args.top, progress=progress)
    except (PromError, ReportError) as exc:
        return _fail(str(exc))
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
            return _fail(f"--out {args.out}: cannot write: {exc.strerror}")
    else:
        sys.stdout.write(text)
    if args.webhook:
        from exporter.report.render_markdown import summary_markdown

        try:
            response = requests.post(args.webhook, json={"text": summary_markdown(report)}, timeout=30)
        except requests.RequestException as exc:
            return _fail(f"--webhook: cannot post to {_redact(args.webhook)}: {type(exc).__name__}")
        if response.status_code >= 300:
            return _fail(f"--webhook: {_redact(args.webhook)} answered HTTP {response.status_code}")
        if progress:
            progress("summary posted to the webhook")
    return 0


def _redact(url: str) -> str:
    """Webhook URLs carry their secret in the path (Slack: /services/T../B../XXXX): keep the host only,
    without user:password@."""
    from exporter.secrets import scrub_url

    return scrub_url(url, path=False)
