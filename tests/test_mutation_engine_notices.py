"""The warning engine's texts and its own notices (alerting/engine.py) stated from outside: the exact
Chinese and English annotations of a slot, a cabinet-wide and a vehicle alert, the rule-failure notice
(raised, its labels and texts, counted, logged once, cleared when the rule works again), stored alerts
retired or resumed at start-up, run-time threshold changes re-applied from the audit log and written
to it. Written to kill the mutants `make mutate` found alive in those functions."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from alerting.engine import RULE_FAILED, Engine, render_annotations
from alerting.i18n import AlertTexts
from alerting.rules import RuleError, load_rules, parse_rules
from alerting.state import AlertStore, Target
from collectors.vehicles.watch import as_engine_reading
from core.model import CabinetReading, SlotReading, VehicleProfile, VehicleReading
from tests.fixtures.clock import T0, ManualClock
from tests.test_engine import _HOT, _hot, rule_errors
from tests.test_mutation_engine import FUSION, _rule, _rules

CATALOGUE = load_rules()


def _annotations(transitions: list) -> list[tuple]:
    return [(t.rule, t.kind, t.to_level, t.annotations) for t in transitions]


# -- what an alert says, in both languages (render_annotations, _place, _vehicle_place, _vehicle_action) ---------

SLOT_AND_CABINET = {
    "zh_CN": [
        ("cabinet_flame", "raise", 3, {
            "summary": "L3 检测到火焰（site-01/C7）",
            "diagnosis": "C7 柜检测到火焰。",
            "action": "立即派人到场并报火警（119）；消防装置会自动动作。"}),
        ("cell_overvoltage", "raise", 2, {
            "summary": "L2 单体过压 4.300 V（site-01/C7 5号仓）",
            "diagnosis": "最高单体电压 4.300 V，超过 4.28 V（2级）：充电机或 BMS 未能终止充电。",
            "action": "停止 5 号仓充电；检查充电机输出电压和 BMS 均衡；三级时隔离电池 B42。"}),
        ("cell_overvoltage", "clear", 0, {
            "summary": "L2 单体过压 4.100 V（site-01/C7 5号仓）",
            "diagnosis": "已恢复：单体过压告警解除（4.100 V）。",
            "action": "停止 5 号仓充电；检查充电机输出电压和 BMS 均衡；三级时隔离电池 B42。"}),
    ],
    "en": [
        ("cabinet_flame", "raise", 3, {
            "summary": "L3 Flame detected at site-01/C7",
            "diagnosis": "Flame detected at cabinet C7.",
            "action": "Dispatch and call the fire service; fire suppression acts on its own (P-3.3)."}),
        ("cell_overvoltage", "raise", 2, {
            "summary": "L2 Cell over-voltage 4.300 V at site-01/C7 slot 5",
            "diagnosis": "Cell voltage 4.300 V exceeds 4.28 V (level 2): charger or BMS not terminating the charge.",
            "action": "Stop charging slot 5; check charger output voltage and BMS balancing; quarantine battery B42 "
                      "at level 3."}),
        ("cell_overvoltage", "clear", 0, {
            "summary": "L2 Cell over-voltage 4.100 V at site-01/C7 slot 5",
            "diagnosis": "Cleared: Cell over-voltage back within limits (4.100 V).",
            "action": "Stop charging slot 5; check charger output voltage and BMS balancing; quarantine battery B42 "
                      "at level 3."}),
    ],
}


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_a_slot_alert_and_a_cabinet_wide_alert_say_what_where_and_what_to_do(language: str) -> None:
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["cell_overvoltage", "cabinet_flame"]), clock=clock, language=language)
    got = engine.evaluate(CabinetReading("C7", "site-01", "SC-12", 0, slots=[
        SlotReading(5, battery_id="B42", cell_voltage_max_v=4.3)], flame_detected=True))
    clock.advance(30)
    got += engine.evaluate(CabinetReading("C7", "site-01", "SC-12", 0, slots=[
        SlotReading(5, battery_id="B42", cell_voltage_max_v=4.1)], flame_detected=False))
    assert _annotations(got) == SLOT_AND_CABINET[language]
    flame = got[0]
    # A cabinet-wide alert names no slot, no battery and no vehicle; a cabinet is commanded (cut-off) as a cabinet.
    assert flame.target == Target("site-01", "C7", None, None)
    assert flame.labels == {"alertname": "cabinet_flame", "rule": "cabinet_flame", "level": "3", "severity": "critical",
                            "site": "site-01", "cabinet": "C7"}
    assert flame.vehicle_command is None
    assert got[1].labels == {"alertname": "cell_overvoltage", "rule": "cell_overvoltage", "level": "2",
                             "severity": "warning", "site": "site-01", "cabinet": "C7", "slot": "5", "battery": "B42"}
    assert got[1].protective_action == "stop_charging"


def test_a_cabinet_wide_rule_with_a_cut_off_asks_for_it() -> None:
    """The cabinet's own target is commandable: its level-3 water alert asks for the cabinet cut-off."""
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["cabinet_water"]), clock=clock, language="en")
    got = []
    for _ in range(2):  # `for: 10s`
        got += engine.evaluate(CabinetReading("C7", "site-01", "SC-12", 0, slots=[], water_detected=True))
        clock.advance(30)
    [t] = got
    assert (t.kind, t.to_level, t.protective_action, t.target) == ("raise", 3, "cabinet_cutoff",
                                                                  Target("site-01", "C7", None, None))
    assert "vehicle" not in t.labels and "slot" not in t.labels


VEHICLE_PACK = {
    "zh_CN": [
        ("vehicle_low_soc", 1, "L1 低电量提醒 SOC 14%，提醒值 20%（bj/V000123号车）", "提醒骑手到最近的换电站换电。"),
        ("cell_overvoltage", 1, "L1 单体过压 4.260 V（bj/V000123号车 电池）", "关注电池 （未知）；下次换电时检查。"),
        ("cell_overvoltage", 2, "L2 单体过压 4.300 V（bj/V000123号车 电池）",
         "通知骑手结束骑行，到最近的换电站更换电池 （未知）；检查合格前不得再发放。"),
        ("cell_overvoltage", 3, "L3 单体过压 4.400 V（bj/V000123号车 电池）",
         "立即致电骑手：停车下车，远离电池、建筑和人群；派人到场。电池 （未知）。"),
    ],
    "en": [
        ("vehicle_low_soc", 1, "L1 Low battery reminder SOC 14 %, reminder at 20 % at bj/V000123 vehicle",
         "Remind the rider to swap the battery at the nearest station."),
        ("cell_overvoltage", 1, "L1 Cell over-voltage 4.260 V at bj/V000123 battery",
         "Watch battery (unknown); inspect it at its next swap."),
        ("cell_overvoltage", 2, "L2 Cell over-voltage 4.300 V at bj/V000123 battery",
         "Tell the rider to end the ride and swap battery (unknown) at the nearest station; inspect it before it "
         "is issued again."),
        ("cell_overvoltage", 3, "L3 Cell over-voltage 4.400 V at bj/V000123 battery",
         "Call the rider now: stop, get off, keep away from the battery and from buildings and people; send staff. "
         "Battery (unknown)."),
    ],
}


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_a_vehicle_alert_names_the_vehicle_and_tells_what_to_do_with_the_rider(language: str) -> None:
    """A battery rule on a vehicle's pack at each level (a pack without an id), and the vehicle's own
    low-SOC reminder, which shows the report's SOC and the user's reminder level instead of the difference."""
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["cell_overvoltage", "vehicle_low_soc"]), clock=clock, language=language)
    got = []
    for volts in (4.26, 4.3, 4.4, 4.4):  # level 3 holds for 10 s
        got += engine.evaluate(as_engine_reading(VehicleReading(
            "V000123", "bj", int(clock.now * 1e9), battery=SlotReading(1, cell_voltage_max_v=volts, soc_pct=13.6),
            profile=VehicleProfile(low_soc_pct=20.0))))
        clock.advance(30)
    assert [(t.rule, t.to_level, t.annotations["summary"], t.action) for t in got] == VEHICLE_PACK[language]
    assert [t.annotations["action"] for t in got] == [t.action for t in got]
    reminder, pack = got[0], got[1]
    assert reminder.labels == {"alertname": "vehicle_low_soc", "rule": "vehicle_low_soc", "level": "1",
                               "severity": "notice", "site": "bj", "cabinet": "V000123", "vehicle": "V000123"}
    assert pack.labels == {"alertname": "cell_overvoltage", "rule": "cell_overvoltage", "level": "1",
                           "severity": "notice", "site": "bj", "cabinet": "V000123", "vehicle": "V000123", "slot": "1"}
    # No cabinet cut-off reaches a vehicle: the level's protective action is not asked for.
    assert [t.protective_action for t in got] == [None] * 4


HOT = _rule("{1: 45, 2: 55}", rid="hot", diagnosis="hot {value} over {threshold} at {site}/{cabinet} slot {slot} "
            "battery {battery} rule {rule} [{evidence}]", action="Level 1: watch {battery}. Level 2: stop slot {slot}.",
            extra="unit: °C\nname: Hot pack")


def test_render_annotations_by_default_speaks_of_a_cabinet_slot_raised_without_evidence() -> None:
    [rule] = _rules(HOT).values()
    texts = AlertTexts("en")
    assert render_annotations(texts, rule, 2, 56.0, 55.0, ("s1", "c1", 4), "B1") == {
        "summary": "L2 Hot pack 56 °C at s1/c1 slot 4",
        "diagnosis": "hot 56.0 over 55.0 at s1/c1 slot 4 battery B1 rule hot []",
        "action": "Stop slot 4."}
    assert render_annotations(texts, rule, 1, 46.0, 45.0, ("s1", "c1", None), None) == {
        "summary": "L1 Hot pack 46 °C at s1/c1",
        "diagnosis": "hot 46.0 over 45.0 at s1/c1 slot - battery (unknown) rule hot []",
        "action": "Watch (unknown)."}


def test_render_annotations_clears_a_value_that_is_no_number_with_the_value_as_it_is() -> None:
    [rule] = _rules(HOT).values()
    got = render_annotations(AlertTexts("en"), rule, 1, "n/a", "-", ("s1", "c1", 4), "B1", cleared=True)
    assert got["diagnosis"] == "Cleared: Hot pack back within limits (value n/a)."
    assert got["summary"] == "L1 Hot pack at s1/c1 slot 4"  # no reading: no double space


def test_render_annotations_never_raises_for_a_fusion_rule_given_a_vehicles_facts() -> None:
    [rule] = parse_rules(FUSION).values()
    got = render_annotations(AlertTexts("en"), rule, 1, 0.5, 0.4, ("bj", "V1", None), "P1", whole_vehicle=True,
                             facts={"soc": "14", "reminder": "20"})
    assert got["summary"] == "L1 fused evidence at bj/V1 vehicle"


def test_the_fusion_evidence_in_chinese_is_the_chinese_name_of_each_term() -> None:
    clock = ManualClock(T0)
    engine = Engine(CATALOGUE.only(["thermal_runaway"]), clock=clock)
    slots = [SlotReading(1, battery_id="B1", h2_ppm=300.0, voc_ppm=150.0), SlotReading(2, h2_ppm=0.0, voc_ppm=0.0)]
    assert engine.evaluate(CabinetReading("c1", "s1", "m", int(T0 * 1e9), slots=slots)) == []
    clock.advance(20)
    [t] = engine.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=slots))
    assert t.annotations == {
        "summary": "L2 热失控前兆 0.90 分（s1/c1 1号仓）",
        "diagnosis": "热失控前兆评分 0.90（2级）；依据：氢气（高于其他仓）=300.0 (0.45); VOC（高于其他仓）=150.0 (0.45)。",
        "action": "停止 1 号仓充电，通知值班。"}


# -- the rule-failure notice (Engine._rule_failed, _rule_recovered, _rule_health, _notice_*, _error_text) ---------

def _break(monkeypatch, engine: Engine, *rules: str, error: Exception | None = None) -> None:
    """``rules`` raise ``error`` (ZeroDivisionError by default) whenever they would change level."""
    real = engine._transition

    def broken(c, *args):
        if c.id in rules:
            if error is not None:
                raise error
            _ = 1 / 0
        return real(c, *args)

    monkeypatch.setattr(engine, "_transition", broken)


TWO_SLOT_RULES = _rules(_rule("{1: 45, 2: 55}", rid="hot"), _rule("{1: 100}", rid="gas", input="{field: h2_ppm}"),
                        _rule("{3: 1}", rid="wet", scope="cabinet", input="{bool: water_detected}"))


def _reading(slot: int = 1, *, battery: str | None = "B1", wet: bool | None = None, **values) -> CabinetReading:
    return CabinetReading("c1", "s1", "m", 0, slots=[SlotReading(slot, battery_id=battery, **values)],
                          water_detected=wet)


NOTICES = {
    "en": {
        "raised": {
            "summary": "L1 rule hot cannot be evaluated at s1/c1 slot 1",
            "diagnosis": "Rule hot raised an error at s1/c1 slot 1 (ZeroDivisionError: division by zero): while it "
                         "fails it cannot change its alert here, kept at L1; the other rules are evaluated as usual. "
                         "Failing here: hot, gas.",
            "action": "Not a battery fault: a software fault in Cascade. Report it with the log line 'rule hot failed' "
                      "(metric cascade_rule_errors_total{rule=\"hot\"}); until it is fixed, watch s1/c1 slot 1 by "
                      "other means for what hot checks."},
        "cleared": {
            "summary": "Cleared L1 rule evaluation failure at s1/c1 slot 1",
            "diagnosis": "Cleared: rule hot, gas evaluates again at s1/c1 slot 1.",
            "action": "None."},
        "cabinet": {
            "summary": "L1 rule wet cannot be evaluated at s1/c1",
            "diagnosis": "Rule wet raised an error at s1/c1 (ZeroDivisionError: division by zero): while it fails it "
                         "cannot change its alert here, kept at L0; the other rules are evaluated as usual. "
                         "Failing here: wet.",
            "action": "Not a battery fault: a software fault in Cascade. Report it with the log line 'rule wet failed' "
                      "(metric cascade_rule_errors_total{rule=\"wet\"}); until it is fixed, watch s1/c1 by other "
                      "means for what wet checks."},
        "cabinet cleared": {
            "summary": "Cleared L1 rule evaluation failure at s1/c1",
            "diagnosis": "Cleared: rule wet evaluates again at s1/c1.",
            "action": "None."},
    },
    "zh_CN": {
        "raised": {
            "summary": "L1 规则 hot 在 s1/c1 1号仓 无法计算",
            "diagnosis": "规则 hot 在 s1/c1 1号仓 计算出错（ZeroDivisionError: division by zero）：出错期间该处告警无法"
                         "变化，保持 L1；其他规则照常计算。此处出错的规则：hot, gas。",
            "action": "不是电池故障，是 Cascade 软件故障。请附日志“rule hot failed”（指标 "
                      "cascade_rule_errors_total{rule=\"hot\"}）报障；修复前请用其他手段监视 s1/c1 1号仓 的 hot 检查项。"},
        "cleared": {
            "summary": "已恢复：L1 规则计算故障（s1/c1 1号仓）",
            "diagnosis": "已恢复：规则 hot, gas 在 s1/c1 1号仓 重新正常计算。",
            "action": "无需处置。"},
        "cabinet": {
            "summary": "L1 规则 wet 在 s1/c1 无法计算",
            "diagnosis": "规则 wet 在 s1/c1 计算出错（ZeroDivisionError: division by zero）：出错期间该处告警无法变化，"
                         "保持 L0；其他规则照常计算。此处出错的规则：wet。",
            "action": "不是电池故障，是 Cascade 软件故障。请附日志“rule wet failed”（指标 "
                      "cascade_rule_errors_total{rule=\"wet\"}）报障；修复前请用其他手段监视 s1/c1 的 wet 检查项。"},
        "cabinet cleared": {
            "summary": "已恢复：L1 规则计算故障（s1/c1）",
            "diagnosis": "已恢复：规则 wet 在 s1/c1 重新正常计算。",
            "action": "无需处置。"},
    },
}


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_the_rule_failure_notice_names_the_rules_the_place_the_error_and_the_level_kept(monkeypatch,
                                                                                          language: str) -> None:
    clock = ManualClock()
    engine = Engine(TWO_SLOT_RULES, clock=clock, language=language)
    assert [(t.rule, t.to_level) for t in engine.evaluate(_reading(temperature_c=50.0))] == [("hot", 1)]
    clock.advance(30)
    _break(monkeypatch, engine, "hot", "gas", "wet")
    got = engine.evaluate(_reading(temperature_c=60.0, h2_ppm=150.0, wet=True))
    cabinet, slot = got
    texts = NOTICES[language]
    assert (slot.rule, slot.kind, slot.from_level, slot.to_level, slot.value, slot.at, slot.protective_action) == (
        RULE_FAILED, "raise", 0, 1, None, clock.now, None)
    assert slot.target == Target("s1", "c1", 1, "B1")
    assert slot.labels == {"alertname": RULE_FAILED, "rule": RULE_FAILED, "level": "1", "severity": "notice",
                           "site": "s1", "cabinet": "c1", "slot": "1", "battery": "B1", "failed_rule": "hot"}
    assert slot.annotations == texts["raised"]
    assert (slot.diagnosis, slot.action) == (texts["raised"]["diagnosis"], texts["raised"]["action"])
    assert (cabinet.rule, cabinet.target, cabinet.annotations) == (RULE_FAILED, Target("s1", "c1", None, None),
                                                                  texts["cabinet"])
    assert cabinet.labels == {"alertname": RULE_FAILED, "rule": RULE_FAILED, "level": "1", "severity": "notice",
                              "site": "s1", "cabinet": "c1", "failed_rule": "wet"}

    monkeypatch.undo()  # fixed: both slot rules evaluate again on one reading, the cabinet rule too
    clock.advance(30)
    got = engine.evaluate(_reading(temperature_c=40.0, h2_ppm=10.0, wet=False))
    assert [(t.rule, t.kind) for t in got] == [(RULE_FAILED, "clear"), ("hot", "clear"), (RULE_FAILED, "clear")]
    cabinet_cleared, _, cleared = got
    assert (cleared.from_level, cleared.to_level, cleared.value, cleared.at, cleared.protective_action) == (
        1, 0, None, clock.now, None)
    assert cleared.target == Target("s1", "c1", 1, "B1")
    assert cleared.labels == slot.labels  # Alertmanager resolves exactly the notice it got
    assert cleared.annotations == texts["cleared"]
    assert (cleared.diagnosis, cleared.action) == (texts["cleared"]["diagnosis"], texts["cleared"]["action"])
    assert cabinet_cleared.annotations == texts["cabinet cleared"] and cabinet_cleared.labels == cabinet.labels
    assert engine.state.active() == []


def test_a_rule_that_fails_before_it_has_a_state_is_kept_at_level_zero(monkeypatch) -> None:
    """The fusion score itself raises on the first reading: the rule had no level here, the notice says L0."""
    engine = Engine(parse_rules(FUSION), clock=ManualClock(), language="en")
    monkeypatch.setattr(engine, "_fuse", lambda *args: 1 / 0)
    [notice] = engine.evaluate(_reading(h2_ppm=400.0))
    assert notice.diagnosis == (
        "Rule runaway raised an error at s1/c1 slot 1 (ZeroDivisionError: division by zero): while it fails it "
        "cannot change its alert here, kept at L0; the other rules are evaluated as usual. Failing here: runaway.")


@pytest.mark.parametrize(("length", "shown"), [(200, "ValueError: " + "x" * 188),
                                               (201, "ValueError: " + "x" * 185 + "...")])
def test_the_error_in_a_notice_is_cut_to_200_characters(monkeypatch, length: int, shown: str) -> None:
    engine = Engine(_rules(_rule("{1: 45}", rid="hot")), clock=ManualClock(), language="en")
    _break(monkeypatch, engine, "hot", error=ValueError("x" * (length - len("ValueError: "))))
    [notice] = engine.evaluate(_reading(temperature_c=50.0))
    assert len(shown) == 200
    assert f" ({shown}): " in notice.diagnosis


def test_a_rule_failure_is_logged_once_with_its_place_then_at_debug_until_it_recovers_everywhere(
        monkeypatch, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="alerting.engine")
    registry = CollectorRegistry()
    clock = ManualClock()
    engine = Engine(TWO_SLOT_RULES, clock=clock, registry=registry, language="en")
    _break(monkeypatch, engine, "hot", "wet")
    engine.evaluate(_reading(1, temperature_c=50.0, wet=True))
    engine.evaluate(_reading(2, temperature_c=50.0))
    engine.evaluate(_reading(1, temperature_c=50.0))
    monkeypatch.undo()
    engine.evaluate(_reading(1, temperature_c=40.0, wet=False))
    engine.evaluate(_reading(2, temperature_c=40.0))
    engine.evaluate(_reading(2, temperature_c=40.0))  # healthy: silent
    logged = [(r.levelname, r.getMessage(), r.exc_info[0] if r.exc_info else None) for r in caplog.records
              if r.name == "alerting.engine"]
    retried = "; its level is kept, the other rules go on and it is retried on the next reading (logged again " \
              "only after it recovers)"
    assert logged == [
        ("ERROR", "rule wet failed at s1/c1" + retried, ZeroDivisionError),
        ("ERROR", "rule hot failed at s1/c1/1" + retried, ZeroDivisionError),
        ("DEBUG", "rule hot failed again at s1/c1/2", ZeroDivisionError),
        ("DEBUG", "rule hot failed again at s1/c1/1", ZeroDivisionError),
        ("WARNING", "rule wet recovered: it evaluates again at s1/c1", None),
        ("DEBUG", "rule hot evaluates again at s1/c1/1; still failing at 1 other target(s)", None),
        ("WARNING", "rule hot recovered: it evaluates again at s1/c1/2", None),
    ]
    assert (rule_errors(registry, "hot"), rule_errors(registry, "wet"), rule_errors(registry, "gas")) == (3, 1, 0)


def test_each_engine_counts_its_own_rule_failures_without_a_registry(monkeypatch) -> None:
    engines = [Engine(_hot(), clock=ManualClock()) for _ in range(2)]  # no clash on a shared registry
    _break(monkeypatch, engines[0], "hot")
    engines[0].evaluate(_reading(temperature_c=50.0))
    assert [_count(e, "hot") for e in engines] == [1.0, 0.0]


def _count(engine: Engine, rule: str) -> float:
    return next(s.value for m in engine.rule_errors.collect() for s in m.samples
                if s.name == "cascade_rule_errors_total" and s.labels == {"rule": rule})


def test_the_rule_error_counter_says_what_it_counts_and_starts_at_zero_per_rule() -> None:
    """Its help is what Grafana and Prometheus show next to the series; a zero per rule lets increase() see
    the first failure."""
    engine = Engine(_hot(), clock=ManualClock())
    [family] = engine.rule_errors.collect()
    assert family.documentation == "Rule evaluations that raised an exception (the rule's level is kept; see the log)"
    assert _count(engine, "hot") == 0.0


def test_a_fusion_rule_recovers_only_on_a_reading_with_evidence(monkeypatch) -> None:
    clock = ManualClock()
    engine = Engine(parse_rules(FUSION), clock=clock, language="en")
    _break(monkeypatch, engine, "runaway")
    assert [(t.rule, t.kind) for t in engine.evaluate(_reading(h2_ppm=400.0))] == [(RULE_FAILED, "raise")]
    monkeypatch.undo()
    clock.advance(30)
    assert engine.evaluate(_reading(temperature_c=20.0)) == []  # no term reports: it has shown nothing
    clock.advance(30)
    got = engine.evaluate(_reading(h2_ppm=0.0, voc_ppm=0.0, valve_acoustic_events=0))
    assert [(t.rule, t.kind) for t in got] == [(RULE_FAILED, "clear")]


def test_a_guarded_rule_recovers_only_on_a_reading_with_its_guards_value(monkeypatch) -> None:
    rules = _rules(_rule("{1: 45}", rid="hot", extra='when: {field: charge_current_a, compare: ">", value: 0.5}'))
    clock = ManualClock()
    engine = Engine(rules, clock=clock, language="en")
    _break(monkeypatch, engine, "hot")
    assert [(t.rule, t.kind) for t in engine.evaluate(_reading(temperature_c=50.0, charge_current_a=2.0))] == [
        (RULE_FAILED, "raise")]
    monkeypatch.undo()
    clock.advance(30)
    assert engine.evaluate(_reading(temperature_c=20.0)) == []  # the guard has no value: nothing shown
    clock.advance(30)
    got = engine.evaluate(_reading(temperature_c=20.0, charge_current_a=2.0))
    assert [(t.rule, t.kind) for t in got] == [(RULE_FAILED, "clear")]


# -- start-up: stored alerts (Engine._target, _retired) and the audit log (Engine._reapply_audit, _append_jsonl) ---

def test_a_resumed_alert_keeps_its_battery_when_the_reading_names_none(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    clock = ManualClock()
    rules = _rules(_rule("{1: 45}", rid="hot"))
    [raised] = Engine(rules, clock=clock, state=AlertStore(path)).evaluate(_reading(temperature_c=50.0))
    restarted = Engine(rules, clock=clock, state=AlertStore(path))
    [cleared] = restarted.evaluate(_reading(battery=None, temperature_c=20.0))
    assert (cleared.kind, cleared.target) == ("clear", Target("s1", "c1", 1, "B1"))
    assert cleared.labels == raised.labels  # Alertmanager resolves exactly the alert it got


def test_a_resumed_alert_waits_its_clear_delay_from_the_first_healthy_reading_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    clock = ManualClock()
    rules = _rules(_rule("{1: 45}", rid="hot", extra="clear_for: 60s"))
    Engine(rules, clock=clock, state=AlertStore(path)).evaluate(_reading(temperature_c=50.0))
    restarted = Engine(rules, clock=clock, state=AlertStore(path))
    got = []
    for _ in range(3):
        got.append([(t.rule, t.kind) for t in restarted.evaluate(_reading(temperature_c=40.0))])
        clock.advance(30)
    assert got == [[], [], [("hot", "clear")]]


def test_a_retired_alert_is_cleared_with_the_labels_it_was_fired_with(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    clock = ManualClock()
    before = _rules(_rule("{1: 45}", rid="hot"), _rule("{3: 1}", rid="wet", scope="cabinet",
                                                        input="{bool: water_detected}"))
    fired = Engine(before, clock=clock, state=AlertStore(path)).evaluate(_reading(temperature_c=50.0, wet=True))
    restarted = Engine(_rules(_rule("{1: 10}", rid="other", input="{field: soc_pct}")), clock=clock,
                       state=AlertStore(path), language="en")
    by_rule = {t.rule: t for t in restarted.startup_transitions}
    assert {t.rule: t.labels for t in fired} == {rule: t.labels for rule, t in by_rule.items()}
    assert by_rule["hot"].labels == {"alertname": "hot", "rule": "hot", "level": "1", "severity": "notice",
                                     "site": "s1", "cabinet": "c1", "slot": "1", "battery": "B1"}
    assert by_rule["wet"].labels == {"alertname": "wet", "rule": "wet", "level": "3", "severity": "critical",
                                     "site": "s1", "cabinet": "c1"}


def test_run_time_changes_are_re_applied_in_order_unless_the_catalogue_moved_on(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="alerting.engine")
    audit = tmp_path / "audit.jsonl"
    entries = [
        {"rule": "over_temperature", "level": 3, "old": 70, "new": 68, "who": "李", "reason": "夏天"},
        {"rule": "over_temperature", "level": 3, "old": 70, "new": 60},  # stale: 68 now
        {"rule": "no_such_rule", "level": 1, "old": 1, "new": 2},
        {"rule": "over_temperature", "level": 3, "old": 68.00000001, "new": 66},  # the same number, rounded
        {"rule": "over_temperature", "level": 2, "old": 55.000001, "new": 54},  # not the same number
        {"rule": "vehicle_low_soc", "level": 1, "old": 0.5, "new": 1},  # the threshold is 0: not close to 0.5
        {"rule": "over_temperature", "level": 4, "old": 1, "new": 2},  # no such level
        {"rule": "vehicle_low_soc", "level": 1, "old": 1e-13, "new": 1},  # 0, as stored with float noise
        {"rule": "over_temperature", "level": 1, "old": 50, "new": "hot"},
    ]
    audit.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    engine = Engine(CATALOGUE.only(["over_temperature", "vehicle_low_soc"]), clock=ManualClock(), audit_path=audit)
    assert [lv.threshold for lv in engine.rules["over_temperature"].levels] == [50.0, 55.0, 66.0]
    assert [lv.threshold for lv in engine.rules["vehicle_low_soc"].levels] == [1.0]
    assert engine.audit == [entries[0], entries[3], entries[7]]
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "alerting.engine"] == [
        ("WARNING", f"{audit}:2: threshold change over_temperature level 3 70.0 -> 60.0 not re-applied: the "
                    "catalogue now says 68.0"),
        ("WARNING", f"{audit}:3: audit entry not re-applied: 'no_such_rule'"),
        ("WARNING", f"{audit}:5: threshold change over_temperature level 2 55.000001 -> 54.0 not re-applied: the "
                    "catalogue now says 55.0"),
        ("WARNING", f"{audit}:6: threshold change vehicle_low_soc level 1 0.5 -> 1.0 not re-applied: the catalogue "
                    "now says 0.0"),
        ("WARNING", f"{audit}:7: threshold change over_temperature level 4 1.0 -> 2.0 not re-applied: the catalogue "
                    "now says None"),
        ("WARNING", f"{audit}:9: audit entry not re-applied: new value 'hot' is not a finite number"),
        ("INFO", f"re-applied 3 run-time threshold changes from {audit}"),
    ]


def test_no_audit_log_yet_changes_nothing_and_logs_nothing(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="alerting.engine")
    engine = Engine(CATALOGUE.only(["over_temperature"]), clock=ManualClock(), audit_path=tmp_path / "audit.jsonl")
    assert [lv.threshold for lv in engine.rules["over_temperature"].levels] == [50.0, 55.0, 70.0]
    assert engine.audit == [] and [r for r in caplog.records if r.name == "alerting.engine"] == []


def test_a_threshold_change_is_appended_as_one_utf8_line_in_a_directory_made_for_it(tmp_path: Path) -> None:
    audit = tmp_path / "var" / "lib" / "audit.jsonl"  # two directories to make
    clock = ManualClock()
    engine = Engine(CATALOGUE.only(["over_temperature"]), clock=clock, audit_path=audit)
    first = engine.set_threshold("over_temperature", 3, 68, who="李工", reason="夏季")
    second = engine.set_threshold("over_temperature", 3, 66, who="a", reason="b")
    raw = audit.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2
    assert raw.decode("utf-8").splitlines() == [json.dumps(first, ensure_ascii=False),
                                                json.dumps(second, ensure_ascii=False)]
    assert "李工".encode() in raw
    restarted = Engine(CATALOGUE.only(["over_temperature"]), clock=clock, audit_path=audit)
    assert restarted.audit == [first, second] and restarted.rules["over_temperature"].levels[2].threshold == 66.0


def test_the_rule_failure_notice_id_is_refused_with_what_to_do() -> None:
    with pytest.raises(RuleError) as info:
        Engine(parse_rules(_HOT.replace("id: wet", f"id: {RULE_FAILED}").replace("{LEVELS}", "{1: 45}")))
    assert str(info.value) == ("<rules>: rule 'rule_evaluation_failed': key 'id': reserved: the engine raises this "
                               "alert itself when a rule fails; choose another id")


def test_rules_may_be_given_as_a_plain_list() -> None:
    clock = ManualClock()
    engine = Engine(list(_rules(_rule("{1: 45}", rid="hot")).values()), clock=clock)
    assert list(engine.rules) == ["hot"]
    assert [t.rule for t in engine.evaluate(_reading(temperature_c=50.0))] == ["hot"]


# -- inputs (Engine._extract) ---------------------------------------------------------------------------------

def _broken_input(obj, ts, now):
    raise ZeroDivisionError("input bug")


def _slot_series(engine: Engine, clock: ManualClock, readings: list[dict]) -> list[tuple]:
    out = []
    for values in readings:
        reading = CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=[SlotReading(1, battery_id="B1", **values)])
        out += [(t.rule, t.kind, round(t.value, 6)) for t in engine.evaluate(reading)]
        clock.advance(30)
    return out


CHANGES = [_rule("{1: 10}", rid="soc", input="{jump: soc_pct}"),
           _rule("{1: 1.5}", rid="rise", input="{rate_of: temperature_c, window: 60s}"),
           _rule("{1: 45}", rid="hot")]
CHANGING = [{"soc_pct": 50.0, "temperature_c": 44.0}, {"soc_pct": 50.0, "temperature_c": 45.0},
            {"soc_pct": 70.0, "temperature_c": 46.0}]
CHANGED = [("hot", "raise", 45.0), ("soc", "raise", 20.0), ("rise", "raise", 2.0)]


def test_a_jump_and_a_rate_on_one_slot_are_each_measured_once_a_reading() -> None:
    clock = ManualClock()
    engine = Engine(_rules(*CHANGES), clock=clock)
    assert _slot_series(engine, clock, CHANGING) == CHANGED


def test_the_inputs_next_to_one_that_raises_keep_their_values() -> None:
    registry = CollectorRegistry()
    clock = ManualClock()
    engine = Engine(_rules(_rule("{1: 100}", rid="gas", input="{field: h2_ppm}"), *CHANGES), clock=clock,
                    registry=registry)
    engine._program.scopes["slot"][0][0] = _broken_input  # the gas input: this engine's compiled inputs only
    assert _slot_series(engine, clock, CHANGING) == CHANGED
    assert registry.get_sample_value("cascade_rule_errors_total", {"rule": "(input)"}) == 3  # the broken one only


# Found by mutation testing: after an input raised, every input used to run again on the same reading, and
# a jump computed before the failing one then compared the reading with itself (0) (Engine._extract).
def test_a_jump_computed_before_an_input_that_raises_is_not_lost() -> None:
    clock = ManualClock()
    engine = Engine(_rules(*CHANGES, _rule("{1: 100}", rid="gas", input="{field: h2_ppm}")), clock=clock)
    engine._program.scopes["slot"][0][-1] = _broken_input  # the gas input, after the jump
    assert _slot_series(engine, clock, CHANGING) == CHANGED


# -- the clocks (Engine._tick) -------------------------------------------------------------------------------

def test_with_the_wall_clock_durations_run_on_the_monotonic_clock(monkeypatch) -> None:
    """An engine on the real wall clock (no ``elapsed``) times `for` on ``time.monotonic``, which never jumps."""
    steady = ManualClock(1000.0)
    monkeypatch.setattr("alerting.engine.time", SimpleNamespace(time=time.time, monotonic=steady))
    engine = Engine(_rules(_rule("{1: 45}", rid="hot", extra="for: 60s")))
    assert engine.evaluate(_reading(temperature_c=50.0)) == []
    steady.advance(59)
    assert engine.evaluate(_reading(temperature_c=50.0)) == []
    steady.advance(1)
    assert [t.rule for t in engine.evaluate(_reading(temperature_c=50.0))] == ["hot"]
