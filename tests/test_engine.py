"""Engine behaviour: transitions and labels, stale data, `for`, rates, jumps, fusion vs single
sensors (P-3.3, P-5.2.2.2), run-time thresholds with audit (P-5.4.4), and robustness."""

from __future__ import annotations

import json
import logging
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from alerting.engine import RULE_FAILED, Engine
from alerting.replay import replay
from alerting.rules import RuleError, load_rules
from alerting.state import AlertStore, Target
from bench import tracegen as traces
from core.model import SLOT_FIELDS, CabinetReading, SlotReading
from tests.fixtures.clock import T0, ManualClock

CATALOGUE = load_rules()


def cab(*slots: SlotReading, **cabinet) -> CabinetReading:
    return CabinetReading("c1", "s1", "SC-12", 0, slots=list(slots), **cabinet)


def feed(engine, clock, readings, step=30.0):
    out = []
    for r in readings:
        out += engine.evaluate(r)
        clock.now += step
    return out


def test_transition_carries_labels_annotations_and_protective_action():
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["over_temperature"]), clock=clock)
    out = feed(engine, clock, [cab(SlotReading(3, battery_id="B9", temperature_c=75))] * 2)
    assert len(out) == 1
    t = out[0]
    assert (t.rule, t.kind, t.from_level, t.to_level, t.value, t.at) == (
        "over_temperature", "raise", 0, 3, 75.0, T0 + 30)
    assert (t.target.site, t.target.cabinet, t.target.slot, t.target.battery) == ("s1", "c1", 3, "B9")
    assert t.labels == {"alertname": "over_temperature", "rule": "over_temperature", "level": "3",
                        "severity": "critical", "site": "s1", "cabinet": "c1", "slot": "3", "battery": "B9"}
    assert set(t.annotations) == {"summary", "diagnosis", "action"}
    # Simplified Chinese by default: level, what with value and unit, where; the level-3 part of the action.
    assert t.annotations["summary"] == "L3 电池温度过高 75.0 °C（s1/c1 3号仓）"
    assert "75.0 °C" in t.diagnosis and t.action == "切断该仓输出，人员远离，检查电池 B9。"
    assert t.annotations["diagnosis"] == t.diagnosis and t.annotations["action"] == t.action
    assert t.protective_action == "slot_cutoff"
    assert str(t.key) == "over_temperature@s1/c1/3"


def test_alert_texts_in_english_by_option():
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["over_temperature"]), clock=clock, language="en")
    [t] = feed(engine, clock, [cab(SlotReading(3, battery_id="B9", temperature_c=75))] * 2)
    assert t.annotations == {
        "summary": "L3 Battery over-temperature 75.0 °C at s1/c1 slot 3",
        "diagnosis": "Battery temperature 75.0 °C ≥ 70 °C (level 3, hottest of pack, cell and surface sensors).",
        "action": "Cut off the slot, keep staff clear, inspect battery B9."}
    with pytest.raises(ValueError, match="unsupported language 'fr'"):
        Engine(CATALOGUE.only(["over_temperature"]), clock=clock, language="fr")


def test_kinds_raise_escalate_deescalate_clear_and_one_alert_per_target():
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["over_temperature"]), clock=clock)
    temps = [51] * 11 + [56, 56, 71, 71, 60, 60, 40, 40]  # level 1 holds 5 minutes (30 s steps)
    out = feed(engine, clock, [cab(SlotReading(1, temperature_c=v)) for v in temps])
    assert [(t.kind, t.to_level) for t in out] == [
        ("raise", 1), ("escalate", 2), ("escalate", 3), ("deescalate", 2), ("clear", 0)]
    assert out[3].protective_action is None  # de-escalation commands nothing
    assert out[-1].labels["level"] == "2"  # a clear carries the level it cleared
    assert len(engine.state.active()) == 0


def test_missing_values_never_raise_nor_clear():
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["over_temperature"]), clock=clock)
    feed(engine, clock, [cab(SlotReading(1, temperature_c=75))] * 2)
    stale = [cab(SlotReading(1, temperature_c=None)), cab(SlotReading(1, temperature_c=math.nan)),
             cab(SlotReading(1, temperature_c=math.inf)), cab(SlotReading(1)), cab()] * 20
    assert feed(engine, clock, stale) == []
    assert engine.state.worst_level() == 3


def test_for_duration_filters_single_glitch():
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["over_temperature"]), clock=clock)
    glitches = [cab(SlotReading(1, temperature_c=v)) for v in (30, 95, 30, 30, 95, 30)]
    assert feed(engine, clock, glitches) == []


def test_rate_of_rise_detects_ramp_and_ignores_a_spike():
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["temperature_rise_rate"]), clock=clock)
    spike = [30.0] * 6 + [85.0] + [30.0] * 6
    assert feed(engine, clock, [cab(SlotReading(1, temperature_c=v)) for v in spike]) == []
    ramp = [30.0 + 1.5 * i for i in range(12)]  # 3 °C/min at 30 s polling
    out = feed(engine, clock, [cab(SlotReading(1, temperature_c=v)) for v in ramp])
    assert max(t.to_level for t in out) == 2
    assert 2.5 < out[-1].value < 3.5


def test_soc_jump_is_held_for_clear_for_and_a_battery_swap_is_not_a_jump():
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["soc_jump"]), clock=clock)
    swap = [cab(SlotReading(1, battery_id="A", soc_pct=100)), cab(SlotReading(1, battery_id="B", soc_pct=12))]
    assert feed(engine, clock, swap) == []
    jump = feed(engine, clock, [cab(SlotReading(1, battery_id="B", soc_pct=45))])
    assert [(t.kind, t.to_level) for t in jump] == [("raise", 2)]
    steady = feed(engine, clock, [cab(SlotReading(1, battery_id="B", soc_pct=45))] * 25, step=30)
    assert [t.kind for t in steady] == ["clear"]
    assert steady[0].at - jump[0].at >= 600


def test_a_soc_jump_never_bridges_an_empty_slot():
    """The pack taken out (100 %) and the one docked next (20 %) are not one battery, even when the new
    pack's first reading has no id (docked between the poll's identity read and its SOC read)."""
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["soc_jump"]), clock=clock)
    swap = [cab(SlotReading(1, battery_id="A", soc_pct=100, battery_state=2)),
            cab(SlotReading(1, soc_pct=0, battery_state=0)),  # empty: the registers read zero
            cab(SlotReading(1, soc_pct=20, battery_state=1)),  # the new pack, its id not read yet
            cab(SlotReading(1, battery_id="B", soc_pct=21, battery_state=1))]
    assert feed(engine, clock, swap) == []
    jump = feed(engine, clock, [cab(SlotReading(1, battery_id="B", soc_pct=50, battery_state=1))])
    assert [(t.kind, t.to_level) for t in jump] == [("raise", 2)]  # the new pack's own jumps still count


def test_low_temperature_charging_only_when_charging():
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["charging_low_temperature"]), clock=clock)
    idle = [cab(SlotReading(1, temperature_c=-15, charge_current_a=0.0))] * 5
    assert feed(engine, clock, idle) == []
    charging = [cab(SlotReading(1, temperature_c=-15, charge_current_a=5.0))] * 3
    assert [t.to_level for t in feed(engine, clock, charging)] == [3]


def test_fusion_reaches_level_3_sooner_than_any_single_sensor_threshold():
    trace = traces.gas_first_runaway()
    out = replay(((r.timestamp_ns / 1e9, r) for r in trace.readings()), Engine(CATALOGUE))
    first_l3 = {}
    for t in out:
        if t.target.slot == 1 and t.to_level == 3:
            first_l3.setdefault(t.rule, t.at)
    fusion = first_l3.pop("thermal_runaway")
    assert trace.onset - fusion >= 9 * 60
    assert all(fusion < at for at in first_l3.values()), first_l3
    fusion_l2 = min(t.at for t in out if t.rule == "thermal_runaway" and t.to_level >= 2)
    assert trace.onset - fusion_l2 >= 10 * 60  # target: level 2 at least 10 min before onset


def test_fusion_gives_fewer_false_alarms_than_single_sensors_on_noisy_trace():
    trace = traces.noisy_sensors(hours=12)
    out = replay(((r.timestamp_ns / 1e9, r) for r in trace.readings()), Engine(CATALOGUE))
    high = {t.rule for t in out if t.kind in ("raise", "escalate") and t.to_level >= 2}
    assert "thermal_runaway" not in high
    assert high & {"h2_gas", "safety_valve_event"}, "the trace should fool some single sensor"
    assert not any(t.to_level == 3 for t in out)


def test_normal_charging_has_no_alarms():
    trace = traces.normal_fleet(cabinets=2, hours=6)
    out = replay(((r.timestamp_ns / 1e9, r) for r in trace.readings()), Engine(CATALOGUE))
    assert [t for t in out if t.to_level >= 2] == []


def test_set_threshold_validates_applies_and_audits(tmp_path):
    clock = ManualClock()
    audit = tmp_path / "audit.jsonl"
    engine = Engine(CATALOGUE.only(["over_temperature"]), clock=clock, audit_path=audit)
    entry = engine.set_threshold("over_temperature", 2, 50, who="noc-alice", reason="summer peak")
    assert entry == {"at": T0, "who": "noc-alice", "reason": "summer peak", "rule": "over_temperature",
                     "level": 2, "old": 55.0, "new": 50.0}
    assert [json.loads(line) for line in audit.read_text().splitlines()] == [entry]
    out = feed(engine, clock, [cab(SlotReading(1, temperature_c=52))] * 2)
    assert [t.to_level for t in out] == [2]
    with pytest.raises(RuleError, match="below level 2"):
        engine.set_threshold("over_temperature", 3, 40, who="noc-alice", reason="typo")
    with pytest.raises(RuleError, match="not a finite number"):
        engine.set_threshold("over_temperature", 1, math.nan, who="noc-alice", reason="x")
    with pytest.raises(RuleError, match="level must be 1, 2 or 3"):
        engine.set_threshold("over_temperature", 4, 80, who="noc-alice", reason="x")
    with pytest.raises(RuleError, match="no level 1"):
        Engine(CATALOGUE.only(["cabinet_flame"])).set_threshold("cabinet_flame", 1, 1, "noc-alice", "x")
    with pytest.raises(RuleError, match="no such rule"):
        engine.set_threshold("nope", 1, 1, who="noc-alice", reason="x")
    with pytest.raises(ValueError, match="reason"):
        engine.set_threshold("over_temperature", 1, 44, who="noc-alice", reason=" ")
    assert len(audit.read_text().splitlines()) == 1  # rejected changes leave no audit line
    assert engine.rules["over_temperature"].levels[2].threshold == 70


def test_alerts_resume_after_restart(tmp_path):
    path = tmp_path / "alerts.json"
    clock = ManualClock()
    rules = CATALOGUE.only(["over_temperature"])
    engine = Engine(rules, clock=clock, state=AlertStore(path))
    feed(engine, clock, [cab(SlotReading(1, battery_id="B1", temperature_c=60))] * 2)
    restarted = Engine(rules, clock=clock, state=AlertStore(path))
    assert restarted.state.worst_level(site="s1") == 2
    assert feed(restarted, clock, [cab(SlotReading(1, temperature_c=None))]) == []
    out = feed(restarted, clock, [cab(SlotReading(1, battery_id="B1", temperature_c=30))])
    assert [(t.kind, t.from_level) for t in out] == [("clear", 2)]
    assert AlertStore(path).active() == []


_values = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70),
    st.booleans(), st.text(max_size=3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({}, optional={f: _values for f in sorted(SLOT_FIELDS)}),
                min_size=1, max_size=6),
       st.lists(st.floats(0, 600), min_size=6, max_size=6))
def test_evaluate_never_raises_on_arbitrary_slot_values(slot_values, steps):
    clock = ManualClock()
    registry = CollectorRegistry()
    engine = Engine(CATALOGUE, clock=clock, registry=registry)
    out = []
    for values, step in zip(slot_values, steps):
        out += engine.evaluate(cab(SlotReading(1, **values), SlotReading(2, **values),
                                   cabinet_temperature_c=values.get("temperature_c")))
        clock.now += step
    # evaluate() swallows a rule's exception so the other rules go on: "did not raise" alone would
    # pass with a crashing rule. No rule may have failed at all on garbage input.
    assert [t.key for t in out if t.rule == RULE_FAILED] == []
    assert {r: rule_errors(registry, r) for r in CATALOGUE} == dict.fromkeys(CATALOGUE, 0.0)


def test_empty_slot_zeros_neither_raise_nor_clear_but_compartment_sensors_count():
    from core.model import BatteryState
    clock = [T0]
    engine = Engine(load_rules(), clock=lambda: clock[0])
    empty = SlotReading(slot=1, battery_state=int(BatteryState.EMPTY), voltage_v=0.0, nominal_voltage_v=0.0,
                        cell_voltage_min_v=0.0, insulation_resistance_kohm=0.0, soc_pct=0.0, h2_ppm=0.0)
    for _ in range(5):
        clock[0] += 30
        assert engine.evaluate(CabinetReading("c1", "s1", "m1", 0, slots=[empty])) == []
    venting = SlotReading(slot=1, battery_state=int(BatteryState.EMPTY), h2_ppm=400.0)
    raised = []
    for _ in range(10):
        clock[0] += 30
        raised += engine.evaluate(CabinetReading("c1", "s1", "m1", 0, slots=[venting]))
    assert any(t.rule == "h2_gas" and t.to_level >= 2 for t in raised)


def test_run_time_thresholds_survive_a_restart_unless_the_catalogue_changed(tmp_path):
    audit = tmp_path / "audit.jsonl"
    rules = load_rules()
    first = Engine(rules, audit_path=audit)
    first.set_threshold("over_temperature", 1, 52.0, who="noc-li", reason="summer profile")

    def level1(engine):
        return next(lv.threshold for lv in engine.rules["over_temperature"].levels if lv.level == 1)

    assert level1(Engine(load_rules(), audit_path=audit)) == 52.0
    # The catalogue moved under the change: the stale entry is skipped, the file's value wins.
    edited = load_rules().only(set(load_rules()))
    base = level1(Engine(edited))
    changed = Engine([r if r.id != "over_temperature" else r.with_threshold(1, base - 1.0)
                      for r in edited.values()], audit_path=audit)
    assert level1(changed) == base - 1.0
    audit.write_text(audit.read_text() + "not json\n")
    assert level1(Engine(load_rules(), audit_path=audit)) == 52.0  # a torn line is skipped


def test_a_sensor_that_stops_reporting_is_a_warning_but_a_field_never_carried_is_not():
    from core.model import BatteryState
    clock = [T0]
    engine = Engine(load_rules().only(["h2_sensor_lost", "pack_temperature_sensor_lost"]), clock=lambda: clock[0])

    def at(**values):
        clock[0] += 30
        return engine.evaluate(CabinetReading("c1", "s1", "m1", 0, slots=[SlotReading(slot=1, **values)]))

    charging = int(BatteryState.CHARGING)
    seen = []
    for _ in range(10):  # a profile without an H2 sensor: h2_ppm is always None
        seen += at(battery_state=charging, temperature_c=30.0)
    assert seen == []
    seen += at(battery_state=charging, temperature_c=30.0, h2_ppm=0.4)
    for _ in range(25):  # both sensors die (12.5 min)
        seen += at(battery_state=charging)
    levels = {(t.rule, t.to_level) for t in seen}
    assert {("h2_sensor_lost", 1), ("h2_sensor_lost", 2), ("pack_temperature_sensor_lost", 2)} <= levels
    cleared = at(battery_state=charging, temperature_c=30.0, h2_ppm=0.3) + at(battery_state=charging,
                                                                              temperature_c=30.0, h2_ppm=0.3)
    assert {t.rule for t in cleared if t.kind == "clear"} == {"h2_sensor_lost", "pack_temperature_sensor_lost"}
    # Pulling the pack out is not a lost pack sensor.
    removed = []
    for _ in range(25):
        removed += at(battery_state=int(BatteryState.EMPTY), h2_ppm=0.3)
    assert removed == []


# --- catalogue changes across a restart (stored alerts the rules can no longer evaluate) -------

_HOT = """
rules:
  - id: hot
    description: hot slot
    source: P-5.2.1c
    scope: slot
    input: {field: temperature_c}
    levels: {LEVELS}
    diagnosis: "hot {value}"
    action: "cool slot {slot}"
  - id: wet
    description: water
    source: P-5.2.1d
    scope: cabinet
    input: {bool: water_detected}
    levels: {3: 1}
    diagnosis: "wet"
    action: "dry"
"""


def _hot(levels="{1: 45, 2: 55, 3: 70}", *, drop_wet=False):
    from alerting.rules import parse_rules

    text = _HOT.replace("{LEVELS}", levels)
    if drop_wet:
        text = text[: text.index("  - id: wet")]
    return parse_rules(text)


def test_stored_alert_at_a_level_the_rule_no_longer_has_is_cleared_at_start_up(tmp_path, caplog):
    path = tmp_path / "alerts.json"
    clock = ManualClock()
    engine = Engine(_hot(), clock=clock, state=AlertStore(path))
    assert engine.startup_transitions == []
    assert [t.to_level for t in feed(engine, clock, [cab(SlotReading(1, battery_id="B1", temperature_c=80))])] == [3]

    restarted = Engine(_hot("{1: 45, 2: 55}"), clock=clock, state=AlertStore(path))
    [t] = restarted.startup_transitions
    assert (t.rule, t.kind, t.from_level, t.to_level, t.protective_action) == ("hot", "clear", 3, 0, None)
    assert t.target.battery == "B1" and t.labels["level"] == "3" and t.labels["slot"] == "1"
    assert "已没有 3 级" in t.diagnosis and "no longer has level 3" in caplog.text  # alert in Chinese, log in English
    assert restarted.state.active() == [] and AlertStore(path).active() == []  # store and engine agree
    # Evaluation goes on normally: nothing raised, nothing stuck, the other rules still work.
    out = feed(restarted, clock, [cab(SlotReading(1, battery_id="B1", temperature_c=20), water_detected=True)])
    assert [(t.rule, t.kind) for t in out] == [("wet", "raise")]
    assert [(t.kind, t.to_level) for t in feed(restarted, clock, [cab(SlotReading(1, temperature_c=60))])] == [
        ("raise", 2)]


def test_stored_alert_of_a_removed_rule_is_cleared_at_start_up_and_not_resent(tmp_path):
    path = tmp_path / "alerts.json"
    clock = ManualClock()
    engine = Engine(_hot(), clock=clock, state=AlertStore(path))
    feed(engine, clock, [cab(water_detected=True)])
    assert AlertStore(path).worst_level() == 3

    restarted = Engine(_hot(drop_wet=True), clock=clock, state=AlertStore(path))
    assert [(t.rule, t.kind, t.from_level, t.target.slot) for t in restarted.startup_transitions] == [
        ("wet", "clear", 3, None)]
    assert "已不在规则库中" in restarted.startup_transitions[0].diagnosis
    assert AlertStore(path).active() == []
    again = Engine(_hot(drop_wet=True), clock=clock, state=AlertStore(path))
    assert again.startup_transitions == []  # reconciled once, not on every start


def test_stored_alerts_the_rules_still_evaluate_are_kept_at_start_up(tmp_path):
    path = tmp_path / "alerts.json"
    clock = ManualClock()
    engine = Engine(_hot(), clock=clock, state=AlertStore(path))
    feed(engine, clock, [cab(SlotReading(1, battery_id="B1", temperature_c=60), water_detected=True)])
    restarted = Engine(_hot("{1: 45, 2: 58, 3: 70}"), clock=clock, state=AlertStore(path))
    assert restarted.startup_transitions == []
    assert sorted((str(a.key), a.level) for a in restarted.state.active()) == [
        ("hot@s1/c1/1", 2), ("wet@s1/c1", 3)]


def test_a_level_missing_from_the_table_still_clears(tmp_path):
    """Defensive: an alert seeded at a level the compiled table lacks clears instead of raising."""
    clock = ManualClock()
    engine = Engine(_hot("{1: 45, 2: 55}"), clock=clock)
    other = Engine(_hot(), clock=clock)
    [raised] = feed(other, clock, [cab(SlotReading(1, battery_id="B1", temperature_c=80))])
    engine.state.apply([raised])  # after start-up reconciliation, so it is seeded as it is
    out = feed(engine, clock, [cab(SlotReading(1, battery_id="B1", temperature_c=20), water_detected=True)])
    assert sorted((t.rule, t.kind, t.from_level) for t in out) == [("hot", "clear", 3), ("wet", "raise", 0)]
    assert [(str(a.key), a.level) for a in engine.state.active()] == [("wet@s1/c1", 3)]


def rule_errors(registry: CollectorRegistry, rule: str) -> float | None:
    return registry.get_sample_value("cascade_rule_errors_total", {"rule": rule})


def break_rule(monkeypatch, engine: Engine, rule: str = "hot") -> None:
    """A bug in one rule: ZeroDivisionError whenever it would change level. ``monkeypatch.undo`` fixes it."""
    real = engine._transition

    def broken(c, *args):
        if c.id == rule:
            _ = 1 / 0  # the bug
        return real(c, *args)

    monkeypatch.setattr(engine, "_transition", broken)


HOT_AND_WET = cab(SlotReading(1, battery_id="B1", temperature_c=80), water_detected=True)


def test_one_failing_rule_never_loses_the_other_transitions_of_the_reading(monkeypatch):
    clock = ManualClock()
    engine = Engine(_hot(), clock=clock)
    break_rule(monkeypatch, engine)
    out = feed(engine, clock, [HOT_AND_WET])
    assert [(t.rule, t.kind, t.to_level) for t in out] == [("wet", "raise", 3), (RULE_FAILED, "raise", 1)]
    assert feed(engine, clock, [HOT_AND_WET]) == []
    assert sorted(str(a.key) for a in engine.state.active()) == [  # engine and store agree
        "rule_evaluation_failed@s1/c1/1", "wet@s1/c1"]
    monkeypatch.undo()
    assert sorted((t.rule, t.kind, t.to_level) for t in feed(engine, clock, [HOT_AND_WET])) == [
        ("hot", "raise", 3), (RULE_FAILED, "clear", 0)]


def test_a_failing_rule_is_counted_logged_once_per_change_and_raises_a_notice_until_it_recovers(
        monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="alerting.engine")
    registry = CollectorRegistry()
    clock = ManualClock()
    engine = Engine(_hot(), clock=clock, registry=registry)
    assert (rule_errors(registry, "hot"), rule_errors(registry, "wet")) == (0, 0)  # series exist before a failure

    def logged(text):
        return [r for r in caplog.records if text in r.getMessage()]

    break_rule(monkeypatch, engine)
    wet, notice = feed(engine, clock, [HOT_AND_WET])
    assert (wet.rule, wet.kind, wet.to_level) == ("wet", "raise", 3)  # the other rule still fires
    assert (notice.rule, notice.kind, notice.from_level, notice.to_level, notice.value) == (
        RULE_FAILED, "raise", 0, 1, None)
    assert notice.protective_action is None  # a software fault never cuts a slot off
    assert notice.target == Target("s1", "c1", 1, "B1") and str(notice.key) == "rule_evaluation_failed@s1/c1/1"
    assert notice.labels == {"alertname": RULE_FAILED, "rule": RULE_FAILED, "level": "1", "severity": "notice",
                             "site": "s1", "cabinet": "c1", "slot": "1", "battery": "B1", "failed_rule": "hot"}
    assert "规则 hot" in notice.annotations["summary"] and "ZeroDivisionError" in notice.diagnosis
    assert rule_errors(registry, "hot") == 1
    [failure] = logged("rule hot failed")
    assert failure.levelno == logging.ERROR and failure.exc_info[0] is ZeroDivisionError  # with its traceback

    assert feed(engine, clock, [HOT_AND_WET] * 3) == []  # still failing: counted, no new notice, no new log
    assert (rule_errors(registry, "hot"), rule_errors(registry, "wet")) == (4, 0)
    assert len(logged("rule hot failed")) == 1
    assert engine.state.get("rule_evaluation_failed@s1/c1/1").level == 1 and engine.state.get("hot@s1/c1/1") is None

    monkeypatch.undo()  # the bug is fixed
    no_temperature = cab(SlotReading(1, battery_id="B1"), water_detected=True)
    assert feed(engine, clock, [no_temperature]) == []  # skipped for missing data is not "works again"
    assert logged("recovered") == []
    hot, cleared = sorted(feed(engine, clock, [HOT_AND_WET]), key=lambda t: t.rule)
    assert (hot.rule, hot.kind, hot.to_level) == ("hot", "raise", 3)
    assert (cleared.rule, cleared.kind, cleared.from_level, cleared.to_level) == (RULE_FAILED, "clear", 1, 0)
    assert cleared.labels == notice.labels  # Alertmanager resolves exactly the notice it got
    assert engine.state.get("rule_evaluation_failed@s1/c1/1") is None
    [recovered] = logged("rule hot recovered")
    assert recovered.levelno == logging.WARNING
    assert feed(engine, clock, [HOT_AND_WET] * 2) == [] and len(logged("rule hot")) == 2  # healthy: silent
    assert rule_errors(registry, "hot") == 4

    break_rule(monkeypatch, engine)  # fails again (on the clear): logged and raised again
    out = feed(engine, clock, [cab(SlotReading(1, battery_id="B1", temperature_c=20), water_detected=False)])
    assert [(t.rule, t.kind) for t in out] == [("wet", "clear"), (RULE_FAILED, "raise")]
    assert len(logged("rule hot failed")) == 2 and rule_errors(registry, "hot") == 5
    assert [str(a.key) for a in engine.state.active()] == ["hot@s1/c1/1", "rule_evaluation_failed@s1/c1/1"]


def test_a_stored_rule_failure_notice_is_rechecked_after_a_restart(tmp_path, monkeypatch):
    path = tmp_path / "alerts.json"
    clock = ManualClock()
    engine = Engine(_hot(), clock=clock, state=AlertStore(path))
    break_rule(monkeypatch, engine)
    feed(engine, clock, [HOT_AND_WET])
    assert AlertStore(path).get("rule_evaluation_failed@s1/c1/1") is not None

    restarted = Engine(_hot(), clock=clock, state=AlertStore(path))
    [t] = restarted.startup_transitions
    assert (t.rule, t.kind, t.from_level, t.to_level, t.labels["failed_rule"]) == (RULE_FAILED, "clear", 1, 0, "hot")
    assert "重新检查" in t.diagnosis and "已不在规则库中" not in t.diagnosis
    assert [str(a.key) for a in AlertStore(path).active()] == ["wet@s1/c1"]
    break_rule(monkeypatch, restarted)  # still broken: raised again on the first reading, no `for` delay
    assert [(t.rule, t.kind) for t in feed(restarted, clock, [HOT_AND_WET])] == [(RULE_FAILED, "raise")]


def test_the_rule_failure_notice_id_is_reserved():
    from alerting.rules import parse_rules

    with pytest.raises(RuleError, match="reserved"):
        Engine(parse_rules(_HOT.replace("id: wet", f"id: {RULE_FAILED}").replace("{LEVELS}", "{1: 45}")))


# --- numbers too large for a float are rule errors, not OverflowError ---------------------------

@pytest.mark.parametrize("value", [10**400, -(10**400), 10**5000], ids=["1e400", "-1e400", "1e5000"])
def test_set_threshold_with_a_huge_integer_is_a_rule_error(value):
    engine = Engine(CATALOGUE.only(["over_temperature"]), clock=ManualClock())
    with pytest.raises(RuleError, match="is not a finite number") as err:
        engine.set_threshold("over_temperature", 3, value, who="noc-alice", reason="x")
    assert len(str(err.value)) < 300  # the message stays readable
    assert engine.rules["over_temperature"].levels[2].threshold == 70 and engine.audit == []


def test_audit_entries_with_unusable_numbers_are_skipped_at_start_up(tmp_path, caplog):
    audit = tmp_path / "audit.jsonl"
    audit.write_text(
        '{"rule": "over_temperature", "level": 3, "old": 70, "new": ' + "9" * 400 + '}\n'
        '{"rule": "over_temperature", "level": 3, "old": 70, "new": Infinity}\n'
        '{"rule": "over_temperature", "level": 3e400, "old": 70, "new": 65}\n'
        '["not", "an", "entry"]\n'
        '{"rule": "over_temperature", "level": 3, "old": 70, "new": 68}\n')
    engine = Engine(CATALOGUE.only(["over_temperature"]), clock=ManualClock(), audit_path=audit)
    assert engine.rules["over_temperature"].levels[2].threshold == 68  # the one usable entry
    assert caplog.text.count("not re-applied") == 4
    # The change in force is listed after the restart too (GET /api/thresholds shows engine.audit).
    assert [(e["rule"], e["level"], e["new"]) for e in engine.audit] == [("over_temperature", 3, 68)]


def test_an_input_that_raises_is_missing_data_for_its_rules_and_never_stops_the_reading(caplog):
    """Inputs are computed outside the per-rule guard (shared between rules): one that raises must
    not make ``evaluate`` raise, and the rules on other inputs still fire."""
    caplog.set_level(logging.INFO, logger="alerting.engine")
    registry = CollectorRegistry()
    clock = ManualClock()
    engine = Engine(_hot(), clock=clock, registry=registry)
    extractors, _compiled = engine._program.scopes["slot"]
    assert extractors, "the hot rule reads a slot input"

    def broken(obj, ts, now):
        raise ZeroDivisionError("input bug")

    extractors[0] = broken  # this engine only: its program was compiled for it
    out = feed(engine, clock, [HOT_AND_WET, HOT_AND_WET])
    assert [(t.rule, t.kind, t.to_level) for t in out] == [("wet", "raise", 3)]  # cabinet input unaffected
    assert engine.state.get("hot@s1/c1/1") is None  # no value, no decision
    assert registry.get_sample_value("cascade_rule_errors_total", {"rule": "(input)"}) == 2
    assert len([r for r in caplog.records if "an input of the rules failed" in r.getMessage()]) == 1
