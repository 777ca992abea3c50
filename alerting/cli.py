"""``cascade alerts``: list, acknowledge and roll up alerts, change thresholds — through the HTTP API.

    cascade alerts list
    cascade alerts ack 'over_temperature@site-01/C0003/5' --who noc-alice --comment "on my way"
    cascade alerts rollup
    cascade alerts set-threshold over_temperature 2 52 --who noc-alice --reason "summer profile"
    cascade alerts actions
    cascade alerts command C0003 stop_charging --slot 5 --reason "pack swollen, on site"   # operator role

Global options (``--url``, ``--token``, ``--json``, ``--language``, ``--timezone``) go before or after the
sub-command. Refusals are printed as the server words them, in the language asked for (``Accept-Language``).
Times are shown in ``--timezone`` (default ``$CASCADE_TIMEZONE``, else Asia/Shanghai: the zone of the SMS and
app messages, ``notifier.timezone``). With a person's token the token's subject is recorded as who acted:
``--who`` is then not used, and saying one that differs is warned about on standard error.

``--url`` (default http://127.0.0.1:9108, the collector's metrics port) names the running
collector; ``--token`` (default ``$CASCADE_TOKEN``, else ``$CASCADE_API_TOKEN``) is sent as the bearer
token on every call (docs/security.md: ``cascade token`` mints one locally). Exit status: 0 done, 1 the
server refused (no or a bad token, unknown alert, invalid threshold, a command the cabinet refused), 2 the
server cannot be reached or answered something unexpected.

Wiring: ``add_arguments(parser)`` fills a (sub)parser, ``main(args)`` runs the parsed command;
``run(argv)`` does both (tests, ``python -m alerting.cli``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TextIO

from alerting.actions import CONTROLS
from alerting.i18n import DEFAULT_LANGUAGE, LANGUAGES, N_, AlertTexts
from core.stackenv import stack_value

__all__ = ["DEFAULT_TIMEZONE", "DEFAULT_URL", "add_arguments", "format_time", "main", "run", "time_zone"]

DEFAULT_URL = "http://127.0.0.1:9108"
#: The zone CLI times are shown in unless told otherwise: the one the notifier's messages use by default.
DEFAULT_TIMEZONE = "Asia/Shanghai"
# China has had one offset and no daylight saving since 1991: usable without a tz database (slim images).
_CHINA = dt.timezone(dt.timedelta(hours=8), "UTC+08:00")
_CHINA_NAMES = ("Asia/Shanghai", "PRC", "Asia/Chongqing", "Asia/Harbin", "Asia/Urumqi")
_LEVEL_NAMES = {1: N_("notice"), 2: N_("warning"), 3: N_("CRITICAL")}
_texts = AlertTexts(DEFAULT_LANGUAGE)  # set from --language in main()
_zone: dt.tzinfo = _CHINA  # set from --timezone in main()


def tr(msgid: str, /, **values: Any) -> str:
    return _texts.tr(msgid, **values)


@functools.cache
def time_zone(name: str) -> dt.tzinfo:
    """The zone ``name`` (IANA, or ``UTC``), as the notifier reads ``notifier.timezone``; ValueError when unknown."""
    if name.upper() == "UTC":
        return dt.UTC
    try:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, ImportError):
        if name in _CHINA_NAMES:
            return _CHINA
        raise ValueError(f"unknown time zone {name!r}; give an IANA name such as Asia/Shanghai, or UTC") from None


def format_time(t: float, zone: dt.tzinfo) -> str:
    """Unix seconds as ``2026-12-06 22:04:05`` in ``zone``."""
    return dt.datetime.fromtimestamp(t, tz=zone).strftime("%Y-%m-%d %H:%M:%S")


def zone_argument(value: str) -> str:
    """argparse type of ``--timezone``: the name, checked."""
    try:
        time_zone(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


class _Refused(Exception):
    """The server understood and said no (4xx); the message is its explanation."""


def _global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """``--url``, ``--json``, ``--language``, ``--token``: on ``cascade alerts`` itself (with their defaults)
    and again on every sub-command (``defaults=False``: argparse.SUPPRESS, so one given before the
    sub-command is kept unless repeated after it)."""
    port = stack_value("CASCADE_METRICS_PORT")
    url = f"http://127.0.0.1:{port}" if port and port.isdigit() else DEFAULT_URL

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS
    parser.add_argument("--url", default=default(url),
                        help=f"the running collector's HTTP API (default {url}: the running stack's metrics port "
                             "from $CASCADE_METRICS_PORT or var/stack.env, else 9108)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print the server's JSON instead of a table")
    parser.add_argument("--language", default=default(os.environ.get("CASCADE_LANGUAGE", DEFAULT_LANGUAGE)),
                        choices=sorted(LANGUAGES), help="language of the output and of the server's refusals: "
                                                      "zh_CN (default) or en (default: $CASCADE_LANGUAGE); the "
                                                      "alerts' diagnosis and action lines stay in the collector's "
                                                      "language (alerting.language)")
    parser.add_argument("--timezone", type=zone_argument,
                        default=default(stack_value("CASCADE_TIMEZONE") or DEFAULT_TIMEZONE),
                        help="time zone of the times shown: an IANA name or UTC (default $CASCADE_TIMEZONE, else "
                             f"{DEFAULT_TIMEZONE}, the zone of the SMS and app messages)")
    parser.add_argument("--token", default=default(os.environ.get("CASCADE_TOKEN")
                                                   or os.environ.get("CASCADE_API_TOKEN")),
                        help="bearer token sent with every call: your token from the identity provider (or "
                             "`cascade token` locally) (default: $CASCADE_TOKEN, else the deprecated shared "
                             "$CASCADE_API_TOKEN)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--url`` (and the other global options) and the sub-commands to ``parser``. The global
    options are accepted before or after the sub-command (``cascade alerts list --language en``)."""
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="alerts_command", metavar="COMMAND", required=True)
    sub.add_parser("list", parents=[common], help="active alerts, worst first, with who acknowledged them")
    sub.add_parser("rollup", parents=[common], help="worst level per site, cabinet and slot")
    ack = sub.add_parser("ack", parents=[common], help="acknowledge an alert (you have seen it)")
    ack.add_argument("key", help="alert key as listed, e.g. over_temperature@site-01/C0003/5")
    ack.add_argument("--who", help="your name (recorded; with a personal token the token's subject is recorded)")
    ack.add_argument("--comment", default="", help="what you are doing about it")
    thr = sub.add_parser("set-threshold", parents=[common],
                         help="change a rule's base threshold at run time (engineer role; audited)")
    thr.add_argument("rule", help="rule id, e.g. over_temperature")
    thr.add_argument("level", type=int, choices=(1, 2, 3))
    thr.add_argument("value", type=float)
    thr.add_argument("--who", help="your name (recorded in the audit log; with a personal token its subject)")
    thr.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    sub.add_parser("actions", parents=[common], help="recent protective actions and remote commands, with their "
                                                     "read-back")
    cmd = sub.add_parser("command", parents=[common],
                         help="command a cabinet: stop/start charging a slot (operator role), fault reset or a "
                              "parameter (engineer role); written, read back and audited")
    cmd.add_argument("cabinet", help="cabinet id, e.g. C0003")
    cmd.add_argument("name", choices=sorted(CONTROLS), help="what to do")
    cmd.add_argument("--slot", type=int, help="slot number (required by start_charging and stop_charging; "
                     "optional where the profile defines a command per slot)")
    cmd.add_argument("--value", type=int, help="the value for a parameter, in the profile's raw register units")
    cmd.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    cmd.add_argument("--confirm", action="store_true",
                     help="go ahead with a command that changes how the cabinet charges (all but stop_charging)")


def main(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run one parsed ``cascade alerts`` command; returns the exit status."""
    global _texts, _zone
    out = out or sys.stdout
    _texts = AlertTexts(getattr(args, "language", DEFAULT_LANGUAGE))
    _zone = time_zone(getattr(args, "timezone", None) or DEFAULT_TIMEZONE)
    base = args.url.rstrip("/")
    token = args.token
    try:
        if args.alerts_command == "list":
            doc = _call("GET", f"{base}/api/alerts", token=token)
            _emit(out, args, doc, _format_alerts)
        elif args.alerts_command == "rollup":
            doc = _call("GET", f"{base}/api/alerts/rollup", token=token)
            _emit(out, args, doc, _format_rollup)
        elif args.alerts_command == "ack":
            key = urllib.parse.quote(args.key, safe="@/")
            body = {"comment": args.comment, **({"who": args.who} if args.who else {})}
            doc = _call("POST", f"{base}/api/alerts/{key}/ack", body, token=token)
            _emit(out, args, doc, lambda d: tr("acknowledged {key} (level {level}) as {who}", key=d["key"],
                                               level=d["level"], who=d["ack"]["who"]))
            _warn_who(args.who, (doc.get("ack") or {}).get("who"))
        elif args.alerts_command == "set-threshold":
            value: Any = int(args.value) if args.value.is_integer() else args.value
            body = {"value": value, "reason": args.reason, **({"who": args.who} if args.who else {})}
            doc = _call("PUT", f"{base}/api/thresholds/{urllib.parse.quote(args.rule)}/{args.level}", body,
                        token=token)
            _emit(out, args, doc, lambda d: tr("{rule} level {level}: {old} -> {new} (by {who}: {reason})",
                                               rule=d["rule"], level=d["level"], old=f"{d['old']:g}",
                                               new=f"{d['new']:g}", who=d["who"], reason=d["reason"]))
            _warn_who(args.who, doc.get("who"))
        elif args.alerts_command == "actions":
            doc = _call("GET", f"{base}/api/actions", token=token)
            _emit(out, args, doc, _format_actions)
        elif args.alerts_command == "command":
            body = {"command": args.name, "reason": args.reason, "confirm": args.confirm}
            body |= {k: v for k, v in (("slot", args.slot), ("value", args.value)) if v is not None}
            doc = _call("POST", f"{base}/api/cabinets/{urllib.parse.quote(args.cabinet, safe='')}/commands", body,
                        token=token)
            _emit(out, args, doc, lambda d: _format_actions({"actions": [d]}))
        else:  # argparse's choices make this unreachable
            raise AssertionError(args.alerts_command)
    except _Refused as err:
        print(f"cascade alerts: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print("cascade alerts: " + tr("cannot talk to {url}: {error}. Is `cascade run` running there? Pass its "
                                      "address with --url.", url=base, error=err), file=sys.stderr)
        return 2
    return 0


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cascade alerts", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return main(parser.parse_args(argv))


def _call(method: str, url: str, body: Any = None, token: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    # The server words its refusals in the language asked for (zh_CN by default, like this output).
    headers = {"Content-Type": "application/json",
               "Accept-Language": "en" if _texts.language == "en" else "zh-CN"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as err:
        if 400 <= err.code < 500 or err.code == 502:  # 502: the cabinet refused a command (the record says why)
            try:
                message = json.load(err).get("error") or err.reason
            except ValueError:
                message = err.reason
            raise _Refused(f"{message} (HTTP {err.code})") from None
        raise OSError(f"HTTP {err.code} {err.reason}") from None


def _warn_who(asked: str | None, recorded: Any) -> None:
    """A person's token names who acts (its subject); a ``--who`` that says otherwise was not used: say so."""
    if asked and isinstance(recorded, str) and recorded.strip() and recorded not in (asked, f"user:{asked}"):
        print("cascade alerts: " + tr("recorded as {who} (the token's subject); --who {asked} was not used: with a "
                                      "personal token the token names who acts", who=recorded, asked=asked),
              file=sys.stderr)


def _emit(out: TextIO, args: argparse.Namespace, doc: Any, formatter) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False) if args.json else formatter(doc), file=out)


def _format_alerts(doc: dict[str, Any]) -> str:
    alerts = doc.get("alerts", [])
    if not alerts:
        return tr("no active alerts")
    lines = []
    for a in alerts:
        ack = a.get("ack")
        seen = (tr("acknowledged by {who} at {when}", who=ack["who"] or "-", when=_when(ack["at"]))
                + (f" \"{ack['comment']}\"" if ack["comment"] else "")) if ack else tr("NOT ACKNOWLEDGED")
        level = tr(_LEVEL_NAMES[a["level"]]) if a["level"] in _LEVEL_NAMES else "?"
        lines.append(f"L{a['level']} {level:8} {a['key']}  " + tr("since {when}", when=_when(a.get("updated_at") or a["raised_at"]))
                     + f"  {seen}")
        notes = a.get("annotations", {})
        for name, label in (("diagnosis", N_("diagnosis")), ("action", N_("action"))):
            if notes.get(name):
                lines.append(f"    {tr(label)}: {notes[name]}")
    return "\n".join(lines)


def _format_rollup(doc: dict[str, Any]) -> str:
    if not doc:
        return tr("all clear")
    lines = []
    for site, s in sorted(doc.items()):
        lines.append(f"{site}: L{s['level']}")
        for cab, c in sorted(s["cabinets"].items()):
            slots = ", ".join(tr("slot {slot}: L{level}", slot=n, level=lv)
                              for n, lv in sorted(c["slots"].items(), key=lambda kv: int(kv[0])))
            lines.append(f"  {cab}: L{c['level']}" + (f"  ({slots})" if slots else ""))
    return "\n".join(lines)


def _format_actions(doc: dict[str, Any]) -> str:
    actions = doc.get("actions", [])
    if not actions:
        return tr("no protective actions")
    def line(a: dict[str, Any]) -> str:
        # A missing read-back, or a person hidden from a regulator, shows as "-", never as None.
        fields = {k: "-" if a.get(k) is None else a[k] for k in
                  ("action", "site", "cabinet", "slot", "command", "value", "readback", "actor")}
        text = (tr("{action} {site}/{cabinet} slot {slot} {command}={value} read back {readback} by {actor}", **fields)
                if a.get("slot") is not None else
                tr("{action} {site}/{cabinet} {command}={value} read back {readback} by {actor}", **fields))
        return f"{_when(a['at'])} {a['result'].upper():7} " + text + (f": {a['error']}" if a.get("error") else "")

    return "\n".join(line(a) for a in actions)


def _when(t: float) -> str:
    return format_time(t, _zone)


if __name__ == "__main__":
    sys.exit(run())
