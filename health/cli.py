"""``cascade health analyse|report``: battery health across the second life (docs/battery-health.md).

    cascade health analyse --since 7d                    # compute, store, push the grading alerts
    cascade health report --format csv --out grades.csv  # the newest grade of every battery
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from core.durations import DurationError, parse_duration
from core.errors import CascadeError
from core.i18n import DEFAULT_LANGUAGE
from core.stackenv import stack_value

if TYPE_CHECKING:
    from health.runner import InfluxStore

__all__ = ["add_arguments", "main", "parse_time", "run"]


def parse_time(value: str, now: float) -> int:
    """``now``, a duration back from now (``7d``, ``12h``), Unix seconds or ISO 8601 -> ns."""
    if value == "now":
        return int(now * 1e9)
    try:
        return int(float(value) * 1e9)
    except ValueError:
        pass
    days = re.fullmatch(r"(\d+(?:\.\d+)?)d", value.strip())
    try:
        back = float(days.group(1)) * 86400.0 if days else parse_duration(value)
        return int((now - back) * 1e9)
    except DurationError:
        pass
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a time: give 7d, 12h, now, Unix seconds or "
                                         "ISO 8601 (2026-12-01T00:00:00Z)") from None
    return int(stamp.timestamp() * 1e9)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--influx", default=stack_value("CASCADE_INFLUX_URL") or "http://127.0.0.1:8086",
                        help="InfluxDB URL (default: the running stack's, else http://127.0.0.1:8086)")
    parser.add_argument("--database", default=stack_value("CASCADE_INFLUX_DB") or "cascade")
    sub = parser.add_subparsers(dest="health_command", metavar="ACTION", required=True)
    an = sub.add_parser("analyse", help="compute sessions, capacity, resistance, SOH and grades; store them; "
                                        "push the grading alerts",
                        description="Read the stored pack readings (slot, vehicle_battery) of [--since, --until), "
                                    "estimate each battery's health, write charge_session and battery_health "
                                    "points and push a level-1 alert for every pack graded restrict or retire.")
    an.add_argument("--since", default="7d", help="start: 7d (back from now), Unix seconds or ISO 8601")
    an.add_argument("--until", default="now", help="end (default now)")
    an.add_argument("--alertmanager", default=stack_value("CASCADE_ALERTMANAGER_URL") or "http://127.0.0.1:9093",
                    help="Alertmanager URL for the grading alerts")
    an.add_argument("--no-alerts", action="store_true", help="store the results, push no alerts")
    an.add_argument("--dry-run", action="store_true", help="compute and print only: write and push nothing")
    an.add_argument("--language", default=DEFAULT_LANGUAGE, help="alert texts: zh_CN (default) or en")
    an.add_argument("--ocv-tables", metavar="FILE", default=None,
                    help="YAML: battery_maker or chemistry -> the cell's OCV at 0,5,10,20..90,95,100 %% SOC "
                         "(a pack model's own table; docs/battery-health.md)")
    rp = sub.add_parser("report", help="export the grading report (the newest grade of each battery)",
                        description="Export the newest stored battery_health row of every battery in "
                                    "[--since, now] as CSV or JSON.")
    rp.add_argument("--format", choices=("csv", "json"), default="csv")
    rp.add_argument("--out", default="-", metavar="FILE", help="file to write (default: standard output)")
    rp.add_argument("--since", default="30d")


def run(args: argparse.Namespace) -> int:
    from health.runner import InfluxStore
    store = InfluxStore(args.influx, args.database)
    now = time.time()
    try:
        if args.health_command == "analyse":
            return _analyse(args, store, now)
        return _report(args, store, now)
    except argparse.ArgumentTypeError as err:
        print(f"cascade health: {err}", file=sys.stderr)
        return 2
    except CascadeError as err:
        print(f"cascade health: {err}", file=sys.stderr)
        return 1


def _analyse(args: argparse.Namespace, store: InfluxStore, now: float) -> int:
    from health.runner import analyse, load_ocv_tables, push_alerts
    since, until = parse_time(args.since, now), parse_time(args.until, now)
    if since >= until:
        print("cascade health: --since must be before --until", file=sys.stderr)
        return 2
    tables = load_ocv_tables(args.ocv_tables) if args.ocv_tables else None
    result = analyse(store, since, until, write=not args.dry_run, language=args.language, ocv_tables=tables)
    grades = Counter(r.grade for r in result.records)
    print(f"{result.readings} readings, {len(result.records)} batteries, {len(result.sessions)} charge sessions; "
          + ", ".join(f"{g} {n}" for g, n in sorted(grades.items())))
    for r in result.records:
        if r.grade in ("restrict", "retire"):
            soh = "?" if r.soh_pct is None else f"{r.soh_pct:.1f} %"
            print(f"  {r.battery_id}: {r.grade} (SOH {soh}; {r.limits_crossed})")
    if args.dry_run or args.no_alerts:
        return 0
    fired, resolved = asyncio.run(push_alerts(result, args.alertmanager, language=args.language))
    print(f"alerts: {fired} firing, {resolved} resolved at {args.alertmanager}")
    return 0


def _report(args: argparse.Namespace, store: InfluxStore, now: float) -> int:
    from health.report import read_report_rows, write_report
    since = parse_time(args.since, now)
    rows = read_report_rows(store.rows(
        f'SELECT * FROM "battery_health" WHERE time >= {since}'))
    if args.out == "-":
        n = write_report(rows, args.format, sys.stdout)
    else:
        with open(Path(args.out), "w", encoding="utf-8", newline="") as out:
            n = write_report(rows, args.format, out)
        print(f"{n} batteries written to {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cascade health", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
