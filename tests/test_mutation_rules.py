"""Rule catalogue semantics (alerting/rules.py) stated from outside: which thresholds a pack of a
given chemistry and cabinet model gets, what an error says, how values are shown in messages.
Written to kill the mutants `make mutate` found alive."""

from __future__ import annotations

import copy
import sys

import pytest
import yaml

from alerting.engine import Engine
from alerting.rules import Override, RuleError, load_rules, parse_rules, short_repr
from core.model import CabinetReading, Chemistry, SlotReading
from tests.fixtures.clock import ManualClock

# cell_overvoltage in the shipped catalogue (alerting/catalogue.yaml), written out here.
LI_ION = (4.25, 4.28, 4.35)
LFP = (3.72, 3.75, 3.90)
NA_ION = (4.00, 4.05, 4.20)
LTO = (2.75, 2.80, 2.90)


def _thresholds(model: str, chemistry: int | None) -> tuple[float, ...]:
    levels, _ = load_rules()["cell_overvoltage"].resolve(model, chemistry)
    return tuple(lv.threshold for lv in levels)


@pytest.mark.parametrize(("chemistry", "expected"), [
    (Chemistry.LFP, LFP), (Chemistry.NA_ION, NA_ION), (Chemistry.LTO, LTO),
    (Chemistry.NMC, LI_ION), (Chemistry.LMO, LI_ION), (Chemistry.UNKNOWN, LI_ION), (None, LI_ION),
])
def test_each_chemistry_gets_its_own_cell_voltage_limits(chemistry: int | None, expected: tuple) -> None:
    assert _thresholds("reference-cabinet", None if chemistry is None else int(chemistry)) == expected


def test_an_lfp_pack_at_a_voltage_normal_for_nmc_is_warned_about_and_an_nmc_pack_is_not() -> None:
    rules = load_rules().only(["cell_overvoltage"])
    clock = ManualClock()
    engine = Engine(rules, clock=clock)
    slots = [SlotReading(1, battery_id="LFP-1", chemistry=int(Chemistry.LFP), cell_voltage_max_v=3.80),
             SlotReading(2, battery_id="NMC-1", chemistry=int(Chemistry.NMC), cell_voltage_max_v=3.80),
             SlotReading(3, battery_id="UNK-1", cell_voltage_max_v=3.80)]
    raised = []
    for _ in range(3):
        clock.advance(30)
        raised += engine.evaluate(CabinetReading("c1", "s1", "reference-cabinet", int(clock.now * 1e9),
                                                 slots=slots))
    assert {(t.target.slot, t.to_level) for t in raised} == {(1, 2)}


CATALOGUE = """\
version: 1
rules:
  - id: hot
    description: hot pack
    source: test
    scope: slot
    input: {field: temperature_c}
    levels: {1: 50, 2: 60}
    hysteresis: 2
    overrides:
      - model: [tropic-s1]
        levels: {1: 55}
        hysteresis: 3
      - chemistry: [LFP]
        model: [tropic-s1, arctic-a1]
        levels: {2: 65}
    diagnosis: "{value}"
    action: cool it
"""


@pytest.mark.parametrize(("model", "chemistry", "thresholds", "hysteresis"), [
    ("reference-cabinet", None, (50, 60), 2),
    ("reference-cabinet", int(Chemistry.LFP), (50, 60), 2),  # chemistry matches, model does not
    ("tropic-s1", None, (55, 60), 3),
    ("tropic-s1", int(Chemistry.NMC), (55, 60), 3),
    ("tropic-s1", int(Chemistry.LFP), (55, 65), 3),  # both overrides, in file order
    ("arctic-a1", int(Chemistry.LFP), (50, 65), 2),
    ("arctic-a1", int(Chemistry.LTO), (50, 60), 2),
])
def test_overrides_apply_where_both_chemistry_and_model_match(model: str, chemistry: int | None,
                                                              thresholds: tuple, hysteresis: float) -> None:
    levels, hyst = parse_rules(CATALOGUE)["hot"].resolve(model, chemistry)
    assert tuple(lv.threshold for lv in levels) == thresholds and hyst == hysteresis


def test_override_matching_alone() -> None:
    lfp = Override(frozenset({int(Chemistry.LFP)}), None, {})
    assert lfp.matches("any", int(Chemistry.LFP)) and not lfp.matches("any", int(Chemistry.NMC))
    assert not lfp.matches("any", None)
    model_only = Override(None, frozenset({"m1"}), {})
    assert model_only.matches("m1", None) and not model_only.matches("m2", int(Chemistry.LFP))
    assert Override(None, None, {}).matches("whatever", 3)


# -- errors and messages ------------------------------------------------------------------------------

def test_rule_error_names_file_rule_key_and_reason() -> None:
    err = RuleError("rules.yaml", "hot", "levels.2", "must be a number")
    assert str(err) == "rules.yaml: rule 'hot': key 'levels.2': must be a number"
    assert (err.file, err.rule, err.key, err.reason) == ("rules.yaml", "hot", "levels.2", "must be a number")
    assert (err.source, err.problem) == ("rules.yaml", "must be a number")
    assert str(RuleError("rules.yaml", None, None, "not a list")) == "rules.yaml: not a list"
    assert str(RuleError("rules.yaml", "hot", None, "bad")) == "rules.yaml: rule 'hot': bad"
    assert str(RuleError("rules.yaml", None, "rules", "bad")) == "rules.yaml: key 'rules': bad"


def test_with_threshold_refuses_a_level_the_rule_does_not_have() -> None:
    rule = parse_rules(CATALOGUE, file="cat.yaml")["hot"]
    with pytest.raises(RuleError) as info:
        rule.with_threshold(3, 70)
    assert str(info.value) == ("cat.yaml: rule 'hot': key 'levels.3': rule has no level 3 (it has 1, 2); "
                               "set one of those")
    changed = rule.with_threshold(2, 70)
    assert [lv.threshold for lv in changed.levels] == [50, 70]
    assert [lv.threshold for lv in rule.levels] == [50, 60]


def test_short_repr_keeps_40_characters_and_marks_the_cut() -> None:
    assert short_repr("x" * 38) == repr("x" * 38)  # 40 characters with the quotes
    assert short_repr("x" * 39) == repr("x" * 39)[:37] + "..."
    assert len(short_repr("y" * 100)) == 40
    assert short_repr([1, 2], limit=6) == "[1, 2]" and short_repr([1, 2, 3], limit=6) == "[1,..."
    assert short_repr(None) == "None"


def test_short_repr_of_an_integer_too_long_to_print() -> None:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(1000)
    try:
        assert short_repr(10 ** 2000) == "an integer of about 1993 digits"
        assert short_repr(-(10 ** 1500)) == "an integer of about 1494 digits"
    finally:
        sys.set_int_max_str_digits(old)


# -- every refusal of the rule loader, with its exact message -----------------------------------------

_BASE = {"id": "hot", "description": "hot pack", "source": "test", "scope": "slot",
         "input": {"field": "temperature_c"}, "levels": {1: 50, 2: {"value": 60, "protective_action": "slot_cutoff"}},
         "diagnosis": "{value} over {threshold}", "action": "cool slot {slot}"}
_DROP = object()


def patched(**changes: object) -> dict:
    rule = copy.deepcopy(_BASE)
    for key, value in changes.items():
        if value is _DROP:
            rule.pop(key, None)
        else:
            rule[key] = value
    return rule



_TERM = {"input": {"field": "h2_ppm"}, "start": 0, "full": 1, "weight": 1}

BAD_RULES = [
    ("rule_not_mapping", [5],
     '#1', None, "rule '#1': each rule must be a mapping"),
    ("bad_id", [patched(id="Bad-Id")],
     '#1', 'id', "rule '#1': key 'id': 'Bad-Id' is not a valid id; use lower_snake_case (it becomes alertname)"),
    ("id_missing", [patched(id=_DROP)],
     '#1', 'id', "rule '#1': key 'id': None is not a valid id; use lower_snake_case (it becomes alertname)"),
    ("unknown_key", [patched(colour=1, zzz=2)],
     'hot', 'colour', "rule 'hot': key 'colour': unknown key; allowed keys are action, clear_for, compare, description, diagnosis, for, hysteresis, id, input, levels, name, overrides, scope, source, unit, vehicle_command, when"),
    ("no_description", [patched(description="  ")],
     'hot', 'description', "rule 'hot': key 'description': required text is missing (P-5.4.7 needs a diagnosis and a suggested action)"),
    ("no_diagnosis", [patched(diagnosis=_DROP)],
     'hot', 'diagnosis', "rule 'hot': key 'diagnosis': required text is missing (P-5.4.7 needs a diagnosis and a suggested action)"),
    ("no_action", [patched(action=5)],
     'hot', 'action', "rule 'hot': key 'action': required text is missing (P-5.4.7 needs a diagnosis and a suggested action)"),
    ("no_source", [patched(source="")],
     'hot', 'source', "rule 'hot': key 'source': required text is missing (P-5.4.7 needs a diagnosis and a suggested action)"),
    ("placeholder_syntax", [patched(diagnosis="{value")],
     'hot', 'diagnosis', "rule 'hot': key 'diagnosis': bad placeholder syntax (expected '}' before end of string); use {value} etc., double braces for literals"),
    ("placeholder_unknown", [patched(action="cool {zone} and {area}")],
     'hot', 'action', "rule 'hot': key 'action': unknown placeholder {area}; available: battery, cabinet, evidence, level, rule, site, slot, threshold, value"),
    ("name_empty", [patched(name=" ")],
     'hot', 'name', "rule 'hot': key 'name': must be a short display name (text), e.g. 'Battery over-temperature'; or leave it out"),
    ("name_not_text", [patched(name=3)],
     'hot', 'name', "rule 'hot': key 'name': must be a short display name (text), e.g. 'Battery over-temperature'; or leave it out"),
    ("scope_bad", [patched(scope="rack")],
     'hot', 'scope', "rule 'hot': key 'scope': 'rack' is not one of slot, cabinet, vehicle"),
    ("input_not_mapping", [patched(input=5)],
     'hot', 'input', "rule 'hot': key 'input': must be a mapping with one of: field, rate_of, delta, jump, flag, bool, lost, fusion"),
    ("input_two_kinds", [patched(input={"field": "temperature_c", "rate_of": "temperature_c"})],
     'hot', 'input', "rule 'hot': key 'input': needs exactly one of field, rate_of, delta, jump, flag, bool, lost (found ['field', 'rate_of'])"),
    ("input_no_kind", [patched(input={"window": "1m"})],
     'hot', 'input', "rule 'hot': key 'input': needs exactly one of field, rate_of, delta, jump, flag, bool, lost (found none)"),
    ("input_unknown_option", [patched(input={"field": "temperature_c", "zap": 1, "bar": 2})],
     'hot', 'input.bar', "rule 'hot': key 'input.bar': unknown input option"),
    ("per_unknown", [patched(input={"field": "voltage_v", "per": "nope"})],
     'hot', 'input.per', "rule 'hot': key 'input.per': 'nope' is not a slot field of core.model; check spelling and scope"),
    ("per_bool", [patched(input={"field": "voltage_v", "per": "output_enabled"})],
     'hot', 'input.per', "rule 'hot': key 'input.per': field 'output_enabled' is bool, this input needs a number field"),
    ("minus_bad", [patched(input={"field": "temperature_c", "minus": "ambient"})],
     'hot', 'input.minus', "rule 'hot': key 'input.minus': 'ambient' is not a baseline of a slot field; use one of ['cabinet_min', 'cabinet_temperature_c'] (without per:)"),
    ("minus_with_per", [patched(input={"field": "temperature_c", "per": "voltage_v", "minus": "cabinet_min"})],
     'hot', 'input.minus', "rule 'hot': key 'input.minus': 'cabinet_min' is not a baseline of a slot field; use one of ['cabinet_min', 'cabinet_temperature_c'] (without per:)"),
    ("minus_cabinet_scope", [patched(scope="cabinet", input={"field": "cabinet_temperature_c", "minus": "cabinet_min"}, action="x", diagnosis="x")],
     'hot', 'input.minus', "rule 'hot': key 'input.minus': 'cabinet_min' is not a baseline of a slot field; use one of ['cabinet_min', 'cabinet_temperature_c'] (without per:)"),
    ("minus_on_rate", [patched(input={"rate_of": "temperature_c", "minus": "cabinet_min"})],
     'hot', 'input.minus', "rule 'hot': key 'input.minus': only a field input takes a baseline (minus:)"),
    ("rate_window_zero", [patched(input={"rate_of": "temperature_c", "window": 0})],
     'hot', 'input.window', "rule 'hot': key 'input.window': rate window must be > 0"),
    ("delta_not_pair", [patched(input={"delta": ["temperature_c"]})],
     'hot', 'input.delta', "rule 'hot': key 'input.delta': write delta: [minuend_field, subtrahend_field]"),
    ("delta_not_list", [patched(input={"delta": "temperature_c"})],
     'hot', 'input.delta', "rule 'hot': key 'input.delta': write delta: [minuend_field, subtrahend_field]"),
    ("jump_direction", [patched(input={"jump": "temperature_c", "direction": "down"})],
     'hot', 'input.direction', "rule 'hot': key 'input.direction': must be 'any' (absolute change) or 'up' (counter increase)"),
    ("bool_of_number", [patched(input={"bool": "temperature_c"})],
     'hot', 'input.bool', "rule 'hot': key 'input.bool': field 'temperature_c' is number, this input needs a bool field"),
    ("field_of_bool", [patched(input={"field": "output_enabled"})],
     'hot', 'input.field', "rule 'hot': key 'input.field': field 'output_enabled' is bool, this input needs a number field"),
    ("cabinet_field_in_slot", [patched(input={"field": "cabinet_temperature_c"})],
     'hot', 'input.field', "rule 'hot': key 'input.field': 'cabinet_temperature_c' is not a slot field of core.model; check spelling and scope"),
    ("flag_not_bitmask", [patched(input={"flag": "temperature_c"})],
     'hot', 'input.flag', "rule 'hot': key 'input.flag': 'temperature_c' is not a bitmask field of this scope (charger_protection, bms_protection)"),
    ("flag_mask_not_list", [patched(input={"flag": "bms_protection", "mask": "OVER_VOLTAGE"})],
     'hot', 'input.mask', "rule 'hot': key 'input.mask': write mask: [NAME, ...] or mask: any"),
    ("flag_mask_empty", [patched(input={"flag": "bms_protection", "mask": []})],
     'hot', 'input.mask', "rule 'hot': key 'input.mask': write mask: [NAME, ...] or mask: any"),
    ("flag_mask_unknown", [patched(input={"flag": "bms_protection", "mask": ["NOPE"]})],
     'hot', 'input.mask', "rule 'hot': key 'input.mask': 'NOPE' is not a BmsProtection bit; known: OVER_VOLTAGE, OVER_CURRENT, UNDER_VOLTAGE, SHORT_CIRCUIT, CELL_VOLTAGE_DIFFERENCE, HIGH_TEMPERATURE, LOW_TEMPERATURE, HARDWARE_FAULT, OVER_CHARGE, INSULATION"),
    ("fusion_nested", [patched(input={"fusion": [{"input": {"fusion": []}, "start": 0, "full": 1, "weight": 1}, {"input": {"field": "h2_ppm"}, "start": 0, "full": 1, "weight": 1}]})],
     'hot', 'input.fusion[0].input', "rule 'hot': key 'input.fusion[0].input': fusion is only allowed as the rule's top-level input"),
    ("fusion_extra_key", [patched(input={"fusion": [], "field": "h2_ppm"})],
     'hot', 'input.fusion', "rule 'hot': key 'input.fusion': write fusion: [term, term, ...] with at least two evidence terms"),
    ("fusion_one_term", [patched(input={"fusion": [{"input": {"field": "h2_ppm"}, "start": 0, "full": 1, "weight": 1}]})],
     'hot', 'input.fusion', "rule 'hot': key 'input.fusion': write fusion: [term, term, ...] with at least two evidence terms"),
    ("fusion_not_list", [patched(input={"fusion": "h2_ppm"})],
     'hot', 'input.fusion', "rule 'hot': key 'input.fusion': write fusion: [term, term, ...] with at least two evidence terms"),
    ("term_not_mapping", [patched(input={"fusion": [5, {"input": {"field": "h2_ppm"}, "start": 0, "full": 1, "weight": 1}]})],
     'hot', 'input.fusion[0]', "rule 'hot': key 'input.fusion[0]': term keys are input, start, full, weight, hold"),
    ("term_unknown_key", [patched(input={"fusion": [{"input": {"field": "h2_ppm"}, "start": 0, "full": 1, "weight": 1, "gain": 2}, {"input": {"field": "h2_ppm"}, "start": 0, "full": 1, "weight": 1}]})],
     'hot', 'input.fusion[0]', "rule 'hot': key 'input.fusion[0]': term keys are input, start, full, weight, hold"),
    ("term_missing_full", [patched(input={"fusion": [{"input": {"field": "h2_ppm"}, "start": 0, "weight": 1}, {"input": {"field": "h2_ppm"}, "start": 0, "full": 1, "weight": 1}]})],
     'hot', 'input.fusion[0].full', "rule 'hot': key 'input.fusion[0].full': required"),
    ("term_start_is_full", [patched(input={"fusion": [{"input": {"field": "h2_ppm"}, "start": 1, "full": 1, "weight": 1}, {"input": {"field": "h2_ppm"}, "start": 0, "full": 1, "weight": 1}]})],
     'hot', 'input.fusion[0].full', "rule 'hot': key 'input.fusion[0].full': must differ from start (strength ramps from start to full)"),
    ("term_weight_zero", [patched(input={"fusion": [{"input": {"field": "h2_ppm"}, "start": 0, "full": 1, "weight": 1}, {"input": {"field": "h2_ppm"}, "start": 0, "full": 1, "weight": 0}]})],
     'hot', 'input.fusion[1].weight', "rule 'hot': key 'input.fusion[1].weight': must be > 0"),
    ("term_full_not_number", [patched(input={"fusion": [_TERM, {**_TERM, "full": "x"}]})],
     'hot', 'input.fusion[1].full', "rule 'hot': key 'input.fusion[1].full': 'x' is not a finite number"),
    ("term_start_not_number", [patched(input={"fusion": [_TERM, {**_TERM, "start": "x"}]})],
     'hot', 'input.fusion[1].start', "rule 'hot': key 'input.fusion[1].start': 'x' is not a finite number"),
    ("term_weight_not_number", [patched(input={"fusion": [_TERM, {**_TERM, "weight": "x"}]})],
     'hot', 'input.fusion[1].weight', "rule 'hot': key 'input.fusion[1].weight': 'x' is not a finite number"),
    ("term_hold_bad", [patched(input={"fusion": [_TERM, {**_TERM, "hold": "soon"}]})],
     'hot', 'input.fusion[1].hold',
     "rule 'hot': key 'input.fusion[1].hold': 'soon' is not a duration; write e.g. 30s, 2m or 1h"),
    ("when_unknown_field", [patched(when={"field": "nope", "compare": ">", "value": 1})],
     'hot', 'when.field', "rule 'hot': key 'when.field': 'nope' is not a slot field of core.model; check spelling and scope"),
    ("rate_unknown_field", [patched(input={"rate_of": "nope"})],
     'hot', 'input.rate_of', "rule 'hot': key 'input.rate_of': 'nope' is not a slot field of core.model; check spelling and scope"),
    ("delta_unknown_field", [patched(input={"delta": ["temperature_c", "nope"]})],
     'hot', 'input.delta', "rule 'hot': key 'input.delta': 'nope' is not a slot field of core.model; check spelling and scope"),
    ("jump_unknown_field", [patched(input={"jump": "nope"})],
     'hot', 'input.jump', "rule 'hot': key 'input.jump': 'nope' is not a slot field of core.model; check spelling and scope"),
    ("lost_unknown_field", [patched(input={"lost": "nope"})],
     'hot', 'input.lost', "rule 'hot': key 'input.lost': 'nope' is not a slot field of core.model; check spelling and scope"),
    ("compare_bad", [patched(compare="=")],
     'hot', 'compare', "rule 'hot': key 'compare': '=' is not one of > >= < <="),
    ("for_bad", [patched(**{"for": "soon"})],
     'hot', 'for', "rule 'hot': key 'for': 'soon' is not a duration; write e.g. 30s, 2m or 1h"),
    ("levels_missing", [patched(levels=_DROP)],
     'hot', 'levels', "rule 'hot': key 'levels': write levels: {1: threshold, 2: threshold, 3: threshold} (any non-empty subset)"),
    ("levels_empty", [patched(levels={})],
     'hot', 'levels', "rule 'hot': key 'levels': write levels: {1: threshold, 2: threshold, 3: threshold} (any non-empty subset)"),
    ("level_4", [patched(levels={1: 50, 4: 70})],
     'hot', 'levels.4', "rule 'hot': key 'levels.4': levels are 1, 2 and 3 (GB/T 32960 scale)"),
    ("level_extra_key", [patched(levels={1: {"value": 50, "colour": "red"}})],
     'hot', 'levels.1.colour', "rule 'hot': key 'levels.1.colour': level keys are value, compare, for, protective_action"),
    ("level_no_value", [patched(levels={1: {"for": "1m"}})],
     'hot', 'levels.1.value', "rule 'hot': key 'levels.1.value': threshold value is required"),
    ("level_not_number", [patched(levels={1: "hot"})],
     'hot', 'levels.1.value', "rule 'hot': key 'levels.1.value': 'hot' is not a finite number"),
    ("level_compare_bad", [patched(levels={1: {"value": 50, "compare": "=="}})],
     'hot', 'levels.1.compare', "rule 'hot': key 'levels.1.compare': '==' is not one of > >= < <="),
    ("level_action_bad", [patched(levels={1: {"value": 50, "protective_action": "vent"}})],
     'hot', 'levels.1.protective_action', "rule 'hot': key 'levels.1.protective_action': 'vent' is unknown; use one of cabinet_cutoff, slot_cutoff, stop_charging"),
    ("levels_out_of_order_gt", [patched(levels={1: 60, 2: 50})],
     'hot', 'levels', "rule 'hot': key 'levels': level 2 threshold 50 is below level 1 threshold 60; with '>' each higher level needs a higher threshold"),
    ("levels_out_of_order_lt", [patched(compare="<", levels={1: 10, 2: 20})],
     'hot', 'levels', "rule 'hot': key 'levels': level 2 threshold 20 is above level 1 threshold 10; with '<' each higher level needs a lower threshold"),
    ("levels_mixed", [patched(levels={1: 50, 2: {"value": 60, "compare": "<"}})],
     'hot', 'levels', "rule 'hot': key 'levels': levels mix '>' and '<' comparisons; all levels of a rule must compare the same way"),
    ("hysteresis_negative", [patched(hysteresis=-1)],
     'hot', 'hysteresis', "rule 'hot': key 'hysteresis': must be ≥ 0 (it is how far back past the threshold a value must go to clear)"),
    ("hysteresis_not_number", [patched(hysteresis="x")],
     'hot', 'hysteresis', "rule 'hot': key 'hysteresis': 'x' is not a finite number"),
    ("when_not_mapping", [patched(when=5)],
     'hot', 'when', "rule 'hot': key 'when': write when: {field: NAME, compare: '>', value: 0.5}"),
    ("when_no_value", [patched(when={"field": "soc_pct", "compare": ">"})],
     'hot', 'when', "rule 'hot': key 'when': write when: {field: NAME, compare: '>', value: 0.5}"),
    ("when_compare_bad", [patched(when={"field": "soc_pct", "compare": "~", "value": 1})],
     'hot', 'when.compare', "rule 'hot': key 'when.compare': '~' is not one of > >= < <="),
    ("when_value_bad", [patched(when={"field": "soc_pct", "compare": ">", "value": "x"})],
     'hot', 'when.value', "rule 'hot': key 'when.value': 'x' is not a finite number"),
    ("override_not_mapping", [patched(overrides=[5])],
     'hot', 'overrides[0]', "rule 'hot': key 'overrides[0]': override keys are chemistry, model, levels, hysteresis"),
    ("override_unknown_key", [patched(overrides=[{"model": ["m"], "colour": 1}])],
     'hot', 'overrides[0]', "rule 'hot': key 'overrides[0]': override keys are chemistry, model, levels, hysteresis"),
    ("override_nowhere", [patched(overrides=[{"levels": {1: 40}}])],
     'hot', 'overrides[0]', "rule 'hot': key 'overrides[0]': an override needs chemistry: [...] and/or model: [...] to say where it applies"),
    ("override_chemistry_cabinet", [patched(scope="cabinet", input={"field": "cabinet_temperature_c"}, action="x", diagnosis="x", overrides=[{"chemistry": ["LFP"]}])],
     'hot', 'overrides[0].chemistry', "rule 'hot': key 'overrides[0].chemistry': chemistry overrides only apply to slot rules"),
    ("override_chemistry_unknown", [patched(overrides=[{"chemistry": ["LFP", "LEAD"]}])],
     'hot', 'overrides[0].chemistry', "rule 'hot': key 'overrides[0].chemistry': 'LEAD' is not a Chemistry; known: UNKNOWN, LFP, NMC, LMO, NA_ION, LTO"),
    ("override_model_empty", [patched(overrides=[{"model": [""]}])],
     'hot', 'overrides[0].model', "rule 'hot': key 'overrides[0].model': model must be a cabinet model name or a list of them"),
    ("override_levels_not_mapping", [patched(overrides=[{"model": "m", "levels": [1]}])],
     'hot', 'overrides[0].levels', "rule 'hot': key 'overrides[0].levels': write levels: {1: value, ...}"),
    ("override_level_missing", [patched(overrides=[{"model": "m", "levels": {3: 90}}])],
     'hot', 'overrides[0].levels.3', "rule 'hot': key 'overrides[0].levels.3': base rule has no level 3; overrides can only change existing levels"),
    ("override_hysteresis_negative", [patched(overrides=[{"model": "m", "hysteresis": -0.5}])],
     'hot', 'overrides[0].hysteresis', "rule 'hot': key 'overrides[0].hysteresis': must be ≥ 0"),
    ("override_breaks_order", [patched(overrides=[{"model": "m", "levels": {1: 70}}])],
     'hot', 'overrides[0]', "rule 'hot': key 'overrides[0]': level 2 threshold 60 is below level 1 threshold 70; with '>' each higher level needs a higher threshold (after override)"),
    ("override_breaks_order_2", [patched(overrides=[{"model": "m", "levels": {2: 55}}, {"model": "n", "levels": {1: 65}}])],
     'hot', 'overrides[1]', "rule 'hot': key 'overrides[1]': level 2 threshold 60 is below level 1 threshold 65; with '>' each higher level needs a higher threshold (after override)"),
    # Every (model, chemistry) pair is checked, also after a pair where fewer than two overrides meet.
    ("overrides_together_after_a_lone_pair", [patched(overrides=[
        {"model": ["m"], "levels": {1: 58}}, {"chemistry": ["NMC"], "levels": {2: 55}},
        {"chemistry": ["LFP"], "model": ["zzz"], "levels": {1: 45}}])],
     'hot', 'overrides[0], overrides[1]', "rule 'hot': key 'overrides[0], overrides[1]': level 2 threshold 55 is below level 1 threshold 58; with '>' each higher level needs a higher threshold (when overrides[0], overrides[1] apply together)"),
    ("clear_for_bad", [patched(clear_for="later")],
     'hot', 'clear_for', "rule 'hot': key 'clear_for': 'later' is not a duration; write e.g. 30s, 2m or 1h"),
    ("read_only_action", [patched(input={"flag": "emergency_state"}, scope="cabinet", action="x", diagnosis="x")],
     'hot', 'levels', "rule 'hot': key 'levels': rules reading fire-suppression state (emergency_state) are read-only (P-3.3); remove protective_action"),
    ("read_only_guard_override", [patched(levels={1: 50}, when={"flag": "emergency_state", "compare": ">", "value": 0}, scope="cabinet", input={"field": "cabinet_temperature_c"}, action="x", diagnosis="x", overrides=[{"model": "m", "levels": {1: {"value": 40, "protective_action": "slot_cutoff"}}}])],
     'hot', 'overrides[0].levels.1.protective_action', "rule 'hot': key 'overrides[0].levels.1.protective_action': rules reading fire-suppression state (emergency_state) are read-only (P-3.3); remove protective_action"),
    ("duplicate", [patched(), patched()],
     'hot', 'id', "rule 'hot': key 'id': duplicate rule id; ids must be unique"),
]


@pytest.mark.parametrize(("case", "rules", "rule", "key", "message"), BAD_RULES, ids=[c[0] for c in BAD_RULES])
def test_a_bad_rule_is_refused_naming_rule_key_and_fix(case: str, rules: list, rule: str | None, key: str | None,
                                                       message: str) -> None:
    text = yaml.safe_dump({"version": 1, "rules": rules}, sort_keys=False)
    with pytest.raises(RuleError) as info:
        parse_rules(text, file="cat.yaml")
    assert (info.value.rule, info.value.key) == (rule, key)
    assert str(info.value) == f"cat.yaml: {message}"


@pytest.mark.parametrize(("text", "key", "message"), [
    ("rules: [\n  - id: x\n  bad", None, "not valid YAML at line 2: expected the node content, but found '-'"),
    ("rules: 5", "rules", "key 'rules': file must be a mapping with a 'rules:' list"),
    ("- 1", "rules", "key 'rules': file must be a mapping with a 'rules:' list"),
    ("rules: []", "rules", "key 'rules': no rules defined"),
])
def test_a_bad_rule_file_is_refused(text: str, key: str | None, message: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(text, file="cat.yaml")
    assert info.value.rule is None and info.value.key == key
    assert str(info.value) == f"cat.yaml: {message}"


def test_a_missing_rule_file_says_it_cannot_be_read(tmp_path) -> None:
    with pytest.raises(RuleError) as info:
        load_rules(tmp_path / "gone.yaml")
    assert str(info.value) == f"{tmp_path / 'gone.yaml'}: cannot read rule file (No such file or directory)"


def test_a_subset_of_unknown_rules_is_refused_by_name() -> None:
    rules = load_rules()
    with pytest.raises(KeyError) as info:
        rules.only(["thermal_runaway", "no_such_rule", "another"])
    assert info.value.args[0] == "unknown rule ids: ['another', 'no_such_rule']"
    assert list(rules.only({"over_temperature", "thermal_runaway"})) == [
        r for r in rules if r in ("over_temperature", "thermal_runaway")]


def test_a_valid_rule_keeps_its_texts_and_defaults() -> None:
    rule = parse_rules(yaml.safe_dump({"rules": [patched(description=" hot pack ", unit="degC")]}))["hot"]
    assert (rule.description, rule.name, rule.unit, rule.scope, rule.hysteresis, rule.clear_for_s) == (
        "hot pack", "hot pack", "degC", "slot", 0.0, 0.0)
    assert [(lv.level, lv.threshold, lv.compare, lv.for_s, lv.protective_action) for lv in rule.levels] == [
        (1, 50.0, ">=", 0.0, None), (2, 60.0, ">=", 0.0, "slot_cutoff")]


def test_equal_thresholds_on_neighbouring_levels_are_allowed_both_ways() -> None:
    for compare, levels in ((">", {1: 50, 2: 50}), ("<", {1: 10, 2: 10})):
        rule = parse_rules(yaml.safe_dump({"rules": [patched(compare=compare, levels=levels)]}))["hot"]
        assert [lv.threshold for lv in rule.levels] == [list(levels.values())[0]] * 2


def test_defaults_of_a_rate_window_and_a_fusion_hold() -> None:
    rate = parse_rules(yaml.safe_dump({"rules": [patched(input={"rate_of": "temperature_c"})]}))["hot"]
    assert rate.input.window_s == 120.0
    short = parse_rules(yaml.safe_dump({"rules": [patched(input={"rate_of": "temperature_c", "window": 0.5})]}))
    assert short["hot"].input.window_s == 0.5  # any positive window
    fusion = parse_rules(yaml.safe_dump({"rules": [patched(input={"fusion": [_TERM, {**_TERM, "hold": "30s"}]})]}))
    assert [t.hold_s for t in fusion["hot"].fusion] == [0.0, 30.0]


def test_an_override_may_name_one_chemistry_or_model_without_a_list_and_set_hysteresis_to_zero() -> None:
    rule = parse_rules(yaml.safe_dump({"rules": [patched(hysteresis=2, overrides=[
        {"chemistry": "lfp", "levels": {1: 45}, "hysteresis": 0},
        {"model": "tropic-s1", "levels": {2: 65}},
    ])]}))["hot"]
    levels, hysteresis = rule.resolve("tropic-s1", int(Chemistry.LFP))
    assert [lv.threshold for lv in levels] == [45, 65] and hysteresis == 0
    levels, hysteresis = rule.resolve("other", int(Chemistry.NMC))
    assert [lv.threshold for lv in levels] == [50, 60] and hysteresis == 2


def test_text_without_a_file_name_is_called_rules_and_unreadable_characters_are_named() -> None:
    with pytest.raises(RuleError) as info:
        parse_rules("a: [")
    assert str(info.value) == "<rules>: not valid YAML at line 1: expected the node content, but found '<stream end>'"
    with pytest.raises(RuleError) as info:
        parse_rules("rules: [\x07]")
    assert str(info.value) == ('<rules>: not valid YAML: unacceptable character #x0007: special characters are not '
                               'allowed\n  in "<unicode string>", position 8')
