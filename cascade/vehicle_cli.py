"""``cascade vehicle``: command a vehicle through the running collector; export a vehicle's track.

    cascade vehicle command V000001 motor_lock --who alice --reason "reported stolen"
    cascade vehicle commands [--vehicle V000001]
    cascade vehicle track V000001 --since 2h [--until now] --out track.geojson

``command`` posts to the running ``cascade run`` (``--url``, default the stack's metrics port) and waits
up to ``--wait`` seconds for the vehicle's acknowledgement. With a token (``--token`` or ``$CASCADE_TOKEN``)
the token's subject is recorded as who asked and ``--who`` is not needed (and not used); without one,
``--who`` names you (an API without tokens refuses commands anyway). Exit status: 0 acknowledged (read
back as asked), 1 refused, failed, expired or still pending after the wait, 2 the collector cannot be
reached or the arguments are wrong. What is printed, refusals (on standard error) included, is in
``--language`` (Simplified Chinese by default) with the stable codes beside the words, times in
``--timezone`` (Asia/Shanghai by default, the zone of the SMS and app messages); ``--json`` prints the
server's records as they are. ``track`` reads InfluxDB directly (``--influx``, ``--db``; default the
running stack's) and writes GeoJSON (``-`` or no ``--out``: standard output); a vehicle not in
``--devices`` (or a BLE gateway there) is refused, an empty range says so on standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TextIO

from alerting.cli import DEFAULT_TIMEZONE, format_time, time_zone, zone_argument
from alerting.i18n import DEFAULT_LANGUAGE, LANGUAGES, AlertTexts
from alerting.vehicle_commands import STATE_NAMES, STATUS_NAMES, YES_NO, command_name
from collectors.vehicles.commands import COMMANDS
from core.stackenv import stack_value

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    port = stack_value("CASCADE_METRICS_PORT")
    url = f"http://127.0.0.1:{port}" if port and port.isdigit() else "http://127.0.0.1:9108"
    sub = parser.add_subparsers(dest="vehicle_command", metavar="ACTION", required=True)
    cmd = sub.add_parser("command", help="send a remote command (power, motor lock, arming) and wait for its "
                                         "acknowledgement",
                         description="Send a command to a vehicle through the running collector; it is published "
                                     "to the vehicle (MQTT) or queued for its next poll (HTTPS), retried, audited, "
                                     "and an alert if never acknowledged (docs/vehicles.md, Commands).")
    cmd.add_argument("vehicle", help="vehicle code, e.g. V000001")
    cmd.add_argument("command", choices=COMMANDS)
    cmd.add_argument("--who", default=None,
                     help="your name, recorded in the audit; needed only without a token (with a token its subject "
                          "is recorded)")
    cmd.add_argument("--reason", default="", help="why (recorded in the audit)")
    cmd.add_argument("--wait", type=float, default=30.0, metavar="S",
                     help="seconds to wait for the acknowledgement (default 30; 0 = do not wait)")
    cmd.add_argument("--expiry", type=float, default=None, metavar="S",
                     help="seconds after which an unacknowledged command lapses (default: the collector's, 120)")
    for p in (cmd, lst := sub.add_parser("commands", help="recent commands and their results")):
        p.add_argument("--url", default=url, help=f"the running collector's HTTP API (default {url})")
        p.add_argument("--token", default=os.environ.get("CASCADE_TOKEN") or os.environ.get("CASCADE_API_TOKEN"),
                       help="bearer token for the API: commanding a vehicle needs a person's token with the "
                            "control permission (`cascade token --role engineer --sub NAME` locally; default: "
                            "$CASCADE_TOKEN, else $CASCADE_API_TOKEN)")
        p.add_argument("--json", action="store_true", help="print the server's JSON")
        p.add_argument("--language", default=os.environ.get("CASCADE_LANGUAGE", DEFAULT_LANGUAGE),
                       choices=sorted(LANGUAGES), help="language of what is printed and of the server's refusals: "
                                                       "zh_CN (default) or en (default: $CASCADE_LANGUAGE)")
        p.add_argument("--timezone", type=zone_argument,
                       default=stack_value("CASCADE_TIMEZONE") or DEFAULT_TIMEZONE,
                       help="time zone of the times shown: an IANA name or UTC (default $CASCADE_TIMEZONE, else "
                            f"{DEFAULT_TIMEZONE}, the zone of the SMS and app messages)")
    lst.add_argument("--vehicle", default=None, help="only this vehicle")
    track = sub.add_parser("track", help="export a vehicle's track (positions over a time range) as GeoJSON",
                           description="Read the positions a vehicle reported between --since and --until from "
                                       "InfluxDB and write them as a GeoJSON FeatureCollection: one LineString "
                                       "with a time per point (coordTimes), optionally every report as a Point.")
    track.add_argument("vehicle")
    track.add_argument("--since", default="24h",
                       help="start: ISO 8601 (2026-12-06T08:00:00Z), an age (2h, 7d) or epoch ms (default 24h)")
    track.add_argument("--until", default="now", help="end, written the same way (default now)")
    track.add_argument("--out", default="-", metavar="FILE", help="GeoJSON file to write (default -: standard output)")
    track.add_argument("--points", action="store_true", help="also every report as a Point feature")
    influx = stack_value("CASCADE_INFLUX_URL") or "http://127.0.0.1:8086"
    track.add_argument("--influx", default=influx, metavar="URL", help=f"InfluxDB 1.x URL (default {influx})")
    track.add_argument("--db", default=stack_value("CASCADE_INFLUX_DB") or "cascade", help="database (default cascade)")
    track.add_argument("--devices", default="var/devices/devices.json", metavar="FILE",
                       help="the provisioned devices (default var/devices/devices.json): a vehicle not in it is "
                            "refused; a missing file skips the check")
    track.add_argument("--language", default=os.environ.get("CASCADE_LANGUAGE", DEFAULT_LANGUAGE),
                       choices=sorted(LANGUAGES), help="language of the messages: zh_CN (default) or en")


def main(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.vehicle_command == "track":
        return _track(args, out)
    if args.vehicle_command == "commands":
        query = urllib.parse.urlencode({"vehicle": args.vehicle} if args.vehicle else {})
        status, body = _request(args, "GET", f"/api/vehicles/commands{'?' + query if query else ''}")
        if status is None:
            return 2
        if status != 200:
            _refused(args, "cascade vehicle commands", status, body)
            if args.json:
                print(json.dumps(body, ensure_ascii=False, indent=1), file=out)
            return 1
        for record in body.get("commands", []) if not args.json else []:
            print(_line(record, _texts(args), args), file=out)
        if args.json:
            print(json.dumps(body, ensure_ascii=False, indent=1), file=out)
        return 0 if status == 200 else 1
    if not args.token and not args.who:
        print("cascade vehicle command: " + _texts(args).tr(
            "say who asks: give --who NAME, or a token (--token or $CASCADE_TOKEN), whose subject is then "
            "recorded"), file=sys.stderr)
        return 2
    payload: dict[str, Any] = {"command": args.command, "reason": args.reason, "wait_s": args.wait}
    if args.who and not args.token:
        payload["who"] = args.who
    if args.expiry is not None:
        payload["expiry_s"] = args.expiry
    status, body = _request(args, "POST", f"/api/vehicles/{urllib.parse.quote(args.vehicle)}/commands", payload,
                            timeout=args.wait + 10)
    if status is None:
        return 2
    if args.json:
        print(json.dumps(body, ensure_ascii=False, indent=1), file=out)
    elif "error" in body:
        _refused(args, "cascade vehicle command", status, body)
    else:
        print(_line(body, _texts(args), args), file=out)
    if args.token and args.who and body.get("who") and body["who"] != f"user:{args.who}":
        print("cascade vehicle command: " + _texts(args).tr(
            "recorded as {who} (the token's subject); --who is not used with a token", who=body["who"]),
              file=sys.stderr)
    return 0 if status == 200 and body.get("status") == "ok" else 1


def _texts(args: argparse.Namespace) -> AlertTexts:
    return AlertTexts(getattr(args, "language", DEFAULT_LANGUAGE))


def _refused(args: argparse.Namespace, prog: str, status: int, body: dict[str, Any]) -> None:
    """The server's refusal on standard error, as ``cascade alerts`` prints it: its message (in the
    language asked for), its code and the HTTP status. A missing or unusable token is worded for this
    command: the server's own hint names no option of ``cascade vehicle``."""
    code = body.get("code")
    message = body.get("error") or f"HTTP {status}"
    if code in ("missing_token", "bad_api_token"):
        power = getattr(args, "command", None) in ("power_on", "power_off")  # cascade.commands.POWER_COMMANDS
        message = _texts(args).tr(
            "this needs a person's token: give it with --token TOKEN after the action ({prog} ... --token TOKEN) or "
            "in $CASCADE_TOKEN; locally `cascade token --role {role} --sub <you>`",
            prog=prog, role="engineer" if power else "operator")
    print(f"{prog}: {message}" + (f" [{code}]" if code else "") + f" (HTTP {status})", file=sys.stderr)


def _line(record: dict[str, Any], texts: AlertTexts, args: argparse.Namespace) -> str:
    """One command as people read it: when, which, by whom, how it ended and the vehicle's read-back."""
    state = record.get("state")
    shown = texts.tr(", ").join(f"{texts.tr(STATE_NAMES.get(k, k))}={texts.tr(YES_NO[bool(v)])}"
                                for k, v in state.items()) if state else texts.tr("no read-back")
    status = str(record.get("status", ""))
    said = record.get("detail_text") or record.get("detail")  # detail_text: in the language asked for
    detail = f" ({said})" if said else ""
    zone = time_zone(getattr(args, "timezone", None) or DEFAULT_TIMEZONE)
    when = format_time(float(record["issued_at"]), zone) + " " if record.get("issued_at") else ""
    return when + texts.tr("{id} {fleet}/{vehicle} {command} by {who}: {status} after {attempts} attempt(s); {state}",
                           id=record["id"], fleet=record["fleet"], vehicle=record["vehicle"],
                           command=texts.tr("{name} ({code})", name=command_name(texts, str(record["command"])),
                                            code=record["command"]),
                           who=record.get("who") or "-",
                           status=texts.tr(STATUS_NAMES[status]) if status in STATUS_NAMES else status.upper(),
                           attempts=record["attempts"], state=shown) + detail


def _request(args: argparse.Namespace, method: str, path: str, payload: Any = None,
             timeout: float = 15) -> tuple[int | None, dict[str, Any]]:
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    headers["Accept-Language"] = "en" if getattr(args, "language", DEFAULT_LANGUAGE) == "en" else "zh-CN"
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    request = urllib.request.Request(args.url.rstrip("/") + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"{}")
        except ValueError:
            return err.code, {"error": f"HTTP {err.code}"}
    except (urllib.error.URLError, OSError, ValueError) as err:
        print(f"cascade vehicle: the collector at {args.url} cannot be reached ({err}). Fix: start it (make run) "
              "or give --url", file=sys.stderr)
        return None, {}


def _track(args: argparse.Namespace, out: TextIO) -> int:
    import aiohttp

    from cascade.tracks import TrackError, fetch_track, parse_time, to_geojson

    texts = _texts(args)
    refusal = _unknown_vehicle(args.vehicle, getattr(args, "devices", None), texts)
    if refusal:
        print(f"cascade vehicle track: {refusal}", file=sys.stderr)
        return 2

    async def fetch() -> dict[str, Any]:
        since, until = parse_time(args.since), parse_time(args.until)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            points = await fetch_track(session, args.influx, args.db, args.vehicle, since=since, until=until)
        return to_geojson(args.vehicle, points, since=since, until=until, with_points=args.points)

    try:
        doc = asyncio.run(fetch())
    except TrackError as err:
        print(f"cascade vehicle track: {err}", file=sys.stderr)
        return 2
    props = doc["properties"]
    if not props["points"]:
        print("cascade vehicle track: " + texts.tr(
            "{vehicle} reported no position from {since} to {until}; try a longer range (--since 7d) or check "
            "that the vehicle reports with a position fix", vehicle=args.vehicle, since=props["since"],
            until=props["until"]), file=sys.stderr)
    text = json.dumps(doc, ensure_ascii=False)
    if args.out == "-":
        _write_stdout(text, out)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print(texts.tr("{vehicle}: {points} points from {start} to {end}, {km} km, written to {file}",
                       vehicle=args.vehicle, points=props["points"], start=props["start"], end=props["end"],
                       km=props["distance_km"], file=args.out), file=out)
    return 0


def _unknown_vehicle(vehicle: str, devices: str | None, texts: AlertTexts) -> str:
    """Why ``vehicle`` cannot have a track (not in the devices file), or "" (also when there is no file)."""
    if not devices or not os.path.exists(devices):
        return ""
    from collectors.vehicles.trust import DeviceRegistry
    from core.errors import CascadeError

    try:
        registry = DeviceRegistry.load(devices)
    except CascadeError:
        return ""  # a broken devices file is not this command's business: the query decides
    device = registry.get(vehicle)
    if device is None:
        return texts.tr("{vehicle} is not a provisioned vehicle (not in {devices}); check the vehicle id, or give "
                        "the devices file with --devices", vehicle=vehicle[:70], devices=devices)
    if device.kind != "vehicle":
        return texts.tr("{vehicle} is a BLE gateway, not a vehicle (in {devices}): it has no track; its packs are in "
                        "the health report", vehicle=vehicle[:70], devices=devices)
    return ""


def _write_stdout(text: str, out: TextIO) -> None:
    """Print to standard output; a reader that stops early (``| head``) ends the output quietly."""
    try:
        print(text, file=out)
        out.flush()
    except BrokenPipeError:
        if out is sys.stdout:  # Python flushes stdout again at exit: point it at /dev/null so that cannot fail
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
