"""``dbperf plans --target NAME --queryid ID``: the stored plans of one statement, newest first, read
from the state directory (:mod:`exporter.postgres.plan_history`), without the running server."""

from __future__ import annotations

import datetime
import json

from exporter.errors import RuntimeFailure, UsageError


def add_arguments(parser) -> None:
    parser.add_argument("--config", "-c", help="YAML config file (default: $DBPERF_CONFIG, or $DBPERF_DSN alone)")
    parser.add_argument("--target", required=True, help="the target's name in the config")
    parser.add_argument("--queryid", required=True, help="the statement's queryid (the queryid label)")
    parser.add_argument("--database", help="only the statement's plans in this database")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="text: each plan as an indented tree (default); json: the stored plans")
    parser.set_defaults(func=run)


def _when(ts) -> str:
    return datetime.datetime.fromtimestamp(float(ts), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(plans: list[dict]) -> str:
    from exporter.postgres.plan_history import describe

    out = []
    for i, p in enumerate(plans):
        state = "current" if i == 0 else "earlier"
        out.append(f"plan {p['fingerprint']} ({state}) in database {p['datname']}: first seen {_when(p['first_seen'])}, "
                   f"last seen {_when(p['last_seen'])}, from {'the normalised text (GENERIC_PLAN)' if p['source'] == 'generic' else 'a sample'}")
        out += ["  " + line for line in describe(p["plan"])] if p.get("plan") else ["  (plan too large to keep)"]
        out.append("")
    return "\n".join(out)


def run(args) -> int:
    from exporter.config import resolve
    from exporter.postgres.plan_history import PURPOSE, statement_plans
    from exporter.state import state_dir, state_file

    config = resolve(args.config, secrets=False)
    target = config.target(args.target)
    if target is None:
        names = ", ".join(t.name for t in config.targets)
        raise UsageError(f"--target: no target {args.target!r} in {config.source} (targets: {names})")
    if not args.queryid.lstrip("-").isdigit():
        raise UsageError(f"--queryid: must be an integer (a queryid label), got {args.queryid!r}")
    plans = statement_plans(config.state_dir, target.name, args.queryid, args.database)
    if not plans:
        where = state_file(state_dir(config.state_dir), PURPOSE, target.name)
        raise RuntimeFailure(f"no stored plans of statement {args.queryid} of target {target.name}"
                             f"{f' in database {args.database}' if args.database else ''} (in {where}; plans are "
                             "kept while dbperf serve runs with plans: {enabled: true})")
    print(json.dumps(plans, indent=2) if args.format == "json" else render(plans), end="\n" if args.format == "json" else "")
    return 0
