"""``cascade health analyse|report``: battery health across the second life (docs/battery-health.md).

    cascade health analyse --since 7d                    # compute, store, push the grading alerts
    cascade health report --format csv --out grades.csv  # the newest grade of every battery

What it prints (the summary, refusals) and the alert texts are Simplified Chinese by default, English with
``--language en`` (or ``CASCADE_LANGUAGE=en``), before or after the action.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from core.durations import DurationError, parse_duration
from core.errors import CascadeError
from core.i18n import DEFAULT_LANGUAGE, LANGUAGES
from core.stackenv import stack_value
from health.grading import LIMITS
from health.texts import HealthTexts

if TYPE_CHECKING:
    from health.runner import AnalysisResult, InfluxStore

__all__ = ["add_arguments", "main", "parse_time", "run", "summary_lines"]


def parse_time(value: str, now: float, texts: HealthTexts | None = None) -> int:
    """``now``, a duration back from now (``7d``, ``12h``), Unix seconds or ISO 8601 -> ns. A value that
    is none of them raises ArgumentTypeError worded in ``texts``' language (Simplified Chinese by default)."""
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
        texts = texts or HealthTexts()
        raise argparse.ArgumentTypeError(texts.tr("'{value}' is not a time: give 7d, 12h, now, Unix seconds or "
                                                  "ISO 8601 (2026-12-01T00:00:00Z)", value=value)) from None
    return int(stamp.timestamp() * 1e9)


def _language_option(parser: argparse.ArgumentParser, defaults: bool) -> None:
    parser.add_argument("--language", choices=sorted(LANGUAGES),
                        default=os.environ.get("CASCADE_LANGUAGE", DEFAULT_LANGUAGE) if defaults else argparse.SUPPRESS,
                        help="language of what is printed and of the alert texts: zh_CN (default) or en "
                             "(default: $CASCADE_LANGUAGE); before or after the action")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--influx", default=stack_value("CASCADE_INFLUX_URL") or "http://127.0.0.1:8086",
                        help="InfluxDB URL (default: the running stack's, else http://127.0.0.1:8086)")
    parser.add_argument("--database", default=stack_value("CASCADE_INFLUX_DB") or "cascade")
    _language_option(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _language_option(common, defaults=False)
    sub = parser.add_subparsers(dest="health_command", metavar="ACTION", required=True)
    an = sub.add_parser("analyse", parents=[common],
                        help="compute sessions, capacity, resistance, SOH and grades; store them; "
                             "push the grading alerts",
                        description="Read the stored pack readings (slot, vehicle_battery) of [--since, --until), "
                                    "estimate each battery's health, write charge_session and battery_health "
                                    "points, print the count per grade and the packs whose grade changed, and push "
                                    "a level-1 alert for every pack graded restrict or retire.")
    an.add_argument("--since", default="7d", help="start: 7d (back from now), Unix seconds or ISO 8601")
    an.add_argument("--until", default="now", help="end (default now)")
    an.add_argument("--alertmanager", default=stack_value("CASCADE_ALERTMANAGER_URL") or "http://127.0.0.1:9093",
                    help="Alertmanager URL for the grading alerts (unreachable: exit 1)")
    an.add_argument("--no-alerts", action="store_true", help="store the results, push no alerts")
    an.add_argument("--dry-run", action="store_true", help="compute and print only: write and push nothing")
    an.add_argument("--ocv-tables", metavar="FILE", default=None,
                    help="YAML: battery_maker or chemistry -> the cell's OCV at 0,5,10,20..90,95,100 %% SOC "
                         "(a pack model's own table; docs/battery-health.md)")
    rp = sub.add_parser("report", parents=[common], help="export the grading report (the newest grade of each battery)",
                        description="Export the newest stored battery_health row of every battery in "
                                    "[--since, now] as CSV or JSON.")
    rp.add_argument("--format", choices=("csv", "json"), default="csv")
    rp.add_argument("--out", default="-", metavar="FILE", help="file to write (default: standard output)")
    rp.add_argument("--since", default="30d")


def run(args: argparse.Namespace) -> int:
    from health.runner import InfluxStore
    texts = HealthTexts(getattr(args, "language", DEFAULT_LANGUAGE))
    store = InfluxStore(args.influx, args.database)
    now = time.time()
    try:
        if args.health_command == "analyse":
            return _analyse(args, store, now, texts)
        return _report(args, store, now, texts)
    except argparse.ArgumentTypeError as err:
        print(f"cascade health: {err}", file=sys.stderr)
        return 2
    except CascadeError as err:
        print(f"cascade health: {err}", file=sys.stderr)
        return 1


def _analyse(args: argparse.Namespace, store: InfluxStore, now: float, texts: HealthTexts) -> int:
    from health.runner import analyse, load_ocv_tables, push_alerts
    since, until = parse_time(args.since, now, texts), parse_time(args.until, now, texts)
    if since >= until:
        print("cascade health: " + texts.tr("--since must be before --until"), file=sys.stderr)
        return 2
    tables = load_ocv_tables(args.ocv_tables) if args.ocv_tables else None
    result = analyse(store, since, until, write=not args.dry_run, language=texts.language, ocv_tables=tables)
    for line in summary_lines(result, texts):
        print(line)
    if args.dry_run or args.no_alerts:
        return 0
    fired, resolved = asyncio.run(push_alerts(result, args.alertmanager, language=texts.language))
    print(texts.tr("alerts: {fired} firing, {resolved} resolved at {url}", fired=fired, resolved=resolved,
                   url=args.alertmanager))
    return 0


_GRADE_ORDER = ("keep", "restrict", "retire", "unknown")
_LIMIT_IDS = frozenset(limit.id for limit in LIMITS)
_REASON_ORDER = ("full", "stopped", "protection", "removed", "gap", "open")


def summary_lines(result: AnalysisResult, texts: HealthTexts) -> list[str]:
    """What ``analyse`` prints: the counts (readings, batteries, charge sessions by how they ended), the
    batteries per grade, every pack whose grade changed since the previous run (with SOH and the limits
    crossed), and every pack graded restrict or retire."""
    grades = Counter(r.grade for r in result.records)
    reasons = Counter(s.reason for s in result.sessions)
    order = [g for g in _GRADE_ORDER if g in grades] + sorted(set(grades) - set(_GRADE_ORDER))
    ended = [x for x in _REASON_ORDER if x in reasons] + sorted(set(reasons) - set(_REASON_ORDER))
    lines = [texts.tr("{readings} readings, {batteries} batteries, {sessions} charge sessions ({reasons})",
                      readings=result.readings, batteries=len(result.records), sessions=len(result.sessions),
                      reasons=texts.tr(", ").join(f"{texts.ending(x)} {reasons[x]}" for x in ended) or "-"),
             texts.tr("grades: {grades}",
                      grades=texts.tr(", ").join(f"{texts.grade_label(g)} {grades[g]}" for g in order) or "-")]
    if grades.get("unknown"):
        lines.append(texts.tr("  unknown {count}: no capacity measured yet (two SOC anchors of one unbroken charge "
                              "chain, at least 30 % apart, are needed: docs/battery-health.md)",
                              count=grades["unknown"]))
    previous = {b: str(row.get("grade") or "") for b, row in result.previous.items()}
    changed = [r for r in result.records if previous.get(r.battery_id, "") != r.grade
               and (r.grade != "unknown" or previous.get(r.battery_id))]
    lines.append(texts.tr("grade changed since the previous run: {count}", count=len(changed)))
    shown = {r.battery_id for r in changed}
    for r in changed + [r for r in result.records if r.grade in ("restrict", "retire") and r.battery_id not in shown]:
        before = previous.get(r.battery_id)
        soh = "?" if r.soh_pct is None else f"{r.soh_pct:.1f} %"
        limits = texts.tr(", ").join(texts.limit(x) if x in _LIMIT_IDS else x for x in r.limits_crossed.split(",") if x)
        lines.append(texts.tr("  {battery}: {grade} (SOH {soh}; {limits}); previous run: {before}",
                              battery=r.battery_id, before=texts.grade_label(before) if before else "-",
                              grade=texts.grade_label(r.grade), soh=soh, limits=limits or "-"))
    return lines


def _report(args: argparse.Namespace, store: InfluxStore, now: float, texts: HealthTexts) -> int:
    from health.report import read_report_rows, write_report
    since = parse_time(args.since, now, texts)
    rows = read_report_rows(store.rows(
        f'SELECT * FROM "battery_health" WHERE time >= {since}'))
    if args.out == "-":
        try:
            write_report(rows, args.format, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # a reader that stops early (`| head`): end quietly, not with a traceback
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout again at exit
    else:
        with open(Path(args.out), "w", encoding="utf-8", newline="") as out:
            n = write_report(rows, args.format, out)
        print(texts.tr("{count} batteries written to {file}", count=n, file=args.out), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cascade health", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
