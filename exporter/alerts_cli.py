"""``dbperf alerts list | ack | unack``: firing alerts and acknowledgements through Alertmanager's
v2 API. An acknowledgement is a silence on the alert's name and labels: notifications stop until it
ends, and the alert still resolves by itself when its condition clears.

Exit codes (docs/exit-codes.md): 0 done, 1 Alertmanager unreachable or refusing
(:class:`AlertmanagerError`), 2 bad input (:class:`UsageError`: a bad ``--for``, label or silence
id, or an ack that matches no alert at the Alertmanager, unless ``--force``). ``exporter.cli.main``
prints them, one line."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import re
import sys

import requests

from exporter import errors
from exporter.durations import DAY, DurationError, parse_duration as parse_seconds
from exporter.secrets import one_line, scrub, scrub_url

DEFAULT_URL = "http://127.0.0.1:9093"
URL_ENV = "DBPERF_ALERTMANAGER_URL"
SILENCE_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_FOR = 365 * DAY  # the longest acknowledgement
# labels shown in the list, in this order, when an alert has them
SHOWN = ("target", "instance", "datname", "standby", "handler", "pool", "pipeline", "slot_name", "mountpoint",
         "database")


class UsageError(errors.UsageError):
    """Bad input: exit code 2."""


class AlertmanagerError(errors.UnavailableError):
    """Alertmanager unreachable or answering with an error: exit code 1."""


def parse_duration(text: str) -> dt.timedelta:
    """``2h``, ``90m``, ``1h30m``, ``1d``, ``1w`` (exporter.durations) from 1s to 365d -> timedelta;
    UsageError otherwise."""
    shown = one_line(repr(text), 80)
    try:
        seconds = parse_seconds(text or "", maximum=MAX_FOR, bare_seconds=False)
    except DurationError as exc:
        reason = "not a duration (use e.g. 30m, 2h, 1h30m, 1d)" if exc.kind == "syntax" else str(exc)
        raise UsageError(f"--for {shown}: {reason}") from None
    if seconds < 1:
        raise UsageError(f"--for {shown}: " + ("must be longer than 0s" if seconds <= 0 else "must be at least 1s"))
    return dt.timedelta(seconds=seconds)


def parse_labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not LABEL_NAME.fullmatch(name):
            raise UsageError(f"--label {pair!r}: expected NAME=VALUE with a label name like target or datname")
        labels[name] = value
    return labels


class Alertmanager:
    def __init__(self, url: str, timeout: float = 10):
        self.url = url.rstrip("/")
        self.shown = scrub_url(self.url)  # the URL in messages: no user:password@, no tokens
        self.timeout = timeout

    def _call(self, method: str, path: str, **kw):
        try:
            response = requests.request(method, self.url + "/api/v2" + path, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise AlertmanagerError(f"Alertmanager at {self.shown} is unreachable: {type(exc).__name__}") from None
        if response.status_code == 404 and path.startswith("/silence/"):
            raise UsageError(f"unknown silence id {path.rsplit('/', 1)[1]!r} (see `dbperf alerts list`)")
        if response.status_code >= 400:
            detail = one_line(scrub(response.text.strip(), *self._secrets()), 200)
            if response.status_code in (400, 422):
                raise UsageError(f"Alertmanager refused the request: {detail}")
            raise AlertmanagerError(f"Alertmanager at {self.shown} answered {response.status_code}: {detail}")
        try:
            return response.json() if response.content else None
        except ValueError:
            raise AlertmanagerError(f"Alertmanager at {self.shown} answered HTTP {response.status_code} with "
                                    "something that is not the Alertmanager API (wrong URL?)") from None

    def _secrets(self) -> tuple:
        from urllib.parse import unquote, urlsplit

        try:
            password = urlsplit(self.url).password
        except ValueError:
            return ()
        return (password, unquote(password)) if password else ()

    def alerts(self) -> list[dict]:
        return self._call("GET", "/alerts", params={"active": "true", "silenced": "true", "inhibited": "true",
                                                    "unprocessed": "true"})

    def silences(self) -> list[dict]:
        return self._call("GET", "/silences")

    def silence(self, silence_id: str) -> dict:
        return self._call("GET", f"/silence/{silence_id}")

    def create_silence(self, matchers: dict, ends: dt.datetime, author: str, comment: str) -> str:
        body = {
            "matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()],
            "startsAt": _iso(dt.datetime.now(dt.timezone.utc)),
            "endsAt": _iso(ends),
            "createdBy": author,
            "comment": comment,
        }
        return self._call("POST", "/silences", json=body)["silenceID"]

    def expire(self, silence_id: str) -> None:
        self._call("DELETE", f"/silence/{silence_id}")


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _short_time(text: str) -> str:
    return text[:16].replace("T", " ") + "Z" if text else "?"


def _matches(silence: dict, labels: dict) -> bool:
    for m in silence.get("matchers", []):
        value = labels.get(m["name"], "")
        hit = re.fullmatch(m["value"], value) is not None if m.get("isRegex") else value == m["value"]
        if hit != m.get("isEqual", True):
            return False
    return True


def _label_text(labels: dict) -> str:
    parts = [f"{k}={labels[k]}" for k in SHOWN if labels.get(k)]
    return " ".join(parts) or "-"


def cmd_list(args, out=sys.stdout) -> int:
    am = Alertmanager(args.alertmanager)
    alerts = am.alerts()
    silences = {s["id"]: s for s in am.silences()}
    rows = []
    for alert in sorted(alerts, key=lambda a: (a["labels"].get("alertname", ""), _label_text(a["labels"]))):
        labels = alert["labels"]
        status = alert.get("status", {})
        acks = [silences[i] for i in status.get("silencedBy") or [] if i in silences]
        if acks:
            s = acks[0]
            state = f"ACKED by {s.get('createdBy', '?')} until {_short_time(s.get('endsAt', ''))} ({s['id']})"
        elif status.get("inhibitedBy"):
            state = "inhibited"
        else:
            state = "firing"
        rows.append({"alertname": labels.get("alertname", "?"), "severity": labels.get("severity", "-"),
                     "labels": labels, "since": alert.get("startsAt", ""), "state": state,
                     "acknowledged": bool(acks), "silence_ids": [s["id"] for s in acks],
                     "summary": alert.get("annotations", {}).get("summary", "")})
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        out.write("no alerts firing\n")
        return 0
    table = [("ALERT", "SEVERITY", "LABELS", "SINCE", "STATE")]
    table += [(r["alertname"], r["severity"], _label_text(r["labels"]), _short_time(r["since"]), r["state"])
              for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4] + "\n")
    return 0


def cmd_ack(args, out=sys.stdout) -> int:
    duration = parse_duration(args.duration)
    labels = parse_labels(args.label)
    if not LABEL_NAME.fullmatch(args.alertname):
        raise UsageError(f"{args.alertname!r} is not an alert name")
    if not args.comment.strip():
        raise UsageError("--comment must not be empty (say why, e.g. the ticket)")
    matchers = {"alertname": args.alertname, **labels}
    am = Alertmanager(args.alertmanager)
    alerts = am.alerts()
    firing = [a for a in alerts if all(a["labels"].get(k) == v for k, v in matchers.items())]
    what = args.alertname + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    if not firing and not args.force:
        raise UsageError(f"no alert at {am.shown} matches {what}, so the silence would match nothing; "
                         f"{existing_alerts(alerts, args.alertname)} (--force silences it anyway, "
                         "e.g. ahead of a maintenance window)")
    ends = dt.datetime.now(dt.timezone.utc) + duration
    silence_id = am.create_silence(matchers, ends, args.author, args.comment)
    out.write(f"acknowledged {what} until {_iso(ends)[:19]}Z: silence {silence_id}\n")
    if not firing:
        out.write("note: no alert matching it is firing now; the silence applies if one fires before it ends\n")
    else:
        out.write(f"{len(firing)} firing alert(s) matched; they resolve by themselves when the condition clears\n")
    return 0


def existing_alerts(alerts: list[dict], alertname: str, limit: int = 10) -> str:
    """What the Alertmanager holds, for a refused ack: the label sets of ``alertname``'s alerts when
    it has some (the labels did not match), else every alert name with its count."""
    same = sorted({",".join(f'{k}="{a["labels"][k]}"' for k in SHOWN if a["labels"].get(k))
                   for a in alerts if a["labels"].get("alertname") == alertname})
    if same:
        shown = [f"{alertname}{{{labels}}}" if labels else alertname for labels in same[:limit]]
        more = f" and {len(same) - limit} more" if len(same) > limit else ""
        return f"{alertname} is there with other labels: {', '.join(shown)}{more}"
    counts: dict[str, int] = {}
    for a in alerts:
        name = a["labels"].get("alertname", "?")
        counts[name] = counts.get(name, 0) + 1
    if not counts:
        return "it has no alerts now"
    names = sorted(counts)
    shown = [name + (f" ({counts[name]})" if counts[name] > 1 else "") for name in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"alerts there now: {', '.join(shown)}{more}"


def cmd_unack(args, out=sys.stdout) -> int:
    if not SILENCE_ID.fullmatch(args.id):
        raise UsageError(f"unknown silence id {args.id!r}: silence ids look like 5c1c3e0e-8d9b-4f4e-9a53-0123456789ab")
    am = Alertmanager(args.alertmanager)
    silence = am.silence(args.id)
    if silence.get("status", {}).get("state") == "expired":
        raise UsageError(f"silence {args.id} has already ended")
    am.expire(args.id)
    out.write(f"expired silence {args.id}: notifications for the matching alerts resume\n")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alertmanager", default=os.environ.get(URL_ENV, DEFAULT_URL),
                        help=f"Alertmanager's URL (default: ${URL_ENV} or {DEFAULT_URL})")
    sub = parser.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    lst = sub.add_parser("list", help="alerts firing now, acknowledged ones marked")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(func=cmd_list)
    ack = sub.add_parser("ack", help="acknowledge an alert: silence its notifications for a while",
                         description="Creates a silence on ALERTNAME and the given labels. The alert keeps its "
                                     "state and resolves by itself when its condition clears.")
    ack.add_argument("alertname")
    ack.add_argument("--label", "-l", action="append", default=[], metavar="NAME=VALUE",
                     help="match only alerts with this label value (repeatable), e.g. target=main")
    ack.add_argument("--for", dest="duration", default="2h", help="how long, e.g. 30m, 2h, 1d (default 2h)")
    ack.add_argument("--comment", "-c", required=True, help="why (a ticket, who works on it)")
    ack.add_argument("--author", default=_default_author(), help="who acknowledges (default: the login name)")
    ack.add_argument("--force", action="store_true",
                     help="silence even when no alert at the Alertmanager matches now (e.g. ahead of maintenance); "
                          "without it such an ack is refused, listing the alerts there")
    ack.set_defaults(func=cmd_ack)
    unack = sub.add_parser("unack", help="end an acknowledgement (expire its silence)")
    unack.add_argument("id", help="the silence id printed by ack and list")
    unack.set_defaults(func=cmd_unack)
    for p in (lst, ack, unack):  # also accepted after the subcommand
        p.add_argument("--alertmanager", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _default_author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "dbperf"
