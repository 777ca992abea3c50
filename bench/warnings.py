"""Warning bench: lead time before thermal runaway, false alarms, evaluation throughput.

    python -m bench.warnings [--quick] [--write-traces]
    python -m bench.warnings --trace FILE [--trace FILE ...] [--onset SECONDS|ISO|+SECONDS|none]
                             [--slot site/cabinet/slot] [--rules FILE] [--json [--output FILE]] [--brief]
    cascade bench warnings --trace FILE ...             (the same, through the cascade CLI)

With ``--trace`` (any trace in the replay format, e.g. the library in bench/traces/):

* with an onset (``--onset``, else the trace's ``# onset:`` header): minutes from onset to the
  first raise of each level (any rule, and per rule) and to the first protective action, on the
  faulty slot (``--slot``, else the ``# slot:`` header, else every target) and its cabinet's
  cabinet-scope rules; negative = before onset. Alarms on other targets before onset are counted.
* without one: alarms (a raise or escalation to level n) per 1,000 battery-hours by level, where
  battery-hours = time covered by the trace summed over slots with a battery present.

Columns: the shipped catalogue; the ``--rules`` catalogue when given; and a temperature-only
baseline (the shipped catalogue's absolute temperature-threshold rules alone).

Without ``--trace``, the synthetic suite (bench/tracegen.py):

* Lead time: minutes before onset at which each level is first reached on the faulty slot, for
  the full catalogue, the fusion rule alone, and a temperature-only baseline (the absolute
  temperature-threshold rules alone) run on the same trace.
* False alarms: level-n alarms (a raise or escalation *to* level n) per 1,000 battery-hours on
  traces with no real fault: a fleet charging day and a trace with faulty sensors.
* Throughput: engine time only (trace generation excluded), cabinet polls/s and slot readings/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alerting.engine import Engine
from alerting.replay import (
    DEFAULT_REORDER_WINDOW_S,
    TraceClock,
    TraceError,
    TraceStats,
    print_skipped,
    read_trace,
    replay,
    write_trace,
)
from alerting.rules import Rule, RuleError, RuleSet, load_rules
from alerting.state import Transition
from bench import tracegen as traces
from core.model import BatteryState, CabinetReading, SlotReading

__all__ = ["BASELINE_RULES", "analyse_trace", "battery_hours", "bench_trace", "main", "run_trace",
           "temperature_baseline"]

BASELINE_RULES = ["over_temperature", "cell_over_temperature", "surface_over_temperature"]
"""The temperature-only baseline of catalogues that have these rules (see temperature_baseline)."""
FUSION_RULES = ["thermal_runaway"]
TRACE_DIR = Path(__file__).with_name("traces")
_TRACE_FIELDS = {
    "model", "battery_id", "chemistry", "soc_pct", "charge_current_a", "max_charge_current_a",
    "temperature_c", "cell_temperature_max_c", "cell_temperature_min_c", "surface_temperature_c",
    "h2_ppm", "voc_ppm", "module_pressure_kpa", "valve_acoustic_events",
}


def _is_absolute_temperature_rule(rule: Rule) -> bool:
    """A slot rule comparing one temperature field itself (no rate, difference, ratio or baseline)
    with thresholds it must exceed: what a temperature-only protection does."""
    inp = rule.input
    if rule.scope != "slot" or inp is None or inp.kind != "field" or not inp.fields[0].endswith("temperature_c"):
        return False
    if getattr(inp, "per", None) or getattr(inp, "minus", None) or rule.when is not None:
        return False
    return all(lv.compare.startswith(">") for lv in rule.levels)


def temperature_baseline(rules: RuleSet) -> RuleSet:
    """The absolute temperature-threshold rules of ``rules`` alone (a temperature-only baseline):
    BASELINE_RULES where the catalogue has them, else every rule of that shape."""
    ids = [r for r in BASELINE_RULES if r in rules] or [r.id for r in rules.values() if _is_absolute_temperature_rule(r)]
    return rules.only(ids)


def run_trace(trace: traces.Trace, rules: RuleSet) -> dict:
    """Replay a trace through a fresh engine; return transitions and timing."""
    now = [0.0]
    engine = Engine(rules, clock=lambda: now[0])
    transitions = []
    spent = 0.0
    polls = slots = 0
    clock = time.perf_counter
    for reading in trace.readings():
        now[0] = reading.timestamp_ns / 1e9
        t0 = clock()
        out = engine.evaluate(reading)
        spent += clock() - t0
        polls += 1
        slots += len(reading.slots)
        if out:
            transitions.extend(out)
    return {"transitions": transitions, "seconds": spent, "polls": polls, "slots": slots}


def _first_level_times(transitions, fault) -> dict[int, float]:
    first: dict[int, float] = {}
    for t in transitions:
        where = (t.target.site, t.target.cabinet, t.target.slot)
        if where != fault or t.kind not in ("raise", "escalate"):
            continue
        for n in range(1, t.to_level + 1):
            first.setdefault(n, t.at)
    return first


def _alarms_by_level(transitions) -> tuple[Counter, Counter]:
    levels: Counter = Counter()
    rules: Counter = Counter()
    for t in transitions:
        if t.kind in ("raise", "escalate"):
            levels[t.to_level] += 1
            rules[(t.rule, t.to_level)] += 1
    return levels, rules


def _fmt_lead(first: dict[int, float], onset: float, n: int) -> str:
    return f"{(onset - first[n]) / 60:6.1f}" if n in first else "     –"


# --- any trace: lead time or alarm rate (--trace) ---------------------------------------------

_LEVELS = (1, 2, 3)
_ALARM_KINDS = ("raise", "escalate")


def battery_hours(readings: Sequence[tuple[float, CabinetReading]]) -> float:
    """Hours covered by the trace summed over slots with a battery present: each cabinet poll
    counts the time until that cabinet's next poll for every slot holding a battery (the last poll
    of a cabinet counts nothing: the trace does not say what came after it)."""
    last: dict[tuple[str, str], tuple[float, CabinetReading]] = {}
    seconds = 0.0
    for ts, reading in readings:
        key = (reading.site, reading.cabinet_id)
        prev = last.get(key)
        if prev is not None:
            seconds += (ts - prev[0]) * sum(1 for s in prev[1].slots if _battery_present(s))
        last[key] = (ts, reading)
    return seconds / 3600


def _battery_present(slot: SlotReading) -> bool:
    if slot.battery_state is not None:
        return slot.battery_state != BatteryState.EMPTY
    return any(v is not None for v in (slot.battery_id, slot.soc_pct, slot.voltage_v, slot.temperature_c,
                                       slot.cell_temperature_max_c))


def _parse_slot(text: str) -> tuple[str, str, int]:
    parts = text.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"slot {text!r}: use site/cabinet/slot")
    try:
        return parts[0], parts[1], int(parts[2])
    except ValueError:
        raise ValueError(f"slot {text!r}: the slot number must be an integer") from None


def _parse_onset(text: str, first_ts: float | None) -> float | None:
    """Unix seconds, ISO-8601 (no zone = UTC), ``+SECONDS`` after the trace's first timestamp, or
    ``none``."""
    text = text.strip()
    if text.lower() == "none":
        return None
    if text.startswith("+"):
        if first_ts is None:
            raise ValueError("a relative onset needs a trace with at least one reading")
        value = first_ts + float(text[1:])
    else:
        try:
            value = float(text)
        except ValueError:
            try:
                stamp = dt.datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"onset {text!r}: use Unix seconds, ISO-8601, +SECONDS or none") from None
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=dt.UTC)
            value = stamp.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"onset {text!r} is not a finite time")
    return value


def _first_times(transitions: list[Transition], keep: Callable[[Transition], bool]) -> dict[str, Any]:
    """First time each level is reached (any rule and per rule) and the first protective action,
    over the transitions ``keep`` selects."""
    any_rule: dict[int, float] = {}
    per_rule: dict[str, dict[int, float]] = {}
    action = cutoff = None
    for t in transitions:
        if t.kind not in _ALARM_KINDS or not keep(t):
            continue
        for n in range(1, t.to_level + 1):  # reaching level 3 is reaching level >= 1 and >= 2
            any_rule.setdefault(n, t.at)
        per_rule.setdefault(t.rule, {}).setdefault(t.to_level, t.at)  # the levels the rule itself reached
        if t.protective_action is not None and action is None:
            action = (t.at, t.protective_action, t.rule)
        if t.protective_action in _CUTOFFS and cutoff is None:
            cutoff = (t.at, t.protective_action, t.rule)
    return {"any": any_rule, "per_rule": per_rule, "action": action, "cutoff": cutoff}


_CUTOFFS = ("slot_cutoff", "cabinet_cutoff")


def analyse_trace(readings: Sequence[tuple[float, CabinetReading]], rules: RuleSet, *, onset: float | None,
                  slot: tuple[str, str, int] | None, hours: float) -> dict[str, Any]:
    """Replay ``readings`` through a fresh engine with ``rules``; lead times when ``onset`` is set
    (on ``slot`` and its cabinet's cabinet-scope rules, or every target when ``slot`` is None) and
    alarm counts per 1,000 battery-hours (``hours``) in any case."""
    engine = Engine(rules, clock=TraceClock())
    transitions = replay(readings, engine)

    def on_target(t: Transition) -> bool:
        if slot is None:
            return True
        site, cabinet, number = slot
        if (t.target.site, t.target.cabinet) != (site, cabinet):
            return False
        return t.target.slot is None or t.target.slot == number

    alarms: Counter = Counter()
    by_rule: Counter = Counter()
    actions = 0
    since: dict[Any, float] = {}  # alert -> when its level last changed
    standing = 0.0  # longest time an alert stayed at one level (seconds; still standing at the end counts)
    for t in transitions:
        if t.kind in _ALARM_KINDS:
            alarms[t.to_level] += 1
            by_rule[f"{t.rule}@L{t.to_level}"] += 1
            actions += t.protective_action is not None
        if t.key in since:
            standing = max(standing, t.at - since.pop(t.key))
        if t.to_level:
            since[t.key] = t.at
    end = readings[-1][0] if readings else 0.0
    for at in since.values():
        standing = max(standing, end - at)
    per_1000 = (lambda n: n * 1000 / hours) if hours > 0 else (lambda n: None)
    out: dict[str, Any] = {
        "rules": len(rules),
        "transitions": len(transitions),
        "rates": {
            "alarms": {str(n): alarms[n] for n in _LEVELS},
            "per_1000_battery_hours": {str(n): per_1000(alarms[n]) for n in _LEVELS},
            "protective_actions": actions,
            "protective_actions_per_1000_battery_hours": per_1000(actions),
            "by_rule": dict(by_rule.most_common()),
            "longest_unchanged_alert_min": standing / 60,
        },
    }
    if onset is not None:
        first = _first_times(transitions, on_target)

        def rel(at: float) -> float:  # minutes from onset, negative = before onset
            return (at - onset) / 60

        elsewhere: Counter = Counter()
        for t in transitions:
            if t.kind in _ALARM_KINDS and t.at < onset and not on_target(t):
                elsewhere[str(t.to_level)] += 1
                elsewhere["protective_actions"] += t.protective_action is not None
        out["onset"] = {
            "first_level_min": {str(n): rel(first["any"][n]) if n in first["any"] else None for n in _LEVELS},
            "first_action": None if first["action"] is None else {
                "min": rel(first["action"][0]), "action": first["action"][1], "rule": first["action"][2]},
            "first_cutoff": None if first["cutoff"] is None else {
                "min": rel(first["cutoff"][0]), "action": first["cutoff"][1], "rule": first["cutoff"][2]},
            "per_rule": {rule: {str(n): rel(at) for n, at in levels.items()}
                         for rule, levels in sorted(first["per_rule"].items(), key=lambda kv: min(kv[1].values()))},
            "elsewhere_before_onset": {k: elsewhere[k] for k in ("1", "2", "3", "protective_actions")},
        }
    return out


def bench_trace(path: str | Path, rule_sets: dict[str, RuleSet], *, onset_arg: str | None, slot_arg: str | None,
                reorder_window_s: float = DEFAULT_REORDER_WINDOW_S, sort: bool = False
                ) -> tuple[dict[str, Any], TraceStats]:
    """Read one trace and analyse it with every rule set: (JSON-ready result, the TraceStats with
    the skipped rows' errors). Raises TraceError (bad trace) or ValueError (bad onset or slot)."""
    stats = TraceStats()
    readings = read_trace(path, reorder_window_s=reorder_window_s, sort=sort, stats=stats)
    meta = stats.metadata
    if onset_arg is not None:
        onset, onset_from = _parse_onset(onset_arg, stats.first_ts), "--onset"
    elif meta.get("onset"):
        onset, onset_from = _parse_onset(meta["onset"][0], stats.first_ts), "trace header"
    else:
        onset, onset_from = None, None
    slot_text = slot_arg if slot_arg is not None else (meta.get("slot") or [None])[0]
    slot = _parse_slot(slot_text) if slot_text else None
    hours = battery_hours(readings)
    return {
        "trace": str(path),
        "title": (meta.get("title") or [""])[0],
        "stats": stats.to_dict(),
        "battery_hours": hours,
        "duration_h": ((stats.last_ts or 0) - (stats.first_ts or 0)) / 3600,
        "onset": onset,
        "onset_from": onset_from,
        "slot": "/".join(map(str, slot)) if slot else None,
        "rule_sets": {name: analyse_trace(readings, rules, onset=onset, slot=slot, hours=hours)
                      for name, rules in rule_sets.items()},
    }, stats


def _fmt_min(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}"


def _fmt_rate(value: float | None, count: int) -> str:
    return "–" if value is None else f"{value:.1f} ({count})"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_trace_result(res: dict[str, Any]) -> str:
    """The plain-text report of one trace (bench_trace's result)."""
    names = list(res["rule_sets"])
    st = res["stats"]
    out = [f"trace   {res['trace']}" + (f"  ({res['title']})" if res["title"] else ""),
           f"rows    {st['rows']:,} read, {st['used']:,} used, "
           + (", ".join(f"{n} skipped: {k}" for k, n in sorted(st["skipped"].items())) or "0 skipped")
           + f"; {st['reordered']} reordered; {st['polls']:,} polls over {res['duration_h']:.2f} h; "
           f"{res['battery_hours']:.1f} battery-hours"]
    if res["onset"] is not None:
        out.append(f"onset   {_when(res['onset'])} (Unix {res['onset']:.0f}, from {res['onset_from']}); "
                   f"target {res['slot'] or 'every slot and cabinet'}")
        out.append("minutes from onset to the first raise (negative = before onset, – = never); "
                   "first Ln = first time any rule is at level n or higher")
        rows = []
        for n in _LEVELS:
            rows.append([f"first L{n} (any rule)"]
                        + [_fmt_min(res["rule_sets"][k]["onset"]["first_level_min"][str(n)]) for k in names])
        acts = [res["rule_sets"][k]["onset"]["first_action"] for k in names]
        rows.append(["first protective action"] + [_fmt_min(a["min"] if a else None) for a in acts])
        rows.append(["  which"] + [f"{a['action']} ({a['rule']})" if a else "–" for a in acts])
        cuts = [res["rule_sets"][k]["onset"]["first_cutoff"] for k in names]
        rows.append(["first cut-off"] + [_fmt_min(a["min"] if a else None) for a in cuts])
        rows.append(["  which"] + [f"{a['action']} ({a['rule']})" if a else "–" for a in cuts])
        rule_levels: dict[tuple[str, int], float] = {}
        for k in names:
            for rule, levels in res["rule_sets"][k]["onset"]["per_rule"].items():
                for n, m in levels.items():
                    key = (rule, int(n))
                    rule_levels[key] = min(m, rule_levels.get(key, math.inf))
        for rule, n in sorted(rule_levels, key=lambda key: (rule_levels[key], key)):
            rows.append([f"  {rule} L{n}"]
                        + [_fmt_min(res["rule_sets"][k]["onset"]["per_rule"].get(rule, {}).get(str(n))) for k in names])
        else_ = [res["rule_sets"][k]["onset"]["elsewhere_before_onset"] for k in names]
        rows.append(["other targets before onset: L1/L2/L3, actions"]
                    + [f"{e['1']}/{e['2']}/{e['3']}, {e['protective_actions']}" for e in else_])
        out.append(_table(rows, ["", *names]))
    else:
        out.append("alarms (raise or escalation to the level) per 1,000 battery-hours (count); no onset: "
                   "no real fault assumed")
        rows = []
        for n in _LEVELS:
            rows.append([f"L{n}"] + [_fmt_rate(res["rule_sets"][k]["rates"]["per_1000_battery_hours"][str(n)],
                                               res["rule_sets"][k]["rates"]["alarms"][str(n)]) for k in names])
        rows.append(["protective actions"]
                    + [_fmt_rate(res["rule_sets"][k]["rates"]["protective_actions_per_1000_battery_hours"],
                                 res["rule_sets"][k]["rates"]["protective_actions"]) for k in names])
        rows.append(["longest unchanged alert (min)"]
                    + [f"{res['rule_sets'][k]['rates']['longest_unchanged_alert_min']:.0f}" for k in names])
        keys = sorted({r for k in names for r in res["rule_sets"][k]["rates"]["by_rule"]},
                      key=lambda r: (-max(res["rule_sets"][k]["rates"]["by_rule"].get(r, 0) for k in names), r))
        for r in keys:
            rows.append([f"  {r}"] + [str(res["rule_sets"][k]["rates"]["by_rule"].get(r, 0)) for k in names])
        out.append(_table(rows, ["", *names]))
    return "\n".join(out)


def format_summary(results: list[dict[str, Any]]) -> str:
    """One row per trace: lead times (runaway traces) and alarm rates (traces without onset)."""
    names = list(results[0]["rule_sets"])
    out = []
    onset = [r for r in results if r["onset"] is not None]
    normal = [r for r in results if r["onset"] is None]
    if onset:
        header = ["trace (minutes from onset)"] + [f"{k} {c}" for k in names
                                                   for c in ("L1", "L2", "L3", "action", "cut-off")]
        rows = []
        for r in onset:
            row = [Path(r["trace"]).stem]
            for k in names:
                o = r["rule_sets"][k]["onset"]
                row += [_fmt_min(o["first_level_min"][str(n)]) for n in _LEVELS]
                row.append(_fmt_min(o["first_action"]["min"] if o["first_action"] else None))
                row.append(_fmt_min(o["first_cutoff"]["min"] if o["first_cutoff"] else None))
            rows.append(row)
        out.append(_table(rows, header))
    if normal:
        header = ["trace (per 1,000 battery-h)", "battery-h"] + [
            f"{k} {c}" for k in names for c in ("L1", "L2", "L3", "actions", "longest alert min")]
        rows = []
        for r in normal:
            row = [Path(r["trace"]).stem, f"{r['battery_hours']:.1f}"]
            for k in names:
                rates = r["rule_sets"][k]["rates"]
                row += [_fmt_rate(rates["per_1000_battery_hours"][str(n)], rates["alarms"][str(n)]) for n in _LEVELS]
                row.append(_fmt_rate(rates["protective_actions_per_1000_battery_hours"], rates["protective_actions"]))
                row.append(f"{rates['longest_unchanged_alert_min']:.0f}")
            rows.append(row)
        out.append(_table(rows, header))
    return "\n\n".join(out)


def trace_main(args: argparse.Namespace) -> int:
    """``--trace`` mode of main()."""
    try:
        shipped = load_rules()
        rule_sets = {"shipped": shipped}
        if args.rules:
            name = Path(args.rules).stem  # the column is named after the file
            rule_sets["candidate" if name in ("shipped", "temp-only") else name] = load_rules(args.rules)
        rule_sets["temp-only"] = temperature_baseline(shipped)
    except RuleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = []
    for path in args.trace:
        try:
            res, stats = bench_trace(path, rule_sets, onset_arg=args.onset, slot_arg=args.slot,
                                     reorder_window_s=args.reorder_window, sort=args.sort)
        except TraceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        print_skipped(stats, limit=10)
        results.append(res)
    if args.json:
        text = json.dumps(results if len(results) > 1 else results[0], indent=2, ensure_ascii=False)
        if args.output:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        else:
            print(text)
        return 0
    if not args.brief:
        print("\n\n".join(format_trace_result(r) for r in results))
    if len(results) > 1 or args.brief:
        if not args.brief:
            print()
        print("== summary: " + ", ".join(results[0]["rule_sets"]) + " ==")
        print(format_summary(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.warnings", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller fleet (5 cabinets × 12 slots × 6 h)")
    p.add_argument("--write-traces", action="store_true", help=f"rewrite the CSV traces in {TRACE_DIR}")
    p.add_argument("--trace", action="append", metavar="FILE",
                   help="bench any trace in the replay format instead of the synthetic suite (repeatable)")
    p.add_argument("--onset", metavar="SECONDS|ISO|+SECONDS|none",
                   help="onset of the fault (default: the trace's '# onset:' header); none = no onset")
    p.add_argument("--slot", metavar="site/cabinet/slot",
                   help="the faulty slot (default: the trace's '# slot:' header, else every target)")
    p.add_argument("--rules", metavar="FILE", help="also run this catalogue, beside the shipped one")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--output", metavar="FILE", help="with --json: write the JSON to FILE instead of stdout")
    p.add_argument("--brief", action="store_true", help="only the one-row-per-trace summary")
    p.add_argument("--reorder-window", type=float, default=DEFAULT_REORDER_WINDOW_S, metavar="SECONDS",
                   help=f"replay reorder window (default {DEFAULT_REORDER_WINDOW_S:g})")
    p.add_argument("--sort", action="store_true", help="sort each trace by time before replaying it")
    args = p.parse_args(argv)
    if args.trace:
        if not args.reorder_window >= 0:
            p.error("--reorder-window must be >= 0 seconds")
        return trace_main(args)
    if any(v for v in (args.onset, args.slot, args.rules, args.json, args.brief, args.output)):
        p.error("--onset, --slot, --rules, --json, --output and --brief need --trace FILE")

    catalogue = load_rules()
    rule_sets = {
        "catalogue": catalogue,
        "fusion only": catalogue.only([r for r in FUSION_RULES if r in catalogue]),
        "temperature only": temperature_baseline(catalogue),
    }

    print("== Lead time before onset (minutes; – = level never reached) ==")
    print(f"{'trace':<20} {'rule set':<18} {'L1':>6} {'L2':>6} {'L3':>6}")
    for trace in (traces.gas_first_runaway(), traces.slow_heating()):
        for name, rules in rule_sets.items():
            first = _first_level_times(run_trace(trace, rules)["transitions"], trace.fault)
            print(f"{trace.name:<20} {name:<18} " + " ".join(_fmt_lead(first, trace.onset, n) for n in (1, 2, 3)))
    print("onset: gas_first_runaway = pack > 150 °C; slow_heating = pack ≥ 70 °C (D-5.4.1)")

    fleet = (traces.normal_fleet(cabinets=5, hours=6) if args.quick else traces.normal_fleet())
    normal = [fleet, traces.noisy_sensors()]
    print()
    print("== False alarms per 1,000 battery-hours (no real fault in these traces) ==")
    print(f"{'trace':<16} {'battery-h':>9} {'rule set':<18} {'L1':>7} {'L2':>7} {'L3':>7}  rules (alarms)")
    throughput = None
    for trace in normal:
        for name in ("catalogue", "temperature only"):
            run = run_trace(trace, rule_sets[name])
            levels, by_rule = _alarms_by_level(run["transitions"])
            rate = [levels[n] * 1000 / trace.battery_hours for n in (1, 2, 3)]
            top = ", ".join(f"{r}@L{n} ({c})" for (r, n), c in by_rule.most_common(4)) or "none"
            print(f"{trace.name:<16} {trace.battery_hours:>9.0f} {name:<18} "
                  + " ".join(f"{x:7.2f}" for x in rate) + f"  {top}")
            if trace is fleet and name == "catalogue":
                throughput = run

    assert throughput is not None
    print()
    print("== Evaluation throughput (full catalogue, engine time only) ==")
    rules_per_slot = sum(1 for r in catalogue.values() if r.scope == "slot")
    print(f"{throughput['polls']} cabinet polls, {throughput['slots']} slot readings, "
          f"{len(catalogue)} rules ({rules_per_slot} per slot) in {throughput['seconds']:.2f} s")
    print(f"{throughput['polls'] / throughput['seconds']:,.0f} cabinet polls/s, "
          f"{throughput['slots'] / throughput['seconds']:,.0f} slot readings/s, "
          f"{throughput['seconds'] / throughput['slots'] * 1e6:.1f} µs per slot reading")

    if args.write_traces:
        TRACE_DIR.mkdir(exist_ok=True)
        for trace in (traces.gas_first_runaway(slots=1), traces.slow_heating(slots=1)):
            path = TRACE_DIR / f"{trace.name}.csv"
            comments = [f"{trace.name}: {trace.description}"]
            if trace.onset is not None:
                comments.append(f"onset: {trace.onset:.0f}")
            if trace.fault is not None:
                comments.append("slot: " + "/".join(str(part) for part in trace.fault))
            rows = write_trace(trace.readings(), path, fields=_TRACE_FIELDS, comments=comments)
            print(f"wrote {path.name}: {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
