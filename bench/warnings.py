"""Warning bench: lead time before thermal runaway, false alarms, evaluation throughput.

    python -m bench.warnings [--quick] [--write-traces]

* Lead time: minutes before onset at which each level is first reached on the faulty slot, for
  the full catalogue, the fusion rule alone, and a temperature-only baseline (the absolute
  temperature-threshold rules alone) run on the same trace.
* False alarms: level-n alarms (a raise or escalation *to* level n) per 1,000 battery-hours on
  traces with no real fault: a fleet charging day and a trace with faulty sensors.
* Throughput: engine time only (trace generation excluded), cabinet polls/s and slot readings/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from alerting.engine import Engine
from alerting.replay import write_trace
from alerting.rules import RuleSet, load_rules
from bench import tracegen as traces

__all__ = ["BASELINE_RULES", "main", "run_trace"]

BASELINE_RULES = ["over_temperature", "cell_over_temperature", "surface_over_temperature"]
FUSION_RULES = ["thermal_runaway"]
TRACE_DIR = Path(__file__).with_name("traces")
_TRACE_FIELDS = {
    "model", "battery_id", "chemistry", "soc_pct", "charge_current_a", "max_charge_current_a",
    "temperature_c", "cell_temperature_max_c", "cell_temperature_min_c", "surface_temperature_c",
    "h2_ppm", "voc_ppm", "module_pressure_kpa", "valve_acoustic_events",
}


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.warnings", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller fleet (5 cabinets × 12 slots × 6 h)")
    p.add_argument("--write-traces", action="store_true", help=f"rewrite the CSV traces in {TRACE_DIR}")
    args = p.parse_args(argv)

    catalogue = load_rules()
    rule_sets = {
        "catalogue": catalogue,
        "fusion only": catalogue.only(FUSION_RULES),
        "temperature only": catalogue.only(BASELINE_RULES),
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
            rows = write_trace(trace.readings(), path, fields=_TRACE_FIELDS)
            print(f"wrote {path.name}: {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
