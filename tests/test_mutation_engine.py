"""The warning engine (alerting/engine.py) stated from outside: levels at their exact thresholds, hysteresis,
`for` and clear delays on the steady clock, guards, the value each kind of input reads, the fusion score,
its evidence and holds, what a transition says and asks for, stored alerts retired at start-up, and what
a run-time threshold change does. Written to kill the mutants `make mutate` found alive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.engine import Engine
from alerting.rules import RuleError, load_rules, parse_rules
from alerting.state import Target
from core.model import CabinetReading, SlotReading
from tests.fixtures.clock import T0, ManualClock

FUSION = """\
rules:
  - id: runaway
    description: fused evidence
    source: test
    scope: slot
    input:
      fusion:
        - {input: {field: h2_ppm}, start: 100, full: 300, weight: 1}
        - {input: {field: voc_ppm}, start: 0, full: 10, weight: 1}
        - {input: {field: valve_acoustic_events}, start: 0, full: 1, weight: 1, hold: 60s}
    levels: {1: 0.4, 2: 0.9, 3: 1.2}
    diagnosis: "{value}"
    action: act
"""


def _levels(readings: list[dict], step_s: float = 30) -> list[tuple[int, float]]:
    """(level, score) of every transition for a slot reporting ``readings`` ``step_s`` apart."""
    clock = ManualClock()
    engine = Engine(parse_rules(FUSION), clock=clock)
    out = []
    for values in readings:
        clock.advance(step_s)
        slot = SlotReading(1, battery_id="B1", **values)
        for t in engine.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=[slot])):
            out.append((t.to_level, round(t.value, 6) if t.value is not None else None))
    return out


@pytest.mark.parametrize(("values", "expected"), [
    ({"h2_ppm": 200.0}, [(1, 0.5)]),  # half way from start to full: strength 0.5
    ({"h2_ppm": 400.0}, [(2, 1.0)]),  # past full: strength 1, not 1.5
    ({"h2_ppm": 50.0, "voc_ppm": 5.0}, [(1, 0.5)]),  # below start: strength 0, not negative
    ({"h2_ppm": 300.0, "voc_ppm": 10.0}, [(3, 2.0)]),
])
def test_fusion_score_is_the_weighted_sum_of_clamped_strengths(values: dict, expected: list) -> None:
    assert _levels([values]) == expected


def test_a_momentary_event_is_held_for_its_hold_time_inclusive() -> None:
    """One valve event (strength 1), then the counter reads 0: the 60 s hold keeps the evidence for
    the reading 60 s later (inclusive) and lets it go at the one after."""
    clock = ManualClock(T0)
    engine = Engine(parse_rules(FUSION), clock=clock)
    seen = []
    for events in (1, 0, 0, 0):
        clock.advance(60)
        slot = SlotReading(1, battery_id="B1", valve_acoustic_events=events, voc_ppm=0.0)
        for t in engine.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=[slot])):
            seen.append((clock.now - T0, t.kind, t.to_level, t.value))
    assert seen == [(60.0, "raise", 2, 1.0), (180.0, "clear", 0, 0.0)]


# -- run-time thresholds ----------------------------------------------------------------------------

def test_a_threshold_change_touches_that_rule_only_and_is_audited(tmp_path: Path) -> None:
    clock = ManualClock()
    audit = tmp_path / "audit.jsonl"
    engine = Engine(load_rules(), clock=clock, audit_path=audit)
    before = {rid: [lv.threshold for lv in rule.levels] for rid, rule in engine.rules.items()}
    entry = engine.set_threshold("over_temperature", 2, 61, who=" noc-li ", reason=" hot summer ")
    after = {rid: [lv.threshold for lv in rule.levels] for rid, rule in engine.rules.items()}
    assert list(after) == list(before)
    changed = {rid for rid in before if before[rid] != after[rid]}
    assert changed == {"over_temperature"}
    old = dict(zip([lv.level for lv in load_rules()["over_temperature"].levels], before["over_temperature"]))[2]
    assert entry == {"at": clock.now, "who": "noc-li", "reason": "hot summer", "rule": "over_temperature",
                     "level": 2, "old": old, "new": 61.0}
    assert engine.audit == [entry]
    assert [json.loads(line) for line in audit.read_text().splitlines()] == [entry]


@pytest.mark.parametrize(("args", "kwargs", "error", "message"), [
    (("over_temperature", 2, 61), {"who": " ", "reason": "r"}, ValueError,
     "set_threshold needs who: the person making the change"),
    (("over_temperature", 2, 61), {"who": "x", "reason": ""}, ValueError,
     "set_threshold needs reason: why the threshold changes (audited)"),
    (("no_such_rule", 2, 61), {"who": "x", "reason": "r"}, RuleError,
     "<run-time>: rule 'no_such_rule': no such rule; see the catalogue for ids"),
    (("over_temperature", 2, float("nan")), {"who": "x", "reason": "r"}, RuleError,
     "catalogue.yaml: rule 'over_temperature': key 'levels.2': nan is not a finite number"),
    (("over_temperature", 4, 61), {"who": "x", "reason": "r"}, RuleError,
     "catalogue.yaml: rule 'over_temperature': key 'levels.4': level must be 1, 2 or 3"),
    (("over_temperature", True, 61), {"who": "x", "reason": "r"}, RuleError,
     "catalogue.yaml: rule 'over_temperature': key 'levels.True': level must be 1, 2 or 3"),
])
def test_an_invalid_threshold_change_is_refused_and_changes_nothing(args: tuple, kwargs: dict, error: type,
                                                                     message: str) -> None:
    engine = Engine(load_rules(), clock=ManualClock())
    before = [(rid, [lv.threshold for lv in r.levels]) for rid, r in engine.rules.items()]
    with pytest.raises(error) as info:
        engine.set_threshold(*args, **kwargs)
    assert str(info.value) == message
    assert [(rid, [lv.threshold for lv in r.levels]) for rid, r in engine.rules.items()] == before
    assert engine.audit == []


# -- level logic at exact thresholds (alerting/engine.py: _advance, _run) -------------------------------------------

def _rule(levels: str, *, input: str = "{field: temperature_c}", extra: str = "", rid: str = "r",
          scope: str = "slot", diagnosis: str = "{value}", action: str = "act") -> str:
    """One rule as catalogue YAML (a list item), for parse_rules("rules:\\n" + ...)."""
    lines = [f"  - id: {rid}", "    description: d", "    source: test", f"    scope: {scope}",
             f"    input: {input}", f"    levels: {levels}", f'    diagnosis: "{diagnosis}"', f'    action: "{action}"']
    lines += [f"    {line}" for line in extra.splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


def _rules(*items: str):
    return parse_rules("rules:\n" + "".join(items))


class Slot:
    """One slot of cabinet s1/c1 fed to an engine: readings on demand, every transition kept."""

    def __init__(self, rules, *, step: float = 30.0, elapsed: ManualClock | None = None, model: str = "m",
                 **engine) -> None:
        self.clock = ManualClock()
        self.engine = Engine(rules, clock=self.clock, language="en", elapsed=elapsed, **engine)
        self.step, self.model = step, model

    def read(self, slot: int = 1, **values) -> list[tuple]:
        """(kind, from, to, value) of this reading's transitions; the clock then moves one step."""
        reading = CabinetReading("c1", "s1", self.model, int(self.clock.now * 1e9),
                                 slots=[SlotReading(slot, battery_id="B1", **values)])
        out = self.engine.evaluate(reading)
        self.clock.advance(self.step)
        return [(t.kind, t.from_level, t.to_level, t.value) for t in out]

    def run(self, field: str, values: list) -> list[list[tuple]]:
        return [self.read(**{field: v}) for v in values]


def test_levels_at_their_thresholds_with_hysteresis_for_a_greater_or_equal_rule() -> None:
    slot = Slot(_rules(_rule("{1: 45, 2: 55, 3: 70}", extra="hysteresis: 2")))
    got = slot.run("temperature_c", [44.99, 45, 43, 42.99, 55, 70, 68, 67.99, 53, 52.99, 43, 42.99])
    assert got == [
        [], [("raise", 0, 1, 45.0)],
        [],  # 43 = 45 - 2: still held
        [("clear", 1, 0, 42.99)],
        [("raise", 0, 2, 55.0)],  # straight to the level the value reached
        [("escalate", 2, 3, 70.0)],
        [],  # 68 = 70 - 2: held
        [("deescalate", 3, 2, 67.99)],
        [],  # 53 = 55 - 2: held
        [("deescalate", 2, 1, 52.99)],
        [],
        [("clear", 1, 0, 42.99)],
    ]
    assert slot.engine.state.active() == []


def test_levels_at_their_thresholds_with_hysteresis_for_a_strictly_greater_rule() -> None:
    slot = Slot(_rules(_rule("{1: 45, 2: 55}", extra='compare: ">"\nhysteresis: 2')))
    got = slot.run("temperature_c", [45, 45.01, 43.01, 43, 55, 55.01, 53.01, 53])
    assert got == [
        [], [("raise", 0, 1, 45.01)], [], [("clear", 1, 0, 43.0)],
        [("raise", 0, 1, 55.0)], [("escalate", 1, 2, 55.01)], [], [("deescalate", 2, 1, 53.0)],
    ]


@pytest.mark.parametrize(("compare", "values", "expected"), [
    ("<", [10, 9.99, 10.99, 11], [[], [("raise", 0, 1, 9.99)], [], [("clear", 1, 0, 11.0)]]),
    ("<=", [10.01, 10, 11, 11.01], [[], [("raise", 0, 1, 10.0)], [], [("clear", 1, 0, 11.01)]]),
])
def test_a_below_rule_mirrors_the_above_one_and_reports_the_raw_value(compare: str, values: list,
                                                                     expected: list) -> None:
    slot = Slot(_rules(_rule("{1: 10, 2: 5}", input="{field: soc_pct}", extra=f'compare: "{compare}"\nhysteresis: 1')))
    assert slot.run("soc_pct", values) == expected


def test_per_level_compare_and_a_strict_first_level() -> None:
    """Level 1 strict (">"), level 2 inclusive: each boundary as written."""
    rules = _rules(_rule('{1: {value: 45, compare: ">"}, 2: {value: 55, compare: ">="}}'))
    slot = Slot(rules)
    assert slot.run("temperature_c", [45, 55, 44]) == [[], [("raise", 0, 2, 55.0)], [("clear", 2, 0, 44.0)]]


def test_for_runs_on_the_steady_clock_inclusive_and_restarts_when_the_value_dips() -> None:
    tick = ManualClock(0.0)
    slot = Slot(_rules(_rule("{1: {value: 45, for: 60s}, 2: {value: 55, for: 120s}}")), elapsed=tick, step=3600)
    seen = []
    for at, value in [(0, 50), (59.9, 50), (60, 50), (70, 40), (80, 50), (139, 50), (140, 60), (259, 60),
                      (260, 60)]:
        tick.now = 500.0 + at  # the wall clock jumps an hour between readings: durations do not follow it
        seen.append((at, slot.read(temperature_c=value)))
    assert seen == [
        (0, []), (59.9, []), (60, [("raise", 0, 1, 50.0)]),
        (70, [("clear", 1, 0, 40.0)]),
        (80, []), (139, []), (140, [("raise", 0, 1, 60.0)]),  # 60 s since 80: level 1; level 2 needs 120 s
        (259, []), (260, [("escalate", 1, 2, 60.0)]),
    ]


def test_a_level_met_but_not_yet_held_long_enough_keeps_counting_while_below_level_one() -> None:
    """Nothing active yet, the value stays above the threshold: the `for` count must carry over readings."""
    slot = Slot(_rules(_rule("{1: {value: 45, for: 90s}}")))
    assert slot.run("temperature_c", [46, 46, 46, 46]) == [[], [], [], [("raise", 0, 1, 46.0)]]


def test_clear_for_delays_a_drop_on_the_steady_clock_and_restarts_when_the_value_returns() -> None:
    tick = ManualClock(0.0)
    slot = Slot(_rules(_rule("{1: 45, 2: 55}", extra="clear_for: 60s")), elapsed=tick, step=3600)
    seen = []
    for at, value in [(0, 60), (10, 50), (69.9, 50), (70, 50), (80, 40), (100, 50), (120, 40), (179.9, 40),
                      (180, 40)]:
        tick.now = 500.0 + at
        seen.append((at, slot.read(temperature_c=value)))
    assert seen == [
        (0, [("raise", 0, 2, 60.0)]),
        (10, []), (69.9, []), (70, [("deescalate", 2, 1, 50.0)]),  # a de-escalation waits clear_for too
        (80, []), (100, []),  # back above: the wait starts again
        (120, []), (179.9, []), (180, [("clear", 1, 0, 40.0)]),
    ]


def test_a_guard_that_is_off_clears_and_a_guard_without_data_changes_nothing() -> None:
    rules = _rules(_rule("{1: 45}", extra='when: {field: charge_current_a, compare: ">", value: 0.5}'))
    slot = Slot(rules)
    got = [slot.read(temperature_c=50, charge_current_a=c) for c in (0.5, 0.51, None, 0.5)]
    assert got == [[], [("raise", 0, 1, 50.0)], [], [("clear", 1, 0, 50.0)]]


@pytest.mark.parametrize(("compare", "on", "off"), [(">=", 0.5, 0.49), ("<", 0.49, 0.5), ("<=", 0.5, 0.51)])
def test_each_guard_comparison_at_its_boundary(compare: str, on: float, off: float) -> None:
    slot = Slot(_rules(_rule("{1: 45}", extra=f'when: {{field: charge_current_a, compare: "{compare}", value: 0.5}}')))
    assert [slot.read(temperature_c=50, charge_current_a=c) for c in (off, on, off)] == [
        [], [("raise", 0, 1, 50.0)], [("clear", 1, 0, 50.0)]]


def test_a_rule_back_to_zero_forgets_its_state_so_for_starts_afresh() -> None:
    """Cleared, then met again: the `for` count starts at the new crossing, not at the old one."""
    slot = Slot(_rules(_rule("{1: {value: 45, for: 60s}}")))
    got = slot.run("temperature_c", [50, 50, 50, 40, 50, 50, 50])
    assert got == [[], [], [("raise", 0, 1, 50.0)], [("clear", 1, 0, 40.0)], [], [], [("raise", 0, 1, 50.0)]]


def test_two_rules_on_one_target_are_decided_independently() -> None:
    rules = _rules(_rule("{1: 45}", rid="a"), _rule("{1: 50}", rid="b"))
    slot = Slot(rules)
    reading = CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(1, temperature_c=47)])
    assert [(t.rule, t.to_level) for t in slot.engine.evaluate(reading)] == [("a", 1)]
    reading = CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(1, temperature_c=52)])
    assert [(t.rule, t.to_level) for t in slot.engine.evaluate(reading)] == [("b", 1)]


def test_for_counts_from_a_crossing_at_steady_time_zero() -> None:
    """A steady clock that starts at 0 (an ``elapsed`` measured from start-up): a value met at 0.0 is met
    since 0.0, not "not met" (found writing the tests above: 0.0 was read as no crossing)."""
    tick = ManualClock(0.0)
    slot = Slot(_rules(_rule("{1: {value: 45, for: 60s}}")), elapsed=tick)
    seen = []
    for at in (0.0, 30.0, 60.0):
        tick.now = at
        seen.append(slot.read(temperature_c=50))
    assert seen == [[], [], [("raise", 0, 1, 50.0)]]


# -- what each kind of input reads (alerting/engine.py: _extractor, _context) ---------------------------------------

class Probe:
    """The value a rule's input has on every reading, seen from outside: a catch-all rule on that input
    whose guard (``soc_pct`` ≥ 50, or ``guard``) is switched on while the rule is idle and off while it is
    active, so each reading with a value makes a transition (raise or clear) that carries it."""

    def __init__(self, input: str, *, guard: str = "soc_pct", step: float = 30.0) -> None:
        rules = _rules(_rule('{1: {value: -1000000000000, compare: ">"}}', input=input,
                             extra=f'when: {{field: {guard}, compare: ">=", value: 50}}'))
        self.clock = ManualClock()
        self.registry = CollectorRegistry()
        self.engine = Engine(rules, clock=self.clock, registry=self.registry)
        self.guard, self.step = guard, step

    def read(self, *slots: dict, at_ns: int | None = None, **cabinet) -> dict[int, float | None]:
        """slot number -> its input's value on this reading (None: no value)."""
        objs = []
        for number, values in enumerate(slots, 1):
            active = self.engine.state.get(f"r@s1/c1/{number}") is not None
            objs.append(SlotReading(number, **{"battery_id": f"B{number}", self.guard: 0 if active else 100, **values}))
        ns = int(self.clock.now * 1e9) if at_ns is None else at_ns
        out = self.engine.evaluate(CabinetReading("c1", "s1", "m", ns, slots=objs, **cabinet))
        self.clock.advance(self.step)
        got: dict[int, float | None] = dict.fromkeys(range(1, len(slots) + 1))
        for t in out:
            got[t.target.slot] = t.value
        # "no value" is an answer of the input, never an input that raised (counted as "(input)")
        assert self.registry.get_sample_value("cascade_rule_errors_total", {"rule": "(input)"}) is None
        return got

    def series(self, field: str, values: list, **kw) -> list[float | None]:
        return [self.read({field: v}, **kw)[1] for v in values]


def test_a_field_input_reads_numbers_and_treats_garbage_as_missing() -> None:
    probe = Probe("{field: temperature_c}")
    assert probe.series("temperature_c", [41.5, None, float("nan"), float("inf"), "x", 7, True]) == [
        41.5, None, None, None, None, 7.0, 1.0]


def test_a_ratio_input_divides_and_has_no_value_without_a_divisor() -> None:
    probe = Probe("{field: charge_current_a, per: max_charge_current_a}")
    got = [probe.read({"charge_current_a": a, "max_charge_current_a": b})[1]
           for a, b in [(6.0, 4.0), (6.0, 0.0), (6.0, None), (None, 4.0), (-3.0, 4.0)]]
    assert got == [1.5, None, None, None, -0.75]


def test_a_delta_input_is_the_first_field_minus_the_second() -> None:
    probe = Probe("{delta: [cell_voltage_max_v, cell_voltage_min_v]}")
    got = [probe.read({"cell_voltage_max_v": a, "cell_voltage_min_v": b})[1]
           for a, b in [(3.5, 3.25), (3.25, 3.5), (None, 3.0), (3.0, None)]]
    assert got == [0.25, -0.25, None, None]


def test_a_bool_and_a_flag_input_read_one_or_zero() -> None:
    probe = Probe("{bool: output_enabled}")
    assert probe.series("output_enabled", [True, False, None, 1]) == [1.0, 0.0, None, 1.0]
    flag = Probe("{flag: bms_protection, mask: [UNDER_VOLTAGE]}")
    from core.model import BmsProtection

    under, over = int(BmsProtection.UNDER_VOLTAGE), int(BmsProtection.OVER_VOLTAGE)
    assert flag.series("bms_protection", [under, under | over, 0, 0xFFFF & ~under, None, "x"]) == [
        1.0, 1.0, 0.0, 0.0, None, None]  # its bit, with others, none, all others, no value, garbage


def test_a_baseline_of_the_cabinet_temperature_is_subtracted_and_needed() -> None:
    probe = Probe("{field: temperature_c, minus: cabinet_temperature_c}")
    assert probe.read({"temperature_c": 41.0}, cabinet_temperature_c=25.5) == {1: 15.5}
    assert probe.read({"temperature_c": 41.0}, cabinet_temperature_c=None) == {1: None}  # no baseline: no value
    assert probe.read({"temperature_c": None}, cabinet_temperature_c=25.0) == {1: None}


def test_the_lowest_other_slot_is_the_baseline_and_a_lone_slot_is_absolute() -> None:
    probe = Probe("{field: h2_ppm, minus: cabinet_min}")
    got = probe.read({"h2_ppm": 50.0}, {"h2_ppm": 20.0}, {"h2_ppm": 30.0}, {"h2_ppm": None})
    # slot 2 is the lowest: compared with the second lowest (30); the others with slot 2 (20)
    assert got == {1: 30.0, 2: -10.0, 3: 10.0, 4: None}
    probe = Probe("{field: h2_ppm, minus: cabinet_min}")
    assert probe.read({"h2_ppm": 50.0}, {"h2_ppm": None}) == {1: 50.0, 2: None}  # nobody to compare with
    probe = Probe("{field: h2_ppm, minus: cabinet_min}")
    assert probe.read({"h2_ppm": 20.0}, {"h2_ppm": 20.0}) == {1: 0.0, 2: 0.0}


def test_jump_values_at_the_gap_limit() -> None:
    probe = Probe("{jump: voltage_v}")
    t = 1_700_000_000
    got = [probe.read({"voltage_v": v}, at_ns=s * 10**9)[1]
           for v, s in [(40, t), (45, t + 30), (35, t + 210), (50, t + 391), (60, t + 390), (58, t + 420),
                        (57, t + 420)]]
    # first: nothing before it; 30 s and 180 s apart count (either direction, as a size); 181 s apart
    # does not; a reading older than the one before does not; the next one counts from it again, and
    # one with the same time stamp too
    assert got == [None, 5.0, 10.0, None, None, 2.0, 1.0]


def test_a_jump_starts_afresh_when_the_pack_leaves_and_an_empty_slot_is_no_error() -> None:
    from core.model import BatteryState

    empty = {"battery_state": int(BatteryState.EMPTY), "voltage_v": None}
    probe = Probe("{jump: voltage_v}")
    assert probe.read(empty) == {1: None}  # empty from the start: nothing to forget, and no input error
    got = [probe.read(values)[1] for values in ({"voltage_v": 40}, {"voltage_v": 45}, empty, empty,
                                                {"voltage_v": 60}, {"voltage_v": 62})]
    # the next pack's first value is no step from the last one's 45 (it would be a jump of 15)
    assert got == [None, 5.0, None, None, None, 2.0]
    compartment = Probe("{jump: surface_temperature_c}", guard="h2_ppm")  # a compartment rule
    got = [compartment.read({"surface_temperature_c": v, "battery_state": int(BatteryState.EMPTY)})[1]
           for v in (30.0, 34.0)]
    assert got == [None, 4.0]  # the compartment's own sensor keeps its history with no pack


def test_an_upward_jump_counts_increases_only() -> None:
    probe = Probe("{jump: valve_acoustic_events, direction: up}")
    assert probe.series("valve_acoustic_events", [3, 5, 2, 2, None, 4]) == [None, 2.0, 0.0, 0.0, None, 2.0]


def test_a_lost_sensor_is_one_that_reported_before_and_an_empty_slot_loses_no_pack_sensor() -> None:
    from core.model import BatteryState

    probe = Probe("{lost: temperature_c}", guard="surface_temperature_c")
    got = probe.series("temperature_c", [None, 30.0, None, None, 31.0])
    assert got == [None, 0.0, 1.0, 1.0, 0.0]  # never seen: no value; seen: 0; gone: 1 until it reports again
    assert probe.read({"battery_state": int(BatteryState.EMPTY)}) == {1: None}  # no pack: no pack sensor to lose
    assert probe.read({"battery_state": int(BatteryState.EMPTY)}) == {1: None}  # and still none
    assert probe.series("temperature_c", [None, None]) == [None, None]  # the next pack starts afresh
    compartment = Probe("{lost: h2_ppm}", guard="surface_temperature_c")
    got = [compartment.read({"h2_ppm": v, "battery_state": int(BatteryState.EMPTY)})[1] for v in (0.5, None)]
    assert got == [0.0, 1.0]  # the compartment's own sensor is lost with or without a pack


def _rounded(values: list[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 9) for v in values]


def test_a_rate_is_the_median_of_pairwise_slopes_per_minute_over_its_window() -> None:
    """Theil-Sen over the last 120 s, once the samples span half of it: all pairs up to 10 samples, pairs
    half the window apart beyond. The spike (30 at 30 s) moves the median only a little."""
    probe = Probe("{rate_of: temperature_c, window: 120s}", step=10)
    got = probe.series("temperature_c", [0, 1, 2, 30, 4, 5, 7, 9, 12, 16, 20, 25, 31, 38, 46])
    assert got[:6] == [None] * 6  # under 60 s of samples
    assert got[6:] == pytest.approx([6.0, 6.5, 7.607142857142857, 9.0, 7.8, 9.0, 10.0, 16.0, 20.0], rel=1e-12)


def test_a_rate_needs_three_samples_and_starts_afresh_when_the_clock_goes_back() -> None:
    probe = Probe("{rate_of: temperature_c, window: 20s}", step=0)
    seen = []
    for at, v in [(0, 0.0), (10, 1.0), (20, 2.0), (20, 4.0), (15, 5.0), (25, 6.0), (35, 7.0)]:
        probe.clock.now = 1000.0 + at
        seen.append(probe.read({"temperature_c": v})[1])
    # two samples 10 s apart are not a rate; a second sample at the same time replaces the first;
    # time going back empties the window
    assert _rounded(seen) == [None, None, 6.0, 12.0, None, None, 6.0]


def test_a_rate_window_keeps_the_sample_exactly_one_window_old() -> None:
    probe = Probe("{rate_of: temperature_c, window: 20s}", step=10)
    assert _rounded(probe.series("temperature_c", [0.0, 5.0, 6.0, 7.0])) == [None, None, 18.0, 6.0]


def test_a_rate_over_fast_polls_keeps_few_samples_and_the_right_slope() -> None:
    """Polled every second (the safety fast lane), a 160 s window keeps about a sample per 10 s (window/16)
    plus the newest, as (time, value) pairs: a linear ramp reads its own slope whichever samples are kept,
    and the window's memory stays small however fast the polls."""
    probe = Probe("{rate_of: temperature_c, window: 160s}", step=1)
    got = probe.series("temperature_c", [25.0 + 0.05 * n for n in range(400)])  # 3 °C/min
    assert got[:79] == [None] * 79 and got[80] is not None  # from half the window on
    assert _rounded(got[80:]) == [3.0] * 320
    (state,) = probe.engine._targets.values()
    (buf,) = state.buffers.values()
    assert len(buf) % 2 == 0 and len(buf) <= 2 * 18  # pairs; 16 per window, the newest, the window's edge



def test_a_rate_whose_samples_all_age_out_at_once_starts_afresh() -> None:
    """A sensor silent for longer than the window: every kept sample is too old at once, all are dropped
    in one reading (not one per reading), and the rate starts afresh from the new samples."""
    probe = Probe("{rate_of: temperature_c, window: 60s}", step=0)
    seen = []
    for at, v in [(0, 20.0), (10, 21.0), (20, 22.0), (30, 23.0), (600, 40.0), (610, 40.5), (620, 41.0),
                  (630, 41.5)]:
        probe.clock.now = 1000.0 + at
        seen.append(probe.read({"temperature_c": v})[1])
    assert _rounded(seen) == [None, None, None, 6.0, None, None, None, 3.0]
    (state,) = probe.engine._targets.values()
    (buf,) = state.buffers.values()
    assert list(buf[0::2]) == [1600.0, 1610.0, 1620.0, 1630.0]  # only the new samples


# -- fusion: evidence text and holds (alerting/engine.py: Engine._fuse) ---------------------------------------------

def _fusion_engine(language: str = "en") -> tuple[Engine, ManualClock]:
    clock = ManualClock(T0)
    rules = parse_rules(FUSION.replace('diagnosis: "{value}"', 'diagnosis: "{evidence}"'))
    return Engine(rules, clock=clock, language=language), clock


def _fusion_read(engine: Engine, clock: ManualClock, **values) -> list[tuple]:
    clock.advance(30)
    slot = SlotReading(1, battery_id="B1", **values)
    return [(clock.now - T0, t.kind, t.to_level, round(t.value, 6), t.diagnosis)
            for t in engine.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=[slot]))]


def test_the_fusion_evidence_names_each_contributing_term_with_its_value_and_share() -> None:
    engine, clock = _fusion_engine()
    assert _fusion_read(engine, clock, h2_ppm=200.1234, valve_acoustic_events=1, voc_ppm=0.0) == [
        (30.0, "raise", 3, 1.500617, "h2_ppm=200.123 (0.50); valve_acoustic_events=1.0 (1.00)")]
    # the event counter no longer reports: its held strength is still evidence, with no value
    assert _fusion_read(engine, clock, h2_ppm=0.0, voc_ppm=0.0) == [
        (60.0, "deescalate", 2, 1.0, "valve_acoustic_events=None (1.00)")]


def test_a_fusion_rule_with_no_term_reporting_decides_nothing() -> None:
    engine, clock = _fusion_engine()
    assert _fusion_read(engine, clock, h2_ppm=400.0) == [(30.0, "raise", 2, 1.0, "h2_ppm=400.0 (1.00)")]
    assert _fusion_read(engine, clock) == []  # no term has a value: stale data, the level stays
    assert engine.state.worst_level() == 2
    assert _fusion_read(engine, clock, voc_ppm=0.0) == [  # one term at 0 is data: it clears
        (90.0, "clear", 0, 0.0, "Cleared: fused evidence back within limits (value 0).")]


def test_a_repeated_momentary_event_is_held_from_its_latest_occurrence() -> None:
    """Two valve events 30 s apart with a 60 s hold: the evidence lasts 60 s after the second one.
    (The hold used to run from the first of equally strong events, dropping a recent event early.)"""
    engine, clock = _fusion_engine()
    seen = []
    for events in (1, 1, 0, 0, 0):
        seen += [(at, kind, level) for at, kind, level, *_ in _fusion_read(engine, clock, valve_acoustic_events=events,
                                                                           voc_ppm=0.0)]
    assert seen == [(30.0, "raise", 2), (150.0, "clear", 0)]


def test_a_weaker_event_within_the_hold_does_not_replace_the_stronger_one() -> None:
    engine, clock = _fusion_engine()
    seen = []
    for events in (1, 0.5, 0):
        seen += [(at, kind, level, value) for at, kind, level, value, _ in
                 _fusion_read(engine, clock, valve_acoustic_events=events, voc_ppm=0.0)]
    assert seen == [(30.0, "raise", 2, 1.0)]  # 1.0 held at 60 s and 90 s, not lowered to 0.5


# -- stored alerts the rules can no longer evaluate (alerting/engine.py: Engine._reconcile, _retired) --------------

RETIRED_ACTION = ("None for the retired alert. If the condition may persist, check the site: the current rules raise "
                  "it again from live data.")


def test_each_kind_of_stored_alert_the_rules_cannot_evaluate_is_cleared_with_its_reason(tmp_path: Path,
                                                                                        caplog) -> None:
    from alerting.state import AlertStore, Target

    path = tmp_path / "alerts.json"
    clock = ManualClock()
    before = _rules(_rule("{1: 45, 2: 55, 3: 70}", rid="hot"),
                    _rule("{3: 1}", rid="wet", scope="cabinet", input="{bool: water_detected}"),
                    _rule("{1: 45}", rid="gone", input="{field: voltage_v}"),
                    _rule("{1: 10}", rid="kept", input="{field: soc_pct}", extra='compare: "<"'))
    engine = Engine(before, clock=clock, state=AlertStore(path), language="en")
    engine.evaluate(CabinetReading("c1", "s1", "m", 0, slots=[
        SlotReading(1, battery_id="B1", temperature_c=80, voltage_v=50, soc_pct=5)], water_detected=True))
    clock.advance(60)
    after = _rules(_rule("{1: 45, 2: 55}", rid="hot"),
                   _rule("{3: 1}", rid="wet", scope="slot", input="{bool: output_enabled}"),
                   _rule("{1: 10}", rid="kept", input="{field: soc_pct}", extra='compare: "<"'))
    restarted = Engine(after, clock=clock, state=AlertStore(path), language="en")
    got = {t.rule: t for t in restarted.startup_transitions}
    assert sorted(got) == ["gone", "hot", "wet"]
    why = {"hot": "rule 'hot' no longer has level 3 (it has 1, 2)", "wet": "rule 'wet' is now a slot-scope rule",
           "gone": "rule 'gone' is no longer in the catalogue"}
    where = {"hot": "s1/c1 slot 1", "wet": "s1/c1", "gone": "s1/c1 slot 1"}
    for rule, t in got.items():
        level = {"hot": 3, "wet": 3, "gone": 1}[rule]
        slot = None if rule == "wet" else 1
        battery = None if rule == "wet" else "B1"
        diagnosis = f"Cleared at start-up: {why[rule]}; the alert can no longer be evaluated."
        assert (t.kind, t.from_level, t.to_level, t.value, t.at, t.protective_action) == (
            "clear", level, 0, None, clock.now, None)
        assert t.target == Target("s1", "c1", slot, battery)
        assert (t.diagnosis, t.action) == (diagnosis, RETIRED_ACTION)
        assert t.annotations == {"summary": f"Cleared L{level} {rule} at {where[rule]} (rule changed)",
                                 "diagnosis": diagnosis, "action": RETIRED_ACTION}
        assert t.labels["level"] == str(level) and t.labels["rule"] == rule
        assert f"stored alert {t.key} L{level} cleared at start-up: {why[rule]}" in caplog.messages
    assert [str(a.key) for a in AlertStore(path).active()] == ["kept@s1/c1/1"]
    assert [str(a.key) for a in restarted.state.active()] == ["kept@s1/c1/1"]


# -- what a transition says (alerting/engine.py: Engine._transition, render_annotations) ---------------------------

def test_a_cleared_alert_says_what_came_back_and_names_an_unknown_battery() -> None:
    rules = _rules(_rule("{1: 45, 2: 55}", rid="hot", diagnosis="hot {value} over {threshold} at {slot}, {battery}",
                         action="Level 1: watch {battery}. Level 2: stop slot {slot}.",
                         extra="unit: °C\nname: Hot pack"))
    clock = ManualClock()
    engine = Engine(rules, clock=clock, language="en")

    def read(value: float) -> list:
        clock.advance(30)
        return engine.evaluate(CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(4, temperature_c=value)]))

    [raised] = read(56.0)
    assert raised.annotations == {"summary": "L2 Hot pack 56 °C at s1/c1 slot 4",
                                  "diagnosis": "hot 56.0 over 55.0 at 4, (unknown)", "action": "Stop slot 4."}
    assert raised.target.battery is None and "battery" not in raised.labels
    [down] = read(50.0)
    assert (down.kind, down.annotations["summary"], down.annotations["action"]) == (
        "deescalate", "L1 Hot pack 50 °C at s1/c1 slot 4", "Watch (unknown).")
    [cleared] = read(40.0)
    assert cleared.annotations == {"summary": "L1 Hot pack 40 °C at s1/c1 slot 4",
                                   "diagnosis": "Cleared: Hot pack back within limits (40 °C).",
                                   "action": "Watch (unknown)."}
    assert cleared.protective_action is None and cleared.labels["level"] == "1"


def test_only_a_raise_or_an_escalation_asks_for_the_levels_protective_action() -> None:
    rules = _rules(_rule("{1: 45, 2: {value: 55, protective_action: stop_charging}, "
                         "3: {value: 70, protective_action: slot_cutoff}}", rid="hot"))
    slot = Slot(rules)
    got = []
    for value in (56, 71, 60, 40):
        reading = CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(1, temperature_c=value)])
        got += [(t.kind, t.protective_action, t.labels["level"]) for t in slot.engine.evaluate(reading)]
    assert got == [("raise", "stop_charging", "2"), ("escalate", "slot_cutoff", "3"), ("deescalate", None, "2"),
                   ("clear", None, "2")]


def test_the_fusion_evidence_in_chinese_names_the_terms_in_chinese() -> None:
    clock = ManualClock(T0)
    engine = Engine(load_rules().only(["thermal_runaway"]), clock=clock)
    slots = [SlotReading(1, battery_id="B1", h2_ppm=300.0, voc_ppm=150.0), SlotReading(2, h2_ppm=0.0, voc_ppm=0.0)]
    english = Engine(load_rules().only(["thermal_runaway"]), clock=clock, language="en")
    assert engine.evaluate(CabinetReading("c1", "s1", "m", int(T0 * 1e9), slots=slots)) == []
    assert english.evaluate(CabinetReading("c1", "s1", "m", int(T0 * 1e9), slots=slots)) == []
    clock.advance(20)
    [t] = engine.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=slots))
    assert t.to_level == 2 and "h2_ppm" not in t.diagnosis and "(0.45)" in t.diagnosis
    [t] = english.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=slots))
    assert "h2_ppm − lowest other slot=300.0 (0.45); voc_ppm − lowest other slot=150.0 (0.45)" in t.diagnosis


# -- what a reading brings (alerting/engine.py: Engine.evaluate) ---------------------------------------------------

def test_a_different_pack_in_the_slot_starts_its_rates_afresh() -> None:
    probe = Probe("{rate_of: temperature_c, window: 20s}", step=10)
    got = [probe.read({"temperature_c": v, "battery_id": b})[1]
           for v, b in [(10.0, "A"), (11.0, "A"), (12.0, "A"), (40.0, "B"), (41.0, "B"), (42.0, "B")]]
    assert _rounded(got) == [None, None, 6.0, None, None, 6.0]  # no 28 °C "rise" from A to B


def test_garbage_chemistry_falls_back_to_the_base_thresholds_and_a_real_one_gets_its_override() -> None:
    rules = _rules(_rule("{1: 45}", extra="overrides:\n  - chemistry: [LFP]\n    levels: {1: 40}"))
    got = {}
    for chem in (None, "LFP", 1.0, 1):
        slot = Slot(rules)
        got[repr(chem)] = slot.read(temperature_c=42, chemistry=chem)
    assert got == {"None": [], "'LFP'": [], "1.0": [], "1": [("raise", 0, 1, 42.0)]}


def test_an_empty_slot_keeps_its_compartment_sensors_only() -> None:
    from core.model import BatteryState

    rules = _rules(_rule("{1: 45}", rid="hot"), _rule("{1: 100}", rid="gas", input="{field: h2_ppm}"),
                   _rule("{1: 50}", rid="low", input="{field: voltage_v}", extra='compare: "<"'))
    slot = Slot(rules)
    reading = CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(
        1, battery_state=int(BatteryState.EMPTY), temperature_c=80.0, voltage_v=0.0, h2_ppm=150.0)])
    assert [(t.rule, t.target.slot, t.target.battery) for t in slot.engine.evaluate(reading)] == [("gas", 1, None)]


def test_a_vehicle_report_without_a_pack_id_keeps_the_pack_it_named_before() -> None:
    from collectors.vehicles.watch import as_engine_reading
    from core.model import VehicleReading

    clock = ManualClock(T0)
    engine = Engine(load_rules().only(["report_overdue"]), clock=clock)
    named = VehicleReading("V1", "bj", 0, battery=SlotReading(1, battery_id="P9"), report_gap_intervals=1.0)
    assert engine.evaluate(as_engine_reading(named)) == []
    anonymous = VehicleReading("V1", "bj", 0, battery=SlotReading(1), report_gap_intervals=4.0)
    [t] = engine.evaluate(as_engine_reading(anonymous))
    assert (t.rule, t.target, t.labels["battery"]) == ("report_overdue", Target("bj", "V1", None, "P9"), "P9")


# -- run-time thresholds (alerting/engine.py: Engine.set_threshold) ------------------------------------------------

def test_a_threshold_change_needs_a_person_given_as_text() -> None:
    engine = Engine(load_rules(), clock=ManualClock())
    for who in (None, 5, ""):
        with pytest.raises(ValueError, match="set_threshold needs who"):
            engine.set_threshold("over_temperature", 2, 61, who=who, reason="r")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="set_threshold needs reason"):
        engine.set_threshold("over_temperature", 2, 61, who="x", reason=None)  # type: ignore[arg-type]


def test_a_threshold_change_that_cannot_be_audited_is_not_applied(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    engine = Engine(load_rules(), clock=ManualClock(), audit_path=tmp_path / "file" / "audit.jsonl")  # cannot exist
    with pytest.raises(OSError):
        engine.set_threshold("over_temperature", 2, 61, who="x", reason="r")
    assert engine.rules["over_temperature"].levels[1].threshold == 55 and engine.audit == []


def test_a_threshold_change_applies_to_the_next_reading_and_is_written_as_a_float(tmp_path: Path) -> None:
    audit = tmp_path / "sub" / "audit.jsonl"  # the directory is created
    slot = Slot(_rules(_rule("{1: 45, 2: 55}", rid="hot")), audit_path=audit)
    entry = slot.engine.set_threshold("hot", 1, 50, who="a", reason="b")
    assert entry["new"] == 50.0 and type(entry["new"]) is float and entry["old"] == 45.0
    assert json.loads(audit.read_text(encoding="utf-8")) == entry
    assert slot.read(temperature_c=48) == []
    assert slot.read(temperature_c=50) == [("raise", 0, 1, 50.0)]
    slot.engine.set_threshold("hot", 2, 49.5 + 10, who="a", reason="ü")
    assert json.loads(audit.read_text(encoding="utf-8").splitlines()[1])["reason"] == "ü"
    assert "\\u00fc" not in audit.read_text(encoding="utf-8")  # readable, not escaped


def test_each_held_term_keeps_its_own_hold() -> None:
    """Two momentary terms with holds: one's event is not the other's evidence."""
    rules = parse_rules(FUSION.replace("{input: {field: voc_ppm}, start: 0, full: 10, weight: 1}",
                                       "{input: {field: voc_ppm}, start: 0, full: 10, weight: 1, hold: 60s}"))
    clock = ManualClock(T0)
    engine = Engine(rules, clock=clock)
    slot = SlotReading(1, battery_id="B1", valve_acoustic_events=1, voc_ppm=0.0)
    [t] = engine.evaluate(CabinetReading("c1", "s1", "m", int(T0 * 1e9), slots=[slot]))
    assert (t.to_level, t.value) == (2, 1.0)


def test_a_rule_sharing_a_target_with_another_keeps_its_own_hold() -> None:
    other = FUSION.replace("id: runaway", "id: other").replace("rules:\n", "")
    rules = parse_rules(FUSION + other.replace("{input: {field: valve_acoustic_events}, start: 0, full: 1, weight: 1, "
                                               "hold: 60s}", "{input: {field: module_pressure_kpa}, start: 0, full: 1, weight: 1, "
                                               "hold: 60s}"))
    clock = ManualClock(T0)
    engine = Engine(rules, clock=clock)
    got = []
    for values in ({"valve_acoustic_events": 1, "module_pressure_kpa": 0.0},
                   {"valve_acoustic_events": 0, "module_pressure_kpa": 0.0}):
        slot = SlotReading(1, battery_id="B1", voc_ppm=0.0, **values)
        got += [(t.rule, t.to_level) for t in engine.evaluate(CabinetReading("c1", "s1", "m", 0, slots=[slot]))]
        clock.advance(30)
    assert got == [("runaway", 2)]  # the valve event held for runaway is no evidence for the other rule


def test_a_level_the_table_no_longer_has_is_shown_without_a_threshold() -> None:
    from alerting.state import AlertStore

    def hot(levels: str):
        return _rules(_rule(levels, rid="hot", diagnosis="{value} over {threshold}", action="act at {threshold}"))

    clock = ManualClock()
    [raised] = Engine(hot("{1: 45, 2: 55, 3: 70}"), clock=clock).evaluate(CabinetReading("c1", "s1", "m", 0, slots=[
        SlotReading(1, battery_id="B1", temperature_c=80)]))
    engine = Engine(hot("{1: 45, 2: 55}"), clock=clock, language="en", state=AlertStore())
    engine.state.apply([raised])  # after start-up: resumed as it is
    [t] = engine.evaluate(CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(1, battery_id="B1", temperature_c=60)]))
    assert (t.kind, t.from_level, t.to_level, t.protective_action) == ("deescalate", 3, 2, None)
    assert (t.diagnosis, t.action) == ("60.0 over 55.0", "act at 55.0")
    engine = Engine(hot("{1: 45, 2: 55}"), clock=clock, language="en", state=AlertStore())
    engine.state.apply([raised])
    [t] = engine.evaluate(CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(1, battery_id="B1", temperature_c=20)]))
    assert (t.kind, t.labels["level"], t.action) == ("clear", "3", "act at -")


def test_a_field_without_two_values_does_not_cost_another_field_its_baseline() -> None:
    rules = _rules(_rule('{1: {value: -1000000000000, compare: ">"}}', rid="h2", input="{field: h2_ppm, minus: cabinet_min}"),
                   _rule('{1: {value: -1000000000000, compare: ">"}}', rid="voc",
                         input="{field: voc_ppm, minus: cabinet_min}"))
    engine = Engine(rules, clock=ManualClock())
    out = engine.evaluate(CabinetReading("c1", "s1", "m", 0, slots=[
        SlotReading(1, h2_ppm=50.0, voc_ppm=30.0), SlotReading(2, voc_ppm=10.0)]))
    assert sorted((t.rule, t.target.slot, t.value) for t in out) == [
        ("h2", 1, 50.0),  # alone: absolute
        ("voc", 1, 20.0), ("voc", 2, -20.0)]  # relative to the other slot


def test_a_plain_rule_shows_no_fusion_evidence() -> None:
    plain = _rule("{1: 45}", rid="hot", diagnosis="[{evidence}]")
    rules = parse_rules(FUSION + plain)
    clock = ManualClock(T0)
    engine = Engine(rules, clock=clock, language="en")
    slot = SlotReading(1, battery_id="B1", h2_ppm=400.0, temperature_c=50.0)
    out = {t.rule: t.diagnosis for t in engine.evaluate(CabinetReading("c1", "s1", "m", 0, slots=[slot]))}
    assert out == {"runaway": "1.0", "hot": "[]"}


def test_a_clear_delay_of_one_second_is_a_delay() -> None:
    tick = ManualClock(100.0)
    slot = Slot(_rules(_rule("{1: 45}", extra="clear_for: 1s")), elapsed=tick)
    seen = []
    for at, value in [(0, 50), (1, 40), (1.5, 40), (1.99, 40), (2, 40)]:
        tick.now = 100.0 + at
        seen.append(slot.read(temperature_c=value))
    assert seen == [[("raise", 0, 1, 50.0)], [], [], [], [("clear", 1, 0, 40.0)]]


def test_a_vehicle_reading_without_its_report_runs_no_vehicle_rule_and_counts_no_error() -> None:
    from prometheus_client import CollectorRegistry

    from core.model import VEHICLE_MODEL

    registry = CollectorRegistry()
    engine = Engine(load_rules().only(["report_overdue", "over_temperature"]), clock=ManualClock(), registry=registry)
    pack_only = CabinetReading("V1", "bj", VEHICLE_MODEL, 0, slots=[SlotReading(1, battery_id="P1", temperature_c=20.0)])
    assert engine.evaluate(pack_only) == []
    assert registry.get_sample_value("cascade_rule_errors_total", {"rule": "(input)"}) in (None, 0.0)


def test_a_model_override_applies_to_slots_of_that_cabinet_model_only() -> None:
    rules = _rules(_rule("{1: 45}", extra="overrides:\n  - model: [tropic-s1]\n    levels: {1: 40}"))
    tropic, other = Slot(rules, model="tropic-s1"), Slot(rules, model="arctic-a1")
    assert tropic.read(temperature_c=42) == [("raise", 0, 1, 42.0)]
    assert other.read(temperature_c=42) == []


def test_an_input_that_raises_is_logged_with_the_place_it_failed_at(caplog) -> None:
    engine = Engine(_rules(_rule("{1: 45}", rid="hot"), _rule("{3: 1}", rid="wet", scope="cabinet",
                                                              input="{bool: water_detected}")), clock=ManualClock())

    def broken_slot(obj, ts, now):
        raise ZeroDivisionError("input bug")

    def broken_cabinet(obj, ts, now):
        raise ZeroDivisionError("input bug")

    engine._program.scopes["slot"][0][0] = broken_slot  # this engine's compiled inputs only
    engine._program.scopes["cabinet"][0][0] = broken_cabinet
    engine.evaluate(CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(4, temperature_c=50.0)], water_detected=True))
    assert [r.getMessage() for r in caplog.records if "an input of the rules failed" in r.getMessage()] == [
        "an input of the rules failed at c1/4; its rules see missing data (logged once per input)",
        "an input of the rules failed at c1; its rules see missing data (logged once per input)"][::-1]


def test_a_vehicle_rule_on_a_rate_measures_it_on_the_steady_clock() -> None:
    from collectors.vehicles.watch import as_engine_reading
    from core.model import VehicleReading

    rules = _rules(_rule("{1: 0.5}", rid="climb", scope="vehicle", input="{rate_of: odometer_km, window: 60s}"))
    clock = ManualClock(T0)
    engine = Engine(rules, clock=clock)
    got = []
    for km in (10.0, 10.25, 10.5, 10.75):
        got += [(t.kind, t.value) for t in engine.evaluate(as_engine_reading(
            VehicleReading("V1", "bj", int(clock.now * 1e9), odometer_km=km)))]
        clock.advance(15)
    assert got == [("raise", 1.0)]  # 0.25 km every 15 s: 1 km/min, once 30 s of reports are there


def test_two_change_inputs_on_one_slot_each_check_their_own_gap() -> None:
    rules = _rules(_rule('{1: {value: -1, compare: ">"}}', rid="soc", input="{jump: soc_pct}"),
                   _rule('{1: {value: -1, compare: ">"}}', rid="volts", input="{jump: voltage_v}"))
    engine = Engine(rules, clock=ManualClock())
    t = 1_700_000_000
    for at in (t, t + 500):  # 500 s apart: neither is a change between consecutive readings
        out = engine.evaluate(CabinetReading("c1", "s1", "m", at * 10**9, slots=[
            SlotReading(1, soc_pct=50.0 + at - t, voltage_v=40.0 + at - t)]))
        assert out == []


def test_a_vehicle_sensor_that_stops_reporting_is_lost() -> None:
    from collectors.vehicles.watch import as_engine_reading
    from core.model import VehicleReading

    rules = _rules(_rule("{1: 1}", rid="speed_lost", scope="vehicle", input="{lost: speed_kmh}"))
    engine = Engine(rules, clock=ManualClock())
    got = [[(t.kind, t.value) for t in engine.evaluate(as_engine_reading(VehicleReading("V1", "bj", 0, speed_kmh=v)))]
           for v in (12.0, None)]
    assert got == [[], [("raise", 1.0)]]


def test_a_stored_rule_failure_notice_and_a_retired_alert_are_both_cleared_at_start_up(tmp_path: Path,
                                                                                       monkeypatch, caplog) -> None:
    from alerting.engine import RULE_FAILED
    from alerting.state import AlertStore

    caplog.set_level("INFO", "alerting.engine")
    path = tmp_path / "alerts.json"
    clock = ManualClock()
    rules = _rules(_rule("{1: 45}", rid="hot"), _rule("{1: 45}", rid="zz_gone", input="{field: voltage_v}"))
    engine = Engine(rules, clock=clock, state=AlertStore(path), language="en")
    real = engine._transition

    def broken(c, *args):
        if c.id == "hot":
            raise ZeroDivisionError("bug")
        return real(c, *args)

    monkeypatch.setattr(engine, "_transition", broken)
    engine.evaluate(CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(2, battery_id="B7", temperature_c=50.0)]))
    engine.evaluate(CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(2, battery_id="B7", voltage_v=50.0)]))
    assert [a.key.rule for a in AlertStore(path).active()] == [RULE_FAILED, "zz_gone"]
    clock.advance(60)
    restarted = Engine(_rules(_rule("{1: 45}", rid="hot")), clock=clock, state=AlertStore(path), language="en")
    got = [(t.rule, t.kind, t.target, t.at) for t in restarted.startup_transitions]
    assert got == [(RULE_FAILED, "clear", Target("s1", "c1", 2, "B7"), clock.now),
                   ("zz_gone", "clear", Target("s1", "c1", 2, "B7"), clock.now)]
    assert restarted.startup_transitions[0].diagnosis == (
        "Cleared at start-up: rule failures are re-checked from scratch after a restart; a rule that still fails "
        "raises it again on its first reading.")
    key = restarted.startup_transitions[0].key
    assert f"stored alert {key} cleared at start-up: rules are re-checked from scratch" in caplog.messages


def test_a_stored_vehicle_command_alert_is_left_alone_and_the_alerts_after_it_are_still_reconciled(
        tmp_path: Path) -> None:
    """The command alert (cascade/commands.py) is not a catalogue rule: the start-up reconciliation passes
    over it, and goes on to the stored alerts after it (it sorts first: level 3)."""
    from alerting.engine import Transition
    from alerting.state import AlertStore
    from alerting.vehicle_commands import COMMAND_UNACKNOWLEDGED

    path = tmp_path / "alerts.json"
    clock = ManualClock()
    store = AlertStore(path)
    store.apply([Transition(rule=COMMAND_UNACKNOWLEDGED, target=Target("bj", "V1", None, None), from_level=0,
                            to_level=3, kind="raise", value=None, at=clock.now, diagnosis="", action="",
                            protective_action=None, labels={"alertname": COMMAND_UNACKNOWLEDGED, "level": "3"},
                            annotations={})])
    engine = Engine(_rules(_rule("{1: 45}", rid="gone", input="{field: voltage_v}")), clock=clock, state=store,
                    language="en")
    engine.evaluate(CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(1, battery_id="B1", voltage_v=50)]))
    assert [a.key.rule for a in AlertStore(path).active()] == [COMMAND_UNACKNOWLEDGED, "gone"]
    restarted = Engine(_rules(_rule("{1: 45}", rid="hot")), clock=clock, state=AlertStore(path), language="en")
    assert [(t.rule, t.kind) for t in restarted.startup_transitions] == [("gone", "clear")]
    assert [a.key.rule for a in AlertStore(path).active()] == [COMMAND_UNACKNOWLEDGED]
